//! Response and upstream request headers built on `http`'s maps with pre-parsed names.
//!
//! Pingora's `insert_header` re-parses the name (and allocates for custom names) on every call;
//! with a dozen `x-litellm-*` headers per response that showed up in profiles. Headers are built
//! here on `http::response::Parts` with constant `HeaderName`s and converted once.

use std::cell::RefCell;

use filters::route::Deployment;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

pub const CONTENT_TYPE: HeaderName = http::header::CONTENT_TYPE;
pub const CONTENT_LENGTH: HeaderName = http::header::CONTENT_LENGTH;
pub const TRANSFER_ENCODING: HeaderName = http::header::TRANSFER_ENCODING;
pub const CACHE_CONTROL: HeaderName = http::header::CACHE_CONTROL;
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_LITELLM_CALL_ID: HeaderName = HeaderName::from_static("x-litellm-call-id");
pub const X_LITELLM_MODEL_ID: HeaderName = HeaderName::from_static("x-litellm-model-id");
pub const X_LITELLM_MODEL_API_BASE: HeaderName =
    HeaderName::from_static("x-litellm-model-api-base");
pub const X_LITELLM_MODEL_GROUP: HeaderName = HeaderName::from_static("x-litellm-model-group");
pub const X_LITELLM_RESPONSE_COST: HeaderName = HeaderName::from_static("x-litellm-response-cost");
pub const X_LITELLM_VERSION: HeaderName = HeaderName::from_static("x-litellm-version");
pub const X_LITELLM_RESPONSE_DURATION_MS: HeaderName =
    HeaderName::from_static("x-litellm-response-duration-ms");
pub const X_LITELLM_OVERHEAD_DURATION_MS: HeaderName =
    HeaderName::from_static("x-litellm-overhead-duration-ms");

/// The headers every response from `deployment` carries, LiteLLM's routing headers.
pub fn deployment_headers(deployment: &Deployment) -> Vec<(HeaderName, HeaderValue)> {
    let api_base = deployment.public_api_base();
    [
        (X_LITELLM_MODEL_ID, deployment.id.as_str()),
        (X_LITELLM_MODEL_API_BASE, api_base),
        (X_LITELLM_MODEL_GROUP, deployment.model_name.as_str()),
        (X_LITELLM_VERSION, env!("CARGO_PKG_VERSION")),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name, HeaderValue::from_str(value).ok()?)))
    .collect()
}

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

/// An upstream request header: method, target, and the given headers.
pub fn request_head(
    method: http::Method,
    target: &str,
    headers: HeaderMap,
) -> Option<RequestHeader> {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = target.parse().ok()?;
    parts.headers = headers;
    Some(parts.into())
}

/// Upstream header names seen so far, with their `llm_provider-` forms (per thread, bounded).
const PREFIXED_CACHE_LIMIT: usize = 512;

thread_local! {
    // aHash: SipHash over each upstream header name showed in per-request profiles.
    static PREFIXED: RefCell<ahash::AHashMap<HeaderName, HeaderName>> =
        RefCell::new(ahash::AHashMap::new());
}

/// `llm_provider-<name>`: LiteLLM passes every upstream header on under this prefix.
pub fn provider_prefixed(name: &HeaderName) -> Option<HeaderName> {
    PREFIXED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(p) = cache.get(name) {
            return Some(p.clone());
        }
        let prefixed =
            HeaderName::from_bytes(format!("llm_provider-{}", name.as_str()).as_bytes()).ok()?;
        if cache.len() >= PREFIXED_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(name.clone(), prefixed.clone());
        Some(prefixed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_pingora_headers() {
        let mut head = ResponseHead::new(201, 4);
        head.set(X_REQUEST_ID, "abc");
        head.set(X_LITELLM_MODEL_ID, "bad\nvalue");
        head.set_static(CONTENT_TYPE, "application/json");
        let resp = head.finish();
        assert_eq!(resp.status.as_u16(), 201);
        assert_eq!(resp.headers["x-request-id"], "abc");
        assert!(!resp.headers.contains_key("x-litellm-model-id"));
        let req = request_head(
            http::Method::POST,
            "/v1/chat/completions?x=1",
            HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(req.uri.path(), "/v1/chat/completions");
        assert_eq!(
            provider_prefixed(&HeaderName::from_static("x-ratelimit-remaining")).unwrap(),
            "llm_provider-x-ratelimit-remaining"
        );
    }
}
