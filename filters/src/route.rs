//! Model groups and deployment selection (the `route` filter's engine).
//!
//! A LiteLLM `model_list` is a set of deployments; deployments sharing a `model_name` form a model
//! group. A request names a group, an alias of one (`router_settings.model_group_alias`) or
//! something a wildcard group (`model_name: "openai/*"`, `"*"`) matches. [`Router::plan`] turns
//! that name into a [`RoutePlan`]: every deployment of the group in the order the forwarder should
//! try them, chosen by LiteLLM's `simple-shuffle` rules:
//!
//! * deployments with the lowest `order` come first; higher tiers are only fallbacks;
//! * within a tier, a weighted random draw without replacement, weighted by `weight`, `rpm` or
//!   `tpm` as the group's first deployment decides ([`Weighting::of_group`]), else uniformly; a
//!   deployment that lacks the field the group weights by has weight 0 and is only tried after
//!   the others.
//!
//! Everything is precomputed at start-up; a request does a hash lookup and a few random draws.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use http::header::{HeaderName, HeaderValue};

use crate::chain::{Filter, Flow, Incoming, RequestCx};
use crate::error::ApiError;

/// A secret from the config (API key, token). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One entry of `model_list`: a provider model behind an endpoint, with its routing data.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// `model_info.id`, or LiteLLM's deterministic hash of the entry when absent.
    pub id: String,
    /// Position in `model_list`; the I/O layer keeps per-deployment state at this index.
    pub index: usize,
    /// The model group (`model_name`).
    pub model_name: String,
    /// Provider prefix of `litellm_params.model` (`openai`, `groq`, `hosted_vllm`, ...).
    pub provider: String,
    /// The provider's model id, prefix stripped (may contain `*` for wildcard groups).
    pub upstream_model: String,
    /// The base URL requests are built on, without a trailing slash.
    pub api_base: String,
    /// `api_base` as it may be shown (response headers, client errors, metric labels, spend
    /// logs, `/model/info`): without a password or user (`http://user:pass@host`) or a query
    /// string (some configs carry a key there, `?key=` for Gemini). See [`public_url`].
    pub public_api_base: String,
    pub api_key: Option<Secret>,
    pub weight: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub order: Option<u32>,
    /// Maximum wait for each upstream read (LiteLLM `timeout`, an httpx-style read timeout).
    pub timeout: Duration,
    /// For streams: the longest wait for the first byte (LiteLLM `stream_timeout`).
    pub stream_timeout: Option<Duration>,
    /// Extra headers sent upstream (`extra_headers`, `organization`).
    pub extra_headers: Vec<(String, String)>,
}

/// LiteLLM's routing response headers ([`Deployment::routing_headers`]).
pub const X_LITELLM_MODEL_ID: HeaderName = HeaderName::from_static("x-litellm-model-id");
pub const X_LITELLM_MODEL_API_BASE: HeaderName =
    HeaderName::from_static("x-litellm-model-api-base");
pub const X_LITELLM_MODEL_GROUP: HeaderName = HeaderName::from_static("x-litellm-model-group");
pub const X_LITELLM_VERSION: HeaderName = HeaderName::from_static("x-litellm-version");

/// A URL as it may be shown: without userinfo (`user:pass@`) and without its query string
/// (and fragment), which may carry credentials.
pub fn public_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}{path}")
}

impl Deployment {
    /// `api_base` as it may be shown (response headers, client errors, metric labels): without
    /// its query string, where some configs carry a key (`?key=` for Gemini).
    pub fn public_api_base(&self) -> &str {
        &self.public_api_base
    }

    /// LiteLLM's routing headers, which every response from this deployment carries
    /// (`x-litellm-model-id`, `-model-api-base`, `-model-group`, `-version`); values that are
    /// not valid header text are left out.
    pub fn routing_headers(&self, version: &str) -> Vec<(HeaderName, HeaderValue)> {
        [
            (X_LITELLM_MODEL_ID, self.id.as_str()),
            (X_LITELLM_MODEL_API_BASE, self.public_api_base()),
            (X_LITELLM_MODEL_GROUP, self.model_name.as_str()),
            (X_LITELLM_VERSION, version),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, HeaderValue::from_str(value).ok()?)))
        .collect()
    }

    /// The provider model for a request routed here; `capture` is what a wildcard group matched.
    pub fn model_for(&self, capture: Option<&str>) -> String {
        match capture {
            Some(c) if self.upstream_model.contains('*') => self.upstream_model.replacen('*', c, 1),
            _ => self.upstream_model.clone(),
        }
    }
}

/// How a group weights its deployments (LiteLLM simple-shuffle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    Weight,
    Rpm,
    Tpm,
    Uniform,
}

impl Weighting {
    /// LiteLLM's rule (`router_strategy/simple_shuffle.py`): the group's *first* deployment
    /// decides. If it sets `weight`, weights are used (missing ones count as 0); else if it sets
    /// `rpm`, rpm; else `tpm`; else a uniform pick.
    pub fn of_group(deployments: &[Arc<Deployment>]) -> Weighting {
        match deployments.first() {
            Some(d) if d.weight.is_some() => Weighting::Weight,
            Some(d) if d.rpm.is_some() => Weighting::Rpm,
            Some(d) if d.tpm.is_some() => Weighting::Tpm,
            _ => Weighting::Uniform,
        }
    }
}

/// A model group with its deployments split into `order` tiers.
#[derive(Debug)]
pub struct ModelGroup {
    pub name: Arc<str>,
    pub deployments: Vec<Arc<Deployment>>,
    pub weighting: Weighting,
    /// Deployment positions (into `deployments`) per tier, lowest `order` first, with weights.
    tiers: Vec<Vec<(usize, f64)>>,
}

impl ModelGroup {
    pub fn new(name: &str, deployments: Vec<Arc<Deployment>>) -> Self {
        let weighting = Weighting::of_group(&deployments);
        let weight_of = |d: &Deployment| -> f64 {
            match weighting {
                Weighting::Weight => d.weight.unwrap_or(0.0),
                Weighting::Rpm => d.rpm.unwrap_or(0) as f64,
                Weighting::Tpm => d.tpm.unwrap_or(0) as f64,
                Weighting::Uniform => 1.0,
            }
        };
        let mut orders: Vec<Option<u32>> = deployments.iter().map(|d| d.order).collect();
        // Deployments without an `order` come after every ordered tier.
        orders.sort_by_key(|o| o.unwrap_or(u32::MAX));
        orders.dedup();
        let tiers = orders
            .iter()
            .map(|order| {
                deployments
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.order == *order)
                    .map(|(i, d)| (i, weight_of(d).max(0.0)))
                    .collect()
            })
            .collect();
        ModelGroup {
            name: Arc::from(name),
            deployments,
            weighting,
            tiers,
        }
    }

    /// Deployments in the order to try them: tier by tier, weighted random within a tier.
    pub fn ordered(&self, rng: &mut fastrand::Rng) -> Vec<Arc<Deployment>> {
        let mut out = Vec::with_capacity(self.deployments.len());
        let mut pool: Vec<(usize, f64)> = Vec::new();
        for tier in &self.tiers {
            pool.clear();
            pool.extend_from_slice(tier);
            while !pool.is_empty() {
                let pick = weighted_pick(&pool, rng);
                let (index, _) = pool.swap_remove(pick);
                out.push(self.deployments[index].clone());
            }
        }
        out
    }

    /// Share of first picks each deployment gets (for `/model_group/info` and tests).
    pub fn first_pick_shares(&self) -> Vec<f64> {
        let mut shares = vec![0.0; self.deployments.len()];
        if let Some(tier) = self.tiers.first() {
            let total: f64 = tier.iter().map(|(_, w)| w).sum();
            for (i, w) in tier {
                shares[*i] = if total > 0.0 {
                    w / total
                } else {
                    1.0 / tier.len() as f64
                };
            }
        }
        shares
    }
}

fn weighted_pick(pool: &[(usize, f64)], rng: &mut fastrand::Rng) -> usize {
    if pool.len() == 1 {
        return 0;
    }
    let total: f64 = pool.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return rng.usize(..pool.len());
    }
    let mut target = rng.f64() * total;
    for (i, (_, w)) in pool.iter().enumerate() {
        if target < *w {
            return i;
        }
        target -= w;
    }
    // Rounding left a sliver past the last positive weight.
    pool.iter().rposition(|(_, w)| *w > 0.0).unwrap_or(0)
}

/// A `model_group_alias` entry.
#[derive(Debug, Clone)]
pub struct Alias {
    pub group: String,
    /// Hidden aliases route but are not listed by `/models`.
    pub hidden: bool,
}

/// Where a request goes: its group and the deployments to try, in order.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub group: Arc<str>,
    /// The model name the client sent; responses carry it back.
    pub requested_model: String,
    /// What a wildcard group's `*` matched, substituted into wildcard deployments' models.
    pub wildcard_capture: Option<String>,
    pub candidates: Vec<Arc<Deployment>>,
}

/// A wildcard `model_name` such as `openai/*` or `*`.
#[derive(Debug)]
struct WildcardGroup {
    prefix: String,
    suffix: String,
    group: usize,
}

/// All model groups, aliases and wildcard patterns, built once from the config.
#[derive(Debug, Default)]
pub struct Router {
    groups: Vec<ModelGroup>,
    by_name: HashMap<String, usize>,
    aliases: HashMap<String, Alias>,
    wildcards: Vec<WildcardGroup>,
}

impl Router {
    /// Builds the router; `deployments` keep their `model_list` order within each group.
    pub fn new(deployments: Vec<Arc<Deployment>>, aliases: HashMap<String, Alias>) -> Self {
        let mut names: Vec<String> = Vec::new();
        let mut members: HashMap<String, Vec<Arc<Deployment>>> = HashMap::new();
        for d in deployments {
            if !members.contains_key(&d.model_name) {
                names.push(d.model_name.clone());
            }
            members.entry(d.model_name.clone()).or_default().push(d);
        }
        let mut router = Router {
            aliases,
            ..Router::default()
        };
        for name in names {
            let group = ModelGroup::new(&name, members.remove(&name).unwrap_or_default());
            let index = router.groups.len();
            if let Some(star) = name.find('*') {
                router.wildcards.push(WildcardGroup {
                    prefix: name[..star].to_string(),
                    suffix: name[star + 1..].to_string(),
                    group: index,
                });
            }
            router.by_name.insert(name, index);
            router.groups.push(group);
        }
        // Most specific pattern first: `openai/*` before `*`.
        router
            .wildcards
            .sort_by_key(|w| std::cmp::Reverse(w.prefix.len() + w.suffix.len()));
        router
    }

    /// Resolves a requested model name: exact group, then alias, then wildcard.
    pub fn resolve(&self, requested: &str) -> Option<(&ModelGroup, Option<String>)> {
        if let Some(&i) = self.by_name.get(requested) {
            return Some((&self.groups[i], None));
        }
        if let Some(alias) = self.aliases.get(requested)
            && let Some(&i) = self.by_name.get(&alias.group)
        {
            return Some((&self.groups[i], None));
        }
        self.wildcards.iter().find_map(|w| {
            let capture = requested
                .strip_prefix(w.prefix.as_str())?
                .strip_suffix(w.suffix.as_str())?;
            if capture.is_empty() {
                return None;
            }
            Some((&self.groups[w.group], Some(capture.to_string())))
        })
    }

    /// The ordered deployments for a requested model, or `None` when nothing matches.
    pub fn plan(&self, requested: &str, rng: &mut fastrand::Rng) -> Option<RoutePlan> {
        let (group, capture) = self.resolve(requested)?;
        Some(RoutePlan {
            group: group.name.clone(),
            requested_model: requested.to_string(),
            wildcard_capture: capture,
            candidates: group.ordered(rng),
        })
    }

    pub fn groups(&self) -> &[ModelGroup] {
        &self.groups
    }

    pub fn group(&self, name: &str) -> Option<&ModelGroup> {
        self.by_name.get(name).map(|&i| &self.groups[i])
    }

    pub fn aliases(&self) -> &HashMap<String, Alias> {
        &self.aliases
    }

    /// Names a client may send, as `/models` lists them: groups, then visible aliases.
    pub fn public_model_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.groups.iter().map(|g| g.name.to_string()).collect();
        let mut aliases: Vec<&String> = self
            .aliases
            .iter()
            .filter(|(_, a)| !a.hidden)
            .map(|(name, _)| name)
            .collect();
        aliases.sort();
        names.extend(aliases.into_iter().cloned());
        names
    }
}

/// The `route` filter (post-body): resolves the request's `model` to a [`RoutePlan`].
pub struct RouteFilter {
    router: Arc<Router>,
}

impl RouteFilter {
    pub fn new(router: Arc<Router>) -> Self {
        RouteFilter { router }
    }
}

/// LiteLLM's 400 for a model that no group, alias or wildcard matches (clients match on
/// "Invalid model name passed in model=").
pub fn invalid_model_error(route: &str, model: Option<&str>) -> ApiError {
    ApiError::bad_request(format!(
        "{route}: Invalid model name passed in model={}. Call `/v1/models` to view available models for your key.",
        model.unwrap_or("None")
    ))
    .with_param("model")
}

#[async_trait]
impl Filter for RouteFilter {
    fn name(&self) -> &'static str {
        "route"
    }

    fn needs_body(&self) -> bool {
        true
    }

    async fn on_request(&self, _req: &Incoming<'_>, cx: &mut RequestCx) -> Flow {
        let route = cx.endpoint().route_label();
        let model = cx.view.as_ref().and_then(|v| v.model.as_deref());
        let Some(model) = model else {
            return Flow::Reject(invalid_model_error(route, None));
        };
        // A virtual key's `aliases` name model groups under other names; the response keeps
        // the name the client sent.
        let target = cx
            .caller
            .key()
            .and_then(|k| k.alias_for(model))
            .unwrap_or(model);
        match self.router.plan(target, &mut fastrand::Rng::new()) {
            Some(mut plan) => {
                if target != model {
                    plan.requested_model = model.to_string();
                }
                cx.plan = Some(plan);
                Flow::Continue
            }
            None => Flow::Reject(invalid_model_error(route, Some(model))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn deployment(group: &str, id: &str) -> Deployment {
        Deployment {
            id: id.into(),
            index: 0,
            model_name: group.into(),
            provider: "openai".into(),
            upstream_model: "m".into(),
            api_base: "http://127.0.0.1:1/v1".into(),
            public_api_base: "http://127.0.0.1:1/v1".into(),
            api_key: None,
            weight: None,
            rpm: None,
            tpm: None,
            order: None,
            timeout: Duration::from_secs(600),
            stream_timeout: None,
            extra_headers: vec![],
        }
    }

    #[test]
    fn public_urls_lose_credentials() {
        assert_eq!(
            public_url("http://user:pa%40ss@10.0.0.1:8080/v1?key=abc#x"),
            "http://10.0.0.1:8080/v1"
        );
        assert_eq!(public_url("https://h/v1"), "https://h/v1");
        assert_eq!(public_url("https://user@h"), "https://h");
        assert_eq!(
            public_url("https://h/path/with@sign"),
            "https://h/path/with@sign"
        );
        assert_eq!(public_url("not a url"), "not a url");
    }

    fn first_pick_counts(group: &ModelGroup, draws: usize) -> HashMap<String, usize> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = HashMap::new();
        for _ in 0..draws {
            let order = group.ordered(&mut rng);
            assert_eq!(order.len(), group.deployments.len());
            *counts.entry(order[0].id.clone()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn weight_splits_traffic_in_proportion() {
        let mut a = deployment("g", "a");
        a.weight = Some(3.0);
        let mut b = deployment("g", "b");
        b.weight = Some(1.0);
        let group = ModelGroup::new("g", vec![Arc::new(a), Arc::new(b)]);
        assert_eq!(group.weighting, Weighting::Weight);
        let counts = first_pick_counts(&group, 20_000);
        let share_a = counts["a"] as f64 / 20_000.0;
        assert!((share_a - 0.75).abs() < 0.02, "share of a = {share_a}");
    }

    #[test]
    fn rpm_is_the_weight_when_no_weight_is_set_and_tpm_after_it() {
        let mut a = deployment("g", "a");
        a.rpm = Some(900);
        a.tpm = Some(1);
        let mut b = deployment("g", "b");
        b.rpm = Some(100);
        b.tpm = Some(1000);
        let group = ModelGroup::new("g", vec![Arc::new(a.clone()), Arc::new(b.clone())]);
        assert_eq!(group.weighting, Weighting::Rpm);
        assert!((group.first_pick_shares()[0] - 0.9).abs() < 1e-9);
        a.rpm = None;
        b.rpm = None;
        let group = ModelGroup::new("g", vec![Arc::new(a), Arc::new(b)]);
        assert_eq!(group.weighting, Weighting::Tpm);
        let counts = first_pick_counts(&group, 10_000);
        assert!(counts["b"] > 9_800, "{counts:?}");
    }

    #[test]
    fn the_first_deployment_decides_the_weighting_as_in_litellm() {
        let a = deployment("g", "a"); // no weight on the first deployment
        let mut b = deployment("g", "b");
        b.weight = Some(9.0);
        let group = ModelGroup::new("g", vec![Arc::new(a), Arc::new(b)]);
        assert_eq!(group.weighting, Weighting::Uniform);
        assert_eq!(group.first_pick_shares(), [0.5, 0.5]);
    }

    #[test]
    fn no_weights_is_uniform() {
        let group = ModelGroup::new(
            "g",
            vec![
                Arc::new(deployment("g", "a")),
                Arc::new(deployment("g", "b")),
            ],
        );
        let counts = first_pick_counts(&group, 20_000);
        let share_a = counts["a"] as f64 / 20_000.0;
        assert!((share_a - 0.5).abs() < 0.02, "share of a = {share_a}");
    }

    #[test]
    fn lowest_order_tier_always_goes_first() {
        let mut a = deployment("g", "a");
        a.order = Some(2);
        let mut b = deployment("g", "b");
        b.order = Some(1);
        let c = deployment("g", "c"); // no order: last
        let group = ModelGroup::new("g", vec![Arc::new(a), Arc::new(b), Arc::new(c)]);
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..100 {
            let ids: Vec<String> = group
                .ordered(&mut rng)
                .iter()
                .map(|d| d.id.clone())
                .collect();
            assert_eq!(ids, ["b", "a", "c"]);
        }
    }

    #[test]
    fn zero_weight_deployments_are_only_fallbacks() {
        let mut a = deployment("g", "a");
        a.weight = Some(1.0);
        let b = deployment("g", "b"); // no weight in a weighted group
        let group = ModelGroup::new("g", vec![Arc::new(a), Arc::new(b)]);
        let counts = first_pick_counts(&group, 1_000);
        assert_eq!(counts.get("a"), Some(&1_000));
    }

    #[test]
    fn resolves_exact_alias_and_wildcards() {
        let mut star = deployment("*", "star");
        star.upstream_model = "*".into();
        let mut anthropic = deployment("anthropic/*", "anth");
        anthropic.upstream_model = "*".into();
        let exact = deployment("gpt-4o", "exact");
        let mut aliases = HashMap::new();
        aliases.insert(
            "gpt4".to_string(),
            Alias {
                group: "gpt-4o".into(),
                hidden: false,
            },
        );
        aliases.insert(
            "secret".to_string(),
            Alias {
                group: "gpt-4o".into(),
                hidden: true,
            },
        );
        let router = Router::new(
            vec![Arc::new(star), Arc::new(anthropic), Arc::new(exact)],
            aliases,
        );
        let mut rng = fastrand::Rng::with_seed(3);
        let plan = router.plan("gpt-4o", &mut rng).unwrap();
        assert_eq!(&*plan.group, "gpt-4o");
        let plan = router.plan("gpt4", &mut rng).unwrap();
        assert_eq!(&*plan.group, "gpt-4o");
        assert_eq!(plan.requested_model, "gpt4");
        let plan = router.plan("anthropic/claude-x", &mut rng).unwrap();
        assert_eq!(&*plan.group, "anthropic/*");
        assert_eq!(
            plan.candidates[0].model_for(plan.wildcard_capture.as_deref()),
            "claude-x"
        );
        let plan = router.plan("some-model", &mut rng).unwrap();
        assert_eq!(&*plan.group, "*");
        assert_eq!(
            plan.candidates[0].model_for(plan.wildcard_capture.as_deref()),
            "some-model"
        );
        assert_eq!(
            router.public_model_names(),
            ["*", "anthropic/*", "gpt-4o", "gpt4"]
        );
    }

    #[test]
    fn unknown_model_has_no_plan() {
        let router = Router::new(vec![Arc::new(deployment("a", "a"))], HashMap::new());
        assert!(router.plan("b", &mut fastrand::Rng::new()).is_none());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("sk-very-secret");
        assert!(!format!("{s:?}").contains("very"));
    }
}
