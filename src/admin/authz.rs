//! Who may call which admin route: roles, key types, team admins and key owners (LiteLLM's
//! permission model), and the routes non-admin keys may call about themselves.

use std::sync::Arc;

use filters::identity::{KeyIdentity, Limits, ScopeKind};
use filters::{ApiError, Caller};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::keys::{
    find_key, key_block, key_delete, key_generate, key_list, key_regenerate, key_update,
};
use super::spend::spend_logs;
use super::teams::{
    team_list, team_member_add, team_member_delete, team_member_update, team_update,
};
use super::{Answer, Call, admin_only, bad, db_error, forbidden, list_of, parse_body, string_of};
use crate::clock::{now_ms, parse_span};
use crate::http_query::query_param;
use crate::management::Management;
use crate::management::identity::{f64_field, str_field};
use crate::management::store::{Kind, Object};

/// Key fields the owner of a key (not a team admin) may change on it: naming and bookkeeping,
/// never its limits, models, owners or state.
pub(super) const OWNER_KEY_FIELDS: &[&str] = &["key", "key_alias", "new_key", "metadata", "tags"];
/// Team fields a team admin may change (members go through member_add / member_delete).
const TEAM_ADMIN_TEAM_FIELDS: &[&str] = &["team_id", "team_alias", "metadata", "tags"];

/// Whose objects a list or spend query may show.
pub(super) enum Owner {
    Any,
    User(String),
    Team(String),
}

/// A `proxy_admin_viewer` key: reads every object, changes none.
pub(super) fn reads_everything(caller: &Caller) -> bool {
    caller_key(caller).is_some_and(|k| k.user_role.as_deref() == Some("proxy_admin_viewer"))
}

/// `internal_user_viewer` and `proxy_admin_viewer` keys change nothing.
pub(super) fn read_only(k: &KeyIdentity) -> bool {
    matches!(
        k.user_role.as_deref(),
        Some("proxy_admin_viewer" | "internal_user_viewer")
    )
}

/// The caller's user's role in the team (`admin` or `user`), when it is a member.
pub(super) fn member_role<'a>(team: &'a Object, k: &KeyIdentity) -> Option<&'a str> {
    let user = k.user_id.as_deref()?;
    team.data
        .get("members_with_roles")?
        .as_array()?
        .iter()
        .find(|x| x.get("user_id").and_then(Value::as_str) == Some(user))
        .map(|x| x.get("role").and_then(Value::as_str).unwrap_or("user"))
}

/// Whether the caller's user is an `admin` member of the team.
pub(super) async fn is_team_admin(
    m: &Management,
    k: &KeyIdentity,
    team_id: &str,
) -> Result<bool, ApiError> {
    let team = m.store.get(Kind::Team, team_id).await.map_err(db_error)?;
    Ok(team.is_some_and(|t| member_role(&t, k) == Some("admin")))
}

/// Why a non-admin may touch a stored key.
#[derive(PartialEq)]
pub(super) enum KeyRight {
    /// An admin of the key's team: anything within the team's limits.
    TeamAdmin,
    /// A personal key of the caller's user: naming and deletion only.
    Owner,
}

/// Roles whose keys only a proxy admin may manage: a team admin taking over such a key (by
/// regenerating it, say) would hold an admin's key.
pub(super) const PRIVILEGED_ROLES: &[&str] = &["proxy_admin", "proxy_admin_viewer", "org_admin"];

pub(super) async fn key_right(
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
pub(super) enum Fields<'a> {
    Only(&'a [&'a str]),
    AllBut(&'a [&'a str]),
}

/// Refuses the first body field `fields` does not let `who` set.
pub(super) fn check_fields(
    b: &Map<String, Value>,
    fields: Fields<'_>,
    who: &str,
) -> Result<(), ApiError> {
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
pub(super) async fn member_route(
    m: &Arc<Management>,
    c: &Call<'_>,
    path: &str,
    post: bool,
) -> Answer {
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
                "/key/update" => key_update(m, b, false).await,
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
pub(super) fn within_caller_key(
    b: &mut Map<String, Value>,
    k: &KeyIdentity,
) -> Result<(), ApiError> {
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

pub(super) fn caller_key(caller: &Caller) -> Option<&Arc<KeyIdentity>> {
    caller.key()
}
