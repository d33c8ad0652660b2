//! The `auth` filter: who is calling (pre-body stage, so a rejected request is never read).
//!
//! A key may arrive as `Authorization: Bearer <key>`, `api-key` (Azure SDK), `x-api-key`
//! (Anthropic SDK), `x-litellm-api-key`, or the header named by
//! `general_settings.litellm_key_header_name`, as LiteLLM accepts them. The master key is
//! compared with a constant-time equality, so the key's content does not show in response
//! timing (its length may; key lengths are not secret).

use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderMap;
use http::header::HeaderName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::chain::{Caller, Filter, Flow, Incoming, RequestCx};
use crate::error::ApiError;
use crate::identity::KeyIdentity;

/// LiteLLM's message when no key was sent.
pub const NO_KEY_MESSAGE: &str = "Authentication Error, No api key passed in.";
/// LiteLLM's message for a key it does not know (without echoing the key or its hash).
pub const INVALID_KEY_MESSAGE: &str = "Authentication Error, Invalid proxy server token passed. Unable to find token in cache or `LiteLLM_VerificationTokenTable`";
/// LiteLLM's message for an `Authorization` header without a `Bearer ` (or `Basic `) scheme.
pub const MALFORMED_KEY_MESSAGE: &str =
    "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix.";

/// A key found in the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentedKey<'h> {
    Key(&'h str),
    /// An `Authorization` header whose scheme is neither `Bearer` nor `Basic`.
    Malformed,
    Missing,
}

/// SHA-256 of a key, the form LiteLLM stores tokens in.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Lower-case hex of [`hash_key`].
pub fn hash_key_hex(key: &str) -> String {
    lower_hex(&hash_key(key))
}

/// Lower-case hex of a digest (key hashes on every virtual-key request, deployment ids at
/// start-up). The digits go into one buffer, checked once, instead of being pushed as `char`s
/// or formatted one byte at a time: half the instructions of the `char` loop.
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = vec![0u8; 2 * bytes.len()];
    for (pair, &b) in hex.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    String::from_utf8(hex).unwrap_or_default()
}

/// The key a client presented, from the first header that carries one, in LiteLLM's order:
/// the configured custom header, `x-litellm-api-key`, `Authorization`, `api-key`, `x-api-key`
/// (Anthropic's SDK), `x-goog-api-key` (Google's), `Ocp-Apim-Subscription-Key` (Azure APIM).
pub fn presented_key<'h>(headers: &'h HeaderMap, custom: Option<&HeaderName>) -> PresentedKey<'h> {
    // Looked up by parsed name: a `&str` name is parsed and checked again on every lookup.
    const X_LITELLM_API_KEY: HeaderName = HeaderName::from_static("x-litellm-api-key");
    const OTHER_KEY_HEADERS: [HeaderName; 4] = [
        HeaderName::from_static("api-key"),
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("x-goog-api-key"),
        HeaderName::from_static("ocp-apim-subscription-key"),
    ];
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(value) = custom.and_then(text) {
        return key_or_missing(strip_scheme(value).unwrap_or(value.trim()));
    }
    if let Some(value) = text(&X_LITELLM_API_KEY) {
        return key_or_missing(strip_scheme(value).unwrap_or(value.trim()));
    }
    if let Some(value) = text(&http::header::AUTHORIZATION) {
        return match strip_scheme(value) {
            Some(key) => key_or_missing(key),
            None if value.trim().is_empty() => PresentedKey::Missing,
            None => PresentedKey::Malformed,
        };
    }
    for name in &OTHER_KEY_HEADERS {
        if let Some(value) = text(name) {
            return key_or_missing(value.trim());
        }
    }
    PresentedKey::Missing
}

/// The credential after a `Bearer ` or `Basic ` scheme (case-insensitive), if there is one.
fn strip_scheme(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("basic"))
        .then(|| rest.trim())
}

fn key_or_missing(s: &str) -> PresentedKey<'_> {
    if s.is_empty() {
        PresentedKey::Missing
    } else {
        PresentedKey::Key(s)
    }
}

/// Looks up virtual keys (the gateway's key store, behind a cache).
#[async_trait]
pub trait KeyResolver: Send + Sync {
    /// The identity of a presented key that is not the master key, or the error to answer
    /// (unknown, blocked, expired, store unavailable).
    async fn resolve(&self, key: &str) -> Result<Arc<KeyIdentity>, ApiError>;
}

/// Checks the master key, then virtual keys when a key store is configured. Without a master
/// key every caller is let through as [`Caller::Open`].
pub struct MasterKeyAuth {
    master_key: Option<Vec<u8>>,
    custom_header: Option<HeaderName>,
    keys: Option<Arc<dyn KeyResolver>>,
}

/// What the head-only check decided.
enum Decision<'h> {
    Caller(Caller),
    /// Not the master key: a virtual key to look up.
    Lookup(&'h str),
}

impl MasterKeyAuth {
    pub fn new(master_key: Option<&str>, custom_header: Option<HeaderName>) -> Self {
        MasterKeyAuth {
            master_key: master_key.map(|k| k.as_bytes().to_vec()),
            custom_header,
            keys: None,
        }
    }

    /// Also accepts virtual keys found by `keys`.
    pub fn with_key_store(mut self, keys: Arc<dyn KeyResolver>) -> Self {
        self.keys = Some(keys);
        self
    }

    fn decide<'h>(
        &self,
        headers: &'h HeaderMap,
        query_key: Option<&'h str>,
    ) -> Result<Decision<'h>, ApiError> {
        let Some(expected) = &self.master_key else {
            return Ok(Decision::Caller(Caller::Open));
        };
        let key = match presented_key(headers, self.custom_header.as_ref()) {
            PresentedKey::Key(key) => key,
            PresentedKey::Missing if query_key.is_some_and(|k| !k.is_empty()) => {
                query_key.unwrap_or_default()
            }
            PresentedKey::Malformed => return Err(ApiError::unauthorized(MALFORMED_KEY_MESSAGE)),
            PresentedKey::Missing => return Err(ApiError::unauthorized(NO_KEY_MESSAGE)),
        };
        if bool::from(key.as_bytes().ct_eq(expected.as_slice())) {
            Ok(Decision::Caller(Caller::MasterKey))
        } else if self.keys.is_some() {
            Ok(Decision::Lookup(key))
        } else {
            Err(ApiError::invalid_key(INVALID_KEY_MESSAGE))
        }
    }

    /// Decides who the caller is from the request headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        self.authenticate_with(headers, None).await
    }

    /// As [`Self::authenticate`], with a key from the query string (`?key=`, Google's SDKs on
    /// the Gemini pass-through route) taken when no header carries one.
    pub async fn authenticate_with(
        &self,
        headers: &HeaderMap,
        query_key: Option<&str>,
    ) -> Result<Caller, ApiError> {
        match self.decide(headers, query_key)? {
            Decision::Caller(c) => Ok(c),
            Decision::Lookup(key) => match &self.keys {
                Some(keys) => keys.resolve(key).await.map(Caller::Key),
                None => Err(ApiError::invalid_key(INVALID_KEY_MESSAGE)),
            },
        }
    }
}

#[async_trait]
impl Filter for MasterKeyAuth {
    fn name(&self) -> &'static str {
        "auth"
    }

    async fn on_request(&self, req: &Incoming<'_>, cx: &mut RequestCx) -> Flow {
        if !cx.endpoint().needs_auth() {
            return Flow::Continue;
        }
        // Google's SDKs send the key as `?key=`; LiteLLM reads it there on `/gemini/*`.
        let query_key = match cx.endpoint() {
            crate::Endpoint::PassThrough(crate::endpoint::PassThroughProvider::Gemini) => req
                .query
                .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("key="))),
            _ => None,
        };
        match self.authenticate_with(req.headers, query_key).await {
            Ok(caller) => {
                cx.caller = caller;
                Flow::Continue
            }
            Err(e) => Flow::Reject(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn litellm_token_hash_matches() {
        assert_eq!(
            hash_key_hex("sk-1234"),
            "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn accepts_every_litellm_header() {
        let auth = MasterKeyAuth::new(Some("sk-1234"), Some(HeaderName::from_static("x-custom")));
        for h in [
            headers(&[("authorization", "Bearer sk-1234")]),
            headers(&[("authorization", "bearer   sk-1234")]),
            headers(&[("authorization", "Basic sk-1234")]),
            headers(&[("api-key", "sk-1234")]),
            headers(&[("x-api-key", "sk-1234")]),
            headers(&[("x-litellm-api-key", "Bearer sk-1234")]),
            headers(&[("x-custom", "sk-1234")]),
        ] {
            assert_eq!(
                block_on(auth.authenticate(&h)),
                Ok(Caller::MasterKey),
                "{h:?}"
            );
        }
    }

    #[test]
    fn wrong_or_missing_key_is_401() {
        let auth = MasterKeyAuth::new(Some("sk-1234"), None);
        let e = block_on(auth.authenticate(&headers(&[("authorization", "Bearer sk-12345")])))
            .unwrap_err();
        assert_eq!(e.status.as_u16(), 401);
        assert!(!e.message.contains("sk-12345"));
        let e = block_on(auth.authenticate(&HeaderMap::new())).unwrap_err();
        assert_eq!(e.message, NO_KEY_MESSAGE);
        let e = block_on(auth.authenticate(&headers(&[("authorization", "Bearer ")]))).unwrap_err();
        assert_eq!(e.message, NO_KEY_MESSAGE);
        let e = block_on(auth.authenticate(&headers(&[("authorization", "sk-1234")]))).unwrap_err();
        assert_eq!(e.message, MALFORMED_KEY_MESSAGE);
    }

    #[test]
    fn without_master_key_everyone_is_open() {
        let auth = MasterKeyAuth::new(None, None);
        assert_eq!(
            block_on(auth.authenticate(&HeaderMap::new())),
            Ok(Caller::Open)
        );
    }
}
