//! LiteLLM's budget gauges (`litellm_remaining_api_key_budget_metric` and the team and user
//! ones, with their max-budget and remaining-hours companions), for the owners of budgets this
//! instance has served. Updated when a request is settled (Pingora's `logging` phase) with one
//! map insert per budgeted owner; rendered into `/metrics` when it is scraped.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use filters::identity::{KeyIdentity, Limits, ScopeKind};
use parking_lot::Mutex;

use super::ledger::AccountKey;
use crate::clock;

struct Seen {
    /// The key that last spent on this owner (its alias and team alias label the gauges).
    key: Option<Arc<KeyIdentity>>,
    limits: Arc<Limits>,
    spend: f64,
}

#[derive(Default)]
pub struct BudgetGauges {
    owners: Mutex<HashMap<AccountKey, Seen, ahash::RandomState>>,
}

/// Gauge families per owner kind: (remaining, max, remaining hours, help noun).
const KEY_GAUGES: [&str; 3] = [
    "litellm_remaining_api_key_budget_metric",
    "litellm_api_key_max_budget_metric",
    "litellm_api_key_budget_remaining_hours_metric",
];
const TEAM_GAUGES: [&str; 3] = [
    "litellm_remaining_team_budget_metric",
    "litellm_team_max_budget_metric",
    "litellm_team_budget_remaining_hours_metric",
];
const USER_GAUGES: [&str; 3] = [
    "litellm_remaining_user_budget_metric",
    "litellm_user_max_budget_metric",
    "litellm_user_budget_remaining_hours_metric",
];

impl BudgetGauges {
    /// An owner's spend after a request (keys, teams and users; other owners have no gauges).
    pub fn record(
        &self,
        account: &AccountKey,
        key: Option<&Arc<KeyIdentity>>,
        limits: &Arc<Limits>,
        spend: f64,
    ) {
        if !matches!(
            account.0,
            ScopeKind::Key | ScopeKind::Team | ScopeKind::User
        ) {
            return;
        }
        let seen = Seen {
            key: key.cloned(),
            limits: limits.clone(),
            spend,
        };
        self.owners.lock().insert(account.clone(), seen);
    }

    /// Drops a deleted owner's gauges.
    pub fn forget(&self, kind: ScopeKind, id: &str) {
        self.owners.lock().remove(&(kind, Arc::<str>::from(id)));
    }

    /// Appends the gauges in Prometheus' text format.
    pub fn render(&self, out: &mut Vec<u8>) {
        let now = clock::now_ms();
        let owners = self.owners.lock();
        if owners.is_empty() {
            return;
        }
        let mut text = String::new();
        for (kind, names, help) in [
            (ScopeKind::Key, KEY_GAUGES, "api key"),
            (ScopeKind::Team, TEAM_GAUGES, "team"),
            (ScopeKind::User, USER_GAUGES, "user"),
        ] {
            let rows: Vec<(String, &Seen)> = owners
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, id), seen)| (labels(kind, id, seen), seen))
                .collect();
            if rows.is_empty() {
                continue;
            }
            for (i, name) in names.iter().enumerate() {
                let what = [
                    "Remaining budget",
                    "Maximum budget",
                    "Hours until the budget resets",
                ][i];
                let _ = writeln!(text, "# HELP {name} {what} for the {help}");
                let _ = writeln!(text, "# TYPE {name} gauge");
                for (labels, seen) in &rows {
                    let max = seen.limits.max_budget.unwrap_or(f64::INFINITY);
                    let value = match i {
                        0 => max - seen.spend,
                        1 => max,
                        _ => match remaining_hours(&seen.limits, now) {
                            Some(h) => h,
                            None => continue,
                        },
                    };
                    let _ = writeln!(text, "{name}{{{labels}}} {value}");
                }
            }
        }
        out.extend_from_slice(text.as_bytes());
    }
}

/// Hours until the owner's budget window ends (rolled forward past ends already reached).
fn remaining_hours(limits: &Limits, now: i64) -> Option<f64> {
    let end = limits.budget_reset_at?;
    let end = match limits
        .budget_duration
        .as_deref()
        .and_then(|d| clock::parse_span(d).ok())
    {
        Some(span) => span.next_after(end, now),
        None => end,
    };
    Some(((end - now) as f64 / 3_600_000.0).max(0.0))
}

fn labels(kind: ScopeKind, id: &str, seen: &Seen) -> String {
    let key = seen.key.as_deref();
    match kind {
        ScopeKind::Key => format!(
            "api_key_alias=\"{}\",hashed_api_key=\"{}\"",
            escape(key.and_then(|k| k.key_alias.as_deref()).unwrap_or("None")),
            escape(id)
        ),
        ScopeKind::Team => format!(
            "team=\"{}\",team_alias=\"{}\"",
            escape(id),
            escape(key.and_then(|k| k.team_alias.as_deref()).unwrap_or("None"))
        ),
        _ => format!("user=\"{}\"", escape(id)),
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_remaining_max_and_hours() {
        let g = BudgetGauges::default();
        let limits = Arc::new(Limits {
            max_budget: Some(10.0),
            budget_duration: Some("1d".into()),
            budget_reset_at: Some(clock::now_ms() + 2 * 3_600_000),
            ..Limits::default()
        });
        g.record(&(ScopeKind::Team, "t\"1".into()), None, &limits, 2.5);
        g.record(&(ScopeKind::EndUser, "e".into()), None, &limits, 1.0);
        let mut out = Vec::new();
        g.render(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "litellm_remaining_team_budget_metric{team=\"t\\\"1\",team_alias=\"None\"} 7.5"
            ),
            "{text}"
        );
        assert!(
            text.contains("litellm_team_max_budget_metric{team=\"t\\\"1\",team_alias=\"None\"} 10"),
            "{text}"
        );
        let hours: f64 = text
            .lines()
            .find(|l| l.starts_with("litellm_team_budget_remaining_hours_metric{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((1.9..=2.0).contains(&hours), "{hours}");
        assert!(!text.contains("api_key"), "no key was recorded: {text}");
        assert!(!text.contains("end_user"), "{text}");
        g.forget(ScopeKind::Team, "t\"1");
        let mut out = Vec::new();
        g.render(&mut out);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    }
}
