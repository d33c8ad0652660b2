//! `/user/*`: internal users, their teams and keys (LiteLLM's shapes).

use std::sync::Arc;

use filters::{ApiError, Caller};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::authz::{caller_key, reads_everything};
use super::keys::{delete_keys_of, key_generate, keys_of};
use super::teams::{drop_member, team_member_add, team_or_404};
use super::validation::validate;
use super::{
    Answer, Call, all_of, bad, db_error, forbidden, list_of, not_found, render, string_of,
    write_update,
};
use crate::http_query::query_param;
use crate::management::Management;
use crate::management::identity::str_field;
use crate::management::objects::{apply_windows, new_object};
use crate::management::store::{Kind, Object, StoreError};

/// A user by id; 404 when there is none.
pub(super) async fn user_or_404(m: &Management, id: &str) -> Result<Object, ApiError> {
    m.store
        .get(Kind::User, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(format!("User not found, passed user_id={id}")))
}

pub(super) const USER_ROLES: [&str; 5] = [
    "proxy_admin",
    "proxy_admin_viewer",
    "internal_user",
    "internal_user_viewer",
    "team",
];

pub(super) async fn user_new(
    m: &Arc<Management>,
    b: Map<String, Value>,
    caller: &Caller,
) -> Answer {
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

pub(super) async fn user_info(m: &Arc<Management>, c: &Call<'_>) -> Answer {
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

pub(super) async fn user_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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

pub(super) async fn user_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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

/// `/user/list?page=&page_size=&user_ids=&role=`: LiteLLM's paged shape.
pub(super) async fn user_list(m: &Arc<Management>, query: Option<&str>) -> Answer {
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
