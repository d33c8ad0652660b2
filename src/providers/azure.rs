//! Azure OpenAI codec (`azure/<deployment>`): OpenAI's bodies and responses, but the deployment
//! in the URL, a mandatory `api-version` query parameter and the `api-key` header (or an Entra
//! ID bearer token). Called by the forwarder inside Pingora's `request_filter`.
//!
//! URL as LiteLLM builds it (`litellm-reference.md` 6.1b):
//! `{api_base}/openai/deployments/{deployment}/chat/completions?api-version={api_version}`.

use http::HeaderValue;

use filters::Endpoint;

pub use crate::config::provider_catalog::AZURE_DEFAULT_API_VERSION as DEFAULT_API_VERSION;

/// The request target for `endpoint` on deployment `deployment`.
pub fn target(base_path: &str, deployment: &str, endpoint: Endpoint, api_version: &str) -> String {
    let base = base_path.trim_end_matches('/');
    // A base that already names the deployment path is used as is (some configs write it so).
    let prefix = if base.contains("/openai/deployments/") {
        base.to_string()
    } else {
        format!(
            "{base}/openai/deployments/{}",
            super::path::segment(deployment)
        )
    };
    format!(
        "{prefix}{}?api-version={}",
        endpoint.upstream_path(),
        super::path::segment(api_version)
    )
}

/// The Responses API's target, as LiteLLM builds it: `{api_base}/openai/responses` with the
/// deployment's `api-version`, except that dated GA versions (`2024-10-21`), which predate the
/// API on Azure and 404 there, become `preview`, as does a missing one. The model travels in
/// the body.
pub fn responses_target(base_path: &str, api_version: Option<&str>) -> String {
    let base = base_path.trim_end_matches('/');
    let dated = |v: &str| {
        v.len() == 10
            && v.bytes().enumerate().all(|(i, b)| {
                if i == 4 || i == 7 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    let version = api_version.filter(|v| !dated(v)).unwrap_or("preview");
    let path = if base.ends_with("/openai/v1") {
        format!("{base}/responses")
    } else {
        format!("{base}/openai/responses")
    };
    format!("{path}?api-version={}", super::path::segment(version))
}

/// Auth headers: `api-key: <key>`, or `Authorization: Bearer <token>` with an Entra ID token.
pub fn auth_headers(key: Option<&str>, ad_token: Option<&str>, headers: &mut http::HeaderMap) {
    headers.remove(http::header::AUTHORIZATION);
    if let Some(token) = ad_token {
        if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {token}")) {
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
    } else if let Some(key) = key
        && let Ok(mut v) = HeaderValue::from_str(key)
    {
        v.set_sensitive(true);
        headers.insert("api-key", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_litellm_deployment_urls() {
        assert_eq!(
            target("", "gpt-4o-prod", Endpoint::ChatCompletions, "2024-10-21"),
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            target("/proxy/", "emb", Endpoint::Embeddings, "2024-02-01"),
            "/proxy/openai/deployments/emb/embeddings?api-version=2024-02-01"
        );
    }

    #[test]
    fn responses_go_to_the_resource_with_a_responses_api_version() {
        assert_eq!(
            responses_target("", Some("2024-10-21")),
            "/openai/responses?api-version=preview"
        );
        assert_eq!(
            responses_target("/", Some("2025-04-01-preview")),
            "/openai/responses?api-version=2025-04-01-preview"
        );
        assert_eq!(
            responses_target("/openai/v1", None),
            "/openai/v1/responses?api-version=preview"
        );
    }

    #[test]
    fn key_goes_in_api_key_and_tokens_in_authorization_never_both() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer k"),
        );
        auth_headers(Some("k"), None, &mut h);
        assert_eq!(h["api-key"], "k");
        assert!(h.get("authorization").is_none());
        let mut h = http::HeaderMap::new();
        auth_headers(Some("k"), Some("tok"), &mut h);
        assert_eq!(h["authorization"], "Bearer tok");
        assert!(h.get("api-key").is_none());
    }
}
