//! The Pingora adapter: `Gateway` implements `ProxyHttp`, and its hooks delegate: policy lives
//! in the filters crate, `management` (admission, settlement), `listings` (local answers) and
//! the forwarder (`forward`, `attempt`, `deliver`).
//!
//! ```text
//! Pingora phase          Sluice
//! ─────────────────────  ──────────────────────────────────────────────────────────────
//! (accept)               downstream.rs: connection limit, HTTP/2 detection, header deadlines
//! new_ctx                Ctx (counts the request in flight until it drops)
//! early_request_filter   request id, start time
//! request_filter         endpoint ─► pre-body filters (auth) ─► local answers (health,
//!                        models, metrics: listings) or admin API (admin) or: read body
//!                        (bounded) ─► parse ─► post-body filters (route) ─► admission
//!                        (management::admission) ─► forward::forward ─► Ok(true)
//! upstream_peer          never called: the forwarder drives the upstream leg itself
//! logging                metrics, access log, settlement (management::admission::settle)
//! ```

pub mod attempt;
pub mod body;
pub mod cached;
pub mod ctx;
pub mod deliver;
pub mod forward;
mod group;
pub mod header_read;
pub mod headers;
mod mock_response;
pub mod pass_through;
mod record;
pub mod respond;
pub mod responses;
mod upload;

use std::sync::Arc;

use async_trait::async_trait;
use filters::request::RequestView;
use filters::{ApiError, Endpoint, Flow, Incoming, RequestCx};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::admin;
use crate::app::App;
use crate::listings;
use crate::management::{Management, identity};
use ctx::{Ctx, ModelLabel, RequestRecord};

/// Bodies of rejected requests up to this size are drained so the connection can be reused.
const DRAIN_LIMIT: usize = 64 * 1024;

/// The gateway service.
pub struct Gateway {
    pub app: Arc<App>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        // Pingora calls this once the request header is read: the connection's header
        // deadline (downstream.rs) no longer applies.
        header_read::mark();
        Ctx::new(self.app.track_request())
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        // `ctx.started` is set by `new_ctx`, which Pingora calls once the request header is in.
        ctx.request_id = request_id(session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        handle(&self.app, session, ctx).await;
        if ctx.upload.is_some_and(|u| u.remaining > 0) {
            // An upload answered before its file was read (refused, or failed before sending):
            // the rest of its body is still on the connection, which cannot take another request.
            session.set_keepalive(None);
        }
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // request_filter always answers (forwarder mode); Pingora requires the hook anyway.
        Error::e_explain(
            ErrorType::InternalError,
            "upstream_peer is not used in forwarder mode",
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| ip_text(a.ip()))
            .unwrap_or_default();
        // The clock, the deployment and the usage's cost, read once for the metrics, the
        // access log and the spend row. A whole response's cost was computed for its
        // x-litellm-response-cost header; a stream's usage arrives at its end.
        let deployment = ctx
            .record
            .deployment
            .as_deref()
            .map(|d| self.app.config.deployment(d.index));
        let price = deployment.and_then(|d| d.price.as_ref());
        let cost = ctx.record.cost.unwrap_or_else(|| {
            ctx.record
                .usage
                .map_or(0.0, |u| crate::management::cost::cost_of(&u, price))
        });
        let finished = Finished {
            total: ctx.started.elapsed(),
            at: std::time::SystemTime::now(),
            cost,
            deployment,
        };
        record::record(&self.app, session, ctx, &client_ip, &finished);
        // Last use of the request id and the address: the spend-log row takes them.
        let booked = settle(&self.app, ctx, client_ip, &finished);
        if let Some(booked) = booked {
            // Keep this connection's next request until the shared ledger has this one (a
            // bounded wait: a slow Redis delays the connection, never loses the settle). A
            // little longer than the settle's own Redis timeout, so that when Redis hangs the
            // settle has closed the outage gate before the next request is read: with equal
            // bounds the wait could end first and the next request wait a second timeout.
            let bound = crate::management::redis_ledger::REDIS_TIMEOUT
                + std::time::Duration::from_millis(100);
            let _ = tokio::time::timeout(bound, booked).await;
        }
    }
}

/// An address as text; IPv4 (the common case) without the fmt machinery, once per request.
fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                crate::access_log::push_u64(&mut text, u64::from(octet));
            }
            text
        }
        v6 => v6.to_string(),
    }
}

/// When a request finished: its duration, the wall-clock time and what its usage costs (USD,
/// 0 without usage), read once in `logging`.
struct Finished<'a> {
    total: std::time::Duration,
    at: std::time::SystemTime,
    cost: f64,
    /// The deployment that answered (or was last tried), from the config.
    deployment: Option<&'a crate::config::DeploymentConfig>,
}

/// The client's `x-litellm-call-id` / `x-request-id` when it is a sane token, else a new UUID.
fn request_id(session: &Session) -> String {
    let headers = &session.req_header().headers;
    for name in [&headers::X_LITELLM_CALL_ID, &headers::X_REQUEST_ID] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
            && !v.is_empty()
            && v.len() <= 128
            && v.bytes().all(|b| b.is_ascii_graphic())
        {
            return v.to_string();
        }
    }
    // Encoded without the fmt machinery (it showed up in profiles). Time-ordered (UUIDv7): the
    // request id is the spend-log key, and ids that grow keep inserts into its index at the
    // end instead of on a random page each (with v4 ids, spend logs into a SQLite table of 2M
    // rows cost 79 µs of CPU per request against 45 µs with v7, load benchmark at c64).
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_string()
}

/// The request head as the filters see it (no Pingora type crosses into the filters crate).
fn incoming(head: &pingora::http::RequestHeader) -> Incoming<'_> {
    Incoming {
        method: &head.method,
        path: head.uri.path(),
        query: head.uri.query(),
        headers: &head.headers,
    }
}

/// Everything `request_filter` does.
async fn handle(app: &App, session: &mut Session, ctx: &mut Ctx) {
    let endpoint = {
        let head = session.req_header();
        Endpoint::classify(&head.method, head.uri.path())
    };
    ctx.cx = RequestCx::new(endpoint);

    let flow = app
        .chain
        .run_pre_body(&incoming(session.req_header()), &mut ctx.cx)
        .await;
    if let Flow::Reject(e) = flow {
        discard_body(session).await;
        respond::error(session, ctx, &e).await;
        return;
    }

    match endpoint {
        Endpoint::NotFound => {
            discard_body(session).await;
            let path = session.req_header().uri.path().to_string();
            let e = ApiError::not_found(format!("Route {path} not found"));
            respond::error(session, ctx, &e).await;
        }
        Endpoint::MethodNotAllowed => {
            discard_body(session).await;
            let method = session.req_header().method.to_string();
            let e = ApiError::method_not_allowed(format!(
                "Method {method} is not allowed on this route"
            ));
            respond::error(session, ctx, &e).await;
        }
        Endpoint::HealthLiveness => {
            respond::send(
                session,
                ctx,
                200,
                "application/json",
                &[],
                bytes::Bytes::from_static(listings::LIVENESS),
            )
            .await
        }
        Endpoint::HealthReadiness => {
            let m = app.management.as_ref();
            let (status, body) = listings::readiness(
                &app.config,
                app.is_draining(),
                m.map(|m| m.db_up()),
                m.is_some_and(|m| m.settings.allow_requests_on_db_unavailable),
                m.and_then(|m| m.redis()).map(|_| "redis"),
            );
            respond::send(session, ctx, status, "application/json", &[], body).await
        }
        Endpoint::Metrics => {
            let mut text = app.metrics.render();
            if let Some(m) = &app.management {
                m.gauges.render(&mut text);
            }
            let body = bytes::Bytes::from(text);
            respond::send(session, ctx, 200, "text/plain; version=0.0.4", &[], body).await
        }
        Endpoint::Models
        | Endpoint::ModelRetrieve
        | Endpoint::ModelInfo
        | Endpoint::ModelGroupInfo => {
            let no_groups = Default::default();
            let groups = app
                .management
                .as_ref()
                .map_or(&no_groups, |m| &m.access_groups);
            let header = session.req_header();
            let (body, missing) = {
                let filter = identity::listing_filter(&ctx.cx.caller, groups);
                let visible: Option<listings::Visible<'_>> = filter.as_ref().map(|f| f as _);
                let query = header.uri.query();
                match endpoint {
                    Endpoint::Models => (Some(app.listings.models(visible)), None),
                    Endpoint::ModelRetrieve => {
                        let path = header.uri.path();
                        let raw = path.split_once("/models/").map_or("", |(_, id)| id);
                        let raw = raw.strip_suffix('/').unwrap_or(raw);
                        let id = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
                        let found = app.listings.model(&id, visible);
                        let missing = found.is_none().then(|| id.into_owned());
                        (found, missing)
                    }
                    Endpoint::ModelInfo => (Some(app.listings.model_info(query, visible)), None),
                    _ => (Some(app.listings.model_group_info(query, visible)), None),
                }
            };
            match (body, missing) {
                (Some(body), _) => {
                    respond::send(session, ctx, 200, "application/json", &[], body).await
                }
                (None, id) => {
                    let id = id.unwrap_or_default();
                    let mut e = ApiError::new(
                        http::StatusCode::NOT_FOUND,
                        "invalid_request_error",
                        format!("The model `{id}` does not exist or is not accessible"),
                    )
                    .with_param("model");
                    e.code = Some("model_not_found".into());
                    respond::error(session, ctx, &e).await
                }
            }
        }
        Endpoint::Management => forward::boxed(|| management(app, session, ctx)).await,
        Endpoint::CacheAdmin => {
            let limit = app.config.max_request_body_bytes;
            if let Some(body) = read_body(session, ctx, limit).await {
                forward::boxed(|| cached::admin(app, session, ctx, &body)).await
            }
        }
        Endpoint::ResponseItem | Endpoint::ResponseInputItems => {
            forward::boxed(|| responses::by_id(app, session, ctx)).await
        }
        Endpoint::PassThrough(provider) => {
            forward::boxed(|| pass_through::handle(app, session, ctx, provider)).await
        }
        Endpoint::ChatCompletions
        | Endpoint::Messages
        | Endpoint::Completions
        | Endpoint::Embeddings
        | Endpoint::Responses
        | Endpoint::ImageGenerations
        | Endpoint::AudioSpeech
        | Endpoint::AudioTranscriptions
        | Endpoint::Moderations
        | Endpoint::Rerank => {
            // Boxed: nested async fns store awaited futures twice (rust-lang/rust#62958), so an
            // unboxed chain grew this future to 82 KB, memcpy'd on every request.
            forward::boxed(|| llm_request(app, session, ctx)).await
        }
    }
}

/// An LLM call: read and check the body, route it, forward it.
async fn llm_request(app: &App, session: &mut Session, ctx: &mut Ctx) {
    let limit = app.config.max_request_body_bytes;
    let read = if ctx.cx.endpoint() == Endpoint::AudioTranscriptions {
        // An upload: its file is sent on as it arrives, once the form's `model` is read.
        let content_type = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        body::read_form_head(session, limit, &content_type)
            .await
            .map(|(head, remaining)| {
                ctx.upload = (remaining > 0).then_some(upload::Upload {
                    remaining,
                    started: false,
                    audio_seconds: None,
                });
                head
            })
    } else {
        body::read_bounded(session, limit).await
    };
    let Some(mut body) = body_read(session, ctx, read).await else {
        return;
    };
    // Azure's deployment routes name the model in the path, over the body's (as LiteLLM).
    if let Some((_, model)) = filters::endpoint::deployment_route(session.req_header().uri.path()) {
        let model = percent_encoding::percent_decode_str(model).decode_utf8_lossy();
        match RequestView::with_model_set(&body, &model) {
            Ok(b) => body = b,
            Err(e) => {
                respond::error(session, ctx, &e).await;
                return;
            }
        }
    }
    if ctx.cx.endpoint() == Endpoint::Moderations {
        match moderation(app, session, ctx, body).await {
            Some(b) => body = b,
            None => return,
        }
    }
    // The router's own parameters (`num_retries`, `fallbacks`, ...) are taken out of the body
    // here, before admission (whose reservation covers the fallbacks) and any attempt.
    let headers = &session.req_header().headers;
    let view = if ctx.cx.endpoint() == Endpoint::AudioTranscriptions {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        filters::multipart::form_view(&body, content_type)
    } else {
        RequestView::parse(&body)
    };
    let parsed = view.and_then(|view| forward::RequestOptions::take(headers, body, view));
    let (options, body, view) = match parsed {
        Ok(taken) => taken,
        Err(e) => {
            respond::error(session, ctx, &e).await;
            return;
        }
    };
    if let Some(e) = forward::mock_testing_refused(
        &options,
        &ctx.cx.caller,
        app.config.allow_mock_testing_params,
    ) {
        respond::error(session, ctx, &e).await;
        return;
    }
    let mut options = options;
    if options.mock_response.is_some()
        && !forward::mock_response_allowed(&ctx.cx.caller, app.config.allow_mock_testing_params)
    {
        options.mock_response = None;
    }
    ctx.options = options;
    ctx.record.requested_model = view.model.clone();
    ctx.record.stream = view.stream;
    ctx.cx.view = Some(view);
    let flow = app
        .chain
        .run_post_body(&incoming(session.req_header()), &mut ctx.cx)
        .await;
    if let Flow::Reject(e) = flow {
        respond::error(session, ctx, &e).await;
        return;
    }
    // A body without what the endpoint needs never reaches a provider (or a budget).
    if let (Some(required), Some(view)) = (ctx.cx.endpoint().required(), &ctx.cx.view)
        && let Err(e) = required.check(view)
    {
        respond::error(session, ctx, &e).await;
        return;
    }
    if let Some(plan) = &ctx.cx.plan {
        ctx.record.model_label = match &plan.wildcard_capture {
            Some(capture)
                if app.prices.get(&plan.requested_model).is_none()
                    && app.prices.get(capture).is_none() =>
            {
                ModelLabel::Group(plan.group.clone())
            }
            _ => ModelLabel::Requested,
        };
    }
    if let Err(e) = cached::key_controls(ctx) {
        respond::error(session, ctx, &e).await;
        return;
    }
    if cached::lookup(app, session, ctx, &body).await {
        return;
    }
    let is_responses = ctx.cx.endpoint() == Endpoint::Responses;
    if is_responses && let Err(e) = responses::begin(app, ctx, &body).await {
        respond::error(session, ctx, &e).await;
        return;
    }
    if let Some(m) = &app.management
        && let Err(e) = admit(app, m, ctx, &body).await
    {
        respond::error(session, ctx, &e).await;
        return;
    }
    // Boxed to keep this future small (see `handle`).
    if is_responses {
        forward::boxed(|| forward::forward(app, session, ctx, body.clone())).await;
        responses::finish(app, ctx, &body);
    } else {
        forward::boxed(|| forward::forward(app, session, ctx, body)).await;
        cached::finish(app, ctx);
    }
}

/// `/moderations` as LiteLLM serves it: `general_settings.moderation_model` is the model of
/// every request; a request naming no model group (or no model) goes to OpenAI with the
/// gateway's OpenAI credentials (the `/openai` pass-through route's), as LiteLLM calls OpenAI's
/// default moderation model. `None`: answered here.
async fn moderation(
    app: &App,
    session: &mut Session,
    ctx: &mut Ctx,
    body: bytes::Bytes,
) -> Option<bytes::Bytes> {
    let set = match &app.config.moderation_model {
        Some(model) => RequestView::with_model_set(&body, model),
        None => Ok(body),
    };
    let view = set.and_then(|body| RequestView::parse(&body).map(|view| (body, view)));
    let (body, view) = match view {
        Ok(parsed) => parsed,
        Err(e) => {
            respond::error(session, ctx, &e).await;
            return None;
        }
    };
    let routed = view
        .model
        .as_deref()
        .is_some_and(|m| app.config.router.resolve(m).is_some());
    let provider = filters::endpoint::PassThroughProvider::OpenAi;
    let Some(target) = app
        .config
        .pass_through
        .get(provider)
        .ok()
        .filter(|_| !routed)
    else {
        return Some(body);
    };
    // OPENAI_API_BASE is often given with its `/v1`.
    let path = if target.base.path.ends_with("/v1") {
        "/moderations"
    } else {
        "/v1/moderations"
    };
    if let Some(required) = Endpoint::Moderations.required()
        && let Err(e) = required.check(&view)
    {
        respond::error(session, ctx, &e).await;
        return None;
    }
    ctx.record.requested_model = view.model.clone();
    forward::boxed(|| pass_through::forward(app, session, ctx, provider, path, body)).await;
    None
}

/// Reads the request body up to `limit`; answers 413 above it. `None` when the request is
/// over (answered, or the client went away).
async fn read_body(session: &mut Session, ctx: &mut Ctx, limit: usize) -> Option<bytes::Bytes> {
    let read = body::read_bounded(session, limit).await;
    body_read(session, ctx, read).await
}

/// A body read's outcome: the body, or the error answered (`None`).
async fn body_read(
    session: &mut Session,
    ctx: &mut Ctx,
    read: Result<bytes::Bytes, body::BodyError>,
) -> Option<bytes::Bytes> {
    match read {
        Ok(b) => Some(b),
        Err(body::BodyError::TooLarge(e)) => {
            // The rest of the body is unread: the connection cannot be reused.
            session.set_keepalive(None);
            respond::error(session, ctx, &e).await;
            None
        }
        Err(body::BodyError::Malformed(e)) => {
            session.set_keepalive(None);
            respond::error(session, ctx, &e).await;
            None
        }
        Err(body::BodyError::Client(why)) => {
            tracing::debug!(request_id = %ctx.request_id, "reading the request body failed: {why}");
            ctx.record.client_closed = true;
            session.set_keepalive(None);
            None
        }
    }
}

/// Model access, budgets and rate limits (`management::admission`); the hold is settled in
/// `logging`.
async fn admit(
    app: &App,
    m: &std::sync::Arc<Management>,
    ctx: &mut Ctx,
    body: &bytes::Bytes,
) -> Result<(), ApiError> {
    let (Some(plan), Some(view)) = (ctx.cx.plan.as_ref(), ctx.cx.view.as_ref()) else {
        return Ok(());
    };
    // Retries may go to any deployment of the group, fallbacks to their groups': the
    // reservation covers the dearest.
    let price = |d: &filters::route::Deployment| app.config.deployment(d.index).price.as_ref();
    let mut prices: Vec<_> = plan.candidates.iter().map(|d| price(d)).collect();
    for group in forward::fallback_groups(app, plan, &ctx.options) {
        prices.extend(group.deployments.iter().map(|d| price(d)));
    }
    let (key, endpoint) = (ctx.cx.caller.key(), ctx.cx.endpoint());
    ctx.record.admission =
        forward::boxed(|| m.admit_request(key, plan, view, endpoint, &prices, body)).await?;
    Ok(())
}

/// The management API: body read (bounded), answered on the management runtime.
async fn management(app: &App, session: &mut Session, ctx: &mut Ctx) {
    let Some(m) = app.management.clone() else {
        discard_body(session).await;
        let e = ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "no_db_connection",
            "DB not connected: key management needs general_settings.master_key (and optionally database_url)",
        );
        respond::error(session, ctx, &e).await;
        return;
    };
    let Some(body) = read_body(session, ctx, 1024 * 1024).await else {
        return;
    };
    let head = session.req_header();
    let method = head.method.clone();
    let path = head.uri.path().to_string();
    let query = head.uri.query().map(str::to_string);
    let caller = ctx.cx.caller.clone();
    let answer = m
        .run(move |m| async move {
            admin::handle(
                m,
                admin::Call {
                    method: &method,
                    path: &path,
                    query: query.as_deref(),
                    body: &body,
                    caller: &caller,
                },
            )
            .await
        })
        .await;
    let (status, value) = answer.unwrap_or((
        http::StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::json!({"error": {"message": "management request failed", "type": "internal_server_error", "param": null, "code": "500"}}),
    ));
    let body = bytes::Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
    respond::send(session, ctx, status.as_u16(), "application/json", &[], body).await;
}

/// Books the request's cost on its owners (ledger, spend queue, spend log), from `logging`.
fn settle(
    app: &App,
    ctx: &mut Ctx,
    client_ip: String,
    finished: &Finished<'_>,
) -> Option<tokio::task::JoinHandle<()>> {
    let Some(m) = &app.management else {
        return None;
    };
    let now_ms = crate::clock::ms_at(finished.at);
    // A caller with nothing held (master key, open gateway) still gets its spend-log row
    // when a deployment was chosen.
    let admission = match ctx.record.admission.take() {
        Some(a) => a,
        // A cache hit has its row too (LiteLLM's `cache_hit: True`, no spend).
        None if (ctx.cx.endpoint().is_llm()
            && (ctx.record.deployment.is_some() || ctx.record.cache_hit == Some(true)))
            || ctx.record.pass_through.is_some() =>
        {
            crate::management::Admission::started_at(now_ms - finished.total.as_millis() as i64)
        }
        None => return None,
    };
    let r = &ctx.record;
    let first_token_ms = r
        .time_to_first_token
        .map(|t| admission.started_ms + t.as_millis() as i64);
    let status = r
        .failure
        .map_or(r.client_status(), |(s, _)| s.max(r.client_status()));
    // The provider was asked and may have billed more than the usage shows: the client went
    // away after the request was sent, or a successful answer broke off or lacked usage.
    let answered = r.status != 0 && r.status < 400;
    // A pass-through answer without usage is complete: many of a provider's own routes bill
    // nothing (token counts, file and model listings), and none can be told apart.
    let usage_missing = r.usage.is_none() && r.pass_through.is_none();
    let incomplete = (r.client_closed && r.upstream_started.is_some())
        || (answered && (r.failure.is_some() || usage_missing));
    m.settle(
        admission,
        crate::management::Outcome {
            request_id: std::mem::take(&mut ctx.request_id),
            call_type: ctx.cx.endpoint().call_type(),
            usage: r.usage,
            usage_cost: finished.cost,
            price: finished
                .deployment
                .and_then(|d| d.price.as_ref())
                .or_else(|| r.pass_through.as_ref().and_then(|p| p.price(app))),
            status,
            deployment: r
                .deployment
                .as_ref()
                .or_else(|| r.pass_through.as_ref().map(|p| &p.deployment)),
            client_ip,
            first_token_ms,
            incomplete,
            now_ms,
            routing: routing_metadata(r),
            cache_hit: r.cache_hit == Some(true),
        },
    )
}

/// LiteLLM's spend-log routing fields, after a retry or a fallback: `attempted_retries` and
/// `max_retries` (of the group that served), `attempted_fallbacks`, and `previous_models`,
/// every failed attempt's deployment, status and exception.
fn routing_metadata(r: &RequestRecord) -> Option<serde_json::Map<String, serde_json::Value>> {
    if r.attempts.len() < 2 && r.fallbacks == 0 {
        return None;
    }
    let previous: Vec<serde_json::Value> = r
        .attempts
        .iter()
        .filter(|a| a.class.is_some())
        .map(|a| {
            serde_json::json!({
                "model_id": a.deployment.id,
                "model_group": a.deployment.model_name,
                "status": a.status,
                "exception_class": a.exception,
            })
        })
        .collect();
    let mut m = serde_json::Map::new();
    m.insert("attempted_retries".into(), r.group_retries.into());
    m.insert("max_retries".into(), r.max_retries.into());
    m.insert("attempted_fallbacks".into(), r.fallbacks.into());
    m.insert("previous_models".into(), previous.into());
    Some(m)
}

/// Reads and drops a small unread request body so the connection stays reusable; closes the
/// connection instead when the body is large or unknown.
async fn discard_body(session: &mut Session) {
    let len = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let chunked = session
        .req_header()
        .headers
        .contains_key(http::header::TRANSFER_ENCODING);
    match (len, chunked) {
        (None, false) | (Some(0), false) => {}
        (Some(n), false) if n <= DRAIN_LIMIT => {
            if session.drain_request_body().await.is_err() {
                session.set_keepalive(None);
            }
        }
        _ => session.set_keepalive(None),
    }
}

#[cfg(test)]
mod tests {
    use super::ip_text;

    #[test]
    fn addresses_read_as_std_formats_them() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.1.20.3",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
        ] {
            let ip: std::net::IpAddr = text.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
            assert_eq!(ip_text(ip), text);
        }
    }
}
