//! Budgets and rate limits, checked and reserved atomically before a request is forwarded
//! (`request_filter`, after routing) and settled with the real cost when it ends (`logging`).
//!
//! A request reserves its worst-case cost on every owner whose budget applies (key, team, user,
//! end user, key+model) in one step: all checks pass and all reservations are taken, or nothing
//! is taken. Settling releases the reservation and adds the actual cost.
//!
//! As LiteLLM 1.109.1 (`_apply_over_budget_reservation_policy`), the reservation is capped at
//! what the tightest owner has left, and a request is refused only when an owner has nothing
//! left (spend plus what others reserved reaches its budget): a key with budget for one and a
//! half calls makes its first call. Concurrent requests still cannot together pass a budget,
//! since each one reserves what it takes; a budget is passed at most by what one request costs
//! beyond the part of the budget it reserved. With `fail_closed_budget_enforcement` the whole
//! worst case must fit instead (a budget is then passed only when a request costs more than its
//! worst case: an unknown output limit, or a provider counting more prompt tokens than
//! tiktoken did).
//!
//! Two implementations share these semantics: in process (one instance), and a Redis script
//! (several instances sharing one Redis), see `redis_ledger.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use filters::identity::{Limits, ScopeKind};
use parking_lot::Mutex;

use crate::clock::{Span, parse_span};

/// One owner's counters key.
pub type AccountKey = (ScopeKind, Arc<str>);

/// What one owner asks of a request.
#[derive(Debug, Clone)]
pub struct Check {
    pub key: AccountKey,
    pub limits: Arc<Limits>,
}

impl Check {
    pub fn of(scope: &filters::identity::Scope) -> Check {
        Check {
            key: (scope.kind, scope.id.clone()),
            limits: scope.limits.clone(),
        }
    }
}

/// A request let through: what it holds on every owner until settled.
#[derive(Debug, Clone, Default)]
pub struct Hold {
    /// Identifies the hold in Redis, so a retried settle is applied once.
    pub id: String,
    pub accounts: Vec<AccountKey>,
    /// Reserved cost (USD) on each account.
    pub reserved: f64,
    /// Remaining requests/tokens this minute on the first account with such a limit (headers).
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    /// Spend of the first account (the key) before this request.
    pub key_spend: Option<f64>,
    /// The owners with a budget, their limits and their spend before this request (the
    /// budget gauges of `/metrics`).
    pub budgets: Vec<(AccountKey, Arc<Limits>, f64)>,
}

impl Hold {
    /// Adds an owner to the hold; the first owner with an rpm (tpm) limit gives the
    /// `x-ratelimit-*` figures, from its counts after this request.
    pub fn take(&mut self, c: &Check, requests: u64, tokens: u64, spend: f64) {
        if c.limits.max_budget.is_some() {
            self.budgets.push((c.key.clone(), c.limits.clone(), spend));
        }
        if self.remaining_requests.is_none()
            && let Some(rpm) = c.limits.rpm_limit
        {
            self.rpm_limit = Some(rpm);
            self.remaining_requests = Some(rpm.saturating_sub(requests));
        }
        if self.remaining_tokens.is_none()
            && let Some(tpm) = c.limits.tpm_limit
        {
            self.tpm_limit = Some(tpm);
            self.remaining_tokens = Some(tpm.saturating_sub(tokens));
        }
        self.accounts.push(c.key.clone());
    }
}

/// Milliseconds until the next rate-limit minute starts.
pub fn until_next_minute(now_ms: i64) -> i64 {
    (now_ms.div_euclid(60_000) + 1) * 60_000 - now_ms
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    Budget {
        kind: ScopeKind,
        id: String,
        spend: f64,
        max_budget: f64,
    },
    Rate {
        kind: ScopeKind,
        id: String,
        /// `requests`, `tokens` or `parallel_requests`.
        what: &'static str,
        limit: u64,
        /// Milliseconds until the window resets.
        retry_after_ms: i64,
    },
}

#[derive(Debug, Default)]
struct Account {
    spend: f64,
    reserved: f64,
    /// End of the budget window (Unix ms), when the owner has a `budget_duration`.
    window_end: Option<i64>,
    in_flight: u64,
    minute: i64,
    requests: u64,
    tokens: u64,
}

impl Account {
    fn roll(&mut self, limits: &Limits, now_ms: i64) {
        // The database moved the window on (its reset job, or a new budget_duration): a new
        // window starts here too. Adopted once: the stored end then equals the database's.
        match (self.window_end, limits.budget_reset_at) {
            (Some(mine), Some(db)) if db > mine => {
                self.spend = 0.0;
                self.window_end = Some(db);
            }
            (None, Some(db)) => self.window_end = Some(db),
            _ => {}
        }
        if let (Some(end), Some(span)) = (self.window_end, span_of(limits))
            && end <= now_ms
        {
            self.spend = 0.0;
            self.window_end = Some(span.next_after(end, now_ms));
        }
        let minute = now_ms.div_euclid(60_000);
        if minute != self.minute {
            self.minute = minute;
            self.requests = 0;
            self.tokens = 0;
        }
    }
}

fn span_of(limits: &Limits) -> Option<Span> {
    limits
        .budget_duration
        .as_deref()
        .and_then(|d| parse_span(d).ok())
}

/// The in-process ledger.
#[derive(Debug, Default)]
pub struct LocalLedger {
    accounts: Mutex<HashMap<AccountKey, Account, ahash::RandomState>>,
}

impl LocalLedger {
    /// Checks every owner and, when all pass, takes a request slot and `estimate` of budget on
    /// each (capped at what the tightest owner has left, unless `fail_closed`).
    pub fn admit(
        &self,
        checks: &[Check],
        estimate: f64,
        now_ms: i64,
        fail_closed: bool,
    ) -> Result<Hold, Refusal> {
        let mut accounts = self.accounts.lock();
        let mut reservation = estimate;
        for c in checks {
            let a = accounts.entry(c.key.clone()).or_insert_with(|| Account {
                spend: c.limits.spend,
                window_end: c.limits.budget_reset_at,
                minute: now_ms.div_euclid(60_000),
                ..Account::default()
            });
            a.roll(&c.limits, now_ms);
            refuse_if_over(
                c,
                a.spend,
                a.reserved,
                estimate,
                a.in_flight,
                a.requests,
                a.tokens,
                now_ms,
                fail_closed,
            )?;
            if let Some(max) = c.limits.max_budget {
                reservation = reservation.min((max - a.spend - a.reserved).max(0.0));
            }
        }
        let estimate = reservation;
        let mut hold = Hold {
            reserved: estimate,
            ..Hold::default()
        };
        for (i, c) in checks.iter().enumerate() {
            let a = accounts.get_mut(&c.key).expect("inserted above");
            if i == 0 {
                hold.key_spend = Some(a.spend);
            }
            a.reserved += estimate;
            a.in_flight += 1;
            a.requests += 1;
            hold.take(c, a.requests, a.tokens, a.spend);
        }
        Ok(hold)
    }

    /// Releases a hold and books what the request really cost.
    pub fn settle(&self, hold: &Hold, cost: f64, tokens: u64, now_ms: i64) {
        let mut accounts = self.accounts.lock();
        for key in &hold.accounts {
            if let Some(a) = accounts.get_mut(key) {
                a.reserved = (a.reserved - hold.reserved).max(0.0);
                a.in_flight = a.in_flight.saturating_sub(1);
                a.spend += cost;
                if now_ms.div_euclid(60_000) == a.minute {
                    a.tokens += tokens;
                }
            }
        }
    }

    /// Sets an owner's spend (an admin reset, or a budget reset elsewhere).
    pub fn set_spend(&self, key: &AccountKey, spend: f64, window_end: Option<i64>) {
        if let Some(a) = self.accounts.lock().get_mut(key) {
            a.spend = spend;
            a.window_end = window_end;
        }
    }

    /// Moves an owner's budget window to end at `window_end` (a new `budget_duration`), keeping
    /// its spend: the database keeps it too, and the window's end, not the change, resets it.
    pub fn move_window(&self, key: &AccountKey, window_end: Option<i64>) {
        if let Some(a) = self.accounts.lock().get_mut(key) {
            a.window_end = window_end;
        }
    }

    /// Moves an owner's account to a new id (a regenerated key's per-model accounts), unless
    /// the new id has one already.
    pub fn rename(&self, from: &AccountKey, to: AccountKey) {
        let mut accounts = self.accounts.lock();
        if !accounts.contains_key(&to)
            && let Some(a) = accounts.remove(from)
        {
            accounts.insert(to, a);
        }
    }

    /// Forgets an owner (deleted).
    pub fn forget(&self, key: &AccountKey) {
        self.accounts.lock().remove(key);
    }

    /// Current spend as this ledger sees it (tests and `/key/info`).
    pub fn spend_of(&self, key: &AccountKey) -> Option<(f64, f64)> {
        self.accounts.lock().get(key).map(|a| (a.spend, a.reserved))
    }
}

/// The checks every implementation makes, in order: budget, parallel, requests, tokens. The
/// budget check refuses when nothing is left (spend and others' reservations reach it), or,
/// `fail_closed`, when the whole `estimate` does not fit.
#[allow(clippy::too_many_arguments)]
pub fn refuse_if_over(
    c: &Check,
    spend: f64,
    reserved: f64,
    estimate: f64,
    in_flight: u64,
    requests: u64,
    tokens: u64,
    now_ms: i64,
    fail_closed: bool,
) -> Result<(), Refusal> {
    let (kind, id) = (c.key.0, &c.key.1);
    let l = &c.limits;
    let nothing_fits = |max: f64| {
        if fail_closed {
            spend + reserved + estimate > max + 1e-12
        } else {
            spend + reserved >= max - 1e-12
        }
    };
    if let Some(max) = l.max_budget
        && (spend >= max || nothing_fits(max))
    {
        return Err(Refusal::Budget {
            kind,
            id: id.to_string(),
            spend,
            max_budget: max,
        });
    }
    let next_minute = until_next_minute(now_ms);
    if let Some(p) = l.max_parallel_requests
        && in_flight >= p
    {
        return Err(Refusal::Rate {
            kind,
            id: id.to_string(),
            what: "parallel_requests",
            limit: p,
            retry_after_ms: 1000,
        });
    }
    if let Some(rpm) = l.rpm_limit
        && requests >= rpm
    {
        return Err(Refusal::Rate {
            kind,
            id: id.to_string(),
            what: "requests",
            limit: rpm,
            retry_after_ms: next_minute,
        });
    }
    if let Some(tpm) = l.tpm_limit
        && tokens >= tpm
    {
        return Err(Refusal::Rate {
            kind,
            id: id.to_string(),
            what: "tokens",
            limit: tpm,
            retry_after_ms: next_minute,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: ScopeKind, id: &str, limits: Limits) -> Check {
        Check {
            key: (kind, id.into()),
            limits: Arc::new(limits),
        }
    }

    fn budget(max: f64) -> Limits {
        Limits {
            max_budget: Some(max),
            ..Limits::default()
        }
    }

    #[test]
    fn reservations_never_pass_the_budget() {
        let checks = [check(ScopeKind::Key, "k", budget(1.0))];
        let ledger = LocalLedger::default();
        let mut ok = 0;
        let mut held = Vec::new();
        for _ in 0..10 {
            if let Ok(h) = ledger.admit(&checks, 0.3, 0, true) {
                ok += 1;
                held.push(h);
            }
        }
        // 3 × 0.3 reserved; a fourth would pass 1.0.
        assert_eq!(ok, 3);
        // Settling at the real cost (less than reserved) frees room for more.
        for h in &held {
            ledger.settle(h, 0.1, 10, 0);
        }
        let (spend, reserved) = ledger.spend_of(&(ScopeKind::Key, Arc::from("k"))).unwrap();
        assert!((spend - 0.3).abs() < 1e-9 && reserved.abs() < 1e-9);
        assert!(ledger.admit(&checks, 0.3, 0, true).is_ok());
        assert!(ledger.admit(&checks, 0.3, 0, true).is_ok());
        assert!(ledger.admit(&checks, 0.3, 0, true).is_err());
    }

    #[test]
    fn by_default_a_reservation_is_capped_at_what_is_left() {
        // Budget 1.0, worst case 0.7 per call, real cost 0.6: the first call reserves 0.7, the
        // second what is left (0.3), a third finds nothing left.
        let checks = [check(ScopeKind::Key, "k", budget(1.0))];
        let ledger = LocalLedger::default();
        let first = ledger.admit(&checks, 0.7, 0, false).unwrap();
        let second = ledger.admit(&checks, 0.7, 0, false).unwrap();
        assert!((first.reserved - 0.7).abs() < 1e-9);
        assert!((second.reserved - 0.3).abs() < 1e-9);
        assert!(
            ledger.admit(&checks, 0.7, 0, false).is_err(),
            "nothing left"
        );
        ledger.settle(&first, 0.6, 0, 0);
        ledger.settle(&second, 0.6, 0, 0);
        // Spend 1.2: passed by what the second cost beyond its 0.3, and nothing more goes.
        assert!(ledger.admit(&checks, 0.7, 0, false).is_err());
        // A key whose budget covers one and a half calls makes its first call (fail-closed:
        // refused, the whole worst case must fit).
        let small = [check(ScopeKind::Key, "s", budget(0.5))];
        assert!(ledger.admit(&small, 0.7, 0, true).is_err());
        assert!(ledger.admit(&small, 0.7, 0, false).is_ok());
    }

    #[test]
    fn all_or_nothing_across_owners() {
        let ledger = LocalLedger::default();
        let key = check(ScopeKind::Key, "k", budget(10.0));
        let team = check(ScopeKind::Team, "t", budget(0.5));
        assert!(
            ledger
                .admit(&[key.clone(), team.clone()], 0.4, 0, true)
                .is_ok()
        );
        let refused = ledger
            .admit(&[key.clone(), team.clone()], 0.4, 0, true)
            .unwrap_err();
        assert!(matches!(
            refused,
            Refusal::Budget {
                kind: ScopeKind::Team,
                ..
            }
        ));
        // The refused request reserved nothing on the key.
        let (_, reserved) = ledger.spend_of(&(ScopeKind::Key, Arc::from("k"))).unwrap();
        assert!((reserved - 0.4).abs() < 1e-9);
    }

    #[test]
    fn budget_window_resets_on_schedule() {
        let ledger = LocalLedger::default();
        let limits = Limits {
            max_budget: Some(1.0),
            budget_duration: Some("30s".into()),
            budget_reset_at: Some(30_000),
            spend: 1.0,
            ..Limits::default()
        };
        let checks = [check(ScopeKind::Key, "k", limits)];
        assert!(ledger.admit(&checks, 0.1, 29_999, true).is_err());
        let hold = ledger.admit(&checks, 0.1, 30_000, true).unwrap();
        ledger.settle(&hold, 0.1, 0, 30_000);
        let (spend, _) = ledger.spend_of(&(ScopeKind::Key, Arc::from("k"))).unwrap();
        assert!((spend - 0.1).abs() < 1e-9);
        // Next window ends at 60 s: an injected clock far ahead resets again.
        let hold = ledger.admit(&checks, 0.1, 125_000, true).unwrap();
        assert_eq!(hold.key_spend, Some(0.0));
    }

    #[test]
    fn rate_limits_count_requests_tokens_and_parallel() {
        let ledger = LocalLedger::default();
        let limits = Limits {
            rpm_limit: Some(2),
            ..Limits::default()
        };
        let checks = [check(ScopeKind::Key, "k", limits)];
        let h1 = ledger.admit(&checks, 0.0, 1_000, false).unwrap();
        assert_eq!(h1.remaining_requests, Some(1));
        ledger.settle(&h1, 0.0, 5, 1_000);
        ledger.admit(&checks, 0.0, 2_000, false).unwrap();
        match ledger.admit(&checks, 0.0, 3_000, false) {
            Err(Refusal::Rate {
                what,
                retry_after_ms,
                ..
            }) => {
                assert_eq!(what, "requests");
                assert_eq!(retry_after_ms, 57_000);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            ledger.admit(&checks, 0.0, 60_000, false).is_ok(),
            "a new minute"
        );

        let tpm = [check(
            ScopeKind::Team,
            "t",
            Limits {
                tpm_limit: Some(100),
                ..Limits::default()
            },
        )];
        let h = ledger.admit(&tpm, 0.0, 0, false).unwrap();
        ledger.settle(&h, 0.0, 100, 0);
        assert!(matches!(
            ledger.admit(&tpm, 0.0, 1, false),
            Err(Refusal::Rate { what: "tokens", .. })
        ));

        let par = [check(
            ScopeKind::User,
            "u",
            Limits {
                max_parallel_requests: Some(1),
                ..Limits::default()
            },
        )];
        let h = ledger.admit(&par, 0.0, 0, false).unwrap();
        assert!(matches!(
            ledger.admit(&par, 0.0, 0, false),
            Err(Refusal::Rate {
                what: "parallel_requests",
                ..
            })
        ));
        ledger.settle(&h, 0.0, 0, 0);
        assert!(ledger.admit(&par, 0.0, 0, false).is_ok());
    }
}
