//! The router's state shared by instances through Redis: each instance publishes what it knows
//! of every deployment (cooldown, failure-rate counts, `allowed_fails` count, attempts in
//! flight, this minute's usage, latency samples) and adds what the others published to its
//! own, so instances cool a deployment down together and balance as one.
//!
//! Nothing on the request path waits on Redis: decisions read local memory (`Health`), and a
//! background thread of its own synchronises it (write-behind, then a read), every second and at
//! once when this instance cools a deployment down. Redis down means each instance routes on its
//! own state: logged once when it goes and once when it is back, never a failed request. Peers'
//! figures age out by their own clocks (a window that ended, a minute that passed, a snapshot
//! more than a few seconds old for attempts in flight), so an instance that died stops counting.
//!
//! Redis layout: one hash per deployment, `sluice:router:<deployment id>`, field = instance id,
//! value = that instance's JSON [`Snapshot`]; the key expires two minutes after the last write.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Health, Samples, WINDOW_MS};

/// How often an instance writes its state and reads the others' (LiteLLM re-reads cooldowns
/// from Redis at most every second).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// A peer's attempts in flight count only while its snapshot is this fresh.
const IN_FLIGHT_FRESH_MS: i64 = 5_000;
/// Redis keeps a deployment's hash this long after the last write (ms).
const KEY_TTL_MS: i64 = 120_000;
/// Each Redis round trip gives up after this long.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// What one instance knows of one deployment (short field names: it is written every second).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// When it was taken (Unix ms).
    pub at: i64,
    /// Cooling down until (Unix ms; 0: not) and the cooldown's length (ms).
    pub cu: i64,
    pub cm: i64,
    /// Failure-rate window: start, failures, successes.
    pub ws: Option<i64>,
    pub f: u32,
    pub s: u32,
    /// `allowed_fails` window: start and failures.
    pub aws: Option<i64>,
    pub af: u32,
    /// Attempts in flight.
    pub inf: u64,
    /// Usage: minute, requests, tokens.
    pub um: i64,
    pub ur: u64,
    pub ut: u64,
    /// Latency samples and streams' times to first token: (Unix ms, seconds).
    pub lat: Vec<(i64, f64)>,
    pub ttft: Vec<(i64, f64)>,
}

/// What the other instances know of a deployment, summed; refreshed by each sync.
#[derive(Debug, Default)]
pub(super) struct Peers {
    pub fails: u32,
    pub successes: u32,
    pub allowed_fails: u32,
    pub in_flight: u64,
    pub usage: (i64, u64, u64),
    pub latency: Vec<(i64, f64)>,
    pub ttft: Vec<(i64, f64)>,
}

impl Health {
    /// This instance's own state of a deployment, for the others.
    pub fn snapshot(&self, index: usize, now: i64) -> Snapshot {
        let Some(d) = self.state(index) else {
            return Snapshot::default();
        };
        let c = d.counts.lock();
        let u = *d.usage.lock();
        let l = d.latency.lock();
        let list = |s: &Samples| s.iter().copied().collect::<Vec<_>>();
        Snapshot {
            at: now,
            cu: d.own_cooldown_until.load(Ordering::Relaxed),
            cm: d.cooldown_ms.load(Ordering::Relaxed),
            ws: c.window_start,
            f: c.fails,
            s: c.successes,
            aws: c.allowed_start,
            af: c.allowed_count,
            inf: d.in_flight.load(Ordering::Relaxed),
            um: u.0,
            ur: u.1,
            ut: u.2,
            lat: list(&l.latency),
            ttft: list(&l.ttft),
        }
    }

    /// Takes in the other instances' snapshots of a deployment: their cooldowns apply here
    /// too, and their counts, usage and samples add to this instance's own.
    pub fn apply_peers(&self, index: usize, peers: &[Snapshot], now: i64) {
        let Some(d) = self.state(index) else {
            return;
        };
        let this_minute = now.div_euclid(60_000);
        let allowed_window = self.settings.cooldown_time.as_millis() as i64;
        let mut sum = Peers {
            usage: (this_minute, 0, 0),
            ..Peers::default()
        };
        for p in peers {
            if p.cu > now {
                d.cooldown_ms.store(p.cm, Ordering::Relaxed);
                d.cooldown_until.fetch_max(p.cu, Ordering::Relaxed);
            }
            if p.ws.is_some_and(|start| now - start < WINDOW_MS) {
                sum.fails += p.f;
                sum.successes += p.s;
            }
            if p.aws.is_some_and(|start| now - start < allowed_window) {
                sum.allowed_fails += p.af;
            }
            if now - p.at < IN_FLIGHT_FRESH_MS {
                sum.in_flight += p.inf;
            }
            if p.um == this_minute {
                sum.usage.1 += p.ur;
                sum.usage.2 += p.ut;
            }
            sum.latency.extend_from_slice(&p.lat);
            sum.ttft.extend_from_slice(&p.ttft);
        }
        *d.peers.lock() = sum;
    }
}

/// The Redis key of a deployment's shared state.
pub fn redis_key(deployment_id: &str) -> String {
    format!("sluice:router:{deployment_id}")
}

/// Starts the background synchronisation of `health` through the Redis at `url`, on a thread
/// of its own (the proxy's threads never run it). `ids`: every deployment's id, by index.
pub fn start(health: Arc<Health>, ids: Vec<String>, url: String) -> anyhow::Result<()> {
    let client =
        redis::Client::open(url.as_str()).map_err(|e| anyhow::anyhow!("invalid Redis URL: {e}"))?;
    let instance = uuid::Uuid::new_v4().simple().to_string();
    std::thread::Builder::new()
        .name("router-sync".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("router state: cannot start its runtime: {e}");
                    return;
                }
            };
            runtime.block_on(sync_forever(health, ids, client, instance));
        })?;
    Ok(())
}

async fn sync_forever(health: Arc<Health>, ids: Vec<String>, client: redis::Client, me: String) {
    let keys: Vec<String> = ids.iter().map(|id| redis_key(id)).collect();
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    // Whether Redis answered last time (logged on each change only).
    let mut up = true;
    loop {
        let result = match conn.as_mut() {
            Some(c) => sync_once(&health, &keys, &me, c).await,
            None => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(REDIS_TIMEOUT)
                    .set_response_timeout(REDIS_TIMEOUT);
                match client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    Ok(mut c) => {
                        let r = sync_once(&health, &keys, &me, &mut c).await;
                        conn = Some(c);
                        r
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) if !up => {
                tracing::info!("router state: Redis answers again; sharing cooldowns and counts");
                up = true;
            }
            Ok(()) => {}
            Err(e) => {
                if up {
                    tracing::warn!(
                        "router state: Redis unreachable ({e}); routing on this instance's own state until it is back"
                    );
                    up = false;
                }
                conn = None;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(SYNC_INTERVAL) => {}
            _ = health.cooled.notified() => {}
        }
    }
}

/// One round trip: writes this instance's snapshots, reads every instance's.
async fn sync_once(
    health: &Health,
    keys: &[String],
    me: &str,
    conn: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<()> {
    let now = crate::clock::now_ms();
    let mut pipe = redis::pipe();
    for (index, key) in keys.iter().enumerate() {
        let snapshot = serde_json::to_string(&health.snapshot(index, now)).unwrap_or_default();
        pipe.hset(key, me, snapshot)
            .ignore()
            .pexpire(key, KEY_TTL_MS)
            .ignore()
            .hgetall(key);
    }
    let all: Vec<std::collections::HashMap<String, String>> = pipe.query_async(conn).await?;
    let now = crate::clock::now_ms();
    for (index, fields) in all.iter().enumerate() {
        let peers: Vec<Snapshot> = fields
            .iter()
            .filter(|(instance, _)| instance.as_str() != me)
            .filter_map(|(_, v)| serde_json::from_str(v).ok())
            .collect();
        health.apply_peers(index, &peers, now);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouterSettings;
    use crate::providers::translate::ErrorClass;
    use crate::routing::FailureFacts;

    fn failure(status: u16) -> FailureFacts {
        FailureFacts {
            status,
            class: ErrorClass::RateLimited,
            retry_after: None,
            group_size: 2,
            deployment_cooldown: None,
            model_from_request: false,
        }
    }

    #[test]
    fn a_peers_cooldown_applies_here_and_is_not_echoed_as_our_own() {
        let a = Health::new(2, RouterSettings::default());
        let b = Health::new(2, RouterSettings::default());
        let now = 1_000_000;
        assert!(a.on_failure(0, &failure(429), now).is_some());
        let from_a = a.snapshot(0, now);
        b.apply_peers(0, &[from_a], now + 10);
        assert!(b.cooling(0, now + 10));
        assert!(!b.cooling(1, now + 10));
        // b republishes only what it decided itself.
        assert_eq!(b.snapshot(0, now + 20).cu, 0);
        // Back when the time is up.
        assert!(!b.cooling(0, now + 5_001));
    }

    #[test]
    fn peers_failures_count_toward_the_failure_rate() {
        let settings = RouterSettings::default();
        let a = Health::new(2, settings.clone());
        let b = Health::new(2, settings);
        let now = 5_000_000;
        let mut e = failure(500);
        e.class = ErrorClass::Unavailable;
        // Three failures on a and two on b: alone, neither reaches LiteLLM's minimum of 5.
        for _ in 0..3 {
            assert!(a.on_failure(0, &e, now).is_none());
        }
        b.apply_peers(0, &[a.snapshot(0, now)], now);
        assert!(b.on_failure(0, &e, now).is_none(), "4 in the fleet");
        assert!(
            b.on_failure(0, &e, now).is_some(),
            "5 failures of 5: cooled down"
        );
    }

    #[test]
    fn a_snapshot_survives_json() {
        let h = Health::new(1, RouterSettings::default());
        h.attempt_started(0, 120_000);
        let s = h.snapshot(0, 120_000);
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!((back.inf, back.ur), (1, 1));
    }
}
