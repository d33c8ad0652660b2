//! Turns stored key, team and user objects into the [`KeyIdentity`] the request path checks
//! (which models, which budgets and limits, in which order), and answers whether a key may call
//! a model (names, wildcards, access groups).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use filters::identity::{KeyIdentity, KeyType, Limits, Scope, ScopeKind};
use serde_json::{Map, Value};

use super::store::Object;

/// Reads a number field (`null`/absent: `None`).
pub fn f64_field(data: &Map<String, Value>, name: &str) -> Option<f64> {
    data.get(name).and_then(Value::as_f64)
}

pub fn u64_field(data: &Map<String, Value>, name: &str) -> Option<u64> {
    data.get(name)
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f.max(0.0) as u64)))
}

pub fn str_field<'a>(data: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    data.get(name).and_then(Value::as_str)
}

pub fn bool_field(data: &Map<String, Value>, name: &str) -> bool {
    data.get(name).and_then(Value::as_bool).unwrap_or(false)
}

pub fn string_list(data: &Map<String, Value>, name: &str) -> Vec<String> {
    data.get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The budget and limits stored on an object.
pub fn limits_of(o: &Object) -> Limits {
    Limits {
        max_budget: f64_field(&o.data, "max_budget"),
        budget_duration: str_field(&o.data, "budget_duration").map(str::to_string),
        budget_reset_at: o.budget_reset_at,
        spend: o.spend,
        rpm_limit: u64_field(&o.data, "rpm_limit"),
        tpm_limit: u64_field(&o.data, "tpm_limit"),
        max_parallel_requests: u64_field(&o.data, "max_parallel_requests"),
    }
}

/// Why a stored key cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum Unusable {
    KeyBlocked,
    TeamBlocked(String),
}

/// Builds the identity of `key` under its team and user.
pub fn build(
    key: &Object,
    team: Option<&Object>,
    user: Option<&Object>,
) -> Result<KeyIdentity, Unusable> {
    if bool_field(&key.data, "blocked") {
        return Err(Unusable::KeyBlocked);
    }
    if let Some(t) = team
        && bool_field(&t.data, "blocked")
    {
        return Err(Unusable::TeamBlocked(t.id.clone()));
    }
    let key_limits = limits_of(key);
    let mut scopes = vec![Scope {
        kind: ScopeKind::Key,
        id: key.id.as_str().into(),
        limits: Arc::new(key_limits.clone()),
    }];
    if let Some(t) = team {
        let limits = limits_of(t);
        if !limits.is_empty() {
            scopes.push(Scope {
                kind: ScopeKind::Team,
                id: t.id.as_str().into(),
                limits: Arc::new(limits),
            });
        }
    }
    if let Some(u) = user {
        let mut limits = limits_of(u);
        // A team key is capped by the team, not by its user's personal budget (LiteLLM's
        // common_checks); the user's rate limits still apply.
        if team.is_some() {
            limits.max_budget = None;
        }
        if !limits.is_empty() {
            scopes.push(Scope {
                kind: ScopeKind::User,
                id: u.id.as_str().into(),
                limits: Arc::new(limits),
            });
        }
    }
    let mut model_limits: HashMap<String, Limits> = HashMap::new();
    if let Some(Value::Object(budgets)) = key.data.get("model_max_budget") {
        for (model, b) in budgets {
            let entry = model_limits.entry(model.clone()).or_default();
            entry.max_budget = b.get("budget_limit").and_then(Value::as_f64);
            entry.budget_duration = b
                .get("time_period")
                .and_then(Value::as_str)
                .map(str::to_string);
            // Windows counted from the key's creation, the same on every instance; the
            // ledgers roll them forward.
            entry.budget_reset_at = entry
                .budget_duration
                .as_deref()
                .and_then(|d| crate::clock::parse_span(d).ok())
                .map(|span| span.after(key.created_at));
        }
    }
    for (field, rpm) in [("model_rpm_limit", true), ("model_tpm_limit", false)] {
        if let Some(Value::Object(limits)) = key.data.get(field) {
            for (model, n) in limits {
                let entry = model_limits.entry(model.clone()).or_default();
                let n = n.as_u64();
                if rpm {
                    entry.rpm_limit = n;
                } else {
                    entry.tpm_limit = n;
                }
            }
        }
    }
    let model_limits: HashMap<String, Scope> = model_limits
        .into_iter()
        .map(|(model, limits)| {
            let scope = Scope {
                kind: ScopeKind::KeyModel,
                id: format!("{}:{model}", key.id).into(),
                limits: Arc::new(limits),
            };
            (model, scope)
        })
        .collect();
    let aliases = match key.data.get("aliases") {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
        _ => HashMap::new(),
    };
    let is_admin = user.is_some_and(|u| str_field(&u.data, "user_role") == Some("proxy_admin"));
    let limit_headers = [
        (
            "x-litellm-key-max-budget",
            key_limits.max_budget.map(|v| v.to_string()),
        ),
        (
            "x-litellm-key-rpm-limit",
            key_limits.rpm_limit.map(|v| v.to_string()),
        ),
        (
            "x-litellm-key-tpm-limit",
            key_limits.tpm_limit.map(|v| v.to_string()),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        Some((
            http::HeaderName::from_static(name),
            http::HeaderValue::from_str(&value?).ok()?,
        ))
    })
    .collect();
    let mut identity = KeyIdentity {
        token: key.id.as_str().into(),
        key_alias: key.alias.clone(),
        user_id: key.user_id.clone(),
        team_id: key.team_id.clone(),
        team_alias: team.and_then(|t| t.alias.clone()),
        organization_id: str_field(&key.data, "organization_id").map(str::to_string),
        is_admin,
        // Validated when stored; an unknown value (written by something else) limits the key
        // to reading rather than widening it.
        key_type: match str_field(&key.data, "key_type") {
            None => KeyType::Default,
            Some(t) => KeyType::parse(t).unwrap_or(KeyType::ReadOnly),
        },
        user_role: user.and_then(|u| str_field(&u.data, "user_role").map(str::to_string)),
        // A user's email is its alias in the store (as `render` shows it).
        user_email: user.and_then(|u| u.alias.clone()),
        models: string_list(&key.data, "models"),
        team_models: team
            .map(|t| string_list(&t.data, "models"))
            .unwrap_or_default(),
        // Like the user's budget, its model list governs its own keys, not its team keys.
        user_models: match (team, user) {
            (None, Some(u)) => string_list(&u.data, "models"),
            _ => Vec::new(),
        },
        aliases,
        expires_at: str_field(&key.data, "expires").and_then(crate::clock::parse_iso),
        scopes,
        model_limits,
        key_limits,
        log_metadata: String::new(),
        limit_headers,
        tags: owner_tags(&key.data, team.map(|t| &t.data)),
        allow_client_mock_response: [Some(&key.data), team.map(|t| &t.data)]
            .into_iter()
            .flatten()
            .any(|d| {
                d.get("metadata")
                    .and_then(|m| m.get("allow_client_mock_response"))
                    == Some(&Value::Bool(true))
            }),
        cache_controls: key
            .data
            .get("metadata")
            .and_then(|m| m.get("cache"))
            .filter(|c| c.is_object())
            .map(|c| {
                let kept: Map<String, Value> = c
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| {
                        matches!(k.as_str(), "ttl" | "s-maxage" | "no-cache" | "no-store")
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Value::Object(kept)
            }),
        allowed_cache_controls: string_list(&key.data, "allowed_cache_controls"),
    };
    identity.log_metadata = super::spend::metadata_json(&identity, key.data.get("metadata"));
    Ok(identity)
}

/// A key's tags then its team's (each from `tags` and `metadata.tags`), without repeats.
fn owner_tags(key: &Map<String, Value>, team: Option<&Map<String, Value>>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for data in [Some(key), team].into_iter().flatten() {
        let metadata_tags = data.get("metadata").and_then(|m| m.get("tags"));
        for list in [data.get("tags"), metadata_tags] {
            for tag in list.and_then(Value::as_array).into_iter().flatten() {
                if let Some(t) = tag.as_str()
                    && !tags.iter().any(|have| have == t)
                {
                    tags.push(t.to_string());
                }
            }
        }
    }
    tags
}

/// What the model listings (`/v1/models`, `/model/info`, `/model_group/info`) show a caller:
/// `None`, everything (admins, the master key, keys without model lists); otherwise a test of
/// `(name, group)` that passes what the key may call ([`model_denial`]).
pub fn listing_filter<'a>(
    caller: &'a filters::Caller,
    access_groups: &'a HashMap<String, HashSet<String>>,
) -> Option<impl Fn(&str, &str) -> bool + 'a> {
    let k = caller.key().filter(|k| {
        let unlisted = k.models.is_empty() && k.team_models.is_empty() && k.user_models.is_empty();
        !k.is_admin && !unlisted
    })?;
    Some(move |name: &str, group: &str| model_denial(k, name, group, access_groups).is_none())
}

/// The first of a key's model lists (its own, its team's, its user's) that does not let it call
/// `requested` of `group`, as (list, scope, LiteLLM's error type); `None` when all do. The one
/// check for requests (a 401 naming the list) and for the model listings (what to show).
pub fn model_denial<'k>(
    k: &'k KeyIdentity,
    requested: &str,
    group: &str,
    access_groups: &HashMap<String, HashSet<String>>,
) -> Option<(&'k [String], &'static str, &'static str)> {
    [
        (&k.models, "key", "key_model_access_denied"),
        (&k.team_models, "team", "team_model_access_denied"),
        (&k.user_models, "user", "user_model_access_denied"),
    ]
    .into_iter()
    .find(|(allowed, _, _)| !allows(allowed, requested, group, access_groups))
    .map(|(allowed, scope, kind)| (allowed.as_slice(), scope, kind))
}

/// Whether `allowed` (a key's or team's `models`) lets a caller use `model` of `group`.
/// Empty means no restriction; `all-proxy-models` / `*` allow everything; `openai/*`-style
/// patterns match by prefix; access-group names allow their member groups.
pub fn allows(
    allowed: &[String],
    requested: &str,
    group: &str,
    access_groups: &HashMap<String, HashSet<String>>,
) -> bool {
    if allowed.is_empty() {
        return true;
    }
    allowed.iter().any(|a| {
        a == "all-proxy-models"
            || a == "*"
            || a == requested
            || a == group
            || a.strip_suffix('*')
                .is_some_and(|prefix| requested.starts_with(prefix) || group.starts_with(prefix))
            || access_groups.get(a).is_some_and(|g| g.contains(group))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(id: &str, data: Value) -> Object {
        Object {
            id: id.into(),
            data: data.as_object().cloned().unwrap(),
            ..Object::default()
        }
    }

    #[test]
    fn team_keys_are_capped_by_team_not_user_budget() {
        let key = object(
            "k",
            json!({"max_budget": 5.0, "rpm_limit": 10, "models": ["gpt-4o"]}),
        );
        let team = object(
            "t",
            json!({"max_budget": 2.0, "models": ["gpt-4o", "claude"]}),
        );
        let user = object(
            "u",
            json!({"max_budget": 1.0, "tpm_limit": 99, "user_role": "internal_user"}),
        );
        let id = build(&key, Some(&team), Some(&user)).unwrap();
        let kinds: Vec<_> = id.scopes.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [ScopeKind::Key, ScopeKind::Team, ScopeKind::User]);
        assert_eq!(id.scopes[2].limits.max_budget, None);
        assert_eq!(id.scopes[2].limits.tpm_limit, Some(99));
        assert!(!id.is_admin);
        // Without a team the user's budget applies.
        let id = build(&key, None, Some(&user)).unwrap();
        assert_eq!(id.scopes[1].limits.max_budget, Some(1.0));
    }

    #[test]
    fn blocked_keys_and_teams_are_unusable() {
        let key = object("k", json!({"blocked": true}));
        assert_eq!(build(&key, None, None), Err(Unusable::KeyBlocked));
        let key = object("k", json!({}));
        let team = object("t", json!({"blocked": true}));
        assert_eq!(
            build(&key, Some(&team), None),
            Err(Unusable::TeamBlocked("t".into()))
        );
    }

    #[test]
    fn per_model_limits_and_aliases() {
        let key = object(
            "k",
            json!({
                "model_max_budget": {"gpt-4o": {"budget_limit": 0.1, "time_period": "1d"}},
                "model_rpm_limit": {"gpt-4o": 3},
                "model_tpm_limit": {"claude": 1000},
                "aliases": {"cheap": "gpt-4o-mini"}
            }),
        );
        let id = build(&key, None, None).unwrap();
        let g = &id.model_limits["gpt-4o"].limits;
        assert_eq!(
            (g.max_budget, g.budget_duration.as_deref(), g.rpm_limit),
            (Some(0.1), Some("1d"), Some(3))
        );
        assert_eq!(id.model_limits["claude"].limits.tpm_limit, Some(1000));
        assert_eq!(&*id.model_limits["claude"].id, "k:claude");
        assert_eq!(id.alias_for("cheap"), Some("gpt-4o-mini"));
    }

    #[test]
    fn model_access_rules() {
        let mut groups = HashMap::new();
        groups.insert("beta".to_string(), HashSet::from(["gpt-5".to_string()]));
        let allowed = vec![
            "gpt-4o".to_string(),
            "openai/*".to_string(),
            "beta".to_string(),
        ];
        assert!(allows(&allowed, "gpt-4o", "gpt-4o", &groups));
        assert!(allows(&allowed, "openai/o3", "openai/*", &groups));
        assert!(allows(&allowed, "gpt-5", "gpt-5", &groups));
        assert!(!allows(&allowed, "claude", "claude", &groups));
        assert!(allows(&[], "claude", "claude", &groups));
        assert!(allows(&["all-proxy-models".into()], "x", "x", &groups));
    }
}
