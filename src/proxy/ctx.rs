//! Per-request state carried through Pingora's phases (created by `new_ctx`, read by `logging`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use filters::route::Deployment;
use filters::{RequestCx, Usage};

use crate::app::InFlight;
use crate::management::Admission;
use crate::providers::translate::ErrorClass;

/// What happened to the request, for metrics and the access log.
#[derive(Debug, Default)]
pub struct RequestRecord {
    /// Status sent to the client (0 until a response starts).
    pub status: u16,
    /// A failure, as (status, class), also when it happened after a 200 went out (mid-stream).
    pub failure: Option<(u16, &'static str)>,
    /// The `model` the client sent, recorded once the body is parsed.
    pub requested_model: Option<String>,
    /// What the metrics' `requested_model` label says (bounded: configured names only).
    pub model_label: ModelLabel,
    pub deployment: Option<Arc<Deployment>>,
    pub stream: bool,
    pub usage: Option<Usage>,
    /// `usage`'s cost, once computed (a whole response's, for its header); `logging` computes
    /// it when nothing did.
    pub cost: Option<f64>,
    pub upstream_started: Option<Instant>,
    pub upstream_elapsed: Option<Duration>,
    pub time_to_first_token: Option<Duration>,
    /// The client went away before the response was complete.
    pub client_closed: bool,
    pub response_bytes: u64,
    /// Budget/rate-limit hold taken before forwarding, settled in `logging`.
    pub admission: Option<Admission>,
    /// Every attempt made for the request, in order.
    pub attempts: Vec<AttemptRecord>,
    /// The retries the request was allowed, once one attempt had failed.
    pub max_retries: u32,
    /// Retries made in the model group being tried before the current attempt.
    pub group_retries: u32,
    /// Fallback groups tried (the current one included).
    pub fallbacks: u32,
    /// The response cache looked the request up: a hit (`true`) or a miss.
    pub cache_hit: Option<bool>,
    /// A provider pass-through request: where it went and its model's prices.
    pub pass_through: Option<Box<super::pass_through::PassThroughRecord>>,
}

/// One attempt of a request against one deployment: what a router's retry, cooldown and
/// fallback decisions (and the access log) need of it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub deployment: Arc<Deployment>,
    /// The upstream's status, or the gateway's for a failure without one.
    pub status: u16,
    /// The failure's class (`None`: the attempt succeeded).
    pub class: Option<ErrorClass>,
    /// LiteLLM's exception class of the failure, for the metrics ("" on success).
    pub exception: &'static str,
    pub elapsed: Duration,
}

/// The `requested_model` metric label: only names the config (or the price table) knows, so
/// clients sending made-up model names cannot grow `/metrics`.
#[derive(Debug, Default, Clone)]
pub enum ModelLabel {
    /// Not routed (no model, or one no group serves): empty.
    #[default]
    Unrouted,
    /// A configured model group or alias, or a wildcard match the price table knows: the name
    /// the client sent.
    Requested,
    /// Another wildcard match: the wildcard group's name (`gemini/*`).
    Group(Arc<str>),
}

impl RequestRecord {
    /// The status the client saw: 499 when no response was sent (the client went away).
    pub fn client_status(&self) -> u16 {
        if self.status == 0 { 499 } else { self.status }
    }
}

/// Pingora's `CTX` for the gateway.
pub struct Ctx {
    pub request_id: String,
    pub started: Instant,
    pub cx: RequestCx,
    pub record: RequestRecord,
    /// The request's router parameters, taken out of its body.
    pub options: super::forward::RequestOptions,
    /// A Responses API request's state (what it continues, whether to store its answer).
    pub responses: Option<Box<super::responses::ResponsesTurn>>,
    /// A request that missed the response cache: its plan, and the answer to store.
    pub cache: Option<Box<super::cached::CacheState>>,
    /// What a delivered Responses answer leaves to store.
    pub responses_outcome: Option<crate::providers::responses_api::Outcome>,
    /// An upload whose rest is still on the client connection (`upload.rs`).
    pub upload: Option<super::upload::Upload>,
    pub(crate) _in_flight: InFlight,
}

impl Ctx {
    /// A request's context from its start (`in_flight` counts it until it is dropped).
    pub fn new(in_flight: InFlight) -> Ctx {
        Ctx {
            request_id: String::new(),
            started: Instant::now(),
            cx: RequestCx::default(),
            record: RequestRecord::default(),
            options: Default::default(),
            responses: None,
            cache: None,
            responses_outcome: None,
            upload: None,
            _in_flight: in_flight,
        }
    }
}
