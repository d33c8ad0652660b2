//! `/budget/*`: stored budgets that keys and customers link to by `budget_id`.

use std::sync::Arc;

use filters::ApiError;
use http::StatusCode;
use serde_json::{Map, Value};

use super::validation::validate;
use super::{
    Answer, Call, bad, db_error, list_of, not_found, parse_body, render, string_of, write_update,
};
use crate::clock;
use crate::http_query::query_param;
use crate::management::Management;
use crate::management::identity::str_field;
use crate::management::objects::{apply_windows, new_object};
use crate::management::store::Kind;

/// Copies a stored budget's fields (those the body does not set) into a key or customer:
/// LiteLLM links them to a budget by `budget_id`.
pub(super) async fn with_budget(
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

pub(super) async fn budget_new(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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
pub(super) async fn budget_update(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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
pub(super) async fn budget_delete(m: &Arc<Management>, b: Map<String, Value>) -> Answer {
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

pub(super) async fn budget_info(m: &Arc<Management>, c: &Call<'_>) -> Answer {
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
