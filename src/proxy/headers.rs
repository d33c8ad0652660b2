//! Response headers built on `http`'s maps with pre-parsed names, and the upstream request head
//! serialized straight to the wire (`request_wire_head`).
//!
//! Pingora's `insert_header` re-parses the name (and allocates for custom names) on every call;
//! with a dozen `x-litellm-*` headers per response that showed up in profiles. Headers are built
//! here on `http::response::Parts` with constant `HeaderName`s and converted once.

use std::cell::RefCell;

pub use filters::route::{
    X_LITELLM_MODEL_API_BASE, X_LITELLM_MODEL_GROUP, X_LITELLM_MODEL_ID, X_LITELLM_VERSION,
};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;

pub const CONTENT_TYPE: HeaderName = http::header::CONTENT_TYPE;
pub const CONTENT_LENGTH: HeaderName = http::header::CONTENT_LENGTH;
pub const TRANSFER_ENCODING: HeaderName = http::header::TRANSFER_ENCODING;
pub const CACHE_CONTROL: HeaderName = http::header::CACHE_CONTROL;
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_LITELLM_CALL_ID: HeaderName = HeaderName::from_static("x-litellm-call-id");
pub const X_LITELLM_RESPONSE_COST: HeaderName = HeaderName::from_static("x-litellm-response-cost");
/// Retries made before the attempt that succeeded (LiteLLM's retry headers).
pub const X_LITELLM_ATTEMPTED_RETRIES: HeaderName =
    HeaderName::from_static("x-litellm-attempted-retries");
pub const X_LITELLM_MAX_RETRIES: HeaderName = HeaderName::from_static("x-litellm-max-retries");
/// Fallback groups tried before the one that served (0: the requested group served).
pub const X_LITELLM_ATTEMPTED_FALLBACKS: HeaderName =
    HeaderName::from_static("x-litellm-attempted-fallbacks");
pub const X_LITELLM_RESPONSE_DURATION_MS: HeaderName =
    HeaderName::from_static("x-litellm-response-duration-ms");
pub const X_LITELLM_OVERHEAD_DURATION_MS: HeaderName =
    HeaderName::from_static("x-litellm-overhead-duration-ms");

/// A response header under construction.
pub struct ResponseHead {
    parts: http::response::Parts,
}

impl ResponseHead {
    pub fn new(status: u16, capacity: usize) -> ResponseHead {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        parts.headers.reserve(capacity);
        ResponseHead { parts }
    }

    /// Sets a header; values that are not valid header text are skipped.
    pub fn set(&mut self, name: HeaderName, value: &str) {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.parts.headers.insert(name, v);
        }
    }

    /// `x-request-id` and `x-litellm-call-id`, one value checked once for both.
    pub fn set_request_id(&mut self, id: &str) {
        if let Ok(v) = HeaderValue::from_str(id) {
            self.parts.headers.insert(X_REQUEST_ID, v.clone());
            self.parts.headers.insert(X_LITELLM_CALL_ID, v);
        }
    }

    pub fn set_value(&mut self, name: HeaderName, value: HeaderValue) {
        self.parts.headers.insert(name, value);
    }

    pub fn set_static(&mut self, name: HeaderName, value: &'static str) {
        self.parts
            .headers
            .insert(name, HeaderValue::from_static(value));
    }

    pub fn append_value(&mut self, name: HeaderName, value: HeaderValue) {
        self.parts.headers.append(name, value);
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    pub fn status(&self) -> u16 {
        self.parts.status.as_u16()
    }

    pub fn finish(self) -> ResponseHeader {
        self.parts.into()
    }
}

/// The HTTP/1.1 head of an upstream request, ready for the wire: the request line, `Host`, the
/// request's own headers, `Content-Length` and `User-Agent` (the three set here replace any the
/// request carries). Written with the body in one call, so the request leaves in one segment:
/// Pingora's client flushes the head on its own, a second `sendto` (and a second wake-up of the
/// provider) per request. `None` when the target or host holds a byte HTTP/1.1 forbids there.
pub fn request_wire_head(
    method: &http::Method,
    target: &str,
    host: &str,
    headers: &HeaderMap,
    accept: Option<&'static str>,
    body_len: usize,
    user_agent: &str,
) -> Option<Vec<u8>> {
    // A request target is visible ASCII (RFC 9112 section 3.2); so is a host.
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !visible(target) || !visible(host) {
        return None;
    }
    let mut head = Vec::with_capacity(256 + target.len() + 64 * headers.len());
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if matches!(
            *name,
            http::header::HOST | http::header::CONTENT_LENGTH | http::header::USER_AGENT
        ) || (accept.is_some() && *name == http::header::ACCEPT)
        {
            continue;
        }
        let name = if *name == CONTENT_TYPE {
            "Content-Type"
        } else {
            name.as_str()
        };
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if let Some(accept) = accept {
        head.extend_from_slice(b"accept: ");
        head.extend_from_slice(accept.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Content-Length: ");
    head.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    head.extend_from_slice(b"\r\nUser-Agent: ");
    head.extend_from_slice(user_agent.as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    Some(head)
}

/// Upstream header names seen so far, with their `llm_provider-` forms (per thread, bounded).
const PREFIXED_CACHE_LIMIT: usize = 512;

thread_local! {
    // aHash: SipHash over each upstream header name showed in per-request profiles.
    static PREFIXED: RefCell<ahash::AHashMap<HeaderName, Option<HeaderName>>> =
        RefCell::new(ahash::AHashMap::new());
}

/// `llm_provider-<name>`: LiteLLM passes every upstream header on under this prefix. `None`
/// for a header Sluice withholds (see [`withheld`]); decided once per name and thread.
pub fn provider_prefixed(name: &HeaderName) -> Option<HeaderName> {
    PREFIXED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(p) = cache.get(name) {
            return p.clone();
        }
        let prefixed = (!withheld(name.as_str()))
            .then(|| HeaderName::from_bytes(format!("llm_provider-{}", name.as_str()).as_bytes()))
            .and_then(Result::ok);
        if cache.len() >= PREFIXED_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(name.clone(), prefixed.clone());
        prefixed
    })
}

/// Upstream headers never passed on to clients: cookies (a provider's or a proxy's session is
/// the operator's, not the client's) and anything named like a credential. LiteLLM passes
/// them on as `llm_provider-set-cookie`, `llm_provider-x-internal-auth`, ...
pub fn withheld(name: &str) -> bool {
    // Whole words of the name (`x-ratelimit-remaining-tokens` is not a token).
    const CREDENTIAL_WORDS: &[&str] = &[
        "cookie",
        "cookie2",
        "auth",
        "authorization",
        "authenticate",
        "secret",
        "password",
        "passwd",
        "credential",
        "credentials",
        "session",
        "apikey",
    ];
    // `<word>-key` names a credential (`x-api-key`, `ocp-apim-subscription-key`).
    const KEY_QUALIFIERS: &[&str] = &["api", "access", "subscription", "secret", "private"];
    // A `token` among these is a count of tokens (`x-amzn-bedrock-input-token-count`).
    const USAGE_WORDS: &[&str] = &[
        "count",
        "counts",
        "limit",
        "remaining",
        "reset",
        "usage",
        "used",
    ];
    let words: Vec<&str> = name.split(['-', '_']).filter(|w| !w.is_empty()).collect();
    words.iter().any(|w| CREDENTIAL_WORDS.contains(w))
        || words
            .windows(2)
            .any(|pair| pair[1] == "key" && KEY_QUALIFIERS.contains(&pair[0]))
        || (words.contains(&"token") && !words.iter().any(|w| USAGE_WORDS.contains(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_credentials_are_withheld() {
        for name in [
            "set-cookie",
            "set-cookie2",
            "x-internal-auth",
            "www-authenticate",
            "x-session-id",
            "x-upstream-token",
            "x-api-key",
            "x_api_key",
            "ocp-apim-subscription-key",
            "x-access-key",
        ] {
            let name = HeaderName::from_static(name);
            assert!(provider_prefixed(&name).is_none(), "{name}");
        }
        for name in [
            "x-ratelimit-remaining-tokens",
            "x-amzn-bedrock-input-token-count",
            "x-amzn-bedrock-output-token-count",
            "anthropic-ratelimit-output-tokens-limit",
            "openai-processing-ms",
            "x-request-id",
            "retry-after",
            "x-cache-key",
        ] {
            let header = HeaderName::from_static(name);
            assert_eq!(
                provider_prefixed(&header).unwrap().as_str(),
                format!("llm_provider-{name}")
            );
        }
    }

    #[test]
    fn builds_pingora_headers() {
        let mut head = ResponseHead::new(201, 4);
        head.set_request_id("abc");
        head.set(X_LITELLM_MODEL_ID, "bad\nvalue");
        head.set_static(CONTENT_TYPE, "application/json");
        let resp = head.finish();
        assert_eq!(resp.status.as_u16(), 201);
        assert_eq!(resp.headers["x-request-id"], "abc");
        assert_eq!(resp.headers["x-litellm-call-id"], "abc");
        assert!(!resp.headers.contains_key("x-litellm-model-id"));
        assert_eq!(
            provider_prefixed(&HeaderName::from_static("x-ratelimit-remaining")).unwrap(),
            "llm_provider-x-ratelimit-remaining"
        );
    }

    #[test]
    fn upstream_request_head_is_one_block_with_host_length_and_agent_set_here() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-up"),
        );
        // Set by the gateway: a deployment's own values never reach the wire twice.
        headers.insert(http::header::HOST, HeaderValue::from_static("evil"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        headers.insert(http::header::USER_AGENT, HeaderValue::from_static("x"));
        // The request's own `Accept` replaces the deployment's.
        headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.append("x-extra", HeaderValue::from_static("a"));
        headers.append("x-extra", HeaderValue::from_static("b"));
        let head = request_wire_head(
            &http::Method::POST,
            "/openai/deployments/d/chat/completions?api-version=2024-06-01",
            "example.openai.azure.com",
            &headers,
            Some("text/event-stream"),
            42,
            "sluice/test",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /openai/deployments/d/chat/completions?api-version=2024-06-01 HTTP/1.1\r\n\
             Host: example.openai.azure.com\r\n\
             Content-Type: application/json\r\n\
             authorization: Bearer sk-up\r\n\
             x-extra: a\r\n\
             x-extra: b\r\n\
             accept: text/event-stream\r\n\
             Content-Length: 42\r\n\
             User-Agent: sluice/test\r\n\r\n"
        );
        // A target or host that would split the request line or a header is refused.
        for (target, host) in [
            ("/v1/a b", "h"),
            ("/v1/a\r\nx: y", "h"),
            ("", "h"),
            ("/v1/\u{e9}", "h"),
            ("/v1", "h\r\nx: y"),
        ] {
            let head = request_wire_head(
                &http::Method::POST,
                target,
                host,
                &headers,
                None,
                0,
                "sluice/test",
            );
            assert!(head.is_none(), "{target:?} {host:?}");
        }
    }
}
