//! `/team/*`: teams, their members and roles (LiteLLM's shapes).

use std::sync::Arc;

use filters::ApiError;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::authz::{caller_key, member_role, reads_everything};
use super::keys::{delete_keys_of, keys_of};
use super::validation::{TEAM_UNENFORCED, refuse, validate};
use super::{
    Answer, Call, all_of, bad, db_error, forbidden, list_of, not_found, render, string_of,
    write_update,
};
use crate::clock::now_ms;
use crate::http_query::query_param;
use crate::management::Management;
use crate::management::identity::str_field;
use crate::management::objects::{apply_windows, new_object};
use crate::management::store::{Kind, Object, StoreError};

/// A team by id; 404 when there is none.
pub(super) async fn team_or_404(m: &Management, id: &str) -> Result<Object, ApiError> {
    m.store
        .get(Kind::Team, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(format!("Team not found, passed team_id={id}")))
}

pub(super) fn members_of(o: &Object) -> Vec<Value> {
    o.data
        .get("members_with_roles")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(super) async fn team_new(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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

pub(super) async fn team_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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

pub(super) async fn team_info(m: &Arc<Management>, c: &Call<'_>) -> Answer {
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
pub(super) async fn team_list(
    m: &Arc<Management>,
    user: Option<String>,
    as_member: bool,
) -> Answer {
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

pub(super) async fn team_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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

pub(super) async fn team_member_add(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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
pub(super) async fn team_member_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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

pub(super) async fn team_member_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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

/// The user id given, or else the id of the stored user with the email given (if any).
pub(super) async fn user_id_or_by_email(
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
pub(super) async fn drop_member(
    m: &Management,
    team_id: &str,
    user_id: &str,
) -> Result<(), ApiError> {
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
pub(super) async fn save_members(
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
