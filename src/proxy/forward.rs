//! The forwarder: the upstream leg of an LLM request, driven from inside Pingora's
//! `request_filter` (see `docs/architecture.md` and `forwarder-notes.md` for why: Pingora 0.9
//! cannot forward a pre-read body over 64 KiB).
//!
//! ```text
//! route plan ─► pick a deployment ─► Attempt::prepare ─► Attempt::run ─┬─ Answer ─► deliver
//!   ▲            (routing: not cooling,  (encode for it)  (attempt.rs:   │
//!   │             not tried yet first)                     never writes  └─ Failed
//!   │                                                      to the client)    │
//!   └── retry (routing::may_retry; backoff only when no other deployment) ◄──┤
//!                                                        otherwise deliver_failure
//! ```
//!
//! Nothing reaches the client until an attempt is delivered, so until then every failure can
//! be retried on another deployment (`docs/routing.md`). Each attempt is recorded in
//! `ctx.record.attempts` and reported to the deployments' health (`routing::Health`), which
//! cools failing deployments down. A client that disconnects is noticed at once (a select on
//! the downstream socket), also while waiting to retry, and the upstream connection is closed,
//! which stops the generation and the token spend.

use std::time::Duration;

use bytes::Bytes;
use filters::ApiError;
use filters::request::RequestView;
use filters::route::{ModelGroup, RoutePlan};
use pingora::proxy::Session;

pub(crate) use super::attempt::boxed;
use super::ctx::Ctx;
use super::group::{GroupOutcome, Request, run_group};
use super::respond;
use crate::app::App;
use crate::config::FallbackKind;
use crate::metrics::FallbackTried;
use crate::providers::translate::ErrorClass;
use crate::routing::tags::{self, RequestTags};

/// Forwards the routed request and writes the response; records the outcome in `ctx`.
pub async fn forward(app: &App, session: &mut Session, ctx: &mut Ctx, body: Bytes) {
    let (Some(plan), Some(view)) = (ctx.cx.plan.take(), ctx.cx.view.take()) else {
        respond::error(session, ctx, &ApiError::internal("request was not routed")).await;
        return;
    };
    let options = std::mem::take(&mut ctx.options);
    // Gathered only where tag routing may apply: most requests never need them.
    let tags = if app.tag_routing_configured || options.enable_tag_filtering {
        request_tags(app, &options, &ctx.cx.caller, session.req_header())
    } else {
        RequestTags::default()
    };
    // The conversation a Responses request continues (cloned: the turn stays in `ctx`).
    let history: Vec<serde_json::Value> = ctx
        .responses
        .as_ref()
        .map(|turn| turn.history().to_vec())
        .unwrap_or_default();
    let request = Request {
        view: &view,
        body: &body,
        endpoint: ctx.cx.endpoint(),
        options: &options,
        tags: &tags,
        history: &history,
    };
    let mut plan = plan;
    // The prompt's tokens, counted once when a pre-call check needs them.
    let mut prompt_tokens = None;
    let arranged = arrange(app, &mut plan, &request, &mut prompt_tokens);
    let primary = match (mocked_group_failure(&options.mock, &plan), arranged) {
        // LiteLLM raises these before the group's first attempt, straight to the fallbacks.
        (Some(e), _) | (None, Err(e)) => GroupOutcome::Refused(e),
        (None, Ok(())) => boxed(|| run_group(app, session, ctx, &plan, &request, true)).await,
    };
    let kind = match &primary {
        GroupOutcome::Done => return,
        GroupOutcome::Failed {
            maybe_billed: true, ..
        } => None,
        GroupOutcome::Failed { failed, .. } => Some(fallback_kind(failed.class)),
        GroupOutcome::Refused(e) => Some(fallback_kind(crate::providers::translate::classify(e))),
    };
    let primary_deployment = ctx.record.deployment.clone();
    let (primary_status, primary_class) = match &primary {
        GroupOutcome::Failed { failed, .. } => (
            failed.status,
            ctx.record.attempts.last().map_or("", |a| a.exception),
        ),
        GroupOutcome::Refused(e) => (e.status.as_u16(), "Openai.RateLimitError"),
        GroupOutcome::Done => (0, ""),
    };
    if let Some(kind) = kind.filter(|_| !options.disable_fallbacks) {
        let chain = options.chain(kind, &plan.group, &app.config.fallbacks);
        let mut tried: Vec<&str> = vec![&plan.group];
        for target in chain {
            if ctx.record.fallbacks >= app.config.fallbacks.max_fallbacks {
                break;
            }
            if tried.contains(&target.as_str()) {
                continue;
            }
            tried.push(target);
            let Some(mut fallback) = app.config.router.plan(target, &mut fastrand::Rng::new())
            else {
                continue;
            };
            if arrange(app, &mut fallback, &request, &mut prompt_tokens).is_err() {
                continue;
            }
            ctx.record.fallbacks += 1;
            let outcome = boxed(|| run_group(app, session, ctx, &fallback, &request, false)).await;
            let served = matches!(outcome, GroupOutcome::Done);
            app.metrics.router.fallback(
                &ctx.cx.caller,
                FallbackTried {
                    requested_model: &plan.requested_model,
                    fallback_model: target,
                    exception_status: primary_status,
                    exception_class: primary_class,
                    served,
                },
            );
            if served {
                return;
            }
        }
    }
    // Nothing served it: the primary group's failure, as LiteLLM answers.
    ctx.record.deployment = primary_deployment;
    match primary {
        GroupOutcome::Done => {}
        GroupOutcome::Failed {
            attempt, failed, ..
        } => boxed(|| attempt.deliver_failure(session, ctx, *failed)).await,
        GroupOutcome::Refused(e) => respond::error(session, ctx, &e).await,
    }
}

/// Every model group a request's fallbacks may reach, whatever fails (its own `fallbacks`, or
/// the configured lists of every kind), up to `max_fallbacks` of each list.
pub fn fallback_groups<'a>(
    app: &'a App,
    plan: &'a RoutePlan,
    options: &'a RequestOptions,
) -> impl Iterator<Item = &'a ModelGroup> + 'a {
    let settings = &app.config.fallbacks;
    let lists: Vec<&'a [String]> = if options.disable_fallbacks {
        Vec::new()
    } else {
        [
            FallbackKind::Generic,
            FallbackKind::ContextWindow,
            FallbackKind::ContentPolicy,
        ]
        .into_iter()
        .map(|kind| options.chain(kind, &plan.group, settings))
        .collect()
    };
    lists.into_iter().flat_map(move |list| {
        list.iter()
            .take(settings.max_fallbacks as usize)
            .filter_map(|name| app.config.router.group(name))
    })
}

/// The failure `mock_testing_fallbacks` (and its context-window and content-policy kinds)
/// fakes for the requested group, with LiteLLM's messages.
fn mocked_group_failure(mock: &MockTesting, plan: &RoutePlan) -> Option<ApiError> {
    let group = &*plan.group;
    if mock.fallbacks {
        return Some(ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            format!("This is a mock exception for model={group}, to trigger a fallback."),
        ));
    }
    let (code, message) = if mock.context_fallbacks {
        (
            "context_length_exceeded",
            "This is a mock context window exceeded error",
        )
    } else if mock.content_policy_fallbacks {
        (
            "content_filter",
            "This is a mock content policy violation error",
        )
    } else {
        return None;
    };
    let mut e = ApiError::bad_request(format!(
        "{message} for model={group}, to trigger a fallback."
    ));
    e.code = Some(code.into());
    Some(e)
}

/// The tags that route a request: its own (only those with `tag_routing_prefix`, without
/// it, when one is set), then its key's and team's, without repeats.
fn request_tags(
    app: &App,
    options: &RequestOptions,
    caller: &filters::Caller,
    header: &pingora::http::RequestHeader,
) -> RequestTags {
    let prefix = app.config.retries.tag_routing_prefix.as_deref();
    let own = options.tags.iter().filter_map(|t| match prefix {
        Some(p) => t.strip_prefix(p),
        None => Some(t.as_str()),
    });
    let inherited = caller
        .key()
        .into_iter()
        .flat_map(|k| k.tags.iter().map(String::as_str));
    let mut tags: Vec<String> = Vec::new();
    for t in own.chain(inherited) {
        if !tags.iter().any(|have| have == t) {
            tags.push(t.to_string());
        }
    }
    RequestTags {
        tags,
        user_agent: header
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    }
}

/// Tag routing (`routing::tags`), when the request, its group or the router turns it on:
/// leaves in the plan only the deployments the request's tags allow; none: LiteLLM's 401.
fn filter_by_tags(app: &App, plan: &mut RoutePlan, request: &Request<'_>) -> Result<(), ApiError> {
    let settings = &app.config.retries;
    let tags_of = |d: &filters::route::Deployment| &app.config.deployment(d.index).tags;
    let group_says = plan
        .candidates
        .iter()
        .find_map(|d| tags_of(d).enable_tag_filtering);
    if !request.options.enable_tag_filtering && !group_says.unwrap_or(settings.enable_tag_filtering)
    {
        return Ok(());
    }
    let each: Vec<&crate::config::DeploymentTags> =
        plan.candidates.iter().map(|d| tags_of(d)).collect();
    match tags::select(&each, request.tags, settings.tag_filtering_match_any) {
        Ok(keep) => {
            let mut position = 0;
            plan.candidates.retain(|_| {
                position += 1;
                keep.contains(&(position - 1))
            });
            Ok(())
        }
        Err(tags::NotAllowed) => Err(ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            "auth_error",
            tags::not_allowed_message(&plan.requested_model, &request.tags.tags),
        )),
    }
}

/// Orders a group's plan by the routing strategy (`routing::strategy`), after the pre-call
/// check (`enable_pre_call_checks`) left out the deployments the prompt is too long for.
/// `usage-based-routing` with every deployment over its `rpm`/`tpm` this minute: LiteLLM's
/// 429, `retry-after: 60`; a prompt too long for every deployment: its context-window error.
fn arrange(
    app: &App,
    plan: &mut RoutePlan,
    request: &Request<'_>,
    prompt_tokens: &mut Option<u64>,
) -> Result<(), ApiError> {
    filter_by_tags(app, plan, request)?;
    if app.config.retries.enable_pre_call_checks && request.endpoint.is_llm() {
        let tokens = *prompt_tokens.get_or_insert_with(|| {
            crate::management::cost::request_shape(request.body).prompt_tokens
        });
        let limit = |d: &filters::route::Deployment| {
            app.config
                .deployment(d.index)
                .price
                .as_ref()
                .and_then(|p| p.max_input_tokens)
        };
        let largest = plan.candidates.iter().filter_map(|d| limit(d)).max();
        plan.candidates
            .retain(|d| limit(d).is_none_or(|max| tokens <= max));
        if plan.candidates.is_empty() {
            let mut e = ApiError::bad_request(format!(
                "litellm._pre_call_checks: Context Window exceeded for given call. No models have context window large enough for this call.\nModel={}, Max Input Tokens={}, Got={tokens}",
                plan.requested_model,
                largest.unwrap_or(0)
            ));
            e.code = Some("context_length_exceeded".into());
            return Err(e);
        }
    }
    let stream = request.view.stream;
    let price = |index: usize| {
        let p = app.config.deployment(index).price.as_ref()?;
        Some(p.input_cost_per_token.unwrap_or(5.0) + p.output_cost_per_token.unwrap_or(5.0))
    };
    let strategy = &app.config.retries.strategy;
    if app.health.arrange(
        strategy,
        &mut plan.candidates,
        price,
        stream,
        crate::clock::now_ms(),
    ) {
        return Ok(());
    }
    Err(ApiError::new(
        http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        format!(
            "No deployments available for selected model. Passed model={}. Every deployment is over its rpm or tpm limit this minute",
            plan.requested_model
        ),
    )
    .with_header("retry-after", "60"))
}

/// Which fallback list an error class uses.
fn fallback_kind(class: ErrorClass) -> FallbackKind {
    match class {
        ErrorClass::ContextWindowExceeded => FallbackKind::ContextWindow,
        ErrorClass::ContentPolicy => FallbackKind::ContentPolicy,
        _ => FallbackKind::Generic,
    }
}

/// LiteLLM's router parameters a request may carry. They are the gateway's, never the
/// provider's (OpenAI refuses unknown parameters), so they are taken out of the body before
/// any attempt.
#[derive(Debug, Default)]
pub struct RequestOptions {
    /// `x-litellm-num-retries`, else the body's `num_retries`.
    pub num_retries: Option<u32>,
    /// The body's `fallbacks`: this request's chain, instead of the configured one.
    pub fallbacks: Option<Vec<String>>,
    /// `disable_fallbacks: true`.
    pub disable_fallbacks: bool,
    /// The body's `context_window_fallbacks` and `content_policy_fallbacks`: this request's
    /// lists for those errors, `[{group: [targets]}]` as in the config (a plain list of names
    /// is the `"*"` entry).
    pub context_window_fallbacks: Option<Vec<(String, Vec<String>)>>,
    pub content_policy_fallbacks: Option<Vec<(String, Vec<String>)>>,
    /// `x-litellm-timeout`, else the body's `timeout` or `request_timeout` (seconds): each
    /// attempt's read timeout instead of the deployment's.
    pub timeout: Option<Duration>,
    /// `x-litellm-stream-timeout`, else the body's `stream_timeout`: a stream's wait for its
    /// response header.
    pub stream_timeout: Option<Duration>,
    /// A failure to fake (LiteLLM's `mock_testing_*` parameters): test aids that exercise
    /// retries and fallbacks without a failing provider.
    pub mock: MockTesting,
    /// The request's own tags: the body's `tags` (else `x-litellm-tags`, comma-separated)
    /// and `metadata.tags`. The key's and team's are added when the request is routed.
    pub tags: Vec<String>,
    /// The body's `enable_tag_filtering: true` (a request cannot turn it off).
    pub enable_tag_filtering: bool,
    /// `mock_response`: the answer to give instead of calling the provider (a text, or one
    /// of LiteLLM's error names), when the caller may (`mock_response_allowed`).
    pub mock_response: Option<serde_json::Value>,
    /// The body's response-cache controls (`cache` and `caching`), never sent upstream.
    pub cache: crate::cache::Controls,
}

/// LiteLLM's `mock_testing_*` request parameters (and `mock_timeout`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MockTesting {
    /// `mock_testing_fallbacks`: the requested group fails with a 500 before any attempt.
    pub fallbacks: bool,
    /// `mock_testing_context_fallbacks`: a context-window error instead.
    pub context_fallbacks: bool,
    /// `mock_testing_content_policy_fallbacks`: a content-policy error instead.
    pub content_policy_fallbacks: bool,
    /// `mock_testing_rate_limit_error`: the first attempt fails with a 429 without calling the
    /// provider; the retry does call it.
    pub rate_limit_error: bool,
    /// `mock_timeout`: every attempt waits out its timeout and fails with a 408.
    pub timeout: bool,
}

impl MockTesting {
    fn any(&self) -> bool {
        *self != MockTesting::default()
    }
}

/// Body fields that are router parameters (LiteLLM strips them before calling a provider).
const ROUTER_PARAMS: &[&str] = &[
    "cache",
    "caching",
    "num_retries",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "disable_fallbacks",
    "timeout",
    "request_timeout",
    "stream_timeout",
    "mock_testing_fallbacks",
    "mock_testing_context_fallbacks",
    "mock_testing_content_policy_fallbacks",
    "mock_testing_rate_limit_error",
    "mock_timeout",
    "mock_delay",
    "tags",
    "enable_tag_filtering",
    "mock_response",
    "mock_tool_calls",
];

impl RequestOptions {
    /// Reads the router parameters of the request and returns the body without them. The
    /// common body has none: two substring scans, and the body is used as it is.
    pub fn take(
        headers: &http::HeaderMap,
        body: Bytes,
        view: RequestView,
    ) -> Result<(RequestOptions, Bytes, RequestView), ApiError> {
        let mut options = RequestOptions::default();
        let mut body_tags = false;
        // A form (an audio upload) carries no router parameters: only headers count there.
        let present = !view.form
            && (memchr::memmem::find(&body, b"num_retries\"").is_some()
                || memchr::memmem::find(&body, b"fallbacks\"").is_some()
                || memchr::memmem::find(&body, b"timeout\"").is_some()
                || memchr::memmem::find(&body, b"tags\"").is_some()
                || memchr::memmem::find(&body, b"enable_tag_filtering\"").is_some()
                || memchr::memmem::find(&body, b"\"mock_").is_some()
                // `"cache"` and `"caching"` in one scan.
                || memchr::memmem::find(&body, b"\"cach").is_some());
        let (body, view) = if present {
            let mut map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut found = false;
            // `metadata.tags` route too; `metadata` itself stays in the body.
            if let Some(list) = map
                .get("metadata")
                .and_then(|m| m.get("tags"))
                .and_then(|t| t.as_array())
            {
                options
                    .tags
                    .extend(list.iter().filter_map(|t| Some(t.as_str()?.to_string())));
            }
            for name in ROUTER_PARAMS {
                let Some(value) = map.remove(*name) else {
                    continue;
                };
                found = true;
                match *name {
                    "cache" => options.cache.read_cache(&value),
                    "caching" => options.cache.caching_off = value.as_bool() == Some(false),
                    "num_retries" => {
                        options.num_retries = Some(
                            value
                                .as_u64()
                                .map(|n| n.min(u64::from(u32::MAX)) as u32)
                                .ok_or_else(|| {
                                    ApiError::bad_request(
                                        "num_retries must be a non-negative integer",
                                    )
                                    .with_param("num_retries")
                                })?,
                        );
                    }
                    "fallbacks" => options.fallbacks = Some(fallback_names(&value)?),
                    "disable_fallbacks" => {
                        options.disable_fallbacks = value.as_bool() == Some(true)
                    }
                    "timeout" | "request_timeout" => {
                        options.timeout = options.timeout.or(Some(seconds(&value, name)?));
                    }
                    "stream_timeout" => options.stream_timeout = Some(seconds(&value, name)?),
                    // LiteLLM reads these three with `str_to_bool`; the rate-limit one and
                    // `mock_timeout` only as JSON `true`.
                    "mock_testing_fallbacks" => options.mock.fallbacks = truthy(&value),
                    "mock_testing_context_fallbacks" => {
                        options.mock.context_fallbacks = truthy(&value)
                    }
                    "mock_testing_content_policy_fallbacks" => {
                        options.mock.content_policy_fallbacks = truthy(&value)
                    }
                    "mock_testing_rate_limit_error" => {
                        options.mock.rate_limit_error = value.as_bool() == Some(true)
                    }
                    "mock_timeout" => options.mock.timeout = value.as_bool() == Some(true),
                    "tags" => {
                        let list = value.as_array().ok_or_else(|| {
                            ApiError::bad_request("tags must be a list of strings")
                                .with_param("tags")
                        })?;
                        let own: Vec<String> = list
                            .iter()
                            .filter_map(|t| Some(t.as_str()?.to_string()))
                            .collect();
                        options.tags.splice(0..0, own);
                        body_tags = true;
                    }
                    "enable_tag_filtering" => {
                        options.enable_tag_filtering = value.as_bool() == Some(true)
                    }
                    "mock_response" if !value.is_null() => options.mock_response = Some(value),
                    "context_window_fallbacks" => {
                        options.context_window_fallbacks = Some(fallback_list(&value, name)?)
                    }
                    "content_policy_fallbacks" => {
                        options.content_policy_fallbacks = Some(fallback_list(&value, name)?)
                    }
                    _ => {}
                }
            }
            if found {
                let body = Bytes::from(serde_json::to_vec(&map).unwrap_or_default());
                let view = RequestView::parse(&body)?;
                (body, view)
            } else {
                (body, view)
            }
        } else {
            (body, view)
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        // LiteLLM: the body's `tags` win over the header's.
        if !body_tags && let Some(v) = header("x-litellm-tags") {
            let own: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            options.tags.splice(0..0, own);
        }
        if let Some(n) = header("x-litellm-num-retries").and_then(|v| v.parse::<u32>().ok()) {
            options.num_retries = Some(n);
        }
        for (name, slot) in [
            ("x-litellm-timeout", &mut options.timeout),
            ("x-litellm-stream-timeout", &mut options.stream_timeout),
        ] {
            if let Some(v) = header(name) {
                let value = v
                    .parse::<f64>()
                    .map(serde_json::Value::from)
                    .unwrap_or_default();
                *slot = Some(seconds(&value, name)?);
            }
        }
        Ok((options, body, view))
    }
}

/// LiteLLM's `str_to_bool`: `true`, or a string such as "true" / "1" / "yes".
fn truthy(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
        }
        _ => false,
    }
}

/// Whether a request's `mock_response` is honoured: for the master key and proxy admins, keys
/// whose key or team metadata has `allow_client_mock_response: true`, or every key with
/// `dangerously_allow_mock_testing_request_params`. Otherwise LiteLLM drops it silently, and
/// so does Sluice.
pub fn mock_response_allowed(caller: &filters::Caller, allowed: bool) -> bool {
    allowed
        || match caller {
            filters::Caller::MasterKey | filters::Caller::Open => true,
            filters::Caller::Key(k) => k.is_admin || k.allow_client_mock_response,
            filters::Caller::Unknown => false,
        }
}

/// LiteLLM's refusal of `mock_testing_*` parameters from a key that may not send them.
pub fn mock_testing_refused(
    options: &RequestOptions,
    caller: &filters::Caller,
    allowed: bool,
) -> Option<ApiError> {
    let admin = match caller {
        filters::Caller::MasterKey | filters::Caller::Open => true,
        filters::Caller::Key(k) => k.is_admin,
        filters::Caller::Unknown => false,
    };
    if !options.mock.any() || admin || allowed {
        return None;
    }
    let m = options.mock;
    let names: Vec<&str> = [
        (m.fallbacks, "mock_testing_fallbacks"),
        (m.context_fallbacks, "mock_testing_context_fallbacks"),
        (
            m.content_policy_fallbacks,
            "mock_testing_content_policy_fallbacks",
        ),
        (m.rate_limit_error, "mock_testing_rate_limit_error"),
        (m.timeout, "mock_timeout"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    Some(ApiError::bad_request(format!(
        "Mock testing request params are disabled on this proxy: {}. An admin can enable them by setting `general_settings.dangerously_allow_mock_testing_request_params: true` in config.yaml. This setting cannot be changed from the Admin UI or the API.",
        names.join(", ")
    )))
}

/// A timeout in seconds: a positive number.
fn seconds(value: &serde_json::Value, name: &str) -> Result<Duration, ApiError> {
    value
        .as_f64()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            ApiError::bad_request(format!("{name} must be a positive number of seconds"))
                .with_param(name.to_string())
        })
}

impl RequestOptions {
    /// The fallback chain for a failure of `group`, as LiteLLM picks it: the request's own
    /// `fallbacks` for any error; else, for a context-window or content-policy error, the
    /// request's list of that kind; else the configured lists.
    pub fn chain<'a>(
        &'a self,
        kind: FallbackKind,
        group: &str,
        configured: &'a crate::config::FallbackSettings,
    ) -> &'a [String] {
        if let Some(own) = &self.fallbacks {
            return own;
        }
        let requested = match kind {
            FallbackKind::ContextWindow => self.context_window_fallbacks.as_ref(),
            FallbackKind::ContentPolicy => self.content_policy_fallbacks.as_ref(),
            FallbackKind::Generic => None,
        };
        match requested {
            Some(list) => {
                let own = list.iter().find(|(g, _)| g == group);
                let any = || list.iter().find(|(g, _)| g == "*");
                own.or_else(any).map_or(&[], |(_, t)| t.as_slice())
            }
            None => configured.chain(kind, group),
        }
    }
}

/// A request's `context_window_fallbacks` / `content_policy_fallbacks`: `[{group: [names]}]`,
/// or a plain list of names (for any group).
fn fallback_list(
    value: &serde_json::Value,
    name: &str,
) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "{name} must be a list such as [{{\"gpt-4o\": [\"gpt-4o-mini\"]}}]"
        ))
        .with_param(name.to_string())
    };
    let items = value.as_array().ok_or_else(invalid)?;
    let mut out = Vec::new();
    let mut any = Vec::new();
    for item in items {
        match item {
            serde_json::Value::String(target) => any.push(target.clone()),
            serde_json::Value::Object(m) => {
                for (group, targets) in m {
                    let targets = targets
                        .as_array()
                        .ok_or_else(invalid)?
                        .iter()
                        .map(|t| t.as_str().map(str::to_string).ok_or_else(invalid))
                        .collect::<Result<Vec<_>, _>>()?;
                    out.push((group.clone(), targets));
                }
            }
            _ => return Err(invalid()),
        }
    }
    if !any.is_empty() {
        out.push(("*".to_string(), any));
    }
    Ok(out)
}

/// A request's `fallbacks`: model group names, or LiteLLM's `[{"model": name, ...}]` form.
fn fallback_names(value: &serde_json::Value) -> Result<Vec<String>, ApiError> {
    let invalid = || {
        ApiError::bad_request("fallbacks must be a list of model group names")
            .with_param("fallbacks")
    };
    let items = value.as_array().ok_or_else(invalid)?;
    items
        .iter()
        .map(|item| {
            item.as_str()
                .or_else(|| item.get("model").and_then(|m| m.as_str()))
                .map(str::to_string)
                .ok_or_else(invalid)
        })
        .collect()
}
