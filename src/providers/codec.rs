//! The forwarder's single entry point into the codecs, dispatching on the deployment's wire
//! format: encode an attempt, decode a JSON answer, a stream or an error. Called inside
//! Pingora's `request_filter` (the forwarder); Pingora-free.

use bytes::{Bytes, BytesMut};
use filters::request::RequestView;
use filters::usage::Usage;
use filters::{ApiError, Endpoint};
use serde_json::{Map, Value};

use super::messages_api::{self, Dialect, PassthroughObserver, ToAnthropicStream};
use super::openai::{self, Target, UpstreamRequest};
use super::responses_api::{self, Echo, ToResponsesStream};
use super::sse::SseRewriter;
use super::translate::{ChatRequest, DecodeOptions, ParamPolicy, TranslatedStream};
use super::{Wire, anthropic, azure, bedrock, cohere, embeddings, gemini, ollama};

/// The API the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// OpenAI's (`/chat/completions`, `/completions`, `/embeddings`).
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`).
    Anthropic,
    /// OpenAI's Responses API (`/v1/responses`).
    Responses,
}

/// Encodes a `/v1/messages` request: as it is for an Anthropic deployment, else converted to
/// OpenAI's chat format and encoded for the deployment's wire.
pub fn encode_messages(
    target: &Target<'_>,
    view: &RequestView,
    body: &Bytes,
    policy: &ParamPolicy,
) -> Result<UpstreamRequest, ApiError> {
    if target.wire == Wire::Anthropic {
        return Ok(anthropic::encode_passthrough(view, body, target));
    }
    if target.wire.translates() {
        return encode_chat(target, messages_api::to_openai_chat(body)?, policy);
    }
    let chat = messages_api::to_openai_request(body)?;
    let chat_view = RequestView::parse(&chat)?;
    encode(
        Endpoint::ChatCompletions,
        target,
        &chat_view,
        &chat,
        false,
        policy,
    )
}

/// Encodes a `/v1/responses` request: as it is for a deployment with the API (`native`: OpenAI
/// and Azure), else converted to OpenAI's chat format (after `history`, the conversation of
/// its `previous_response_id`) and encoded for the deployment's wire, with what the answer's
/// conversion back needs in [`UpstreamRequest::responses`].
pub fn encode_responses(
    target: &Target<'_>,
    view: &RequestView,
    body: &Bytes,
    policy: &ParamPolicy,
    native: bool,
    echo: Echo,
    history: &[Value],
) -> Result<UpstreamRequest, ApiError> {
    if native {
        let mut request = openai::encode(Endpoint::Responses, target, view, body, false)?;
        if target.wire == Wire::Azure {
            request.target = azure::responses_target(&target.base.path, target.api_version);
        }
        return Ok(request);
    }
    let chat = responses_api::to_openai_chat(body, history)?;
    let mut request = if target.wire.translates() {
        encode_chat(target, chat, policy)?
    } else {
        let chat = Bytes::from(serde_json::to_vec(&Value::Object(chat)).unwrap_or_default());
        let chat_view = RequestView::parse(&chat)?;
        let mut request = encode(
            Endpoint::ChatCompletions,
            target,
            &chat_view,
            &chat,
            false,
            policy,
        )?;
        request.include_usage = chat_view.stream;
        request
    };
    request.responses = Some(Box::new(echo));
    Ok(request)
}

/// A retrieval or deletion of a stored response (`GET`/`DELETE /v1/responses/{id}`,
/// `.../input_items`) for the OpenAI or Azure deployment that keeps it: the client's method,
/// path after `/responses/` and query, on the deployment's base.
pub fn encode_stored_response_call(
    target: &Target<'_>,
    native: bool,
    client: &http::request::Parts,
) -> Result<UpstreamRequest, ApiError> {
    if !native {
        return Err(ApiError::bad_request(
            "only OpenAI and Azure deployments keep responses themselves",
        ));
    }
    let path = client.uri.path();
    let rest = path.split("/responses/").nth(1).unwrap_or_default();
    let rest: String = rest
        .split('/')
        .map(super::path::segment)
        .collect::<Vec<_>>()
        .join("/");
    let mut upstream = if target.wire == Wire::Azure {
        let base = azure::responses_target(&target.base.path, target.api_version);
        let (path, query) = base.split_once('?').unwrap_or((&base, ""));
        format!("{path}/{rest}?{query}")
    } else {
        target.base.target(&format!("/responses/{rest}"))
    };
    if let Some(query) = client.uri.query() {
        upstream.push(if upstream.contains('?') { '&' } else { '?' });
        upstream.push_str(query);
    }
    Ok(UpstreamRequest {
        method: client.method.clone(),
        ..UpstreamRequest::post(
            upstream,
            target.headers,
            Bytes::new(),
            Some("application/json"),
        )
    })
}

/// Encodes the client's request for the deployment behind `target`.
pub fn encode(
    endpoint: Endpoint,
    target: &Target<'_>,
    view: &RequestView,
    body: &Bytes,
    inject_stream_usage: bool,
    policy: &ParamPolicy,
) -> Result<UpstreamRequest, ApiError> {
    match target.wire {
        Wire::OpenAi | Wire::OpenAiTextCompletion | Wire::Azure => {
            let mut request = if policy.always_drop.is_empty() {
                openai::encode(endpoint, target, view, body, inject_stream_usage)?
            } else {
                // `additional_drop_params`: the one case where an OpenAI body is re-serialized.
                let mut map = json_object(body)?;
                for name in &policy.always_drop {
                    map.remove(name);
                }
                let edited = Bytes::from(serde_json::to_vec(&map).unwrap_or_default());
                let view = RequestView::parse(&edited)?;
                openai::encode(endpoint, target, &view, &edited, inject_stream_usage)?
            };
            if target.wire == Wire::Azure {
                request.target = azure::target(
                    &target.base.path,
                    target.upstream_model,
                    endpoint,
                    target.api_version.unwrap_or(azure::DEFAULT_API_VERSION),
                );
            }
            Ok(request)
        }
        Wire::Cohere if endpoint == Endpoint::Rerank => {
            // Cohere's own rerank API takes the request as it is (Cohere's format is the
            // route's); its api_base names the chat endpoint by default.
            let path = &target.base.path;
            let path = if path.ends_with("/rerank") {
                path.clone()
            } else if let Some(versioned) = path.strip_suffix("/chat") {
                format!("{versioned}/rerank")
            } else {
                format!("{}/v2/rerank", path.trim_end_matches('/'))
            };
            let mut request = openai::encode(endpoint, target, view, body, false)?;
            request.target = match &target.base.query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            // Cohere's answer is the route's answer: not a chat reply to translate.
            request.raw_answer = true;
            Ok(request)
        }
        wire if endpoint == Endpoint::Embeddings => {
            let mut map = json_object(body)?;
            for name in &policy.always_drop {
                map.remove(name);
            }
            let request = embeddings::EmbeddingRequest::read(&map)?;
            embeddings::encode(wire, &request, target)
        }
        wire => {
            if endpoint != Endpoint::ChatCompletions {
                return Err(ApiError::bad_request(format!(
                    "{} deployments serve /chat/completions and /embeddings; this model group cannot answer {}",
                    provider_name(wire),
                    endpoint.route_label()
                ))
                .with_param("model"));
            }
            encode_chat(target, json_object(body)?, policy)
        }
    }
}

/// Encodes an OpenAI chat request, read as a JSON object, for a translating wire.
fn encode_chat(
    target: &Target<'_>,
    mut map: Map<String, Value>,
    policy: &ParamPolicy,
) -> Result<UpstreamRequest, ApiError> {
    let wire = target.wire;
    let (supported, name) = match wire {
        Wire::Anthropic => (anthropic::SUPPORTED, "anthropic"),
        Wire::Gemini => (gemini::SUPPORTED, "gemini"),
        Wire::OllamaChat => (ollama::SUPPORTED, "ollama_chat"),
        Wire::Ollama => (ollama::SUPPORTED_GENERATE, "ollama"),
        Wire::Cohere => (cohere::SUPPORTED, "cohere"),
        Wire::Bedrock => (bedrock::SUPPORTED, "bedrock"),
        _ => return Err(not_implemented(wire)),
    };
    policy.apply(&mut map, supported, name)?;
    let request = ChatRequest::read(map)?;
    match wire {
        Wire::Anthropic => anthropic::encode(request, target),
        Wire::Gemini => gemini::encode(request, target),
        Wire::OllamaChat => ollama::encode(request, target, false),
        Wire::Ollama => ollama::encode(request, target, true),
        Wire::Cohere => cohere::encode(request, target),
        Wire::Bedrock => bedrock::encode(request, target, target.aws, std::time::SystemTime::now()),
        _ => Err(not_implemented(wire)),
    }
}

fn not_implemented(wire: Wire) -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_IMPLEMENTED,
        "not_implemented_error",
        format!("Sluice does not translate to {} yet", provider_name(wire)),
    )
}

pub fn provider_name(wire: Wire) -> &'static str {
    match wire {
        Wire::OpenAi | Wire::OpenAiTextCompletion => "openai",
        Wire::Azure => "azure",
        Wire::Anthropic => "anthropic",
        Wire::Gemini => "gemini",
        Wire::OllamaChat => "ollama_chat",
        Wire::Ollama => "ollama",
        Wire::Cohere => "cohere",
        Wire::Bedrock => "bedrock",
    }
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// Decodes a complete (non-streamed) 2xx answer of a translating wire into OpenAI JSON.
pub fn decode_body(
    wire: Wire,
    body: &[u8],
    opts: &DecodeOptions,
    request: &UpstreamRequest,
    upstream_model: &str,
) -> Result<(Bytes, Usage), ApiError> {
    let json_tool = request.json_tool;
    if let Some(plan) = &request.embedding {
        let model = opts
            .model_override
            .as_deref()
            .unwrap_or(&opts.fallback_model);
        return embeddings::decode(wire, upstream_model, body, plan, model);
    }
    match wire {
        Wire::Anthropic => anthropic::decode(body, opts, json_tool),
        Wire::Gemini => gemini::decode(body, opts),
        Wire::OllamaChat | Wire::Ollama => ollama::decode(body, opts),
        Wire::Cohere => cohere::decode(body, opts),
        Wire::Bedrock => bedrock::decode(body, opts),
        _ => Err(not_implemented(wire)),
    }
}

/// Maps a provider's error answer (status >= 400) to the client's OpenAI-style error.
pub fn decode_error(wire: Wire, status: u16, headers: &http::HeaderMap, body: &[u8]) -> ApiError {
    match wire {
        Wire::Bedrock => bedrock::error(
            status,
            headers
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok()),
            body,
        ),
        Wire::Anthropic => anthropic::error(status, body),
        Wire::Gemini => gemini::error(status, body),
        Wire::OllamaChat | Wire::Ollama => ollama::error(status, body),
        Wire::Cohere => cohere::error(status, body),
        _ => super::translate::upstream_error(
            status,
            super::translate::ProviderFailure {
                message: super::translate::raw_message(body),
                ..Default::default()
            },
        ),
    }
}

/// An upstream error answer as the client gets it (in its own API's shape), and its class
/// (what a router acts on: retry, fall back, give up).
pub fn client_error(
    ingress: Ingress,
    wire: Wire,
    status: u16,
    headers: &http::HeaderMap,
    body: &Bytes,
) -> (Bytes, super::translate::ErrorClass) {
    use super::translate::{classify, classify_openai_body};
    let (openai, class) = if wire.translates() {
        let error = decode_error(wire, status, headers, body);
        let class = classify(&error);
        (error.body(), class)
    } else if is_openai_error(body) {
        (body.clone(), classify_openai_body(status, body))
    } else {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(2000).collect();
        let message = if text.is_empty() {
            format!("upstream deployment answered {status} with an empty body")
        } else {
            format!("upstream deployment answered {status}: {text}")
        };
        let kind = filters::error_type_for_status(status);
        let error = ApiError::new(
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY),
            kind,
            message,
        );
        let class = classify(&error);
        (error.body(), class)
    };
    let client = match (ingress, wire) {
        (Ingress::OpenAi | Ingress::Responses, _) => openai,
        // An Anthropic deployment's error is already in the client's format.
        (Ingress::Anthropic, Wire::Anthropic)
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() =>
        {
            body.clone()
        }
        (Ingress::Anthropic, _) => messages_api::error_from_openai(status, &openai),
    };
    (client, class)
}

/// Whether a body already is `{"error": ...}`.
fn is_openai_error(body: &[u8]) -> bool {
    filters::json_scan::scan_top_level(body).is_some_and(|f| f.has_error)
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// A whole (non-streamed) successful answer as the client gets it.
#[derive(Debug)]
pub struct ClientBody {
    pub body: Bytes,
    pub usage: Option<Usage>,
    /// Its `Content-Type`: the upstream's when it passes through as JSON, else JSON.
    pub content_type_is_upstream: bool,
}

/// Why a successful answer cannot be passed on.
#[derive(Debug)]
pub enum ClientBodyError {
    /// The body is not a JSON object (an HTML page, text): the attempt failed.
    NotJson,
    /// The provider's answer could not be translated.
    Api(ApiError),
}

/// A whole successful upstream answer turned into the client's: `model` set to the name the
/// client asked for, usage read, translated from the provider's API (and to the Messages API
/// for an Anthropic client): the buffered counterpart of [`ClientStream`].
pub fn client_body(
    ingress: Ingress,
    wire: Wire,
    body: Bytes,
    upstream_json: bool,
    opts: &DecodeOptions,
    request: &UpstreamRequest,
    upstream_model: &str,
) -> Result<ClientBody, ClientBodyError> {
    let requested = opts
        .model_override
        .as_deref()
        .unwrap_or(&opts.fallback_model);
    if request.raw_answer {
        return Ok(ClientBody {
            body,
            usage: None,
            content_type_is_upstream: true,
        });
    }
    let quoted = super::sse::quote(requested);
    if ingress == Ingress::Responses && request.responses.is_none() {
        // An OpenAI or Azure Response (or a retrieval's answer), passed on as it is; only a
        // new Response is paid for.
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(ClientBodyError::NotJson);
        }
        let created = request.method == http::Method::POST;
        return Ok(ClientBody {
            usage: created
                .then(|| responses_api::usage_of_response(&body))
                .flatten(),
            body,
            content_type_is_upstream: upstream_json,
        });
    }
    let (body, usage) = if ingress == Ingress::Anthropic && wire == Wire::Anthropic {
        // Passthrough: the Messages response with `model` set to the requested name.
        let usage = messages_api::usage_of_response(&body);
        match super::sse::rewrite_json_response(body, &quoted) {
            Ok((body, _)) => (body, usage),
            Err(_) => return Err(ClientBodyError::NotJson),
        }
    } else if wire.translates() {
        let (body, usage) = decode_body(wire, &body, opts, request, upstream_model)
            .map_err(ClientBodyError::Api)?;
        (body, Some(usage))
    } else {
        match super::sse::rewrite_json_response(body, &quoted) {
            Ok((body, usage)) => (body, usage),
            Err(_) => return Err(ClientBodyError::NotJson),
        }
    };
    let body = match (&request.responses, ingress) {
        (Some(echo), _) => {
            responses_api::to_responses_response(&body, echo).map_err(ClientBodyError::Api)?
        }
        (None, Ingress::Anthropic) if wire != Wire::Anthropic => {
            messages_api::to_anthropic_response(&body, requested).map_err(ClientBodyError::Api)?
        }
        _ => body,
    };
    Ok(ClientBody {
        body,
        usage,
        content_type_is_upstream: !wire.translates() && upstream_json,
    })
}

/// What a streaming response becomes for the client: OpenAI chunks, an Anthropic or
/// Responses stream passed through, or OpenAI chunks converted to Messages or Responses events.
#[derive(Debug)]
pub enum ClientStream {
    /// Bytes that are no event stream (audio), passed on as they arrive.
    Raw,
    OpenAi(StreamDecoder),
    Passthrough(PassthroughObserver),
    ToAnthropic(Converted<ToAnthropicStream>),
    ToResponses(Converted<ToResponsesStream>),
}

/// A converter of OpenAI chat chunks into another API's stream events.
pub trait ChatConverter {
    /// Converts the chunks `openai` completes, appending the events to `out`.
    fn feed(&mut self, openai: &[u8], out: &mut BytesMut);
    /// The OpenAI stream ended: its closing events.
    fn finish(&mut self, out: &mut BytesMut);
    /// Its closing (or error) event has been written.
    fn is_closed(&self) -> bool;
    fn error(&self) -> Option<&str>;
}

impl ChatConverter for ToAnthropicStream {
    fn feed(&mut self, openai: &[u8], out: &mut BytesMut) {
        ToAnthropicStream::feed(self, openai, out)
    }
    fn finish(&mut self, out: &mut BytesMut) {
        ToAnthropicStream::finish(self, out)
    }
    fn is_closed(&self) -> bool {
        ToAnthropicStream::is_closed(self)
    }
    fn error(&self) -> Option<&str> {
        ToAnthropicStream::error(self)
    }
}

impl ChatConverter for ToResponsesStream {
    fn feed(&mut self, openai: &[u8], out: &mut BytesMut) {
        ToResponsesStream::feed(self, openai, out)
    }
    fn finish(&mut self, out: &mut BytesMut) {
        ToResponsesStream::finish(self, out)
    }
    fn is_closed(&self) -> bool {
        ToResponsesStream::is_closed(self)
    }
    fn error(&self) -> Option<&str> {
        ToResponsesStream::error(self)
    }
}

/// A wire's stream decoded to OpenAI chunks, then converted for the client's API.
#[derive(Debug)]
pub struct Converted<C> {
    inner: StreamDecoder,
    convert: Box<C>,
    /// The OpenAI chunks of one read, between the two.
    scratch: BytesMut,
}

impl<C: ChatConverter> Converted<C> {
    fn new(inner: StreamDecoder, convert: C) -> Self {
        Converted {
            inner,
            convert: Box::new(convert),
            scratch: BytesMut::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        self.inner.feed(chunk, &mut self.scratch);
        self.convert.feed(&self.scratch, out);
        self.scratch.clear();
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.inner.finish(&mut self.scratch);
        self.convert.feed(&self.scratch, out);
        self.scratch.clear();
        self.convert.finish(out);
    }

    fn upstream_error(&self) -> Option<&str> {
        self.inner.upstream_error().or(self.convert.error())
    }
}

impl ClientStream {
    pub fn new(
        ingress: Ingress,
        wire: Wire,
        request: &UpstreamRequest,
        opts: DecodeOptions,
    ) -> ClientStream {
        if request.stream_raw {
            return ClientStream::Raw;
        }
        match (ingress, wire) {
            (Ingress::OpenAi, _) => ClientStream::OpenAi(StreamDecoder::new(wire, request, opts)),
            (Ingress::Anthropic, Wire::Anthropic) => ClientStream::Passthrough(
                PassthroughObserver::new(Dialect::Anthropic, opts.max_event_bytes),
            ),
            (Ingress::Responses, _) => match &request.responses {
                None => ClientStream::Passthrough(PassthroughObserver::new(
                    Dialect::Responses,
                    opts.max_event_bytes,
                )),
                Some(echo) => ClientStream::ToResponses(Converted::new(
                    StreamDecoder::new(wire, request, opts),
                    ToResponsesStream::new(Echo::clone(echo)),
                )),
            },
            (Ingress::Anthropic, _) => {
                let model = opts
                    .model_override
                    .clone()
                    .unwrap_or_else(|| opts.fallback_model.clone());
                ClientStream::ToAnthropic(Converted::new(
                    StreamDecoder::new(wire, request, opts),
                    ToAnthropicStream::new(&model),
                ))
            }
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        match self {
            ClientStream::Raw => out.extend_from_slice(chunk),
            ClientStream::OpenAi(d) => d.feed(chunk, out),
            ClientStream::Passthrough(o) => o.feed(chunk, out),
            ClientStream::ToAnthropic(c) => c.feed(chunk, out),
            ClientStream::ToResponses(c) => c.feed(chunk, out),
        }
    }

    pub fn finish(&mut self, out: &mut BytesMut) {
        match self {
            ClientStream::Raw => {}
            ClientStream::OpenAi(d) => d.finish(out),
            ClientStream::Passthrough(o) => o.finish(out),
            ClientStream::ToAnthropic(c) => c.finish(out),
            ClientStream::ToResponses(c) => c.finish(out),
        }
    }

    /// The upstream connection broke: flush what can be flushed; the caller then sends
    /// [`ClientStream::error_event`].
    pub fn abort(&mut self, out: &mut BytesMut) {
        if let ClientStream::OpenAi(d) = self {
            d.abort(out);
        }
    }

    /// Whether the client's stream is already complete (`[DONE]`, `message_stop` or an error
    /// event was written): nothing more may follow, not even an error event.
    pub fn is_closed(&self) -> bool {
        match self {
            ClientStream::Raw => false,
            ClientStream::OpenAi(d) => d.is_closed(),
            ClientStream::Passthrough(o) => o.is_closed(),
            ClientStream::ToAnthropic(c) => c.convert.is_closed(),
            ClientStream::ToResponses(c) => c.convert.is_closed(),
        }
    }

    /// A mid-stream failure in the client's own format.
    pub fn error_event(&self, error: &ApiError) -> Bytes {
        match self {
            // Audio cannot carry an error: the cut-off body is the signal.
            ClientStream::Raw => Bytes::new(),
            ClientStream::OpenAi(_) => error.sse_event(),
            ClientStream::ToResponses(c) => responses_api::error_event(error, c.convert.sequence()),
            ClientStream::Passthrough(o) if o.dialect() == Dialect::Responses => {
                responses_api::error_event(error, 0)
            }
            _ => {
                let mut event = b"event: error\ndata: ".to_vec();
                event.extend_from_slice(&messages_api::error_body(error));
                event.extend_from_slice(b"\n\n");
                Bytes::from(event)
            }
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        match self {
            ClientStream::Raw => None,
            ClientStream::OpenAi(d) => d.usage(),
            ClientStream::Passthrough(o) => o.usage(),
            ClientStream::ToAnthropic(c) => c.inner.usage(),
            ClientStream::ToResponses(c) => c.convert.usage().or(c.inner.usage()),
        }
    }

    /// What a Responses stream leaves to store, once it completed.
    pub fn responses_outcome(&self) -> Option<responses_api::Outcome> {
        match self {
            ClientStream::Passthrough(o) if o.dialect() == Dialect::Responses => {
                Some(responses_api::Outcome::Native(o.completed_id()?.to_owned()))
            }
            ClientStream::ToResponses(c) => Some(responses_api::Outcome::Translated(
                c.convert.completed()?.clone(),
            )),
            _ => None,
        }
    }

    pub fn upstream_error(&self) -> Option<&str> {
        match self {
            ClientStream::Raw => None,
            ClientStream::OpenAi(d) => d.upstream_error(),
            ClientStream::Passthrough(o) => o.upstream_error(),
            ClientStream::ToAnthropic(c) => c.upstream_error(),
            ClientStream::ToResponses(c) => c.upstream_error(),
        }
    }
}

/// A streaming decoder: upstream bytes in, OpenAI SSE bytes out, as they arrive.
#[derive(Debug)]
pub enum StreamDecoder {
    /// OpenAI-format SSE, passed through with `model` rewritten.
    OpenAi(SseRewriter),
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::StreamDecoder),
    Ollama(ollama::StreamDecoder),
    Cohere(cohere::StreamDecoder),
    Bedrock(Box<bedrock::StreamDecoder>),
}

impl StreamDecoder {
    pub fn new(wire: Wire, request: &UpstreamRequest, opts: DecodeOptions) -> StreamDecoder {
        match wire {
            Wire::Anthropic => {
                StreamDecoder::Anthropic(anthropic::StreamDecoder::new(opts, request.json_tool))
            }
            Wire::Gemini => StreamDecoder::Gemini(gemini::StreamDecoder::new(opts)),
            Wire::OllamaChat | Wire::Ollama => {
                StreamDecoder::Ollama(ollama::StreamDecoder::new(opts))
            }
            Wire::Cohere => StreamDecoder::Cohere(cohere::StreamDecoder::new(opts)),
            Wire::Bedrock => StreamDecoder::Bedrock(Box::new(bedrock::StreamDecoder::new(opts))),
            Wire::Azure => StreamDecoder::OpenAi(
                SseRewriter::new(
                    opts.model_override
                        .as_deref()
                        .unwrap_or(&opts.fallback_model),
                    request.injected_usage,
                )
                .with_max_event(opts.max_event_bytes)
                .dropping_choiceless_chunks(),
            ),
            _ => StreamDecoder::OpenAi(
                SseRewriter::new(
                    opts.model_override
                        .as_deref()
                        .unwrap_or(&opts.fallback_model),
                    request.injected_usage,
                )
                .with_max_event(opts.max_event_bytes),
            ),
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        match self {
            StreamDecoder::OpenAi(d) => d.feed(chunk, out),
            StreamDecoder::Anthropic(d) => d.feed(chunk, out),
            StreamDecoder::Gemini(d) => d.feed(chunk, out),
            StreamDecoder::Ollama(d) => d.feed(chunk, out),
            StreamDecoder::Cohere(d) => d.feed(chunk, out),
            StreamDecoder::Bedrock(d) => d.feed(chunk, out),
        }
    }

    pub fn finish(&mut self, out: &mut BytesMut) {
        match self {
            StreamDecoder::OpenAi(d) => d.finish(out),
            StreamDecoder::Anthropic(d) => d.finish(out),
            StreamDecoder::Gemini(d) => d.finish(out),
            StreamDecoder::Ollama(d) => d.finish(out),
            StreamDecoder::Cohere(d) => d.finish(out),
            StreamDecoder::Bedrock(d) => d.finish(out),
        }
    }

    /// The upstream connection broke: flush what a passthrough holds; a translated stream
    /// emits nothing more (the caller sends the error event).
    pub fn abort(&mut self, out: &mut BytesMut) {
        if let StreamDecoder::OpenAi(d) = self {
            d.finish(out);
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        match self {
            StreamDecoder::OpenAi(d) => d.usage(),
            StreamDecoder::Anthropic(d) => d.usage(),
            StreamDecoder::Gemini(d) => d.usage(),
            StreamDecoder::Ollama(d) => d.usage(),
            StreamDecoder::Cohere(d) => d.usage(),
            StreamDecoder::Bedrock(d) => d.usage(),
        }
    }

    /// The decoder has written its terminal event (`[DONE]` or an error).
    pub fn is_closed(&self) -> bool {
        match self {
            StreamDecoder::OpenAi(d) => d.saw_done() || d.upstream_error().is_some(),
            StreamDecoder::Anthropic(d) => d.is_closed(),
            StreamDecoder::Gemini(d) => d.is_closed(),
            StreamDecoder::Ollama(d) => d.is_closed(),
            StreamDecoder::Cohere(d) => d.is_closed(),
            StreamDecoder::Bedrock(d) => d.is_closed(),
        }
    }

    pub fn upstream_error(&self) -> Option<&str> {
        match self {
            StreamDecoder::OpenAi(d) => d.upstream_error(),
            StreamDecoder::Anthropic(d) => d.upstream_error(),
            StreamDecoder::Gemini(d) => d.upstream_error(),
            StreamDecoder::Ollama(d) => d.upstream_error(),
            StreamDecoder::Cohere(d) => d.upstream_error(),
            StreamDecoder::Bedrock(d) => d.upstream_error(),
        }
    }
}
