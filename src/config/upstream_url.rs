//! A deployment's base URL (`api_base`) as validated data: scheme, host, port, path and query,
//! read once from the config. Pingora-free: the upstream endpoints (`upstream.rs`) and the
//! providers' request targets are built from it.

/// An `http(s)://host[:port][/path][?query]` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path without a trailing slash (may be empty).
    pub path: String,
    pub query: Option<String>,
}

impl UpstreamUrl {
    pub fn parse(url: &str) -> Result<UpstreamUrl, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(format!("scheme {other:?} is not http or https")),
            None => return Err("it has no http:// or https:// scheme".into()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("it has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(UpstreamUrl {
            tls,
            host,
            port,
            path: uri.path().trim_end_matches('/').to_string(),
            query: uri.query().map(str::to_owned),
        })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The request target for `suffix` under this base (query string kept).
    pub fn target(&self, suffix: &str) -> String {
        let mut t = String::with_capacity(self.path.len() + suffix.len() + 16);
        t.push_str(&self.path);
        t.push_str(suffix);
        if t.is_empty() {
            t.push('/');
        }
        if let Some(q) = &self.query {
            t.push('?');
            t.push_str(q);
        }
        t
    }

    pub(crate) fn authority_key(&self) -> (bool, String, u16) {
        (self.tls, self.host.clone(), self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bases_like_litellm_uses_them() {
        let u = UpstreamUrl::parse("https://api.openai.com/v1").unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("api.openai.com", 443));
        assert_eq!(u.target("/chat/completions"), "/v1/chat/completions");
        assert_eq!(u.host_header(), "api.openai.com");
        let u = UpstreamUrl::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(u.target("/chat/completions"), "/chat/completions");
        assert_eq!(u.host_header(), "127.0.0.1:8000");
        let u = UpstreamUrl::parse("http://[::1]:9/x?k=v").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.host_header(), "[::1]:9");
        assert_eq!(u.target("/embeddings"), "/x/embeddings?k=v");
        assert!(UpstreamUrl::parse("ftp://x").is_err());
        assert!(UpstreamUrl::parse("localhost:8000").is_err());
        assert!(UpstreamUrl::parse("not a url").is_err());
    }
}
