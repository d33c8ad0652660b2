//! The OpenAI-compatible codec: OpenAI, vLLM, Groq, OpenRouter and every other prefix in
//! [`super::OPENAI_COMPATIBLE`]. Called by the forwarder (inside `request_filter`) to build each
//! upstream attempt.
//!
//! The request goes out as the client's own bytes with at most two edits: `model` set to the
//! deployment's model, and (for streams, when enabled) `stream_options.include_usage` added so
//! the stream reports its tokens. The URL is `{api_base}{/chat/completions|/completions|/embeddings}`
//! exactly as LiteLLM and the OpenAI SDK build it. Headers that never change for a deployment
//! (auth, content type, extra headers) are built once at start-up by [`base_headers`].

use std::sync::Arc;

use bytes::Bytes;
use filters::request::RequestView;
use filters::route::Deployment;
use filters::{ApiError, Endpoint};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::Wire;
use crate::config::UpstreamUrl;

/// A fully encoded upstream request.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: http::Method,
    /// Path and query.
    pub target: String,
    /// Headers besides `Host`, `Content-Length` and `Accept`: the deployment's own map, shared
    /// (a request copies it only to change it, see [`UpstreamRequest::headers_mut`]).
    pub headers: Arc<HeaderMap>,
    /// `Accept`, written after `headers` (replacing one there).
    pub accept: Option<&'static str>,
    pub body: Bytes,
    /// The gateway added `stream_options.include_usage`; the client must not see the extra chunk.
    pub injected_usage: bool,
    /// `response_format` travels as a forced tool whose input is the answer (Anthropic).
    pub json_tool: bool,
    /// The client asked for `stream_options.include_usage` (translated streams).
    pub include_usage: bool,
    /// A translated embeddings call, and how to decode its answer.
    pub embedding: Option<super::embeddings::EmbeddingPlan>,
    /// A Responses request sent as a chat request: what the Response echoes of it.
    pub responses: Option<Box<super::responses_api::Echo>>,
    /// The answer goes to the client as it is, whatever its type (audio, a transcription's
    /// text, Cohere's rerank JSON): nothing is read from it but what pricing needs.
    pub raw_answer: bool,
    /// ... and as it arrives (`/audio/speech`'s audio).
    pub stream_raw: bool,
}

impl UpstreamRequest {
    /// A POST of `body` to `target` carrying the deployment's `headers` (and `accept`, when
    /// given), with every translation flag off; codecs set the flags they need.
    pub fn post(
        target: String,
        headers: &Arc<HeaderMap>,
        body: Bytes,
        accept: Option<&'static str>,
    ) -> UpstreamRequest {
        UpstreamRequest {
            method: http::Method::POST,
            target,
            headers: Arc::clone(headers),
            accept,
            body,
            injected_usage: false,
            json_tool: false,
            include_usage: false,
            embedding: None,
            responses: None,
            raw_answer: false,
            stream_raw: false,
        }
    }

    /// The headers to change, `Accept` among them: this request's own copy of the deployment's
    /// map (cloning it per request cost about 1k instructions, callgrind).
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        let headers = Arc::make_mut(&mut self.headers);
        if let Some(accept) = self.accept.take() {
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
        }
        headers
    }

    /// A header as sent: `Accept` from [`UpstreamRequest::accept`], the rest from the map.
    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.accept {
            Some(accept) if name.eq_ignore_ascii_case("accept") => Some(accept),
            _ => self.headers.get(name).and_then(|v| v.to_str().ok()),
        }
    }
}

/// The `Accept` of a request answered with SSE when streaming, JSON otherwise.
pub fn sse_or_json(stream: bool) -> &'static str {
    if stream {
        "text/event-stream"
    } else {
        "application/json"
    }
}

/// What encoding needs to know about the deployment.
pub struct Target<'a> {
    pub wire: Wire,
    pub base: &'a UpstreamUrl,
    pub upstream_model: &'a str,
    /// From [`base_headers`].
    pub headers: &'a Arc<HeaderMap>,
    /// The model's output limit from the price table (Anthropic's mandatory `max_tokens`).
    pub max_output_tokens: Option<u64>,
    /// Azure's `api-version`.
    pub api_version: Option<&'a str>,
    /// Bedrock's credentials (SigV4 or API key).
    pub aws: Option<&'a super::bedrock::AwsAuth>,
}

impl<'a> Target<'a> {
    pub fn new(
        wire: Wire,
        base: &'a UpstreamUrl,
        upstream_model: &'a str,
        headers: &'a Arc<HeaderMap>,
    ) -> Self {
        Target {
            wire,
            base,
            upstream_model,
            headers,
            max_output_tokens: None,
            api_version: None,
            aws: None,
        }
    }
}

/// The headers every request to this deployment carries: content type, `Authorization: Bearer`
/// with the deployment's key, the provider's fixed headers and the configured `extra_headers`.
pub fn base_headers(deployment: &Deployment, static_headers: &[(String, String)]) -> HeaderMap {
    let mut headers =
        HeaderMap::with_capacity(4 + static_headers.len() + deployment.extra_headers.len());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = &deployment.api_key
        && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
    {
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    for (name, value) in static_headers.iter().chain(&deployment.extra_headers) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// Encodes a client request for an OpenAI-compatible deployment.
pub fn encode(
    endpoint: Endpoint,
    target: &Target<'_>,
    view: &RequestView,
    body: &Bytes,
    inject_stream_usage: bool,
) -> Result<UpstreamRequest, ApiError> {
    if target.wire == Wire::OpenAiTextCompletion && endpoint != Endpoint::Completions {
        return Err(ApiError::bad_request(format!(
            "model group uses a text-completion-openai deployment ({}), which serves /completions only",
            target.upstream_model
        ))
        .with_param("model"));
    }
    let inject = inject_stream_usage
        && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
        && view.stream
        && !view.has_stream_options;
    let body = view.rewrite(body, target.upstream_model, inject);
    let audio = matches!(
        endpoint,
        Endpoint::AudioSpeech | Endpoint::AudioTranscriptions
    );
    let accept = (!audio).then(|| sse_or_json(view.stream));
    Ok(UpstreamRequest {
        injected_usage: inject,
        include_usage: view.stream && !inject,
        raw_answer: audio,
        stream_raw: endpoint == Endpoint::AudioSpeech,
        ..UpstreamRequest::post(
            target.base.target(endpoint.upstream_path()),
            target.headers,
            body,
            accept,
        )
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use filters::route::Secret;

    use super::*;

    fn deployment(key: Option<&str>, extra: &[(&str, &str)]) -> Deployment {
        Deployment {
            id: "d".into(),
            index: 0,
            model_name: "g".into(),
            provider: "openai".into(),
            upstream_model: "m".into(),
            api_base: "http://h/v1".into(),
            public_api_base: "http://h/v1".into(),
            api_key: key.map(Secret::new),
            weight: None,
            rpm: None,
            tpm: None,
            order: None,
            timeout: Duration::from_secs(1),
            stream_timeout: None,
            extra_headers: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn target<'a>(base: &'a UpstreamUrl, wire: Wire, headers: &'a Arc<HeaderMap>) -> Target<'a> {
        Target::new(wire, base, "meta-llama/Llama-3.1-8B", headers)
    }

    #[test]
    fn base_headers_carry_the_key_and_extra_headers() {
        let h = base_headers(
            &deployment(Some("sk-up"), &[("X-Team", "a")]),
            &[("HTTP-Referer".into(), "https://litellm.ai".into())],
        );
        assert_eq!(h["authorization"], "Bearer sk-up");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["x-team"], "a");
        assert_eq!(h["http-referer"], "https://litellm.ai");
        assert_eq!(h["content-type"], "application/json");
        assert!(!base_headers(&deployment(None, &[]), &[]).contains_key("authorization"));
    }

    #[test]
    fn builds_litellm_url_and_rewrites_model() {
        let base = UpstreamUrl::parse("http://vllm:8000/v1").unwrap();
        let headers = Arc::new(base_headers(&deployment(Some("sk-up"), &[]), &[]));
        let body = Bytes::from_static(br#"{"model":"llama","messages":[]}"#);
        let view = RequestView::parse(&body).unwrap();
        let encode_chat = || {
            encode(
                Endpoint::ChatCompletions,
                &target(&base, Wire::OpenAi, &headers),
                &view,
                &body,
                true,
            )
            .unwrap()
        };
        let req = encode_chat();
        assert_eq!(req.target, "/v1/chat/completions");
        assert_eq!(
            &req.body[..],
            br#"{"model":"meta-llama/Llama-3.1-8B","messages":[]}"#
        );
        assert_eq!(req.header("authorization"), Some("Bearer sk-up"));
        assert_eq!(req.header("accept"), Some("application/json"));
        assert!(!req.injected_usage);
        // The deployment's map is shared, not copied, until a request changes it.
        assert!(Arc::ptr_eq(&req.headers, &headers));
        let mut changed = encode_chat();
        changed
            .headers_mut()
            .insert("x-one", HeaderValue::from_static("1"));
        assert!(!Arc::ptr_eq(&changed.headers, &headers));
        assert!(!headers.contains_key("x-one"));
        assert_eq!(changed.header("accept"), Some("application/json"));
        assert_eq!(changed.accept, None, "folded into the request's own map");
    }

    #[test]
    fn streams_get_usage_injected_unless_the_client_chose() {
        let base = UpstreamUrl::parse("http://h/v1").unwrap();
        let headers = Arc::new(HeaderMap::new());
        let body = Bytes::from_static(br#"{"model":"x","stream":true}"#);
        let view = RequestView::parse(&body).unwrap();
        let t = target(&base, Wire::OpenAi, &headers);
        let req = encode(Endpoint::ChatCompletions, &t, &view, &body, true).unwrap();
        assert!(req.injected_usage);
        assert_eq!(req.header("accept"), Some("text/event-stream"));
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let req = encode(Endpoint::ChatCompletions, &t, &view, &body, false).unwrap();
        assert!(!req.injected_usage);
    }

    #[test]
    fn text_completion_deployments_only_serve_completions() {
        let base = UpstreamUrl::parse("https://api.openai.com/v1").unwrap();
        let headers = Arc::new(HeaderMap::new());
        let body = Bytes::from_static(br#"{"model":"x","prompt":"hi"}"#);
        let view = RequestView::parse(&body).unwrap();
        let t = target(&base, Wire::OpenAiTextCompletion, &headers);
        assert!(encode(Endpoint::Completions, &t, &view, &body, true).is_ok());
        assert_eq!(
            encode(Endpoint::ChatCompletions, &t, &view, &body, true)
                .unwrap_err()
                .status
                .as_u16(),
            400
        );
    }
}
