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

pub mod api;
pub mod cost;
pub mod gauges;
pub mod identity;
pub mod keys;
pub mod ledger;
pub mod redis_ledger;
pub mod spend;
pub mod spool;
pub mod sqlite_writer;
pub mod store;

use crate::clock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use filters::identity::{KeyIdentity, Limits, ScopeKind};
use filters::{ApiError, Usage};

use crate::config::PROXY_BUDGET_USER;
use crate::config::{ManagementSettings, RuntimeConfig};
use crate::pricing::ModelPrice;
use keys::KeyCache;
use ledger::{Check, Hold, LocalLedger, Refusal};
use redis_ledger::RedisLedger;
use spend::{Batch, SpendQueue};
use spool::SpendSpool;
use store::{Kind, Store};

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
}

/// The proxy-wide budget's limits, and the same without the budget for requests that only
/// book spend on it (the master key's), both built once when the budget is read.
#[derive(Clone)]
struct ProxyLimits {
    checked: Arc<Limits>,
    booked_only: Arc<Limits>,
}

impl ProxyLimits {
    fn of(limits: Limits) -> ProxyLimits {
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
                while let Err(e) = api::ensure_proxy_budget(&me, &budget).await {
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

    async fn write_spend_forever(self: Arc<Self>) {
        let every = self.settings.batch_write_interval;
        // A write that has not finished in this time is given up and its batch spooled (its
        // id makes it count once if it committed after all).
        let patience = self.settings.connect_timeout + Duration::from_secs(10);
        loop {
            // Every proxy_batch_write_at, or sooner when many rows are queued (a busy gateway
            // then writes smaller batches instead of holding seconds of rows in memory).
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.spend.full.notified() => {}
            }
            if self.db_up() {
                self.write_spool(patience).await;
            }
            self.flush_spend(patience).await;
        }
    }

    /// Writes what the queue holds, waiting at most `patience`. A batch the database does not
    /// take (it is down, the write failed or took too long) goes to the spool; without one it
    /// is put back in the queue for the next attempt.
    pub async fn flush_spend(&self, patience: Duration) -> bool {
        let _one_writer = self.writing.lock().await;
        let mut all_written = true;
        // Batches held in memory (no spool), each with its own id, then the queue.
        for batch in self.spend.take_held() {
            all_written &= self.write_batch(batch, patience).await;
        }
        let batch = self.spend.take();
        if batch.is_empty() {
            return all_written;
        }
        self.write_batch(batch, patience).await && all_written
    }

    /// Writes one batch, waiting at most `patience`; on failure it is kept (see `keep`).
    async fn write_batch(&self, batch: Batch, patience: Duration) -> bool {
        if !self.db_up() {
            self.keep(batch, "the database is unreachable");
            return false;
        }
        let batch = Arc::new(batch);
        // Visible to a shutdown that cannot wait for this write (see `flush_blocking`).
        *self.writing_batch.lock() = Some(batch.clone());
        let write = self.store.write_spend(batch.clone(), &self.master_key_hash);
        let result = tokio::time::timeout(patience, write).await;
        *self.writing_batch.lock() = None;
        let failure = match result {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {patience:?}"),
        };
        self.keep(
            Arc::try_unwrap(batch).unwrap_or_else(|b| (*b).clone()),
            &failure,
        );
        false
    }

    /// Keeps a batch the database did not take: in the spool, else in memory, whole.
    fn keep(&self, batch: Batch, why: &str) {
        let rows = batch.logs.len();
        let Some(spool) = &self.spool else {
            tracing::warn!(rows, "writing spend failed, will retry: {why}");
            self.spend.hold(batch);
            return;
        };
        match spool.save(&batch, &self.master_key_hash) {
            Ok(()) => tracing::warn!(
                rows,
                "writing spend failed ({why}); the batch is kept in {} until the database is back",
                spool.dir().display()
            ),
            Err(e) => {
                tracing::error!(
                    rows,
                    "writing spend failed ({why}) and the spend spool {} cannot take it ({e}); kept in memory",
                    spool.dir().display()
                );
                self.spend.hold(batch);
            }
        }
    }

    /// At exit, without waiting for the writer: the batch a write may be stuck on (a
    /// database that stopped answering) and everything queued go to the spool. The stuck
    /// batch's id keeps it from counting twice should that write have committed.
    fn spool_everything(&self, why: &str) {
        let stuck = self.writing_batch.lock().take();
        if let Some(batch) = stuck {
            self.keep((*batch).clone(), why);
        }
        for held in self.spend.take_held() {
            self.keep(held, why);
        }
        let queued = self.spend.take();
        if !queued.is_empty() {
            self.keep(queued, why);
        }
    }

    /// Writes the spooled batches to the database, oldest first; stops at the first that
    /// fails (the rest wait for the next try).
    /// Whether the spool is empty afterwards. Bounded by `patience` (waiting for the writer
    /// included): a database that accepts connections but does not answer cannot hold the
    /// health check or the writer for longer.
    async fn write_spool(&self, patience: Duration) -> bool {
        match tokio::time::timeout(patience, self.write_spool_unbounded()).await {
            Ok(done) => done,
            Err(_) => {
                tracing::warn!(
                    "writing spooled spend took more than {patience:?}; will retry (a batch written meanwhile counts once)"
                );
                false
            }
        }
    }

    async fn write_spool_unbounded(&self) -> bool {
        let Some(spool) = &self.spool else {
            return true;
        };
        if !spool.has_waiting() {
            return true;
        }
        let _one_writer = self.writing.lock().await;
        let files = match spool.waiting() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("cannot read the spend spool {}: {e}", spool.dir().display());
                return false;
            }
        };
        let mut failed = false;
        let (mut batches, mut rows) = (0, 0);
        for file in files {
            let batch = match SpendSpool::load(&file) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(
                        "a spooled spend batch cannot be read ({}): {e}; left in place",
                        file.display()
                    );
                    failed = true;
                    continue;
                }
            };
            let n = batch.logs.len();
            match self
                .store
                .write_spend(Arc::new(batch), &self.master_key_hash)
                .await
            {
                Ok(()) => {
                    spool.remove(&file);
                    batches += 1;
                    rows += n;
                }
                Err(e) => {
                    tracing::warn!("writing spooled spend failed, will retry: {e}");
                    failed = true;
                    break;
                }
            }
        }
        spool.recount();
        if batches > 0 {
            tracing::info!(batches, rows, "spooled spend written to the database");
        }
        !failed && !spool.has_waiting()
    }

    /// Writes pending spend before the process exits (SIGTERM), waiting up to `timeout`; what
    /// the database does not take by then is spooled.
    pub fn flush_blocking(self: &Arc<Self>, timeout: Duration) {
        let me = self.clone();
        let written = self.runtime.block_on(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            // Settles in Redis first (bounded), then one write of everything queued.
            let _ = tokio::time::timeout_at(deadline, async {
                while me.pending_settles.load(Ordering::SeqCst) > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            if !me.db_up() {
                me.spool_everything("the database is unreachable");
                return false;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let patience = left.max(Duration::from_millis(500));
            match tokio::time::timeout(patience, me.flush_spend(patience)).await {
                Ok(written) => written,
                Err(_) => {
                    me.spool_everything("the database did not answer before exiting");
                    false
                }
            }
        });
        if !written {
            match &self.spool {
                Some(spool) => tracing::warn!(
                    "spend could not be written before exiting; it is kept in {} and written by the next start once the database is reachable",
                    spool.dir().display()
                ),
                None => tracing::error!(
                    "spend could not be written before exiting: the database is unreachable"
                ),
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

    /// Checks budgets and rate limits of every owner of this request and reserves its worst
    /// case. `Ok` carries what must be settled when the request ends.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        self: &Arc<Self>,
        key: Option<&Arc<KeyIdentity>>,
        end_user: Option<&str>,
        model: (&str, &str),
        price: Option<&ModelPrice>,
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
        let output_bound = cost::output_bound(max_tokens, price, embedding);
        let (mut shape, mut counted) = match budgeted.then(|| cost::quick_shape(body)) {
            None => (cost::RequestShape::NONE, true),
            Some(Some(quick)) => (quick, false),
            Some(None) => (cost::request_shape(body), true),
        };
        let result = loop {
            let estimate = if budgeted {
                cost::worst_case(shape.prompt_tokens, output_bound * shape.choices, price)
            } else {
                0.0
            };
            let result = match &self.redis {
                // Boxed: the Redis call's future is large, and inline it would grow every
                // request's future also when Redis is not configured. Bounded by
                // `redis_ledger::REDIS_TIMEOUT`, and answered at once during an outage.
                Some(r) => Box::pin(r.admit(&checks, estimate, now)).await,
                None => Ok(self.local.admit(&checks, estimate, now)),
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
