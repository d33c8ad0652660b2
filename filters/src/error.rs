//! OpenAI-style API errors: the one error shape every client of Sluice sees.
//!
//! Body: `{"error":{"message","type","param","code"}}`, where `code` is the HTTP status as a
//! string (LiteLLM's `ProxyException` convention; the OpenAI SDKs read `message` and the status).
//! `kind` doubles as the low-cardinality label on failure metrics.

use bytes::Bytes;
use http::StatusCode;

/// An error answered to the client as JSON, with a status, a type and a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// The `type` field: `invalid_request_error`, `auth_error`, `not_found_error`, ...
    pub kind: &'static str,
    pub message: String,
    /// The `param` field; `None` renders as JSON `null`, `Some("None")` as LiteLLM's auth errors do.
    pub param: Option<String>,
    /// Extra response headers, e.g. `retry-after`.
    pub headers: Vec<(&'static str, String)>,
    /// The `code` field; `None` renders the status as a string (LiteLLM's convention). Provider
    /// errors carry the provider's code or a normalized one (`context_length_exceeded`, ...).
    pub code: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            param: None,
            headers: Vec::new(),
            code: None,
        }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            message.into(),
        )
    }

    /// 401 `auth_error`, `param: "None"` as LiteLLM sends it.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "auth_error", message).with_param("None")
    }

    /// A key that is neither the master key nor a known virtual key: LiteLLM's
    /// `token_not_found_in_db` (param `key`), 401.
    pub fn invalid_key(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "token_not_found_in_db", message).with_param("key")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            message,
        )
    }

    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "Request body is larger than the limit of {} MiB (general_settings.max_request_size_mb).",
                limit_bytes / (1024 * 1024)
            ),
        )
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
    }

    /// A request that timed out waiting on the provider: LiteLLM's `litellm.Timeout` (408).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "timeout_error", message)
    }

    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            message,
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let value = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code.clone().unwrap_or_else(|| self.status.as_u16().to_string()),
            }
        });
        Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
    }

    /// The error as a JSON object for an SSE `data:` line (mid-stream failures).
    pub fn sse_event(&self) -> Bytes {
        let mut event = Vec::with_capacity(self.message.len() + 96);
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&self.body());
        event.extend_from_slice(b"\n\n");
        Bytes::from(event)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.kind,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// The error `type` for a status: the one table (`providers.md` 8.10) for the provider errors
/// Sluice writes itself (a translated provider's error, a non-JSON error body) and for every
/// error a Messages client gets (`{"type":"error","error":{"type"}}`, Anthropic's names).
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Who produced a failure, for the `exception_class` metric label's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOrigin {
    /// Sluice's own answer (`Litellm.` prefix). Its 502 means the upstream could not be reached
    /// or broke: LiteLLM's `APIConnectionError`.
    Gateway,
    /// The provider's answer, relayed (`Openai.` prefix: the OpenAI client LiteLLM calls with).
    Provider,
}

macro_rules! exception_classes {
    ($($status:pat => $name:literal),* $(,)?) => {
        /// The `exception_class` label of a failure: LiteLLM's exception class for the status
        /// (`litellm/exceptions.py`), prefixed by who produced it, as LiteLLM's Prometheus
        /// integration labels it. The one status -> class table.
        pub fn exception_class(origin: FailureOrigin, status: u16) -> &'static str {
            if (origin, status) == (FailureOrigin::Gateway, 502) {
                return "Litellm.APIConnectionError";
            }
            let (gateway, provider) = match status {
                $($status => (concat!("Litellm.", $name), concat!("Openai.", $name)),)*
            };
            match origin {
                FailureOrigin::Gateway => gateway,
                FailureOrigin::Provider => provider,
            }
        }
    };
}

exception_classes! {
    400 => "BadRequestError",
    401 => "AuthenticationError",
    402 => "PaymentRequiredError",
    403 => "PermissionDeniedError",
    404 => "NotFoundError",
    408 | 504 => "Timeout",
    422 => "UnprocessableEntityError",
    429 => "RateLimitError",
    499 => "ClientClosedRequest",
    500 => "InternalServerError",
    502 => "BadGatewayError",
    503 | 529 => "ServiceUnavailableError",
    0..=499 => "BadRequestError",
    _ => "APIError",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_classes_use_litellm_names_and_say_who_failed() {
        use FailureOrigin::{Gateway, Provider};
        assert_eq!(exception_class(Provider, 429), "Openai.RateLimitError");
        assert_eq!(exception_class(Gateway, 429), "Litellm.RateLimitError");
        assert_eq!(exception_class(Provider, 502), "Openai.BadGatewayError");
        assert_eq!(exception_class(Gateway, 502), "Litellm.APIConnectionError");
        assert_eq!(exception_class(Provider, 504), "Openai.Timeout");
        assert_eq!(exception_class(Gateway, 401), "Litellm.AuthenticationError");
        assert_eq!(
            exception_class(Provider, 402),
            "Openai.PaymentRequiredError"
        );
        assert_eq!(exception_class(Provider, 418), "Openai.BadRequestError");
        assert_eq!(exception_class(Provider, 507), "Openai.APIError");
        for status in 400..600 {
            let provider = exception_class(Provider, status);
            let gateway = exception_class(Gateway, status);
            assert!(provider.starts_with("Openai.") && gateway.starts_with("Litellm."));
        }
    }

    #[test]
    fn error_types_follow_the_provider_table() {
        let table = [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (402, "billing_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (408, "timeout_error"),
            (413, "request_too_large"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
            (529, "overloaded_error"),
        ];
        for (status, kind) in table {
            assert_eq!(error_type_for_status(status), kind, "{status}");
        }
    }

    #[test]
    fn body_has_the_four_openai_fields_and_code_is_the_status_string() {
        let err = ApiError::bad_request("bad \"thing\"").with_param("model");
        let v: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(v["error"]["message"], "bad \"thing\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "400");
    }

    #[test]
    fn missing_param_is_null_and_auth_errors_say_none_like_litellm() {
        let v: serde_json::Value =
            serde_json::from_slice(&ApiError::not_found("x").body()).unwrap();
        assert!(v["error"]["param"].is_null());
        let v: serde_json::Value =
            serde_json::from_slice(&ApiError::unauthorized("x").body()).unwrap();
        assert_eq!(v["error"]["param"], "None");
        assert_eq!(v["error"]["code"], "401");
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let e = ApiError::bad_gateway("reset").sse_event();
        assert!(e.starts_with(b"data: {\"error\""));
        assert!(e.ends_with(b"\n\n"));
    }
}
