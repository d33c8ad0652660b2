//! Prometheus metrics under LiteLLM's names and label sets, served at `GET /metrics`.
//! Recorded in Pingora's `logging` phase, once per request.
//!
//! Names, labels and latency buckets follow `litellm/types/integrations/prometheus.py`, so
//! existing dashboards keep working. Counters carry the `_total` suffix on the wire, as
//! Python's client adds it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{
    Counter, CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::access_log::push_u64;

pub mod cache;
pub mod router;
pub use router::{DeploymentLabels, DeploymentState, FallbackTried, RouterMetrics};

/// LiteLLM's `LATENCY_BUCKETS` (seconds).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0, 120.0, 180.0,
    240.0, 300.0,
];

const TOTAL_REQUEST_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "status_code",
    "user_email",
    "route",
    "client_ip",
    "user_agent",
    "model_id",
];
const FAILED_REQUEST_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "exception_status",
    "exception_class",
    "route",
    "client_ip",
    "user_agent",
    "model_id",
];
const REQUEST_LATENCY_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "model",
    "model_id",
];
const API_LATENCY_LABELS: &[&str] = &[
    "model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "requested_model",
    "end_user",
    "user",
    "model_id",
];
const OVERHEAD_LABELS: &[&str] = &[
    "model_group",
    "api_provider",
    "api_base",
    "litellm_model_name",
    "hashed_api_key",
    "api_key_alias",
    "model_id",
];
const TOKEN_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "requested_model",
    "model_id",
];
const DEPLOYMENT_LABELS: &[&str] = &[
    "requested_model",
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "client_ip",
    "user_agent",
];
const DEPLOYMENT_FAILURE_LABELS: &[&str] = &[
    "requested_model",
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "exception_status",
    "exception_class",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "client_ip",
    "user_agent",
];

/// `litellm_spend_metric`'s labels, as LiteLLM's docs list them.
const SPEND_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
];

/// Every metric Sluice exports, registered in one registry.
pub struct Metrics {
    /// Distinguishes instances in the per-thread handle cache.
    id: u64,
    registry: Registry,
    pub total_requests: IntCounterVec,
    pub failed_requests: IntCounterVec,
    pub request_latency: HistogramVec,
    pub api_latency: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub overhead_latency: HistogramVec,
    pub input_tokens: IntCounterVec,
    pub output_tokens: IntCounterVec,
    pub total_tokens: IntCounterVec,
    pub deployment_success: IntCounterVec,
    pub deployment_failure: IntCounterVec,
    pub deployment_total: IntCounterVec,
    /// USD, from each response's usage and the deployment's prices.
    pub spend: CounterVec,
    pub in_flight: IntGauge,
    /// Open downstream connections.
    pub open_connections: IntGauge,
    /// Downstream connections Sluice closed itself, by reason (`over_limit`,
    /// `header_timeout`, `shed_idle`, `shutdown`).
    pub closed_connections: IntCounterVec,
    /// The response cache's hits, misses and the tokens hits saved (LiteLLM's names and labels).
    pub cache: [IntCounterVec; 3],
    /// Requests recorded under the overflow label set: once `max_label_sets` distinct owner and
    /// model combinations are recorded, new ones are folded into one (every label `overflow`
    /// but `route`, the status and the error class), so clients cannot grow `/metrics` without
    /// bound; `client_ip` and `user_agent` are bounded on their own ([`MAX_CLIENT_IPS`],
    /// [`MAX_USER_AGENTS`]).
    pub overflowed: IntCounter,
    /// Deployment state and cooldowns.
    pub router: RouterMetrics,
    /// Hashes of the label combinations recorded so far (bounded by `max_label_sets`).
    label_sets: parking_lot::Mutex<std::collections::HashSet<u64, ahash::RandomState>>,
    max_label_sets: usize,
    client_ips: parking_lot::Mutex<std::collections::HashSet<Box<str>, ahash::RandomState>>,
    user_agents: parking_lot::Mutex<std::collections::HashSet<Box<str>, ahash::RandomState>>,
    overflow_warned: std::sync::atomic::AtomicBool,
}

/// The label value of folded combinations.
pub const OVERFLOW_LABEL: &str = "overflow";

/// Distinct `client_ip` label values kept; later addresses are labelled `overflow` (LiteLLM's
/// label sets carry the client's address, which any number of clients can vary).
pub const MAX_CLIENT_IPS: usize = 500;
/// Distinct `user_agent` label values kept (clients choose them freely).
pub const MAX_USER_AGENTS: usize = 100;

/// `value` while fewer than `max` distinct values were seen (or it is one of them), else
/// [`OVERFLOW_LABEL`].
fn bounded<'a>(
    seen: &parking_lot::Mutex<std::collections::HashSet<Box<str>, ahash::RandomState>>,
    value: &'a str,
    max: usize,
) -> &'a str {
    let mut seen = seen.lock();
    if seen.contains(value) {
        return value;
    }
    if seen.len() >= max {
        return OVERFLOW_LABEL;
    }
    seen.insert(value.into());
    value
}

/// Registers a metric and hands it back (the registry keeps a clone).
fn registered<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter definition");
    registered(registry, c)
}

fn float_counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let c = CounterVec::new(Opts::new(name, help), labels).expect("valid counter definition");
    registered(registry, c)
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid histogram definition");
    registered(registry, h)
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_label_set_limit(crate::config::DEFAULT_METRICS_MAX_LABEL_SETS)
    }

    /// Metrics that record at most `max_label_sets` distinct label combinations.
    pub fn with_label_set_limit(max_label_sets: usize) -> Metrics {
        let registry = Registry::new();
        let open_connections = IntGauge::new(
            "sluice_open_connections",
            "Open downstream (client) connections",
        )
        .expect("valid gauge");
        registry
            .register(Box::new(open_connections.clone()))
            .expect("metric names are unique");
        let closed_connections = counter(
            &registry,
            "sluice_closed_connections_total",
            "Client connections Sluice closed: over_limit (max_connections reached), header_timeout (no complete request header in time), shed_idle (idle, closed to make room at max_connections), shutdown",
            &["reason"],
        );
        let overflowed = IntCounter::new(
            "sluice_metrics_overflowed_requests_total",
            "Requests recorded under the overflow label set because sluice_settings.metrics_max_label_sets distinct label combinations were reached",
        )
        .expect("valid counter");
        registry
            .register(Box::new(overflowed.clone()))
            .expect("metric names are unique");
        let in_flight = IntGauge::new(
            "litellm_in_flight_requests",
            "Requests being processed by this instance",
        )
        .expect("valid gauge");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("metric names are unique");
        Metrics {
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            total_requests: counter(
                &registry,
                "litellm_proxy_total_requests_metric_total",
                "Total requests made to the proxy",
                TOTAL_REQUEST_LABELS,
            ),
            failed_requests: counter(
                &registry,
                "litellm_proxy_failed_requests_metric_total",
                "Failed responses from the proxy (client errors included)",
                FAILED_REQUEST_LABELS,
            ),
            request_latency: histogram(
                &registry,
                "litellm_request_total_latency_metric",
                "Total latency (seconds) of a request as seen by the proxy",
                REQUEST_LATENCY_LABELS,
            ),
            api_latency: histogram(
                &registry,
                "litellm_llm_api_latency_metric",
                "Latency (seconds) of the upstream LLM API call",
                API_LATENCY_LABELS,
            ),
            time_to_first_token: histogram(
                &registry,
                "litellm_llm_api_time_to_first_token_metric",
                "Time to first token (seconds) of a streamed upstream call",
                API_LATENCY_LABELS,
            ),
            overhead_latency: histogram(
                &registry,
                "litellm_overhead_latency_metric",
                "Latency (seconds) the proxy itself added",
                OVERHEAD_LABELS,
            ),
            input_tokens: counter(
                &registry,
                "litellm_input_tokens_metric_total",
                "Prompt tokens",
                TOKEN_LABELS,
            ),
            output_tokens: counter(
                &registry,
                "litellm_output_tokens_metric_total",
                "Completion tokens",
                TOKEN_LABELS,
            ),
            total_tokens: counter(
                &registry,
                "litellm_total_tokens_metric_total",
                "Prompt plus completion tokens",
                TOKEN_LABELS,
            ),
            deployment_success: counter(
                &registry,
                "litellm_deployment_success_responses_total",
                "Successful responses per deployment",
                DEPLOYMENT_LABELS,
            ),
            deployment_failure: counter(
                &registry,
                "litellm_deployment_failure_responses_total",
                "Failed responses per deployment",
                DEPLOYMENT_FAILURE_LABELS,
            ),
            deployment_total: counter(
                &registry,
                "litellm_deployment_total_requests_total",
                "Requests per deployment",
                DEPLOYMENT_LABELS,
            ),
            spend: float_counter(
                &registry,
                "litellm_spend_metric_total",
                "Spend (USD) from each response's usage and the deployment's prices",
                SPEND_LABELS,
            ),
            in_flight,
            open_connections,
            closed_connections,
            cache: [
                ("litellm_cache_hits_metric_total", "Response cache hits"),
                ("litellm_cache_misses_metric_total", "Response cache misses"),
                (
                    "litellm_cached_tokens_metric_total",
                    "Tokens of answers served from the response cache",
                ),
            ]
            .map(|(name, help)| counter(&registry, name, help, cache::CACHE_LABELS)),
            overflowed,
            router: RouterMetrics::register(&registry),
            label_sets: parking_lot::Mutex::new(Default::default()),
            max_label_sets,
            client_ips: parking_lot::Mutex::new(Default::default()),
            user_agents: parking_lot::Mutex::new(Default::default()),
            overflow_warned: Default::default(),
            registry,
        }
    }

    /// Whether a new label combination (its key's hash) may have series of its own; once
    /// `max_label_sets` are taken, new ones are folded into the overflow combination.
    fn admit_label_set(&self, l: &RequestLabels<'_>) -> bool {
        let mut sets = self.label_sets.lock();
        // Who and what: the labels that name an owner or a model. The status, the error class,
        // the client's address and agent (bounded on their own) do not count.
        let hash = sets.hasher().hash_one([
            l.end_user,
            l.hashed_api_key,
            l.api_key_alias,
            l.team,
            l.team_alias,
            l.user,
            l.user_email,
            l.requested_model,
            l.route,
            l.model_id,
            l.model,
            l.model_group,
            l.api_provider,
            l.api_base,
            l.litellm_model_name,
        ]);
        if sets.contains(&hash) {
            return true;
        }
        if sets.len() >= self.max_label_sets {
            if !self.overflow_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    limit = self.max_label_sets,
                    "metrics: the limit of distinct label combinations is reached; new ones are recorded with every label \"overflow\" (sluice_settings.metrics_max_label_sets)"
                );
            }
            return false;
        }
        sets.insert(hash);
        true
    }

    /// The exposition text.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!("encoding metrics failed: {e}");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Label values shared by the per-request metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestLabels<'a> {
    pub end_user: &'a str,
    pub hashed_api_key: &'a str,
    pub api_key_alias: &'a str,
    /// The key's team id and alias, and its user's id and email (empty for the master key).
    pub team: &'a str,
    pub team_alias: &'a str,
    pub user: &'a str,
    pub user_email: &'a str,
    pub requested_model: &'a str,
    pub route: &'a str,
    pub client_ip: &'a str,
    pub user_agent: &'a str,
    pub model_id: &'a str,
    /// The provider model (`litellm_params.model` without its prefix).
    pub model: &'a str,
    pub model_group: &'a str,
    pub api_provider: &'a str,
    pub api_base: &'a str,
    /// `litellm_params.model` as configured (with prefix).
    pub litellm_model_name: &'a str,
}

impl RequestLabels<'_> {
    /// The overflow combination: every label [`OVERFLOW_LABEL`] but the route.
    fn folded(&self) -> RequestLabels<'_> {
        let o = OVERFLOW_LABEL;
        RequestLabels {
            end_user: o,
            hashed_api_key: o,
            api_key_alias: o,
            team: o,
            team_alias: o,
            user: o,
            user_email: o,
            requested_model: o,
            route: self.route,
            client_ip: o,
            user_agent: o,
            model_id: o,
            model: o,
            model_group: o,
            api_provider: o,
            api_base: o,
            litellm_model_name: o,
        }
    }
}

/// What happened to one request, for [`Metrics::record`].
#[derive(Debug, Default)]
pub struct RequestOutcome {
    /// Status sent to the client.
    pub status: u16,
    /// The failure, as (status, `Openai.RateLimitError`-style class), also for a stream that
    /// failed after its 200 went out.
    pub failure: Option<(u16, &'static str)>,
    pub total_seconds: f64,
    /// Upstream call time when a deployment was called.
    pub upstream_seconds: Option<f64>,
    pub ttft_seconds: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The response's cost (USD) from its usage; 0 when unknown.
    pub spend: f64,
    /// Whether the response came from a deployment (deployment metrics apply).
    pub reached_deployment: bool,
}

/// The metric series one kind of request updates, resolved once per label combination.
struct Handles {
    total: IntCounter,
    failed: Option<IntCounter>,
    request_latency: Histogram,
    api_latency: Option<Histogram>,
    time_to_first_token: Option<Histogram>,
    overhead: Option<Histogram>,
    deployment_total: Option<IntCounter>,
    deployment_outcome: Option<IntCounter>,
    tokens: Option<[IntCounter; 3]>,
    spend: Option<Counter>,
    /// These are the overflow combination's series.
    overflow: bool,
}

trait Overflowing {
    fn overflowing(self) -> Self;
}

impl Overflowing for Rc<Handles> {
    fn overflowing(mut self) -> Self {
        if let Some(h) = Rc::get_mut(&mut self) {
            h.overflow = true;
        }
        self
    }
}

/// Label combinations cached per thread before the cache is emptied (bounds memory when labels
/// such as `client_ip` vary a lot).
const HANDLE_CACHE_LIMIT: usize = 4096;

/// Label key → series handles.
type HandleMap = HashMap<String, Rc<Handles>, ahash::RandomState>;

thread_local! {
    /// Per-thread cache: label key → series handles. Saves hashing 13 label values for each of
    /// the ~10 series a request touches (`with_label_values` does that on every call).
    static HANDLE_CACHE: RefCell<(String, HandleMap)> =
        RefCell::new((String::with_capacity(256), HashMap::default()));
}

static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(0);

impl Metrics {
    /// Records one finished request.
    pub fn record(&self, l: &RequestLabels<'_>, o: &RequestOutcome) {
        let handles = HANDLE_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let (key, map) = &mut *cache;
            key.clear();
            push_u64(key, self.id);
            key.push('\0');
            push_u64(key, u64::from(o.status));
            key.push(if o.reached_deployment { 'D' } else { 'd' });
            key.push(if o.ttft_seconds.is_some() { 'T' } else { 't' });
            if let Some((failed_status, class)) = o.failure {
                push_u64(key, u64::from(failed_status));
                key.push_str(class);
            }
            for part in [
                l.end_user,
                l.hashed_api_key,
                l.api_key_alias,
                l.team,
                l.team_alias,
                l.user,
                l.user_email,
                l.requested_model,
                l.route,
                l.client_ip,
                l.user_agent,
                l.model_id,
                l.model,
                l.model_group,
                l.api_provider,
                l.api_base,
                l.litellm_model_name,
            ] {
                key.push('\0');
                key.push_str(part);
            }
            if let Some(h) = map.get(key.as_str()) {
                return h.clone();
            }
            if map.len() >= HANDLE_CACHE_LIMIT {
                map.clear();
            }
            let labels = RequestLabels {
                client_ip: bounded(&self.client_ips, l.client_ip, MAX_CLIENT_IPS),
                user_agent: bounded(&self.user_agents, l.user_agent, MAX_USER_AGENTS),
                ..*l
            };
            let h = if self.admit_label_set(&labels) {
                Rc::new(self.handles(&labels, o))
            } else {
                Rc::new(self.handles(&labels.folded(), o)).overflowing()
            };
            map.insert(key.clone(), h.clone());
            h
        });
        if handles.overflow {
            self.overflowed.inc();
        }
        handles.total.inc();
        if let Some(failed) = &handles.failed {
            failed.inc();
        }
        handles.request_latency.observe(o.total_seconds);
        if let (Some(h), Some(upstream)) = (&handles.api_latency, o.upstream_seconds) {
            h.observe(upstream);
        }
        if let (Some(h), Some(upstream)) = (&handles.overhead, o.upstream_seconds) {
            h.observe((o.total_seconds - upstream).max(0.0));
        }
        if let (Some(h), Some(ttft)) = (&handles.time_to_first_token, o.ttft_seconds) {
            h.observe(ttft);
        }
        if let Some(c) = &handles.deployment_total {
            c.inc();
        }
        if let Some(c) = &handles.deployment_outcome {
            c.inc();
        }
        if let Some([input, output, total]) = &handles.tokens
            && o.prompt_tokens + o.completion_tokens > 0
        {
            input.inc_by(o.prompt_tokens);
            output.inc_by(o.completion_tokens);
            total.inc_by(o.prompt_tokens + o.completion_tokens);
        }
        if let Some(c) = &handles.spend
            && o.spend > 0.0
        {
            c.inc_by(o.spend);
        }
    }

    fn handles(&self, l: &RequestLabels<'_>, o: &RequestOutcome) -> Handles {
        let status = status_text(o.status);
        let total = self.total_requests.with_label_values(&[
            l.end_user,
            l.hashed_api_key,
            l.api_key_alias,
            l.requested_model,
            l.team,
            l.team_alias,
            l.user,
            status,
            l.user_email,
            l.route,
            l.client_ip,
            l.user_agent,
            l.model_id,
        ]);
        let failed = o.failure.map(|(failed_status, class)| {
            self.failed_requests.with_label_values(&[
                l.end_user,
                l.hashed_api_key,
                l.api_key_alias,
                l.requested_model,
                l.team,
                l.team_alias,
                l.user,
                l.user_email,
                status_text(failed_status),
                class,
                l.route,
                l.client_ip,
                l.user_agent,
                l.model_id,
            ])
        });
        let request_latency = self.request_latency.with_label_values(&[
            l.end_user,
            l.hashed_api_key,
            l.api_key_alias,
            l.requested_model,
            l.team,
            l.team_alias,
            l.user,
            l.model,
            l.model_id,
        ]);
        let mut handles = Handles {
            total,
            failed,
            request_latency,
            api_latency: None,
            time_to_first_token: None,
            overhead: None,
            deployment_total: None,
            deployment_outcome: None,
            tokens: None,
            spend: None,
            overflow: false,
        };
        if !o.reached_deployment {
            return handles;
        }
        let api = [
            l.model,
            l.hashed_api_key,
            l.api_key_alias,
            l.team,
            l.team_alias,
            l.requested_model,
            l.end_user,
            l.user,
            l.model_id,
        ];
        handles.api_latency = Some(self.api_latency.with_label_values(&api));
        handles.overhead = Some(self.overhead_latency.with_label_values(&[
            l.model_group,
            l.api_provider,
            l.api_base,
            l.litellm_model_name,
            l.hashed_api_key,
            l.api_key_alias,
            l.model_id,
        ]));
        if o.ttft_seconds.is_some() {
            handles.time_to_first_token = Some(self.time_to_first_token.with_label_values(&api));
        }
        let deployment = [
            l.requested_model,
            l.litellm_model_name,
            l.model_id,
            l.api_base,
            l.api_provider,
            l.hashed_api_key,
            l.api_key_alias,
            l.team,
            l.team_alias,
            l.client_ip,
            l.user_agent,
        ];
        handles.deployment_total = Some(self.deployment_total.with_label_values(&deployment));
        handles.deployment_outcome = Some(match o.failure {
            None => self.deployment_success.with_label_values(&deployment),
            Some((failed_status, class)) => self.deployment_failure.with_label_values(&[
                l.requested_model,
                l.litellm_model_name,
                l.model_id,
                l.api_base,
                l.api_provider,
                status_text(failed_status),
                class,
                l.hashed_api_key,
                l.api_key_alias,
                l.team,
                l.team_alias,
                l.client_ip,
                l.user_agent,
            ]),
        });
        let tokens = [
            l.end_user,
            l.hashed_api_key,
            l.api_key_alias,
            l.model,
            l.team,
            l.team_alias,
            l.user,
            l.user_email,
            l.requested_model,
            l.model_id,
        ];
        handles.tokens = Some([
            self.input_tokens.with_label_values(&tokens),
            self.output_tokens.with_label_values(&tokens),
            self.total_tokens.with_label_values(&tokens),
        ]);
        handles.spend = Some(self.spend.with_label_values(&[
            l.end_user,
            l.hashed_api_key,
            l.api_key_alias,
            l.model,
            l.team,
            l.team_alias,
            l.user,
        ]));
        handles
    }
}

/// Status codes as static strings (no allocation per request).
fn status_text(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        499 => "499",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_litellm_names_labels_and_buckets() {
        let m = Metrics::new();
        let labels = RequestLabels {
            requested_model: "gpt-4o",
            route: "/chat/completions",
            model_id: "id-1",
            model: "gpt-4o-mini",
            model_group: "gpt-4o",
            api_provider: "openai",
            api_base: "http://127.0.0.1:1/v1",
            litellm_model_name: "openai/gpt-4o-mini",
            ..Default::default()
        };
        m.record(
            &labels,
            &RequestOutcome {
                status: 200,
                total_seconds: 0.01,
                upstream_seconds: Some(0.009),
                ttft_seconds: Some(0.002),
                prompt_tokens: 3,
                completion_tokens: 4,
                reached_deployment: true,
                ..Default::default()
            },
        );
        m.record(
            &labels,
            &RequestOutcome {
                status: 429,
                failure: Some((429, "Openai.RateLimitError")),
                total_seconds: 0.01,
                upstream_seconds: Some(0.009),
                reached_deployment: true,
                ..Default::default()
            },
        );
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("litellm_proxy_total_requests_metric_total{"),
            "{text}"
        );
        assert!(text.contains(r#"status_code="429""#));
        assert!(text.contains(r#"exception_class="Openai.RateLimitError""#));
        assert!(text.contains("litellm_llm_api_time_to_first_token_metric_bucket{"));
        assert!(text.contains(r#"le="0.00625""#));
        assert!(text.contains(r#"le="300""#));
        assert!(text.contains("litellm_total_tokens_metric_total{"));
        let total_line = text
            .lines()
            .find(|l| l.starts_with("litellm_total_tokens_metric_total{"))
            .unwrap();
        assert!(total_line.ends_with(" 7"), "{total_line}");
        assert!(text.contains("litellm_overhead_latency_metric_count{"));
        assert!(text.contains("litellm_deployment_failure_responses_total{"));
    }
}
