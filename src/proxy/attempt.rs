//! One attempt of an LLM request against one deployment, inside Pingora's `request_filter`
//! (forwarder mode, see `docs/architecture.md`): the request encoded for the deployment, sent on
//! a pooled or new connection, and the upstream's answer read as far as it takes to know
//! whether the attempt succeeded. It never writes to the client: it returns the upstream's
//! response head with its connection, ready for `deliver.rs`, or a typed [`Failed`] (status,
//! error class, the client's error body, `retry-after`, whether the provider may have received
//! the request), which a caller delivers or, with a router, retries elsewhere.
//!
//! ```text
//! Attempt::prepare (encode for the deployment)
//!   └─ run ─► pooled or new connection ─► write head + body ─► read head ─┬─ 2xx: Answer
//!             (writing to a pooled connection failed: send again on a     ├─ 4xx/5xx: body read,
//!              new one; never once the request went out whole)            │  mapped: Failed
//!                                                                         └─ broken: Failed
//! ```

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use filters::ApiError;
use filters::route::RoutePlan;
use http::header::{HeaderName, HeaderValue};
use pingora::connectors::TransportConnector;
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as Http1Session;
use pingora::{Error, ErrorType};
use tokio::io::AsyncWriteExt;

use super::ctx::Ctx;
use super::headers::*;
use crate::app::App;
use crate::config::DeploymentConfig;
use crate::providers::Wire;
use crate::providers::codec::{self, Ingress};
use crate::providers::content_encoding::BodyDecoder;
use crate::providers::openai::{Target, UpstreamRequest};
use crate::providers::translate::{DecodeOptions, ErrorClass};
use crate::upstream::pool::UpstreamPool;
use crate::upstream::{Endpoint, ResolvedPeer};

pub(super) const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

/// How many times a request is sent again when writing it to a pooled connection fails (the
/// provider had closed it).
pub(super) const STALE_CONNECTION_RETRIES: usize = 2;
/// Upstream error bodies are read up to this size.
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// Response headers that describe one hop, never copied from upstream to client.
pub(super) const HOP_BY_HOP: &[&str] = &[
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

/// One deployment, ready to be tried: the request encoded for it and everything its attempt
/// and the delivery of its answer need.
pub struct Attempt<'a> {
    pub(super) app: &'a App,
    pub(super) plan: &'a RoutePlan,
    pub(super) dc: &'a DeploymentConfig,
    /// The deployment's routing headers, from [`App::response_headers`].
    pub(super) fixed_headers: &'a [(HeaderName, HeaderValue)],
    pub(super) peer: Arc<ResolvedPeer>,
    pub(super) upstream: &'a Endpoint,
    pub(super) request: UpstreamRequest,
    pub(super) stream: bool,
    pub(super) wire: Wire,
    pub(super) ingress: Ingress,
    pub(super) endpoint: filters::Endpoint,
    /// The model name the deployment is sent.
    pub(super) upstream_model: String,
    /// The deployment's credentials, redacted from relayed error bodies.
    pub(super) secrets: &'a [Box<str>],
    /// The longest wait for each upstream read (the deployment's `timeout`, or the request's).
    pub(super) timeout: Duration,
    /// For streams, the longest wait for the response header (`stream_timeout`).
    pub(super) stream_timeout: Option<Duration>,
}

/// What an attempt keeps of the upstream's response header while it reads the body. The
/// session owns the header and reading borrows the session, so this is taken first; cloning the
/// whole header instead (with Pingora's case map) cost about 1.8k instructions a request.
pub struct UpstreamHead {
    pub status: http::StatusCode,
    /// The client's response header so far (see [`Attempt::client_header`]).
    pub client: ResponseHead,
    pub content_type: Option<HeaderValue>,
    /// The body's `Content-Encoding`, decoded as it is read (`None`: not compressed).
    pub decoder: Option<BodyDecoder>,
}

/// A successful attempt: the upstream answered 2xx with something the API promises; its body
/// is still to be read, by the delivery.
pub struct Answer {
    pub up: HttpSession,
    pub head: UpstreamHead,
    /// When the attempt started (the upstream leg's clock).
    pub started: Instant,
}

/// Why an attempt produced no answer to deliver.
pub enum Failure {
    /// The client went away while the attempt ran (nothing to deliver).
    ClientGone,
    Failed(Box<Failed>),
}

impl Failure {
    /// An attempt that ended in Sluice's own error (no usable answer from the provider).
    pub(super) fn gateway(error: ApiError, may_have_received: bool, started: Instant) -> Failure {
        Failure::Failed(Box::new(Failed {
            status: error.status.as_u16(),
            class: crate::providers::translate::classify(&error),
            reply: Reply::Gateway(error),
            retry_after: None,
            may_have_received,
            nothing_generated: false,
            elapsed: started.elapsed(),
        }))
    }
}

/// A failed attempt, as a router needs it and as the client would get it.
pub struct Failed {
    /// The status the client gets (the provider's for its own errors).
    pub status: u16,
    /// What the failure is (retry, fall back, give up).
    pub class: ErrorClass,
    pub reply: Reply,
    /// The provider's `retry-after` (seconds or an HTTP date, as sent).
    pub retry_after: Option<HeaderValue>,
    /// Whether the provider may have received the whole request (and may bill it).
    pub may_have_received: bool,
    /// A stream that failed before its first event: the provider took the request but
    /// generated nothing the client saw, so it may be sent again (as LiteLLM does).
    pub nothing_generated: bool,
    /// How long the attempt took.
    pub elapsed: Duration,
}

/// What delivering a failed attempt sends.
pub enum Reply {
    /// The provider's error answer, mapped to the client's API: its header (status, the
    /// provider's headers as `llm_provider-*`, routing headers) and body.
    Upstream { head: ResponseHead, body: Bytes },
    /// Sluice's own error (the provider was unreachable, broke, or answered what no API sends).
    Gateway(ApiError),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Boxes a future, building it directly in its heap allocation: `Box::pin(make())` builds it on
/// the stack first and copies it, which for futures holding Pingora's I/O futures is kilobytes
/// per request (visible in profiles as memmove).
pub(crate) fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}

impl<'a> Attempt<'a> {
    /// The attempt of `plan`'s deployment `index` (into `plan.candidates`): the request encoded
    /// for it. `Err` is the client's error (an unsupported provider, a request the provider
    /// cannot take, an endpoint that does not resolve).
    pub(super) fn prepare(
        app: &'a App,
        plan: &'a RoutePlan,
        index: usize,
        request: &super::group::Request<'_>,
        client: &pingora::http::RequestHeader,
    ) -> Result<Attempt<'a>, ApiError> {
        let (view, body, endpoint) = (request.view, request.body, request.endpoint);
        let client_headers = &client.headers;
        let deployment = &plan.candidates[index];
        let dc = app.config.deployment(deployment.index);
        let Some(wire) = dc.wire else {
            return Err(ApiError::new(
                http::StatusCode::NOT_IMPLEMENTED,
                "not_implemented_error",
                format!(
                    "model group {:?} is served by provider {:?}, which Sluice does not support yet",
                    &*plan.group, deployment.provider
                ),
            ));
        };
        let (Some(base), Some(upstream)) = (
            app.bases.get(deployment.index).and_then(Option::as_ref),
            app.endpoints.for_deployment(deployment.index),
        ) else {
            return Err(ApiError::internal("deployment has no endpoint"));
        };
        let peer = upstream.peer().map_err(|why| {
            ApiError::bad_gateway(format!(
                "cannot reach deployment {} of model group {:?}: {why}",
                deployment.id, &*plan.group
            ))
        })?;
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
        let ingress = match endpoint {
            filters::Endpoint::Messages => Ingress::Anthropic,
            filters::Endpoint::Responses
            | filters::Endpoint::ResponseItem
            | filters::Endpoint::ResponseInputItems => Ingress::Responses,
            _ => Ingress::OpenAi,
        };
        // OpenAI and Azure have the Responses API; everyone else gets chat (as in LiteLLM).
        // A conversation kept by Sluice (a translated earlier turn) goes as chat too.
        let native_responses = request.history.is_empty()
            && (wire == Wire::Azure || (wire == Wire::OpenAi && deployment.provider == "openai"));
        let mut request = match ingress {
            Ingress::Anthropic => codec::encode_messages(&target, view, body, &dc.params),
            Ingress::Responses if endpoint != filters::Endpoint::Responses => {
                codec::encode_stored_response_call(&target, native_responses, client)
            }
            Ingress::Responses => {
                let echo = crate::providers::responses_api::Echo::of_request(
                    body,
                    crate::providers::responses_api::new_id("resp"),
                    &plan.requested_model,
                    u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0),
                );
                codec::encode_responses(
                    &target,
                    view,
                    body,
                    &dc.params,
                    native_responses,
                    echo,
                    request.history,
                )
            }
            Ingress::OpenAi => codec::encode(
                endpoint,
                &target,
                view,
                body,
                app.config.server.inject_stream_usage,
                &dc.params,
            ),
        }?;
        if endpoint == filters::Endpoint::AudioTranscriptions
            && let Some(form) = client_headers.get(CONTENT_TYPE)
        {
            // The form's boundary is the client's.
            request.headers_mut().insert(CONTENT_TYPE, form.clone());
        }
        if wire == Wire::Anthropic {
            // Beta opt-ins the client asked for (prompt caching, extended outputs, ...) reach
            // Anthropic, as LiteLLM forwards them; the deployment's own extra_headers win.
            if let Some(beta) = client_headers.get("anthropic-beta")
                && !request.headers.contains_key("anthropic-beta")
            {
                request.headers_mut().insert("anthropic-beta", beta.clone());
            }
        }
        Ok(Attempt {
            app,
            plan,
            dc,
            fixed_headers: &app.response_headers[deployment.index],
            peer,
            upstream,
            request,
            stream: view.stream,
            wire,
            ingress,
            endpoint,
            upstream_model,
            secrets: &app.secrets[deployment.index],
            timeout: dc.deployment.timeout,
            stream_timeout: dc.deployment.stream_timeout,
        })
    }

    pub(super) fn transport(&self) -> &TransportConnector {
        &self.app.transport
    }

    fn pool(&self) -> &UpstreamPool {
        &self.app.pool
    }

    /// What the answer costs when its endpoint is priced per unit (images, audio, rerank;
    /// `management::cost::units_cost`); `answer` is its body (empty for a stream).
    /// `uploaded_seconds` is a streamed upload's audio duration (`upload.rs`).
    pub(super) fn units_cost(&self, answer: &[u8], uploaded_seconds: Option<f64>) -> Option<f64> {
        // Token-priced endpoints (nearly every request) parse nothing here.
        if !crate::management::cost::priced_per_unit(self.endpoint) {
            return None;
        }
        let json = |b: &[u8]| serde_json::from_slice(b).unwrap_or(serde_json::Value::Null);
        let request = if self.request.body.first() == Some(&b'{') {
            json(&self.request.body)
        } else {
            serde_json::Value::Null
        };
        let mut answer = json(answer);
        if self.endpoint == filters::Endpoint::AudioTranscriptions {
            // A text transcription (`response_format=text`, `srt`, `vtt`) reports no duration:
            // the uploaded file's is used, as LiteLLM measures it.
            let reported = answer["usage"]["seconds"].is_number()
                || answer["duration"].is_number()
                || answer["usage"]["type"] == "tokens";
            if !reported
                && let Some(seconds) = uploaded_seconds.or_else(|| self.form_audio_seconds())
            {
                if !answer.is_object() {
                    answer = serde_json::Value::Object(Default::default());
                }
                answer["duration"] = seconds.into();
            }
        }
        crate::management::cost::units_cost(
            self.endpoint,
            &request,
            &answer,
            self.dc.price.as_ref(),
            &self.app.prices,
            &self.dc.deployment.provider,
            &self.upstream_model,
        )
    }

    /// The audio duration of an upload read whole (the form is this attempt's body).
    fn form_audio_seconds(&self) -> Option<f64> {
        let content_type = self.request.headers.get(CONTENT_TYPE)?.to_str().ok()?;
        let boundary = filters::multipart::boundary(content_type)?;
        crate::providers::audio_duration::FormAudio::of_body(&self.request.body, boundary)
    }

    /// The codecs' options for this attempt's answer.
    pub(super) fn decode_options(&self) -> DecodeOptions {
        DecodeOptions {
            model_override: Some(self.plan.requested_model.to_string()),
            fallback_model: self.plan.requested_model.to_string(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            include_usage: self.request.include_usage,
            max_event_bytes: self.app.config.max_stream_event_bytes,
        }
    }

    /// Makes the attempt: the request sent, the answer read as far as it takes to know whether
    /// it succeeded (an error answer's body included). `client_gone` completes when the client
    /// goes away. Never writes to the client.
    pub async fn run<G: Future + Unpin + Send>(
        &self,
        ctx: &Ctx,
        client_gone: &mut G,
    ) -> Result<Answer, Failure> {
        let started = Instant::now();
        let up = self.send(client_gone).await?;
        self.answer(ctx, up, started, client_gone).await
    }

    /// The second half of an attempt: the response header is in; decides whether it is an
    /// answer to deliver (an error answer's body read).
    pub(super) async fn answer<G: Future + Unpin + Send>(
        &self,
        ctx: &Ctx,
        mut up: HttpSession,
        started: Instant,
        client_gone: &mut G,
    ) -> Result<Answer, Failure> {
        let failed = |error: ApiError, may_have_received: bool| {
            Failure::gateway(error, may_have_received, started)
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
                return Err(failed(e, true));
            }
            None => None,
        };
        let Some(upstream) = up.response_header() else {
            up.shutdown().await;
            let e = ApiError::bad_gateway("upstream sent no response header");
            return Err(failed(e, true));
        };
        let status = upstream.status.as_u16();
        let head = UpstreamHead {
            status: upstream.status,
            client: self.client_header(ctx, upstream),
            content_type: upstream.headers.get(CONTENT_TYPE).cloned(),
            decoder,
        };
        up.set_read_timeout(Some(self.timeout));
        if !(200..300).contains(&status) && !(400..600).contains(&status) {
            // Informational answers were skipped (`read_final_header`); a redirect, a switch
            // of protocols or a made-up status (999) is not an answer an LLM API gives.
            up.shutdown().await;
            let e = ApiError::bad_gateway(format!(
                "deployment {} of model group {:?} answered with HTTP status {status}, which is not a success or an error an LLM API sends",
                self.dc.deployment.id, &*self.plan.group
            ));
            return Err(failed(e, true));
        }
        let html = head
            .content_type
            .as_ref()
            .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
        if status < 300 && html {
            // No LLM API answers a success with a web page (a captive portal, a login page, a
            // misrouted server): a failed attempt, also for a stream, before anything is sent.
            up.shutdown().await;
            let e = ApiError::bad_gateway(format!(
                "deployment {} of model group {:?} answered {status} with an HTML page (Content-Type: text/html), not the API's JSON",
                self.dc.deployment.id, &*self.plan.group
            ));
            return Err(failed(e, true));
        }
        if status >= 400 {
            let error_headers = up.response_header().map(|h| h.headers.clone());
            let error_headers = error_headers.unwrap_or_default();
            let failure =
                boxed(|| self.read_error(&mut up, head, error_headers, client_gone, started)).await;
            self.release(up).await;
            return Err(failure);
        }
        Ok(Answer { up, head, started })
    }

    /// An upstream error answer: its body read (bounded, decoded, the deployment's credentials
    /// redacted) and mapped to the client's API.
    async fn read_error<G: Future + Unpin + Send>(
        &self,
        up: &mut HttpSession,
        mut head: UpstreamHead,
        error_headers: http::HeaderMap,
        client_gone: &mut G,
        started: Instant,
    ) -> Failure {
        let status = head.status.as_u16();
        let body = match read_all(up, client_gone, MAX_ERROR_BODY, head.decoder.as_mut()).await {
            Ok(b) => b,
            Err(ReadFailure::ClientGone) => return Failure::ClientGone,
            Err(ReadFailure::Api(_)) => Bytes::new(),
        };
        // A provider that echoes the key it was given must not hand it to the client.
        let body = crate::providers::redact(body, self.secrets);
        let (body, class) =
            codec::client_error(self.ingress, self.wire, status, &error_headers, &body);
        let mut client = head.client;
        client.set_static(CONTENT_TYPE, "application/json");
        client.set_value(CONTENT_LENGTH, HeaderValue::from(body.len()));
        for name in ["retry-after", "retry-after-ms", "x-should-retry"] {
            if let Some(v) = error_headers.get(name) {
                client.set_value(HeaderName::from_static(name), v.clone());
            }
        }
        Failure::Failed(Box::new(Failed {
            status,
            class,
            reply: Reply::Upstream { head: client, body },
            retry_after: error_headers.get("retry-after").cloned(),
            may_have_received: true,
            nothing_generated: false,
            elapsed: started.elapsed(),
        }))
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
    fn send<'b, G: Future + Unpin + Send>(
        &'b self,
        client_gone: &'b mut G,
    ) -> BoxFuture<'b, Result<HttpSession, Failure>>
    where
        'a: 'b,
    {
        boxed(|| async move {
            let started = Instant::now();
            let failed = |error: ApiError, may_have_received: bool| {
                Failure::gateway(error, may_have_received, started)
            };
            let header_timeout = match (self.stream, self.stream_timeout) {
                (true, Some(t)) => t,
                _ => self.timeout,
            };
            let mut resends = 0;
            let (mut up, reused) = loop {
                let (stream, reused) = match self.pool().take(self.peer.pool_key) {
                    Some(stream) => (stream, true),
                    None => {
                        let stream = self
                            .transport()
                            .new_stream(&self.peer.peer)
                            .await
                            .map_err(|e| failed(self.upstream_error(&e, "connecting to"), false))?;
                        (stream, false)
                    }
                };
                match self.write_request(stream).await {
                    Ok(up) => break (up, reused),
                    // Not written whole: the provider cannot have the request.
                    Err(_) if reused && resends < STALE_CONNECTION_RETRIES => resends += 1,
                    Err(e) => {
                        return Err(failed(
                            self.upstream_error(&e, "sending the request to"),
                            false,
                        ));
                    }
                }
            };
            up.set_read_timeout(Some(header_timeout));
            let read = tokio::select! {
                biased;
                r = read_final_header(&mut up) => r.map_err(Some),
                _ = client_gone => Err(None),
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
                let error = ApiError::timeout(format!(
                    "litellm.Timeout: APITimeoutError - Request timed out. Error_str: deployment {} of model group {:?} sent no response within {:.1}s",
                    self.dc.deployment.id,
                    &*self.plan.group,
                    header_timeout.as_secs_f64()
                ));
                return Err(failed(error, true));
            }
            let mut error = self.upstream_error(&e, "waiting for the response of");
            if reused {
                error.message.push_str(
                    " (the connection was kept alive and broke after the request was sent; it was not sent again, since the provider may have received it)",
                );
            }
            Err(failed(error, true))
        })
    }

    /// Sends the request on `stream`: the head and the body in one vectored write (see
    /// [`request_wire_head`]), then an HTTP/1.1 session on the same stream reads the response.
    /// Deployments' peers offer only HTTP/1.1 (`upstream.rs`). On error the connection is closed.
    async fn write_request(&self, mut stream: Stream) -> pingora::Result<HttpSession> {
        let Some(head) = self.wire_head(self.request.body.len()) else {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "upstream request target or host is not valid in an HTTP/1.1 request",
            );
        };
        let write = write_head_and_body(&mut stream, &head, &self.request.body);
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(HttpSession::H1(Http1Session::new_with_options(
                stream,
                &self.peer.peer,
            ))),
            Ok(Err(e)) => Error::e_because(ErrorType::WriteError, "while writing the request", e),
            Err(_) => Error::e_explain(ErrorType::WriteTimedout, "while writing the request"),
        }
    }

    /// The request's HTTP/1.1 head for a body of `body_len` bytes.
    pub(super) fn wire_head(&self, body_len: usize) -> Option<Vec<u8>> {
        request_wire_head(
            &self.request.method,
            &self.request.target,
            &self.upstream.host_header,
            &self.request.headers,
            self.request.accept,
            body_len,
            USER_AGENT,
        )
    }

    /// The response header for the client, all but its content type: status, the upstream's
    /// headers as `llm_provider-*` (as LiteLLM does), and the routing headers.
    pub(super) fn client_header(&self, ctx: &Ctx, upstream: &ResponseHeader) -> ResponseHead {
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
        if upstream.status.is_success() {
            // As LiteLLM: on success only; the maximum only once a retry happened (in the
            // group that served).
            let retries = ctx.record.group_retries;
            resp.set_value(X_LITELLM_ATTEMPTED_RETRIES, HeaderValue::from(retries));
            if retries > 0 {
                resp.set_value(
                    X_LITELLM_MAX_RETRIES,
                    HeaderValue::from(ctx.record.max_retries),
                );
            }
            resp.set_value(
                X_LITELLM_ATTEMPTED_FALLBACKS,
                HeaderValue::from(ctx.record.fallbacks),
            );
        }
        resp
    }

    pub(super) fn upstream_error(&self, e: &Error, doing: &str) -> ApiError {
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
            return ApiError::timeout(format!(
                "litellm.Timeout: APITimeoutError - Request timed out. Error_str: {doing} deployment {} ({}) of model group {:?}: {what}",
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
    pub(super) async fn release(&self, mut up: HttpSession) {
        if !up.response_done() {
            up.shutdown().await;
            return;
        }
        match up {
            HttpSession::H1(mut h1) => {
                // Keep-alive as the upstream's response allows (HTTP version, `Connection`).
                h1.respect_keepalive();
                if let Some(stream) = h1.reuse().await {
                    self.pool().put(self.peer.pool_key, stream);
                }
            }
            mut other => other.shutdown().await,
        }
    }
}

/// Reads the upstream's response header, skipping informational ones (`100 Continue`,
/// `103 Early Hints`: Pingora returns them and expects to be asked again).
pub(super) async fn read_final_header(up: &mut HttpSession) -> pingora::Result<()> {
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
pub(super) async fn write_head_and_body(
    stream: &mut Stream,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<()> {
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

/// Why reading a whole body stopped.
pub(super) enum ReadFailure {
    ClientGone,
    Api(ApiError),
}

/// Reads a whole response body (bounded, after decoding), watching for the client to leave.
pub(super) async fn read_all<G: Future + Unpin>(
    up: &mut HttpSession,
    client_gone: &mut G,
    limit: usize,
    mut decoder: Option<&mut BodyDecoder>,
) -> Result<Bytes, ReadFailure> {
    let too_large = || {
        ReadFailure::Api(ApiError::bad_gateway(format!(
            "upstream response is larger than the limit of {} MiB (general_settings.max_response_size_mb)",
            limit / (1024 * 1024)
        )))
    };
    let undecodable = |e: std::io::Error| {
        ReadFailure::Api(ApiError::bad_gateway(format!(
            "upstream response body could not be decompressed: {e}"
        )))
    };
    let mut body = BytesMut::new();
    let mut decoded = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            r = up.read_response_body() => Some(r),
            _ = &mut *client_gone => None,
        };
        match next {
            None => return Err(ReadFailure::ClientGone),
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
                    ApiError::timeout(
                        "litellm.Timeout: APITimeoutError - Request timed out. Error_str: the upstream stopped sending its response",
                    )
                } else {
                    ApiError::bad_gateway(format!(
                        "upstream connection failed while reading the response: {}",
                        e.etype().as_str()
                    ))
                };
                return Err(ReadFailure::Api(error));
            }
        }
    }
}

#[cfg(test)]
#[path = "attempt_tests.rs"]
mod tests;
