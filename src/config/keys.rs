//! Which LiteLLM config keys Sluice acts on, which it recognises but does not act on yet, and the
//! "did you mean" for everything else.
//!
//! LiteLLM has hundreds of keys. A key Sluice does not know is a start-up warning (an error under
//! `sluice check --strict`), never a refusal to start. A key it knows but does not implement is
//! listed in one start-up warning, so nothing is silently dropped. The lists below follow
//! LiteLLM's `Router.__init__` arguments, `ConfigGeneralSettings`, and the documented
//! `litellm_settings` (docs/my-website/docs/proxy/config_settings.md).

/// A config section and its keys.
pub struct Section {
    pub name: &'static str,
    /// Keys Sluice implements.
    pub acted: &'static [&'static str],
    /// LiteLLM keys Sluice accepts and does not act on (yet).
    pub accepted: &'static [&'static str],
}

impl Section {
    pub fn knows(&self, key: &str) -> bool {
        self.acted.contains(&key) || self.accepted.contains(&key)
    }

    pub fn is_accepted_only(&self, key: &str) -> bool {
        !self.acted.contains(&key) && self.accepted.contains(&key)
    }

    /// The closest known key, when one is close enough to be a likely typo.
    pub fn did_you_mean(&self, key: &str) -> Option<&'static str> {
        did_you_mean(key, self.acted.iter().chain(self.accepted))
    }
}

/// The closest candidate by normalised Levenshtein similarity (case-insensitive), if similar.
pub fn did_you_mean<'a>(
    key: &str,
    candidates: impl IntoIterator<Item = &'a &'static str>,
) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::normalized_levenshtein(&lower, &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

pub const TOP_LEVEL: Section = Section {
    name: "",
    acted: &[
        "model_list",
        "router_settings",
        "litellm_settings",
        "general_settings",
        "environment_variables",
        "sluice_settings",
    ],
    accepted: &[
        "guardrails",
        "mcp_servers",
        "mcp_tools",
        "credential_list",
        "finetune_settings",
        "files_settings",
        "include",
        "assistant_settings",
        "search_tools",
        "vector_store_registry",
        "prompts",
        "policies",
        "callback_settings",
        "agent_list",
    ],
};

pub const MODEL_ENTRY: Section = Section {
    name: "model_list[]",
    acted: &["model_name", "litellm_params", "model_info"],
    accepted: &["tpm", "rpm"],
};

pub const LITELLM_PARAMS: Section = Section {
    name: "litellm_params",
    acted: &[
        "output_cost_per_token",
        "input_cost_per_token",
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
        "input_cost_per_pixel",
        "output_cost_per_pixel",
        "input_cost_per_image",
        "output_cost_per_image",
        "input_cost_per_character",
        "input_cost_per_second",
        "output_cost_per_second",
        "input_cost_per_query",
        "base_model",
        "model",
        "api_base",
        "base_url",
        "api_key",
        "rpm",
        "tpm",
        "timeout",
        "stream_timeout",
        "weight",
        "order",
        "custom_llm_provider",
        "extra_headers",
        "organization",
        "api_version",
        "azure_ad_token",
        "drop_params",
        "additional_drop_params",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region_name",
        "aws_bedrock_runtime_endpoint",
        "num_retries",
        "cooldown_time",
        "tags",
        "tag_regex",
        "use_in_pass_through",
    ],
    accepted: &[
        "azure_ad_token_provider",
        "tenant_id",
        "client_id",
        "client_secret",
        "azure_username",
        "azure_password",
        "azure_scope",
        "litellm_credential_name",
        "region_name",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "aws_role_name",
        "aws_session_name",
        "aws_profile_name",
        "aws_web_identity_token",
        "aws_sts_endpoint",
        "watsonx_region_name",
        "configurable_clientside_auth_params",
        "itpm",
        "otpm",
        "max_parallel_requests",
        "max_budget",
        "budget_duration",
        "default_api_key_tpm_limit",
        "default_api_key_rpm_limit",
        "max_retries",
        "keepalive_seconds",
        "mock_response",
        "mock_timeout",
        "use_litellm_proxy",
        "merge_reasoning_content_in_choices",
        "model_info",
        "max_file_size_mb",
        "health_check_model",
        "auto_router_config",
        "auto_router_config_path",
        "auto_router_default_model",
        "auto_router_embedding_model",
        "litellm_trace_id",
        "litellm_metadata",
        "ssl_verify",
        "extra_body",
        // OpenAI request parameters given as per-deployment defaults.
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "response_format",
        "reasoning_effort",
        "thinking",
        "stream",
        "top_k",
        "safety_settings",
        "num_ctx",
    ],
};

pub const MODEL_INFO: Section = Section {
    name: "model_info",
    acted: &["id", "mode", "order"],
    accepted: &[],
};

pub const ROUTER_SETTINGS: Section = Section {
    name: "router_settings",
    acted: &[
        "redis_url",
        "redis_host",
        "redis_port",
        "redis_password",
        "routing_strategy",
        "model_group_alias",
        "timeout",
        "stream_timeout",
        "num_retries",
        "retry_after",
        "cooldown_time",
        "disable_cooldowns",
        "allowed_fails",
        "max_fallbacks",
        "default_fallbacks",
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "retry_policy",
        "model_group_retry_policy",
        "routing_strategy_args",
        "enable_pre_call_checks",
        "enable_tag_filtering",
        "tag_filtering_match_any",
        "tag_routing_prefix",
        "allowed_fails_policy",
    ],
    accepted: &[
        "model_list",
        "assistants_config",
        "search_tools",
        "redis_db",
        "cache_responses",
        "cache_kwargs",
        "caching_groups",
        "client_ttl",
        "polling_interval",
        "default_priority",
        "default_litellm_params",
        "default_max_parallel_requests",
        "set_verbose",
        "debug_level",
        "optional_pre_call_checks",
        "provider_budget_config",
        "alerting_config",
        "router_general_settings",
        "ignore_invalid_deployments",
        "guardrail_list",
        "redis_startup_nodes",
        "service_name",
        "sentinel_nodes",
        "deployment_affinity",
        "model_group_affinity_config",
    ],
};

pub const LITELLM_SETTINGS: Section = Section {
    name: "litellm_settings",
    acted: &[
        "json_logs",
        "request_timeout",
        "set_verbose",
        "callbacks",
        "success_callback",
        "failure_callback",
        "redact_user_api_key_info",
        "drop_params",
        "max_budget",
        "budget_duration",
        "max_end_user_budget",
        "num_retries",
        "default_fallbacks",
        "content_policy_fallbacks",
        "context_window_fallbacks",
        "fallbacks",
        "max_fallbacks",
        "cache",
        "cache_params",
    ],
    accepted: &[
        "guardrails",
        "post_call_rules",
        "max_internal_user_budget",
        "default_max_internal_user_budget",
        "internal_user_budget_duration",
        "custom_provider_map",
        "default_team_settings",
        "upperbound_key_generate_params",
        "default_key_generate_params",
        "default_internal_user_params",
        "default_team_params",
        "service_callback",
        "service_callbacks",
        "turn_off_message_logging",
        "modify_params",
        "enable_preview_features",
        "mcp_aliases",
        "langfuse_default_tags",
        "force_ipv4",
        "disable_end_user_cost_tracking",
        "disable_end_user_cost_tracking_prometheus_only",
        "enable_end_user_cost_tracking_prometheus_only",
        "key_generation_settings",
        "disable_add_transform_inline_image_block",
        "disable_hf_tokenizer_download",
        "enable_json_schema_validation",
        "disable_copilot_system_to_assistant",
        "allowed_fails",
        "model_alias_map",
        "public_model_groups",
        "return_response_headers",
        "redact_messages_in_exceptions",
        "ssl_verify",
        "custom_prometheus_metadata_labels",
        "custom_prometheus_tags",
        "prometheus_initialize_budget_metrics",
        "prometheus_metrics_config",
        "global_disable_no_log_param",
        "model_group_settings",
        "log_raw_request_response",
        "callback_settings",
        "timezone",
        "use_client_credentials_pass_through_routes",
        "cache_responses",
        "telemetry",
        "disable_token_counter",
        "suppress_debug_info",
        "extra_spend_tag_headers",
        "default_redis_batch_cache_expiry",
        "max_ui_session_budget",
    ],
};

pub const GENERAL_SETTINGS: Section = Section {
    name: "general_settings",
    acted: &[
        "database_url",
        "database_connection_pool_limit",
        "database_connection_timeout",
        "disable_spend_logs",
        "disable_reset_budget",
        "fail_closed_budget_enforcement",
        "disable_budget_reservation",
        "disable_prisma_schema_update",
        "allow_requests_on_db_unavailable",
        "user_api_key_cache_ttl",
        "proxy_batch_write_at",
        "master_key",
        "litellm_key_header_name",
        "max_request_size_mb",
        "max_response_size_mb",
        "dangerously_allow_mock_testing_request_params",
        "moderation_model",
    ],
    accepted: &[
        "completion_model",
        "plugins",
        "key_management_system",
        "key_management_settings",
        "use_google_kms",
        "use_azure_key_vault",
        "coordination_redis",
        "control_plane_url",
        "allow_cli_sso_verification_uri_complete",
        "database_connect_timeout",
        "database_socket_timeout",
        "database_extra_connection_params",
        "database_disable_prepared_statements",
        "database_type",
        "database_args",
        "otel",
        "custom_auth",
        "custom_auth_settings",
        "custom_auth_run_common_checks",
        "max_parallel_requests",
        "global_max_parallel_requests",
        "max_batch_file_size_mb",
        "proxy_config_reload_interval_seconds",
        "cancel_on_disconnect",
        "infer_model_from_keys",
        "background_health_checks",
        "health_check_interval",
        "health_check_concurrency",
        "health_check_skip_disabled_background_models",
        "background_health_check_model_groups",
        "model_list_healthy_only",
        "health_check_details",
        "alerting",
        "alert_types",
        "alert_to_webhook_url",
        "alerting_args",
        "alerting_threshold",
        "alert_type_config",
        "ui_access_mode",
        "allowed_routes",
        "admin_only_routes",
        "public_routes",
        "reject_clientside_metadata_tags",
        "enable_public_model_hub",
        "pass_through_request_timeout",
        "pass_through_endpoints",
        "user_header_name",
        "user_header_mappings",
        "supported_db_objects",
        "user_mcp_management_mode",
        "store_prompts_in_spend_logs",
        "disable_auto_add_proxy_admin_to_teams",
        "scheduled_job_stagger",
        "maximum_spend_logs_retention_period",
        "maximum_spend_logs_retention_interval",
        "maximum_autorouter_session_retention_period",
        "maximum_health_check_retention_period",
        "maximum_retention_period",
        "use_spend_logs_partitioning",
        "maximum_spend_logs_cleanup_batch_size",
        "maximum_spend_logs_cleanup_max_batches",
        "maximum_spend_logs_cleanup_run_budget",
        "maximum_spend_logs_cleanup_batch_timeout",
        "mcp_internal_ip_ranges",
        "mcp_trusted_proxy_ranges",
        "mcp_xff_num_trusted_hops",
        "trusted_proxy_ranges",
        "store_model_in_db",
        "forward_client_headers_to_llm_api",
        "mcp_required_fields",
        "apply_user_budget_to_team_keys",
        "user_url_validation",
        "user_url_allowed_hosts",
        "provider_url_destination_allowed_hosts",
        "disable_error_logs",
        "disable_spend_updates",
        "disable_master_key_return",
        "disable_retry_on_max_parallel_request_limit_error",
        "disable_adding_master_key_hash_to_db",
        "disable_responses_id_security",
        "enable_jwt_auth",
        "litellm_jwtauth",
        "enforce_user_param",
        "use_client_credentials_pass_through_routes",
        "enforced_params",
        "enable_oauth2_auth",
        "enable_oauth2_proxy_auth",
        "oauth2_config_mappings",
        "use_x_forwarded_for",
        "service_account_settings",
        "image_generation_model",
        "embedding_model",
        "proxy_budget_rescheduler_min_time",
        "proxy_budget_rescheduler_max_time",
        "proxy_batch_polling_interval",
        "custom_key_generate",
        "custom_sso",
        "allowed_ips",
        "default_team_disabled",
        "allow_user_auth",
        "allow_client_side_credentials",
        "spend_report_frequency",
        "litellm_license",
        "forward_openai_org_id",
        "forward_openai_project",
        "always_include_stream_usage",
        "role_permissions",
        "dangerously_permit_weak_or_unset_master_key",
        "use_redis_transaction_buffer",
        "use_shared_health_check",
        "proxy_admin_email",
        "ui_username",
        "ui_password",
    ],
};

/// Sluice's own section: settings LiteLLM has no key for.
pub const SLUICE_SETTINGS: Section = Section {
    name: "sluice_settings",
    acted: &[
        "threads",
        "work_stealing",
        "graceful_shutdown_seconds",
        "upstream_keepalive_pool_size",
        "upstream_connect_timeout",
        "dns_refresh_seconds",
        "access_log",
        "inject_stream_usage",
        "database_path",
        "spend_spool_dir",
        "metrics_max_label_sets",
        "client_header_timeout",
        "keepalive_timeout",
        "max_connections",
        "upgrade_socket",
        "max_stream_event_mb",
    ],
    accepted: &[],
};

/// Routing strategies LiteLLM knows.
pub const ROUTING_STRATEGIES: &[&str] = &[
    "simple-shuffle",
    "least-busy",
    "usage-based-routing",
    "usage-based-routing-v2",
    "latency-based-routing",
    "cost-based-routing",
];

/// `model_info.mode` values LiteLLM knows.
pub const MODES: &[&str] = &[
    "chat",
    "completion",
    "embedding",
    "image_generation",
    "image_edit",
    "audio_transcription",
    "audio_speech",
    "moderation",
    "rerank",
    "realtime",
    "batch",
    "responses",
    "search",
    "video_generation",
    "ocr",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(
            GENERAL_SETTINGS.did_you_mean("master_kye"),
            Some("master_key")
        );
        assert_eq!(LITELLM_PARAMS.did_you_mean("api_bsae"), Some("api_base"));
        assert_eq!(
            ROUTER_SETTINGS.did_you_mean("routing_stratgy"),
            Some("routing_strategy")
        );
        assert_eq!(GENERAL_SETTINGS.did_you_mean("zzzzzzzz"), None);
    }

    #[test]
    fn acted_and_accepted_lists_do_not_overlap() {
        for section in [
            &TOP_LEVEL,
            &MODEL_ENTRY,
            &LITELLM_PARAMS,
            &ROUTER_SETTINGS,
            &LITELLM_SETTINGS,
            &GENERAL_SETTINGS,
            &SLUICE_SETTINGS,
        ] {
            for key in section.acted {
                assert!(!section.accepted.contains(key), "{}.{key}", section.name);
            }
        }
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    /// Every price a deployment may set is a `litellm_params` key Sluice acts on (the two
    /// lists are written twice: a const slice cannot be built from another).
    #[test]
    fn custom_prices_are_acted_on() {
        for field in crate::pricing::CUSTOM_PRICE_FIELDS {
            assert!(LITELLM_PARAMS.acted.contains(field), "{field}");
        }
    }

    /// docs/configuration.md must name every key Sluice acts on or accepts.
    #[test]
    fn configuration_docs_name_every_key() {
        let docs = include_str!("../../docs/configuration.md");
        let mut missing = Vec::new();
        for section in [
            &TOP_LEVEL,
            &MODEL_ENTRY,
            &LITELLM_PARAMS,
            &MODEL_INFO,
            &ROUTER_SETTINGS,
            &LITELLM_SETTINGS,
            &GENERAL_SETTINGS,
            &SLUICE_SETTINGS,
        ] {
            for key in section.acted.iter().chain(section.accepted) {
                if !docs.contains(&format!("`{key}`")) && !docs.contains(&format!(".{key}`")) {
                    missing.push(format!("{}.{key}", section.name));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from docs/configuration.md: {missing:?}"
        );
    }

    /// Its list of keys accepted but not acted on is exactly the code's, per section (a key
    /// that becomes acted on must leave it).
    #[test]
    fn configuration_docs_list_exactly_the_accepted_keys() {
        let docs = include_str!("../../docs/configuration.md");
        for (label, section) in [
            ("top level", &TOP_LEVEL),
            ("model_list[]", &MODEL_ENTRY),
            ("litellm_params", &LITELLM_PARAMS),
            ("router_settings", &ROUTER_SETTINGS),
            ("litellm_settings", &LITELLM_SETTINGS),
            ("general_settings", &GENERAL_SETTINGS),
        ] {
            let prefix = format!("- **{label}**: ");
            let line = docs
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no accepted-keys line for {label}"));
            let mut listed: Vec<&str> = line[prefix.len()..]
                .split(", ")
                .map(|k| k.trim().trim_matches('`'))
                .collect();
            let mut code: Vec<&str> = section.accepted.to_vec();
            listed.sort_unstable();
            code.sort_unstable();
            assert_eq!(
                listed, code,
                "accepted keys of {label} in docs/configuration.md"
            );
        }
    }
}
