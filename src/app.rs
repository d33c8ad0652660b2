//! The gateway's shared state, built once at start-up from the validated config and shared by
//! every Pingora phase (`Arc<App>`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::SystemTime;

use filters::auth::MasterKeyAuth;
use filters::route::RouteFilter;
use filters::{Chain, Filter};
use pingora::connectors::ConnectorOptions;
use pingora::connectors::TransportConnector;

use crate::config::RuntimeConfig;
use crate::config::UpstreamUrl;
use crate::listings::Listings;
use crate::management::Management;
use crate::management::keys::StoreKeys;
use crate::metrics::{DeploymentLabels, Metrics};
use crate::pricing::PriceTable;
use crate::upstream::Endpoints;

/// Everything a request needs, immutable after start-up except counters.
pub struct App {
    pub config: Arc<RuntimeConfig>,
    pub chain: Chain,
    pub endpoints: Arc<Endpoints>,
    /// Parsed `api_base` per deployment index (`None` when not routable).
    pub bases: Vec<Option<UpstreamUrl>>,
    /// Headers every upstream request of a deployment carries (auth, extra headers), per index.
    pub upstream_headers: Vec<Arc<http::HeaderMap>>,
    /// The credentials each deployment sends, redacted from error bodies relayed to clients.
    pub secrets: Vec<Vec<Box<str>>>,
    /// The routing headers of every response a deployment serves (`x-litellm-model-id`, ...),
    /// built once: per index.
    pub response_headers: Vec<Vec<(http::HeaderName, http::HeaderValue)>>,
    /// Pingora's transport connector: new TCP and TLS connections to deployments.
    pub transport: TransportConnector,
    /// Idle upstream connections kept alive between requests.
    pub pool: crate::upstream::pool::UpstreamPool,
    pub metrics: Metrics,
    /// Pre-rendered `/models`, `/model/info`, `/model_group/info`.
    pub listings: Listings,
    pub prices: Arc<PriceTable>,
    /// Keys, budgets and spend (with a master key set).
    pub management: Option<Arc<Management>>,
    /// The response cache (`litellm_settings.cache`), when on for chat completions.
    pub cache: Option<Arc<crate::cache::ResponseCache>>,
    /// Responses API answers kept for `previous_response_id` and retrieval.
    pub responses: Arc<crate::management::stored_responses::ResponseStore>,
    /// Cooldowns and failure counts of the deployments, by index.
    pub health: Arc<crate::routing::Health>,
    /// Tag routing is on for the router or for some group (`model_info.enable_tag_filtering`):
    /// only then are a request's tags gathered (decided once, at start-up).
    pub tag_routing_configured: bool,
    in_flight: AtomicUsize,
    draining: AtomicBool,
    /// SIGQUIT handed the listening sockets to a new process (`shutdown.rs`).
    upgrading: AtomicBool,
    pub started_at: SystemTime,
}

impl App {
    /// The upstream endpoint of a provider's pass-through route (kept resolved with the
    /// deployments' endpoints).
    pub fn pass_through_endpoint(
        &self,
        provider: filters::endpoint::PassThroughProvider,
    ) -> Option<&Arc<crate::upstream::Endpoint>> {
        let slot = self.config.pass_through.slot(provider)?;
        self.endpoints
            .for_deployment(self.config.deployments.len() + slot)
    }

    pub fn new(
        config: RuntimeConfig,
        prices: Arc<PriceTable>,
        management: Option<Arc<Management>>,
    ) -> App {
        let config = Arc::new(config);
        let bases: Vec<Option<UpstreamUrl>> = config
            .deployments
            .iter()
            .map(|d| {
                d.wire
                    .and_then(|_| UpstreamUrl::parse(&d.deployment.api_base).ok())
            })
            .collect();
        let upstream_headers = config
            .deployments
            .iter()
            .map(|d| Arc::new(crate::providers::deployment_headers(d)))
            .collect();
        let secrets = config
            .deployments
            .iter()
            .map(crate::providers::deployment_secrets)
            .collect();
        let response_headers = config
            .deployments
            .iter()
            .map(|d| d.deployment.routing_headers(env!("CARGO_PKG_VERSION")))
            .collect();
        // The pass-through routes' bases come after the deployments' (see `pass_through_endpoint`).
        let all_bases: Vec<Option<UpstreamUrl>> = bases
            .iter()
            .cloned()
            .chain(config.pass_through.bases().map(|b| b.cloned()))
            .collect();
        let endpoints = Arc::new(Endpoints::new(
            &all_bases,
            config.server.upstream_connect_timeout,
            config.server.dns_refresh,
        ));
        let mut auth = MasterKeyAuth::new(
            config.master_key.as_ref().map(|k| k.expose()),
            config.key_header.clone(),
        );
        if let Some(m) = &management {
            auth = auth.with_key_store(Arc::new(StoreKeys { mgmt: m.clone() }));
        }
        let auth: Arc<dyn Filter> = Arc::new(auth);
        let route: Arc<dyn Filter> = Arc::new(RouteFilter::new(config.router.clone()));
        // Connection options only: the transport's own keep-alive pool stays empty, the
        // forwarder keeps idle connections in `pool`.
        let options = ConnectorOptions::new(config.server.upstream_keepalive_pool_size);
        let metrics = Metrics::with_label_set_limit(config.server.metrics_max_label_sets);
        metrics
            .router
            .init_deployments(config.deployments.iter().map(|d| DeploymentLabels {
                litellm_model_name: &d.litellm_model_name,
                model_id: &d.deployment.id,
                api_base: d.deployment.public_api_base(),
                api_provider: &d.deployment.provider,
            }));
        App {
            chain: Chain::new(vec![auth, route]),
            endpoints,
            bases,
            upstream_headers,
            secrets,
            response_headers,
            transport: TransportConnector::new(Some(options)),
            pool: crate::upstream::pool::UpstreamPool::new(
                config.server.upstream_keepalive_pool_size,
                crate::upstream::POOL_IDLE_TIMEOUT,
            ),
            metrics,
            listings: Listings::new(&config),
            prices,
            cache: config
                .cache
                .clone()
                .filter(|c| c.chat)
                .map(|c| Arc::new(crate::cache::ResponseCache::new(c))),
            responses: Arc::new(crate::management::stored_responses::ResponseStore::new(
                management.as_ref().map(|m| m.store.clone()),
            )),
            management,
            tag_routing_configured: config.retries.enable_tag_filtering
                || config
                    .deployments
                    .iter()
                    .any(|d| d.tags.enable_tag_filtering == Some(true)),
            health: Arc::new(crate::routing::Health::new(
                config.deployments.len(),
                config.retries.clone(),
            )),
            in_flight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            upgrading: AtomicBool::new(false),
            started_at: SystemTime::now(),
            config,
        }
    }

    /// With Redis configured, starts sharing the router's state (cooldowns, failure counts,
    /// usage, latency) with the other instances (`routing::shared`).
    pub fn share_router_state(&self) -> anyhow::Result<()> {
        let Some(url) = &self.config.redis_url else {
            return Ok(());
        };
        let ids = self
            .config
            .deployments
            .iter()
            .map(|d| d.deployment.id.clone())
            .collect();
        crate::routing::shared::start(self.health.clone(), ids, url.clone())
    }

    /// Counts a request in flight until the guard drops.
    pub fn track_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.metrics.in_flight.inc();
        InFlight { app: self.clone() }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Set when SIGTERM arrives: readiness turns 503 so load balancers stop sending traffic.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Set when SIGQUIT hands the listening sockets to a new process: this one drains, and its
    /// idle keep-alive connections wait for one more request (answered with `Connection:
    /// close`) instead of being closed under a client that may be sending on them.
    pub fn start_upgrade(&self) {
        self.upgrading.store(true, Ordering::Release);
        self.start_draining();
    }

    pub fn is_upgrading(&self) -> bool {
        self.upgrading.load(Ordering::Acquire)
    }

    /// Writes queued spend before the process exits.
    pub fn flush_before_exit(&self) {
        if let Some(m) = &self.management {
            m.flush_blocking(std::time::Duration::from_secs(10));
        }
    }
}

/// A request in flight (see [`App::track_request`]).
pub struct InFlight {
    app: Arc<App>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.app.in_flight.fetch_sub(1, Ordering::Release);
        self.app.metrics.in_flight.dec();
    }
}
