//! Virtual-key lookup for the auth filter (`request_filter`, pre-body): a bounded in-process
//! cache in front of the database, so the hot path does not touch it. The change feed drops
//! entries when a key, its team or its user changes, on every instance.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use filters::ApiError;
use filters::auth::{INVALID_KEY_MESSAGE, KeyResolver, hash_key_hex};
use filters::identity::{KeyIdentity, Limits};
use moka::sync::Cache;

use super::identity::{Unusable, build};
use super::store::Kind;
use super::{Management, clock, no_db_error};

/// Keys kept in memory per instance.
const MAX_KEYS: u64 = 100_000;

#[derive(Clone)]
enum Cached {
    Key(Arc<KeyIdentity>),
    Refused(ApiError),
}

/// Resolved keys and end-user budgets.
pub struct KeyCache {
    keys: Cache<String, Cached>,
    /// Hashes no key has (so a flood of bad keys does not reach the database); a new key
    /// drops its hash through the change feed.
    unknown: Cache<String, ()>,
    end_users: Cache<String, Option<Limits>>,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyCache {
    pub fn new() -> KeyCache {
        KeyCache {
            keys: Cache::new(MAX_KEYS),
            unknown: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(Duration::from_secs(60))
                .build(),
            end_users: Cache::new(MAX_KEYS),
        }
    }

    pub fn invalidate(&self, kind: Kind, id: &str) {
        match kind {
            Kind::Key => {
                self.keys.invalidate(id);
                self.unknown.invalidate(id);
            }
            // A team's or user's limits are copied into each of its keys' identities.
            Kind::Team | Kind::User => self.keys.invalidate_all(),
            Kind::EndUser => self.end_users.invalidate(id),
            Kind::Budget => {}
        }
    }

    pub fn end_user(&self, id: &str) -> Option<Option<Limits>> {
        self.end_users.get(id)
    }

    pub fn put_end_user(&self, id: &str, limits: Option<Limits>) {
        self.end_users.insert(id.to_string(), limits);
    }
}

fn blocked_error() -> ApiError {
    ApiError::unauthorized(
        "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin.",
    )
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
                Cached::Refused(e) => Err(e),
            };
        }
        if m.keys.unknown.contains_key(&token) {
            return Err(ApiError::unauthorized(INVALID_KEY_MESSAGE));
        }
        let lookup = token.clone();
        let loaded = m
            .run(move |m| async move {
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
                Ok::<_, super::store::StoreError>(Some(build(&key, team.as_ref(), user.as_ref())))
            })
            .await;
        match loaded {
            Some(Ok(None)) => {
                m.keys.unknown.insert(token, ());
                Err(ApiError::unauthorized(INVALID_KEY_MESSAGE))
            }
            Some(Ok(Some(Ok(id)))) => {
                let id = Arc::new(id);
                m.keys.keys.insert(token, Cached::Key(id.clone()));
                check_expiry(&id).map(|()| id)
            }
            Some(Ok(Some(Err(unusable)))) => {
                let e = match unusable {
                    Unusable::KeyBlocked => blocked_error(),
                    Unusable::TeamBlocked(team) => ApiError::unauthorized(format!(
                        "Authentication Error, Team={team} is blocked. Update via `/team/unblock` if you're an admin."
                    )),
                };
                m.keys.keys.insert(token, Cached::Refused(e.clone()));
                Err(e)
            }
            Some(Err(e)) => {
                tracing::error!("key lookup failed: {e}");
                Err(no_db_error())
            }
            None => Err(no_db_error()),
        }
    }
}
