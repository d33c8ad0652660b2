//! Stored objects' lifecycle shared by start-up and the admin API: a new row, its budget and
//! expiry windows, and the proxy-wide budget user LiteLLM creates at start-up.

use serde_json::{Map, Value, json};

use super::Management;
use super::identity::{f64_field, str_field};
use super::store::{Kind, Object, StoreError};
use crate::clock::{iso, now_ms, parse_span};

/// A new row with `data`, created and updated now; owners, alias and windows are the caller's.
pub(crate) fn new_object(id: String, data: Map<String, Value>) -> Object {
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
pub(crate) async fn ensure_proxy_budget(
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
pub(crate) fn apply_windows(o: &mut Object, changed: &Map<String, Value>) {
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
