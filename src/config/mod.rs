//! Reading a LiteLLM `config.yaml` into Sluice's validated [`RuntimeConfig`] (start-up only).
//!
//! The YAML is parsed into a tree, `os.environ/NAME` references are resolved everywhere, and one
//! walk over the tree builds the runtime config while collecting *every* problem with its YAML
//! path: errors (a wrong value of a key Sluice acts on), unknown keys (a warning with a "did you
//! mean", an error under `--strict`), and recognised LiteLLM keys Sluice does not act on yet
//! (listed together in one start-up warning). Nothing downstream ever sees the raw YAML.

pub mod env;
pub mod keys;
pub mod model_id;
pub mod provider_catalog;
pub mod upstream_url;

pub use upstream_url::UpstreamUrl;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use filters::route::{Alias, Deployment, Router, Secret, Weighting};
use http::header::HeaderName;
use serde_yaml::{Mapping, Value};

use crate::pricing::{ModelPrice, PriceTable};
use env::Env;
use keys::Section;
use provider_catalog::{ProviderSpec, Wire};

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
    pub json_logs: bool,
    pub verbose: bool,
    pub success_callbacks: Vec<String>,
    pub server: ServerSettings,
    /// `None` without a master key: no admin can exist, so no key store is opened.
    pub management: Option<ManagementSettings>,
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
        let mut management =
            self.management(&general, &router_settings, &sluice, master_key.is_some());
        let budgets = self.proxy_budgets(&litellm);
        if let Some(m) = &mut management {
            (m.proxy_budget, m.max_end_user_budget) = budgets;
        }

        let max_stream_event_mb = get(&sluice, "max_stream_event_mb")
            .and_then(|v| self.positive_f64(v, "sluice_settings.max_stream_event_mb"))
            .unwrap_or(16.0);
        Some(RuntimeConfig {
            max_stream_event_bytes: (max_stream_event_mb * 1024.0 * 1024.0) as usize,
            deployments,
            router: Arc::new(router),
            master_key: master_key.map(Secret::new),
            key_header,
            max_request_body_bytes: (max_request_mb * 1024.0 * 1024.0) as usize,
            max_response_body_bytes: (max_response_mb * 1024.0 * 1024.0) as usize,
            routing_strategy,
            json_logs,
            verbose,
            success_callbacks,
            server,
            management,
        })
    }

    /// `litellm_settings.max_budget` (+ `budget_duration`): the proxy-wide budget LiteLLM
    /// keeps as the user `litellm-proxy-budget`; `max_end_user_budget`: the budget of every end
    /// user without one of its own.
    fn proxy_budgets(&mut self, litellm: &Entries<'_>) -> (Option<ProxyBudget>, Option<f64>) {
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

    fn management(
        &mut self,
        general: &Entries<'_>,
        router: &Entries<'_>,
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
        let redis_url = match get(router, "redis_url")
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
        };
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
            redis_url,
            spend_spool_configured: spool.is_some(),
            spend_spool_dir: spool.unwrap_or_else(|| "sluice-spend-spool".into()).into(),
            proxy_budget: None,
            max_end_user_budget: None,
        })
    }

    fn environment_variables(&mut self, root: &Value) -> HashMap<String, String> {
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
    fn section_entries<'v>(
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

    fn mapping_section<'v>(
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

    fn routing_strategy(&mut self, s: String) -> Option<String> {
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
        if s != "simple-shuffle" {
            self.report.warn(
                path,
                format!("{s:?} is not implemented yet; Sluice routes with simple-shuffle"),
            );
        }
        Some(s)
    }

    fn aliases(&mut self, value: &Value) -> HashMap<String, Alias> {
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

    fn deployment(
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

        // model_info: open-ended metadata; `id`, `mode` and `order` are acted on.
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
        let base_model = info_map
            .get("base_model")
            .and_then(Value::as_str)
            .or_else(|| raw_params.get("base_model").and_then(Value::as_str));
        let mut price = self
            .prices
            .lookup(&provider, &upstream_model, base_model)
            .cloned();
        // Custom prices on the deployment win over the table (LiteLLM's lookup order).
        for field in [
            "input_cost_per_token",
            "output_cost_per_token",
            "cache_read_input_token_cost",
            "cache_creation_input_token_cost",
        ] {
            let custom = raw_params
                .get(field)
                .or_else(|| info_map.get(field))
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));
            if let Some(value) = custom {
                let p = price.get_or_insert_with(Default::default);
                let slot = match field {
                    "input_cost_per_token" => &mut p.input_cost_per_token,
                    "output_cost_per_token" => &mut p.output_cost_per_token,
                    "cache_read_input_token_cost" => &mut p.cache_read_input_token_cost,
                    _ => &mut p.cache_creation_input_token_cost,
                };
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
        })
    }

    /// Splits `litellm_params.model` into provider and provider model, as LiteLLM's
    /// `get_llm_provider` does: explicit `custom_llm_provider`, then the prefix, then the price
    /// table's `litellm_provider` for a bare name.
    fn provider_of(
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

    fn api_base(
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

    fn header_map(&mut self, value: &Value, path: &str) -> Vec<(String, String)> {
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

    fn check_unique_ids(&mut self, deployments: &[DeploymentConfig]) {
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
    fn check_weighting(&mut self, deployments: &[DeploymentConfig]) {
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

    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => None,
            _ => {
                self.report.error(path, "must be a string");
                None
            }
        }
    }

    fn string_list(&mut self, v: &Value, path: &str) -> Vec<String> {
        match v {
            Value::Null => Vec::new(),
            Value::String(s) => vec![s.clone()],
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(item, &format!("{path}[{i}]")))
                .collect(),
            _ => {
                self.report.error(path, "must be a list of names");
                Vec::new()
            }
        }
    }

    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Some(true),
                "false" | "no" | "0" | "off" => Some(false),
                _ => {
                    self.report
                        .error(path, format!("must be true or false, got {s:?}"));
                    None
                }
            },
            other => {
                self.report.error(
                    path,
                    format!("must be true or false, got {}", describe(other)),
                );
                None
            }
        }
    }

    fn number(&mut self, v: &Value, path: &str, what: &str) -> Option<f64> {
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            Value::Null => return None,
            _ => None,
        };
        if n.is_none() || n.is_some_and(|n| !n.is_finite()) {
            self.report
                .error(path, format!("must be {what}, got {}", describe(v)));
            return None;
        }
        n
    }

    fn positive_f64(&mut self, v: &Value, path: &str) -> Option<f64> {
        let n = self.number(v, path, "a positive number")?;
        if n <= 0.0 {
            self.report
                .error(path, format!("must be a positive number, got {n}"));
            return None;
        }
        Some(n)
    }

    fn non_negative_f64(&mut self, v: &Value, path: &str) -> Option<f64> {
        let n = self.number(v, path, "a number >= 0")?;
        if n < 0.0 {
            self.report
                .error(path, format!("must be a number >= 0, got {n}"));
            return None;
        }
        Some(n)
    }

    fn non_negative_u64(&mut self, v: &Value, path: &str) -> Option<u64> {
        let n = self.number(v, path, "a whole number >= 0")?;
        if n < 0.0 || n.fract() != 0.0 {
            self.report
                .error(path, format!("must be a whole number >= 0, got {n}"));
            return None;
        }
        Some(n as u64)
    }

    fn positive_u64(&mut self, v: &Value, path: &str) -> Option<u64> {
        let n = self.non_negative_u64(v, path)?;
        if n == 0 {
            self.report.error(path, "must be at least 1");
            return None;
        }
        Some(n)
    }
}

struct DeploymentDefaults<'e> {
    timeout: f64,
    stream_timeout: Option<f64>,
    env: &'e Env,
    /// `litellm_settings.drop_params`.
    drop_params: bool,
}

/// Replaces every `os.environ/NAME` string in the tree by the variable's value (or null), and
/// records the paths of unset variables.
fn resolve_env(value: &mut Value, path: String, env: &Env, missing: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => {
            if let Some(var) = env::reference(s) {
                match env.get(var) {
                    Some(v) => *s = v,
                    None => {
                        missing.push((path, var.to_string()));
                        *value = Value::Null;
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_env(item, format!("{path}[{i}]"), env, missing);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = scalar_text(k);
                if path.is_empty() && key == "environment_variables" {
                    continue;
                }
                resolve_env(v, join(&path, &key), env, missing);
            }
        }
        _ => {}
    }
}

/// `litellm_params` as `/model/info` shows them: credentials removed, other secrets masked
/// (LiteLLM's `remove_sensitive_info_from_deployment` and `SensitiveDataMasker`).
fn public_params(params: &Mapping) -> serde_json::Value {
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

fn is_sensitive_key(key: &str) -> bool {
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
fn mask(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 8))
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => format!("{other:?}"),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "nothing".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on"
    )
}

fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    candidates
        .map(|c| {
            (
                strsim::normalized_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests;
