//! LiteLLM's admin API (`/key/*`, `/team/*`, `/user/*`, `/customer/*` and `/end_user/*`,
//! `/budget/*`, `/spend/logs`, `/global/spend`): request and response shapes, status codes and
//! error bodies as LiteLLM's proxy answers them. Called from `request_filter` for
//! `Endpoint::Management`; runs on the management runtime.
//!
//! This module routes a call and holds what every resource shares (errors, body parsing,
//! rendering a stored row, updates); one module per resource answers its routes, `authz` says
//! who may call what, `validation` checks bodies. It sits above storage (`management`) and is
//! never imported by it.

mod authz;
mod budgets;
mod customers;
mod keys;
mod spend;
mod teams;
mod users;
mod validation;

use std::sync::Arc;

use filters::identity::KeyType;
use filters::{ApiError, Caller};
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::clock::{iso, now_ms};
use crate::http_query::query_param;
use crate::management::Management;
use crate::management::identity::{f64_field, str_field};
use crate::management::objects::apply_windows;
use crate::management::store::{Kind, ListQuery, Object, StoreError};
use authz::{Owner, caller_key, member_route, reads_everything};
use budgets::{budget_delete, budget_info, budget_new, budget_update};
use customers::{customer_block, customer_delete, customer_info, customer_new, customer_update};
use keys::{key_block, key_delete, key_generate, key_info, key_list, key_regenerate, key_update};
use spend::{global_spend, global_spend_report, global_spend_reset, spend_logs};
use teams::{
    team_delete, team_info, team_list, team_member_add, team_member_delete, team_member_update,
    team_new, team_update,
};
use users::{user_delete, user_info, user_list, user_new, user_update};

type Answer = Result<(StatusCode, Value), ApiError>;

/// A management request.
pub struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub caller: &'a Caller,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request_error", message).with_param("None")
}

fn not_found(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found_error", message).with_param("None")
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "auth_error", message).with_param("None")
}

fn db_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(what) => {
            bad(format!("Unique constraint violated: {what} already exists"))
        }
        e => {
            tracing::error!("management database error: {e}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                "database error; see the gateway log",
            )
        }
    }
}

/// LiteLLM's refusal of an admin route to a caller who is not a proxy admin.
pub fn admin_only(path: &str) -> ApiError {
    ApiError::unauthorized(format!(
        "Only proxy admin can be used to generate, delete, update info for new keys/users/teams. Route={path}. Your role=internal_user"
    ))
}

/// Answers one management request: `(status, JSON body)`.
pub async fn handle(m: Arc<Management>, call: Call<'_>) -> (StatusCode, Value) {
    if !m.db_up() {
        // The admin API reads and writes the database whatever allow_requests_on_db_unavailable
        // says (that setting keeps LLM calls going, not key management).
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_db_connection",
            "DB not connected: key, team and user management needs the database; try again when it is back",
        );
        return (e.status, error_value(&e));
    }
    match route(&m, &call).await {
        Ok(ok) => ok,
        Err(e) => (e.status, error_value(&e)),
    }
}

fn error_value(e: &ApiError) -> Value {
    serde_json::from_slice(&e.body()).unwrap_or(Value::Null)
}

async fn route(m: &Arc<Management>, c: &Call<'_>) -> Answer {
    let path = c.path.trim_end_matches('/');
    let get = *c.method == Method::GET;
    let post = *c.method == Method::POST;
    // LiteLLM's `key_type`: what the key may call, whatever its role.
    if let Some(k) = caller_key(c.caller) {
        let refused = match k.key_type {
            KeyType::LlmApi => Some("LLM API routes"),
            KeyType::ReadOnly if !get => Some("routes that read (GET)"),
            _ => None,
        };
        if let Some(allowed) = refused {
            return Err(ApiError::unauthorized(format!(
                "This key's key_type is {}: it may call only {allowed}. Tried to call {path}",
                k.key_type.as_str()
            )));
        }
    }
    // Routes a non-admin key may call about itself.
    match (path, get) {
        ("/key/info", true) => return key_info(m, c).await,
        ("/user/info", true) => return user_info(m, c).await,
        ("/team/info", true) => return team_info(m, c).await,
        _ => {}
    }
    if !c.caller.is_admin() {
        if reads_everything(c.caller) && get && VIEWER_ROUTES.contains(&path) {
            return admin_route(m, c, path, get, post).await;
        }
        return member_route(m, c, path, post).await;
    }
    admin_route(m, c, path, get, post).await
}

async fn admin_route(
    m: &Arc<Management>,
    c: &Call<'_>,
    path: &str,
    get: bool,
    post: bool,
) -> Answer {
    let body = || parse_body(c.body);
    match (path, get, post) {
        ("/key/generate", _, true) => key_generate(m, body()?, c.caller).await,
        ("/key/update", _, true) => key_update(m, body()?, true).await,
        ("/key/list", true, _) => key_list(m, c.query, Owner::Any).await,
        ("/key/delete", _, true) => key_delete(m, body()?).await,
        ("/key/regenerate", _, true) => key_regenerate(m, None, body()?).await,
        ("/key/block", _, true) => key_block(m, body()?, true).await,
        ("/key/unblock", _, true) => key_block(m, body()?, false).await,
        ("/team/new", _, true) => team_new(m, body()?).await,
        ("/team/update", _, true) => team_update(m, body()?).await,
        ("/team/list", true, _) => team_list(m, query_param(c.query, "user_id"), false).await,
        ("/team/delete", _, true) => team_delete(m, body()?).await,
        ("/team/member_add", _, true) => team_member_add(m, body()?).await,
        ("/team/member_delete", _, true) => team_member_delete(m, body()?).await,
        ("/team/member_update", _, true) => team_member_update(m, body()?).await,
        ("/team/block", _, true) => object_block(m, Kind::Team, body()?, "team_id", true).await,
        ("/team/unblock", _, true) => object_block(m, Kind::Team, body()?, "team_id", false).await,
        ("/user/new", _, true) => user_new(m, body()?, c.caller).await,
        ("/user/update", _, true) => user_update(m, body()?).await,
        ("/user/delete", _, true) => user_delete(m, body()?).await,
        ("/user/list", true, _) => user_list(m, c.query).await,
        ("/customer/new" | "/end_user/new", _, true) => customer_new(m, body()?).await,
        ("/customer/info" | "/end_user/info", true, _) => customer_info(m, c.query).await,
        ("/customer/update" | "/end_user/update", _, true) => customer_update(m, body()?).await,
        ("/customer/delete" | "/end_user/delete", _, true) => customer_delete(m, body()?).await,
        ("/customer/block" | "/end_user/block", _, true) => customer_block(m, body()?, true).await,
        ("/customer/unblock" | "/end_user/unblock", _, true) => {
            customer_block(m, body()?, false).await
        }
        ("/customer/list" | "/end_user/list", true, _) => list_all(m, Kind::EndUser).await,
        ("/budget/new", _, true) => budget_new(m, body()?).await,
        ("/budget/info", _, _) => budget_info(m, c).await,
        ("/budget/list", true, _) => list_all(m, Kind::Budget).await,
        ("/budget/update", _, true) => budget_update(m, body()?).await,
        ("/budget/delete", _, true) => budget_delete(m, body()?).await,
        ("/global/spend/reset", _, true) => global_spend_reset(m, c.caller).await,
        ("/spend/logs", true, _) => spend_logs(m, c.query, Owner::Any).await,
        ("/global/spend", true, _) => global_spend(m).await,
        ("/global/spend/report", true, _) => global_spend_report(m, c.query).await,
        _ => {
            if let Some(id) = path
                .strip_prefix("/key/")
                .and_then(|p| p.strip_suffix("/regenerate"))
                && post
            {
                return key_regenerate(m, Some(id.to_string()), body()?).await;
            }
            Err(not_found(format!(
                "Route {path} not found for {}",
                c.method
            )))
        }
    }
}

/// Read-only routes a `proxy_admin_viewer` may call about anything (LiteLLM's view-only admin).
const VIEWER_ROUTES: &[&str] = &[
    "/key/list",
    "/team/list",
    "/user/list",
    "/budget/list",
    "/customer/info",
    "/end_user/info",
    "/customer/list",
    "/end_user/list",
    "/budget/info",
    "/spend/logs",
    "/global/spend",
    "/global/spend/report",
];

fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("request body must be a JSON object")),
        Err(e) => Err(bad(format!("request body is not valid JSON: {e}"))),
    }
}

/// The JSON form of a stored object (LiteLLM's row shape).
fn render(kind: Kind, o: &Object) -> Value {
    let mut v = o.data.clone();
    let id_field = match kind {
        Kind::Key => "token",
        Kind::Team => "team_id",
        Kind::User | Kind::EndUser => "user_id",
        Kind::Budget => "budget_id",
    };
    v.insert(id_field.into(), Value::String(o.id.clone()));
    v.insert("spend".into(), json!(o.spend));
    match kind {
        Kind::Key => {
            v.insert("key_alias".into(), json!(o.alias));
            v.insert("user_id".into(), json!(o.user_id));
            v.insert("team_id".into(), json!(o.team_id));
            // Fields LiteLLM's key object always has.
            for (field, default) in [
                ("key_type", json!("default")),
                ("organization_id", Value::Null),
                ("budget_id", Value::Null),
            ] {
                v.entry(field).or_insert(default);
            }
        }
        Kind::Team => {
            v.insert("team_alias".into(), json!(o.alias));
        }
        Kind::User => {
            v.insert("user_email".into(), json!(o.alias));
        }
        Kind::EndUser => {
            v.insert("alias".into(), json!(o.alias));
        }
        Kind::Budget => {}
    }
    v.insert(
        "budget_reset_at".into(),
        o.budget_reset_at
            .map_or(Value::Null, |t| Value::String(iso(t))),
    );
    v.insert("created_at".into(), Value::String(iso(o.created_at)));
    v.insert("updated_at".into(), Value::String(iso(o.updated_at)));
    Value::Object(v)
}

fn string_of(b: &Map<String, Value>, f: &str) -> Option<String> {
    str_field(b, f)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Merges an update body into a stored object and writes it: every field but those in `keep`
/// replaces the stored one (`budget_duration` through [`apply_windows`]); `alias_field`, when
/// sent, renames; `spend`, when sent, sets the spend (and the ledger's).
async fn write_update(
    m: &Arc<Management>,
    kind: Kind,
    o: &mut Object,
    b: &Map<String, Value>,
    keep: &[&str],
    alias_field: Option<&str>,
) -> Result<(), ApiError> {
    for (k, v) in b {
        if !keep.contains(&k.as_str()) && !matches!(k.as_str(), "spend" | "budget_duration") {
            o.data.insert(k.clone(), v.clone());
        }
    }
    if let Some(f) = alias_field
        && b.contains_key(f)
    {
        o.alias = string_of(b, f);
    }
    let window_before = o.budget_reset_at;
    apply_windows(o, b);
    o.updated_at = now_ms();
    let set_spend = f64_field(b, "spend");
    if let Some(spend) = set_spend {
        o.spend = spend;
    } else if o.budget_reset_at != window_before {
        // Before the database: an instance that reads the new `budget_reset_at` first would
        // take it for the reset job's and zero the spend.
        m.window_moved(kind, &o.id, o.budget_reset_at).await;
    }
    m.store
        .update(kind, o, set_spend.is_some())
        .await
        .map_err(db_error)?;
    if let Some(spend) = set_spend {
        m.spend_was_set(kind, &o.id, spend, o.budget_reset_at).await;
    }
    Ok(())
}

fn paging(query: Option<&str>) -> (i64, i64) {
    let page = query_param(query, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1i64)
        .max(1);
    let size = query_param(query, "size")
        .and_then(|p| p.parse().ok())
        .unwrap_or(10i64)
        .clamp(1, 100);
    (page, size)
}

fn list_of(b: &Map<String, Value>, f: &str) -> Vec<String> {
    crate::management::identity::string_list(b, f)
}

async fn object_block(
    m: &Arc<Management>,
    kind: Kind,
    b: Map<String, Value>,
    field: &str,
    blocked: bool,
) -> Answer {
    let id = string_of(&b, field).ok_or_else(|| bad(format!("{field} is required")))?;
    let mut o = m
        .store
        .get(kind, &id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(format!("{} not found, passed {field}={id}", kind.as_str())))?;
    o.data.insert("blocked".into(), json!(blocked));
    o.updated_at = now_ms();
    m.store.update(kind, &o, false).await.map_err(db_error)?;
    Ok((StatusCode::OK, render(kind, &o)))
}

/// Every stored object of a kind (the lists without paging).
async fn all_of(m: &Management, kind: Kind) -> Result<Vec<Object>, ApiError> {
    let q = ListQuery {
        limit: 1_000_000,
        ..ListQuery::default()
    };
    Ok(m.store.list(kind, &q).await.map_err(db_error)?.0)
}

/// `/customer/list`, `/budget/list`: every object, rendered.
async fn list_all(m: &Arc<Management>, kind: Kind) -> Answer {
    let rows = all_of(m, kind).await?;
    Ok((
        StatusCode::OK,
        Value::Array(rows.iter().map(|o| render(kind, o)).collect()),
    ))
}
