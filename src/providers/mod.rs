//! Providers: how a deployment's `model: <prefix>/<id>` becomes an upstream URL, credentials and
//! wire format. Called at start-up (config validation) and by the forwarder inside
//! `request_filter` (encoding each attempt).
//!
//! Each OpenAI-compatible prefix has LiteLLM's default `api_base` and API-key variables
//! (`litellm/litellm_core_utils/get_llm_provider_logic.py`, the providers' `*Config` classes), so
//! a LiteLLM config means the same upstream here. Providers with their own wire format get one
//! file each as they are implemented.

pub mod anthropic;
pub mod audio_duration;
pub mod azure;
pub mod bedrock;
pub mod codec;
pub mod cohere;
pub mod content_encoding;
pub mod embeddings;
pub mod gemini;
pub mod messages_api;
pub mod ollama;
pub mod openai;
pub mod openai_response;
pub mod pass_through_usage;
pub mod path;
pub mod provider_error;
pub mod responses_api;
#[cfg(test)]
mod robustness_tests;
pub mod sse;
#[cfg(test)]
pub(crate) mod testing;
pub mod translate;
pub mod translated_stream;

pub use crate::config::provider_catalog::{
    NOT_YET_TRANSLATED, OPENAI_COMPATIBLE, ProviderSpec, TRANSLATED, Wire, docs_row,
    known_provider_names, openai_compatible, spec,
};

/// The headers every upstream request of a deployment carries, for its wire format.
pub fn deployment_headers(d: &crate::config::DeploymentConfig) -> http::HeaderMap {
    let mut headers = openai::base_headers(&d.deployment, &d.static_headers);
    let key = d.deployment.api_key.as_ref().map(|k| k.expose());
    match d.wire {
        Some(Wire::Azure) => azure::auth_headers(
            key,
            d.azure_ad_token.as_ref().map(|t| t.expose()),
            &mut headers,
        ),
        Some(Wire::Anthropic) => anthropic::base_headers(key, &mut headers),
        Some(Wire::Gemini) => gemini::base_headers(key, &mut headers),
        // Signed per request (SigV4) or a Bedrock API key, in bedrock::encode.
        Some(Wire::Bedrock) => {
            headers.remove(http::header::AUTHORIZATION);
        }
        _ => {}
    }
    // Credentials in the URL (`http://user:pass@proxy/v1`, a basic-auth proxy in front of a
    // self-hosted server): sent as basic auth when nothing else authenticates the request, as
    // httpx (LiteLLM's client) does. They are never shown (`public_api_base`).
    if !headers.contains_key(http::header::AUTHORIZATION)
        && let Some(basic) = basic_auth_of(&d.deployment.api_base)
    {
        headers.insert(http::header::AUTHORIZATION, basic);
    }
    // Configured extra headers win over the defaults (e.g. `anthropic-version`, `anthropic-beta`).
    for (name, value) in &d.deployment.extra_headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    headers
}

/// The credentials a deployment sends upstream, as text: redacted from whatever an upstream
/// sends back that Sluice relays (an error body that echoes the key it was given). Values
/// under 6 characters are left out (too short to be a credential, too likely to be text).
pub fn deployment_secrets(d: &crate::config::DeploymentConfig) -> Vec<Box<str>> {
    let mut secrets: Vec<String> = Vec::new();
    if let Some(k) = &d.deployment.api_key {
        secrets.push(k.expose().to_string());
    }
    if let Some(t) = &d.azure_ad_token {
        secrets.push(t.expose().to_string());
    }
    match &d.aws {
        Some(bedrock::AwsAuth::SigV4 {
            secret_access_key,
            session_token,
            ..
        }) => {
            secrets.push(secret_access_key.expose().to_string());
            if let Some(t) = session_token {
                secrets.push(t.expose().to_string());
            }
        }
        Some(bedrock::AwsAuth::ApiKey(k)) => secrets.push(k.expose().to_string()),
        None => {}
    }
    if let Some(rest) = d.deployment.api_base.split_once("://").map(|(_, r)| r) {
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            secrets.push(percent_decode(password));
        }
        if let Some(query) = rest.split_once('?').map(|(_, q)| q) {
            // `?key=...` (Gemini) and the like.
            secrets.extend(
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(_, v)| percent_decode(v)),
            );
        }
    }
    for (name, value) in &d.deployment.extra_headers {
        let name = name.to_ascii_lowercase();
        if ["auth", "key", "token", "secret", "cookie"]
            .iter()
            .any(|w| name.contains(w))
        {
            secrets.push(value.strip_prefix("Bearer ").unwrap_or(value).to_string());
        }
    }
    // As they may appear in a JSON error body: escaped (`"`, `\`), and `/` as `\/`.
    let escaped: Vec<String> = secrets
        .iter()
        .flat_map(|s| {
            let json = serde_json::to_string(s).unwrap_or_default();
            let json = json.trim_matches('"').to_string();
            let slashes = s.replace('/', "\\/");
            [json, slashes]
        })
        .collect();
    secrets.extend(escaped);
    secrets.sort();
    secrets.dedup();
    // Longest first: a secret that contains another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
        .into_iter()
        .filter(|s| s.len() >= 6)
        .map(String::into_boxed_str)
        .collect()
}

/// `body` with every occurrence of each secret replaced by `[REDACTED]` (unchanged, and not
/// copied, when none occurs).
/// [`redact`] for text.
pub fn redact_str(text: &str, secrets: &[Box<str>]) -> String {
    let body = redact(bytes::Bytes::copy_from_slice(text.as_bytes()), secrets);
    String::from_utf8_lossy(&body).into_owned()
}

pub fn redact(body: bytes::Bytes, secrets: &[Box<str>]) -> bytes::Bytes {
    if !secrets
        .iter()
        .any(|s| memchr::memmem::find(&body, s.as_bytes()).is_some())
    {
        return body;
    }
    let mut text = body.to_vec();
    for secret in secrets {
        let finder = memchr::memmem::Finder::new(secret.as_bytes());
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        for hit in finder.find_iter(&text) {
            out.extend_from_slice(&text[at..hit]);
            out.extend_from_slice(b"[REDACTED]");
            at = hit + secret.len();
        }
        out.extend_from_slice(&text[at..]);
        text = out;
    }
    bytes::Bytes::from(text)
}

/// `Authorization: Basic ...` for the userinfo of `url`, if it has one.
fn basic_auth_of(url: &str) -> Option<http::HeaderValue> {
    use base64::Engine as _;
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decoded = format!("{}:{}", percent_decode(user), percent_decode(password));
    let mut value = http::HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(decoded)
    ))
    .ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_are_redacted_wherever_they_appear() {
        let secrets: Vec<Box<str>> = vec!["sk-live-123456".into(), "hunter22".into()];
        let body = bytes::Bytes::from_static(
            b"{\"error\":{\"message\":\"bad key sk-live-123456 (sk-live-123456), pw hunter22\"}}",
        );
        assert_eq!(
            &super::redact(body, &secrets)[..],
            &b"{\"error\":{\"message\":\"bad key [REDACTED] ([REDACTED]), pw [REDACTED]\"}}"[..]
        );
        let clean = bytes::Bytes::from_static(b"nothing here");
        assert_eq!(
            super::redact(clean.clone(), &secrets).as_ptr(),
            clean.as_ptr()
        );
    }

    #[test]
    fn url_credentials_become_basic_auth() {
        let v = super::basic_auth_of("http://al%40ice:p%3Ass@host:8080/v1?x=1").unwrap();
        // base64("al@ice:p:ss")
        assert_eq!(v, "Basic YWxAaWNlOnA6c3M=");
        assert!(v.is_sensitive());
        assert!(super::basic_auth_of("http://host/v1").is_none());
        assert!(super::basic_auth_of("http://host/v1/a@b").is_none());
    }
}
