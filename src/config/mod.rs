//! Reading a LiteLLM `config.yaml` into Sluice's validated [`RuntimeConfig`] (start-up only).
//!
//! The YAML is parsed into a tree, `os.environ/NAME` references are resolved everywhere, and one
//! walk over the tree builds the runtime config while collecting *every* problem with its YAML
//! path: errors (a wrong value of a key Sluice acts on), unknown keys (a warning with a "did you
//! mean", an error under `--strict`), and recognised LiteLLM keys Sluice does not act on yet
//! (listed together in one start-up warning). Nothing downstream ever sees the raw YAML.

mod cache;
mod deployment;
pub mod env;
pub mod keys;
pub mod model_id;
pub mod pass_through;
pub mod provider_catalog;
mod router_settings;
mod settings;
pub mod upstream_url;
mod values;

pub use cache::{CacheScope, CacheSettings};
pub use router_settings::{
    FallbackKind, FallbackSettings, LatencyArgs, RetryPolicy, RouterSettings, RoutingStrategy,
};
pub use upstream_url::UpstreamUrl;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use filters::route::{Deployment, Router, Secret};
use http::header::HeaderName;
use serde_yaml::{Mapping, Value};

/// A deployment's prices (`DeploymentConfig::price`), as the price table holds them.
pub use crate::pricing::ModelPrice;
use crate::pricing::PriceTable;
use deployment::DeploymentDefaults;
use env::Env;
use provider_catalog::Wire;
use values::*;

/// LiteLLM's default `request_timeout` (seconds).
const DEFAULT_REQUEST_TIMEOUT_SECS: f64 = 6000.0;
/// Request body limit when `general_settings.max_request_size_mb` is unset: large enough for
/// base64 images.
const DEFAULT_MAX_REQUEST_MB: f64 = 32.0;
/// Non-streaming response bodies are buffered (to rewrite `model` and read `usage`); this bounds it.
const DEFAULT_MAX_RESPONSE_MB: f64 = 64.0;

/// One problem found in the config, with its YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Everything validation found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub errors: Vec<Problem>,
    /// Keys no section knows, with a suggestion when one is close.
    pub unknown_keys: Vec<Problem>,
    /// Paths of recognised LiteLLM keys Sluice does not act on yet.
    pub not_acted: Vec<String>,
    pub warnings: Vec<Problem>,
}

impl Report {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Whether the config must be refused (errors, or unknown keys under `--strict`).
    pub fn is_fatal(&self, strict: bool) -> bool {
        !self.errors.is_empty() || (strict && !self.unknown_keys.is_empty())
    }

    /// Human-readable lines, errors first.
    pub fn lines(&self, strict: bool) -> Vec<String> {
        let mut out: Vec<String> = self.errors.iter().map(|p| format!("error: {p}")).collect();
        let unknown_level = if strict { "error" } else { "warning" };
        out.extend(
            self.unknown_keys
                .iter()
                .map(|p| format!("{unknown_level}: {p}")),
        );
        if !self.not_acted.is_empty() {
            out.push(format!(
                "warning: LiteLLM settings Sluice recognises but does not act on yet (ignored): {}",
                self.not_acted.join(", ")
            ));
        }
        out.extend(self.warnings.iter().map(|p| format!("warning: {p}")));
        out
    }
}

/// Values from the command line and environment that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub threads: Option<usize>,
}

/// How unsupported OpenAI parameters are treated for one deployment (applied by the codecs,
/// `providers::translate`).
#[derive(Debug, Clone, Default)]
pub struct ParamPolicy {
    /// `drop_params: true` (global `litellm_settings` or per deployment): drop, don't refuse.
    pub drop_unsupported: bool,
    /// `additional_drop_params`: always removed before encoding.
    pub always_drop: Vec<String>,
}

/// A deployment plus what only the I/O layer and the info endpoints need.
#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    pub deployment: Arc<Deployment>,
    /// `None` when the provider's wire format is not implemented yet.
    pub wire: Option<Wire>,
    /// Headers every request to this provider carries (besides auth).
    pub static_headers: Vec<(String, String)>,
    /// `model_info.mode`, else the price table's, else `chat`.
    pub mode: String,
    /// `litellm_params` with secrets removed or masked, for `/model/info`.
    pub public_params: serde_json::Value,
    /// `litellm_params.model` as written (the `litellm_model_name` metric label).
    pub litellm_model_name: String,
    /// `model_info` as configured, with `id` filled in.
    pub model_info: serde_json::Value,
    pub price: Option<ModelPrice>,
    /// `drop_params` / `additional_drop_params` for this deployment.
    pub params: ParamPolicy,
    /// Azure's `api-version` (`api_version`, else `AZURE_API_VERSION`, else the GA default).
    pub api_version: Option<String>,
    /// Azure Entra ID token: sent as `Authorization: Bearer` instead of the `api-key` header.
    pub azure_ad_token: Option<Secret>,
    /// Bedrock credentials (SigV4 keys and region, or an API key).
    pub aws: Option<provider_catalog::AwsAuth>,
    /// `litellm_params.num_retries`: retries when a request through this deployment fails
    /// and the request itself does not say.
    pub num_retries: Option<u32>,
    /// `model_info.cooldown_time` (else `litellm_params.cooldown_time`): this deployment's own
    /// cooldown length.
    pub cooldown_time: Option<Duration>,
    /// Tag routing (`routing::tags`): `litellm_params.tags`, `litellm_params.tag_regex`
    /// (matched against `User-Agent: ...`), `model_info.enable_tag_filtering` (overrides the
    /// router's for the group) and `model_info.allow_fail_open`.
    pub tags: DeploymentTags,
    /// `litellm_params.use_in_pass_through`: the provider's pass-through route sends this
    /// deployment's credentials (`config::pass_through`).
    pub use_in_pass_through: bool,
}

/// A deployment's tag-routing settings.
#[derive(Debug, Clone, Default)]
pub struct DeploymentTags {
    pub tags: Vec<String>,
    pub regex: Vec<regex::Regex>,
    pub enable_tag_filtering: Option<bool>,
    pub allow_fail_open: bool,
}

/// Server settings: LiteLLM has no keys for these, so they live in `sluice_settings`.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub threads: usize,
    /// Tokio work stealing between the proxy's threads (Pingora's `work_stealing`).
    pub work_stealing: bool,
    /// How long SIGTERM waits for in-flight requests (streams included) before exiting.
    pub graceful_shutdown: Duration,
    pub upstream_keepalive_pool_size: usize,
    pub upstream_connect_timeout: Duration,
    pub dns_refresh: Duration,
    pub access_log: bool,
    /// Ask OpenAI-compatible upstreams for stream usage when the client did not (and hide the
    /// extra usage chunk from that client), so every stream's tokens are counted.
    pub inject_stream_usage: bool,
    /// Distinct metric label combinations before new ones are folded into one.
    pub metrics_max_label_sets: usize,
    /// A request header must be complete this long after a connection opens (nginx's
    /// `client_header_timeout`).
    pub client_header_timeout: Duration,
    /// How long an idle keep-alive connection waits for its next request (nginx's
    /// `keepalive_timeout`).
    pub keepalive_timeout: Duration,
    /// Open client connections at most (`None`: three quarters of the file limit).
    pub max_connections: Option<usize>,
    /// The socket a binary upgrade hands the listening sockets over (`--upgrade`); default
    /// `upgrade-<port>.sock` in a runtime directory only this user can write (`server.rs`).
    pub upgrade_socket: Option<String>,
}

/// Distinct label combinations the metrics record before new ones are folded into one
/// overflow combination (`sluice_settings.metrics_max_label_sets`): about 10 KB of `/metrics`
/// each, so 1,000 bound it near 10 MB whatever clients send.
pub const DEFAULT_METRICS_MAX_LABEL_SETS: usize = 1000;

/// Keys, budgets and spend (`general_settings` database keys, `router_settings` Redis keys).
#[derive(Debug, Clone)]
pub struct ManagementSettings {
    /// `postgres://...` from `database_url` / `DATABASE_URL`, else `sqlite://<path>`.
    pub database_url: String,
    pub pool_limit: u32,
    pub connect_timeout: Duration,
    pub allow_requests_on_db_unavailable: bool,
    /// How long a resolved key is cached before it is read again even without a change
    /// (`general_settings.user_api_key_cache_ttl`, seconds, default 60 as LiteLLM).
    pub key_cache_ttl: Duration,
    pub batch_write_interval: Duration,
    pub disable_spend_logs: bool,
    /// Migrations at start-up (off with `DISABLE_SCHEMA_UPDATE=true` or
    /// `disable_prisma_schema_update: true`).
    pub run_migrations: bool,
    /// How often due budget windows are looked for.
    pub budget_reset_interval: Duration,
    /// `disable_reset_budget`: spend is never reset when a window ends.
    pub disable_reset_budget: bool,
    /// `general_settings.fail_closed_budget_enforcement`: a request is refused unless its whole
    /// worst case fits every budget (default: reserved up to what is left, as LiteLLM).
    pub fail_closed_budget_enforcement: bool,
    /// `general_settings.disable_budget_reservation`: budgets check spend only, nothing is
    /// reserved.
    pub disable_budget_reservation: bool,
    pub redis_url: Option<String>,
    /// Where spend the database cannot take waits on disk (`sluice_settings.spend_spool_dir`,
    /// env `SLUICE_SPEND_SPOOL_DIR`, default `sluice-spend-spool` in the working directory).
    pub spend_spool_dir: std::path::PathBuf,
    /// Whether the directory was configured (a default that cannot be created is a warning).
    pub spend_spool_configured: bool,
    /// `litellm_settings.max_budget` / `budget_duration`.
    pub proxy_budget: Option<ProxyBudget>,
    /// `litellm_settings.max_end_user_budget`.
    pub max_end_user_budget: Option<f64>,
}

/// The proxy-wide budget (`litellm_settings.max_budget`, `budget_duration`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyBudget {
    pub max_budget: f64,
    pub budget_duration: Option<String>,
}

/// The user whose spend and budget are the proxy's (LiteLLM's `litellm_proxy_budget_name`).
pub const PROXY_BUDGET_USER: &str = "litellm-proxy-budget";

/// The validated configuration the gateway runs on.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub deployments: Vec<DeploymentConfig>,
    pub router: Arc<Router>,
    pub master_key: Option<Secret>,
    pub key_header: Option<HeaderName>,
    pub max_request_body_bytes: usize,
    pub max_response_body_bytes: usize,
    /// The largest stream event (or NDJSON line) an upstream may send
    /// (`sluice_settings.max_stream_event_mb`, default 16).
    pub max_stream_event_bytes: usize,
    pub routing_strategy: String,
    /// Retries and cooldowns (`router_settings`, see `docs/routing.md`).
    pub retries: RouterSettings,
    /// Fallback model groups.
    pub fallbacks: FallbackSettings,
    /// `general_settings.dangerously_allow_mock_testing_request_params`: keys that are not
    /// admins may send `mock_testing_*` parameters too.
    pub allow_mock_testing_params: bool,
    pub json_logs: bool,
    pub verbose: bool,
    pub success_callbacks: Vec<String>,
    pub server: ServerSettings,
    /// `None` without a master key: no admin can exist, so no key store is opened.
    pub management: Option<ManagementSettings>,
    /// The Redis several instances share: the router's cooldowns, failure counts, usage and
    /// latency (`routing::shared`), and with a key store, budgets' ledger.
    pub redis_url: Option<String>,
    /// The response cache (`litellm_settings.cache: true`), when on.
    pub cache: Option<CacheSettings>,
    /// Where the provider pass-through routes (`/anthropic/*`, ...) go, with what credentials.
    pub pass_through: pass_through::PassThroughTargets,
    /// `general_settings.moderation_model`: the model of every `/moderations` request.
    pub moderation_model: Option<String>,
}

impl RuntimeConfig {
    pub fn deployment(&self, index: usize) -> &DeploymentConfig {
        &self.deployments[index]
    }
}

/// Reads and validates a config file. `Err` carries the report when the config must be refused.
pub fn load_file(
    path: &Path,
    env: &Env,
    overrides: &Overrides,
    prices: &PriceTable,
    strict: bool,
) -> Result<(RuntimeConfig, Report), Report> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, env, overrides, prices, strict),
        Err(e) => {
            let mut report = Report::default();
            report.error(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            );
            Err(report)
        }
    }
}

/// Validates config text.
pub fn load_str(
    text: &str,
    env: &Env,
    overrides: &Overrides,
    prices: &PriceTable,
    strict: bool,
) -> Result<(RuntimeConfig, Report), Report> {
    let mut report = Report::default();
    let root: Value = if text.trim().is_empty() {
        Value::Mapping(Mapping::new())
    } else {
        match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                report.error("", format!("not valid YAML: {e}"));
                return Err(report);
            }
        }
    };
    let root = match root {
        Value::Null => Value::Mapping(Mapping::new()),
        v => v,
    };
    let config = Builder {
        report: &mut report,
        env,
        prices,
    }
    .build(root, overrides);
    if report.is_fatal(strict) {
        return Err(report);
    }
    match config {
        Some(c) => Ok((c, report)),
        None => Err(report),
    }
}

struct Builder<'a> {
    report: &'a mut Report,
    env: &'a Env,
    prices: &'a PriceTable,
}

/// A `key: value` of the section being walked.
type Entries<'v> = Vec<(String, &'v Value)>;

/// The value of `key` in a section's entries.
fn get<'v>(entries: &Entries<'v>, key: &str) -> Option<&'v Value> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

impl Builder<'_> {
    fn build(mut self, mut root: Value, overrides: &Overrides) -> Option<RuntimeConfig> {
        let Value::Mapping(_) = root else {
            self.report.error(
                "",
                "the config must be a mapping with sections such as model_list",
            );
            return None;
        };

        // environment_variables first: os.environ/ references may point into it.
        let overlay = self.environment_variables(&root);
        let env = self.env.clone().with_overlay(overlay);
        let mut missing = Vec::new();
        resolve_env(&mut root, String::new(), &env, &mut missing);
        for (path, var) in missing {
            if path == "general_settings.master_key" {
                self.report.error(
                    &path,
                    format!("environment variable {var} is not set (refusing to start without the master key it names)"),
                );
            } else {
                self.report.warn(
                    &path,
                    format!("environment variable {var} is not set; treated as absent"),
                );
            }
        }

        let top = self.section_entries(&root, "", &keys::TOP_LEVEL);
        let section = |name: &str| top.iter().find(|(k, _)| k == name).map(|(_, v)| *v);

        let general = self.mapping_section(
            section("general_settings"),
            "general_settings",
            &keys::GENERAL_SETTINGS,
        );
        let litellm = self.mapping_section(
            section("litellm_settings"),
            "litellm_settings",
            &keys::LITELLM_SETTINGS,
        );
        let router_settings = self.mapping_section(
            section("router_settings"),
            "router_settings",
            &keys::ROUTER_SETTINGS,
        );
        let sluice = self.mapping_section(
            section("sluice_settings"),
            "sluice_settings",
            &keys::SLUICE_SETTINGS,
        );
        // --- general_settings
        let master_key = match get(&general, "master_key") {
            Some(v) => self.string(v, "general_settings.master_key"),
            None => env.get("LITELLM_MASTER_KEY"),
        };
        if let Some(key) = &master_key
            && key.trim().is_empty()
        {
            self.report
                .error("general_settings.master_key", "must not be empty");
        }
        let key_header = get(&general, "litellm_key_header_name")
            .and_then(|v| self.string(v, "general_settings.litellm_key_header_name"))
            .and_then(
                |name| match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                    Ok(h) => Some(h),
                    Err(_) => {
                        self.report.error(
                            "general_settings.litellm_key_header_name",
                            format!("{name:?} is not a valid HTTP header name"),
                        );
                        None
                    }
                },
            );
        let allow_mock_testing_params =
            get(&general, "dangerously_allow_mock_testing_request_params")
                .and_then(|v| {
                    self.boolean(
                        v,
                        "general_settings.dangerously_allow_mock_testing_request_params",
                    )
                })
                .unwrap_or(false);
        if allow_mock_testing_params {
            self.report.warn(
                "general_settings.dangerously_allow_mock_testing_request_params",
                "every key may send mock_testing_* parameters, which make requests fail on purpose; never set this in production",
            );
        }
        let moderation_model = get(&general, "moderation_model")
            .and_then(|v| self.string(v, "general_settings.moderation_model"));
        let max_request_mb = get(&general, "max_request_size_mb")
            .and_then(|v| self.positive_f64(v, "general_settings.max_request_size_mb"))
            .unwrap_or(DEFAULT_MAX_REQUEST_MB);
        let max_response_mb = get(&general, "max_response_size_mb")
            .and_then(|v| self.positive_f64(v, "general_settings.max_response_size_mb"))
            .unwrap_or(DEFAULT_MAX_RESPONSE_MB);

        // --- litellm_settings
        let json_logs = get(&litellm, "json_logs")
            .and_then(|v| self.boolean(v, "litellm_settings.json_logs"))
            .unwrap_or(false)
            || env.get("JSON_LOGS").is_some_and(|v| is_truthy(&v));
        let verbose = get(&litellm, "set_verbose")
            .and_then(|v| self.boolean(v, "litellm_settings.set_verbose"))
            .unwrap_or(false);
        let request_timeout = get(&litellm, "request_timeout")
            .and_then(|v| self.positive_f64(v, "litellm_settings.request_timeout"));
        let mut success_callbacks = Vec::new();
        for key in ["callbacks", "success_callback", "failure_callback"] {
            let path = format!("litellm_settings.{key}");
            if let Some(v) = get(&litellm, key) {
                for name in self.string_list(v, &path) {
                    if name != "prometheus" {
                        self.report.warn(
                            &path,
                            format!("callback {name:?} is not supported by Sluice; ignored (Prometheus metrics are always on at /metrics)"),
                        );
                    } else if !success_callbacks.contains(&name) {
                        success_callbacks.push(name);
                    }
                }
            }
        }
        if let Some(v) = get(&litellm, "redact_user_api_key_info") {
            self.boolean(v, "litellm_settings.redact_user_api_key_info");
        }

        // --- router_settings
        let routing_strategy = match get(&router_settings, "routing_strategy") {
            Some(v) => self
                .string(v, "router_settings.routing_strategy")
                .and_then(|s| self.routing_strategy(s))
                .unwrap_or_else(|| "simple-shuffle".into()),
            None => "simple-shuffle".into(),
        };
        let mut retries = self.retry_settings(&router_settings, &litellm);
        retries.strategy = self.strategy(&routing_strategy, &router_settings);
        let fallbacks = self.fallback_settings(&router_settings, &litellm);
        let router_timeout = get(&router_settings, "timeout")
            .and_then(|v| self.positive_f64(v, "router_settings.timeout"));
        let router_stream_timeout = get(&router_settings, "stream_timeout")
            .and_then(|v| self.positive_f64(v, "router_settings.stream_timeout"));
        let default_timeout = router_timeout
            .or(request_timeout)
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS);

        // --- sluice_settings
        let threads = overrides
            .threads
            .or_else(|| {
                get(&sluice, "threads").and_then(|v| {
                    self.positive_u64(v, "sluice_settings.threads")
                        .map(|n| n as usize)
                })
            })
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let server = ServerSettings {
            host: overrides
                .host
                .clone()
                .or_else(|| env.get("HOST"))
                .unwrap_or_else(|| "0.0.0.0".into()),
            port: overrides.port.unwrap_or_else(|| {
                match env.get("PORT").map(|p| p.parse::<u16>()) {
                    Some(Ok(p)) => p,
                    Some(Err(_)) => {
                        self.report
                            .error("", "environment variable PORT is not a port number");
                        4000
                    }
                    None => 4000,
                }
            }),
            threads,
            work_stealing: get(&sluice, "work_stealing")
                .and_then(|v| self.boolean(v, "sluice_settings.work_stealing"))
                .unwrap_or(true),
            graceful_shutdown: Duration::from_secs_f64(
                get(&sluice, "graceful_shutdown_seconds")
                    .and_then(|v| {
                        self.non_negative_f64(v, "sluice_settings.graceful_shutdown_seconds")
                    })
                    .unwrap_or(60.0),
            ),
            upstream_keepalive_pool_size: get(&sluice, "upstream_keepalive_pool_size")
                .and_then(|v| self.positive_u64(v, "sluice_settings.upstream_keepalive_pool_size"))
                .map_or(256, |n| n as usize),
            upstream_connect_timeout: Duration::from_secs_f64(
                get(&sluice, "upstream_connect_timeout")
                    .and_then(|v| self.positive_f64(v, "sluice_settings.upstream_connect_timeout"))
                    .unwrap_or(10.0),
            ),
            dns_refresh: Duration::from_secs_f64(
                get(&sluice, "dns_refresh_seconds")
                    .and_then(|v| self.positive_f64(v, "sluice_settings.dns_refresh_seconds"))
                    .unwrap_or(30.0),
            ),
            access_log: get(&sluice, "access_log")
                .and_then(|v| self.boolean(v, "sluice_settings.access_log"))
                .unwrap_or(true),
            inject_stream_usage: get(&sluice, "inject_stream_usage")
                .and_then(|v| self.boolean(v, "sluice_settings.inject_stream_usage"))
                .unwrap_or(true),
            metrics_max_label_sets: get(&sluice, "metrics_max_label_sets")
                .and_then(|v| self.positive_u64(v, "sluice_settings.metrics_max_label_sets"))
                .map_or(DEFAULT_METRICS_MAX_LABEL_SETS, |n| n as usize),
            client_header_timeout: Duration::from_secs_f64(
                get(&sluice, "client_header_timeout")
                    .and_then(|v| self.positive_f64(v, "sluice_settings.client_header_timeout"))
                    .unwrap_or(60.0),
            ),
            keepalive_timeout: Duration::from_secs_f64(
                get(&sluice, "keepalive_timeout")
                    .and_then(|v| self.positive_f64(v, "sluice_settings.keepalive_timeout"))
                    .unwrap_or(75.0),
            ),
            max_connections: get(&sluice, "max_connections")
                .and_then(|v| self.positive_u64(v, "sluice_settings.max_connections"))
                .map(|n| n as usize),
            upgrade_socket: get(&sluice, "upgrade_socket")
                .and_then(|v| self.string(v, "sluice_settings.upgrade_socket")),
        };

        // --- model_list
        let drop_params = get(&litellm, "drop_params")
            .and_then(|v| self.boolean(v, "litellm_settings.drop_params"))
            .unwrap_or(false);
        let defaults = DeploymentDefaults {
            timeout: default_timeout,
            stream_timeout: router_stream_timeout,
            env: &env,
            drop_params,
        };
        let deployments = match section("model_list") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.deployment(i, item, &defaults))
                .collect(),
            Some(_) => {
                self.report.error("model_list", "must be a list of models");
                Vec::new()
            }
        };
        if deployments.is_empty() && self.report.errors.is_empty() {
            self.report.warn(
                "model_list",
                "no models are configured; every LLM request will be answered with 400",
            );
        }
        self.check_unique_ids(&deployments);
        self.check_weighting(&deployments);

        // Deployments of providers not implemented yet only route when their group has nothing else.
        let supported_groups: HashSet<&str> = deployments
            .iter()
            .filter(|d| d.wire.is_some())
            .map(|d| d.deployment.model_name.as_str())
            .collect();
        let routable: Vec<Arc<Deployment>> = deployments
            .iter()
            .filter(|d| {
                d.wire.is_some() || !supported_groups.contains(d.deployment.model_name.as_str())
            })
            .map(|d| d.deployment.clone())
            .collect();
        let aliases = get(&router_settings, "model_group_alias")
            .map(|v| self.aliases(v))
            .unwrap_or_default();
        let router = Router::new(routable, aliases.clone());
        for (alias, target) in &aliases {
            if router.group(&target.group).is_none() && router.resolve(&target.group).is_none() {
                let suggestion = closest(&target.group, router.groups().iter().map(|g| &*g.name));
                self.report.error(
                    &format!("router_settings.model_group_alias.{alias}"),
                    format!(
                        "alias target {:?} is not a model_name in model_list{}",
                        target.group,
                        suggestion
                            .map(|s| format!(" (did you mean {s:?}?)"))
                            .unwrap_or_default()
                    ),
                );
            }
        }

        if master_key.is_none() {
            self.report.warn(
                "general_settings.master_key",
                "no master key is set (nor LITELLM_MASTER_KEY): every route is open to anyone who can reach the port",
            );
        }
        let mut management = self.management(&general, &sluice, master_key.is_some());
        let redis_url = self.redis_url(&router_settings);
        if let Some(m) = &mut management {
            m.redis_url = redis_url.clone();
        }
        let budgets = self.proxy_budgets(&litellm);
        if let Some(m) = &mut management {
            (m.proxy_budget, m.max_end_user_budget) = budgets;
        }

        let cache = self.cache(&litellm);
        let max_stream_event_mb = get(&sluice, "max_stream_event_mb")
            .and_then(|v| self.positive_f64(v, "sluice_settings.max_stream_event_mb"))
            .unwrap_or(16.0);
        let pass_through = pass_through::PassThroughTargets::resolve(&deployments, &env);
        Some(RuntimeConfig {
            pass_through,
            moderation_model,
            max_stream_event_bytes: (max_stream_event_mb * 1024.0 * 1024.0) as usize,
            deployments,
            router: Arc::new(router),
            master_key: master_key.map(Secret::new),
            key_header,
            max_request_body_bytes: (max_request_mb * 1024.0 * 1024.0) as usize,
            max_response_body_bytes: (max_response_mb * 1024.0 * 1024.0) as usize,
            routing_strategy,
            retries,
            fallbacks,
            allow_mock_testing_params,
            json_logs,
            verbose,
            success_callbacks,
            server,
            management,
            redis_url,
            cache,
        })
    }
}

#[cfg(test)]
mod tests;
