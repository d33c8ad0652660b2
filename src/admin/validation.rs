//! Type and range checks of admin request bodies (LiteLLM's pydantic models), the
//! restrictions Sluice refuses rather than ignores, and the rule that a child's limits stay
//! within its parent's.

use filters::ApiError;
use filters::identity::KeyType;
use serde_json::{Map, Value};

use super::bad;
use crate::clock::parse_span;
use crate::management::identity::{f64_field, str_field};
use crate::management::store::Object;

/// Type checks of the fields Sluice acts on (LiteLLM's pydantic models), before anything is
/// stored.
pub(super) fn validate(b: &Map<String, Value>) -> Result<(), ApiError> {
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
pub(super) fn refuse(b: &Map<String, Value>, fields: &[&str]) -> Result<(), ApiError> {
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
pub(super) const TEAM_UNENFORCED: &[&str] =
    &["model_max_budget", "model_rpm_limit", "model_tpm_limit"];
/// Regional routing and default models of end users are not implemented.
pub(super) const CUSTOMER_UNENFORCED: &[&str] = &["allowed_model_region", "default_model"];

/// A key's (or user's) budget and limits may not exceed its parent's.
pub(super) fn check_within(
    child: &Map<String, Value>,
    parent: &Object,
    what: &str,
) -> Result<(), ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

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
