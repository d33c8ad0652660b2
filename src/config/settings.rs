//! The settings sections of the config (`general_settings`, `litellm_settings`,
//! `router_settings`, `environment_variables`): what Sluice acts on, read into
//! `ServerSettings` and `ManagementSettings`, each problem reported with its YAML path.
//! Start-up only.

use std::collections::HashMap;
use std::time::Duration;

use filters::route::Alias;
use serde_yaml::Value;

use super::keys::Section;
use super::values::{closest, is_truthy, join, scalar_text};
use super::{
    Builder, Entries, FallbackSettings, LatencyArgs, ManagementSettings, Problem, ProxyBudget,
    RetryPolicy, RouterSettings, RoutingStrategy, get, keys,
};

impl Builder<'_> {
    /// `litellm_settings.max_budget` (+ `budget_duration`): the proxy-wide budget LiteLLM
    /// keeps as the user `litellm-proxy-budget`; `max_end_user_budget`: the budget of every end
    /// user without one of its own.
    pub(super) fn proxy_budgets(
        &mut self,
        litellm: &Entries<'_>,
    ) -> (Option<ProxyBudget>, Option<f64>) {
        let duration = get(litellm, "budget_duration").and_then(|v| {
            let path = "litellm_settings.budget_duration";
            let text = self.string(v, path)?;
            match crate::clock::parse_span(&text) {
                Ok(_) => Some(text),
                Err(e) => {
                    self.report.error(path, e);
                    None
                }
            }
        });
        // LiteLLM's default max_budget is 0.0, meaning none.
        let proxy = get(litellm, "max_budget")
            .and_then(|v| self.non_negative_f64(v, "litellm_settings.max_budget"))
            .filter(|b| *b > 0.0)
            .map(|max_budget| ProxyBudget {
                max_budget,
                budget_duration: duration.clone(),
            });
        if proxy.is_none() && duration.is_some() {
            self.report.warn(
                "litellm_settings.budget_duration",
                "has no effect without litellm_settings.max_budget",
            );
        }
        let end_user = get(litellm, "max_end_user_budget")
            .and_then(|v| self.non_negative_f64(v, "litellm_settings.max_end_user_budget"));
        (proxy, end_user)
    }

    /// The Redis instances share (`router_settings.redis_url`, else `redis_host`/`redis_port`/
    /// `redis_password`, else `REDIS_URL`, `REDIS_HOST`, ...): budgets' ledger and the router's
    /// state.
    pub(super) fn redis_url(&mut self, router: &Entries<'_>) -> Option<String> {
        let env = self.env;
        match get(router, "redis_url")
            .and_then(|v| self.string(v, "router_settings.redis_url"))
            .or_else(|| env.get("REDIS_URL"))
        {
            Some(url) => Some(url),
            None => {
                let host = get(router, "redis_host")
                    .and_then(|v| self.string(v, "router_settings.redis_host"))
                    .or_else(|| env.get("REDIS_HOST"));
                let port = get(router, "redis_port")
                    .map(scalar_text)
                    .or_else(|| env.get("REDIS_PORT"))
                    .unwrap_or_else(|| "6379".into());
                let password = get(router, "redis_password")
                    .and_then(|v| self.string(v, "router_settings.redis_password"))
                    .or_else(|| env.get("REDIS_PASSWORD"));
                host.map(|h| match password {
                    Some(p) if !p.is_empty() => format!("redis://:{p}@{h}:{port}"),
                    _ => format!("redis://{h}:{port}"),
                })
            }
        }
    }

    pub(super) fn management(
        &mut self,
        general: &Entries<'_>,
        sluice: &Entries<'_>,
        has_master_key: bool,
    ) -> Option<ManagementSettings> {
        let env = self.env;
        let database_url = get(general, "database_url")
            .and_then(|v| self.string(v, "general_settings.database_url"))
            .or_else(|| env.get("DATABASE_URL"))
            .filter(|u| !u.is_empty());
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            self.report.error(
                "general_settings.database_url",
                "must be a postgres:// (or postgresql://) or sqlite: URL",
            );
        }
        if !has_master_key {
            if database_url.is_some() {
                self.report.warn(
                    "general_settings.database_url",
                    "ignored without a master key: virtual keys need an admin to create them",
                );
            }
            return None;
        }
        let path = get(sluice, "database_path")
            .and_then(|v| self.string(v, "sluice_settings.database_path"))
            .or_else(|| env.get("SLUICE_DATABASE_PATH"))
            .unwrap_or_else(|| "sluice.db".into());
        let database_url = database_url.unwrap_or_else(|| format!("sqlite://{path}?mode=rwc"));
        let spool = get(sluice, "spend_spool_dir")
            .and_then(|v| self.string(v, "sluice_settings.spend_spool_dir"))
            .or_else(|| env.get("SLUICE_SPEND_SPOOL_DIR"))
            .filter(|d| !d.is_empty());
        let pool_limit = get(general, "database_connection_pool_limit")
            .and_then(|v| self.positive_u64(v, "general_settings.database_connection_pool_limit"))
            .unwrap_or(10)
            .min(1000) as u32;
        let connect_timeout = get(general, "database_connection_timeout")
            .and_then(|v| self.positive_f64(v, "general_settings.database_connection_timeout"))
            .unwrap_or(60.0);
        let allow = get(general, "allow_requests_on_db_unavailable")
            .and_then(|v| self.boolean(v, "general_settings.allow_requests_on_db_unavailable"))
            .unwrap_or(false);
        let key_cache_ttl = get(general, "user_api_key_cache_ttl")
            .and_then(|v| self.positive_f64(v, "general_settings.user_api_key_cache_ttl"))
            .unwrap_or(60.0);
        let batch = get(general, "proxy_batch_write_at")
            .and_then(|v| self.positive_f64(v, "general_settings.proxy_batch_write_at"))
            .unwrap_or(10.0);
        let disable_spend_logs = get(general, "disable_spend_logs")
            .and_then(|v| self.boolean(v, "general_settings.disable_spend_logs"))
            .unwrap_or(false);
        let no_schema_update = get(general, "disable_prisma_schema_update")
            .and_then(|v| self.boolean(v, "general_settings.disable_prisma_schema_update"))
            .unwrap_or(false)
            || env
                .get("DISABLE_SCHEMA_UPDATE")
                .is_some_and(|v| is_truthy(&v));
        let disable_reset = get(general, "disable_reset_budget")
            .and_then(|v| self.boolean(v, "general_settings.disable_reset_budget"))
            .unwrap_or(false);
        // Filled in by the caller (`redis_url`), which reads it once for the router too.
        let redis_url = None;
        Some(ManagementSettings {
            database_url,
            pool_limit,
            connect_timeout: Duration::from_secs_f64(connect_timeout),
            allow_requests_on_db_unavailable: allow,
            key_cache_ttl: Duration::from_secs_f64(key_cache_ttl),
            batch_write_interval: Duration::from_secs_f64(batch),
            disable_spend_logs,
            run_migrations: !no_schema_update,
            budget_reset_interval: Duration::from_secs(1),
            disable_reset_budget: disable_reset,
            fail_closed_budget_enforcement: get(general, "fail_closed_budget_enforcement")
                .and_then(|v| self.boolean(v, "general_settings.fail_closed_budget_enforcement"))
                .unwrap_or(false),
            disable_budget_reservation: get(general, "disable_budget_reservation")
                .and_then(|v| self.boolean(v, "general_settings.disable_budget_reservation"))
                .unwrap_or(false),
            redis_url,
            spend_spool_configured: spool.is_some(),
            spend_spool_dir: spool.unwrap_or_else(|| "sluice-spend-spool".into()).into(),
            proxy_budget: None,
            max_end_user_budget: None,
        })
    }

    pub(super) fn environment_variables(&mut self, root: &Value) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let Some(section) = root.get("environment_variables") else {
            return out;
        };
        match section {
            Value::Null => {}
            Value::Mapping(m) => {
                for (k, v) in m {
                    let key = scalar_text(k);
                    let path = format!("environment_variables.{key}");
                    match v {
                        Value::Null => {}
                        Value::Mapping(_) | Value::Sequence(_) => {
                            self.report.error(&path, "must be a string")
                        }
                        other => {
                            out.insert(key, scalar_text(other));
                        }
                    }
                }
            }
            _ => self
                .report
                .error("environment_variables", "must be a mapping of NAME: value"),
        }
        out
    }

    /// The keys of a mapping, sorted into acted / not acted / unknown.
    pub(super) fn section_entries<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
        section: &Section,
    ) -> Entries<'v> {
        let mut out = Vec::new();
        let Value::Mapping(map) = value else {
            return out;
        };
        for (k, v) in map {
            let key = scalar_text(k);
            let key_path = join(path, &key);
            if section.acted.contains(&key.as_str()) {
                out.push((key, v));
            } else if section.is_accepted_only(&key) {
                self.report.not_acted.push(key_path);
            } else {
                let hint = section
                    .did_you_mean(&key)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.report.unknown_keys.push(Problem {
                    path: key_path,
                    message: format!("unknown key{hint}"),
                });
            }
        }
        out
    }

    pub(super) fn mapping_section<'v>(
        &mut self,
        value: Option<&'v Value>,
        path: &str,
        section: &Section,
    ) -> Entries<'v> {
        match value {
            None | Some(Value::Null) => Vec::new(),
            Some(v @ Value::Mapping(_)) => self.section_entries(v, path, section),
            Some(_) => {
                self.report.error(path, "must be a mapping");
                Vec::new()
            }
        }
    }

    /// Retries and cooldowns: `router_settings`, with `num_retries` falling back to
    /// `litellm_settings` (LiteLLM reads `litellm.num_retries` when the router has none).
    pub(super) fn retry_settings(
        &mut self,
        router: &Entries<'_>,
        litellm: &Entries<'_>,
    ) -> RouterSettings {
        let defaults = RouterSettings::default();
        let count = |b: &mut Self, entries: &Entries<'_>, section: &str, key: &str| {
            get(entries, key)
                .and_then(|v| b.non_negative_u64(v, &format!("{section}.{key}")))
                .map(|n| n.min(u64::from(u32::MAX)) as u32)
        };
        let seconds = |b: &mut Self, key: &str| {
            get(router, key)
                .and_then(|v| b.non_negative_f64(v, &format!("router_settings.{key}")))
                .map(Duration::from_secs_f64)
        };
        RouterSettings {
            num_retries: count(self, router, "router_settings", "num_retries")
                .or_else(|| count(self, litellm, "litellm_settings", "num_retries"))
                .unwrap_or(defaults.num_retries),
            retry_after: seconds(self, "retry_after").unwrap_or(defaults.retry_after),
            cooldown_time: seconds(self, "cooldown_time").unwrap_or(defaults.cooldown_time),
            disable_cooldowns: get(router, "disable_cooldowns")
                .and_then(|v| self.boolean(v, "router_settings.disable_cooldowns"))
                .unwrap_or(false),
            allowed_fails: count(self, router, "router_settings", "allowed_fails"),
            allowed_fails_policy: get(router, "allowed_fails_policy")
                .and_then(|v| self.allowed_fails_policy(v, "router_settings.allowed_fails_policy")),
            retry_policy: get(router, "retry_policy")
                .and_then(|v| self.retry_policy(v, "router_settings.retry_policy")),
            model_group_retry_policy: match get(router, "model_group_retry_policy") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Mapping(m)) => m
                    .iter()
                    .filter_map(|(group, v)| {
                        let group = scalar_text(group);
                        let path = format!("router_settings.model_group_retry_policy.{group}");
                        self.retry_policy(v, &path).map(|p| (group, p))
                    })
                    .collect(),
                Some(_) => {
                    self.report.error(
                        "router_settings.model_group_retry_policy",
                        "must be a mapping {group: retry policy}",
                    );
                    Vec::new()
                }
            },
            // Set by the caller, with the routing strategy's name.
            strategy: RoutingStrategy::SimpleShuffle,
            enable_pre_call_checks: get(router, "enable_pre_call_checks")
                .and_then(|v| self.boolean(v, "router_settings.enable_pre_call_checks"))
                .unwrap_or(false),
            enable_tag_filtering: get(router, "enable_tag_filtering")
                .and_then(|v| self.boolean(v, "router_settings.enable_tag_filtering"))
                .unwrap_or(false),
            tag_filtering_match_any: get(router, "tag_filtering_match_any")
                .and_then(|v| self.boolean(v, "router_settings.tag_filtering_match_any"))
                .unwrap_or(true),
            tag_routing_prefix: get(router, "tag_routing_prefix")
                .and_then(|v| self.string(v, "router_settings.tag_routing_prefix"))
                .filter(|p| !p.is_empty()),
        }
    }

    /// A `RetryPolicy` mapping (`{RateLimitErrorRetries: 3, ...}`, LiteLLM's field names).
    fn retry_policy(&mut self, v: &Value, path: &str) -> Option<RetryPolicy> {
        let Value::Mapping(m) = v else {
            if !v.is_null() {
                self.report
                    .error(path, "must be a mapping such as {RateLimitErrorRetries: 3}");
            }
            return None;
        };
        let mut policy = RetryPolicy::default();
        for (key, value) in m {
            let key = scalar_text(key);
            let field_path = join(path, &key);
            let n = self.non_negative_u64(value, &field_path);
            match policy.field_mut(&key) {
                Some(slot) => *slot = n.map(|n| n.min(u64::from(u32::MAX)) as u32),
                None => {
                    let hint = closest(&key, RetryPolicy::FIELDS.iter().copied())
                        .map(|f| format!(" (did you mean `{f}`?)"))
                        .unwrap_or_default();
                    self.report.error(
                        &field_path,
                        format!(
                            "is not a retry policy field{hint}; the fields are {:?}",
                            RetryPolicy::FIELDS
                        ),
                    );
                }
            }
        }
        Some(policy)
    }

    /// An `AllowedFailsPolicy` mapping (`{RateLimitErrorAllowedFails: 3, ...}`).
    fn allowed_fails_policy(&mut self, v: &Value, path: &str) -> Option<RetryPolicy> {
        const FIELDS: [&str; 9] = [
            "BadRequestErrorAllowedFails",
            "AuthenticationErrorAllowedFails",
            "TimeoutErrorAllowedFails",
            "RateLimitErrorAllowedFails",
            "ContentPolicyViolationErrorAllowedFails",
            "InternalServerErrorAllowedFails",
            "ServiceUnavailableErrorAllowedFails",
            "BadGatewayErrorAllowedFails",
            "NotFoundErrorAllowedFails",
        ];
        let Value::Mapping(m) = v else {
            if !v.is_null() {
                self.report.error(
                    path,
                    "must be a mapping such as {RateLimitErrorAllowedFails: 3}",
                );
            }
            return None;
        };
        let mut policy = RetryPolicy::default();
        for (key, value) in m {
            let key = scalar_text(key);
            let field_path = join(path, &key);
            let n = self
                .non_negative_u64(value, &field_path)
                .map(|n| n.min(u64::from(u32::MAX)) as u32);
            let slot = match key.as_str() {
                "BadGatewayErrorAllowedFails" => Some(&mut policy.bad_gateway),
                k if FIELDS.contains(&k) => k
                    .strip_suffix("AllowedFails")
                    .and_then(|class| policy.field_mut(&format!("{class}Retries"))),
                _ => None,
            };
            match slot {
                Some(slot) => *slot = n,
                None => {
                    let hint = closest(&key, FIELDS.iter().copied())
                        .map(|f| format!(" (did you mean `{f}`?)"))
                        .unwrap_or_default();
                    self.report.error(
                        &field_path,
                        format!(
                            "is not an allowed-fails policy field{hint}; the fields are {FIELDS:?}"
                        ),
                    );
                }
            }
        }
        Some(policy)
    }

    /// The fallback lists, each from `router_settings` else `litellm_settings`.
    pub(super) fn fallback_settings(
        &mut self,
        router: &Entries<'_>,
        litellm: &Entries<'_>,
    ) -> FallbackSettings {
        let pick = |key: &str| -> Option<(&Value, String)> {
            get(router, key)
                .map(|v| (v, format!("router_settings.{key}")))
                .or_else(|| get(litellm, key).map(|v| (v, format!("litellm_settings.{key}"))))
        };
        let mut lists = [
            "fallbacks",
            "context_window_fallbacks",
            "content_policy_fallbacks",
        ]
        .map(|key| pick(key).map(|(v, path)| self.fallback_list(v, &path)));
        let mut generic = lists[0].take().unwrap_or_default();
        if let Some((v, path)) = pick("default_fallbacks") {
            if matches!(v, Value::String(_)) {
                // LiteLLM raises a TypeError for a plain string.
                self.report
                    .error(&path, "must be a list of model group names");
            } else {
                let targets = self.string_list(v, &path);
                if !targets.is_empty() {
                    generic.push(("*".to_string(), targets));
                }
            }
        }
        let max_fallbacks = pick("max_fallbacks")
            .and_then(|(v, path)| self.non_negative_u64(v, &path))
            .map_or(5, |n| n.min(u64::from(u32::MAX)) as u32);
        FallbackSettings {
            generic,
            context_window: lists[1].take(),
            content_policy: lists[2].take(),
            max_fallbacks,
        }
    }

    /// `[{group: [target, ...]}, ...]` (LiteLLM's shape: a list of one-key mappings whose
    /// value is a list).
    fn fallback_list(&mut self, v: &Value, path: &str) -> Vec<(String, Vec<String>)> {
        let Value::Sequence(items) = v else {
            if !v.is_null() {
                self.report.error(
                    path,
                    "must be a list such as [{\"gpt-4o\": [\"claude-3-5-sonnet\"]}]",
                );
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Value::Mapping(m) = item else {
                self.report
                    .error(&item_path, "must be a mapping {group: [fallback groups]}");
                continue;
            };
            for (group, targets) in m {
                let group = scalar_text(group);
                let target_path = join(&item_path, &group);
                if !matches!(targets, Value::Sequence(_)) {
                    self.report
                        .error(&target_path, "must be a list of model group names");
                    continue;
                }
                let targets = self.string_list(targets, &target_path);
                out.push((group, targets));
            }
        }
        out
    }

    pub(super) fn routing_strategy(&mut self, s: String) -> Option<String> {
        let path = "router_settings.routing_strategy";
        if !keys::ROUTING_STRATEGIES.contains(&s.as_str()) {
            let hint = keys::did_you_mean(&s, keys::ROUTING_STRATEGIES)
                .map(|h| format!(" (did you mean {h:?}?)"))
                .unwrap_or_default();
            self.report.error(
                path,
                format!(
                    "unknown routing strategy {s:?}{hint}; LiteLLM's strategies are {}",
                    keys::ROUTING_STRATEGIES.join(", ")
                ),
            );
            return None;
        }
        Some(s)
    }

    /// The strategy and its `routing_strategy_args`.
    pub(super) fn strategy(&mut self, name: &str, router: &Entries<'_>) -> RoutingStrategy {
        match name {
            "least-busy" => RoutingStrategy::LeastBusy,
            "usage-based-routing" | "usage-based-routing-v2" => RoutingStrategy::UsageBased,
            "cost-based-routing" => RoutingStrategy::CostBased,
            "latency-based-routing" => {
                let mut args = LatencyArgs::default();
                let base = "router_settings.routing_strategy_args";
                match get(router, "routing_strategy_args") {
                    None | Some(Value::Null) => {}
                    Some(Value::Mapping(m)) => {
                        for (k, v) in m {
                            let key = scalar_text(k);
                            let path = join(base, &key);
                            match key.as_str() {
                                "ttl" => {
                                    if let Some(t) = self.positive_f64(v, &path) {
                                        args.ttl = Duration::from_secs_f64(t);
                                    }
                                }
                                "lowest_latency_buffer" => {
                                    if let Some(b) = self.non_negative_f64(v, &path) {
                                        args.lowest_latency_buffer = b;
                                    }
                                }
                                "max_latency_list_size" => {
                                    if let Some(n) = self.positive_u64(v, &path) {
                                        args.max_latency_list_size = n.min(10_000) as usize;
                                    }
                                }
                                _ => self.report.warn(
                                    &path,
                                    "not acted on (latency-based-routing reads ttl, lowest_latency_buffer, max_latency_list_size)",
                                ),
                            }
                        }
                    }
                    Some(_) => self.report.error(base, "must be a mapping"),
                }
                RoutingStrategy::LatencyBased(args)
            }
            _ => RoutingStrategy::SimpleShuffle,
        }
    }

    pub(super) fn aliases(&mut self, value: &Value) -> HashMap<String, Alias> {
        let path = "router_settings.model_group_alias";
        let mut out = HashMap::new();
        let map = match value {
            Value::Null => return out,
            Value::Mapping(m) => m,
            // LiteLLM also accepts the mapping as a JSON string.
            Value::String(s) => match serde_yaml::from_str::<Value>(s) {
                Ok(Value::Mapping(m)) => return self.aliases(&Value::Mapping(m)),
                _ => {
                    self.report
                        .error(path, "must be a mapping of alias: model_name");
                    return out;
                }
            },
            _ => {
                self.report
                    .error(path, "must be a mapping of alias: model_name");
                return out;
            }
        };
        for (k, v) in map {
            let alias = scalar_text(k);
            let alias_path = format!("{path}.{alias}");
            let target = match v {
                Value::String(group) => Some(Alias {
                    group: group.clone(),
                    hidden: false,
                }),
                Value::Mapping(m) => {
                    let group = m.get("model").and_then(Value::as_str).map(str::to_owned);
                    let hidden = match m.get("hidden") {
                        None | Some(Value::Null) => false,
                        Some(h) => self
                            .boolean(h, &format!("{alias_path}.hidden"))
                            .unwrap_or(false),
                    };
                    for key in m.keys() {
                        let key = scalar_text(key);
                        if key != "model" && key != "hidden" {
                            self.report.unknown_keys.push(Problem {
                                path: format!("{alias_path}.{key}"),
                                message: "unknown key (an alias takes `model` and `hidden`)".into(),
                            });
                        }
                    }
                    match group {
                        Some(group) => Some(Alias { group, hidden }),
                        None => {
                            self.report
                                .error(&alias_path, "needs `model: <model_name>`");
                            None
                        }
                    }
                }
                _ => {
                    self.report
                        .error(&alias_path, "must be a model_name or {model, hidden}");
                    None
                }
            };
            if let Some(target) = target {
                out.insert(alias, target);
            }
        }
        out
    }
}
