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
