//! `/spend/logs`, `/global/spend`, `/global/spend/report`, `/global/spend/reset`.

use std::sync::Arc;

use filters::{ApiError, Caller};
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::authz::Owner;
use super::keys::token_of;
use super::{Answer, all_of, bad, db_error};
use crate::clock::{self, iso, now_ms};
use crate::http_query::query_param;
use crate::management::Management;
use crate::management::store::{Kind, SpendQuery};

/// `/global/spend/reset` (the master key only, as LiteLLM's `master_key_only_routes`): every
/// key's and team's spend to 0, in the database and the ledger.
pub(super) async fn global_spend_reset(m: &Arc<Management>, caller: &Caller) -> Answer {
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

/// `/spend/logs` with `start_date` and `end_date`: as LiteLLM, one entry per day from the first
/// day with spend to `end_date`, `{"startTime": "YYYY-MM-DD", "spend", "<api key hash>": spend,
/// "users": {user: spend}, "models": {model: spend}}` (days without spend after the first have
/// `spend` 0).
pub(super) async fn spend_by_day(m: &Arc<Management>, q: &SpendQuery, end: i64) -> Answer {
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

pub(super) fn date_ms(query: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
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

pub(super) async fn spend_logs(m: &Arc<Management>, query: Option<&str>, owner: Owner) -> Answer {
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
pub(super) async fn global_spend(m: &Arc<Management>) -> Answer {
    let since = now_ms() - 30 * 86_400_000;
    let spend = m.store.total_spend(since).await.map_err(db_error)?;
    let max_budget = m.settings.proxy_budget.as_ref().map(|b| b.max_budget);
    Ok((
        StatusCode::OK,
        json!({"spend": spend, "max_budget": max_budget}),
    ))
}

/// One group of a day in the spend report: name, total, per-model rows.
pub(super) type ReportGroup = (String, f64, Vec<Value>);

/// `GET /global/spend/report?start_date=&end_date=&group_by=team|customer|api_key`: per day,
/// per group, spend and tokens by model (LiteLLM's enterprise report shape).
pub(super) async fn global_spend_report(m: &Arc<Management>, query: Option<&str>) -> Answer {
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
