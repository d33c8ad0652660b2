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

/// Forwards the routed request and writes the response; records the outcome in `ctx`.
pub async fn forward(app: &App, session: &mut Session, ctx: &mut Ctx, body: Bytes) {
    let (Some(plan), Some(view)) = (ctx.cx.plan.take(), ctx.cx.view.take()) else {
        respond::error(session, ctx, &ApiError::internal("request was not routed")).await;
        return;
    };
    let options = std::mem::take(&mut ctx.options);
    let request = Request {
        view: &view,
        body: &body,
        endpoint: ctx.cx.endpoint(),
        options: &options,
    };
    let primary = boxed(|| run_group(app, session, ctx, &plan, &request)).await;
    let kind = match &primary {
        GroupOutcome::Done => return,
        GroupOutcome::Failed {
            maybe_billed: true, ..
        } => None,
        GroupOutcome::Failed { failed, .. } => Some(fallback_kind(failed.class)),
        GroupOutcome::Refused(_) => Some(FallbackKind::Generic),
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
        let configured = app.config.fallbacks.chain(kind, &plan.group);
        let chain = options.fallbacks.as_deref().unwrap_or(configured);
        let mut tried: Vec<&str> = vec![&plan.group];
        for target in chain {
            if ctx.record.fallbacks >= app.config.fallbacks.max_fallbacks {
                break;
            }
            if tried.contains(&target.as_str()) {
                continue;
            }
            tried.push(target);
            let Some(fallback) = app.config.router.plan(target, &mut fastrand::Rng::new()) else {
                continue;
            };
            ctx.record.fallbacks += 1;
            let outcome = boxed(|| run_group(app, session, ctx, &fallback, &request)).await;
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
    let lists: Vec<&'a [String]> = match (&options.fallbacks, options.disable_fallbacks) {
        (_, true) => Vec::new(),
        (Some(own), false) => vec![own.as_slice()],
        (None, false) => [
            FallbackKind::Generic,
            FallbackKind::ContextWindow,
            FallbackKind::ContentPolicy,
        ]
        .into_iter()
        .map(|kind| settings.chain(kind, &plan.group))
        .collect(),
    };
    lists.into_iter().flat_map(move |list| {
        list.iter()
            .take(settings.max_fallbacks as usize)
            .filter_map(|name| app.config.router.group(name))
    })
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
}

/// Body fields that are router parameters (LiteLLM strips them before calling a provider).
const ROUTER_PARAMS: &[&str] = &[
    "num_retries",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "disable_fallbacks",
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
        let present = memchr::memmem::find(&body, b"num_retries\"").is_some()
            || memchr::memmem::find(&body, b"fallbacks\"").is_some();
        let (body, view) = if present {
            let mut map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut found = false;
            for name in ROUTER_PARAMS {
                let Some(value) = map.remove(*name) else {
                    continue;
                };
                found = true;
                match *name {
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
                    // Per-request context-window and content-policy lists are not supported
                    // yet; they are dropped rather than sent to the provider.
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
        if let Some(n) = headers
            .get("x-litellm-num-retries")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            options.num_retries = Some(n);
        }
        Ok((options, body, view))
    }
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
