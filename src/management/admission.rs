//! Admission and settlement of one LLM request: model access, then the budgets and rate limits
//! of the caller's key, team, user, end user and the proxy. Admission reserves the worst case
//! before forwarding; settlement books the actual cost after. `request_filter` calls
//! [`Management::admit_request`] once the post-body filters have routed the request, and
//! `logging` calls [`Management::settle`]. Pingora-free: it sees the request as the filters
//! crate's `RoutePlan` and `RequestView`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use filters::identity::{KeyIdentity, Limits, ScopeKind};
use filters::request::RequestView;
use filters::route::RoutePlan;
use filters::{ApiError, Endpoint, Usage};

use super::ledger::{Check, Hold, Refusal};
use super::store::Kind;
use super::{MAX_END_USER_LEN, Management, identity, no_db_error};
use super::{cost, spend};
use crate::clock;
use crate::config::PROXY_BUDGET_USER;
use crate::pricing::ModelPrice;

/// What an admitted request holds until it is settled. Dropped without being settled (a
/// request task that panicked or was cancelled before `logging`), it releases its hold, so a
/// reservation or parallel-request slot is never kept for good.
pub struct Admission {
    pub hold: Option<Hold>,
    pub key: Option<Arc<KeyIdentity>>,
    pub end_user: Option<String>,
    /// Response headers from this request's admission (`x-litellm-key-spend`,
    /// `x-ratelimit-*`); the key's fixed ones (`x-litellm-key-max-budget`, ...) are read from
    /// `key.limit_headers` when the response is built, not copied here per request.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub started_ms: i64,
    /// Prompt tokens counted for the reservation.
    pub prompt_tokens: u64,
    owner: Option<Arc<Management>>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("hold", &self.hold)
            .field("key", &self.key.as_ref().map(|k| &k.token))
            .field("end_user", &self.end_user)
            .finish()
    }
}

impl Admission {
    /// An admission that holds nothing yet (master-key and open callers get one for their
    /// spend-log row).
    pub fn started_at(started_ms: i64) -> Admission {
        Admission {
            hold: None,
            key: None,
            end_user: None,
            headers: Vec::new(),
            started_ms,
            prompt_tokens: 0,
            owner: None,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let (Some(hold), Some(m)) = (self.hold.take(), self.owner.take()) {
            tracing::warn!("a request ended without being settled; releasing its hold");
            let _ = m.book(hold, 0.0, 0, clock::now_ms());
        }
    }
}

/// What [`Management::settle`] needs to know about a finished request.
pub struct Outcome<'a> {
    pub request_id: String,
    pub call_type: &'static str,
    pub usage: Option<Usage>,
    /// What `usage` costs at `price` (computed once per request, by the caller).
    pub usage_cost: f64,
    /// The deployment's prices (the worst case of an incomplete request).
    pub price: Option<&'a ModelPrice>,
    pub status: u16,
    /// The deployment that answered (none when the request failed before one was chosen).
    pub deployment: Option<&'a Arc<filters::route::Deployment>>,
    pub client_ip: String,
    pub first_token_ms: Option<i64>,
    /// The provider may have billed more than the usage shows: the client went away after
    /// the request was sent, or the answer was cut short or came without usage.
    pub incomplete: bool,
    /// When the request finished, in [`clock::now_ms`] terms.
    pub now_ms: i64,
    /// After a retry or a fallback, LiteLLM's routing fields for the spend log's metadata.
    pub routing: Option<serde_json::Map<String, serde_json::Value>>,
    /// Answered from the response cache.
    pub cache_hit: bool,
}

/// The proxy-wide budget's limits, and the same without the budget for requests that only
/// book spend on it (the master key's), both built once when the budget is read.
#[derive(Clone)]
pub(super) struct ProxyLimits {
    checked: Arc<Limits>,
    booked_only: Arc<Limits>,
}

impl ProxyLimits {
    pub(super) fn of(limits: Limits) -> ProxyLimits {
        ProxyLimits {
            booked_only: Arc::new(Limits {
                max_budget: None,
                ..limits.clone()
            }),
            checked: Arc::new(limits),
        }
    }
}

impl Management {
    /// Admits one routed LLM request: the caller's key may call LLM routes and this model,
    /// and every owner's budget and rate limits have room; takes the request's hold on them.
    /// `None`: nothing to hold (the master key, no end user, no proxy budget). `prices` are
    /// those of every deployment the plan may try: the reservation is the worst case of the
    /// most expensive.
    pub async fn admit_request(
        self: &Arc<Self>,
        key: Option<&Arc<KeyIdentity>>,
        plan: &RoutePlan,
        view: &RequestView,
        endpoint: Endpoint,
        prices: &[Option<&ModelPrice>],
        body: &[u8],
    ) -> Result<Option<Admission>, ApiError> {
        if let Some(k) = key {
            key_type_allows_llm_routes(k)?;
            if let Some((allowed, scope, kind)) =
                identity::model_denial(k, &plan.requested_model, &plan.group, &self.access_groups)
            {
                return Err(ApiError::unauthorized(format!(
                    "{scope} not allowed to access model. This {scope} can only access models={allowed:?}. Tried to access {}",
                    plan.requested_model
                ))
                .with_kind(kind)
                .with_param("model"));
            }
        }
        // The master key has nothing to check, unless the request names an end user or the
        // proxy has a budget (whose spend the master key's requests count toward).
        if key.is_none() && view.user.is_none() && self.settings.proxy_budget.is_none() {
            return Ok(None);
        }
        self.admit(
            key,
            view.user.as_deref(),
            (&plan.requested_model, &plan.group),
            prices,
            body,
            view.max_tokens,
            endpoint == Endpoint::Embeddings,
        )
        .await
        .map(Some)
    }

    /// Admits a provider pass-through request (`/anthropic/*`, ...): the key may call LLM
    /// routes, and its owners' budgets and rate limits have room for the worst case of `model`
    /// at `price` (none when the model is unknown). As in LiteLLM, a key's `models` do not
    /// limit pass-through routes: they name model groups, and these routes have none.
    pub async fn admit_pass_through(
        self: &Arc<Self>,
        key: Option<&Arc<KeyIdentity>>,
        model: &str,
        price: Option<&ModelPrice>,
        body: &[u8],
        max_tokens: Option<u64>,
    ) -> Result<Option<Admission>, ApiError> {
        if let Some(k) = key {
            key_type_allows_llm_routes(k)?;
        } else if self.settings.proxy_budget.is_none() {
            return Ok(None);
        }
        self.admit(key, None, (model, model), &[price], body, max_tokens, false)
            .await
            .map(Some)
    }

    /// Checks budgets and rate limits of every owner of this request and reserves its worst
    /// case. `Ok` carries what must be settled when the request ends.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        self: &Arc<Self>,
        key: Option<&Arc<KeyIdentity>>,
        end_user: Option<&str>,
        model: (&str, &str),
        prices: &[Option<&ModelPrice>],
        body: &[u8],
        max_tokens: Option<u64>,
        embedding: bool,
    ) -> Result<Admission, ApiError> {
        let (requested_model, group) = model;
        let now = clock::now_ms();
        if let Some(user) = end_user
            && (user.len() > MAX_END_USER_LEN || user.contains('\0'))
        {
            return Err(ApiError::bad_request(format!(
                "user must be at most {MAX_END_USER_LEN} bytes without NUL characters"
            ))
            .with_param("user"));
        }
        let mut admission = Admission::started_at(now);
        admission.key = key.cloned();
        admission.end_user = end_user.map(str::to_string);
        let mut checks: Vec<Check> = Vec::new();
        if let Some(k) = key {
            checks.extend(
                k.scopes
                    .iter()
                    .filter(|s| !s.limits.is_empty())
                    .map(Check::of),
            );
            // Per-model limits by the name the client sent, else by the model group.
            if let Some(scope) = k
                .model_limits
                .get(requested_model)
                .or_else(|| k.model_limits.get(group))
            {
                checks.push(Check::of(scope));
            }
        }
        if let Some(user) = end_user
            && let Some(limits) = Box::pin(self.end_user_limits(user)).await?
        {
            checks.push(Check {
                key: (ScopeKind::EndUser, user.into()),
                limits,
            });
        }
        // The proxy-wide budget caps virtual keys. The master key is exempt, as in LiteLLM, but
        // its spend is booked on the same account (without a check), so the ledger and the
        // stored spend agree.
        if self.settings.proxy_budget.is_some()
            && let Some(limits) = Box::pin(self.proxy_budget_limits()).await?
        {
            checks.push(Check {
                key: (ScopeKind::User, PROXY_BUDGET_USER.into()),
                limits: if key.is_some() {
                    limits.checked
                } else {
                    limits.booked_only
                },
            });
        }
        // A key without limits of its own has no ledger figure: its spend as last read (at
        // most the key cache's lifetime old, as LiteLLM's cached key object).
        let key_in_ledger = checks.first().is_some_and(|c| c.key.0 == ScopeKind::Key);
        if let Some(k) = key
            && !key_in_ledger
        {
            admission
                .headers
                .push(float_header("x-litellm-key-spend", k.key_limits.spend));
        }
        if checks.is_empty() {
            return Ok(admission);
        }
        if self.settings.disable_reset_budget {
            for c in &mut checks {
                Arc::make_mut(&mut c.limits).budget_duration = None;
            }
        }
        let budgeted = checks.iter().any(|c| c.limits.max_budget.is_some());
        // First a bound that costs nothing: every token is at least one byte, so the body's
        // length bounds its prompt tokens. Only when that bound is refused (the owner is near
        // its budget) are the tokens counted, and the request tried again with the count.
        let (mut shape, mut counted) = match budgeted.then(|| cost::quick_shape(body)) {
            None => (cost::RequestShape::NONE, true),
            Some(Some(quick)) => (quick, false),
            Some(None) => (cost::request_shape(body), true),
        };
        let fail_closed = self.settings.fail_closed_budget_enforcement;
        let result = loop {
            // The worst case of the most expensive deployment the router may send it to.
            let estimate = if budgeted && !self.settings.disable_budget_reservation {
                prices
                    .iter()
                    .map(|&price| {
                        let output_bound = cost::output_bound(max_tokens, price, embedding);
                        cost::worst_case(shape.prompt_tokens, output_bound * shape.choices, price)
                    })
                    .fold(0.0, f64::max)
            } else {
                0.0
            };
            let result = match &self.redis {
                // Boxed: the Redis call's future is large, and inline it would grow every
                // request's future also when Redis is not configured. Bounded by
                // `redis_ledger::REDIS_TIMEOUT`, and answered at once during an outage.
                Some(r) => Box::pin(r.admit(&checks, estimate, now, fail_closed)).await,
                None => Ok(self.local.admit(&checks, estimate, now, fail_closed)),
            };
            if !counted && matches!(result, Ok(Err(Refusal::Budget { .. }))) {
                shape = cost::request_shape(body);
                counted = true;
                continue;
            }
            break result;
        };
        admission.prompt_tokens = shape.prompt_tokens;
        let hold = match result {
            Ok(Ok(hold)) => hold,
            Ok(Err(refusal)) => return Err(refusal_error(&refusal, requested_model)),
            Err(e) => {
                tracing::error!("budget/rate-limit store unavailable: {e}");
                return Err(ApiError::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "no_db_connection",
                    "Budget and rate-limit checks are unavailable (Redis unreachable); try again",
                ));
            }
        };
        if key_in_ledger && let Some(spend) = hold.key_spend {
            admission
                .headers
                .push(float_header("x-litellm-key-spend", spend));
        }
        for (name, value) in [
            ("x-ratelimit-remaining-requests", hold.remaining_requests),
            ("x-ratelimit-limit-requests", hold.rpm_limit),
            ("x-ratelimit-remaining-tokens", hold.remaining_tokens),
            ("x-ratelimit-limit-tokens", hold.tpm_limit),
        ] {
            if let Some(n) = value {
                admission.headers.push(header(name, n));
            }
        }
        admission.hold = Some(hold);
        admission.owner = Some(self.clone());
        Ok(admission)
    }

    /// Books a finished request: ledger, spend increments, spend-log row. With Redis, returns
    /// the running settle, which the caller awaits (bounded) before the connection takes its
    /// next request: a client's next call then sees this one's tokens and spend, as in process.
    pub fn settle(
        self: &Arc<Self>,
        mut admission: Admission,
        o: Outcome<'_>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let hold = admission.hold.take();
        admission.owner = None;
        let mut cost = o.usage_cost;
        if o.incomplete {
            // Whatever the provider produced before the cut is billed, and the usage that
            // would tell is missing or partial: charge the reserved worst case (at least the
            // counted prompt), so a client cannot stream an answer and hang up before the
            // usage arrives to pay less.
            let floor = hold.as_ref().map_or(0.0, |h| h.reserved);
            let prompt = cost::worst_case(admission.prompt_tokens, 0, o.price);
            cost = cost.max(floor).max(prompt);
        }
        let tokens = o.usage.map_or(0, |u| u.total_tokens);
        let now = o.now_ms;
        let mut booked = None;
        if let Some(hold) = hold {
            for (account, limits, spend) in &hold.budgets {
                self.gauges
                    .record(account, admission.key.as_ref(), limits, spend + cost);
            }
            booked = self.book(hold, cost, tokens, now);
        }
        let key = admission.key.as_deref();
        if cost > 0.0 {
            if let Some(k) = key {
                self.spend.add(Kind::Key, &k.token, cost);
                if let Some(t) = &k.team_id {
                    self.spend.add(Kind::Team, t, cost);
                }
                if let Some(u) = &k.user_id {
                    self.spend.add(Kind::User, u, cost);
                }
            }
            if let Some(e) = &admission.end_user {
                self.spend.add(Kind::EndUser, e, cost);
            }
            if self.settings.proxy_budget.is_some() {
                self.spend.add(Kind::User, PROXY_BUDGET_USER, cost);
            }
        }
        if !self.settings.disable_spend_logs {
            let usage = o.usage.unwrap_or_default();
            self.spend.log(spend::SpendEntry {
                request_id: o.request_id,
                call_type: o.call_type,
                key: admission.key.clone(),
                deployment: o.deployment.cloned(),
                spend: cost,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens: usage.total_tokens,
                start_time: admission.started_ms,
                end_time: now,
                completion_start_time: o.first_token_ms,
                end_user: admission.end_user.clone(),
                requester_ip_address: o.client_ip,
                success: o.status < 400,
                cache_hit: o.cache_hit,
                routed_metadata: o.routing.as_ref().map(|r| {
                    let base = admission
                        .key
                        .as_ref()
                        .map_or("{}", |k| k.log_metadata.as_str());
                    spend::with_routing(base, r)
                }),
                spooled: None,
            });
        }
        booked
    }

    /// Releases a hold and books its cost in the ledger (Redis settles run on the management
    /// runtime and are counted, so shutdown can wait for them).
    fn book(
        self: &Arc<Self>,
        hold: Hold,
        cost: f64,
        tokens: u64,
        now: i64,
    ) -> Option<tokio::task::JoinHandle<()>> {
        match &self.redis {
            Some(r) => {
                let r = r.clone();
                let me = self.clone();
                self.pending_settles.fetch_add(1, Ordering::SeqCst);
                Some(self.runtime.spawn(async move {
                    r.settle(&hold, cost, tokens, now).await;
                    me.pending_settles.fetch_sub(1, Ordering::SeqCst);
                }))
            }
            None => {
                self.local.settle(&hold, cost, tokens, now);
                None
            }
        }
    }

    /// The budget of an end user (the request's `user`), from the cache or the database.
    async fn end_user_limits(self: &Arc<Self>, id: &str) -> Result<Option<Arc<Limits>>, ApiError> {
        if let Some(cached) = self.keys.end_user(id) {
            return Ok(cached);
        }
        if !self.db_up() {
            // Known down: answer now rather than wait `database_connection_timeout`.
            return if self.settings.allow_requests_on_db_unavailable {
                Ok(None)
            } else {
                Err(no_db_error())
            };
        }
        let id_owned = id.to_string();
        let loaded = self
            .run(move |m| async move { m.store.get(Kind::EndUser, &id_owned).await })
            .await;
        match loaded {
            Some(Ok(o)) => {
                let limits = match &o {
                    // Blocked customers get max_budget 0.
                    Some(o) if identity::bool_field(&o.data, "blocked") => Some(Arc::new(Limits {
                        max_budget: Some(0.0),
                        ..Limits::default()
                    })),
                    // Without a budget of its own (or a row yet: spend counted from zero), an
                    // end user gets `max_end_user_budget`.
                    _ => {
                        let mut l = o.as_ref().map(identity::limits_of).unwrap_or_default();
                        if l.max_budget.is_none() {
                            l.max_budget = self.settings.max_end_user_budget;
                        }
                        (!l.is_empty()).then(|| Arc::new(l))
                    }
                };
                self.keys.put_end_user(id, limits.clone());
                Ok(limits)
            }
            _ if self.settings.allow_requests_on_db_unavailable => Ok(None),
            _ => Err(no_db_error()),
        }
    }

    /// The proxy-wide budget's limits, from the cache or the database.
    async fn proxy_budget_limits(self: &Arc<Self>) -> Result<Option<ProxyLimits>, ApiError> {
        if let Some(cached) = self.proxy_limits.read().clone() {
            return Ok(Some(cached));
        }
        if !self.db_up() {
            return if self.settings.allow_requests_on_db_unavailable {
                Ok(None)
            } else {
                Err(no_db_error())
            };
        }
        let loaded = self
            .run(|m| async move { m.store.get(Kind::User, PROXY_BUDGET_USER).await })
            .await;
        match loaded {
            Some(Ok(Some(o))) => {
                let limits = ProxyLimits::of(identity::limits_of(&o));
                *self.proxy_limits.write() = Some(limits.clone());
                Ok(Some(limits))
            }
            // Not stored yet (the start-up task retries): the configured budget from zero.
            Some(Ok(None)) => Ok(self.settings.proxy_budget.as_ref().map(|b| {
                ProxyLimits::of(Limits {
                    max_budget: Some(b.max_budget),
                    ..Limits::default()
                })
            })),
            _ if self.settings.allow_requests_on_db_unavailable => Ok(None),
            _ => Err(no_db_error()),
        }
    }
}

/// A response header from a number.
fn header<V>(name: &'static str, value: V) -> (http::HeaderName, http::HeaderValue)
where
    http::HeaderValue: From<V>,
{
    (
        http::HeaderName::from_static(name),
        http::HeaderValue::from(value),
    )
}

/// A response header from a float (LiteLLM's spend headers).
fn float_header(name: &'static str, value: f64) -> (http::HeaderName, http::HeaderValue) {
    (
        http::HeaderName::from_static(name),
        crate::decimal::header_value(value),
    )
}

/// LiteLLM's errors for a refused request.
pub fn refusal_error(r: &Refusal, model: &str) -> ApiError {
    match r {
        Refusal::Budget {
            kind,
            id,
            spend,
            max_budget,
        } => {
            let message = match kind {
                ScopeKind::Key => format!(
                    "Budget has been exceeded! Current cost: {spend}, Max budget: {max_budget}"
                ),
                ScopeKind::Team => format!(
                    "Budget has been exceeded! Team={id} Current cost: {spend}, Max budget: {max_budget}"
                ),
                // The proxy-wide budget: LiteLLM raises a plain BudgetExceededError.
                ScopeKind::User if id == PROXY_BUDGET_USER => format!(
                    "Budget has been exceeded! Current cost: {spend}, Max budget: {max_budget}"
                ),
                ScopeKind::User => {
                    format!(
                        "ExceededBudget: User={id} over budget. Spend={spend}, Budget={max_budget}"
                    )
                }
                ScopeKind::EndUser => format!(
                    "ExceededBudget: End User={id} over budget. Spend={spend}, Budget={max_budget}"
                ),
                ScopeKind::KeyModel => {
                    let hash = id.split(':').next().unwrap_or("");
                    format!("LiteLLM Virtual Key: {hash}, exceeded budget for model={model}")
                }
            };
            ApiError::new(http::StatusCode::BAD_REQUEST, "budget_exceeded", message)
                .with_param("None")
        }
        Refusal::Rate {
            kind,
            id,
            what,
            limit,
            retry_after_ms,
        } => {
            let secs = (*retry_after_ms as f64 / 1000.0).ceil().max(1.0) as u64;
            let descriptor = match kind {
                ScopeKind::Key => "api_key".to_string(),
                ScopeKind::Team => "team".to_string(),
                ScopeKind::User => "user".to_string(),
                ScopeKind::EndUser => "end_user".to_string(),
                ScopeKind::KeyModel => format!("model_per_key ({model})"),
            };
            let reset = clock::iso(clock::now_ms() + retry_after_ms);
            let shown = if *kind == ScopeKind::KeyModel {
                id.split(':').next().unwrap_or("").to_string()
            } else {
                id.clone()
            };
            ApiError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "Rate limit exceeded for {descriptor}: {shown}. Limit type: {what}. Current limit: {limit}, Remaining: 0. Limit resets at: {reset} UTC"
                ),
            )
            .with_header("retry-after", secs.to_string())
            .with_header("rate_limit_type", what.to_string())
            .with_header("reset_at", reset)
        }
    }
}

/// A key whose `key_type` keeps it off LLM routes (LiteLLM's `llm_api` vs `management` keys).
fn key_type_allows_llm_routes(k: &KeyIdentity) -> Result<(), ApiError> {
    if k.key_type.calls_llm_routes() {
        return Ok(());
    }
    Err(ApiError::unauthorized(format!(
        "This key's key_type is {}: it may not call LLM API routes",
        k.key_type.as_str()
    )))
}
