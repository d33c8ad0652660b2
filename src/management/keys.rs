//! Virtual-key lookup for the auth filter (`request_filter`, pre-body): a bounded in-process
//! cache in front of the database, so the hot path does not touch it. The change feed drops
//! entries when a key, its team or its user changes, on every instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use filters::ApiError;
use filters::auth::{INVALID_KEY_MESSAGE, KeyResolver, hash_key_hex};
use filters::identity::{KeyIdentity, Limits};
use moka::sync::Cache;

use super::identity::{Unusable, build};
use super::redis_ledger::CachedKey;
use super::store::Kind;
use super::{Management, no_db_error};
use crate::clock;

/// Keys kept in memory per instance.
const MAX_KEYS: u64 = 100_000;
/// How long a key lookup may wait for the database when this instance can answer from the
/// key's last known state instead (`allow_requests_on_db_unavailable`): an outage the health
/// check has not noticed yet costs a request this much, not `database_connection_timeout`.
const LOOKUP_PATIENCE_WITH_FALLBACK: Duration = Duration::from_secs(2);

#[derive(Clone)]
enum Cached {
    Key(Arc<KeyIdentity>),
    /// Blocked key or team: the error, and the team it depends on.
    Refused(ApiError, Option<String>),
}

/// Resolved keys and end-user budgets.
pub struct KeyCache {
    /// By key hash, hashed with aHash (randomly keyed): SipHash over the 64-character token
    /// was most of a lookup.
    keys: Cache<String, Cached, ahash::RandomState>,
    /// Hashes no key has (so a flood of bad keys does not reach the database); a new key
    /// drops its hash through the change feed.
    unknown: Cache<String, ()>,
    end_users: Cache<String, Option<Arc<Limits>>>,
    /// The last identity of every key dropped from `keys` because something changed: served
    /// only while the database cannot be asked (`allow_requests_on_db_unavailable`).
    last_known: Cache<String, Arc<KeyIdentity>>,
    /// Bumped by every invalidation: a lookup that raced with one does not cache its result.
    generation: AtomicU64,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl KeyCache {
    /// `ttl`: a cached key is re-read after this long even when no change was seen
    /// (`general_settings.user_api_key_cache_ttl`, LiteLLM's 60 s by default), a backstop for a
    /// change-feed entry missed in any way.
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            keys: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(ttl)
                .build_with_hasher(ahash::RandomState::new()),
            unknown: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(Duration::from_secs(60))
                .build(),
            end_users: Cache::new(MAX_KEYS),
            last_known: Cache::builder()
                .max_capacity(MAX_KEYS)
                .support_invalidation_closures()
                .build(),
            generation: AtomicU64::new(0),
        }
    }

    /// A key that was deleted or blocked must not come back from `last_known`.
    pub fn forget_last_known(&self, token: &str) {
        self.last_known.invalidate(token);
    }

    /// Last-known keys of a team that was deleted or blocked.
    pub fn forget_team(&self, team: &str) {
        let _ = self.last_known.invalidate_entries_if({
            let team = team.to_string();
            move |_, k| k.team_id.as_deref() == Some(&team)
        });
    }

    fn drop_key(&self, token: &str) {
        if let Some(Cached::Key(id)) = self.keys.remove(token) {
            self.last_known.insert(token.to_string(), id);
        }
    }

    pub fn invalidate(&self, kind: Kind, id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        match kind {
            Kind::Key => {
                self.drop_key(id);
                self.unknown.invalidate(id);
            }
            // A team's or user's limits are copied into each of its keys' identities: drop
            // those keys (a scan, but teams and users change rarely).
            Kind::Team | Kind::User => {
                let affected: Vec<Arc<String>> = self
                    .keys
                    .iter()
                    .filter(|(_, cached)| match cached {
                        Cached::Key(k) => match kind {
                            Kind::Team => k.team_id.as_deref() == Some(id),
                            _ => k.user_id.as_deref() == Some(id),
                        },
                        Cached::Refused(_, team) => team.as_deref() == Some(id),
                    })
                    .map(|(token, _)| token)
                    .collect();
                for token in affected {
                    self.drop_key(&token);
                }
            }
            Kind::EndUser => self.end_users.invalidate(id),
            Kind::Budget => {}
        }
    }

    pub fn end_user(&self, id: &str) -> Option<Option<Arc<Limits>>> {
        self.end_users.get(id)
    }

    pub fn put_end_user(&self, id: &str, limits: Option<Arc<Limits>>) {
        self.end_users.insert(id.to_string(), limits);
    }
}

fn blocked_error() -> ApiError {
    ApiError::unauthorized(
        "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin.",
    )
}

fn team_blocked_error(team: &str) -> ApiError {
    ApiError::unauthorized(format!(
        "Authentication Error, Team={team} is blocked. Update via `/team/unblock` if you're an admin."
    ))
}

fn check_expiry(id: &Arc<KeyIdentity>) -> Result<(), ApiError> {
    let now = clock::now_ms();
    match id.expires_at {
        Some(e) if e <= now => Err(ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            "expired_key",
            format!(
                "Authentication Error - Expired Key. Key Expiry time {} and current time {}",
                clock::iso(e),
                clock::iso(now)
            ),
        )
        .with_param("None")),
        _ => Ok(()),
    }
}

/// The auth filter's view of the key store.
pub struct StoreKeys {
    pub mgmt: Arc<Management>,
}

#[async_trait]
impl KeyResolver for StoreKeys {
    async fn resolve(&self, raw: &str) -> Result<Arc<KeyIdentity>, ApiError> {
        let m = &self.mgmt;
        if !m.db_up() && !m.settings.allow_requests_on_db_unavailable {
            return Err(no_db_error());
        }
        let token = hash_key_hex(raw);
        if let Some(cached) = m.keys.keys.get(&token) {
            return match cached {
                Cached::Key(id) => check_expiry(&id).map(|()| id),
                Cached::Refused(e, _) => Err(e),
            };
        }
        if m.keys.unknown.contains_key(&token) {
            return Err(ApiError::invalid_key(INVALID_KEY_MESSAGE));
        }
        let fallback = m
            .settings
            .allow_requests_on_db_unavailable
            .then(|| m.keys.last_known.get(&token))
            .flatten();
        if !m.db_up() {
            // The database is known to be down (allow_requests_on_db_unavailable, else the
            // first check refused): answer from what is known now instead of waiting for a
            // connection that will not come.
            if let Some(id) = fallback {
                return check_expiry(&id).map(|()| id);
            }
            let shared = match m.redis() {
                Some(r) => r.cached_key(&token).await,
                None => None,
            };
            return match shared.map(|e| build(&e.key, e.team.as_ref(), e.user.as_ref())) {
                Some(Ok(id)) => {
                    let id = Arc::new(id);
                    m.keys.last_known.insert(token, id.clone());
                    check_expiry(&id).map(|()| id)
                }
                Some(Err(Unusable::KeyBlocked)) => Err(blocked_error()),
                Some(Err(Unusable::TeamBlocked(team))) => Err(team_blocked_error(&team)),
                None => Err(m.db_unavailable_error()),
            };
        }
        let generation = m.keys.generation.load(Ordering::SeqCst);
        let lookup = token.clone();
        let patience = if fallback.is_some() {
            LOOKUP_PATIENCE_WITH_FALLBACK
        } else {
            m.settings.connect_timeout + Duration::from_secs(1)
        };
        let loaded = m.run(move |m| async move {
            tokio::time::timeout(patience, async move {
                // Another instance may have read this key already (Redis, when configured).
                let seq = m.newest_change.load(Ordering::SeqCst);
                if let Some(r) = m.redis()
                    && let Some(e) = r.cached_key(&lookup).await
                {
                    return Ok(Some(build(&e.key, e.team.as_ref(), e.user.as_ref())));
                }
                // The entry's versions: what this instance applied of the feed, or, per object,
                // the newest change of the key, its team and its user when the feed has not
                // caught up (a key used right after it was created or updated).
                let versions = match m.redis() {
                    Some(_) => m.store.key_versions(&lookup).await?.map(|v| v.max(seq)),
                    None => [seq; 3],
                };
                let Some(key) = m.store.get(Kind::Key, &lookup).await? else {
                    return Ok(None);
                };
                let team = match &key.team_id {
                    Some(t) => m.store.get(Kind::Team, t).await?,
                    None => None,
                };
                let user = match &key.user_id {
                    Some(u) => m.store.get(Kind::User, u).await?,
                    None => None,
                };
                let built = build(&key, team.as_ref(), user.as_ref());
                if let Some(r) = m.redis() {
                    let entry = CachedKey {
                        seq,
                        key_seq: versions[0],
                        team_seq: versions[1],
                        user_seq: versions[2],
                        team_id: key.team_id.clone(),
                        user_id: key.user_id.clone(),
                        key,
                        team,
                        user,
                    };
                    r.cache_key(&lookup, &entry).await;
                }
                Ok::<_, super::store::StoreError>(Some(built))
            })
            .await
        });
        let loaded = loaded.await.and_then(Result::ok);
        match loaded {
            Some(Ok(None)) => {
                m.keys.last_known.invalidate(&token);
                if m.keys.generation.load(Ordering::SeqCst) == generation {
                    m.keys.unknown.insert(token.clone(), ());
                }
                Err(ApiError::invalid_key(INVALID_KEY_MESSAGE))
            }
            Some(Ok(Some(Ok(id)))) => {
                let id = Arc::new(id);
                // Cached only when no change arrived while the database was read (it may
                // predate the change).
                if m.keys.generation.load(Ordering::SeqCst) == generation {
                    m.keys.keys.insert(token.clone(), Cached::Key(id.clone()));
                }
                m.keys.last_known.insert(token, id.clone());
                check_expiry(&id).map(|()| id)
            }
            Some(Ok(Some(Err(unusable)))) => {
                let (e, team) = match unusable {
                    Unusable::KeyBlocked => (blocked_error(), None),
                    Unusable::TeamBlocked(team) => (team_blocked_error(&team), Some(team)),
                };
                m.keys.last_known.invalidate(&token);
                if m.keys.generation.load(Ordering::SeqCst) == generation {
                    m.keys.keys.insert(token, Cached::Refused(e.clone(), team));
                }
                Err(e)
            }
            failed => {
                if let Some(Err(e)) = failed {
                    tracing::error!("key lookup failed: {e}");
                }
                // The database cannot be asked: a key this instance knew keeps working when
                // the operator chose availability.
                if let Some(id) = fallback {
                    return check_expiry(&id).map(|()| id);
                }
                Err(m.db_unavailable_error())
            }
        }
    }
}
