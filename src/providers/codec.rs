//! The forwarder's single entry point into the codecs, dispatching on the deployment's wire
//! format: encode an attempt, decode a JSON answer, a stream or an error. Called inside
//! Pingora's `request_filter` (the forwarder); Pingora-free.

use bytes::{Bytes, BytesMut};
use filters::request::RequestView;
use filters::usage::Usage;
use filters::{ApiError, Endpoint};
use serde_json::{Map, Value};

use super::openai::{self, Target, UpstreamRequest};
use super::sse::SseRewriter;
use super::translate::{ChatRequest, DecodeOptions, ParamPolicy};
use super::{Wire, anthropic, azure, cohere, gemini, ollama};

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
        wire => {
            if endpoint != Endpoint::ChatCompletions {
                return Err(ApiError::bad_request(format!(
                    "{} deployments serve /chat/completions only; this model group cannot answer {}",
                    provider_name(wire),
                    endpoint.route_label()
                ))
                .with_param("model"));
            }
            let mut map = json_object(body)?;
            let (supported, name) = match wire {
                Wire::Anthropic => (anthropic::SUPPORTED, "anthropic"),
                Wire::Gemini => (gemini::SUPPORTED, "gemini"),
                Wire::OllamaChat => (ollama::SUPPORTED, "ollama_chat"),
                Wire::Ollama => (ollama::SUPPORTED_GENERATE, "ollama"),
                Wire::Cohere => (cohere::SUPPORTED, "cohere"),
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
                _ => Err(not_implemented(wire)),
            }
        }
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
    json_tool: bool,
) -> Result<(Bytes, Usage), ApiError> {
    match wire {
        Wire::Anthropic => anthropic::decode(body, opts, json_tool),
        Wire::Gemini => gemini::decode(body, opts),
        Wire::OllamaChat | Wire::Ollama => ollama::decode(body, opts),
        Wire::Cohere => cohere::decode(body, opts),
        _ => Err(not_implemented(wire)),
    }
}

/// Maps a provider's error answer (status >= 400) to the client's OpenAI-style error.
pub fn decode_error(wire: Wire, status: u16, body: &[u8]) -> ApiError {
    match wire {
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

/// A streaming decoder: upstream bytes in, OpenAI SSE bytes out, as they arrive.
#[derive(Debug)]
pub enum StreamDecoder {
    /// OpenAI-format SSE, passed through with `model` rewritten.
    OpenAi(SseRewriter),
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::StreamDecoder),
    Ollama(ollama::StreamDecoder),
    Cohere(cohere::StreamDecoder),
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
            Wire::Azure => StreamDecoder::OpenAi(
                SseRewriter::new(
                    opts.model_override
                        .as_deref()
                        .unwrap_or(&opts.fallback_model),
                    request.injected_usage,
                )
                .dropping_choiceless_chunks(),
            ),
            _ => StreamDecoder::OpenAi(SseRewriter::new(
                opts.model_override
                    .as_deref()
                    .unwrap_or(&opts.fallback_model),
                request.injected_usage,
            )),
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        match self {
            StreamDecoder::OpenAi(d) => d.feed(chunk, out),
            StreamDecoder::Anthropic(d) => d.feed(chunk, out),
            StreamDecoder::Gemini(d) => d.feed(chunk, out),
            StreamDecoder::Ollama(d) => d.feed(chunk, out),
            StreamDecoder::Cohere(d) => d.feed(chunk, out),
        }
    }

    pub fn finish(&mut self, out: &mut BytesMut) {
        match self {
            StreamDecoder::OpenAi(d) => d.finish(out),
            StreamDecoder::Anthropic(d) => d.finish(out),
            StreamDecoder::Gemini(d) => d.finish(out),
            StreamDecoder::Ollama(d) => d.finish(out),
            StreamDecoder::Cohere(d) => d.finish(out),
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
        }
    }

    pub fn upstream_error(&self) -> Option<&str> {
        match self {
            StreamDecoder::OpenAi(d) => d.upstream_error(),
            StreamDecoder::Anthropic(d) => d.upstream_error(),
            StreamDecoder::Gemini(d) => d.upstream_error(),
            StreamDecoder::Ollama(d) => d.upstream_error(),
            StreamDecoder::Cohere(d) => d.upstream_error(),
        }
    }
}
