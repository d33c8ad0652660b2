//! The router's settings as plain data: retries, retry policies, cooldowns, fallbacks and the
//! routing strategy (`router_settings`, falling back to `litellm_settings` as LiteLLM reads
//! them), read by `settings.rs` at start-up and acted on by `crate::routing` and the forwarder.

use std::time::Duration;

/// What the router does after a failed attempt (`router_settings`, falling back to
/// `litellm_settings` as LiteLLM does); defaults are LiteLLM 1.109.1's.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterSettings {
    /// Retries after a failed attempt: `router_settings.num_retries`, else
    /// `litellm_settings.num_retries`, else 2. A request or a deployment may set its own.
    pub num_retries: u32,
    /// `retry_after`: the least backoff between retries when no other deployment can take one.
    pub retry_after: Duration,
    /// `cooldown_time`: how long a failing deployment is left out (default 5 s).
    pub cooldown_time: Duration,
    /// `disable_cooldowns`.
    pub disable_cooldowns: bool,
    /// `router_settings.allowed_fails`: failures a deployment may have within one cooldown
    /// time before it cools down. `None`: LiteLLM's failure-rate rule instead.
    pub allowed_fails: Option<u32>,
    /// `allowed_fails_policy`: `allowed_fails` per error class (LiteLLM's
    /// `AllowedFailsPolicy`, `RateLimitErrorAllowedFails`, ...), in a [`RetryPolicy`]'s shape.
    /// Set, it turns the `allowed_fails` rule on (a class without an entry uses
    /// `allowed_fails`, else LiteLLM's default 3).
    pub allowed_fails_policy: Option<RetryPolicy>,
    /// `retry_policy`: retries per error class, overriding `num_retries` for that class.
    pub retry_policy: Option<RetryPolicy>,
    /// `model_group_retry_policy`: `{group: policy}`, over `retry_policy` for that group.
    pub model_group_retry_policy: Vec<(String, RetryPolicy)>,
    /// `routing_strategy` (with `routing_strategy_args`).
    pub strategy: RoutingStrategy,
    /// `enable_pre_call_checks`: deployments whose `max_input_tokens` the prompt exceeds are
    /// left out before any call.
    pub enable_pre_call_checks: bool,
    /// `enable_tag_filtering`: requests' tags pick the deployments of a group.
    pub enable_tag_filtering: bool,
    /// `tag_filtering_match_any` (default true): a deployment matches when it has any of the
    /// request's tags; `false`: all of them.
    pub tag_filtering_match_any: bool,
    /// `tag_routing_prefix`: only request tags with this prefix route (the prefix removed);
    /// key and team tags always do.
    pub tag_routing_prefix: Option<String>,
}

/// LiteLLM's `routing_strategy`: how the deployments of an `order` tier are ranked.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum RoutingStrategy {
    /// Weighted random (`weight`, else `rpm`, else `tpm`): the route plan's own order.
    #[default]
    SimpleShuffle,
    /// Fewest requests in flight first.
    LeastBusy,
    /// Lowest recent latency first (`routing_strategy_args`).
    LatencyBased(LatencyArgs),
    /// Lowest tokens this minute first; deployments over their `rpm`/`tpm` left out
    /// (`usage-based-routing` and `usage-based-routing-v2`).
    UsageBased,
    /// Cheapest per token first (unknown prices count as 5.0 each, as LiteLLM).
    CostBased,
}

/// `routing_strategy_args` of `latency-based-routing` (LiteLLM's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyArgs {
    /// Samples older than this are forgotten (`ttl`, default 3600 s).
    pub ttl: Duration,
    /// Deployments within `lowest * (1 + buffer)` count as equally fast (`lowest_latency_buffer`).
    pub lowest_latency_buffer: f64,
    /// Samples kept per deployment (`max_latency_list_size`, default 10).
    pub max_latency_list_size: usize,
}

impl Default for LatencyArgs {
    fn default() -> Self {
        LatencyArgs {
            ttl: Duration::from_secs(3600),
            lowest_latency_buffer: 0.0,
            max_latency_list_size: 10,
        }
    }
}

/// LiteLLM's `RetryPolicy`: retries per exception class (`None`: the field is not set).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryPolicy {
    pub bad_request: Option<u32>,
    pub authentication: Option<u32>,
    pub timeout: Option<u32>,
    pub rate_limit: Option<u32>,
    pub content_policy: Option<u32>,
    pub internal_server: Option<u32>,
    pub service_unavailable: Option<u32>,
    pub not_found: Option<u32>,
    /// `DefaultRetries`: every class whose own field is not set.
    pub default: Option<u32>,
    /// `BadGatewayErrorAllowedFails` (allowed-fails policies only; 502 is otherwise an
    /// internal server error).
    pub bad_gateway: Option<u32>,
}

impl RetryPolicy {
    /// The policy's fields by LiteLLM's names.
    pub const FIELDS: [&'static str; 9] = [
        "BadRequestErrorRetries",
        "AuthenticationErrorRetries",
        "TimeoutErrorRetries",
        "RateLimitErrorRetries",
        "ContentPolicyViolationErrorRetries",
        "InternalServerErrorRetries",
        "ServiceUnavailableErrorRetries",
        "NotFoundErrorRetries",
        "DefaultRetries",
    ];

    pub fn field_mut(&mut self, name: &str) -> Option<&mut Option<u32>> {
        Some(match name {
            "BadRequestErrorRetries" => &mut self.bad_request,
            "AuthenticationErrorRetries" => &mut self.authentication,
            "TimeoutErrorRetries" => &mut self.timeout,
            "RateLimitErrorRetries" => &mut self.rate_limit,
            "ContentPolicyViolationErrorRetries" => &mut self.content_policy,
            "InternalServerErrorRetries" => &mut self.internal_server,
            "ServiceUnavailableErrorRetries" => &mut self.service_unavailable,
            "NotFoundErrorRetries" => &mut self.not_found,
            "DefaultRetries" => &mut self.default,
            _ => return None,
        })
    }
}

impl RouterSettings {
    /// The retry policy of `group`: its `model_group_retry_policy` entry, else `retry_policy`.
    pub fn policy_for(&self, group: &str) -> Option<&RetryPolicy> {
        self.model_group_retry_policy
            .iter()
            .find(|(g, _)| g == group)
            .map(|(_, p)| p)
            .or(self.retry_policy.as_ref())
    }
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            num_retries: 2,
            retry_after: Duration::ZERO,
            cooldown_time: Duration::from_secs(5),
            disable_cooldowns: false,
            allowed_fails: None,
            allowed_fails_policy: None,
            retry_policy: None,
            model_group_retry_policy: Vec::new(),
            strategy: RoutingStrategy::SimpleShuffle,
            enable_pre_call_checks: false,
            enable_tag_filtering: false,
            tag_filtering_match_any: true,
            tag_routing_prefix: None,
        }
    }
}

/// Other model groups a request goes to when its own group fails (`fallbacks`,
/// `context_window_fallbacks`, `content_policy_fallbacks`, `default_fallbacks`,
/// `max_fallbacks`; `router_settings`, else `litellm_settings`, as LiteLLM reads them).
#[derive(Debug, Clone, PartialEq)]
pub struct FallbackSettings {
    /// `{group: [targets]}` in order; `"*"` is the entry for any group without its own
    /// (`default_fallbacks` is added as one).
    pub generic: Vec<(String, Vec<String>)>,
    /// `None`: not configured (such errors use `generic`); `Some`, even empty: configured, and
    /// a group without an entry gets no fallback for such an error.
    pub context_window: Option<Vec<(String, Vec<String>)>>,
    pub content_policy: Option<Vec<(String, Vec<String>)>>,
    /// How many fallback groups one request may try (default 5).
    pub max_fallbacks: u32,
}

impl Default for FallbackSettings {
    fn default() -> Self {
        FallbackSettings {
            generic: Vec::new(),
            context_window: None,
            content_policy: None,
            max_fallbacks: 5,
        }
    }
}

/// Which fallback list an error uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackKind {
    Generic,
    ContextWindow,
    ContentPolicy,
}

impl FallbackSettings {
    /// The fallback groups for a failure of `group`: its own entry, else the `"*"` entry.
    /// Context-window and content-policy errors use their own list when it is configured
    /// (and then nothing else), else the generic one.
    pub fn chain(&self, kind: FallbackKind, group: &str) -> &[String] {
        let list = match kind {
            FallbackKind::ContextWindow => self.context_window.as_ref(),
            FallbackKind::ContentPolicy => self.content_policy.as_ref(),
            FallbackKind::Generic => None,
        };
        let entries = list.unwrap_or(&self.generic);
        let own = entries.iter().find(|(g, _)| g == group);
        let any = || entries.iter().find(|(g, _)| g == "*");
        own.or_else(any)
            .map_or(&[], |(_, targets)| targets.as_slice())
    }
}
