//! The router's metrics under LiteLLM's names: `litellm_deployment_state` (0 healthy, 1 partial
//! outage, 2 cooling down) and `litellm_deployment_cooled_down`, per deployment, and the failed
//! attempts a retry hid from the client (`litellm_deployment_failure_responses`). Updated by
//! the forwarder between attempts (Pingora's `request_filter`) and in `logging`.

use std::sync::atomic::{AtomicU8, Ordering};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use super::{RequestLabels, registered, status_text};

/// `litellm_deployment_state` and `litellm_deployment_cooled_down`'s labels.
const STATE_LABELS: &[&str] = &["litellm_model_name", "model_id", "api_base", "api_provider"];
const COOLED_DOWN_LABELS: &[&str] = &[
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "exception_status",
];

/// A deployment's state as LiteLLM's gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentState {
    Healthy = 0,
    PartialOutage = 1,
    CoolingDown = 2,
}

/// Who a deployment is, in the router metrics' labels.
#[derive(Debug, Clone, Copy)]
pub struct DeploymentLabels<'a> {
    pub litellm_model_name: &'a str,
    pub model_id: &'a str,
    pub api_base: &'a str,
    pub api_provider: &'a str,
}

impl DeploymentLabels<'_> {
    fn values(&self) -> [&str; 4] {
        [
            self.litellm_model_name,
            self.model_id,
            self.api_base,
            self.api_provider,
        ]
    }
}

/// `litellm_deployment_successful_fallbacks` and `_failed_fallbacks`' labels.
const FALLBACK_LABELS: &[&str] = &[
    "requested_model",
    "fallback_model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "exception_status",
    "exception_class",
];

/// A fallback group tried after the requested group failed.
#[derive(Debug, Clone, Copy)]
pub struct FallbackTried<'a> {
    pub requested_model: &'a str,
    pub fallback_model: &'a str,
    /// The requested group's failure that led to it.
    pub exception_status: u16,
    pub exception_class: &'a str,
    /// Whether the fallback group served the request.
    pub served: bool,
}

pub struct RouterMetrics {
    state: IntGaugeVec,
    cooled_down: IntCounterVec,
    successful_fallbacks: IntCounterVec,
    failed_fallbacks: IntCounterVec,
    /// Each deployment's state gauge (by index) and the state last written, so a success
    /// costs one atomic load unless the state changes.
    gauges: parking_lot::RwLock<Vec<(IntGauge, AtomicU8)>>,
}

impl RouterMetrics {
    pub(super) fn register(registry: &Registry) -> RouterMetrics {
        let state = IntGaugeVec::new(
            Opts::new(
                "litellm_deployment_state",
                "Deployment state: 0 healthy, 1 partial outage, 2 cooling down",
            ),
            STATE_LABELS,
        )
        .expect("valid gauge definition");
        let cooled_down = IntCounterVec::new(
            Opts::new(
                "litellm_deployment_cooled_down_total",
                "Times a deployment was put into cooldown",
            ),
            COOLED_DOWN_LABELS,
        )
        .expect("valid counter definition");
        let fallbacks = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), FALLBACK_LABELS)
                .expect("valid counter definition");
            registered(registry, c)
        };
        RouterMetrics {
            state: registered(registry, state),
            cooled_down: registered(registry, cooled_down),
            successful_fallbacks: fallbacks(
                "litellm_deployment_successful_fallbacks_total",
                "Requests a fallback model group served after the requested group failed",
            ),
            failed_fallbacks: fallbacks(
                "litellm_deployment_failed_fallbacks_total",
                "Fallback model groups that failed too",
            ),
            gauges: Default::default(),
        }
    }

    /// Starts every deployment's gauge at healthy (index order), so the series exist from
    /// start-up as LiteLLM's do once a deployment is used.
    pub fn init_deployments<'a>(&self, deployments: impl Iterator<Item = DeploymentLabels<'a>>) {
        let gauges = deployments
            .map(|d| {
                let g = self.state.with_label_values(&d.values());
                g.set(DeploymentState::Healthy as i64);
                (g, AtomicU8::new(DeploymentState::Healthy as u8))
            })
            .collect();
        *self.gauges.write() = gauges;
    }

    /// The deployment's state after an attempt.
    pub fn set_state(&self, index: usize, state: DeploymentState) {
        let gauges = self.gauges.read();
        let Some((gauge, last)) = gauges.get(index) else {
            return;
        };
        if last.swap(state as u8, Ordering::Relaxed) != state as u8 {
            gauge.set(state as i64);
        }
    }

    /// The deployment was put into cooldown after a failure with `status`.
    pub fn cooled_down(&self, index: usize, d: DeploymentLabels<'_>, status: u16) {
        let [name, id, base, provider] = d.values();
        self.cooled_down
            .with_label_values(&[name, id, base, provider, status_text(status)])
            .inc();
        self.set_state(index, DeploymentState::CoolingDown);
    }
}

impl RouterMetrics {
    /// A fallback group was tried for a request of `caller`.
    pub fn fallback(&self, caller: &filters::Caller, f: FallbackTried<'_>) {
        let [team, team_alias, _, _] = caller.owner_labels();
        let counter = if f.served {
            &self.successful_fallbacks
        } else {
            &self.failed_fallbacks
        };
        counter
            .with_label_values(&[
                f.requested_model,
                f.fallback_model,
                caller.key_label(),
                caller.alias_label(),
                team,
                team_alias,
                status_text(f.exception_status),
                f.exception_class,
            ])
            .inc();
    }
}

impl super::Metrics {
    /// A failed attempt the client never saw (a later attempt was delivered): counted on its
    /// deployment as a request and a failure.
    pub fn record_hidden_failure(&self, l: &RequestLabels<'_>, status: u16, class: &str) {
        let deployment = [
            l.requested_model,
            l.litellm_model_name,
            l.model_id,
            l.api_base,
            l.api_provider,
            l.hashed_api_key,
            l.api_key_alias,
            l.team,
            l.team_alias,
            l.client_ip,
            l.user_agent,
        ];
        self.deployment_total.with_label_values(&deployment).inc();
        self.deployment_failure
            .with_label_values(&[
                l.requested_model,
                l.litellm_model_name,
                l.model_id,
                l.api_base,
                l.api_provider,
                status_text(status),
                class,
                l.hashed_api_key,
                l.api_key_alias,
                l.team,
                l.team_alias,
                l.client_ip,
                l.user_agent,
            ])
            .inc();
    }
}
