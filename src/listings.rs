//! Answers computed by the gateway itself (no upstream): the model listings and health, with
//! LiteLLM's JSON shapes. Called from `request_filter`.
//!
//! The config is immutable while the process runs, so the listings are rendered once at
//! start-up; a request copies a reference-counted buffer.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::config::{DeploymentConfig, RuntimeConfig};
use crate::http_query::query_param;

/// LiteLLM's constant `created` for `/models` entries (`DEFAULT_MODEL_CREATED_AT_TIME`).
const MODEL_CREATED_AT: u64 = 1_677_610_602;

/// OpenAI chat parameters an OpenAI-compatible deployment accepts (`supported_openai_params`).
const OPENAI_CHAT_PARAMS: &[&str] = &[
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "max_tokens",
    "max_completion_tokens",
    "modalities",
    "prediction",
    "n",
    "presence_penalty",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "function_call",
    "functions",
    "max_retries",
    "extra_headers",
    "parallel_tool_calls",
    "response_format",
    "user",
    "reasoning_effort",
];

/// Which model a caller may see, by (name a client sends, model group): a virtual key sees the
/// models its key, team and user may call, as LiteLLM lists them.
pub type Visible<'a> = &'a dyn Fn(&str, &str) -> bool;

/// Pre-rendered listings.
pub struct Listings {
    /// `/models` for callers who see everything.
    models: Bytes,
    /// `/models` entries: (name, its group, entry).
    model_entries: Vec<(String, String, Value)>,
    /// (deployment id, its group, entry).
    model_info: Vec<(String, String, Value)>,
    model_groups: Vec<(String, Value)>,
}

impl Listings {
    pub fn new(config: &RuntimeConfig) -> Listings {
        let model_entries: Vec<(String, String, Value)> = config
            .router
            .public_model_names()
            .into_iter()
            .map(|id| {
                let group = config
                    .router
                    .resolve(&id)
                    .map_or_else(|| id.clone(), |(g, _)| g.name.to_string());
                let entry = json!({"id": id, "object": "model", "created": MODEL_CREATED_AT, "owned_by": "openai"});
                (id, group, entry)
            })
            .collect();
        let models = models_body(model_entries.iter().map(|(_, _, v)| v));
        let model_info = config
            .deployments
            .iter()
            .map(|d| {
                (
                    d.deployment.id.clone(),
                    d.deployment.model_name.clone(),
                    model_info_entry(d),
                )
            })
            .collect();
        let model_groups = config
            .router
            .groups()
            .iter()
            .map(|g| {
                let members: Vec<&DeploymentConfig> = g
                    .deployments
                    .iter()
                    .map(|d| config.deployment(d.index))
                    .collect();
                (g.name.to_string(), model_group_entry(&g.name, &members))
            })
            .collect();
        Listings {
            models,
            model_entries,
            model_info,
            model_groups,
        }
    }

    /// `GET /models`: everything, or (`visible`) what the caller may call.
    pub fn models(&self, visible: Option<Visible<'_>>) -> Bytes {
        match visible {
            None => self.models.clone(),
            Some(visible) => models_body(
                self.model_entries
                    .iter()
                    .filter(|(name, group, _)| visible(name, group))
                    .map(|(_, _, v)| v),
            ),
        }
    }

    /// `GET /v1/models/{id}`: the entry `/v1/models` lists under that id, if the caller sees it.
    pub fn model(&self, id: &str, visible: Option<Visible<'_>>) -> Option<Bytes> {
        self.model_entries
            .iter()
            .find(|(name, group, _)| name == id && visible.is_none_or(|v| v(name, group)))
            .map(|(_, _, v)| Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
    }

    /// `GET /model/info[?litellm_model_id=]`.
    pub fn model_info(&self, query: Option<&str>, visible: Option<Visible<'_>>) -> Bytes {
        let wanted = query_param(query, "litellm_model_id");
        let data: Vec<&Value> = self
            .model_info
            .iter()
            .filter(|(id, group, _)| {
                wanted.as_deref().is_none_or(|w| w == id) && visible.is_none_or(|v| v(group, group))
            })
            .map(|(_, _, v)| v)
            .collect();
        Bytes::from(serde_json::to_vec(&json!({ "data": data })).unwrap_or_default())
    }

    /// `GET /model_group/info[?model_group=]`.
    pub fn model_group_info(&self, query: Option<&str>, visible: Option<Visible<'_>>) -> Bytes {
        let wanted = query_param(query, "model_group");
        let data: Vec<&Value> = self
            .model_groups
            .iter()
            .filter(|(name, _)| {
                wanted.as_deref().is_none_or(|w| w == name) && visible.is_none_or(|v| v(name, name))
            })
            .map(|(_, v)| v)
            .collect();
        Bytes::from(serde_json::to_vec(&json!({ "data": data })).unwrap_or_default())
    }
}

fn models_body<'a>(entries: impl Iterator<Item = &'a Value>) -> Bytes {
    let data: Vec<&Value> = entries.collect();
    Bytes::from(serde_json::to_vec(&json!({"data": data, "object": "list"})).unwrap_or_default())
}

fn model_info_entry(d: &DeploymentConfig) -> Value {
    let mut info = match &d.model_info {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    info.insert("db_model".into(), Value::Bool(false));
    info.entry("mode")
        .or_insert_with(|| Value::String(d.mode.clone()));
    if let Some(price) = &d.price
        && let Ok(Value::Object(fields)) = serde_json::to_value(price)
    {
        for (k, v) in fields {
            info.entry(k).or_insert(v);
        }
    }
    json!({
        "model_name": d.deployment.model_name,
        "litellm_params": d.public_params,
        "model_info": info,
    })
}

fn model_group_entry(name: &str, members: &[&DeploymentConfig]) -> Value {
    let providers: BTreeSet<&str> = members
        .iter()
        .map(|d| d.deployment.provider.as_str())
        .collect();
    let max_u64 =
        |f: fn(&DeploymentConfig) -> Option<u64>| members.iter().filter_map(|d| f(d)).max();
    let max_f64 = |f: fn(&DeploymentConfig) -> Option<f64>| {
        members.iter().filter_map(|d| f(d)).max_by(f64::total_cmp)
    };
    let any = |f: fn(&DeploymentConfig) -> Option<bool>| members.iter().any(|d| f(d) == Some(true));
    let sum = |f: fn(&DeploymentConfig) -> Option<u64>| {
        let values: Vec<u64> = members.iter().filter_map(|d| f(d)).collect();
        (!values.is_empty()).then(|| values.iter().sum::<u64>())
    };
    let mode = members.first().map_or("chat", |d| d.mode.as_str());
    json!({
        "model_group": name,
        "providers": providers,
        "max_input_tokens": max_u64(|d| d.price.as_ref()?.max_input_tokens),
        "max_output_tokens": max_u64(|d| d.price.as_ref().and_then(|p| p.max_output_tokens.or(p.max_tokens))),
        "input_cost_per_token": max_f64(|d| d.price.as_ref()?.input_cost_per_token),
        "output_cost_per_token": max_f64(|d| d.price.as_ref()?.output_cost_per_token),
        "input_cost_per_pixel": max_f64(|d| d.price.as_ref()?.input_cost_per_pixel),
        "mode": mode,
        "tpm": sum(|d| d.deployment.tpm),
        "rpm": sum(|d| d.deployment.rpm),
        "itpm": null,
        "otpm": null,
        "supports_parallel_function_calling": any(|d| d.price.as_ref()?.supports_parallel_function_calling),
        "supports_vision": any(|d| d.price.as_ref()?.supports_vision),
        "supports_web_search": any(|d| d.price.as_ref()?.supports_web_search),
        "supports_url_context": false,
        "supports_reasoning": any(|d| d.price.as_ref()?.supports_reasoning),
        "supports_function_calling": any(|d| d.price.as_ref()?.supports_function_calling),
        "supported_reasoning_efforts": null,
        "supported_openai_params": if mode == "chat" || mode == "completion" { OPENAI_CHAT_PARAMS } else { &[] },
        "configurable_clientside_auth_params": null,
        "is_public_model_group": false,
    })
}

/// `GET /health/readiness`: status and body (LiteLLM's shape). Unready (503) while draining,
/// and during a database outage unless the operator chose to keep serving cached keys through
/// it (`allow_requests_on_db_unavailable`: the instance stays in rotation and says
/// "disconnected", as LiteLLM does). `db` is `None` without a key store; `cache` is "redis" when
/// Redis is configured; `last_updated` (ISO time) is there when a database is.
pub fn readiness(
    config: &RuntimeConfig,
    draining: bool,
    db: Option<bool>,
    db_outage_tolerated: bool,
    cache: Option<&str>,
) -> (u16, Bytes) {
    if draining {
        let body = b"{\"detail\":\"Service Unhealthy (shutting down)\"}";
        return (503, Bytes::from_static(body));
    }
    if db == Some(false) && !db_outage_tolerated {
        let body = b"{\"detail\":\"Service Unhealthy (DB not connected)\"}";
        return (503, Bytes::from_static(body));
    }
    let (status, db_text) = match db {
        None => ("healthy", "Not connected"),
        Some(true) => ("connected", "connected"),
        Some(false) => ("disconnected", "disconnected"),
    };
    let mut body = json!({
        "status": status,
        "db": db_text,
        "cache": cache,
        "litellm_version": env!("CARGO_PKG_VERSION"),
        "success_callbacks": config.success_callbacks,
        "gateway": "sluice",
    });
    // With a database LiteLLM adds when the state was read; Sluice reads it live.
    if db.is_some() {
        body["last_updated"] = json!(crate::clock::iso(crate::clock::now_ms()));
    }
    (
        200,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

/// `GET /health/liveness` body: the JSON string LiteLLM returns.
pub const LIVENESS: &[u8] = b"\"I'm alive!\"";
