//! Who a virtual key belongs to and what it may do, resolved once per key (and cached) by the
//! gateway's key store; the filters read it from [`crate::Caller::Key`].

use std::collections::HashMap;
use std::sync::Arc;

/// An owner a budget or rate limit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKind {
    Key,
    Team,
    User,
    /// An end user: the request's `user` field (LiteLLM's customers).
    EndUser,
    /// One model on one key (`model_max_budget`, `model_rpm_limit`, `model_tpm_limit`).
    KeyModel,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Key => "key",
            ScopeKind::Team => "team",
            ScopeKind::User => "user",
            ScopeKind::EndUser => "end_user",
            ScopeKind::KeyModel => "key_model",
        }
    }
}

/// What routes a key may call (LiteLLM's `key_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// LLM routes and management routes (as its role allows).
    #[default]
    Default,
    /// LLM routes only.
    LlmApi,
    /// Management routes only.
    Management,
    /// Management routes that read (GET), nothing else.
    ReadOnly,
}

impl KeyType {
    /// The value LiteLLM stores, when it names a type.
    pub fn parse(text: &str) -> Option<KeyType> {
        match text {
            "default" => Some(KeyType::Default),
            "llm_api" => Some(KeyType::LlmApi),
            "management" => Some(KeyType::Management),
            "read_only" => Some(KeyType::ReadOnly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Default => "default",
            KeyType::LlmApi => "llm_api",
            KeyType::Management => "management",
            KeyType::ReadOnly => "read_only",
        }
    }

    pub fn calls_llm_routes(self) -> bool {
        matches!(self, KeyType::Default | KeyType::LlmApi)
    }
}

/// The budget and limits of one owner.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    pub max_budget: Option<f64>,
    /// `budget_duration` as configured (`30s`, `1d`, `1mo`, ...).
    pub budget_duration: Option<String>,
    /// When the current budget window ends (Unix milliseconds).
    pub budget_reset_at: Option<i64>,
    /// Spend recorded in the database when the owner was loaded.
    pub spend: f64,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
}

impl Limits {
    /// Whether any check applies to this owner.
    pub fn is_empty(&self) -> bool {
        self.max_budget.is_none()
            && self.rpm_limit.is_none()
            && self.tpm_limit.is_none()
            && self.max_parallel_requests.is_none()
    }
}

/// A budget/limit owner: kind, id, limits (shared: every request of the key checks them).
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub kind: ScopeKind,
    /// The owner's id; for [`ScopeKind::KeyModel`] `<token>:<model>`.
    pub id: Arc<str>,
    pub limits: Arc<Limits>,
}

/// A resolved virtual key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyIdentity {
    /// SHA-256 hex of the key (LiteLLM's `token`).
    pub token: Arc<str>,
    pub key_alias: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub team_alias: Option<String>,
    pub organization_id: Option<String>,
    /// Which routes the key may call.
    pub key_type: KeyType,
    /// The key's user is a proxy admin (`user_role: proxy_admin`).
    pub is_admin: bool,
    /// The key's user's `user_role` (`proxy_admin_viewer`, `internal_user`, ...).
    pub user_role: Option<String>,
    /// The key's user's `user_email` (the `user_email` metric label).
    pub user_email: Option<String>,
    /// Models the key may call (empty: whatever its team allows).
    pub models: Vec<String>,
    /// Models the key's team may call (empty: all).
    pub team_models: Vec<String>,
    /// Models the key's user may call, for keys without a team (empty: all).
    pub user_models: Vec<String>,
    /// Key aliases: requested name -> model group.
    pub aliases: HashMap<String, String>,
    /// Unix milliseconds after which the key is refused.
    pub expires_at: Option<i64>,
    /// The owners whose budgets and limits apply, key first.
    pub scopes: Vec<Scope>,
    /// Per-model limits on this key, by model name.
    pub model_limits: HashMap<String, Scope>,
    /// The key's own `max_budget`, `tpm_limit`, `rpm_limit` (for LiteLLM's response headers).
    pub key_limits: Limits,
    /// The spend-log `metadata` of this key's requests (its fields and free-form `metadata`),
    /// rendered once.
    pub log_metadata: String,
    /// `x-litellm-key-max-budget`, `-rpm-limit`, `-tpm-limit`, rendered once.
    pub limit_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The key's and its team's tags (`tags`, `metadata.tags`): every request of the key
    /// carries them (tag routing, spend logs).
    pub tags: Vec<String>,
    /// `metadata.allow_client_mock_response` on the key or its team: the key's requests may
    /// carry `mock_response`.
    pub allow_client_mock_response: bool,
    /// The key's metadata `cache` controls: they replace a request's own (`ttl`, `s-maxage`,
    /// `no-cache`, `no-store` only), as in LiteLLM.
    pub cache_controls: Option<serde_json::Value>,
    /// `allowed_cache_controls`: when set, the only `cache` controls its requests may send.
    pub allowed_cache_controls: Vec<String>,
}

impl KeyIdentity {
    /// The model group a requested name stands for under this key's `aliases`.
    pub fn alias_for(&self, model: &str) -> Option<&str> {
        self.aliases.get(model).map(String::as_str)
    }
}
