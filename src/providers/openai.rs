//! The OpenAI-compatible codec: OpenAI, vLLM, Groq, OpenRouter and every other prefix in
//! [`super::OPENAI_COMPATIBLE`]. Called by the forwarder (inside `request_filter`) to build each
//! upstream attempt.
//!
//! The request goes out as the client's own bytes with at most two edits: `model` set to the
//! deployment's model, and (for streams, when enabled) `stream_options.include_usage` added so
//! the stream reports its tokens. The URL is `{api_base}{/chat/completions|/completions|/embeddings}`
//! exactly as LiteLLM and the OpenAI SDK build it.

use bytes::Bytes;
use filters::request::RequestView;
use filters::{ApiError, Endpoint};

use super::Wire;
use crate::upstream::UpstreamUrl;

/// A fully encoded upstream request.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: &'static str,
    /// Path and query.
    pub target: String,
    /// Headers besides `Host` and `Content-Length`.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The gateway added `stream_options.include_usage`; the client must not see the extra chunk.
    pub injected_usage: bool,
}

/// What encoding needs to know about the deployment.
pub struct Target<'a> {
    pub wire: Wire,
    pub base: &'a UpstreamUrl,
    pub upstream_model: &'a str,
    pub api_key: Option<&'a str>,
    pub extra_headers: &'a [(String, String)],
    pub static_headers: &'a [(String, String)],
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
        && endpoint != Endpoint::Embeddings
        && view.stream
        && !view.has_stream_options;
    let body = view.rewrite(body, target.upstream_model, inject);
    let mut headers =
        Vec::with_capacity(4 + target.extra_headers.len() + target.static_headers.len());
    headers.push(("content-type".to_string(), "application/json".to_string()));
    headers.push((
        "accept".to_string(),
        if view.stream {
            "text/event-stream".to_string()
        } else {
            "application/json".to_string()
        },
    ));
    if let Some(key) = target.api_key {
        headers.push(("authorization".to_string(), format!("Bearer {key}")));
    }
    headers.extend(target.static_headers.iter().cloned());
    headers.extend(target.extra_headers.iter().cloned());
    Ok(UpstreamRequest {
        method: "POST",
        target: target.base.target(endpoint.upstream_path()),
        headers,
        body,
        injected_usage: inject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(base: &'a UpstreamUrl, wire: Wire) -> Target<'a> {
        Target {
            wire,
            base,
            upstream_model: "meta-llama/Llama-3.1-8B",
            api_key: Some("sk-up"),
            extra_headers: &[],
            static_headers: &[],
        }
    }

    #[test]
    fn builds_litellm_url_and_rewrites_model() {
        let base = UpstreamUrl::parse("http://vllm:8000/v1").unwrap();
        let body = Bytes::from_static(br#"{"model":"llama","messages":[]}"#);
        let view = RequestView::parse(&body).unwrap();
        let req = encode(
            Endpoint::ChatCompletions,
            &target(&base, Wire::OpenAi),
            &view,
            &body,
            true,
        )
        .unwrap();
        assert_eq!(req.target, "/v1/chat/completions");
        assert_eq!(
            &req.body[..],
            br#"{"model":"meta-llama/Llama-3.1-8B","messages":[]}"#
        );
        assert!(
            req.headers
                .contains(&("authorization".into(), "Bearer sk-up".into()))
        );
        assert!(!req.injected_usage);
    }

    #[test]
    fn streams_get_usage_injected_unless_the_client_chose() {
        let base = UpstreamUrl::parse("http://h/v1").unwrap();
        let body = Bytes::from_static(br#"{"model":"x","stream":true}"#);
        let view = RequestView::parse(&body).unwrap();
        let req = encode(
            Endpoint::ChatCompletions,
            &target(&base, Wire::OpenAi),
            &view,
            &body,
            true,
        )
        .unwrap();
        assert!(req.injected_usage);
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let req = encode(
            Endpoint::ChatCompletions,
            &target(&base, Wire::OpenAi),
            &view,
            &body,
            false,
        )
        .unwrap();
        assert!(!req.injected_usage);
    }

    #[test]
    fn text_completion_deployments_only_serve_completions() {
        let base = UpstreamUrl::parse("https://api.openai.com/v1").unwrap();
        let body = Bytes::from_static(br#"{"model":"x","prompt":"hi"}"#);
        let view = RequestView::parse(&body).unwrap();
        let t = target(&base, Wire::OpenAiTextCompletion);
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
