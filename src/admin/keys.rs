//! `/key/*`: generate, update, info, list, delete, regenerate, block (LiteLLM's shapes).

use std::sync::Arc;

use filters::{ApiError, Caller};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::authz::{Owner, caller_key, is_team_admin, reads_everything};
use super::budgets::with_budget;
use super::validation::{check_within, validate};
use super::{
    Answer, Call, bad, db_error, forbidden, list_of, not_found, paging, render, string_of,
    write_update,
};
use crate::clock::now_ms;
use crate::http_query::query_param;
use crate::management::Management;
use crate::management::identity::{f64_field, str_field};
use crate::management::objects::{apply_windows, new_object};
use crate::management::store::{Kind, ListQuery, Object, StoreError};

/// The hash of a key given raw (`sk-...`) or already hashed.
pub(super) fn token_of(key: &str) -> String {
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        key.to_ascii_lowercase()
    } else {
        filters::auth::hash_key_hex(key)
    }
}

pub(super) fn abbreviated(raw: &str) -> String {
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
pub(super) fn random_key() -> Result<String, ApiError> {
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

/// A team a request names by id; 400 when there is none (key generate and update).
pub(super) async fn load_team(m: &Management, id: &str) -> Result<Object, ApiError> {
    m.store
        .get(Kind::Team, id)
        .await
        .map_err(db_error)?
        .ok_or_else(|| bad(format!("Team not found, passed team_id={id}")))
}

pub(super) async fn key_generate(
    m: &Arc<Management>,
    b: Map<String, Value>,
    caller: &Caller,
) -> Answer {
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
    // A proxy admin may give a key limits above its team's or user's (LiteLLM); theirs still
    // cap it on every request. Others may not.
    let admin = caller_is_admin(caller);
    if let Some(t) = &team
        && !admin
    {
        check_within(&b, t, "team")?;
    }
    let user_id = string_of(&b, "user_id");
    if let Some(u) = &user_id {
        match m.store.get(Kind::User, u).await.map_err(db_error)? {
            Some(user) if !admin => check_within(&b, &user, "user")?,
            Some(_) => {}
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

/// The master key, an open gateway, or a key of a proxy admin.
fn caller_is_admin(caller: &Caller) -> bool {
    match caller {
        Caller::MasterKey | Caller::Open => true,
        Caller::Key(k) => k.is_admin,
        Caller::Unknown => false,
    }
}

/// Finds the key a body or query names by `key` (raw or hash) or `key_alias`.
pub(super) async fn find_key(
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

/// `admin`: the caller is a proxy admin, who may set limits above the key's team's or user's.
pub(super) async fn key_update(m: &Arc<Management>, b: Map<String, Value>, admin: bool) -> Answer {
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
        if !admin {
            check_within(&merged, &team, "team")?;
        }
    }
    if b.contains_key("user_id") {
        o.user_id = string_of(&b, "user_id");
    }
    if let Some(u) = &o.user_id
        && !admin
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

pub(super) async fn key_info(m: &Arc<Management>, c: &Call<'_>) -> Answer {
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

pub(super) async fn key_list(m: &Arc<Management>, query: Option<&str>, owner: Owner) -> Answer {
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

pub(super) async fn key_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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

pub(super) async fn key_regenerate(
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

pub(super) async fn key_block(m: &Arc<Management>, b: Map<String, Value>, blocked: bool) -> Answer {
    let mut o = find_key(m, str_field(&b, "key"), str_field(&b, "key_alias")).await?;
    o.data.insert("blocked".into(), json!(blocked));
    o.updated_at = now_ms();
    m.store
        .update(Kind::Key, &o, false)
        .await
        .map_err(db_error)?;
    Ok((StatusCode::OK, render(Kind::Key, &o)))
}

pub(super) async fn keys_of(
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

/// Deletes every key of a team or a user (their keys go with them, as in LiteLLM).
pub(super) async fn delete_keys_of(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_and_abbreviated() {
        let raw = random_key().unwrap();
        assert!(raw.starts_with("sk-") && raw.len() == 25, "{raw}");
        assert_ne!(random_key().unwrap(), raw);
        assert_eq!(token_of(&raw), filters::auth::hash_key_hex(&raw));
        assert_eq!(token_of(&token_of(&raw)), token_of(&raw));
        assert_eq!(abbreviated("sk-abcdefgh"), "sk-...efgh");
    }
}
