//! Virtual keys, teams, users, end users, budgets, rate limits and spend: LiteLLM's management
//! layer. Pingora phases that call in: `request_filter` (key lookup in the auth filter, then
//! [`Management::admit`] after routing, and the admin API), and `logging` ([`Management::settle`]).
//!
//! ```text
//!  auth filter ── KeyCache (moka, bounded) ──miss──► Store (sqlx: Postgres | SQLite)
//!  admit ─────── Ledger (in process | Redis script): reserve worst-case cost, count rpm/tpm
//!  settle ────── Ledger (book actual cost) + SpendQueue ──every proxy_batch_write_at──► Store
//!  background ── change feed (cache invalidation on every instance), budget resets, DB health
//! ```
//!
//! Database work runs on a small runtime of its own, so the proxy's threads never block on it
//! and connections stay on the runtime that created them.

pub mod admission;
pub mod cost;
pub mod gauges;
pub mod identity;
pub mod keys;
pub mod ledger;
pub mod objects;
pub mod redis_ledger;
pub mod spend;
mod spend_writer;
pub mod spool;
pub mod sqlite_writer;
pub mod store;
pub mod stored_responses;

use crate::clock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use filters::ApiError;
use filters::identity::ScopeKind;

use crate::config::PROXY_BUDGET_USER;
use crate::config::{ManagementSettings, RuntimeConfig};
use admission::ProxyLimits;
use keys::KeyCache;
use ledger::LocalLedger;
use redis_ledger::RedisLedger;
use spend::{Batch, SpendQueue};
use spool::SpendSpool;
use store::{Kind, Store};

pub use admission::{Admission, Outcome, refusal_error};

/// How often each instance reads the change feed (and so how soon an update, block or delete
/// on another instance takes effect).
pub const CHANGE_POLL: Duration = Duration::from_millis(250);
/// How far back each poll of the change feed looks (see [`Management::follow_changes`]).
const CHANGE_LOOKBACK: i64 = 1000;
/// Longest `user` (end-user id) accepted: it becomes a cache key and a database value.
pub const MAX_END_USER_LEN: usize = 256;

/// The management layer's shared state.
pub struct Management {
    pub settings: ManagementSettings,
    pub store: Store,
    pub keys: KeyCache,
    local: LocalLedger,
    redis: Option<RedisLedger>,
    pub spend: SpendQueue,
    /// Spend batches the database could not take, on disk until it can (`None`: the default
    /// directory could not be created; batches then wait in memory).
    spool: Option<SpendSpool>,
    db_up: AtomicBool,
    /// The newest change-feed number this instance has applied (versions Redis key entries).
    pub newest_change: std::sync::atomic::AtomicI64,
    /// LiteLLM's budget gauges, rendered into `/metrics`.
    pub gauges: gauges::BudgetGauges,
    /// The proxy-wide budget's limits (the user `litellm-proxy-budget`), once read.
    proxy_limits: parking_lot::RwLock<Option<ProxyLimits>>,
    /// Redis settles not finished yet (shutdown waits for them).
    pending_settles: AtomicUsize,
    /// One spend write at a time (the periodic writer, budget resets, shutdown): a batch
    /// taken by one is never missed by another that finds the queue empty.
    writing: tokio::sync::Mutex<()>,
    /// The batch a write is running for, until it ends.
    writing_batch: parking_lot::Mutex<Option<Arc<Batch>>>,
    /// Access group name -> model groups in it (`model_info.access_groups`).
    pub access_groups: HashMap<String, HashSet<String>>,
    /// Public model names, for `/key/info` model checks.
    pub model_names: Vec<String>,
    /// SHA-256 of the master key (the `api_key` of its spend-log rows, as LiteLLM writes).
    pub master_key_hash: String,
    runtime: tokio::runtime::Runtime,
}

impl Management {
    /// Connects, migrates (unless disabled) and starts the background tasks.
    pub fn start(
        config: &RuntimeConfig,
        settings: ManagementSettings,
    ) -> anyhow::Result<Arc<Management>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-mgmt")
            .enable_all()
            .build()?;
        let store = {
            let _guard = runtime.enter();
            Store::connect(
                &settings.database_url,
                settings.pool_limit,
                settings.connect_timeout,
            )?
        };
        if settings.run_migrations {
            runtime
                .block_on(async {
                    tokio::time::timeout(settings.connect_timeout, store.migrate()).await
                })
                .map_err(|_| anyhow::anyhow!("database migrations timed out"))?
                .map_err(|e| anyhow::anyhow!("database migrations failed: {e:#}"))?;
        }
        let redis = match &settings.redis_url {
            Some(url) => Some(runtime.block_on(RedisLedger::connect(url))?),
            None => None,
        };
        let mut access_groups: HashMap<String, HashSet<String>> = HashMap::new();
        for d in &config.deployments {
            if let Some(groups) = d.model_info.get("access_groups").and_then(|v| v.as_array()) {
                for g in groups.iter().filter_map(|g| g.as_str()) {
                    access_groups
                        .entry(g.to_string())
                        .or_default()
                        .insert(d.deployment.model_name.clone());
                }
            }
        }
        let master_key_hash = config
            .master_key
            .as_ref()
            .map(|k| filters::auth::hash_key_hex(k.expose()))
            .unwrap_or_default();
        let spool = match SpendSpool::open(&settings.spend_spool_dir) {
            Ok(spool) => Some(spool),
            Err(e) if settings.spend_spool_configured => anyhow::bail!(
                "cannot open the spend spool directory {} (sluice_settings.spend_spool_dir): {e}",
                settings.spend_spool_dir.display()
            ),
            Err(e) => {
                tracing::warn!(
                    "cannot open the spend spool directory {} ({e}): spend the database cannot take waits in memory and is lost if the process stops before the database is back; set sluice_settings.spend_spool_dir to a writable directory",
                    settings.spend_spool_dir.display()
                );
                None
            }
        };
        let db_up = runtime.block_on(store.ping());
        let mgmt = Arc::new(Management {
            keys: KeyCache::new(settings.key_cache_ttl),
            store,
            local: LocalLedger::default(),
            redis,
            spend: SpendQueue::default(),
            spool,
            db_up: AtomicBool::new(db_up),
            pending_settles: AtomicUsize::new(0),
            newest_change: std::sync::atomic::AtomicI64::new(0),
            proxy_limits: parking_lot::RwLock::new(None),
            gauges: gauges::BudgetGauges::default(),
            writing: tokio::sync::Mutex::new(()),
            writing_batch: parking_lot::Mutex::new(None),
            access_groups,
            model_names: config.router.public_model_names(),
            master_key_hash,
            settings,
            runtime,
        });
        if mgmt.store.backend == store::Backend::Postgres && mgmt.redis.is_none() {
            // A shared database suggests several instances; without Redis each enforces budgets
            // and rate limits on what it sees alone.
            tracing::warn!(
                "PostgreSQL without Redis: budgets, rate limits and parallel-request limits are enforced per instance; with several instances set router_settings.redis_url (or REDIS_HOST) so they are enforced together"
            );
        }
        if !db_up {
            tracing::warn!("the management database is not reachable; retrying in the background");
        } else {
            // Spend an earlier process spooled is booked before any key is read, so budgets
            // start from it.
            let me = mgmt.clone();
            let patience = mgmt.settings.connect_timeout;
            mgmt.runtime
                .block_on(async move { me.write_spool(patience).await });
        }
        cost::warm_up();
        mgmt.spawn_background();
        Ok(mgmt)
    }

    /// Runs `f` on the management runtime and waits for it from any runtime.
    pub async fn run<F, T>(self: &Arc<Self>, f: impl FnOnce(Arc<Management>) -> F) -> Option<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.spawn(f(self.clone())).await.ok()
    }

    /// Redis, when configured (budgets, rate limits, the shared key cache).
    pub fn redis(&self) -> Option<&RedisLedger> {
        self.redis.as_ref()
    }

    pub fn db_up(&self) -> bool {
        self.db_up.load(Ordering::Relaxed)
    }

    fn spawn_background(self: &Arc<Self>) {
        let me = self.clone();
        self.runtime.spawn(async move { me.follow_changes().await });
        let me = self.clone();
        self.runtime
            .spawn(async move { me.write_spend_forever().await });
        let me = self.clone();
        self.runtime
            .spawn(async move { me.reset_budgets_forever().await });
        if let Some(budget) = self.settings.proxy_budget.clone() {
            let me = self.clone();
            self.runtime.spawn(async move {
                while let Err(e) = objects::ensure_proxy_budget(&me, &budget).await {
                    tracing::warn!("the proxy budget could not be stored yet: {e}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                *me.proxy_limits.write() = None;
            });
        }
        if let Some(r) = self.redis.clone() {
            self.runtime.spawn(async move { r.keep_alive().await });
        }
        let me = self.clone();
        self.runtime.spawn(async move {
            // Rounds in a row the database answered but the spool could not be written.
            let mut replays_failed = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let ping = || async {
                    tokio::time::timeout(Duration::from_secs(2), me.store.ping())
                        .await
                        .unwrap_or(false)
                };
                let mut up = ping().await;
                if up && !me.db_up() {
                    // Spooled spend first: keys read once the database counts as up must see
                    // it in their owners' spend. A spool that keeps failing while the database
                    // answers (a batch it refuses) does not keep the instance down for good.
                    let written = me.write_spool(Duration::from_secs(10)).await;
                    replays_failed = if written { 0 } else { replays_failed + 1 };
                    if !written && replays_failed < 3 {
                        continue;
                    }
                    if !written {
                        tracing::error!(
                            "spooled spend still cannot be written although the database answers; serving again, and retrying it with every spend write"
                        );
                    }
                    up = ping().await;
                }
                if up != me.db_up.swap(up, Ordering::Relaxed) {
                    if up {
                        tracing::info!("the management database is reachable again");
                    } else {
                        tracing::error!("the management database is unreachable");
                    }
                }
            }
        });
    }

    /// Polls the change feed and drops what changed from the caches (on every instance,
    /// including the one that made the change).
    ///
    /// PostgreSQL numbers a change when it is inserted, not when its transaction commits, so a
    /// slow transaction can appear behind a number already read: each poll looks back
    /// [`CHANGE_LOOKBACK`] numbers and skips those already applied.
    async fn follow_changes(self: Arc<Self>) {
        let mut newest = loop {
            match self.store.last_change().await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(CHANGE_POLL).await,
            }
        };
        self.newest_change.store(newest, Ordering::SeqCst);
        let mut seen = std::collections::BTreeSet::new();
        loop {
            tokio::time::sleep(CHANGE_POLL).await;
            let Ok(changes) = self
                .store
                .changes_since(newest - CHANGE_LOOKBACK, clock::now_ms() - 30_000)
                .await
            else {
                continue;
            };
            for (seq, kind, id) in changes {
                if seq <= newest - CHANGE_LOOKBACK || !seen.insert(seq) {
                    continue;
                }
                newest = newest.max(seq);
                if let Some(r) = &self.redis
                    && matches!(kind.as_str(), "key" | "team" | "user")
                {
                    r.bump_version(&kind, &id, seq).await;
                }
                if let Some(kind) = Kind::parse(&kind) {
                    self.invalidate(kind, &id).await;
                }
            }
            self.newest_change.store(newest, Ordering::SeqCst);
            seen = seen.split_off(&(newest - CHANGE_LOOKBACK));
        }
    }

    /// Drops cached state about an object.
    pub async fn invalidate(&self, kind: Kind, id: &str) {
        self.keys.invalidate(kind, id);
        if kind == Kind::User && id == PROXY_BUDGET_USER {
            *self.proxy_limits.write() = None;
        }
        let Some(scope) = scope_of(kind) else {
            return;
        };
        // Budget windows roll over in the ledger by themselves and admins' spend changes are
        // pushed by the admin API. A deleted owner's counters go; a deleted or blocked key or
        // team must not come back from the last-known identities during an outage.
        let current = self.store.get(kind, id).await;
        let gone = matches!(current, Ok(None));
        let blocked = matches!(&current, Ok(Some(o)) if identity::bool_field(&o.data, "blocked"));
        if gone {
            self.gauges.forget(scope, id);
            match &self.redis {
                Some(r) => r.forget(scope, id).await,
                None => self.local.forget(&(scope, id.into())),
            }
        }
        if gone || blocked {
            match kind {
                Kind::Key => self.keys.forget_last_known(id),
                Kind::Team => self.keys.forget_team(id),
                _ => {}
            }
        }
    }

    async fn reset_budgets_forever(self: Arc<Self>) {
        let mut last_prune = clock::now_ms();
        loop {
            tokio::time::sleep(self.settings.budget_reset_interval).await;
            let now = clock::now_ms();
            if now - last_prune > 600_000 {
                // The change feed only needs the last minutes; a spend batch is written again
                // within days (from a spool file) or never.
                let _ = self.store.prune_changes(now - 3_600_000).await;
                let _ = self.store.prune_spend_batches(now - 30 * 86_400_000).await;
                let retention = stored_responses::RETENTION.as_millis() as i64;
                let _ = self.store.prune_responses(now - retention).await;
                last_prune = now;
            }
            if self.settings.disable_reset_budget {
                continue;
            }
            let Ok(due) = self.store.due_resets(now).await else {
                continue;
            };
            for (kind, o) in due {
                let (Some(old), Some(span)) = (
                    o.budget_reset_at,
                    identity::str_field(&o.data, "budget_duration")
                        .and_then(|d| clock::parse_span(d).ok()),
                ) else {
                    continue;
                };
                let next = span.next_after(old, now);
                // Spend still queued from the old window would land in the new one: write it
                // first.
                self.flush_spend(self.settings.connect_timeout).await;
                if let Err(e) = self.store.reset_budget(kind, &o.id, old, next).await {
                    tracing::warn!("budget reset of {} {} failed: {e}", kind.as_str(), o.id);
                }
                if let (Some(r), Some(scope)) = (&self.redis, scope_of(kind)) {
                    r.reset_window(scope, &o.id, next).await;
                }
            }
        }
    }

    /// An admin set an owner's spend (`/key/update` with `spend`, `/global/spend/reset`).
    pub async fn spend_was_set(&self, kind: Kind, id: &str, spend: f64, reset_at: Option<i64>) {
        let Some(scope) = scope_of(kind) else {
            return;
        };
        match &self.redis {
            Some(r) => r.set_spend(scope, id, spend, reset_at).await,
            None => self.local.set_spend(&(scope, id.into()), spend, reset_at),
        }
    }

    /// A key was regenerated: its per-model accounts (`model_max_budget` spend, which has no
    /// database row, and this minute's per-model counts) follow it to the new token, so
    /// regenerating a key does not start its per-model budgets again.
    pub async fn key_renamed(&self, old_token: &str, new_token: &str, models: &[String]) {
        for model in models {
            let (from, to) = (
                format!("{old_token}:{model}"),
                format!("{new_token}:{model}"),
            );
            match &self.redis {
                Some(r) => r.rename(ScopeKind::KeyModel, &from, &to).await,
                None => self.local.rename(
                    &(ScopeKind::KeyModel, from.into()),
                    (ScopeKind::KeyModel, to.into()),
                ),
            }
        }
    }

    /// An admin gave an owner a new `budget_duration`: its window now ends at `reset_at`, and
    /// what it spent so far stays (as in the database, and as LiteLLM keeps it). Without this
    /// the ledger would read a later `budget_reset_at` as the reset job's and start from zero,
    /// or keep an earlier one's owner blocked until the old window's end.
    pub async fn window_moved(&self, kind: Kind, id: &str, reset_at: Option<i64>) {
        let Some(scope) = scope_of(kind) else {
            return;
        };
        match &self.redis {
            Some(r) => r.move_window(scope, id, reset_at).await,
            None => self.local.move_window(&(scope, id.into()), reset_at),
        }
    }
}

/// The ledger account kind of a stored object (budgets are templates, not owners).
fn scope_of(kind: Kind) -> Option<ScopeKind> {
    match kind {
        Kind::Key => Some(ScopeKind::Key),
        Kind::Team => Some(ScopeKind::Team),
        Kind::User => Some(ScopeKind::User),
        Kind::EndUser => Some(ScopeKind::EndUser),
        Kind::Budget => None,
    }
}

/// LiteLLM's error for a store that is down (`no_db_connection`), 503.
pub fn no_db_error() -> ApiError {
    ApiError::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "no_db_connection",
        "DB not connected. The key could not be verified; set general_settings.allow_requests_on_db_unavailable to serve cached keys during outages",
    )
}

/// The same when `allow_requests_on_db_unavailable` is set: the key is not one this instance
/// (or Redis) knows from before the outage.
pub fn unknown_key_during_outage() -> ApiError {
    ApiError::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "no_db_connection",
        "DB not connected. This key was not used on this instance before the database became unreachable, so it cannot be verified until the database is back",
    )
}

impl Management {
    /// The error for a request the database is needed for and cannot answer.
    pub fn db_unavailable_error(&self) -> ApiError {
        if self.settings.allow_requests_on_db_unavailable {
            unknown_key_during_outage()
        } else {
            no_db_error()
        }
    }
}
