//! LiteLLM's management API (`/key/*`, `/team/*`, `/user/*`, `/customer/*` and `/end_user/*`,
//! `/budget/*`, `/spend/logs`, `/global/spend`): request and response shapes, status codes and
//! error bodies as LiteLLM's proxy answers them. Called from `request_filter` for
//! `Endpoint::Management`; runs on the management runtime.

use std::sync::Arc;

use filters::identity::{KeyIdentity, KeyType, Limits, ScopeKind};
use filters::{ApiError, Caller};
use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::Management;
use super::identity::{f64_field, str_field};
use super::store::{Kind, ListQuery, Object, SpendQuery, StoreError};
use crate::admin::query_param;
use crate::clock::{self, iso, now_ms, parse_span};

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

fn admin_only(path: &str) -> ApiError {
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
        ("/key/update", _, true) => key_update(m, body()?).await,
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

/// Key fields the owner of a key (not a team admin) may change on it: naming and bookkeeping,
/// never its limits, models, owners or state.
const OWNER_KEY_FIELDS: &[&str] = &["key", "key_alias", "new_key", "metadata", "tags"];
/// Team fields a team admin may change (members go through member_add / member_delete).
const TEAM_ADMIN_TEAM_FIELDS: &[&str] = &["team_id", "team_alias", "metadata", "tags"];

/// Whose objects a list or spend query may show.
enum Owner {
    Any,
    User(String),
    Team(String),
}

/// A `proxy_admin_viewer` key: reads every object, changes none.
fn reads_everything(caller: &Caller) -> bool {
    caller_key(caller).is_some_and(|k| k.user_role.as_deref() == Some("proxy_admin_viewer"))
}

/// `internal_user_viewer` and `proxy_admin_viewer` keys change nothing.
fn read_only(k: &KeyIdentity) -> bool {
    matches!(
        k.user_role.as_deref(),
        Some("proxy_admin_viewer" | "internal_user_viewer")
    )
}

/// The caller's user's role in the team (`admin` or `user`), when it is a member.
fn member_role<'a>(team: &'a Object, k: &KeyIdentity) -> Option<&'a str> {
    let user = k.user_id.as_deref()?;
    team.data
        .get("members_with_roles")?
        .as_array()?
        .iter()
        .find(|x| x.get("user_id").and_then(Value::as_str) == Some(user))
        .map(|x| x.get("role").and_then(Value::as_str).unwrap_or("user"))
}

/// Whether the caller's user is an `admin` member of the team.
async fn is_team_admin(m: &Management, k: &KeyIdentity, team_id: &str) -> Result<bool, ApiError> {
    let team = m.store.get(Kind::Team, team_id).await.map_err(db_error)?;
    Ok(team.is_some_and(|t| member_role(&t, k) == Some("admin")))
}

/// Why a non-admin may touch a stored key.
#[derive(PartialEq)]
enum KeyRight {
    /// An admin of the key's team: anything within the team's limits.
    TeamAdmin,
    /// A personal key of the caller's user: naming and deletion only.
    Owner,
}

/// Roles whose keys only a proxy admin may manage: a team admin taking over such a key (by
/// regenerating it, say) would hold an admin's key.
const PRIVILEGED_ROLES: &[&str] = &["proxy_admin", "proxy_admin_viewer", "org_admin"];

async fn key_right(
    m: &Management,
    k: &KeyIdentity,
    key: &Object,
    regenerate: bool,
) -> Result<KeyRight, ApiError> {
    let refused = || {
        forbidden(
            "Only proxy admins, the key's team admins and (for personal keys) the key's user can manage this key",
        )
    };
    let own = k.user_id.is_some() && key.user_id == k.user_id;
    match &key.team_id {
        Some(t) if is_team_admin(m, k, t).await? => {
            // A team key of another user: a team admin may change or delete it, unless its user
            // is privileged, and may never regenerate it (the new key would act as that user).
            if let Some(user) = key.user_id.as_deref().filter(|_| !own) {
                if regenerate {
                    return Err(refused());
                }
                let role = m
                    .store
                    .get(Kind::User, user)
                    .await
                    .map_err(db_error)?
                    .and_then(|u| str_field(&u.data, "user_role").map(str::to_string));
                if role.is_some_and(|r| PRIVILEGED_ROLES.contains(&r.as_str())) {
                    return Err(refused());
                }
            }
            Ok(KeyRight::TeamAdmin)
        }
        None if own => Ok(KeyRight::Owner),
        _ => Err(refused()),
    }
}

/// Which body fields a non-admin may send.
enum Fields<'a> {
    Only(&'a [&'a str]),
    AllBut(&'a [&'a str]),
}

/// Refuses the first body field `fields` does not let `who` set.
fn check_fields(b: &Map<String, Value>, fields: Fields<'_>, who: &str) -> Result<(), ApiError> {
    let refused = b.keys().find(|f| match fields {
        Fields::Only(allowed) => !allowed.contains(&f.as_str()),
        Fields::AllBut(refused) => refused.contains(&f.as_str()),
    });
    match refused {
        Some(f) => Err(
            forbidden(format!("{who} may not set {f}; only a proxy admin may"))
                .with_param(f.as_str()),
        ),
        None => Ok(()),
    }
}

/// Management routes for keys that are not proxy admins, as LiteLLM's roles allow: internal
/// users manage their own personal keys (create, rename, delete) and see their own keys and
/// spend; admins of a team manage the team's keys (within the team's limits), its members and
/// its name. Nothing here can create an admin key or widen the caller's own limits: keys are
/// created for the caller's own user or the team, limits are checked against the team's and the
/// user's, and a key's owner cannot change its limits, models, owners or blocked state.
async fn member_route(m: &Arc<Management>, c: &Call<'_>, path: &str, post: bool) -> Answer {
    let Some(k) = caller_key(c.caller) else {
        return Err(admin_only(path));
    };
    let writes = post && !read_only(k);
    // `/key/{key}/regenerate` is `/key/regenerate` with the key in the path.
    let path_key = path
        .strip_prefix("/key/")
        .and_then(|p| p.strip_suffix("/regenerate"));
    let route = if path_key.is_some() {
        "/key/regenerate"
    } else {
        path
    };
    match route {
        "/key/generate" if writes => {
            let mut b = parse_body(c.body)?;
            // Aliases route a permitted name to another model: a proxy admin's to set.
            check_fields(&b, Fields::AllBut(&["aliases"]), "A non-admin key")?;
            match string_of(&b, "team_id") {
                Some(t) => {
                    if !is_team_admin(m, k, &t).await? {
                        return Err(forbidden(format!(
                            "Only admins of team {t} can create its keys"
                        )));
                    }
                    // Never for another user: a key takes its user's role.
                    if string_of(&b, "user_id").is_some_and(|u| Some(&u) != k.user_id.as_ref()) {
                        return Err(
                            forbidden("user_id must be your own user").with_param("user_id")
                        );
                    }
                }
                None => {
                    let Some(own) = k.user_id.clone() else {
                        return Err(admin_only(path));
                    };
                    if string_of(&b, "user_id").is_some_and(|u| u != own) {
                        return Err(
                            forbidden("user_id must be your own user").with_param("user_id")
                        );
                    }
                    b.insert("user_id".into(), json!(own));
                    within_caller_key(&mut b, k)?;
                }
            }
            key_generate(m, b, c.caller).await
        }
        "/key/update" | "/key/regenerate" | "/key/block" | "/key/unblock" if writes => {
            let b = parse_body(c.body)?;
            let key = path_key.or_else(|| str_field(&b, "key"));
            let target = find_key(m, key, str_field(&b, "key_alias")).await?;
            let right = key_right(m, k, &target, route == "/key/regenerate").await?;
            // Only a proxy admin lifts a block: nothing records who set it.
            if route == "/key/unblock" || b.get("blocked").is_some_and(|v| v != &json!(true)) {
                return Err(forbidden("Only a proxy admin can unblock a key"));
            }
            if right == KeyRight::Owner {
                if route == "/key/block" {
                    return Err(forbidden(
                        "Only proxy admins and team admins can block keys",
                    ));
                }
                check_fields(&b, Fields::Only(OWNER_KEY_FIELDS), "The key's user")?;
            } else if route == "/key/regenerate" {
                // Regeneration copies fields without the team-limit checks of an update.
                check_fields(&b, Fields::Only(OWNER_KEY_FIELDS), "A team admin")?;
            } else {
                // Owners, and aliases (which route a permitted name to another model), stay as
                // a proxy admin set them.
                check_fields(
                    &b,
                    Fields::AllBut(&["user_id", "team_id", "aliases"]),
                    "A team admin",
                )?;
            }
            match route {
                "/key/update" => key_update(m, b).await,
                "/key/regenerate" => key_regenerate(m, path_key.map(str::to_string), b).await,
                _ => key_block(m, b, route == "/key/block").await,
            }
        }
        "/key/delete" if writes => {
            let b = parse_body(c.body)?;
            let named = list_of(&b, "keys")
                .into_iter()
                .map(|k| (Some(k), None))
                .chain(
                    list_of(&b, "key_aliases")
                        .into_iter()
                        .map(|a| (None, Some(a))),
                );
            for (key, alias) in named {
                match find_key(m, key.as_deref(), alias.as_deref()).await {
                    Ok(o) => {
                        key_right(m, k, &o, false).await?;
                    }
                    // Unknown keys are key_delete's to report.
                    Err(e) if e.status == StatusCode::NOT_FOUND => {}
                    Err(e) => return Err(e),
                }
            }
            key_delete(m, b).await
        }
        // The teams the caller's user belongs to (LiteLLM's info route for internal users).
        "/team/list" if !post => {
            let own = k.user_id.clone().ok_or_else(|| admin_only(path))?;
            team_list(m, Some(own), true).await
        }
        "/key/list" if !post => {
            let owner = match query_param(c.query, "team_id") {
                Some(t) if is_team_admin(m, k, &t).await? => Owner::Team(t),
                Some(t) => {
                    return Err(forbidden(format!(
                        "Only admins of team {t} can list its keys"
                    )));
                }
                None => Owner::User(k.user_id.clone().ok_or_else(|| admin_only(path))?),
            };
            key_list(m, c.query, owner).await
        }
        "/spend/logs" if !post => {
            let own = k.user_id.clone().ok_or_else(|| admin_only(path))?;
            spend_logs(m, c.query, Owner::User(own)).await
        }
        "/team/update" | "/team/member_add" | "/team/member_delete" | "/team/member_update"
            if writes =>
        {
            let b = parse_body(c.body)?;
            let team = string_of(&b, "team_id").ok_or_else(|| bad("team_id is required"))?;
            if !is_team_admin(m, k, &team).await? {
                return Err(forbidden(format!(
                    "Only proxy admins and admins of team {team} can change it"
                )));
            }
            match path {
                "/team/update" => {
                    check_fields(&b, Fields::Only(TEAM_ADMIN_TEAM_FIELDS), "A team admin")?;
                    team_update(m, b).await
                }
                "/team/member_add" => team_member_add(m, b).await,
                "/team/member_update" => team_member_update(m, b).await,
                _ => team_member_delete(m, b).await,
            }
        }
        _ => Err(admin_only(path)),
    }
}

/// A personal key created by a key: never more than the creating key may do. Its budget is at
/// most what the creating key has left, in the same window; its rate limits, models and expiry
/// are the creating key's or narrower (inherited when not set). A team key acts within its
/// team, so the team's models, budget and rate limits bind what it creates in the same way:
/// otherwise a personal key would be a way out of them. A key with per-model limits creates
/// none. (What all of a user's keys spend together is capped by the user's own `max_budget`.)
fn within_caller_key(b: &mut Map<String, Value>, k: &KeyIdentity) -> Result<(), ApiError> {
    if !k.model_limits.is_empty() {
        return Err(forbidden(
            "a key with per-model limits cannot create keys; ask a proxy admin",
        ));
    }
    let team = k
        .team_id
        .as_ref()
        .and_then(|_| k.scopes.iter().find(|s| s.kind == ScopeKind::Team))
        .map(|s| &*s.limits);
    let binding: Vec<(&Limits, &str)> = std::iter::once((&k.key_limits, "your key"))
        .chain(team.map(|t| (t, "your key's team")))
        .collect();
    if let Some((window, whose)) = binding
        .iter()
        .find_map(|(l, whose)| Some((l.budget_duration.as_ref()?, *whose)))
    {
        match str_field(b, "budget_duration") {
            Some(asked) if asked != window => {
                return Err(
                    forbidden(format!("budget_duration must be {whose}'s ({window})"))
                        .with_param("budget_duration"),
                );
            }
            Some(_) => {}
            None => {
                b.insert("budget_duration".into(), json!(window));
            }
        }
    }
    if let Some(expires) = k.expires_at {
        let now = now_ms();
        let asked = match b.get("duration") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|d| parse_span(d).ok())
                    .map(|span| span.after(now))
                    .ok_or_else(|| bad("duration must be a string such as \"30d\""))?,
            ),
        };
        match asked {
            Some(end) if end > expires => {
                return Err(
                    forbidden("duration must end before your key expires").with_param("duration")
                );
            }
            Some(_) => {}
            None => {
                let left_s = ((expires - now) / 1000).max(1);
                b.insert("duration".into(), json!(format!("{left_s}s")));
            }
        }
    }
    type Cap = fn(&Limits) -> Option<f64>;
    let caps: [(&str, Cap); 4] = [
        ("max_budget", |l| {
            l.max_budget.map(|max| (max - l.spend).max(0.0))
        }),
        ("tpm_limit", |l| l.tpm_limit.map(|v| v as f64)),
        ("rpm_limit", |l| l.rpm_limit.map(|v| v as f64)),
        ("max_parallel_requests", |l| {
            l.max_parallel_requests.map(|v| v as f64)
        }),
    ];
    for (field, cap_of) in caps {
        // The tightest of the key's and its team's.
        let Some((cap, whose)) = binding
            .iter()
            .filter_map(|(l, whose)| Some((cap_of(l)?, *whose)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
        else {
            continue;
        };
        match f64_field(b, field) {
            Some(v) if v > cap => {
                return Err(forbidden(format!(
                    "{field}={v} is over what {whose} has ({cap}); a key cannot create a key with more than it has"
                ))
                .with_param(field));
            }
            Some(_) => {}
            None => {
                let value = if field == "max_budget" {
                    json!(cap)
                } else {
                    json!(cap as u64)
                };
                b.insert(field.into(), value);
            }
        }
    }
    // The key's own models, or (a team key without its own list) its team's.
    let models = if k.models.is_empty() && k.team_id.is_some() {
        &k.team_models
    } else {
        &k.models
    };
    if !models.is_empty() {
        let asked = list_of(b, "models");
        if let Some(extra) = asked.iter().find(|m| !models.contains(m)) {
            return Err(forbidden(format!(
                "model {extra} is not among your key's models {models:?}"
            ))
            .with_param("models"));
        }
        if asked.is_empty() {
            b.insert("models".into(), json!(models));
        }
    }
    Ok(())
}

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

/// Type checks of the fields Sluice acts on (LiteLLM's pydantic models), before anything is
/// stored.
fn validate(b: &Map<String, Value>) -> Result<(), ApiError> {
    for f in ["max_budget", "soft_budget", "spend", "max_budget_in_team"] {
        match b.get(f) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_f64().is_some_and(|v| v >= 0.0) => {}
            Some(Value::Number(_)) => {
                return Err(bad(format!("{f} must be a non-negative number")));
            }
            Some(_) => return Err(bad(format!("{f} must be a number"))),
        }
    }
    for f in ["tpm_limit", "rpm_limit", "max_parallel_requests"] {
        match b.get(f) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64().is_some() => {}
            Some(_) => return Err(bad(format!("{f} must be a non-negative integer"))),
        }
    }
    for f in ["duration", "budget_duration"] {
        match b.get(f) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                parse_span(s).map_err(|e| bad(format!("{f}: {e}")))?;
            }
            Some(_) => return Err(bad(format!("{f} must be a string such as \"30d\""))),
        }
    }
    for f in ["models", "tags"] {
        match b.get(f) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
            Some(_) => return Err(bad(format!("{f} must be a list of strings"))),
        }
    }
    for f in [
        "metadata",
        "aliases",
        "model_max_budget",
        "model_rpm_limit",
        "model_tpm_limit",
        "config",
    ] {
        match b.get(f) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => return Err(bad(format!("{f} must be an object"))),
        }
    }
    for f in ["model_rpm_limit", "model_tpm_limit"] {
        if let Some(Value::Object(m)) = b.get(f)
            && m.values().any(|v| v.as_u64().is_none())
        {
            return Err(bad(format!("{f} values must be non-negative integers")));
        }
    }
    if let Some(Value::Object(m)) = b.get("model_max_budget") {
        for (model, v) in m {
            let ok = v
                .get("budget_limit")
                .and_then(Value::as_f64)
                .is_some_and(|x| x >= 0.0)
                && v.get("time_period")
                    .is_none_or(|t| t.as_str().is_some_and(|t| parse_span(t).is_ok()));
            if !ok {
                return Err(bad(format!(
                    "model_max_budget.{model} must be {{\"budget_limit\": number, \"time_period\": \"1d\"}}"
                )));
            }
        }
    }
    match b.get("blocked") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(_) => return Err(bad("blocked must be true or false")),
    }
    // Restrictions Sluice does not enforce yet are refused rather than stored and silently
    // ignored: a key meant to be limited must not come out unlimited.
    refuse(
        b,
        &[
            "allowed_routes",
            "enforced_params",
            "max_budget_in_team",
            "budget_limits",
            "guardrails",
        ],
    )?;
    // The default (best effort) is what Sluice does; reserved capacity is not.
    for f in ["tpm_limit_type", "rpm_limit_type"] {
        if let Some(t) = str_field(b, f)
            && t != "best_effort_throughput"
        {
            return Err(bad(format!(
                "{f}={t} is not supported by Sluice yet (only best_effort_throughput); nothing was created or changed"
            ))
            .with_param(f));
        }
    }
    match b.get("key_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if KeyType::parse(t).is_some() => {}
        Some(v) => {
            return Err(bad(format!(
                "key_type={v} is not one of default, llm_api, management, read_only"
            ))
            .with_param("key_type"));
        }
    }
    Ok(())
}

/// Refuses the fields of `fields` that are set (non-null, non-empty): restrictions Sluice
/// does not enforce on this kind of object.
fn refuse(b: &Map<String, Value>, fields: &[&str]) -> Result<(), ApiError> {
    for &f in fields {
        let set = match b.get(f) {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        if set {
            return Err(bad(format!(
                "{f} is not supported by Sluice yet; nothing was created or changed"
            ))
            .with_param(f));
        }
    }
    Ok(())
}

/// Per-model limits are enforced on keys only.
const TEAM_UNENFORCED: &[&str] = &["model_max_budget", "model_rpm_limit", "model_tpm_limit"];
/// Regional routing and default models of end users are not implemented.
const CUSTOMER_UNENFORCED: &[&str] = &["allowed_model_region", "default_model"];

/// A key's (or user's) budget and limits may not exceed its parent's.
fn check_within(child: &Map<String, Value>, parent: &Object, what: &str) -> Result<(), ApiError> {
    for f in [
        "max_budget",
        "tpm_limit",
        "rpm_limit",
        "max_parallel_requests",
    ] {
        if let (Some(c), Some(p)) = (f64_field(child, f), f64_field(&parent.data, f))
            && c > p
        {
            return Err(bad(format!(
                "{f}={c} is over the {what}'s {f}={p} ({what} {}); a key's limits may not exceed its {what}'s",
                parent.id
            )));
        }
    }
    Ok(())
}

fn new_object(id: String, data: Map<String, Value>) -> Object {
    let now = now_ms();
    Object {
        id,
        created_at: now,
        updated_at: now,
        data,
        ..Object::default()
    }
}

/// Creates or updates the user `litellm-proxy-budget` that holds the proxy-wide budget
/// (`litellm_settings.max_budget`, `budget_duration`), as LiteLLM does at start-up. Every
/// request's spend is added to it; virtual keys are checked against it.
pub async fn ensure_proxy_budget(
    m: &Management,
    budget: &crate::config::ProxyBudget,
) -> Result<(), StoreError> {
    let id = crate::config::PROXY_BUDGET_USER;
    let mut wanted = Map::new();
    wanted.insert("max_budget".into(), json!(budget.max_budget));
    wanted.insert("budget_duration".into(), json!(budget.budget_duration));
    match m.store.get(Kind::User, id).await? {
        Some(mut o) => {
            if f64_field(&o.data, "max_budget") == Some(budget.max_budget)
                && str_field(&o.data, "budget_duration") == budget.budget_duration.as_deref()
            {
                return Ok(());
            }
            o.data.insert("max_budget".into(), json!(budget.max_budget));
            apply_windows(&mut o, &wanted);
            o.updated_at = now_ms();
            m.store.update(Kind::User, &o, false).await
        }
        None => {
            let data = json!({"user_role": "internal_user", "models": [], "teams": [], "max_budget": budget.max_budget});
            let mut o = new_object(
                id.to_string(),
                data.as_object().cloned().unwrap_or_default(),
            );
            apply_windows(&mut o, &wanted);
            match m.store.insert(Kind::User, &o).await {
                // Another instance created it first.
                Err(StoreError::Conflict(_)) => Ok(()),
                other => other,
            }
        }
    }
}

/// Applies `budget_duration` (and `duration` for keys) from `data` onto the object.
fn apply_windows(o: &mut Object, changed: &Map<String, Value>) {
    let now = now_ms();
    // Only a new or changed budget_duration starts a new window: resending the same value in
    // an update must not reset the spend window. (Updates leave `budget_duration` for this
    // function to merge, so `o.data` still holds the previous value.)
    let previous = o.data.get("budget_duration").cloned();
    if let Some(v) = changed.get("budget_duration") {
        o.data.insert("budget_duration".into(), v.clone());
    }
    if let Some(v) = changed
        .get("budget_duration")
        .filter(|v| o.budget_reset_at.is_none() || previous.as_ref() != Some(*v))
    {
        o.budget_reset_at = v
            .as_str()
            .and_then(|d| parse_span(d).ok())
            .map(|s| s.after(now));
        o.data.insert(
            "budget_reset_at".into(),
            o.budget_reset_at
                .map_or(Value::Null, |t| Value::String(iso(t))),
        );
    }
    if let Some(v) = changed.get("duration") {
        let expires = v
            .as_str()
            .and_then(|d| parse_span(d).ok())
            .map(|s| s.after(now));
        o.data.insert(
            "expires".into(),
            expires.map_or(Value::Null, |t| Value::String(iso(t))),
        );
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

/// The hash of a key given raw (`sk-...`) or already hashed.
fn token_of(key: &str) -> String {
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        key.to_ascii_lowercase()
    } else {
        filters::auth::hash_key_hex(key)
    }
}

fn abbreviated(raw: &str) -> String {
    let tail: String = raw
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

/// A new key: `sk-` and 16 bytes from the operating system's CSPRNG, URL-safe base64 (22
/// characters), the shape of LiteLLM's `secrets.token_urlsafe(16)`.
fn random_key() -> Result<String, ApiError> {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            format!("no random source for a new key: {e}"),
        )
    })?;
    Ok(format!(
        "sk-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn string_of(b: &Map<String, Value>, f: &str) -> Option<String> {
    str_field(b, f)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A team by id; 404 when there is none.
async fn team_or_404(m: &Management, id: &str) -> Result<Object, ApiError> {
    m.store
        .get(Kind::Team, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(format!("Team not found, passed team_id={id}")))
}

/// A user by id; 404 when there is none.
async fn user_or_404(m: &Management, id: &str) -> Result<Object, ApiError> {
    m.store
        .get(Kind::User, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(format!("User not found, passed user_id={id}")))
}

/// A team a request names by id; 400 when there is none (key generate and update).
async fn load_team(m: &Management, id: &str) -> Result<Object, ApiError> {
    m.store
        .get(Kind::Team, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| bad(format!("Team not found, passed team_id={id}")))
}

async fn key_generate(m: &Arc<Management>, b: Map<String, Value>, caller: &Caller) -> Answer {
    validate(&b)?;
    let mut b = with_budget(m, b).await?;
    let raw = match b.remove("key") {
        Some(Value::String(k)) if k.starts_with("sk-") && k.len() >= 8 => k,
        Some(Value::String(_)) => {
            return Err(bad(
                "key must start with 'sk-' and be at least 8 characters",
            ));
        }
        Some(Value::Null) | None => random_key()?,
        Some(_) => return Err(bad("key must be a string")),
    };
    let team = match string_of(&b, "team_id") {
        Some(t) => Some(load_team(m, &t).await?),
        None => None,
    };
    if let Some(t) = &team {
        check_within(&b, t, "team")?;
    }
    let user_id = string_of(&b, "user_id");
    if let Some(u) = &user_id {
        match m.store.get(Kind::User, u).await.map_err(db_error)? {
            Some(user) => check_within(&b, &user, "user")?,
            None => {
                // LiteLLM creates the user row the key names.
                let user = new_object(
                    u.clone(),
                    json!({"user_role": "internal_user", "models": [], "teams": []})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                );
                m.store.insert(Kind::User, &user).await.map_err(db_error)?;
            }
        }
    }
    let token = filters::auth::hash_key_hex(&raw);
    let mut data = b.clone();
    data.remove("spend");
    data.insert("key_name".into(), json!(abbreviated(&raw)));
    data.entry("models").or_insert(json!([]));
    data.entry("metadata").or_insert(json!({}));
    data.entry("aliases").or_insert(json!({}));
    data.entry("blocked").or_insert(Value::Null);
    data.entry("expires").or_insert(Value::Null);
    let created_by = match caller {
        Caller::Key(k) => k.user_id.clone(),
        _ => Some("default_user_id".into()),
    };
    data.insert("created_by".into(), json!(created_by));
    data.insert("updated_by".into(), json!(created_by));
    let mut o = new_object(token.clone(), data);
    o.alias = string_of(&b, "key_alias");
    o.user_id = user_id;
    o.team_id = team.map(|t| t.id);
    o.spend = f64_field(&b, "spend").unwrap_or(0.0);
    apply_windows(&mut o, &b);
    m.store.insert(Kind::Key, &o).await.map_err(|e| match e {
        StoreError::Conflict(_) => bad(format!(
            "Unique key aliases across all keys are required. Key alias={} already exists",
            o.alias.as_deref().unwrap_or("")
        )),
        e => db_error(e),
    })?;
    let mut out = render(Kind::Key, &o);
    if let Value::Object(v) = &mut out {
        v.insert("key".into(), json!(raw));
        v.insert("token_id".into(), json!(token));
        if let Some(d) = b.get("duration") {
            v.insert("duration".into(), d.clone());
        }
    }
    Ok((StatusCode::OK, out))
}

/// Finds the key a body or query names by `key` (raw or hash) or `key_alias`.
async fn find_key(
    m: &Management,
    key: Option<&str>,
    alias: Option<&str>,
) -> Result<Object, ApiError> {
    let found = match (key, alias) {
        (Some(k), _) => m.store.get(Kind::Key, &token_of(k)).await,
        (None, Some(a)) => m.store.get_by_alias(Kind::Key, a).await,
        (None, None) => return Err(bad("key or key_alias is required")),
    }
    .map_err(db_error)?;
    found.ok_or_else(|| not_found("Key not found in database"))
}

async fn key_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    let b = with_budget(m, b).await?;
    let mut o = find_key(m, str_field(&b, "key"), str_field(&b, "key_alias")).await?;
    if b.contains_key("team_id") {
        o.team_id = string_of(&b, "team_id");
    }
    if let Some(t) = &o.team_id {
        let team = load_team(m, t).await?;
        let mut merged = o.data.clone();
        merged.extend(b.clone());
        check_within(&merged, &team, "team")?;
    }
    if b.contains_key("user_id") {
        o.user_id = string_of(&b, "user_id");
    }
    if let Some(u) = &o.user_id
        && let Some(user) = m.store.get(Kind::User, u).await.map_err(db_error)?
    {
        let mut merged = o.data.clone();
        merged.extend(b.clone());
        check_within(&merged, &user, "user")?;
    }
    // `key_alias` names the key when no `key` is sent; with one, it renames.
    let rename = str_field(&b, "key").is_some().then_some("key_alias");
    write_update(m, Kind::Key, &mut o, &b, &["key"], rename).await?;
    Ok((StatusCode::OK, render(Kind::Key, &o)))
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

fn caller_key(caller: &Caller) -> Option<&Arc<KeyIdentity>> {
    caller.key()
}

async fn key_info(m: &Arc<Management>, c: &Call<'_>) -> Answer {
    let asked = query_param(c.query, "key");
    let token = match (&asked, caller_key(c.caller)) {
        (Some(k), _) => token_of(k),
        (None, Some(own)) => own.token.to_string(),
        (None, None) => return Err(bad("pass ?key=<key or hash>")),
    };
    let refused = || {
        forbidden(
            "You are not allowed to access this key's info. Your key can only view its own info.",
        )
    };
    let found = m.store.get(Kind::Key, &token).await.map_err(db_error)?;
    let caller = caller_key(c.caller);
    if !c.caller.is_admin()
        && !reads_everything(c.caller)
        && caller.is_none_or(|own| *own.token != *token)
    {
        // Another key of the caller's own user, or a key of a team the caller administers;
        // anything else (unknown keys included) is refused alike.
        let (Some(own), Some(o)) = (caller, &found) else {
            return Err(refused());
        };
        let same_user = own.user_id.is_some() && o.user_id == own.user_id;
        let team_admin = match &o.team_id {
            Some(t) if !same_user => is_team_admin(m, own, t).await?,
            _ => false,
        };
        if !same_user && !team_admin {
            return Err(refused());
        }
    }
    let o = found.ok_or_else(|| not_found("Key not found in database"))?;
    let mut info = render(Kind::Key, &o);
    if let Value::Object(v) = &mut info {
        v.remove("token");
    }
    Ok((
        StatusCode::OK,
        json!({"key": asked.unwrap_or(token), "info": info}),
    ))
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

async fn key_list(m: &Arc<Management>, query: Option<&str>, owner: Owner) -> Answer {
    let (page, size) = paging(query);
    let (user_id, team_id) = match owner {
        Owner::Any => (query_param(query, "user_id"), query_param(query, "team_id")),
        Owner::User(u) => (Some(u), None),
        Owner::Team(t) => (query_param(query, "user_id"), Some(t)),
    };
    let q = ListQuery {
        user_id,
        team_id,
        alias: query_param(query, "key_alias"),
        offset: (page - 1) * size,
        limit: size,
    };
    let (rows, total) = m.store.list(Kind::Key, &q).await.map_err(db_error)?;
    let full = query_param(query, "return_full_object").is_some_and(|v| v == "true");
    let keys: Vec<Value> = rows
        .iter()
        .map(|o| {
            if full {
                render(Kind::Key, o)
            } else {
                json!(o.id)
            }
        })
        .collect();
    Ok((
        StatusCode::OK,
        json!({
            "keys": keys,
            "total_count": total,
            "current_page": page,
            "total_pages": (total + size - 1) / size,
        }),
    ))
}

fn list_of(b: &Map<String, Value>, f: &str) -> Vec<String> {
    super::identity::string_list(b, f)
}

async fn key_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    let keys = list_of(&b, "keys");
    let aliases = list_of(&b, "key_aliases");
    if keys.is_empty() && aliases.is_empty() {
        return Err(bad("keys or key_aliases is required"));
    }
    let mut tokens = Vec::new();
    let mut named = Vec::new();
    for k in &keys {
        tokens.push(token_of(k));
        named.push(k.clone());
    }
    for a in &aliases {
        if let Some(o) = m.store.get_by_alias(Kind::Key, a).await.map_err(db_error)? {
            tokens.push(o.id);
            named.push(a.clone());
        }
    }
    let deleted = m.store.delete(Kind::Key, &tokens).await.map_err(db_error)?;
    if deleted.is_empty() {
        return Err(not_found(format!("Keys not found in database: {named:?}")));
    }
    let gone: Vec<&String> = tokens
        .iter()
        .zip(&named)
        .filter(|(t, _)| deleted.contains(t))
        .map(|(_, n)| n)
        .collect();
    Ok((StatusCode::OK, json!({"deleted_keys": gone})))
}

async fn key_regenerate(
    m: &Arc<Management>,
    path_key: Option<String>,
    b: Map<String, Value>,
) -> Answer {
    validate(&b)?;
    // LiteLLM Enterprise keeps the old key valid for a grace period; Sluice retires it at once.
    if b.get("grace_period")
        .is_some_and(|v| !v.is_null() && v.as_str() != Some("") && v.as_str() != Some("0"))
    {
        return Err(bad(
            "grace_period is not supported by Sluice yet (the old key stops working at once); nothing was changed",
        )
        .with_param("grace_period"));
    }
    let key = path_key.or_else(|| string_of(&b, "key"));
    let old = find_key(m, key.as_deref(), str_field(&b, "key_alias")).await?;
    let raw = match b.get("new_key").and_then(Value::as_str) {
        Some(k) if k.starts_with("sk-") => k.to_string(),
        Some(_) => return Err(bad("new_key must start with 'sk-'")),
        None => random_key()?,
    };
    let mut o = old.clone();
    o.id = filters::auth::hash_key_hex(&raw);
    for (k, v) in &b {
        if !matches!(
            k.as_str(),
            "key" | "new_key" | "spend" | "new_master_key" | "budget_duration"
        ) {
            o.data.insert(k.clone(), v.clone());
        }
    }
    o.data.insert("key_name".into(), json!(abbreviated(&raw)));
    apply_windows(&mut o, &b);
    o.updated_at = now_ms();
    // Spend queued for the old token is written first, so it stays with the key; then the row
    // moves to the new token in one transaction.
    m.flush_spend(m.settings.connect_timeout).await;
    m.store
        .rekey(Kind::Key, &old.id, &o)
        .await
        .map_err(db_error)?;
    let models: Vec<String> = ["model_max_budget", "model_rpm_limit", "model_tpm_limit"]
        .iter()
        .filter_map(|f| old.data.get(*f).and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect();
    m.key_renamed(&old.id, &o.id, &models).await;
    let mut out = render(Kind::Key, &o);
    if let Value::Object(v) = &mut out {
        v.insert("key".into(), json!(raw));
        v.insert("token_id".into(), json!(o.id));
    }
    Ok((StatusCode::OK, out))
}

async fn key_block(m: &Arc<Management>, b: Map<String, Value>, blocked: bool) -> Answer {
    let mut o = find_key(m, str_field(&b, "key"), str_field(&b, "key_alias")).await?;
    o.data.insert("blocked".into(), json!(blocked));
    o.updated_at = now_ms();
    m.store
        .update(Kind::Key, &o, false)
        .await
        .map_err(db_error)?;
    Ok((StatusCode::OK, render(Kind::Key, &o)))
}

fn members_of(o: &Object) -> Vec<Value> {
    o.data
        .get("members_with_roles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

async fn team_new(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    refuse(&b, TEAM_UNENFORCED)?;
    let id = string_of(&b, "team_id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut data = b.clone();
    data.remove("spend");
    let mut members: Vec<Value> = match b.get("members_with_roles") {
        Some(Value::Array(a)) => a.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(bad("members_with_roles must be a list")),
    };
    for (field, role) in [("admins", "admin"), ("members", "user")] {
        for u in list_of(&b, field) {
            members.push(json!({"role": role, "user_id": u, "user_email": null}));
        }
    }
    data.insert("members_with_roles".into(), Value::Array(members));
    data.entry("models").or_insert(json!([]));
    data.entry("metadata").or_insert(json!({}));
    data.entry("blocked").or_insert(json!(false));
    let mut o = new_object(id, data);
    o.alias = string_of(&b, "team_alias");
    apply_windows(&mut o, &b);
    m.store.insert(Kind::Team, &o).await.map_err(|e| match e {
        StoreError::Conflict(_) => bad(format!(
            "Team id = {} already exists. Please use a different team id.",
            o.id
        )),
        e => db_error(e),
    })?;
    Ok((StatusCode::OK, render(Kind::Team, &o)))
}

async fn team_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    refuse(&b, TEAM_UNENFORCED)?;
    let id = string_of(&b, "team_id").ok_or_else(|| bad("team_id is required"))?;
    let mut o = team_or_404(m, &id).await?;
    write_update(m, Kind::Team, &mut o, &b, &["team_id"], Some("team_alias")).await?;
    Ok((
        StatusCode::OK,
        json!({"team_id": o.id, "data": render(Kind::Team, &o)}),
    ))
}

async fn keys_of(
    m: &Management,
    team: Option<&str>,
    user: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let q = ListQuery {
        team_id: team.map(str::to_string),
        user_id: user.map(str::to_string),
        limit: 1000,
        ..ListQuery::default()
    };
    let (rows, _) = m.store.list(Kind::Key, &q).await.map_err(db_error)?;
    Ok(rows.iter().map(|o| render(Kind::Key, o)).collect())
}

async fn team_info(m: &Arc<Management>, c: &Call<'_>) -> Answer {
    let id = query_param(c.query, "team_id").ok_or_else(|| bad("pass ?team_id="))?;
    let team = m.store.get(Kind::Team, &id).await.map_err(db_error)?;
    let reads_all = c.caller.is_admin() || reads_everything(c.caller);
    let key = caller_key(c.caller);
    let role = match (key, &team) {
        (Some(k), Some(t)) => member_role(t, k),
        _ => None,
    };
    let own_key = key.is_some_and(|k| k.team_id.as_deref() == Some(&id));
    if !reads_all && role.is_none() && !own_key {
        return Err(forbidden(format!(
            "key not allowed to access this team's info. Key team_id={:?}, Requested team_id={id}",
            key.and_then(|k| k.team_id.clone())
        )));
    }
    let Some(o) = &team else {
        return Err(not_found(format!("Team not found, passed team_id={id}")));
    };
    let mut keys = keys_of(m, Some(&id), None).await?;
    // Members who do not administer the team see their own keys and the calling key only.
    if let Some(k) = key.filter(|_| !reads_all && role != Some("admin")) {
        keys.retain(|key| {
            key["token"].as_str() == Some(&*k.token)
                || (k.user_id.is_some() && key["user_id"].as_str() == k.user_id.as_deref())
        });
    }
    Ok((
        StatusCode::OK,
        json!({"team_id": id, "team_info": render(Kind::Team, o), "keys": keys, "team_memberships": []}),
    ))
}

/// `/team/list[?user_id=]`: teams (of which `user` is a member), each with its keys. For a
/// member's own call (`as_member`), a team it does not administer shows only its own keys, as
/// `/team/info` does.
async fn team_list(m: &Arc<Management>, user: Option<String>, as_member: bool) -> Answer {
    let rows = all_of(m, Kind::Team).await?;
    let mut out = Vec::new();
    for o in &rows {
        let role = user.as_deref().and_then(|u| {
            members_of(o).into_iter().find_map(|mem| {
                (mem.get("user_id").and_then(Value::as_str) == Some(u))
                    .then(|| mem.get("role").and_then(Value::as_str).map(str::to_string))
            })
        });
        if user.is_some() && role.is_none() {
            continue;
        }
        let only_own = as_member && role.flatten().as_deref() != Some("admin");
        let keys_user = if only_own { user.as_deref() } else { None };
        let mut v = render(Kind::Team, o);
        if let Value::Object(obj) = &mut v {
            obj.insert(
                "keys".into(),
                Value::Array(keys_of(m, Some(&o.id), keys_user).await?),
            );
        }
        out.push(v);
    }
    Ok((StatusCode::OK, Value::Array(out)))
}

/// Deletes every key of a team or a user (their keys go with them, as in LiteLLM).
async fn delete_keys_of(
    m: &Management,
    team: Option<&String>,
    user: Option<&String>,
) -> Result<(), ApiError> {
    let q = ListQuery {
        team_id: team.cloned(),
        user_id: user.cloned(),
        limit: 100_000,
        ..ListQuery::default()
    };
    let (keys, _) = m.store.list(Kind::Key, &q).await.map_err(db_error)?;
    let tokens: Vec<String> = keys.into_iter().map(|k| k.id).collect();
    m.store.delete(Kind::Key, &tokens).await.map_err(db_error)?;
    Ok(())
}

async fn team_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    let ids = list_of(&b, "team_ids");
    if ids.is_empty() {
        return Err(bad("team_ids is required"));
    }
    for id in &ids {
        if m.store
            .get(Kind::Team, id)
            .await
            .map_err(db_error)?
            .is_none()
        {
            return Err(not_found(format!("Team not found, passed team_id={id}")));
        }
    }
    for id in &ids {
        delete_keys_of(m, Some(id), None).await?;
    }
    let deleted = m.store.delete(Kind::Team, &ids).await.map_err(db_error)?;
    Ok((StatusCode::OK, json!({"deleted_teams": deleted})))
}

async fn team_member_add(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    let id = string_of(&b, "team_id").ok_or_else(|| bad("team_id is required"))?;
    let mut team = team_or_404(m, &id).await?;
    let new: Vec<Value> = match b.get("member") {
        Some(Value::Array(a)) => a.clone(),
        Some(v @ Value::Object(_)) => vec![v.clone()],
        _ => return Err(bad("member must be an object or a list of objects")),
    };
    let mut members = members_of(&team);
    let mut updated_users = Vec::new();
    for mem in new {
        let user_id = mem
            .get("user_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let email = mem
            .get("user_email")
            .and_then(Value::as_str)
            .map(str::to_string);
        if user_id.is_none() && email.is_none() {
            return Err(bad("member needs a user_id or user_email"));
        }
        let role = mem.get("role").and_then(Value::as_str).unwrap_or("user");
        if !matches!(role, "admin" | "user") {
            return Err(bad("member role must be \"admin\" or \"user\""));
        }
        // A member named by email only is the existing user with that email, when there is one.
        let user_id = user_id_or_by_email(m, user_id, email.as_deref()).await?;
        let exists = members.iter().any(|x| {
            (user_id.is_some() && x.get("user_id").and_then(Value::as_str) == user_id.as_deref())
                || (email.is_some()
                    && x.get("user_email").and_then(Value::as_str) == email.as_deref())
        });
        if exists {
            return Err(bad(format!("User is already a member of team {id}: {mem}")));
        }
        let uid = user_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // The member's user row, created when missing, lists the team.
        let mut user = match m.store.get(Kind::User, &uid).await.map_err(db_error)? {
            Some(u) => u,
            None => {
                let mut u = new_object(
                    uid.clone(),
                    json!({"user_role": "internal_user", "models": [], "teams": []})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                );
                u.alias = email.clone();
                m.store.insert(Kind::User, &u).await.map_err(db_error)?;
                u
            }
        };
        let mut teams = list_of(&user.data, "teams");
        if !teams.contains(&id) {
            teams.push(id.clone());
        }
        user.data.insert("teams".into(), json!(teams));
        m.store
            .update(Kind::User, &user, false)
            .await
            .map_err(db_error)?;
        updated_users.push(render(Kind::User, &user));
        members.push(json!({"role": role, "user_id": uid, "user_email": email}));
    }
    save_members(m, &mut team, members).await?;
    let mut out = render(Kind::Team, &team);
    if let Value::Object(v) = &mut out {
        v.insert("updated_users".into(), Value::Array(updated_users));
        v.insert("updated_team_memberships".into(), json!([]));
    }
    Ok((StatusCode::OK, out))
}

/// `/team/member_update {team_id, user_id|user_email, role}`: a member's role. Per-member
/// budgets and limits (`max_budget_in_team`, `tpm_limit`, `rpm_limit`) are refused, as on
/// `/team/member_add`.
async fn team_member_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    refuse(&b, &["max_budget_in_team", "tpm_limit", "rpm_limit"])?;
    let id = string_of(&b, "team_id").ok_or_else(|| bad("team_id is required"))?;
    let email = string_of(&b, "user_email");
    let mut team = team_or_404(m, &id).await?;
    let members = members_of(&team);
    let user_id = match (string_of(&b, "user_id"), &email) {
        (Some(u), _) => u,
        (None, Some(e)) => members
            .iter()
            .find(|x| x.get("user_email").and_then(Value::as_str) == Some(e))
            .and_then(|x| x.get("user_id").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| bad(format!("User {e} is not a member of team {id}")))?,
        (None, None) => return Err(bad("user_id or user_email is required")),
    };
    let role = match str_field(&b, "role") {
        None => None,
        Some(r @ ("admin" | "user")) => Some(r),
        Some(_) => return Err(bad("role must be \"admin\" or \"user\"")),
    };
    let mut found = false;
    let updated: Vec<Value> = members
        .into_iter()
        .map(|mut x| {
            if x.get("user_id").and_then(Value::as_str) == Some(user_id.as_str()) {
                found = true;
                if let (Some(r), Value::Object(o)) = (role, &mut x) {
                    o.insert("role".into(), json!(r));
                }
            }
            x
        })
        .collect();
    if !found {
        return Err(bad(format!("User {user_id} is not a member of team {id}")));
    }
    save_members(m, &mut team, updated).await?;
    Ok((
        StatusCode::OK,
        json!({
            "team_id": id,
            "user_id": user_id,
            "user_email": email,
            "max_budget_in_team": null,
            "tpm_limit": null,
            "rpm_limit": null,
        }),
    ))
}

async fn team_member_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    let id = string_of(&b, "team_id").ok_or_else(|| bad("team_id is required"))?;
    let user_id = string_of(&b, "user_id");
    let email = string_of(&b, "user_email");
    if user_id.is_none() && email.is_none() {
        return Err(bad("user_id or user_email is required"));
    }
    let mut team = team_or_404(m, &id).await?;
    // By email: also the member added by id whose user has that email.
    let user_id = user_id_or_by_email(m, user_id, email.as_deref()).await?;
    let members = members_of(&team);
    let is_it = |x: &Value| {
        (user_id.is_some() && x.get("user_id").and_then(Value::as_str) == user_id.as_deref())
            || (email.is_some() && x.get("user_email").and_then(Value::as_str) == email.as_deref())
    };
    if !members.iter().any(is_it) {
        return Err(bad(format!("User is not a member of team {id}")));
    }
    let kept: Vec<Value> = members.iter().filter(|x| !is_it(x)).cloned().collect();
    save_members(m, &mut team, kept).await?;
    if let Some(uid) = &user_id
        && let Some(mut user) = m.store.get(Kind::User, uid).await.map_err(db_error)?
    {
        let teams: Vec<String> = list_of(&user.data, "teams")
            .into_iter()
            .filter(|t| t != &id)
            .collect();
        user.data.insert("teams".into(), json!(teams));
        m.store
            .update(Kind::User, &user, false)
            .await
            .map_err(db_error)?;
    }
    Ok((StatusCode::OK, render(Kind::Team, &team)))
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

const USER_ROLES: [&str; 5] = [
    "proxy_admin",
    "proxy_admin_viewer",
    "internal_user",
    "internal_user_viewer",
    "team",
];

async fn user_new(m: &Arc<Management>, b: Map<String, Value>, caller: &Caller) -> Answer {
    validate(&b)?;
    let role = str_field(&b, "user_role").unwrap_or("internal_user");
    if !USER_ROLES.contains(&role) {
        return Err(bad(format!("user_role must be one of {USER_ROLES:?}")));
    }
    let id = string_of(&b, "user_id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // `teams`: ids, or `{team_id, user_role}` objects; the user becomes a member of each.
    let mut memberships = Vec::new();
    match b.get("teams") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for t in items {
                let (team, role) = match t {
                    Value::String(team) => (team.clone(), "user".to_string()),
                    Value::Object(o) => {
                        if o.get("max_budget_in_team").is_some_and(|v| !v.is_null()) {
                            return Err(bad(
                                "max_budget_in_team is not supported by Sluice yet; nothing was created or changed",
                            )
                            .with_param("teams"));
                        }
                        let team = o
                            .get("team_id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad("teams[].team_id is required"))?;
                        let role = o.get("user_role").and_then(Value::as_str).unwrap_or("user");
                        (team.to_string(), role.to_string())
                    }
                    _ => return Err(bad("teams must be a list of team ids or objects")),
                };
                // Unknown teams are refused before anything is written.
                team_or_404(m, &team).await?;
                memberships.push((team, role));
            }
        }
        Some(_) => return Err(bad("teams must be a list of team ids or objects")),
    }
    let mut data = b.clone();
    data.remove("teams");
    for f in [
        "spend",
        "auto_create_key",
        "key_alias",
        "duration",
        "send_invite_email",
        // LiteLLM's UI login; Sluice has no UI and never stores a password.
        "password",
    ] {
        data.remove(f);
    }
    data.insert("user_role".into(), json!(role));
    data.entry("models").or_insert(json!([]));
    data.entry("teams").or_insert(json!([]));
    data.entry("metadata").or_insert(json!({}));
    let mut o = new_object(id.clone(), data);
    o.alias = string_of(&b, "user_email");
    apply_windows(&mut o, &b);
    m.store.insert(Kind::User, &o).await.map_err(|e| match e {
        StoreError::Conflict(_) => bad(format!("User with id={id} or this email already exists")),
        e => db_error(e),
    })?;
    for (team, role) in memberships {
        let mut add = Map::new();
        add.insert("team_id".into(), json!(team));
        add.insert("member".into(), json!({"role": role, "user_id": id}));
        team_member_add(m, add).await?;
    }
    let o = user_or_404(m, &id).await?;
    let mut out = render(Kind::User, &o);
    if b.get("auto_create_key").and_then(Value::as_bool) != Some(false) {
        let mut kb = Map::new();
        kb.insert("user_id".into(), json!(id));
        for f in ["key_alias", "duration", "models"] {
            if let Some(v) = b.get(f) {
                kb.insert(f.into(), v.clone());
            }
        }
        let (_, key) = key_generate(m, kb, caller).await?;
        if let (Value::Object(v), Value::Object(k)) = (&mut out, key) {
            for f in ["key", "token", "expires", "key_name", "key_alias"] {
                if let Some(x) = k.get(f) {
                    v.insert(f.into(), x.clone());
                }
            }
        }
    }
    Ok((StatusCode::OK, out))
}

async fn user_info(m: &Arc<Management>, c: &Call<'_>) -> Answer {
    let id = match (query_param(c.query, "user_id"), caller_key(c.caller)) {
        (Some(u), _) => u,
        (None, Some(k)) => k.user_id.clone().ok_or_else(|| bad("pass ?user_id="))?,
        (None, None) => return Err(bad("pass ?user_id=")),
    };
    if !c.caller.is_admin()
        && !reads_everything(c.caller)
        && caller_key(c.caller).is_none_or(|k| k.user_id.as_deref() != Some(&id))
    {
        return Err(forbidden(format!(
            "User={:?} not allowed to access this user's info. Requested user_id={id}",
            caller_key(c.caller).and_then(|k| k.user_id.clone())
        )));
    }
    let o = user_or_404(m, &id).await?;
    let keys = keys_of(m, None, Some(&id)).await?;
    let mut teams = Vec::new();
    for t in list_of(&o.data, "teams") {
        if let Some(team) = m.store.get(Kind::Team, &t).await.map_err(db_error)? {
            teams.push(render(Kind::Team, &team));
        }
    }
    Ok((
        StatusCode::OK,
        json!({"user_id": id, "user_info": render(Kind::User, &o), "keys": keys, "teams": teams}),
    ))
}

async fn user_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    let id = match (string_of(&b, "user_id"), string_of(&b, "user_email")) {
        (Some(id), _) => id,
        (None, Some(email)) => m
            .store
            .get_by_alias(Kind::User, &email)
            .await
            .map_err(db_error)?
            .map(|u| u.id)
            .ok_or_else(|| not_found(format!("User not found, passed user_email={email}")))?,
        _ => return Err(bad("user_id or user_email is required")),
    };
    if let Some(role) = str_field(&b, "user_role")
        && !USER_ROLES.contains(&role)
    {
        return Err(bad(format!("user_role must be one of {USER_ROLES:?}")));
    }
    let mut o = user_or_404(m, &id).await?;
    write_update(
        m,
        Kind::User,
        &mut o,
        &b,
        &["user_id", "password"],
        Some("user_email"),
    )
    .await?;
    Ok((StatusCode::OK, render(Kind::User, &o)))
}

async fn user_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    let ids = list_of(&b, "user_ids");
    if ids.is_empty() {
        return Err(bad("user_ids is required"));
    }
    for id in &ids {
        delete_keys_of(m, None, Some(id)).await?;
        // Out of its teams too, as LiteLLM: a user created again under this id must not come
        // back as a member (or a team admin).
        if let Some(user) = m.store.get(Kind::User, id).await.map_err(db_error)? {
            for team in list_of(&user.data, "teams") {
                drop_member(m, &team, id).await?;
            }
        }
    }
    let deleted = m.store.delete(Kind::User, &ids).await.map_err(db_error)?;
    if deleted.is_empty() {
        return Err(not_found(format!("Users not found: {ids:?}")));
    }
    Ok((StatusCode::OK, json!({"deleted_users": deleted})))
}

/// The user id given, or else the id of the stored user with the email given (if any).
async fn user_id_or_by_email(
    m: &Management,
    user_id: Option<String>,
    email: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match (user_id, email) {
        (None, Some(e)) => Ok(m
            .store
            .get_by_alias(Kind::User, e)
            .await
            .map_err(db_error)?
            .map(|u| u.id)),
        (id, _) => Ok(id),
    }
}

/// Removes a user from a team's `members_with_roles`, if it is there.
async fn drop_member(m: &Management, team_id: &str, user_id: &str) -> Result<(), ApiError> {
    let Some(mut team) = m.store.get(Kind::Team, team_id).await.map_err(db_error)? else {
        return Ok(());
    };
    let members = members_of(&team);
    let kept: Vec<Value> = members
        .iter()
        .filter(|x| x.get("user_id").and_then(Value::as_str) != Some(user_id))
        .cloned()
        .collect();
    if kept.len() == members.len() {
        return Ok(());
    }
    save_members(m, &mut team, kept).await
}

/// Stores a team's new `members_with_roles`.
async fn save_members(
    m: &Management,
    team: &mut Object,
    members: Vec<Value>,
) -> Result<(), ApiError> {
    team.data
        .insert("members_with_roles".into(), Value::Array(members));
    team.updated_at = now_ms();
    m.store
        .update(Kind::Team, team, false)
        .await
        .map_err(db_error)
}

/// Copies a stored budget's fields (those the body does not set) into a key or customer:
/// LiteLLM links them to a budget by `budget_id`.
async fn with_budget(
    m: &Management,
    mut b: Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    if let Some(budget_id) = string_of(&b, "budget_id") {
        let budget = m
            .store
            .get(Kind::Budget, &budget_id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| bad(format!("Budget not found, passed budget_id={budget_id}")))?;
        for f in [
            "max_budget",
            "soft_budget",
            "budget_duration",
            "tpm_limit",
            "rpm_limit",
            "max_parallel_requests",
        ] {
            if let Some(v) = budget.data.get(f)
                && !b.contains_key(f)
            {
                b.insert(f.into(), v.clone());
            }
        }
    }
    Ok(b)
}

async fn customer_new(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    refuse(&b, CUSTOMER_UNENFORCED)?;
    let id = string_of(&b, "user_id").ok_or_else(|| bad("user_id is required"))?;
    let b = with_budget(m, b).await?;
    let mut data = b.clone();
    data.remove("spend");
    data.entry("blocked").or_insert(json!(false));
    let mut o = new_object(id.clone(), data);
    o.alias = string_of(&b, "alias");
    apply_windows(&mut o, &b);
    m.store
        .insert(Kind::EndUser, &o)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => bad(format!("Customer already exists, passed user_id={id}")),
            e => db_error(e),
        })?;
    Ok((StatusCode::OK, render(Kind::EndUser, &o)))
}

async fn customer_info(m: &Arc<Management>, query: Option<&str>) -> Answer {
    let id = query_param(query, "end_user_id").ok_or_else(|| bad("pass ?end_user_id="))?;
    let o = m
        .store
        .get(Kind::EndUser, &id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| bad(format!("End User Id={id} does not exist in db")))?;
    Ok((StatusCode::OK, render(Kind::EndUser, &o)))
}

async fn customer_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    refuse(&b, CUSTOMER_UNENFORCED)?;
    let id = string_of(&b, "user_id").ok_or_else(|| bad("user_id is required"))?;
    let b = with_budget(m, b).await?;
    let mut o = m
        .store
        .get(Kind::EndUser, &id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| bad(format!("End User Id={id} does not exist in db")))?;
    write_update(m, Kind::EndUser, &mut o, &b, &["user_id"], Some("alias")).await?;
    Ok((StatusCode::OK, render(Kind::EndUser, &o)))
}

async fn customer_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    let ids = list_of(&b, "user_ids");
    if ids.is_empty() {
        return Err(bad("user_ids is required"));
    }
    let deleted = m
        .store
        .delete(Kind::EndUser, &ids)
        .await
        .map_err(db_error)?;
    Ok((StatusCode::OK, json!({"deleted_customers": deleted})))
}

async fn customer_block(m: &Arc<Management>, b: Map<String, Value>, blocked: bool) -> Answer {
    let ids = list_of(&b, "user_ids");
    if ids.is_empty() {
        return Err(bad("user_ids is required"));
    }
    let mut done = Vec::new();
    for id in ids {
        let mut body = Map::new();
        body.insert("user_id".into(), json!(id));
        if let Ok((_, v)) = object_block(m, Kind::EndUser, body, "user_id", blocked).await {
            done.push(v);
        }
    }
    Ok((StatusCode::OK, json!({"blocked_users": done})))
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

async fn budget_new(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    let id = string_of(&b, "budget_id").unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut o = new_object(id, b.clone());
    apply_windows(&mut o, &b);
    if let Some(at) = str_field(&b, "budget_reset_at").and_then(clock::parse_iso) {
        o.budget_reset_at = Some(at);
    }
    m.store.insert(Kind::Budget, &o).await.map_err(db_error)?;
    Ok((StatusCode::OK, render(Kind::Budget, &o)))
}

/// `/budget/update`: the budget's own row. Keys and customers took its fields when they were
/// linked (`budget_id`), so they keep theirs, as LiteLLM's copies do.
async fn budget_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    validate(&b)?;
    let id = string_of(&b, "budget_id").ok_or_else(|| bad("budget_id is required"))?;
    let mut o = m
        .store
        .get(Kind::Budget, &id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(format!("Budget not found, passed budget_id={id}")))?;
    write_update(m, Kind::Budget, &mut o, &b, &["budget_id"], None).await?;
    Ok((StatusCode::OK, render(Kind::Budget, &o)))
}

/// `/budget/delete {"id"}`: the deleted budget's row.
async fn budget_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
    let id = string_of(&b, "id")
        .or_else(|| string_of(&b, "budget_id"))
        .ok_or_else(|| bad("id is required"))?;
    let o = m
        .store
        .get(Kind::Budget, &id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(format!("Budget not found, passed id={id}")))?;
    m.store
        .delete(Kind::Budget, std::slice::from_ref(&id))
        .await
        .map_err(db_error)?;
    Ok((StatusCode::OK, render(Kind::Budget, &o)))
}

/// `/global/spend/reset` (the master key only, as LiteLLM's `master_key_only_routes`): every
/// key's and team's spend to 0, in the database and the ledger.
async fn global_spend_reset(m: &Arc<Management>, caller: &Caller) -> Answer {
    if !matches!(caller, Caller::MasterKey | Caller::Open) {
        return Err(ApiError::unauthorized(
            "Only the master key can call /global/spend/reset",
        ));
    }
    // What is queued is written first, so the reset is not undone by a late batch.
    m.flush_spend(m.settings.connect_timeout).await;
    for kind in [Kind::Key, Kind::Team] {
        for mut o in all_of(m, kind).await? {
            o.spend = 0.0;
            m.store.update(kind, &o, true).await.map_err(db_error)?;
            m.spend_was_set(kind, &o.id, 0.0, o.budget_reset_at).await;
        }
    }
    Ok((
        StatusCode::OK,
        json!({"message": "Spend for all API Keys and Teams reset successfully", "status": "success"}),
    ))
}

/// `/user/list?page=&page_size=&user_ids=&role=`: LiteLLM's paged shape.
async fn user_list(m: &Arc<Management>, query: Option<&str>) -> Answer {
    let number = |name: &str, default: i64, max: i64| -> Result<i64, ApiError> {
        match query_param(query, name) {
            None => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| bad(format!("{name} must be a number from 1 to {max}"))),
        }
    };
    let page = number("page", 1, i64::MAX / 1_000)?;
    let page_size = number("page_size", 25, 100)?;
    let ids: Option<Vec<String>> = query_param(query, "user_ids")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let role = query_param(query, "role");
    let rows = all_of(m, Kind::User).await?;
    let matching: Vec<&Object> = rows
        .iter()
        .filter(|o| ids.as_ref().is_none_or(|ids| ids.contains(&o.id)))
        .filter(|o| {
            role.as_deref()
                .is_none_or(|r| str_field(&o.data, "user_role") == Some(r))
        })
        .collect();
    let total = matching.len() as i64;
    let users: Vec<Value> = matching
        .into_iter()
        .skip(((page - 1) * page_size) as usize)
        .take(page_size as usize)
        .map(|o| render(Kind::User, o))
        .collect();
    Ok((
        StatusCode::OK,
        json!({
            "users": users,
            "total": total,
            "page": page,
            "page_size": page_size,
            "total_pages": (total + page_size - 1) / page_size,
        }),
    ))
}

async fn budget_info(m: &Arc<Management>, c: &Call<'_>) -> Answer {
    let ids = match query_param(c.query, "budget_id") {
        Some(id) => vec![id],
        None => list_of(&parse_body(c.body)?, "budgets"),
    };
    if ids.is_empty() {
        return Err(bad("budgets (a list of budget ids) is required"));
    }
    let mut out = Vec::new();
    for id in ids {
        if let Some(o) = m.store.get(Kind::Budget, &id).await.map_err(db_error)? {
            out.push(render(Kind::Budget, &o));
        }
    }
    Ok((StatusCode::OK, Value::Array(out)))
}

/// `/spend/logs` with `start_date` and `end_date`: as LiteLLM, one entry per day from the first
/// day with spend to `end_date`, `{"startTime": "YYYY-MM-DD", "spend", "<api key hash>": spend,
/// "users": {user: spend}, "models": {model: spend}}` (days without spend after the first have
/// `spend` 0).
async fn spend_by_day(m: &Arc<Management>, q: &SpendQuery, end: i64) -> Answer {
    let rows = m.store.spend_by_day(q).await.map_err(db_error)?;
    let empty_day = || {
        let mut o = Map::new();
        o.insert("spend".into(), json!(0.0));
        o.insert("users".into(), json!({}));
        o.insert("models".into(), json!({}));
        o
    };
    let add = |o: &mut Map<String, Value>, k: &str, v: f64| {
        let now = o.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        o.insert(k.to_string(), json!(now + v));
    };
    let mut days: std::collections::BTreeMap<i64, Map<String, Value>> = Default::default();
    for (day, api_key, user, model, spend) in rows {
        let d = days.entry(day).or_insert_with(empty_day);
        add(d, "spend", spend);
        add(d, &api_key, spend);
        if let Some(Value::Object(users)) = d.get_mut("users") {
            add(users, user.as_deref().unwrap_or("None"), spend);
        }
        if let Some(Value::Object(models)) = d.get_mut("models") {
            add(models, &model, spend);
        }
    }
    // Empty days from the first with spend to end_date (the range's end is the day after it),
    // at most ten years of them.
    if let Some(&first) = days.keys().next() {
        let last_day = (end - 1).div_euclid(86_400_000).min(first + 3660);
        for day in first..=last_day {
            days.entry(day).or_insert_with(empty_day);
        }
    }
    let out: Vec<Value> = days
        .into_iter()
        .map(|(day, mut o)| {
            o.insert(
                "startTime".into(),
                json!(iso(day * 86_400_000)[..10].to_string()),
            );
            Value::Object(o)
        })
        .collect();
    Ok((StatusCode::OK, Value::Array(out)))
}

fn date_ms(query: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
    match query_param(query, name) {
        None => Ok(None),
        Some(d) => {
            let text = if d.len() == 10 {
                format!("{d}T00:00:00Z")
            } else {
                d.clone()
            };
            clock::parse_iso(&text).map(Some).ok_or_else(|| {
                bad(format!(
                    "{name} must be a date (YYYY-MM-DD) or ISO timestamp"
                ))
            })
        }
    }
}

async fn spend_logs(m: &Arc<Management>, query: Option<&str>, owner: Owner) -> Answer {
    let end = date_ms(query, "end_date")?.map(|e| e + 86_400_000);
    let (user_id, team_id) = match owner {
        Owner::Any => (query_param(query, "user_id"), query_param(query, "team_id")),
        Owner::User(u) => (Some(u), query_param(query, "team_id")),
        Owner::Team(t) => (query_param(query, "user_id"), Some(t)),
    };
    let q = SpendQuery {
        request_id: query_param(query, "request_id"),
        api_key: query_param(query, "api_key").map(|k| token_of(&k)),
        user_id,
        team_id,
        start_ms: date_ms(query, "start_date")?,
        end_ms: end,
        limit: 10_000,
    };
    if let (Some(_), Some(end), None) = (q.start_ms, q.end_ms, &q.request_id) {
        return spend_by_day(m, &q, end).await;
    }
    let rows = m.store.spend_logs(&q).await.map_err(db_error)?;
    let out: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "request_id": r.request_id,
                "call_type": r.call_type,
                "api_key": r.api_key,
                "spend": r.spend,
                "total_tokens": r.total_tokens,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "startTime": iso(r.start_time),
                "endTime": iso(r.end_time),
                "completionStartTime": r.completion_start_time.map(iso),
                "model": r.model,
                "model_id": r.model_id,
                "model_group": r.model_group,
                "custom_llm_provider": r.custom_llm_provider,
                "api_base": r.api_base,
                "user": r.user_id,
                "team_id": r.team_id,
                "end_user": r.end_user,
                "metadata": serde_json::from_str::<Value>(&r.metadata).unwrap_or(Value::Null),
                "cache_hit": r.cache_hit,
                "request_tags": serde_json::from_str::<Value>(&r.request_tags).unwrap_or(json!([])),
                "requester_ip_address": r.requester_ip_address,
                "status": r.status,
            })
        })
        .collect();
    Ok((StatusCode::OK, Value::Array(out)))
}

/// `GET /global/spend`: as LiteLLM, the spend-log total of the last 30 days (its
/// `MonthlyGlobalSpend` view) and the proxy budget (`litellm_settings.max_budget`).
async fn global_spend(m: &Arc<Management>) -> Answer {
    let since = now_ms() - 30 * 86_400_000;
    let spend = m.store.total_spend(since).await.map_err(db_error)?;
    let max_budget = m.settings.proxy_budget.as_ref().map(|b| b.max_budget);
    Ok((
        StatusCode::OK,
        json!({"spend": spend, "max_budget": max_budget}),
    ))
}

/// One group of a day in the spend report: name, total, per-model rows.
type ReportGroup = (String, f64, Vec<Value>);

/// `GET /global/spend/report?start_date=&end_date=&group_by=team|customer|api_key`: per day,
/// per group, spend and tokens by model (LiteLLM's enterprise report shape).
async fn global_spend_report(m: &Arc<Management>, query: Option<&str>) -> Answer {
    let (Some(start), Some(end)) = (date_ms(query, "start_date")?, date_ms(query, "end_date")?)
    else {
        return Err(bad("start_date and end_date are required (YYYY-MM-DD)"));
    };
    let group_by = query_param(query, "group_by").unwrap_or_else(|| "team".into());
    let (list_field, name_field) = match group_by.as_str() {
        "team" => ("teams", "team_name"),
        "customer" => ("customers", "customer"),
        "api_key" => ("api_keys", "api_key"),
        _ => return Err(bad("group_by must be team, customer or api_key")),
    };
    let rows = m
        .store
        .spend_report(start, end + 86_400_000, &group_by)
        .await
        .map_err(db_error)?;
    let mut team_names: std::collections::HashMap<String, String> = Default::default();
    let mut days: Vec<(i64, Vec<ReportGroup>)> = Vec::new();
    for (day, group, model, spend, tokens) in rows {
        let name = if group_by == "team" && !group.is_empty() {
            if !team_names.contains_key(&group) {
                let alias = m
                    .store
                    .get(Kind::Team, &group)
                    .await
                    .map_err(db_error)?
                    .and_then(|t| t.alias);
                team_names.insert(group.clone(), alias.unwrap_or_else(|| group.clone()));
            }
            team_names[&group].clone()
        } else {
            group
        };
        if days.last().is_none_or(|(d, _)| *d != day) {
            days.push((day, Vec::new()));
        }
        let groups = &mut days.last_mut().expect("pushed above").1;
        if groups.last().is_none_or(|(g, _, _)| *g != name) {
            groups.push((name, 0.0, Vec::new()));
        }
        let g = groups.last_mut().expect("pushed above");
        g.1 += spend;
        g.2.push(json!({"model": model, "spend": spend, "total_tokens": tokens}));
    }
    let out: Vec<Value> = days
        .into_iter()
        .map(|(day, groups)| {
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(name, total, metadata)| {
                    json!({name_field: name, "total_spend": total, "metadata": metadata})
                })
                .collect();
            json!({"group_by_day": iso(day * 86_400_000)[..10].to_string(), list_field: groups})
        })
        .collect();
    Ok((StatusCode::OK, Value::Array(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_wrong_types_and_negative_budgets() {
        let ok = json!({"max_budget": 1.5, "rpm_limit": 3, "budget_duration": "30d", "models": ["a"], "metadata": {}, "model_max_budget": {"gpt-4o": {"budget_limit": 0.1, "time_period": "1d"}}});
        assert!(validate(ok.as_object().unwrap()).is_ok());
        for bad_body in [
            json!({"max_budget": -1}),
            json!({"max_budget": "ten"}),
            json!({"rpm_limit": 1.5}),
            json!({"budget_duration": "fortnight"}),
            json!({"models": "gpt-4o"}),
            json!({"metadata": []}),
            json!({"model_rpm_limit": {"gpt-4o": "x"}}),
            json!({"model_max_budget": {"gpt-4o": 3}}),
            json!({"blocked": "yes"}),
        ] {
            let e = validate(bad_body.as_object().unwrap()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad_body}");
        }
    }

    #[test]
    fn keys_are_hashed_and_abbreviated() {
        let raw = random_key().unwrap();
        assert!(raw.starts_with("sk-") && raw.len() == 25, "{raw}");
        assert_ne!(random_key().unwrap(), raw);
        assert_eq!(token_of(&raw), filters::auth::hash_key_hex(&raw));
        assert_eq!(token_of(&token_of(&raw)), token_of(&raw));
        assert_eq!(abbreviated("sk-abcdefgh"), "sk-...efgh");
    }

    #[test]
    fn children_may_not_exceed_parents() {
        let team = Object {
            id: "t".into(),
            data: json!({"max_budget": 10.0, "rpm_limit": 100})
                .as_object()
                .cloned()
                .unwrap(),
            ..Object::default()
        };
        assert!(
            check_within(
                json!({"max_budget": 5.0}).as_object().unwrap(),
                &team,
                "team"
            )
            .is_ok()
        );
        assert!(
            check_within(
                json!({"max_budget": 11.0}).as_object().unwrap(),
                &team,
                "team"
            )
            .is_err()
        );
        assert!(
            check_within(
                json!({"rpm_limit": 101}).as_object().unwrap(),
                &team,
                "team"
            )
            .is_err()
        );
    }
}
