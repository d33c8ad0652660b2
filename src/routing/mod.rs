//! The router's memory of deployments and its decisions between attempts: which candidate of a
//! route plan an attempt goes to, whether a failed attempt is retried and after how long, and
//! whether a failure cools its deployment down (LiteLLM 1.109.1's rules; see
//! `docs/routing.md`). The forwarder (`proxy/forward.rs`, inside Pingora's `request_filter`)
//! asks it before each attempt and tells it how each attempt ended; `strategy` orders a plan.
//! Pingora-free, and time is passed in (Unix milliseconds from `crate::clock`), so tests move
//! it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::config::{RetryPolicy, RouterSettings};
use crate::providers::translate::ErrorClass;

/// LiteLLM's failure-rate window: counters live 60 s from their first increment.
const WINDOW_MS: i64 = 60_000;
/// Failure rate above which a deployment of a multi-deployment group cools down.
const FAILURE_THRESHOLD: f64 = 0.5;
/// Requests in the window before the failure rate counts.
const FAILURE_THRESHOLD_MINIMUM_REQUESTS: u32 = 5;
/// A lone deployment cools down only when every one of this many requests failed.
const SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD: u32 = 1000;
/// `litellm.allowed_fails`: the threshold when a policy is set but names neither the failure's
/// class nor `allowed_fails`.
const DEFAULT_ALLOWED_FAILS: u32 = 3;
/// Backoff: 0.5 s x 2^n, at most 8 s, plus up to 0.75 s of jitter (LiteLLM's constants).
const INITIAL_RETRY_DELAY: f64 = 0.5;
const MAX_RETRY_DELAY: f64 = 8.0;
const JITTER: f64 = 0.75;
/// A provider's `retry-after` is honoured as a backoff up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

pub mod shared;
mod strategy;
pub mod tags;

/// Latency samples: (Unix ms, seconds), oldest first.
type Samples = std::collections::VecDeque<(i64, f64)>;

#[derive(Default)]
struct Latency {
    latency: Samples,
    /// Streams' times to first token.
    ttft: Samples,
}

/// What the router knows of one deployment.
#[derive(Default)]
struct DeploymentState {
    /// Attempts in flight (`least-busy`).
    in_flight: std::sync::atomic::AtomicU64,
    /// This minute's (minute, requests, tokens) (`usage-based-routing`).
    usage: Mutex<(i64, u64, u64)>,
    /// Recent latency (`latency-based-routing`).
    latency: Mutex<Latency>,
    /// Unix ms until which the deployment is cooling down (0: it is not), by this instance's
    /// decision or another's (`shared`).
    cooldown_until: AtomicI64,
    /// This instance's own decisions only (what it tells the others).
    own_cooldown_until: AtomicI64,
    /// The cooldown's own length, for the "try again in" of an all-cooling answer.
    cooldown_ms: AtomicI64,
    counts: Mutex<Counts>,
    /// What the other instances know of it (`shared`; zero without Redis).
    peers: Mutex<shared::Peers>,
}

#[derive(Default)]
struct Counts {
    /// Start of the failure-rate window (`None`: none open).
    window_start: Option<i64>,
    fails: u32,
    successes: u32,
    /// `allowed_fails` mode: failures counted within one cooldown time of the first.
    allowed_start: Option<i64>,
    allowed_count: u32,
}

/// Cooldowns and failure counts of every deployment, by deployment index.
pub struct Health {
    deployments: Vec<DeploymentState>,
    settings: RouterSettings,
    /// Woken when this instance cools a deployment down, so `shared` tells the others at once.
    cooled: tokio::sync::Notify,
}

/// How an attempt failed, as the cooldown rules read it.
#[derive(Debug, Clone, Copy)]
pub struct FailureFacts {
    pub status: u16,
    pub class: ErrorClass,
    /// The provider's `retry-after`, parsed.
    pub retry_after: Option<Duration>,
    /// Deployments in the group (a lone deployment is judged more leniently).
    pub group_size: usize,
    /// The deployment's own `cooldown_time`, when it sets one.
    pub deployment_cooldown: Option<Duration>,
    /// The upstream model came from the request (a wildcard group such as `gemini/*`): a 404
    /// then says the client asked for a model the provider lacks, not that the deployment is
    /// broken.
    pub model_from_request: bool,
}

impl Health {
    pub fn new(deployments: usize, settings: RouterSettings) -> Health {
        Health {
            deployments: (0..deployments)
                .map(|_| DeploymentState::default())
                .collect(),
            settings,
            cooled: tokio::sync::Notify::new(),
        }
    }

    pub fn settings(&self) -> &RouterSettings {
        &self.settings
    }

    fn state(&self, index: usize) -> Option<&DeploymentState> {
        self.deployments.get(index)
    }

    /// Whether the deployment is cooling down at `now`.
    pub fn cooling(&self, index: usize, now: i64) -> bool {
        self.deployments
            .get(index)
            .is_some_and(|d| d.cooldown_until.load(Ordering::Relaxed) > now)
    }

    /// The cooldown length of a cooling deployment (LiteLLM reports the whole length, not what
    /// is left, in its "try again in" message).
    pub fn cooldown_length(&self, index: usize) -> Duration {
        let ms = self.deployments[index].cooldown_ms.load(Ordering::Relaxed);
        Duration::from_millis(ms.max(0) as u64)
    }

    /// A successful attempt.
    pub fn on_success(&self, index: usize, now: i64) {
        let Some(d) = self.deployments.get(index) else {
            return;
        };
        let mut c = d.counts.lock();
        c.roll(now);
        c.successes += 1;
    }

    /// A failed attempt: counts it, and cools the deployment down when LiteLLM's rules say so.
    /// Returns the cooldown started, if any.
    pub fn on_failure(&self, index: usize, f: &FailureFacts, now: i64) -> Option<Duration> {
        let d = self.deployments.get(index)?;
        let length = self.cooldown_length_for(f);
        let peers = {
            let p = d.peers.lock();
            PeerCounts {
                fails: p.fails,
                successes: p.successes,
                allowed_fails: p.allowed_fails,
            }
        };
        let cool = {
            let mut c = d.counts.lock();
            c.roll(now);
            c.fails += 1;
            self.should_cool_down(&mut c, f, length, now, peers)
        };
        if !cool || length.is_zero() {
            return None;
        }
        let ms = length.as_millis() as i64;
        d.cooldown_ms.store(ms, Ordering::Relaxed);
        d.cooldown_until.fetch_max(now + ms, Ordering::Relaxed);
        d.own_cooldown_until.fetch_max(now + ms, Ordering::Relaxed);
        self.cooled.notify_one();
        Some(length)
    }

    /// How long a cooldown for this failure lasts: the deployment's `cooldown_time`, else the
    /// provider's `retry-after`, else `router_settings.cooldown_time`.
    fn cooldown_length_for(&self, f: &FailureFacts) -> Duration {
        f.deployment_cooldown
            .or(f.retry_after)
            .unwrap_or(self.settings.cooldown_time)
    }

    /// LiteLLM's `_should_run_cooldown_logic` and `_should_cooldown_deployment`.
    fn should_cool_down(
        &self,
        c: &mut Counts,
        f: &FailureFacts,
        length: Duration,
        now: i64,
        peers: PeerCounts,
    ) -> bool {
        if self.settings.disable_cooldowns || length.is_zero() {
            return false;
        }
        // Client errors other than these say nothing about the deployment's health.
        if (400..500).contains(&f.status) && !matches!(f.status, 401 | 402 | 404 | 408 | 429) {
            return false;
        }
        let single = f.group_size <= 1;
        if single && f.status == 402 {
            return false;
        }
        // LiteLLM would cool a wildcard deployment down for any client's unknown model name,
        // taking every model of that provider out of rotation.
        if f.status == 404 && f.model_from_request {
            return false;
        }
        let by_policy = self
            .settings
            .allowed_fails_policy
            .as_ref()
            .and_then(|p| allowed_fails_for(p, f.status, f.class));
        if self.settings.allowed_fails.is_some() || self.settings.allowed_fails_policy.is_some() {
            // A lone deployment has nowhere else to send its traffic, unless the policy names
            // this failure's class.
            if single && by_policy.is_none() {
                return false;
            }
            let allowed = by_policy
                .or(self.settings.allowed_fails)
                .unwrap_or(DEFAULT_ALLOWED_FAILS);
            if c.allowed_start
                .is_none_or(|start| now - start >= length.as_millis() as i64)
            {
                c.allowed_start = Some(now);
                c.allowed_count = 0;
            }
            c.allowed_count += 1;
            return c.allowed_count + peers.allowed_fails > allowed;
        }
        if f.status == 429 && !single {
            return true;
        }
        // The fleet's counts when instances share them (`shared`), else this instance's.
        let fails = c.fails + peers.fails;
        let total = fails + c.successes + peers.successes;
        let rate = f64::from(fails) / f64::from(total.max(1));
        if rate >= 1.0 && total >= SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD {
            return true;
        }
        if !single && rate > FAILURE_THRESHOLD && total >= FAILURE_THRESHOLD_MINIMUM_REQUESTS {
            return true;
        }
        // 401, 402, 404: not worth retrying, so not worth sending more traffic to.
        !is_retryable_status(f.status)
    }
}

/// The other instances' counts of a deployment, added to this one's in cooldown decisions.
#[derive(Clone, Copy)]
struct PeerCounts {
    fails: u32,
    successes: u32,
    allowed_fails: u32,
}

impl Counts {
    /// Starts a new 60 s window when the last one is over.
    fn roll(&mut self, now: i64) {
        if self
            .window_start
            .is_none_or(|start| now - start >= WINDOW_MS)
        {
            self.window_start = Some(now);
            self.fails = 0;
            self.successes = 0;
        }
    }
}

/// LiteLLM's `should_retry`: 408, 409, 429 and every 5xx.
fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// Whether a failed attempt may be retried (LiteLLM's `should_retry_this_error`), given the
/// group's size and how many of its deployments are not cooling down. Context-window and
/// content-policy errors never are (they go to their fallbacks); 401 and 403 only in a group
/// with another deployment to go to.
pub fn may_retry(status: u16, class: ErrorClass, group_size: usize, healthy: usize) -> bool {
    if matches!(
        class,
        ErrorClass::ContextWindowExceeded | ErrorClass::ContentPolicy
    ) || healthy == 0
    {
        return false;
    }
    match status {
        401 | 403 => group_size > 1,
        s => is_retryable_status(s),
    }
}

/// The retries a retry policy gives a failure (LiteLLM's `get_num_retries_from_retry_policy`):
/// a 404 reads `NotFoundErrorRetries` first, then the fields of the failure's exception
/// classes from the most specific (a context-window error is a `BadRequestError`, a
/// content-policy one its own class and then a `BadRequestError`); the first field that is set
/// wins, else `DefaultRetries`. `None`: the policy says nothing about it.
pub fn policy_retries(policy: &RetryPolicy, status: u16, class: ErrorClass) -> Option<u32> {
    let by_status = match (class, status) {
        (ErrorClass::ContextWindowExceeded, _) => [policy.bad_request, None],
        (ErrorClass::ContentPolicy, _) => [policy.content_policy, policy.bad_request],
        (ErrorClass::Timeout, _) | (_, 408 | 504) => [policy.timeout, None],
        (_, 429) => [policy.rate_limit, None],
        (_, 401) => [policy.authentication, None],
        (_, 503 | 529) => [policy.service_unavailable, None],
        (_, s) if s >= 500 => [policy.internal_server, None],
        (_, 400 | 422) => [policy.bad_request, None],
        _ => [None, None],
    };
    let not_found = if status == 404 {
        policy.not_found
    } else {
        None
    };
    std::iter::once(not_found)
        .chain(by_status)
        .flatten()
        .next()
        .or(policy.default)
}

/// The `allowed_fails_policy` entry for a failure (LiteLLM's
/// `_core_get_allowed_fails_from_policy`, by the failure's exception class).
fn allowed_fails_for(policy: &RetryPolicy, status: u16, class: ErrorClass) -> Option<u32> {
    match (class, status) {
        (ErrorClass::ContentPolicy, _) => policy.content_policy.or(policy.bad_request),
        (ErrorClass::ContextWindowExceeded, _) | (_, 400 | 422) => policy.bad_request,
        (ErrorClass::Timeout, _) | (_, 408 | 504) => policy.timeout,
        (_, 429) => policy.rate_limit,
        (_, 401) => policy.authentication,
        (_, 404) => policy.not_found,
        (_, 502) => policy.bad_gateway,
        (_, 503 | 529) => policy.service_unavailable,
        (_, s) if s >= 500 => policy.internal_server,
        _ => None,
    }
}

/// Whether a failure means the deployment should be left out of this request's later
/// attempts (LiteLLM skips deployments whose error is not retryable in itself: 401, 403).
pub fn skip_on_retry(status: u16) -> bool {
    matches!(status, 401 | 403)
}

/// How long to wait before retry number `n + 1` (0-based `n`) when no other deployment can
/// take it: the provider's `retry-after` when it is at most 60 s, else 0.5 s x 2^n (at least
/// `floor`, at most 8 s); both plus up to 0.75 s of jitter. `unit` is a number in [0, 1) for
/// the jitter.
pub fn backoff(n: u32, retry_after: Option<Duration>, floor: Duration, unit: f64) -> Duration {
    let jitter = unit.clamp(0.0, 1.0) * JITTER;
    match retry_after.filter(|r| !r.is_zero() && *r <= MAX_RETRY_AFTER) {
        Some(r) => r + Duration::from_secs_f64(jitter),
        None => {
            let exponential = INITIAL_RETRY_DELAY * 2f64.powi(n.min(16) as i32);
            let base = exponential
                .max(floor.as_secs_f64().min(MAX_RETRY_DELAY))
                .min(MAX_RETRY_DELAY);
            Duration::from_secs_f64(base + jitter)
        }
    }
}

/// A `retry-after` value: whole seconds, or an HTTP date (RFC 9110), as LiteLLM reads it.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RouterSettings {
        RouterSettings::default()
    }

    fn facts(status: u16, class: ErrorClass, group_size: usize) -> FailureFacts {
        FailureFacts {
            status,
            class,
            retry_after: None,
            group_size,
            deployment_cooldown: None,
            model_from_request: false,
        }
    }

    #[test]
    fn a_429_cools_a_deployment_of_a_group_down_at_once_and_it_comes_back() {
        let h = Health::new(2, settings());
        let cooled = h.on_failure(0, &facts(429, ErrorClass::RateLimited, 2), 1_000);
        assert_eq!(
            cooled,
            Some(Duration::from_secs(5)),
            "default cooldown_time"
        );
        assert!(h.cooling(0, 1_000) && h.cooling(0, 5_999));
        assert!(!h.cooling(0, 6_000), "back when its time is up");
        assert!(!h.cooling(1, 1_000), "the other deployment is untouched");
    }

    #[test]
    fn a_lone_deployment_is_not_cooled_by_a_429_but_is_by_a_401() {
        let h = Health::new(1, settings());
        assert_eq!(
            h.on_failure(0, &facts(429, ErrorClass::RateLimited, 1), 0),
            None
        );
        assert!(
            h.on_failure(0, &facts(401, ErrorClass::Auth, 1), 0)
                .is_some()
        );
    }

    #[test]
    fn server_errors_cool_down_only_through_the_failure_rate() {
        let h = Health::new(2, settings());
        let f = facts(500, ErrorClass::Unavailable, 2);
        for _ in 0..3 {
            h.on_success(0, 0);
        }
        // 1/4, 2/5 failed: not over half.
        assert_eq!(h.on_failure(0, &f, 10), None);
        assert_eq!(h.on_failure(0, &f, 20), None);
        // 3/6 is not over half either; 4/7 is.
        assert_eq!(h.on_failure(0, &f, 30), None);
        assert!(h.on_failure(0, &f, 40).is_some());
        // A new window starts 60 s after the first count.
        let h = Health::new(2, settings());
        for t in [0, 1, 2, 3] {
            assert_eq!(h.on_failure(1, &f, t), None, "fewer than 5 requests");
        }
        assert_eq!(h.on_failure(1, &f, 60_000), None, "the window rolled over");
    }

    #[test]
    fn an_allowed_fails_policy_sets_the_threshold_per_error_class() {
        let mut s = settings();
        s.allowed_fails_policy = Some(RetryPolicy {
            rate_limit: Some(2),
            internal_server: Some(0),
            ..RetryPolicy::default()
        });
        let h = Health::new(2, s.clone());
        let limited = facts(429, ErrorClass::RateLimited, 2);
        // Two 429s are allowed, the third cools it down.
        assert_eq!(h.on_failure(0, &limited, 0), None);
        assert_eq!(h.on_failure(0, &limited, 10), None);
        assert!(h.on_failure(0, &limited, 20).is_some());
        // No 500 is allowed: the first cools it down.
        assert!(
            h.on_failure(1, &facts(500, ErrorClass::Unavailable, 2), 0)
                .is_some()
        );
        // A class the policy does not name: LiteLLM's default of 3 allowed fails.
        let h = Health::new(2, s.clone());
        let timeout = facts(408, ErrorClass::Timeout, 2);
        for t in 0..3 {
            assert_eq!(h.on_failure(0, &timeout, t), None);
        }
        assert!(h.on_failure(0, &timeout, 3).is_some());
        // A lone deployment cools down only for the classes the policy names.
        let lone = Health::new(1, s);
        assert!(
            lone.on_failure(0, &facts(500, ErrorClass::Unavailable, 1), 0)
                .is_some()
        );
        for t in 0..5 {
            assert_eq!(
                lone.on_failure(0, &facts(408, ErrorClass::Timeout, 1), t),
                None
            );
        }
    }

    #[test]
    fn a_404_for_a_model_the_client_chose_cools_nothing_down() {
        let h = Health::new(1, settings());
        let mut f = facts(404, ErrorClass::NotFound, 1);
        f.model_from_request = true;
        assert_eq!(h.on_failure(0, &f, 0), None);
        f.model_from_request = false;
        assert!(
            h.on_failure(0, &f, 0).is_some(),
            "a configured model that is not there"
        );
    }

    #[test]
    fn client_errors_never_cool_down_and_the_length_follows_precedence() {
        let h = Health::new(2, settings());
        for status in [400, 403, 409, 422] {
            for t in 0..10 {
                assert_eq!(
                    h.on_failure(0, &facts(status, ErrorClass::BadRequest, 2), t),
                    None
                );
            }
        }
        let mut f = facts(429, ErrorClass::RateLimited, 2);
        f.retry_after = Some(Duration::from_secs(30));
        assert_eq!(
            h.on_failure(1, &f, 0),
            Some(Duration::from_secs(30)),
            "retry-after"
        );
        f.deployment_cooldown = Some(Duration::from_secs(2));
        assert_eq!(
            h.on_failure(1, &f, 0),
            Some(Duration::from_secs(2)),
            "deployment's own"
        );
    }

    #[test]
    fn allowed_fails_counts_within_one_cooldown_time_and_cooldowns_can_be_off() {
        let h = Health::new(
            2,
            RouterSettings {
                allowed_fails: Some(2),
                ..settings()
            },
        );
        let f = facts(500, ErrorClass::Unavailable, 2);
        assert_eq!(h.on_failure(0, &f, 0), None);
        assert_eq!(h.on_failure(0, &f, 1), None);
        assert!(
            h.on_failure(0, &f, 2).is_some(),
            "the third failure is over 2 allowed"
        );
        assert_eq!(h.on_failure(1, &f, 0), None);
        assert_eq!(h.on_failure(1, &f, 1), None);
        assert_eq!(
            h.on_failure(1, &f, 5_000),
            None,
            "counted again after a cooldown time"
        );
        let off = Health::new(
            2,
            RouterSettings {
                disable_cooldowns: true,
                ..settings()
            },
        );
        assert_eq!(
            off.on_failure(0, &facts(429, ErrorClass::RateLimited, 2), 0),
            None
        );
    }

    #[test]
    fn what_is_retried() {
        assert!(may_retry(429, ErrorClass::RateLimited, 1, 1));
        assert!(may_retry(503, ErrorClass::Unavailable, 1, 1));
        assert!(may_retry(408, ErrorClass::Timeout, 2, 1));
        assert!(may_retry(409, ErrorClass::BadRequest, 2, 1));
        assert!(
            !may_retry(429, ErrorClass::RateLimited, 2, 0),
            "nothing healthy left"
        );
        assert!(!may_retry(400, ErrorClass::BadRequest, 2, 2));
        assert!(!may_retry(404, ErrorClass::NotFound, 2, 2));
        assert!(!may_retry(422, ErrorClass::BadRequest, 2, 2));
        assert!(!may_retry(400, ErrorClass::ContextWindowExceeded, 2, 2));
        assert!(!may_retry(400, ErrorClass::ContentPolicy, 2, 2));
        assert!(may_retry(401, ErrorClass::Auth, 2, 1));
        assert!(
            !may_retry(401, ErrorClass::Auth, 1, 1),
            "no other deployment"
        );
    }

    #[test]
    fn a_retry_policy_is_read_by_exception_class_then_default() {
        let policy = RetryPolicy {
            rate_limit: Some(4),
            bad_request: Some(1),
            not_found: Some(3),
            default: Some(7),
            ..RetryPolicy::default()
        };
        assert_eq!(
            policy_retries(&policy, 429, ErrorClass::RateLimited),
            Some(4)
        );
        assert_eq!(policy_retries(&policy, 404, ErrorClass::NotFound), Some(3));
        assert_eq!(
            policy_retries(&policy, 400, ErrorClass::ContextWindowExceeded),
            Some(1)
        );
        assert_eq!(
            policy_retries(&policy, 400, ErrorClass::ContentPolicy),
            Some(1),
            "then BadRequest"
        );
        assert_eq!(
            policy_retries(&policy, 500, ErrorClass::Unavailable),
            Some(7),
            "DefaultRetries"
        );
        let empty = RetryPolicy::default();
        assert_eq!(policy_retries(&empty, 429, ErrorClass::RateLimited), None);
    }

    #[test]
    fn backoff_prefers_retry_after_then_grows_to_eight_seconds() {
        let s = Duration::from_secs;
        assert_eq!(backoff(0, Some(s(3)), Duration::ZERO, 0.0), s(3));
        assert_eq!(
            backoff(0, Some(s(90)), Duration::ZERO, 0.0),
            Duration::from_millis(500)
        );
        assert_eq!(backoff(2, None, Duration::ZERO, 0.0), s(2));
        assert_eq!(backoff(9, None, Duration::ZERO, 0.0), s(8));
        assert_eq!(backoff(0, None, s(5), 0.0), s(5), "retry_after is a floor");
        assert_eq!(
            backoff(0, None, s(50), 0.0),
            s(8),
            "the floor is capped too"
        );
        let jittered = backoff(0, None, Duration::ZERO, 0.999);
        assert!(jittered > Duration::from_millis(1_200) && jittered < Duration::from_millis(1_250));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(b"7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(b"1.5", now),
            None,
            "LiteLLM ignores fractions"
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(
            parse_retry_after(date.as_bytes(), now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(parse_retry_after(b"soon", now), None);
    }
}
