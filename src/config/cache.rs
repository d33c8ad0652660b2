//! `litellm_settings.cache` and `cache_params`: the response cache's settings, read as LiteLLM
//! reads them (`type` defaults to `redis`, whose host comes from `cache_params` or the
//! `REDIS_*` variables; TTLs of 600 s in process and 60 s in Redis; `mode`; `max_messages` 4).
//! Start-up only.

use std::time::Duration;

use serde_yaml::Value;

use super::{Builder, Entries, get};

/// `cache_params` keys Sluice acts on.
const ACTED: &[&str] = &[
    "type",
    "host",
    "port",
    "password",
    "url",
    "db",
    "ssl",
    "namespace",
    "ttl",
    "default_in_memory_ttl",
    "default_in_redis_ttl",
    "mode",
    "supported_call_types",
    "max_messages",
    "scope",
];
/// Cache types LiteLLM has that Sluice does not serve yet: the cache is off with a warning.
const NOT_YET: &[&str] = &[
    "redis-semantic",
    "valkey-semantic",
    "qdrant-semantic",
    "s3",
    "gcs",
    "azure-blob",
];

/// The response cache's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// `type: redis` (the default): entries shared through this Redis; `None` for `local`.
    pub redis_url: Option<String>,
    /// `cache_params.namespace`: every key's prefix.
    pub namespace: Option<String>,
    /// `cache_params.ttl`; else the type's default below.
    pub ttl: Option<Duration>,
    pub default_in_memory_ttl: Duration,
    pub default_in_redis_ttl: Duration,
    /// `mode: default_on` (the default); `default_off` caches only requests that ask
    /// (`cache: {"use-cache": true}`).
    pub default_on: bool,
    /// Requests with more messages are neither read nor written (LiteLLM's default 4).
    pub max_messages: usize,
    /// Chat completions are cached (`supported_call_types` has `acompletion` or `completion`).
    pub chat: bool,
    /// `scope` (Sluice's): entries shared by everyone (`global`, the default, as LiteLLM), or
    /// only within one key's or one team's requests.
    pub scope: CacheScope,
}

/// Who shares cache entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    Global,
    Key,
    Team,
}

impl CacheSettings {
    /// A write's TTL when the request sets none.
    pub fn ttl(&self) -> Duration {
        self.ttl.unwrap_or(if self.redis_url.is_some() {
            self.default_in_redis_ttl
        } else {
            self.default_in_memory_ttl
        })
    }
}

impl Builder<'_> {
    /// The cache's settings, when `litellm_settings.cache` is true and its type is served.
    pub(super) fn cache(&mut self, litellm: &Entries<'_>) -> Option<CacheSettings> {
        let on = get(litellm, "cache").and_then(|v| self.boolean(v, "litellm_settings.cache"));
        if on != Some(true) {
            return None;
        }
        let empty = serde_yaml::Mapping::new();
        let params = match get(litellm, "cache_params") {
            None | Some(Value::Null) => &empty,
            Some(Value::Mapping(m)) => m,
            Some(_) => {
                self.report.error(
                    "litellm_settings.cache_params",
                    "must be a mapping (type, host, port, ttl, ...)",
                );
                return None;
            }
        };
        let param = |name: &str| params.get(name);
        for (k, _) in params {
            let Some(name) = k.as_str() else { continue };
            if !ACTED.contains(&name) {
                let hint = super::keys::did_you_mean(name, ACTED)
                    .map(|h| format!(" (did you mean {h:?}?)"))
                    .unwrap_or_default();
                self.report.warn(
                    &format!("litellm_settings.cache_params.{name}"),
                    format!("accepted but not acted on{hint}"),
                );
            }
        }
        let path = |name: &str| format!("litellm_settings.cache_params.{name}");
        let kind = param("type")
            .and_then(|v| self.string(v, &path("type")))
            .unwrap_or_else(|| "redis".into());
        let redis = match kind.as_str() {
            "redis" => true,
            "local" => false,
            t if NOT_YET.contains(&t) => {
                self.report.warn(
                    &path("type"),
                    format!("{t:?} is not served yet: the response cache is off (use \"redis\" or \"local\")"),
                );
                return None;
            }
            other => {
                self.report.error(
                    &path("type"),
                    format!("unknown cache type {other:?} (Sluice serves \"redis\" and \"local\")"),
                );
                return None;
            }
        };
        let seconds = |b: &mut Self, name: &str| {
            param(name)
                .and_then(|v| b.positive_f64(v, &path(name)))
                .map(Duration::from_secs_f64)
        };
        let ttl = seconds(self, "ttl");
        let default_in_memory_ttl =
            seconds(self, "default_in_memory_ttl").unwrap_or(Duration::from_secs(600));
        let default_in_redis_ttl =
            seconds(self, "default_in_redis_ttl").unwrap_or(Duration::from_secs(60));
        let default_on = match param("mode").and_then(|v| self.string(v, &path("mode"))) {
            None => true,
            Some(m) if m == "default_on" => true,
            Some(m) if m == "default_off" => false,
            Some(m) => {
                self.report.error(
                    &path("mode"),
                    format!("{m:?} is not a cache mode (default_on or default_off)"),
                );
                true
            }
        };
        let max_messages = param("max_messages")
            .and_then(|v| self.positive_u64(v, &path("max_messages")))
            .map_or(4, |n| n as usize);
        let chat = match param("supported_call_types") {
            None => true,
            Some(Value::Sequence(types)) => types
                .iter()
                .any(|t| matches!(t.as_str(), Some("acompletion" | "completion"))),
            Some(_) => {
                self.report.error(
                    &path("supported_call_types"),
                    "must be a list of call types",
                );
                true
            }
        };
        let namespace = param("namespace").and_then(|v| self.string(v, &path("namespace")));
        let scope = match param("scope").and_then(|v| self.string(v, &path("scope"))) {
            None => CacheScope::Global,
            Some(s) if s == "global" => CacheScope::Global,
            Some(s) if s == "key" => CacheScope::Key,
            Some(s) if s == "team" => CacheScope::Team,
            Some(s) => {
                self.report.error(
                    &path("scope"),
                    format!("{s:?} is not a cache scope (global, key or team)"),
                );
                CacheScope::Global
            }
        };
        let redis_url = redis.then(|| self.cache_redis_url(params));
        Some(CacheSettings {
            redis_url,
            namespace,
            ttl,
            default_in_memory_ttl,
            default_in_redis_ttl,
            default_on,
            max_messages,
            chat,
            scope,
        })
    }

    /// `cache_params.url`, else `host`/`port`/`password`/`db`/`ssl`, each else its `REDIS_*`
    /// variable, else Redis on localhost (LiteLLM's client default).
    fn cache_redis_url(&mut self, params: &serde_yaml::Mapping) -> String {
        let env = self.env;
        let path = |name: &str| format!("litellm_settings.cache_params.{name}");
        let text = |b: &mut Self, name: &str, var: &str| {
            params
                .get(name)
                .and_then(|v| match v {
                    Value::Number(n) => Some(n.to_string()),
                    other => b.string(other, &path(name)),
                })
                .or_else(|| env.get(var))
                .filter(|s| !s.is_empty())
        };
        if let Some(url) = text(self, "url", "REDIS_URL") {
            return url;
        }
        let host = text(self, "host", "REDIS_HOST").unwrap_or_else(|| "localhost".into());
        let port = text(self, "port", "REDIS_PORT").unwrap_or_else(|| "6379".into());
        let password = text(self, "password", "REDIS_PASSWORD");
        let db = text(self, "db", "REDIS_DB");
        let ssl = params.get("ssl").and_then(Value::as_bool) == Some(true)
            || env
                .get("REDIS_SSL")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let scheme = if ssl { "rediss" } else { "redis" };
        let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
        let db = db.map(|d| format!("/{d}")).unwrap_or_default();
        format!("{scheme}://{auth}{host}:{port}{db}")
    }
}
