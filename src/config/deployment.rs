//! One `model_list` entry into a [`DeploymentConfig`]: its provider (LiteLLM's
//! `get_llm_provider` order), upstream URL (as LiteLLM builds it from `api_base`), credentials,
//! headers, timeouts, price and mode, and the checks across deployments (unique ids,
//! weights). Start-up only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use filters::route::{Deployment, Secret, Weighting};
use http::header::HeaderName;
use serde_yaml::{Mapping, Value};

use super::env::Env;
use super::provider_catalog::ProviderSpec;
use super::values::{closest, scalar_text};
use super::{
    Builder, DeploymentConfig, ParamPolicy, UpstreamUrl, keys, model_id, provider_catalog,
};

impl Builder<'_> {
    pub(super) fn deployment(
        &mut self,
        i: usize,
        item: &Value,
        defaults: &DeploymentDefaults<'_>,
    ) -> Option<DeploymentConfig> {
        let path = format!("model_list[{i}]");
        if !matches!(item, Value::Mapping(_)) {
            self.report.error(
                &path,
                "must be a mapping with model_name and litellm_params",
            );
            return None;
        }
        let entry = self.section_entries(item, &path, &keys::MODEL_ENTRY);
        let get = |key: &str| entry.iter().find(|(k, _)| k == key).map(|(_, v)| *v);

        let model_name = match get("model_name") {
            Some(v) => self.string(v, &format!("{path}.model_name")),
            None => {
                self.report
                    .error(&format!("{path}.model_name"), "is required");
                None
            }
        };
        let params_path = format!("{path}.litellm_params");
        let raw_params = match get("litellm_params") {
            Some(Value::Mapping(m)) => m.clone(),
            Some(_) => {
                self.report.error(&params_path, "must be a mapping");
                return None;
            }
            None => {
                self.report.error(&params_path, "is required");
                return None;
            }
        };
        let params_value = Value::Mapping(raw_params.clone());
        let params = self.section_entries(&params_value, &params_path, &keys::LITELLM_PARAMS);
        let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| *v);

        let model = match param("model") {
            Some(v) => self.string(v, &format!("{params_path}.model")),
            None => {
                self.report.error(
                    &format!("{params_path}.model"),
                    "is required (e.g. openai/gpt-4o)",
                );
                None
            }
        };
        let model_name = model_name?;
        let model = model?;
        let custom_provider = param("custom_llm_provider")
            .and_then(|v| self.string(v, &format!("{params_path}.custom_llm_provider")));
        let (provider, upstream_model) = self.provider_of(
            &model,
            custom_provider.as_deref(),
            &format!("{params_path}.model"),
        )?;

        let spec = provider_catalog::spec(&provider);
        if spec.is_none() {
            self.report.warn(
                &format!("{params_path}.model"),
                format!("provider {provider:?} is not supported by Sluice yet; model group {model_name:?} only routes to it when it has no other deployment, and such requests are answered 501"),
            );
        }

        let mut explicit_base = param("api_base")
            .or_else(|| param("base_url"))
            .and_then(|v| self.string(v, &format!("{params_path}.api_base")));
        let text_param = |me: &mut Self, key: &str| {
            param(key).and_then(|v| me.string(v, &format!("{params_path}.{key}")))
        };
        let mut aws_region = None;
        if provider == "bedrock" {
            let region = text_param(self, "aws_region_name")
                .or_else(|| defaults.env.get("AWS_REGION_NAME"))
                .or_else(|| defaults.env.get("AWS_REGION"))
                .or_else(|| defaults.env.get("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| provider_catalog::BEDROCK_DEFAULT_REGION.to_string());
            explicit_base = text_param(self, "aws_bedrock_runtime_endpoint")
                .or(explicit_base)
                .or_else(|| defaults.env.get("AWS_BEDROCK_RUNTIME_ENDPOINT"))
                .or_else(|| Some(format!("https://bedrock-runtime.{region}.amazonaws.com")));
            aws_region = Some(region);
        }
        let api_base = self.api_base(explicit_base, spec, &provider, &params_path, defaults.env);
        let api_key = param("api_key")
            .and_then(|v| self.string(v, &format!("{params_path}.api_key")))
            .or_else(|| spec.and_then(|s| defaults.env.first(s.key_env)))
            .or_else(|| spec.and_then(|s| s.default_key.map(str::to_owned)));
        let aws = match aws_region {
            None => None,
            Some(region) => {
                let access = text_param(self, "aws_access_key_id")
                    .or_else(|| defaults.env.get("AWS_ACCESS_KEY_ID"));
                let secret = text_param(self, "aws_secret_access_key")
                    .or_else(|| defaults.env.get("AWS_SECRET_ACCESS_KEY"));
                let token = text_param(self, "aws_session_token")
                    .or_else(|| defaults.env.get("AWS_SESSION_TOKEN"));
                match (access, secret, &api_key) {
                    (Some(access_key_id), Some(secret), _) => {
                        Some(provider_catalog::AwsAuth::SigV4 {
                            access_key_id,
                            secret_access_key: Secret::new(secret),
                            session_token: token.map(Secret::new),
                            region,
                        })
                    }
                    (None, None, Some(key)) => {
                        Some(provider_catalog::AwsAuth::ApiKey(Secret::new(key.clone())))
                    }
                    (Some(_), None, _) | (None, Some(_), _) => {
                        self.report.error(
                            &params_path,
                            "aws_access_key_id and aws_secret_access_key must be given together",
                        );
                        None
                    }
                    (None, None, None) => {
                        self.report.warn(
                            &params_path,
                            "no AWS credentials (aws_access_key_id/aws_secret_access_key, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a Bedrock API key in api_key/AWS_BEARER_TOKEN_BEDROCK): requests will be unsigned and Bedrock will refuse them",
                        );
                        None
                    }
                }
            }
        };

        let entry_rpm = get("rpm").and_then(|v| self.non_negative_u64(v, &format!("{path}.rpm")));
        let entry_tpm = get("tpm").and_then(|v| self.non_negative_u64(v, &format!("{path}.tpm")));
        let rpm = param("rpm")
            .and_then(|v| self.non_negative_u64(v, &format!("{params_path}.rpm")))
            .or(entry_rpm);
        let tpm = param("tpm")
            .and_then(|v| self.non_negative_u64(v, &format!("{params_path}.tpm")))
            .or(entry_tpm);
        let weight = param("weight")
            .and_then(|v| self.non_negative_f64(v, &format!("{params_path}.weight")));
        let timeout = param("timeout")
            .and_then(|v| self.positive_f64(v, &format!("{params_path}.timeout")))
            .unwrap_or(defaults.timeout);
        let stream_timeout = param("stream_timeout")
            .and_then(|v| self.positive_f64(v, &format!("{params_path}.stream_timeout")))
            .or(defaults.stream_timeout);

        let mut extra_headers: Vec<(String, String)> = Vec::new();
        if let Some(v) = param("extra_headers") {
            extra_headers = self.header_map(v, &format!("{params_path}.extra_headers"));
        }
        let drop_params = param("drop_params")
            .and_then(|v| self.boolean(v, &format!("{params_path}.drop_params")))
            .unwrap_or(defaults.drop_params);
        let always_drop = param("additional_drop_params")
            .map(|v| self.string_list(v, &format!("{params_path}.additional_drop_params")))
            .unwrap_or_default();
        let api_version = if provider == "azure" {
            param("api_version")
                .and_then(|v| self.string(v, &format!("{params_path}.api_version")))
                .or_else(|| defaults.env.get("AZURE_API_VERSION"))
                .or_else(|| Some(provider_catalog::AZURE_DEFAULT_API_VERSION.to_string()))
        } else {
            None
        };
        let azure_ad_token = if provider == "azure" {
            param("azure_ad_token")
                .and_then(|v| self.string(v, &format!("{params_path}.azure_ad_token")))
                .or_else(|| defaults.env.get("AZURE_AD_TOKEN"))
                .map(Secret::new)
        } else {
            None
        };
        if let Some(org) = param("organization")
            .and_then(|v| self.string(v, &format!("{params_path}.organization")))
        {
            extra_headers.push(("OpenAI-Organization".into(), org));
        }

        // model_info: open-ended metadata; `id`, `mode`, `order` and `cooldown_time` are acted on.
        let info_path = format!("{path}.model_info");
        let info_map = match get("model_info").or_else(|| param("model_info")) {
            None | Some(Value::Null) => Mapping::new(),
            Some(Value::Mapping(m)) => m.clone(),
            Some(_) => {
                self.report.error(&info_path, "must be a mapping");
                Mapping::new()
            }
        };
        let id = match info_map.get("id") {
            Some(v) if !v.is_null() => self.string(v, &format!("{info_path}.id"))?,
            _ => model_id::litellm_model_id(&model_name, &raw_params),
        };
        let order = param("order")
            .and_then(|v| self.non_negative_u64(v, &format!("{params_path}.order")))
            .or_else(|| {
                info_map
                    .get("order")
                    .and_then(|v| self.non_negative_u64(v, &format!("{info_path}.order")))
            })
            .map(|o| o.min(u32::MAX as u64) as u32);
        let use_in_pass_through = param("use_in_pass_through")
            .and_then(|v| self.boolean(v, &format!("{params_path}.use_in_pass_through")))
            .unwrap_or(false);
        let num_retries = param("num_retries")
            .and_then(|v| self.non_negative_u64(v, &format!("{params_path}.num_retries")))
            .map(|n| n.min(u64::from(u32::MAX)) as u32);
        let cooldown_time = match info_map.get("cooldown_time") {
            Some(v) if !v.is_null() => {
                self.non_negative_f64(v, &format!("{info_path}.cooldown_time"))
            }
            _ => param("cooldown_time")
                .and_then(|v| self.non_negative_f64(v, &format!("{params_path}.cooldown_time"))),
        }
        .map(Duration::from_secs_f64);
        let tags = super::DeploymentTags {
            tags: param("tags")
                .map(|v| self.string_list(v, &format!("{params_path}.tags")))
                .unwrap_or_default(),
            regex: param("tag_regex")
                .map(|v| self.string_list(v, &format!("{params_path}.tag_regex")))
                .unwrap_or_default()
                .into_iter()
                .filter_map(|pattern| match regex::Regex::new(&pattern) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        self.report.error(
                            &format!("{params_path}.tag_regex"),
                            format!("invalid regular expression {pattern:?}: {e}"),
                        );
                        None
                    }
                })
                .collect(),
            enable_tag_filtering: match info_map.get("enable_tag_filtering") {
                Some(v) if !v.is_null() => {
                    self.boolean(v, &format!("{info_path}.enable_tag_filtering"))
                }
                _ => None,
            },
            allow_fail_open: match info_map.get("allow_fail_open") {
                Some(v) if !v.is_null() => self
                    .boolean(v, &format!("{info_path}.allow_fail_open"))
                    .unwrap_or(false),
                _ => false,
            },
        };
        let base_model = info_map
            .get("base_model")
            .and_then(Value::as_str)
            .or_else(|| raw_params.get("base_model").and_then(Value::as_str));
        let mut price = self
            .prices
            .lookup(&provider, &upstream_model, base_model)
            .cloned();
        // The deployment's own context window (`model_info.max_input_tokens`) wins over the
        // table's, as LiteLLM merges `model_info` into the model's info.
        if let Some(n) = info_map.get("max_input_tokens").and_then(Value::as_u64) {
            price.get_or_insert_with(Default::default).max_input_tokens = Some(n);
        }
        // Custom prices on the deployment win over the table (LiteLLM's lookup order).
        for field in crate::pricing::CUSTOM_PRICE_FIELDS {
            let custom = raw_params
                .get(*field)
                .or_else(|| info_map.get(*field))
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));
            if let Some(value) = custom
                && let Some(slot) = price.get_or_insert_with(Default::default).slot(field)
            {
                *slot = Some(value);
            }
        }
        let mode = match info_map.get("mode") {
            Some(v) if !v.is_null() => {
                let mode = self.string(v, &format!("{info_path}.mode"));
                match mode {
                    Some(m) if keys::MODES.contains(&m.as_str()) => m,
                    Some(m) => {
                        let hint = keys::did_you_mean(&m, keys::MODES)
                            .map(|h| format!(" (did you mean {h:?}?)"))
                            .unwrap_or_default();
                        self.report.error(
                            &format!("{info_path}.mode"),
                            format!("unknown mode {m:?}{hint}"),
                        );
                        "chat".into()
                    }
                    None => "chat".into(),
                }
            }
            _ => price
                .as_ref()
                .and_then(|p| p.mode.clone())
                .unwrap_or_else(|| "chat".into()),
        };
        let mut model_info = serde_json::to_value(&info_map).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(obj) = &mut model_info {
            obj.insert("id".into(), serde_json::Value::String(id.clone()));
        } else {
            model_info = serde_json::json!({ "id": id });
        }

        let api_base = api_base?;
        let deployment = Deployment {
            id,
            index: i,
            model_name,
            provider: provider.clone(),
            upstream_model,
            public_api_base: filters::route::public_url(&api_base),
            api_base,
            api_key: api_key.map(Secret::new),
            weight,
            rpm,
            tpm,
            order,
            timeout: Duration::from_secs_f64(timeout),
            stream_timeout: stream_timeout.map(Duration::from_secs_f64),
            extra_headers,
        };
        Some(DeploymentConfig {
            deployment: Arc::new(deployment),
            wire: spec.map(|s| s.wire),
            static_headers: spec
                .map(|s| {
                    s.static_headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            mode,
            litellm_model_name: model.clone(),
            public_params: public_params(&raw_params),
            model_info,
            price,
            params: ParamPolicy {
                drop_unsupported: drop_params,
                always_drop,
            },
            api_version,
            azure_ad_token,
            aws,
            num_retries,
            cooldown_time,
            tags,
            use_in_pass_through,
        })
    }

    /// Splits `litellm_params.model` into provider and provider model, as LiteLLM's
    /// `get_llm_provider` does: explicit `custom_llm_provider`, then the prefix, then the price
    /// table's `litellm_provider` for a bare name.
    pub(super) fn provider_of(
        &mut self,
        model: &str,
        custom: Option<&str>,
        path: &str,
    ) -> Option<(String, String)> {
        let known = |p: &str| provider_catalog::known_provider_names().any(|k| *k == p);
        if let Some(provider) = custom {
            if !known(provider) {
                self.report
                    .error(path, format!("unknown custom_llm_provider {provider:?}"));
                return None;
            }
            let rest = model
                .strip_prefix(provider)
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(model);
            return Some((provider.to_string(), rest.to_string()));
        }
        if let Some((prefix, rest)) = model.split_once('/')
            && known(prefix)
        {
            if rest.is_empty() {
                self.report.error(
                    path,
                    format!("{model:?} names no model after the provider prefix"),
                );
                return None;
            }
            return Some((prefix.to_string(), rest.to_string()));
        }
        if model == "*" {
            return Some(("openai".into(), "*".into()));
        }
        if let Some(provider) = self
            .prices
            .get(model)
            .and_then(|p| p.litellm_provider.clone())
        {
            let provider = match provider.as_str() {
                "text-completion-openai" | "openai" => provider,
                other if known(other) => other.to_string(),
                _ => provider,
            };
            return Some((provider, model.to_string()));
        }
        let hint = model
            .split_once('/')
            .and_then(|(prefix, _)| {
                closest(prefix, provider_catalog::known_provider_names().copied())
            })
            .map(|p| format!(" (did you mean provider {p:?}?)"))
            .unwrap_or_default();
        self.report.error(
            path,
            format!("cannot tell which provider serves {model:?}{hint}; write it as <provider>/<model>, e.g. openai/{model}"),
        );
        None
    }

    pub(super) fn api_base(
        &mut self,
        explicit: Option<String>,
        spec: Option<&ProviderSpec>,
        provider: &str,
        params_path: &str,
        env: &Env,
    ) -> Option<String> {
        let path = format!("{params_path}.api_base");
        let base = explicit
            .or_else(|| spec.and_then(|s| env.first(s.base_env)))
            .or_else(|| spec.and_then(|s| s.default_base.map(str::to_owned)));
        let Some(base) = base else {
            if spec.is_none() {
                // Not routable yet; any placeholder keeps the entry listable.
                return Some(String::new());
            }
            let vars = spec.map(|s| s.base_env.join(" or ")).unwrap_or_default();
            self.report.error(
                &path,
                format!(
                    "provider {provider:?} has no default endpoint: set api_base{}",
                    if vars.is_empty() {
                        String::new()
                    } else {
                        format!(" (or {vars})")
                    }
                ),
            );
            return None;
        };
        let mut base = base.trim().trim_end_matches('/').to_string();
        if let Err(e) = UpstreamUrl::parse(&base) {
            if spec.is_none() {
                return Some(base);
            }
            self.report
                .error(&path, format!("{base:?} is not a usable URL: {e}"));
            return None;
        }
        if let Some(suffix) = spec.and_then(|s| s.required_suffix)
            && !base.ends_with(suffix)
        {
            base.push_str(suffix);
        }
        Some(base)
    }

    pub(super) fn header_map(&mut self, value: &Value, path: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match value {
            Value::Null => {}
            Value::Mapping(m) => {
                for (k, v) in m {
                    let name = scalar_text(k);
                    if HeaderName::from_bytes(name.as_bytes()).is_err() {
                        self.report
                            .error(&format!("{path}.{name}"), "is not a valid HTTP header name");
                        continue;
                    }
                    match v {
                        Value::Mapping(_) | Value::Sequence(_) | Value::Null => self
                            .report
                            .error(&format!("{path}.{name}"), "must be a string"),
                        other => out.push((name, scalar_text(other))),
                    }
                }
            }
            _ => self
                .report
                .error(path, "must be a mapping of header: value"),
        }
        out
    }

    pub(super) fn check_unique_ids(&mut self, deployments: &[DeploymentConfig]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for d in deployments {
            if let Some(first) = seen.insert(&d.deployment.id, d.deployment.index) {
                self.report.error(
                    &format!("model_list[{}].model_info.id", d.deployment.index),
                    format!(
                        "id {:?} is already used by model_list[{first}]",
                        d.deployment.id
                    ),
                );
            }
        }
    }

    /// Warns where LiteLLM's simple-shuffle rule (the first deployment decides) ignores a
    /// weight the user wrote, or gives a deployment weight 0.
    pub(super) fn check_weighting(&mut self, deployments: &[DeploymentConfig]) {
        let mut groups: Vec<(&str, Vec<Arc<Deployment>>)> = Vec::new();
        for d in deployments {
            let name = d.deployment.model_name.as_str();
            match groups.iter_mut().find(|(g, _)| *g == name) {
                Some((_, members)) => members.push(d.deployment.clone()),
                None => groups.push((name, vec![d.deployment.clone()])),
            }
        }
        for (name, members) in groups {
            if members.len() < 2 {
                continue;
            }
            let weighting = Weighting::of_group(&members);
            let (field, has): (&str, fn(&Deployment) -> bool) = match weighting {
                Weighting::Weight => ("weight", |d| d.weight.is_some()),
                Weighting::Rpm => ("rpm", |d| d.rpm.is_some()),
                Weighting::Tpm => ("tpm", |d| d.tpm.is_some()),
                Weighting::Uniform => {
                    if members.iter().any(|d| d.weight.is_some()) {
                        self.report.warn(
                            &format!("model_list[{}].litellm_params.weight", members[0].index),
                            format!("model group {name:?}: the first deployment has no weight, so weights are ignored and traffic is split evenly (LiteLLM's simple-shuffle rule)"),
                        );
                    }
                    continue;
                }
            };
            for d in members.iter().filter(|d| !has(d)) {
                self.report.warn(
                    &format!("model_list[{}].litellm_params", d.index),
                    format!("model group {name:?} is weighted by {field}, which this deployment does not set: it gets weight 0 and is only used when the others fail"),
                );
            }
        }
    }

    // --- typed value readers: each reports a wrong type with its path and returns None.
}

/// What a deployment takes from the settings sections when it does not set it.
pub(super) struct DeploymentDefaults<'e> {
    pub(super) timeout: f64,
    pub(super) stream_timeout: Option<f64>,
    pub(super) env: &'e Env,
    /// `litellm_settings.drop_params`.
    pub(super) drop_params: bool,
}

/// `litellm_params` as `/model/info` shows them: credentials removed, other secrets masked
/// (LiteLLM's `remove_sensitive_info_from_deployment` and `SensitiveDataMasker`).
pub(super) fn public_params(params: &Mapping) -> serde_json::Value {
    const REMOVED: &[&str] = &[
        "api_key",
        "client_secret",
        "vertex_credentials",
        "vertex_ai_credentials",
        "aws_access_key_id",
        "aws_secret_access_key",
    ];
    let mut out = serde_json::Map::new();
    for (k, v) in params {
        let key = scalar_text(k);
        if REMOVED.contains(&key.as_str()) {
            continue;
        }
        let json = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
        let json = match json {
            serde_json::Value::String(s) if is_sensitive_key(&key) => {
                serde_json::Value::String(mask(&s))
            }
            // A URL (api_base, base_url, an endpoint) without a password or query in it.
            serde_json::Value::String(s) if s.contains("://") => {
                serde_json::Value::String(filters::route::public_url(&s))
            }
            other => other,
        };
        out.insert(key, json);
    }
    serde_json::Value::Object(out)
}

pub(super) fn is_sensitive_key(key: &str) -> bool {
    const SENSITIVE: &[&str] = &[
        "password",
        "secret",
        "key",
        "token",
        "auth",
        "authorization",
        "credential",
        "credentials",
        "secrets",
        "passwords",
        "access",
        "private",
        "certificate",
        "certificates",
        "fingerprint",
        "tenancy",
    ];
    if key == "default_api_key_tpm_limit" || key == "default_api_key_rpm_limit" {
        return false;
    }
    let lower = key.to_ascii_lowercase();
    let segments: Vec<&str> = lower.split(['_', '-']).collect();
    if segments.contains(&"cost") {
        return false;
    }
    segments.iter().any(|s| SENSITIVE.contains(s))
}

/// The first and last four characters with `*` between; all `*` for eight or fewer.
pub(super) fn mask(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 8))
}
