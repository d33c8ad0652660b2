//! The forwarder: the upstream leg of an LLM request, driven from inside Pingora's
//! `request_filter` with Pingora's own pooled `Connector` (see `docs/architecture.md` and
//! `forwarder-notes.md` for why: Pingora 0.9 cannot forward a pre-read body over 64 KiB).
//!
//! ```text
//! plan ─► encode ─► pooled session ─► write head + body ─► read head ─┬─ 4xx/5xx: pass the error on
//!                    (write to a pooled connection failed: send again ├─ stream: SSE chunk by chunk
//!                     on a new one; never once it went out whole)     └─ JSON: buffer, rewrite model
//! ```
//!
//! Until the first byte goes to the client nothing is committed, so every failure up to that
//! point becomes a clean OpenAI-style error. A client that disconnects is noticed at once (a
//! select on the downstream socket) and the upstream connection is closed, which stops the
//! generation and the token spend.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use filters::ApiError;
use filters::route::RoutePlan;
use http::header::{HeaderName, HeaderValue};
use pingora::connectors::TransportConnector;
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as Http1Session;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use tokio::io::AsyncWriteExt;

use super::ctx::Ctx;
use super::headers::*;
use super::pool::UpstreamPool;
use super::respond;
use crate::access_log::millis_header;
use crate::app::App;
use crate::config::DeploymentConfig;
use crate::providers::Wire;
use crate::providers::codec::{self, ClientStream, Ingress};
use crate::providers::content_encoding::BodyDecoder;
use crate::providers::messages_api;
use crate::providers::openai::{Target, UpstreamRequest};
use crate::providers::sse::{quote, rewrite_json_response};
use crate::providers::translate::DecodeOptions;
use crate::upstream::{Endpoint, ResolvedPeer};

const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

/// How many times a request is sent again when writing it to a pooled connection fails (the
/// provider had closed it).
const STALE_CONNECTION_RETRIES: usize = 2;
/// Upstream error bodies are passed on up to this size.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// Response headers that describe one hop, never copied from upstream to client.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-type",
    "server",
    "date",
];

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Boxes a future, building it directly in its heap allocation: `Box::pin(make())` builds it on
/// the stack first and copies it, which for futures holding Pingora's I/O futures is kilobytes
/// per request (visible in profiles as memmove).
pub(crate) fn boxed<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

/// What an exchange keeps of the upstream's response header while it reads the body. The
/// session owns the header and reading borrows the session, so this is taken first; cloning the
/// whole header instead (with Pingora's case map) cost about 1.8k instructions a request.
struct UpstreamHead {
    status: http::StatusCode,
    /// The client's response header so far (see [`Exchange::client_header`]).
    client: ResponseHead,
    content_type: Option<HeaderValue>,
    /// The body's `Content-Encoding`, decoded as it is read (`None`: not compressed).
    decoder: Option<BodyDecoder>,
    /// The upstream's headers, kept for error responses only (their decoding reads them).
    error_headers: http::HeaderMap,
}

/// Why an exchange ended without a response being committed.
enum Failure {
    Api(ApiError),
    ClientGone,
}

/// Forwards the routed request and writes the response; records the outcome in `ctx`.
pub async fn forward(app: &App, session: &mut Session, ctx: &mut Ctx, body: Bytes) {
    let (Some(plan), Some(view)) = (ctx.cx.plan.take(), ctx.cx.view.take()) else {
        respond::error(session, ctx, &ApiError::internal("request was not routed")).await;
        return;
    };
    let endpoint = ctx.cx.endpoint();
    ctx.record.requested_model = Some(plan.requested_model.clone());
    ctx.record.stream = view.stream;
    let Some(deployment) = plan.candidates.first().cloned() else {
        let e = ApiError::new(
            http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "No deployments available for selected model. Passed model={}",
                plan.requested_model
            ),
        );
        respond::error(session, ctx, &e).await;
        return;
    };
    ctx.record.deployment = Some(deployment.clone());
    let dc = app.config.deployment(deployment.index);
    let Some(wire) = dc.wire else {
        let e = ApiError::new(
            http::StatusCode::NOT_IMPLEMENTED,
            "not_implemented_error",
            format!(
                "model group {:?} is served by provider {:?}, which Sluice does not support yet",
                &*plan.group, deployment.provider
            ),
        );
        respond::error(session, ctx, &e).await;
        return;
    };
    let (Some(base), Some(upstream)) = (
        app.bases.get(deployment.index).and_then(Option::as_ref),
        app.endpoints.for_deployment(deployment.index),
    ) else {
        respond::error(
            session,
            ctx,
            &ApiError::internal("deployment has no endpoint"),
        )
        .await;
        return;
    };
    let peer = match upstream.peer() {
        Ok(peer) => peer,
        Err(why) => {
            let e = ApiError::bad_gateway(format!(
                "cannot reach deployment {} of model group {:?}: {why}",
                deployment.id, &*plan.group
            ));
            respond::error(session, ctx, &e).await;
            return;
        }
    };
    let upstream_model = deployment.model_for(plan.wildcard_capture.as_deref());
    let target = Target {
        max_output_tokens: dc.price.as_ref().and_then(|p| p.max_output_tokens),
        api_version: dc.api_version.as_deref(),
        aws: dc.aws.as_ref(),
        ..Target::new(
            wire,
            base,
            &upstream_model,
            &app.upstream_headers[deployment.index],
        )
    };
    let ingress = if endpoint == filters::Endpoint::Messages {
        Ingress::Anthropic
    } else {
        Ingress::OpenAi
    };
    let encoded = match ingress {
        Ingress::Anthropic => codec::encode_messages(&target, &view, &body, &dc.params),
        Ingress::OpenAi => codec::encode(
            endpoint,
            &target,
            &view,
            &body,
            app.config.server.inject_stream_usage,
            &dc.params,
        ),
    };
    let mut request = match encoded {
        Ok(r) => r,
        Err(e) => {
            respond::error(session, ctx, &e).await;
            return;
        }
    };
    if wire == Wire::Anthropic {
        // Beta opt-ins the client asked for (prompt caching, extended outputs, ...) reach
        // Anthropic, as LiteLLM forwards them; the deployment's own extra_headers win.
        if let Some(beta) = session.req_header().headers.get("anthropic-beta")
            && !request.headers.contains_key("anthropic-beta")
        {
            request.headers_mut().insert("anthropic-beta", beta.clone());
        }
    }
    let exchange = Exchange {
        fixed_headers: &app.response_headers[deployment.index],
        transport: &app.transport,
        pool: &app.pool,
        peer,
        upstream,
        dc,
        plan: &plan,
        request: &request,
        stream: view.stream,
        wire,
        ingress,
        upstream_model: &upstream_model,
        max_response: app.config.max_response_body_bytes,
        max_event: app.config.max_stream_event_bytes,
        secrets: &app.secrets[deployment.index],
    };
    // The exchange's futures hold Pingora's I/O futures (the H1 response reader alone is ~9 KB);
    // boxing each stage keeps the outer futures small, since nested awaits store futures twice
    // (rust-lang/rust#62958) and an unboxed chain reached 82 KB, memcpy'd per request.
    boxed(|| exchange.run(session, ctx)).await;
}

/// One attempt against one deployment.
struct Exchange<'a> {
    /// The deployment's routing headers, from [`App::response_headers`].
    fixed_headers: &'a [(HeaderName, HeaderValue)],
    transport: &'a TransportConnector,
    pool: &'a UpstreamPool,
    peer: Arc<ResolvedPeer>,
    upstream: &'a Endpoint,
    dc: &'a DeploymentConfig,
    plan: &'a RoutePlan,
    request: &'a UpstreamRequest,
    stream: bool,
    wire: Wire,
    ingress: Ingress,
    /// The model name the deployment was sent.
    upstream_model: &'a str,
    max_response: usize,
    /// The largest stream event the upstream may send.
    max_event: usize,
    /// The deployment's credentials, redacted from relayed error bodies.
    secrets: &'a [Box<str>],
}

impl Exchange<'_> {
    async fn run(&self, session: &mut Session, ctx: &mut Ctx) {
        let started = Instant::now();
        ctx.record.upstream_started = Some(started);
        let mut up = match self.send(session).await {
            Ok(up) => up,
            Err(failure) => {
                ctx.record.upstream_elapsed = Some(started.elapsed());
                self.fail(session, ctx, failure).await;
                return;
            }
        };
        let encoding = up.response_header().map(|h| {
            BodyDecoder::for_encoding(
                h.headers
                    .get(http::header::CONTENT_ENCODING)
                    .map(HeaderValue::as_bytes),
            )
        });
        let decoder = match encoding {
            Some(Ok(decoder)) => decoder,
            Some(Err(name)) => {
                up.shutdown().await;
                let e = ApiError::bad_gateway(format!(
                    "deployment {} of model group {:?} answered with Content-Encoding: {name}, which Sluice cannot decode (it asks for none; gzip, deflate and br are decoded)",
                    self.dc.deployment.id, &*self.plan.group
                ));
                self.fail(session, ctx, Failure::Api(e)).await;
                return;
            }
            None => None,
        };
        let Some(mut head) = up.response_header().map(|h| self.upstream_head(ctx, h)) else {
            up.shutdown().await;
            self.fail(
                session,
                ctx,
                Failure::Api(ApiError::bad_gateway("upstream sent no response header")),
            )
            .await;
            return;
        };
        head.decoder = decoder;
        up.set_read_timeout(Some(self.dc.deployment.timeout));
        let is_sse = head
            .content_type
            .as_ref()
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let status = head.status.as_u16();
        if !(200..300).contains(&status) && !(400..600).contains(&status) {
            // Informational answers were skipped (`read_final_header`); a redirect, a switch
            // of protocols or a made-up status (999) is not an answer an LLM API gives.
            up.shutdown().await;
            ctx.record.upstream_elapsed = Some(started.elapsed());
            let e = ApiError::bad_gateway(format!(
                "deployment {} of model group {:?} answered with HTTP status {status}, which is not a success or an error an LLM API sends",
                self.dc.deployment.id, &*self.plan.group
            ));
            self.fail(session, ctx, Failure::Api(e)).await;
            return;
        }
        let html = head
            .content_type
            .as_ref()
            .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
        if status < 300 && html {
            // No LLM API answers a success with a web page (a captive portal, a login page, a
            // misrouted server): a failed attempt, also for a stream, before anything is sent.
            up.shutdown().await;
            ctx.record.upstream_elapsed = Some(started.elapsed());
            let e = ApiError::bad_gateway(format!(
                "deployment {} of model group {:?} answered {status} with an HTML page (Content-Type: text/html), not the API's JSON",
                self.dc.deployment.id, &*self.plan.group
            ));
            self.fail(session, ctx, Failure::Api(e)).await;
            return;
        }
        if status >= 400 {
            boxed(|| self.pass_error(session, ctx, &mut up, head, started)).await;
        } else if self.stream && (is_sse || self.wire.translates()) {
            self.stream_body(session, ctx, &mut up, head, started).await;
        } else {
            self.buffered_body(session, ctx, &mut up, head, started)
                .await;
        }
        self.release(up).await;
    }

    /// Gets a connection, sends the request and waits for the response header.
    ///
    /// A request is sent again, on a fresh connection, only when the provider cannot have
    /// received all of it: writing it to a pooled connection failed (the provider had closed
    /// it; a pooled connection already found closed is never used, see `pool.rs`). Once the
    /// request went out whole, a connection that breaks before the answer is a failed
    /// attempt, never re-sent: the provider may have received and billed it.
    ///
    /// Returns the future boxed, built in place: it holds Pingora's H1 response reader (about
    /// 9 KB), and building it on the stack and then boxing it copied that on every request.
    fn send<'a>(&'a self, session: &'a mut Session) -> BoxFuture<'a, Result<HttpSession, Failure>> {
        boxed(|| async move {
            let header_timeout = match (self.stream, self.dc.deployment.stream_timeout) {
                (true, Some(t)) => t,
                _ => self.dc.deployment.timeout,
            };
            let mut resends = 0;
            let (mut up, reused) = loop {
                let (stream, reused) = match self.pool.take(self.peer.pool_key) {
                    Some(stream) => (stream, true),
                    None => {
                        let stream = self
                            .transport
                            .new_stream(&self.peer.peer)
                            .await
                            .map_err(|e| Failure::Api(self.upstream_error(&e, "connecting to")))?;
                        (stream, false)
                    }
                };
                match self.write_request(stream).await {
                    Ok(up) => break (up, reused),
                    // Not written whole: the provider cannot have the request.
                    Err(_) if reused && resends < STALE_CONNECTION_RETRIES => resends += 1,
                    Err(e) => {
                        return Err(Failure::Api(
                            self.upstream_error(&e, "sending the request to"),
                        ));
                    }
                }
            };
            up.set_read_timeout(Some(header_timeout));
            let read = tokio::select! {
                biased;
                r = read_final_header(&mut up) => r.map_err(Some),
                _ = session.as_downstream_mut().read_body_or_idle(true) => Err(None),
            };
            let e = match read {
                Ok(()) => return Ok(up),
                Err(e) => {
                    up.shutdown().await;
                    e
                }
            };
            let Some(e) = e else {
                return Err(Failure::ClientGone);
            };
            if e.etype() == &ErrorType::ReadTimedout {
                return Err(Failure::Api(ApiError::gateway_timeout(format!(
                    "Timeout: deployment {} of model group {:?} sent no response within {:.1}s",
                    self.dc.deployment.id,
                    &*self.plan.group,
                    header_timeout.as_secs_f64()
                ))));
            }
            let mut error = self.upstream_error(&e, "waiting for the response of");
            if reused {
                error.message.push_str(
                    " (the connection was kept alive and broke after the request was sent; it was not sent again, since the provider may have received it)",
                );
            }
            Err(Failure::Api(error))
        })
    }

    /// Sends the request on `stream`: the head and the body in one vectored write (see
    /// [`request_wire_head`]), then an HTTP/1.1 session on the same stream reads the response.
    /// Deployments' peers offer only HTTP/1.1 (`upstream.rs`). On error the connection is closed.
    async fn write_request(&self, mut stream: Stream) -> pingora::Result<HttpSession> {
        let Some(head) = request_wire_head(
            &self.request.method,
            &self.request.target,
            &self.upstream.host_header,
            &self.request.headers,
            self.request.accept,
            self.request.body.len(),
            USER_AGENT,
        ) else {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "upstream request target or host is not valid in an HTTP/1.1 request",
            );
        };
        let write = write_head_and_body(&mut stream, &head, &self.request.body);
        match tokio::time::timeout(self.dc.deployment.timeout, write).await {
            Ok(Ok(())) => Ok(HttpSession::H1(Http1Session::new_with_options(
                stream,
                &self.peer.peer,
            ))),
            Ok(Err(e)) => Error::e_because(ErrorType::WriteError, "while writing the request", e),
            Err(_) => Error::e_explain(ErrorType::WriteTimedout, "while writing the request"),
        }
    }

    /// An upstream 4xx/5xx: its status and body go to the client (wrapped in an OpenAI error
    /// when the body is not one already).
    async fn pass_error(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        up: &mut HttpSession,
        mut head: UpstreamHead,
        started: Instant,
    ) {
        let status = head.status.as_u16();
        let body = match read_all(up, session, MAX_ERROR_BODY, head.decoder.as_mut()).await {
            Ok(b) => b,
            Err(Failure::ClientGone) => {
                ctx.record.client_closed = true;
                ctx.record.upstream_elapsed = Some(started.elapsed());
                ctx.record.failure = Some((status, class_of_status(status)));
                return;
            }
            Err(Failure::Api(_)) => Bytes::new(),
        };
        // A provider that echoes the key it was given must not hand it to the client.
        let body = crate::providers::redact(body, self.secrets);
        ctx.record.upstream_elapsed = Some(started.elapsed());
        ctx.record.failure = Some((status, class_of_status(status)));
        let raw_anthropic_error = (self.ingress == Ingress::Anthropic
            && self.wire == Wire::Anthropic
            && serde_json::from_slice::<serde_json::Value>(&body).is_ok())
        .then(|| body.clone());
        let body = if self.wire.translates() {
            codec::decode_error(self.wire, status, &head.error_headers, &body).body()
        } else if is_openai_error(&body) {
            body
        } else {
            let text = String::from_utf8_lossy(&body);
            let text: String = text.trim().chars().take(2000).collect();
            let message = if text.is_empty() {
                format!("upstream deployment answered {status} with an empty body")
            } else {
                format!("upstream deployment answered {status}: {text}")
            };
            let kind = match status {
                401 | 403 => "auth_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                s if s >= 500 => "api_error",
                _ => "invalid_request_error",
            };
            ApiError::new(head.status, kind, message).body()
        };
        let body = match (self.ingress, self.wire) {
            (Ingress::OpenAi, _) => body,
            // An Anthropic deployment's error is already in the client's format.
            (Ingress::Anthropic, Wire::Anthropic) => raw_anthropic_error.unwrap_or(body),
            (Ingress::Anthropic, _) => messages_api::error_from_openai(status, &body),
        };
        let mut resp = head.client;
        resp.set_static(CONTENT_TYPE, "application/json");
        resp.set_value(CONTENT_LENGTH, HeaderValue::from(body.len()));
        for name in ["retry-after", "retry-after-ms", "x-should-retry"] {
            if let Some(v) = head.error_headers.get(name) {
                resp.set_value(HeaderName::from_static(name), v.clone());
            }
        }
        self.write_complete(session, ctx, resp.finish(), body).await;
    }

    /// A JSON (or other non-SSE) response: read whole, `model` rewritten, then sent.
    async fn buffered_body(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        up: &mut HttpSession,
        mut head: UpstreamHead,
        started: Instant,
    ) {
        let body = match read_all(up, session, self.max_response, head.decoder.as_mut()).await {
            Ok(b) => b,
            Err(failure) => {
                ctx.record.upstream_elapsed = Some(started.elapsed());
                self.fail(session, ctx, failure).await;
                return;
            }
        };
        let received = Instant::now();
        let upstream = received - started;
        ctx.record.upstream_elapsed = Some(upstream);
        let upstream_type = head
            .content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        // A success must be the JSON the API promises: a captive portal's or misrouted
        // server's HTML page (or any other non-JSON body) is a failed attempt, not a 200.
        let status = head.status.as_u16();
        let not_json = || {
            ApiError::bad_gateway(format!(
                "deployment {} of model group {:?} answered {status} with a body that is not a JSON object (Content-Type: {upstream_type})",
                self.dc.deployment.id, &*self.plan.group,
            ))
        };
        let content_type =
            if !self.wire.translates() && upstream_type.starts_with("application/json") {
                upstream_type
            } else {
                "application/json"
            };
        let body = if self.ingress == Ingress::Anthropic && self.wire == Wire::Anthropic {
            // Passthrough: the Messages response with `model` set to the requested name.
            ctx.record.usage = messages_api::usage_of_response(&body);
            match rewrite_json_response(body, &quote(&self.plan.requested_model)) {
                Ok((body, _)) => body,
                Err(_) => {
                    self.fail(session, ctx, Failure::Api(not_json())).await;
                    return;
                }
            }
        } else if self.wire.translates() {
            match codec::decode_body(
                self.wire,
                &body,
                &self.decode_options(),
                self.request,
                self.upstream_model,
            ) {
                Ok((body, usage)) => {
                    ctx.record.usage = Some(usage);
                    body
                }
                Err(e) => {
                    self.fail(session, ctx, Failure::Api(e)).await;
                    return;
                }
            }
        } else {
            match rewrite_json_response(body, &quote(&self.plan.requested_model)) {
                Ok((body, usage)) => {
                    ctx.record.usage = usage;
                    body
                }
                Err(_) => {
                    self.fail(session, ctx, Failure::Api(not_json())).await;
                    return;
                }
            }
        };
        let body = if self.ingress == Ingress::Anthropic && self.wire != Wire::Anthropic {
            match messages_api::to_anthropic_response(&body, &self.plan.requested_model) {
                Ok(body) => body,
                Err(e) => {
                    self.fail(session, ctx, Failure::Api(e)).await;
                    return;
                }
            }
        } else {
            body
        };
        let mut resp = head.client;
        resp.set(CONTENT_TYPE, content_type);
        resp.set_value(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Some(usage) = &ctx.record.usage {
            let cost = crate::management::cost::cost_of(usage, self.dc.price.as_ref());
            resp.set_value(X_LITELLM_RESPONSE_COST, crate::decimal::header_value(cost));
        }
        let total = received - ctx.started;
        resp.set_value(X_LITELLM_RESPONSE_DURATION_MS, millis_header(total));
        resp.set_value(
            X_LITELLM_OVERHEAD_DURATION_MS,
            millis_header(total.saturating_sub(upstream)),
        );
        self.write_complete(session, ctx, resp.finish(), body).await;
    }

    /// An SSE stream: every complete event goes to the client as soon as it arrives.
    async fn stream_body(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        up: &mut HttpSession,
        head: UpstreamHead,
        started: Instant,
    ) {
        let status = head.status.as_u16();
        let mut decoder = head.decoder;
        let mut decoded = Vec::new();
        let mut resp = head.client;
        resp.set_static(CONTENT_TYPE, "text/event-stream");
        resp.set_static(TRANSFER_ENCODING, "chunked");
        resp.set_static(CACHE_CONTROL, "no-cache");
        // Our time so far is everything before the upstream call started: no clock read needed.
        resp.set_value(
            X_LITELLM_OVERHEAD_DURATION_MS,
            millis_header(started.saturating_duration_since(ctx.started)),
        );
        let resp = resp.finish();
        ctx.record.status = status;
        if session
            .write_response_header(Box::new(resp), false)
            .await
            .is_err()
        {
            ctx.record.client_closed = true;
            up.shutdown().await;
            return;
        }
        let mut rewriter =
            ClientStream::new(self.ingress, self.wire, self.request, self.decode_options());
        let mut out = BytesMut::with_capacity(4096);
        loop {
            let mut next = tokio::select! {
                biased;
                r = up.read_response_body() => Some(r),
                _ = session.as_downstream_mut().read_body_or_idle(true) => None,
            };
            // A compressed stream is decoded before the codec sees it.
            if let (Some(d), Some(Ok(Some(chunk)))) = (decoder.as_mut(), &next) {
                decoded.clear();
                // One read decodes to at most one event's limit (a decompression bomb stops
                // there; real chunks are far smaller).
                next = Some(match d.decode(chunk, &mut decoded, self.max_event) {
                    Ok(()) => Ok(Some(Bytes::copy_from_slice(&decoded))),
                    Err(e) => Err(Error::explain(
                        ErrorType::ReadError,
                        format!("decompressing the upstream stream: {e}"),
                    )),
                });
            }
            match next {
                None => {
                    // The client hung up: closing the upstream connection stops the generation.
                    ctx.record.client_closed = true;
                    up.shutdown().await;
                    break;
                }
                Some(Ok(Some(chunk))) => {
                    if ctx.record.time_to_first_token.is_none() {
                        ctx.record.time_to_first_token = Some(started.elapsed());
                    }
                    rewriter.feed(&chunk, &mut out);
                    // After an error event nothing more reaches the client: the stream ends
                    // here (an event over max_stream_event_mb, or the provider's own error),
                    // instead of reading the rest of a broken upstream for nothing.
                    let ended = rewriter.is_closed() && rewriter.upstream_error().is_some();
                    let ends_with_output = ended && !out.is_empty();
                    if !out.is_empty() {
                        let mut bytes = out.split().freeze();
                        if rewriter.upstream_error().is_some() {
                            // An error event: the provider may echo the key it was given.
                            bytes = crate::providers::redact(bytes, self.secrets);
                        }
                        ctx.record.response_bytes += bytes.len() as u64;
                        if session
                            .write_response_body(Some(bytes), ended)
                            .await
                            .is_err()
                        {
                            ctx.record.client_closed = true;
                            up.shutdown().await;
                            break;
                        }
                    }
                    if ended {
                        if !ends_with_output
                            && session.write_response_body(None, true).await.is_err()
                        {
                            ctx.record.client_closed = true;
                        }
                        // The client's response is complete (its last chunk written): its
                        // connection stays reusable; the upstream's is closed unread.
                        ctx.record.failure = Some((502, "Litellm.APIError"));
                        up.shutdown().await;
                        break;
                    }
                }
                Some(Ok(None)) => {
                    if let Some(d) = decoder.as_mut() {
                        decoded.clear();
                        if d.finish(&mut decoded).is_err() {
                            ctx.record.failure = Some((502, "Litellm.APIError"));
                        }
                        rewriter.feed(&decoded, &mut out);
                    }
                    rewriter.finish(&mut out);
                    let tail = (!out.is_empty()).then(|| out.split().freeze());
                    if let Some(t) = &tail {
                        ctx.record.response_bytes += t.len() as u64;
                    }
                    if session.write_response_body(tail, true).await.is_err() {
                        ctx.record.client_closed = true;
                    }
                    if let Some(message) = rewriter.upstream_error() {
                        tracing::debug!(request_id = %ctx.request_id, "upstream sent an error event: {message}");
                        ctx.record.failure = Some((502, "Litellm.APIError"));
                    }
                    break;
                }
                Some(Err(e)) => {
                    // Mid-stream failure: tell the client in-band (OpenAI convention: an `error`
                    // object on a data line, no [DONE]) and end the response.
                    let error = if e.etype() == &ErrorType::ReadTimedout {
                        ApiError::gateway_timeout(format!(
                            "Timeout: the upstream stream stalled for {:.1}s",
                            self.dc.deployment.timeout.as_secs_f64()
                        ))
                    } else {
                        ApiError::bad_gateway(format!(
                            "upstream stream broke: {}",
                            e.etype().as_str()
                        ))
                    };
                    rewriter.abort(&mut out);
                    // A stream that already ended (`[DONE]`, `message_stop`, an error event)
                    // gets nothing more: the failure came after the answer was complete.
                    if !rewriter.is_closed() {
                        ctx.record.failure =
                            Some((error.status.as_u16(), respond::error_class(&error)));
                        out.extend_from_slice(&rewriter.error_event(&error));
                    }
                    let tail = out.split().freeze();
                    ctx.record.response_bytes += tail.len() as u64;
                    let _ = session.write_response_body(Some(tail), true).await;
                    session.set_keepalive(None);
                    up.shutdown().await;
                    break;
                }
            }
        }
        ctx.record.upstream_elapsed = Some(started.elapsed());
        ctx.record.usage = rewriter.usage();
    }

    fn decode_options(&self) -> DecodeOptions {
        DecodeOptions {
            model_override: Some(self.plan.requested_model.to_string()),
            fallback_model: self.plan.requested_model.to_string(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            include_usage: self.request.include_usage,
            max_event_bytes: self.max_event,
        }
    }

    /// What the rest of the exchange needs of the upstream's response header, taken while the
    /// session still holds it.
    fn upstream_head(&self, ctx: &Ctx, upstream: &ResponseHeader) -> UpstreamHead {
        let status = upstream.status;
        UpstreamHead {
            status,
            client: self.client_header(ctx, upstream),
            content_type: upstream.headers.get(CONTENT_TYPE).cloned(),
            decoder: None,
            error_headers: if status.as_u16() >= 400 {
                upstream.headers.clone()
            } else {
                http::HeaderMap::new()
            },
        }
    }

    /// The response header for the client, all but its content type: status, the upstream's
    /// headers as `llm_provider-*` (as LiteLLM does), and the routing headers.
    fn client_header(&self, ctx: &Ctx, upstream: &ResponseHeader) -> ResponseHead {
        // Room for every header the response gets (the map regrows and rehashes otherwise):
        // the upstream's, ours, the key's and the duration and cost headers added later.
        let keyed = ctx.record.admission.as_ref().map_or(0, |a| {
            a.headers.len() + a.key.as_ref().map_or(0, |k| k.limit_headers.len())
        });
        let mut resp = ResponseHead::new(
            upstream.status.as_u16(),
            upstream.headers.len() + self.fixed_headers.len() + keyed + 8,
        );
        for (name, value) in upstream.headers.iter() {
            if HOP_BY_HOP.contains(&name.as_str()) {
                continue;
            }
            if let Some(prefixed) = provider_prefixed(name) {
                resp.append_value(prefixed, value.clone());
            }
        }
        resp.set_request_id(&ctx.request_id);
        for (name, value) in self.fixed_headers {
            resp.set_value(name.clone(), value.clone());
        }
        if let Some(a) = &ctx.record.admission {
            let key_limits = a.key.iter().flat_map(|k| k.limit_headers.iter());
            for (name, value) in key_limits.chain(&a.headers) {
                resp.set_value(name.clone(), value.clone());
            }
        }
        resp
    }

    async fn write_complete(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        resp: ResponseHeader,
        body: Bytes,
    ) {
        ctx.record.status = resp.status.as_u16();
        ctx.record.response_bytes = body.len() as u64;
        if session
            .write_response_header(Box::new(resp), false)
            .await
            .is_err()
            || session.write_response_body(Some(body), true).await.is_err()
        {
            ctx.record.client_closed = true;
        }
    }

    async fn fail(&self, session: &mut Session, ctx: &mut Ctx, failure: Failure) {
        match failure {
            Failure::ClientGone => {
                ctx.record.client_closed = true;
                ctx.record.failure = Some((499, "Litellm.ClientClosedRequest"));
            }
            Failure::Api(e) => {
                let mut e = e;
                e.headers
                    .push(("x-litellm-model-id", self.dc.deployment.id.clone()));
                e.headers
                    .push(("x-litellm-model-group", self.plan.group.to_string()));
                respond::error(session, ctx, &e).await;
            }
        }
    }

    fn upstream_error(&self, e: &Error, doing: &str) -> ApiError {
        let d = &self.dc.deployment;
        let what = match e.etype() {
            ErrorType::ConnectTimedout => "connection timed out".to_string(),
            ErrorType::ConnectRefused => "connection refused".to_string(),
            ErrorType::ConnectNoRoute => "no route to host".to_string(),
            ErrorType::TLSHandshakeFailure | ErrorType::TLSHandshakeTimedout => {
                "TLS handshake failed".to_string()
            }
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error => {
                "the upstream answered with something that is not valid HTTP".to_string()
            }
            other => other.as_str().to_string(),
        };
        if e.etype() == &ErrorType::ConnectTimedout {
            return ApiError::gateway_timeout(format!(
                "Timeout {doing} deployment {} ({}) of model group {:?}: {what}",
                d.id,
                d.public_api_base(),
                &*self.plan.group
            ));
        }
        ApiError::bad_gateway(format!(
            "Error {doing} deployment {} ({}) of model group {:?}: {what}",
            d.id,
            d.public_api_base(),
            &*self.plan.group
        ))
    }

    /// Puts the connection back in the pool when its response was read to the end and both
    /// sides keep it alive; closes it otherwise.
    async fn release(&self, mut up: HttpSession) {
        if !up.response_done() {
            up.shutdown().await;
            return;
        }
        match up {
            HttpSession::H1(mut h1) => {
                // Keep-alive as the upstream's response allows (HTTP version, `Connection`).
                h1.respect_keepalive();
                if let Some(stream) = h1.reuse().await {
                    self.pool.put(self.peer.pool_key, stream);
                }
            }
            mut other => other.shutdown().await,
        }
    }
}

/// Reads the upstream's response header, skipping informational ones (`100 Continue`,
/// `103 Early Hints`: Pingora returns them and expects to be asked again).
async fn read_final_header(up: &mut HttpSession) -> pingora::Result<()> {
    for _ in 0..16 {
        up.read_response_header().await?;
        match up.response_header().map(|h| h.status.as_u16()) {
            Some(100 | 102..=199) => continue,
            _ => return Ok(()),
        }
    }
    Error::e_explain(
        ErrorType::InvalidHTTPHeader,
        "the upstream sent informational responses without end",
    )
}

/// Writes `head` and `body` with as few writes as the socket takes (one, normally) and flushes.
async fn write_head_and_body(stream: &mut Stream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let mut parts = [IoSlice::new(head), IoSlice::new(body)];
    let mut rest = &mut parts[..];
    while !rest.is_empty() {
        let n = stream.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    stream.flush().await
}

/// Reads a whole response body (bounded, after decoding), watching for the client to leave.
async fn read_all(
    up: &mut HttpSession,
    session: &mut Session,
    limit: usize,
    mut decoder: Option<&mut BodyDecoder>,
) -> Result<Bytes, Failure> {
    let too_large = || {
        Failure::Api(ApiError::bad_gateway(format!(
            "upstream response is larger than the limit of {} MiB (general_settings.max_response_size_mb)",
            limit / (1024 * 1024)
        )))
    };
    let undecodable = |e: std::io::Error| {
        Failure::Api(ApiError::bad_gateway(format!(
            "upstream response body could not be decompressed: {e}"
        )))
    };
    let mut body = BytesMut::new();
    let mut decoded = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            r = up.read_response_body() => Some(r),
            _ = session.as_downstream_mut().read_body_or_idle(true) => None,
        };
        match next {
            None => return Err(Failure::ClientGone),
            Some(Ok(Some(chunk))) => {
                let chunk: &[u8] = match decoder.as_deref_mut() {
                    Some(d) => {
                        decoded.clear();
                        let room = limit.saturating_sub(body.len());
                        d.decode(&chunk, &mut decoded, room)
                            .map_err(|_| too_large())?;
                        &decoded
                    }
                    None => &chunk,
                };
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(chunk);
            }
            Some(Ok(None)) => {
                if let Some(d) = decoder {
                    decoded.clear();
                    d.finish(&mut decoded).map_err(undecodable)?;
                    if body.len() + decoded.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&decoded);
                }
                return Ok(body.freeze());
            }
            Some(Err(e)) => {
                let error = if e.etype() == &ErrorType::ReadTimedout {
                    ApiError::gateway_timeout("Timeout: the upstream stopped sending its response")
                } else {
                    ApiError::bad_gateway(format!(
                        "upstream connection failed while reading the response: {}",
                        e.etype().as_str()
                    ))
                };
                return Err(Failure::Api(error));
            }
        }
    }
}

/// Whether a body already is `{"error": ...}`.
fn is_openai_error(body: &[u8]) -> bool {
    filters::json_scan::scan_top_level(body).is_some_and(|f| f.has_error)
        && serde_json::from_slice::<serde_json::Value>(body).is_ok()
}

fn class_of_status(status: u16) -> &'static str {
    match status {
        400 => "Openai.BadRequestError",
        401 => "Openai.AuthenticationError",
        403 => "Openai.PermissionDeniedError",
        404 => "Openai.NotFoundError",
        408 => "Openai.Timeout",
        422 => "Openai.UnprocessableEntityError",
        429 => "Openai.RateLimitError",
        500 => "Openai.InternalServerError",
        502 => "Openai.BadGatewayError",
        503 => "Openai.ServiceUnavailableError",
        504 => "Openai.GatewayTimeoutError",
        s if s >= 500 => "Openai.APIError",
        _ => "Openai.APIStatusError",
    }
}
