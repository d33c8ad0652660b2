//! Delivering an attempt's outcome to the client, inside Pingora's `request_filter`: a
//! successful answer read whole and turned into the client's (`codec::client_body`), or
//! streamed event by event as it arrives (`codec::ClientStream`), or a failed attempt's error.
//! This is where bytes first go to the client; `attempt.rs` decides what succeeded.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use filters::{ApiError, FailureOrigin, exception_class};
use http::header::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::attempt::{Answer, Attempt, Failed, ReadFailure, Reply, UpstreamHead, read_all};
use super::ctx::Ctx;
use super::headers::*;
use super::respond;
use crate::access_log::millis_header;
use crate::providers::codec::{self, ClientBodyError, ClientStream};
use crate::providers::content_encoding::BodyDecoder;

/// What delivering a successful attempt came to.
pub enum Delivery {
    /// The answer went to the client (or the client went away).
    Delivered,
    /// A stream failed before its first event: nothing reached the client, and the failure
    /// can be retried like a failed attempt.
    NotStarted(Box<Failed>),
}

impl Attempt<'_> {
    /// Sends a successful attempt's answer to the client: streamed when the client asked for a
    /// stream and the upstream streams (or its stream is translated), else read whole.
    ///
    /// A stream is committed only once its first event is in: a stream that breaks, times out
    /// or begins with an error event before that comes back as [`Delivery::NotStarted`],
    /// nothing sent, for the router to retry like any failed attempt.
    pub async fn deliver(&self, session: &mut Session, ctx: &mut Ctx, answer: Answer) -> Delivery {
        let Answer {
            mut up,
            head,
            started,
        } = answer;
        let is_sse = head
            .content_type
            .as_ref()
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let delivery =
            if self.request.stream_raw || (self.stream && (is_sse || self.wire.translates())) {
                self.deliver_stream(session, ctx, &mut up, head, started)
                    .await
            } else {
                self.deliver_whole(session, ctx, &mut up, head, started)
                    .await;
                Delivery::Delivered
            };
        match delivery {
            Delivery::Delivered => self.release(up).await,
            Delivery::NotStarted(_) => up.shutdown().await,
        }
        delivery
    }

    /// Sends a failed attempt's error to the client.
    pub async fn deliver_failure(&self, session: &mut Session, ctx: &mut Ctx, failed: Failed) {
        match failed.reply {
            Reply::Upstream { head, body } => {
                ctx.record.failure = Some((
                    failed.status,
                    exception_class(FailureOrigin::Provider, failed.status),
                ));
                write_complete(session, ctx, head.finish(), body).await;
            }
            Reply::Gateway(e) => self.deliver_error(session, ctx, e).await,
        }
    }

    /// Sluice's own error about this deployment (with its routing headers).
    async fn deliver_error(&self, session: &mut Session, ctx: &mut Ctx, mut e: ApiError) {
        e.headers
            .push(("x-litellm-model-id", self.dc.deployment.id.clone()));
        e.headers
            .push(("x-litellm-model-group", self.plan.group.to_string()));
        respond::error(session, ctx, &e).await;
    }

    /// A JSON (or other non-SSE) answer: read whole, turned into the client's, then sent.
    async fn deliver_whole(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        up: &mut HttpSession,
        mut head: UpstreamHead,
        started: Instant,
    ) {
        let max = self.app.config.max_response_body_bytes;
        let read = {
            let mut gone = std::pin::pin!(session.as_downstream_mut().read_body_or_idle(true));
            read_all(up, &mut gone, max, head.decoder.as_mut()).await
        };
        let body = match read {
            Ok(b) => b,
            Err(failure) => {
                ctx.record.upstream_elapsed = Some(started.elapsed());
                match failure {
                    ReadFailure::ClientGone => client_gone(ctx),
                    ReadFailure::Api(e) => self.deliver_error(session, ctx, e).await,
                }
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
        let answer = codec::client_body(
            self.ingress,
            self.wire,
            body,
            upstream_type.starts_with("application/json"),
            &self.decode_options(),
            &self.request,
            &self.upstream_model,
        );
        let answer = match answer {
            Ok(a) => a,
            Err(ClientBodyError::NotJson) => {
                // A success must be the JSON the API promises: a captive portal's or misrouted
                // server's page (or any other non-JSON body) is a failed attempt, not a 200.
                let e = ApiError::bad_gateway(format!(
                    "deployment {} of model group {:?} answered {} with a body that is not a JSON object (Content-Type: {upstream_type})",
                    self.dc.deployment.id,
                    &*self.plan.group,
                    head.status.as_u16()
                ));
                self.deliver_error(session, ctx, e).await;
                return;
            }
            Err(ClientBodyError::Api(e)) => {
                self.deliver_error(session, ctx, e).await;
                return;
            }
        };
        ctx.record.usage = answer.usage;
        if ctx.cache.is_some() && self.ingress == codec::Ingress::OpenAi {
            super::cached::offer(ctx, &answer.body);
        }
        if self.ingress == codec::Ingress::Responses && self.request.method == http::Method::POST {
            ctx.responses_outcome = crate::providers::responses_api::Outcome::of_body(
                &answer.body,
                self.request.responses.is_some(),
            );
        }
        let mut resp = head.client;
        if answer.content_type_is_upstream {
            resp.set(CONTENT_TYPE, upstream_type);
        } else {
            resp.set_static(CONTENT_TYPE, "application/json");
        }
        resp.set_value(CONTENT_LENGTH, HeaderValue::from(answer.body.len()));
        let uploaded = ctx.upload.and_then(|u| u.audio_seconds);
        let cost = self.units_cost(&answer.body, uploaded).or_else(|| {
            let usage = ctx.record.usage.as_ref()?;
            Some(crate::management::cost::cost_of(
                usage,
                self.dc.price.as_ref(),
            ))
        });
        if let Some(cost) = cost {
            // Computed once: `logging` books this figure, the one the client was shown.
            ctx.record.cost = Some(cost);
            resp.set_value(X_LITELLM_RESPONSE_COST, crate::decimal::header_value(cost));
        }
        let total = received - ctx.started;
        resp.set_value(X_LITELLM_RESPONSE_DURATION_MS, millis_header(total));
        resp.set_value(
            X_LITELLM_OVERHEAD_DURATION_MS,
            millis_header(total.saturating_sub(upstream)),
        );
        write_complete(session, ctx, resp.finish(), answer.body).await;
    }

    /// An SSE stream: every complete event goes to the client as soon as it arrives.
    async fn deliver_stream(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        up: &mut HttpSession,
        head: UpstreamHead,
        started: Instant,
    ) -> Delivery {
        let status = head.status.as_u16();
        let max_event = self.app.config.max_stream_event_bytes;
        let mut decoder = head.decoder;
        let mut decoded = Vec::new();
        let mut rewriter = ClientStream::new(
            self.ingress,
            self.wire,
            &self.request,
            self.decode_options(),
        );
        let mut out = BytesMut::with_capacity(4096);
        // A stream that may be cached is assembled from what the client gets.
        let mut assembler = (ctx.cache.is_some() && self.ingress == codec::Ingress::OpenAi)
            .then(crate::cache::StreamAssembler::default);
        // Before anything goes to the client: read until the first event the client gets.
        let not_started = |status: u16, error: ApiError| {
            Delivery::NotStarted(Box::new(Failed {
                status,
                class: crate::providers::translate::classify(&error),
                reply: Reply::Gateway(error),
                retry_after: None,
                may_have_received: true,
                nothing_generated: true,
                elapsed: started.elapsed(),
            }))
        };
        let mut ended = false;
        while out.is_empty() {
            let next = next_chunk(up, session, decoder.as_mut(), &mut decoded, max_event).await;
            match next {
                None => {
                    ctx.record.client_closed = true;
                    up.shutdown().await;
                    return Delivery::Delivered;
                }
                Some(Ok(Some(chunk))) => {
                    if ctx.record.time_to_first_token.is_none() {
                        ctx.record.time_to_first_token = Some(started.elapsed());
                    }
                    rewriter.feed(&chunk, &mut out);
                }
                Some(Ok(None)) => {
                    if let Some(d) = decoder.as_mut() {
                        decoded.clear();
                        let _ = d.finish(&mut decoded);
                        rewriter.feed(&decoded, &mut out);
                    }
                    rewriter.finish(&mut out);
                    ended = true;
                }
                Some(Err(e)) => {
                    let error = if e.etype() == &ErrorType::ReadTimedout {
                        ApiError::timeout(format!(
                            "litellm.Timeout: APITimeoutError - Request timed out. Error_str: deployment {} sent no stream event within {:.1}s",
                            self.dc.deployment.id,
                            self.timeout.as_secs_f64()
                        ))
                    } else {
                        ApiError::bad_gateway(format!(
                            "deployment {}'s stream broke before its first event: {}",
                            self.dc.deployment.id,
                            e.etype().as_str()
                        ))
                    };
                    return not_started(error.status.as_u16(), error);
                }
            }
            if let Some(message) = rewriter.upstream_error() {
                // The provider's stream began with an error (an overloaded Anthropic, a rate
                // limit in an OpenAI-compatible stream): a failed attempt, as LiteLLM reads
                // the first chunk before it answers.
                let message = crate::providers::redact_str(message, self.secrets);
                let error = ApiError::service_unavailable(format!(
                    "deployment {}'s stream began with an error: {message}",
                    self.dc.deployment.id
                ));
                return not_started(503, error);
            }
            if ended {
                break;
            }
        }
        if out.is_empty() {
            let error = ApiError::bad_gateway(format!(
                "deployment {}'s stream ended before its first event",
                self.dc.deployment.id
            ));
            return not_started(502, error);
        }
        let mut resp = head.client;
        match (&head.content_type, self.request.stream_raw) {
            (Some(upstream), true) => resp.set_value(CONTENT_TYPE, upstream.clone()),
            (None, true) => resp.set_static(CONTENT_TYPE, "application/octet-stream"),
            (_, false) => {
                resp.set_static(CONTENT_TYPE, "text/event-stream");
                resp.set_static(CACHE_CONTROL, "no-cache");
            }
        }
        resp.set_static(TRANSFER_ENCODING, "chunked");
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
            return Delivery::Delivered;
        }
        // The first events, and the end when the stream was that short.
        let first = out.split().freeze();
        ctx.record.response_bytes += first.len() as u64;
        if let Some(a) = assembler.as_mut() {
            a.feed(&first);
        }
        if session
            .write_response_body(Some(first), ended)
            .await
            .is_err()
        {
            ctx.record.client_closed = true;
            up.shutdown().await;
            return Delivery::Delivered;
        }
        if ended {
            // The whole stream came in the first read.
            ctx.record.upstream_elapsed = Some(started.elapsed());
            self.stream_ended(ctx, &rewriter, assembler);
            return Delivery::Delivered;
        }
        loop {
            let next = next_chunk(up, session, decoder.as_mut(), &mut decoded, max_event).await;
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
                    if ended {
                        self.done_after_error(&mut out);
                    }
                    let ends_with_output = ended && !out.is_empty();
                    if !out.is_empty() {
                        let mut bytes = out.split().freeze();
                        if rewriter.upstream_error().is_some() {
                            // An error event: the provider may echo the key it was given.
                            bytes = crate::providers::redact(bytes, self.secrets);
                        }
                        ctx.record.response_bytes += bytes.len() as u64;
                        if let Some(a) = assembler.as_mut() {
                            a.feed(&bytes);
                        }
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
                        ctx.record.failure =
                            Some((502, exception_class(FailureOrigin::Provider, 502)));
                        up.shutdown().await;
                        break;
                    }
                }
                Some(Ok(None)) => {
                    if let Some(d) = decoder.as_mut() {
                        decoded.clear();
                        if d.finish(&mut decoded).is_err() {
                            ctx.record.failure =
                                Some((502, exception_class(FailureOrigin::Provider, 502)));
                        }
                        rewriter.feed(&decoded, &mut out);
                    }
                    rewriter.finish(&mut out);
                    let tail = (!out.is_empty()).then(|| out.split().freeze());
                    if let Some(t) = &tail {
                        ctx.record.response_bytes += t.len() as u64;
                        if let Some(a) = assembler.as_mut() {
                            a.feed(t);
                        }
                    }
                    if session.write_response_body(tail, true).await.is_err() {
                        ctx.record.client_closed = true;
                    }
                    if let Some(message) = rewriter.upstream_error() {
                        tracing::debug!(request_id = %ctx.request_id, "upstream sent an error event: {message}");
                        ctx.record.failure =
                            Some((502, exception_class(FailureOrigin::Provider, 502)));
                    }
                    break;
                }
                Some(Err(e)) => {
                    // Mid-stream failure: tell the client in-band (OpenAI convention: an `error`
                    // object on a data line, no [DONE]) and end the response.
                    let error = if e.etype() == &ErrorType::ReadTimedout {
                        ApiError::gateway_timeout(format!(
                            "Timeout: the upstream stream stalled for {:.1}s",
                            self.timeout.as_secs_f64()
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
                        ctx.record.failure = Some((
                            error.status.as_u16(),
                            exception_class(FailureOrigin::Gateway, error.status.as_u16()),
                        ));
                        out.extend_from_slice(&rewriter.error_event(&error));
                        self.done_after_error(&mut out);
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
        self.stream_ended(ctx, &rewriter, assembler);
        Delivery::Delivered
    }
}

impl Attempt<'_> {
    /// What a delivered stream leaves for logging: its usage (or its per-unit cost) and, for
    /// a Responses stream or a cacheable one, what to store.
    fn stream_ended(
        &self,
        ctx: &mut Ctx,
        rewriter: &ClientStream,
        assembled: Option<crate::cache::StreamAssembler>,
    ) {
        ctx.record.usage = rewriter.usage();
        ctx.responses_outcome = rewriter.responses_outcome();
        if let Some(cost) = self.units_cost(b"", ctx.upload.and_then(|u| u.audio_seconds)) {
            ctx.record.cost = Some(cost);
        }
        // A stream that completed (never one cut off or ended by an error) may be cached.
        let complete = !ctx.record.client_closed && ctx.record.failure.is_none();
        if let Some(mut answer) = assembled.and_then(|a| a.completion()).filter(|_| complete) {
            // The usage chunk Sluice asked for on the client's behalf was hidden from it.
            if let (true, Some(u)) = (answer["usage"].is_null(), ctx.record.usage) {
                answer["usage"] = serde_json::json!({"prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens});
            }
            let body = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
            super::cached::offer(ctx, &body);
        }
    }

    /// After an error event that ends an OpenAI stream: `data: [DONE]`, as LiteLLM's proxy
    /// ends a failed stream (clients waiting for it stop reading). Anthropic's stream format
    /// ends at its `error` event.
    fn done_after_error(&self, out: &mut BytesMut) {
        if self.ingress == codec::Ingress::OpenAi
            && !self.request.stream_raw
            && !out.ends_with(b"data: [DONE]\n\n")
        {
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
    }
}

/// The next chunk of an upstream stream, decoded when it is compressed; `None` when the client
/// went away first (read from both sides at once, the upstream first).
async fn next_chunk(
    up: &mut HttpSession,
    session: &mut Session,
    decoder: Option<&mut BodyDecoder>,
    decoded: &mut Vec<u8>,
    max_event: usize,
) -> Option<pingora::Result<Option<Bytes>>> {
    let next = tokio::select! {
        biased;
        r = up.read_response_body() => r,
        _ = session.as_downstream_mut().read_body_or_idle(true) => return None,
    };
    let (Some(d), Ok(Some(chunk))) = (decoder, &next) else {
        return Some(next);
    };
    decoded.clear();
    // One read decodes to at most one event's limit (a decompression bomb stops there; real
    // chunks are far smaller).
    Some(match d.decode(chunk, decoded, max_event) {
        Ok(()) => Ok(Some(Bytes::copy_from_slice(decoded))),
        Err(e) => Err(Error::explain(
            ErrorType::ReadError,
            format!("decompressing the upstream stream: {e}"),
        )),
    })
}

/// The client went away before a response started.
pub fn client_gone(ctx: &mut Ctx) {
    ctx.record.client_closed = true;
    ctx.record.failure = Some((499, exception_class(FailureOrigin::Gateway, 499)));
}

pub(super) async fn write_complete(
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
