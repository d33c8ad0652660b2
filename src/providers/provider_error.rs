//! Upstream failures in OpenAI's terms: the error class routing acts on (retry, fall back to a
//! larger-context model or another provider, give up), read from a provider's status and body,
//! and the OpenAI-style error the client sees (`providers.md` 8.10). Pure functions, called
//! when an attempt fails (Pingora's `request_filter`).

use filters::ApiError;
use serde_json::Value;

/// The class of an upstream failure (8.10), what routing acts on: retry, fall back to a
/// larger-context model or another provider, or give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 429 everywhere, Anthropic's 529 `overloaded_error`, Bedrock's throttling: retry after
    /// `retry-after` or with backoff.
    RateLimited,
    /// 500, 502, 503 and friends: transient, retry with backoff or on another deployment.
    Unavailable,
    /// 408, 504: the provider timed out.
    Timeout,
    /// Fall back to a larger-context model; retrying does not help.
    ContextWindowExceeded,
    /// Fall back to another provider or model.
    ContentPolicy,
    /// 401, 403: only a deployment with other credentials can help.
    Auth,
    NotFound,
    BadRequest,
    /// Quota or billing exhausted: a 429 or 402 that retrying does not fix.
    QuotaExhausted,
}

impl ErrorClass {
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimited | ErrorClass::Unavailable | ErrorClass::Timeout
        )
    }
}

/// Classifies an OpenAI-format error body as an OpenAI-compatible upstream sent it (OpenAI,
/// Azure, vLLM, ...): `code` first, then the message patterns of `providers.md` 8.10.
pub fn classify_openai_body(status: u16, body: &[u8]) -> ErrorClass {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error").unwrap_or(&v);
    let code = e.get("code").and_then(Value::as_str).unwrap_or_default();
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut error = ApiError::new(
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY),
        "api_error",
        "",
    );
    if code == "context_length_exceeded" || message.contains("maximum context length") {
        error.code = Some("context_length_exceeded".into());
    } else if code == "content_filter" || code == "content_policy_violation" {
        error.code = Some("content_filter".into());
    } else if !code.is_empty() {
        error.code = Some(code.to_string());
    }
    classify(&error)
}

/// Classifies an error as the client sees it (status and `code`).
pub fn classify(error: &ApiError) -> ErrorClass {
    match error.code.as_deref() {
        Some("context_length_exceeded") => return ErrorClass::ContextWindowExceeded,
        Some("content_filter" | "content_policy_violation") => return ErrorClass::ContentPolicy,
        Some("insufficient_quota" | "billing_error") => return ErrorClass::QuotaExhausted,
        _ => {}
    }
    match error.status.as_u16() {
        429 | 529 => ErrorClass::RateLimited,
        408 | 504 => ErrorClass::Timeout,
        401 | 403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        402 => ErrorClass::QuotaExhausted,
        s if s >= 500 => ErrorClass::Unavailable,
        _ => ErrorClass::BadRequest,
    }
}

/// What a provider's error body said, before mapping.
#[derive(Debug, Default)]
pub struct ProviderFailure<'a> {
    pub message: String,
    /// The provider's own code or type (`overloaded_error`, `RESOURCE_EXHAUSTED`, ...).
    pub code: Option<&'a str>,
    pub context_window: bool,
    pub content_policy: bool,
    pub quota: bool,
}

/// The client's error for an upstream failure (8.10): the upstream status kept (529 too),
/// `type` from the status, `code` normalized for the three classes clients branch on and the
/// provider's own code otherwise.
pub fn upstream_error(status: u16, failure: ProviderFailure<'_>) -> ApiError {
    let status_code = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let kind = filters::error_type_for_status(status);
    let code = if failure.context_window {
        Some("context_length_exceeded")
    } else if failure.content_policy {
        Some("content_filter")
    } else if failure.quota {
        Some(failure.code.unwrap_or("insufficient_quota"))
    } else if status == 429 {
        Some("rate_limit_exceeded")
    } else {
        failure.code
    };
    let message = if failure.message.is_empty() {
        format!("upstream deployment answered {status} with an empty body")
    } else {
        failure.message
    };
    let mut e = ApiError::new(status_code, kind, message);
    if let Some(code) = code {
        e = e.with_code(code);
    }
    e
}

/// Message of a body that is not in the provider's error format (a proxy's HTML page...).
pub fn raw_message(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(2000)
        .collect()
}
