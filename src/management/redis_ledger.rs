//! What several instances share through Redis: the ledger, and a second-level cache of keys.
//!
//! The ledger: one Redis hash per owner (spend, reserved, budget
//! window, in-flight count, this minute's requests and tokens), checked and reserved by one Lua
//! script, so the check-then-reserve of all owners of a request is atomic across instances
//! (Redis runs a script without interleaving). Same semantics as [`super::ledger::LocalLedger`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use filters::identity::ScopeKind;
use redis::aio::ConnectionManager;
use redis::{RedisError, RedisResult, Script};

use super::ledger::{Check, Hold, Refusal};
use crate::clock::parse_span;

/// Checks every owner, then reserves on all of them, or returns which check failed.
/// ARGV: now, estimate, hold id, this instance's id, fail-closed ("1": the whole estimate must
/// fit; else it is capped at what the tightest owner has left), then per owner: max_budget, initial
/// spend, window end from the database, end of the window that contains now (computed by the
/// caller, as the in-process ledger rolls windows), max parallel, rpm, tpm ("" = none). The
/// hold is recorded (for a day) so that its settle applies once.
///
/// Reservations and in-flight counts are kept per instance (`r:<instance>`, `f:<instance>`
/// fields of the owner's hash) and count only while that instance is alive (its
/// `sluice:instance:<id>` key, refreshed every few seconds): the holds of an instance that was
/// killed mid-request (SIGKILL, OOM, a lost node) are dropped by the next request on the same
/// owner once its liveness key has expired, instead of holding budget and parallel-request
/// slots for ever.
const ADMIT: &str = r#"
local now = tonumber(ARGV[1])
local est = tonumber(ARGV[2])
local hold = ARGV[3]
local me = ARGV[4]
local fail_closed = ARGV[5] == '1'
local cap = est
local minute = math.floor(now / 60000)
local live = {}
local state = {}
for i = 1, #KEYS do
  local b = 5 + (i - 1) * 7
  local k = KEYS[i]
  local max, init, db_end, cur_end = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
  local par, rpm, tpm = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  redis.call('HSETNX', k, 'spend', init)
  if db_end ~= '' then redis.call('HSETNX', k, 'window_end', db_end) end
  local h = redis.call('HGETALL', k)
  local f = {}
  local reserved, inflight = 0, 0
  for j = 1, #h, 2 do
    local name = h[j]
    local what, inst = string.match(name, '^([rf]):(.+)$')
    if what then
      local alive = live[inst]
      if alive == nil then
        alive = inst == me or redis.call('EXISTS', 'sluice:instance:' .. inst) == 1
        live[inst] = alive
      end
      if not alive then
        redis.call('HDEL', k, name)
      elseif what == 'r' then
        reserved = reserved + (tonumber(h[j + 1]) or 0)
      else
        inflight = inflight + (tonumber(h[j + 1]) or 0)
      end
    else
      f[name] = h[j + 1]
    end
  end
  local spend = tonumber(f['spend']) or 0
  local we = tonumber(f['window_end'])
  local requests = tonumber(f['requests']) or 0
  local tokens = tonumber(f['tokens']) or 0
  if db_end ~= '' and we and tonumber(db_end) > we then
    spend = 0; we = tonumber(db_end)
    redis.call('HSET', k, 'spend', 0, 'window_end', db_end)
  end
  if we and cur_end and we <= now and cur_end > we then
    spend = 0; we = cur_end
    redis.call('HSET', k, 'spend', 0, 'window_end', ARGV[b + 4])
  end
  if tonumber(f['minute']) ~= minute then
    requests = 0; tokens = 0
    redis.call('HSET', k, 'minute', minute, 'requests', 0, 'tokens', 0)
  end
  if max ~= '' then
    local m = tonumber(max)
    local over
    if fail_closed then over = spend + reserved + est > m + 1e-12 else over = spend + reserved >= m - 1e-12 end
    if spend >= m or over then
      return {'budget', tostring(i), tostring(spend), max}
    end
    local left = m - spend - reserved
    if left < 0 then left = 0 end
    if left < cap then cap = left end
  end
  if par ~= '' and inflight >= tonumber(par) then return {'parallel_requests', tostring(i), '', par} end
  if rpm ~= '' and requests >= tonumber(rpm) then return {'requests', tostring(i), '', rpm} end
  if tpm ~= '' and tokens >= tonumber(tpm) then return {'tokens', tostring(i), '', tpm} end
  state[i] = {spend, requests, tokens}
end
redis.call('SET', 'sluice:hold:' .. hold, 1, 'EX', 86400)
est = cap
local out = {'ok', tostring(est)}
for i = 1, #KEYS do
  local k = KEYS[i]
  redis.call('HINCRBYFLOAT', k, 'r:' .. me, est)
  redis.call('HINCRBY', k, 'f:' .. me, 1)
  redis.call('HINCRBY', k, 'requests', 1)
  table.insert(out, tostring(state[i][1]))
  table.insert(out, tostring(state[i][2] + 1))
  table.insert(out, tostring(state[i][3]))
end
return out
"#;

/// Releases a hold and books the cost, once per hold. ARGV: now, reserved, cost, tokens,
/// hold id, this instance's id. The instance's last hold on an owner takes its fields away
/// (no rounding residue of the reservation sums is left behind).
const SETTLE: &str = r#"
if redis.call('DEL', 'sluice:hold:' .. ARGV[5]) == 0 then return 0 end
local now = tonumber(ARGV[1])
local minute = math.floor(now / 60000)
local r, f = 'r:' .. ARGV[6], 'f:' .. ARGV[6]
for i = 1, #KEYS do
  local k = KEYS[i]
  if redis.call('HINCRBY', k, f, -1) <= 0 then
    redis.call('HDEL', k, r, f)
  else
    redis.call('HINCRBYFLOAT', k, r, -tonumber(ARGV[2]))
  end
  redis.call('HINCRBYFLOAT', k, 'spend', ARGV[3])
  if tonumber(redis.call('HGET', k, 'minute')) == minute then
    redis.call('HINCRBY', k, 'tokens', ARGV[4])
  end
end
return 1
"#;

/// Moves an owner to a new budget window unless it is already there.
const RESET: &str = r#"
local we = tonumber(redis.call('HGET', KEYS[1], 'window_end'))
if we == nil or we < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'spend', 0, 'window_end', ARGV[1])
end
return 1
"#;

/// A cached key entry: the stored key, team and user objects as read from the database, and
/// the newest change-feed number the reading instance had applied before it read them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CachedKey {
    pub seq: i64,
    /// Versions of the key, its team and its user this entry reflects (older entries have
    /// only `seq`).
    #[serde(default)]
    pub key_seq: i64,
    #[serde(default)]
    pub team_seq: i64,
    #[serde(default)]
    pub user_seq: i64,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub key: super::store::Object,
    pub team: Option<super::store::Object>,
    pub user: Option<super::store::Object>,
}

/// Cached keys live this long (LiteLLM's cache TTL).
const KEY_CACHE_TTL_SECS: u64 = 60;
/// A version outlives every entry it can make stale.
const VERSION_TTL_SECS: u64 = 2 * KEY_CACHE_TTL_SECS;

/// A cached key, unless the key, its team or its user changed after the entry was read: every
/// instance records the change-feed number of each change it applies as that object's
/// version, and an entry read before that number is stale. (A lagging instance can only write
/// entries that look older than they are, never newer.) ARGV: version-key prefix, token.
const CACHED_KEY: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ok, e = pcall(cjson.decode, v)
if not ok then return false end
local seq = tonumber(e['seq']) or 0
local function newer(kind, id, own)
  if id == nil or id == cjson.null then return false end
  local x = tonumber(redis.call('GET', ARGV[1] .. kind .. ':' .. id))
  return x ~= nil and x > math.max(seq, tonumber(own) or 0)
end
if newer('key', ARGV[2], e['key_seq']) or newer('team', e['team_id'], e['team_seq'])
  or newer('user', e['user_id'], e['user_seq']) then
  return false
end
return v
"#;

/// Raises an object's version (never lowers it). ARGV: seq, ttl.
const BUMP_VERSION: &str = r#"
local x = tonumber(redis.call('GET', KEYS[1]))
if x == nil or x < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"#;

const VERSION_PREFIX: &str = "sluice:ver:";

/// How long an instance counts as alive after its last heartbeat, and how often it beats.
pub const INSTANCE_TTL: Duration = Duration::from_secs(10);
pub const INSTANCE_HEARTBEAT: Duration = Duration::from_secs(2);
/// The longest any Redis call may take (connecting included) before it counts as failed: the
/// most a request ever waits on Redis (documented in docs/operations.md).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// While Redis is unreachable, how often the heartbeat asks whether it is back.
const OUTAGE_PROBE: Duration = Duration::from_millis(250);
/// How long a settle keeps trying through an outage before its hold is given up (a hold is
/// only counted while its instance is alive, so a lost one ends with the instance).
const SETTLE_PATIENCE: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct RedisLedger {
    conn: ConnectionManager,
    /// Whether Redis is taken to be reachable. While it is down, calls fail at once instead of
    /// each waiting [`REDIS_TIMEOUT`]; the heartbeat ([`RedisLedger::keep_alive`]) finds out
    /// when it is back.
    up: Arc<AtomicBool>,
    /// Wakes the heartbeat when the gate closes, so it probes at once.
    probe: Arc<tokio::sync::Notify>,
    /// This process's id in the per-instance reservation fields.
    instance: String,
    admit: Script,
    settle: Script,
    reset: Script,
    cached_key: Script,
    bump_version: Script,
}

fn account_key(kind: ScopeKind, id: &str) -> String {
    format!("sluice:acct:{}:{id}", kind.as_str())
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

impl RedisLedger {
    pub async fn connect(url: &str) -> anyhow::Result<RedisLedger> {
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("invalid Redis URL: {e}"))?;
        // One connection attempt per reconnect, no backoff: redis-rs 0.32's default backoff
        // starts at 1 s and multiplies by 100 (capped at 60 s), so after a restart commands
        // waited on a reconnect sleeping up to a minute or two. Here a failed reconnect fails
        // its callers at once, the outage gate answers the next ones, and the heartbeat's next
        // call (every 250 ms while down) reconnects as soon as Redis accepts connections.
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_connection_manager_with_config(
                redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_max_delay(100)
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT),
            ),
        )
        .await
        .map_err(|_| anyhow::anyhow!("connecting to Redis timed out"))?
        .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))?;
        let ledger = RedisLedger {
            conn,
            up: Arc::new(AtomicBool::new(true)),
            probe: Default::default(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
            admit: Script::new(ADMIT),
            settle: Script::new(SETTLE),
            reset: Script::new(RESET),
            cached_key: Script::new(CACHED_KEY),
            bump_version: Script::new(BUMP_VERSION),
        };
        // Alive before the first reservation, so no other instance drops it.
        ledger
            .heartbeat()
            .await
            .map_err(|e| anyhow::anyhow!("Redis is not usable: {e}"))?;
        Ok(ledger)
    }

    /// Marks this instance alive for [`INSTANCE_TTL`]. Not gated: it is also the probe that
    /// finds Redis back after an outage.
    pub async fn heartbeat(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        let mut beat = redis::cmd("SET");
        beat.arg(format!("sluice:instance:{}", self.instance))
            .arg(1)
            .arg("PX")
            .arg(INSTANCE_TTL.as_millis() as u64);
        match tokio::time::timeout(REDIS_TIMEOUT, beat.query_async(&mut conn)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        }
    }

    /// Whether Redis answered the last call (false during an outage).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The heartbeat, for ever: every [`INSTANCE_HEARTBEAT`] while Redis answers, every
    /// [`OUTAGE_PROBE`] while it does not, opening the gate again with the first answer.
    pub async fn keep_alive(&self) {
        loop {
            let up = self.is_up();
            let pause = if up { INSTANCE_HEARTBEAT } else { OUTAGE_PROBE };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                // The gate just closed: find out now whether Redis answers.
                _ = self.probe.notified(), if up => {}
            }
            let up = self.is_up();
            match self.heartbeat().await {
                Ok(()) => {
                    if !self.up.swap(true, Ordering::AcqRel) {
                        tracing::info!("Redis is reachable again");
                    }
                }
                Err(e) if up && is_outage(&e) => self.mark_down(&e),
                Err(e) if up => tracing::warn!("Redis heartbeat failed: {e}"),
                Err(_) => {}
            }
        }
    }

    fn mark_down(&self, e: &RedisError) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.probe.notify_one();
            tracing::error!(
                "Redis is unreachable ({e}): requests that need it are answered 503 at once until it answers again"
            );
        }
    }

    /// Runs one Redis call: at once an error while Redis is known to be down, else the call
    /// bounded by [`REDIS_TIMEOUT`]. A connection failure or a timeout closes the gate at once,
    /// so a request never waits twice (a key lookup and then its admission would otherwise
    /// wait 2 s each); the heartbeat probes straight away and opens it again with Redis's
    /// first answer (within milliseconds when the timeout was one slow script).
    async fn guarded<T>(&self, call: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
        if !self.is_up() {
            return Err(RedisError::from((
                redis::ErrorKind::IoError,
                "Redis is unreachable",
            )));
        }
        let result = match tokio::time::timeout(REDIS_TIMEOUT, call).await {
            Ok(r) => r,
            Err(_) => Err(timed_out()),
        };
        if let Err(e) = &result
            && (is_outage(e) || e.to_string().contains("timed out"))
        {
            self.mark_down(e);
        }
        result
    }

    pub async fn admit(
        &self,
        checks: &[Check],
        estimate: f64,
        now_ms: i64,
        fail_closed: bool,
    ) -> redis::RedisResult<Result<Hold, Refusal>> {
        let hold_id = uuid::Uuid::new_v4().to_string();
        let mut inv = self.admit.prepare_invoke();
        inv.arg(now_ms)
            .arg(estimate)
            .arg(&hold_id)
            .arg(&self.instance)
            .arg(if fail_closed { "1" } else { "0" });
        for c in checks {
            let l = &c.limits;
            // The window that contains now, computed here for every kind of span (calendar
            // months included); the script moves an ended window on to it.
            let current_end = match (
                l.budget_duration.as_deref().map(parse_span),
                l.budget_reset_at,
            ) {
                (Some(Ok(span)), Some(end)) => Some(span.next_after(end, now_ms)),
                _ => None,
            };
            inv.key(account_key(c.key.0, &c.key.1))
                .arg(opt(l.max_budget))
                .arg(l.spend)
                .arg(opt(l.budget_reset_at))
                .arg(opt(current_end))
                .arg(opt(l.max_parallel_requests))
                .arg(opt(l.rpm_limit))
                .arg(opt(l.tpm_limit));
        }
        let mut conn = self.conn.clone();
        let out: Vec<String> = self.guarded(inv.invoke_async(&mut conn)).await?;
        if out.first().map(String::as_str) != Some("ok") {
            let what = out.first().cloned().unwrap_or_default();
            let i: usize = out.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
            let c = &checks[i.saturating_sub(1).min(checks.len() - 1)];
            let limit = out.get(3).cloned().unwrap_or_default();
            let next_minute = super::ledger::until_next_minute(now_ms);
            return Ok(Err(if what == "budget" {
                Refusal::Budget {
                    kind: c.key.0,
                    id: c.key.1.to_string(),
                    spend: out.get(2).and_then(|s| s.parse().ok()).unwrap_or(0.0),
                    max_budget: limit.parse().unwrap_or(0.0),
                }
            } else {
                Refusal::Rate {
                    kind: c.key.0,
                    id: c.key.1.to_string(),
                    what: match what.as_str() {
                        "parallel_requests" => "parallel_requests",
                        "tokens" => "tokens",
                        _ => "requests",
                    },
                    limit: limit.parse().unwrap_or(0),
                    retry_after_ms: if what == "parallel_requests" {
                        1000
                    } else {
                        next_minute
                    },
                }
            }));
        }
        // What the script reserved: the estimate, capped at what the tightest owner had left.
        let reserved = out.get(1).and_then(|r| r.parse().ok()).unwrap_or(estimate);
        let mut hold = Hold {
            id: hold_id,
            reserved,
            ..Hold::default()
        };
        for (i, c) in checks.iter().enumerate() {
            let field = |j: usize| out.get(2 + i * 3 + j).cloned().unwrap_or_default();
            if i == 0 {
                hold.key_spend = field(0).parse().ok();
            }
            let requests: u64 = field(1).parse().unwrap_or(0);
            let tokens: u64 = field(2).parse().unwrap_or(0);
            hold.take(c, requests, tokens, field(0).parse().unwrap_or(0.0));
        }
        Ok(Ok(hold))
    }

    pub async fn settle(&self, hold: &Hold, cost: f64, tokens: u64, now_ms: i64) {
        let mut inv = self.settle.prepare_invoke();
        for (kind, id) in &hold.accounts {
            inv.key(account_key(*kind, id));
        }
        inv.arg(now_ms)
            .arg(hold.reserved)
            .arg(cost)
            .arg(tokens)
            .arg(&hold.id)
            .arg(&self.instance);
        let mut conn = self.conn.clone();
        // Retried, through an outage too: a lost settle would leave the reservation and the
        // in-flight slot taken (the script applies a hold once, so a retry never books twice).
        let give_up = tokio::time::Instant::now() + SETTLE_PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.guarded(inv.invoke_async::<i64>(&mut conn)).await {
                Ok(_) => return,
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    tracing::error!("settling a request in Redis failed, giving up: {e}");
                    return;
                }
                Err(e) => {
                    if self.is_up() {
                        tracing::warn!("settling a request in Redis failed, retrying: {e}");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    pub async fn reset_window(&self, kind: ScopeKind, id: &str, window_end: i64) {
        let mut conn = self.conn.clone();
        let _: RedisResult<i64> = self
            .guarded(
                self.reset
                    .key(account_key(kind, id))
                    .arg(window_end)
                    .invoke_async(&mut conn),
            )
            .await;
    }

    pub async fn set_spend(&self, kind: ScopeKind, id: &str, spend: f64, window_end: Option<i64>) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HSET");
        cmd.arg(account_key(kind, id)).arg("spend").arg(spend);
        if let Some(w) = window_end {
            cmd.arg("window_end").arg(w);
        }
        let _: RedisResult<i64> = self.guarded(cmd.query_async(&mut conn)).await;
    }

    /// Moves an owner's budget window to end at `window_end`, keeping its spend (see
    /// [`crate::management::ledger::LocalLedger::move_window`]).
    pub async fn move_window(&self, kind: ScopeKind, id: &str, window_end: Option<i64>) {
        let mut conn = self.conn.clone();
        let key = account_key(kind, id);
        let cmd = match window_end {
            Some(w) => redis::cmd("HSET").arg(key).arg("window_end").arg(w).clone(),
            None => redis::cmd("HDEL").arg(key).arg("window_end").clone(),
        };
        let _: RedisResult<i64> = self.guarded(cmd.query_async(&mut conn)).await;
    }

    /// Moves an owner's account to a new id, unless the new id has one already.
    pub async fn rename(&self, kind: ScopeKind, from: &str, to: &str) {
        let mut conn = self.conn.clone();
        let _: RedisResult<i64> = self
            .guarded(
                redis::cmd("RENAMENX")
                    .arg(account_key(kind, from))
                    .arg(account_key(kind, to))
                    .query_async(&mut conn),
            )
            .await;
    }

    /// The key's cached objects, when Redis has a current entry.
    pub async fn cached_key(&self, token: &str) -> Option<CachedKey> {
        let mut conn = self.conn.clone();
        let v: Option<String> = self
            .guarded(
                self.cached_key
                    .key(format!("sluice:key:{token}"))
                    .arg(VERSION_PREFIX)
                    .arg(token)
                    .invoke_async(&mut conn),
            )
            .await
            .ok()?;
        serde_json::from_str(&v?).ok()
    }

    /// Shares a key read from the database with the other instances.
    pub async fn cache_key(&self, token: &str, entry: &CachedKey) {
        let Ok(json) = serde_json::to_string(entry) else {
            return;
        };
        let mut conn = self.conn.clone();
        let _: RedisResult<()> = self
            .guarded(
                redis::cmd("SET")
                    .arg(format!("sluice:key:{token}"))
                    .arg(json)
                    .arg("EX")
                    .arg(KEY_CACHE_TTL_SECS)
                    .query_async(&mut conn),
            )
            .await;
    }

    /// Records that `kind`/`id` changed at change-feed number `seq`.
    pub async fn bump_version(&self, kind: &str, id: &str, seq: i64) {
        let mut conn = self.conn.clone();
        let _: RedisResult<i64> = self
            .guarded(
                self.bump_version
                    .key(format!("{VERSION_PREFIX}{kind}:{id}"))
                    .arg(seq)
                    .arg(VERSION_TTL_SECS)
                    .invoke_async(&mut conn),
            )
            .await;
    }

    /// Drops an owner's counters (deleted objects).
    pub async fn forget(&self, kind: ScopeKind, id: &str) {
        let mut conn = self.conn.clone();
        let _: RedisResult<i64> = self
            .guarded(
                redis::cmd("DEL")
                    .arg(account_key(kind, id))
                    .query_async(&mut conn),
            )
            .await;
    }
}

fn timed_out() -> RedisError {
    RedisError::from((redis::ErrorKind::IoError, "timed out"))
}

/// Whether an error means Redis cannot be reached (rather than a script or data error).
fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.kind() == redis::ErrorKind::BusyLoadingError
}
