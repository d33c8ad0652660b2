//! What Sluice keeps of each Responses API answer (`POST /v1/responses` with `store`, the
//! default), so that `previous_response_id`, `GET`/`DELETE /v1/responses/{id}` and
//! `.../input_items` work for every provider, and a response is only ever shown to the key that
//! created it. Read by the forwarder before routing (inside Pingora's `request_filter`) and
//! written after delivery, off the request path.
//!
//! A response served by an OpenAI or Azure deployment is kept by that provider: Sluice keeps
//! only which deployment and which key it belongs to. A translated one (any other provider) is
//! kept whole: the Response object, its input items, and the conversation through it as chat
//! messages. With a key store they live in its `sluice_responses` table (so other instances
//! and restarts see them, and a deletion anywhere is seen everywhere), written in the
//! background just after the answer and held in memory until written; without one, in a
//! bounded in-process map. Either way for [`RETENTION`] at most (OpenAI keeps stored responses
//! 30 days).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::Store;

/// How long a stored response can be continued or retrieved.
pub const RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// Responses held in memory at most (the key store holds the rest).
const MEMORY_ENTRIES: u64 = 10_000;

/// One stored response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub id: String,
    /// The creating key's hashed token (`""`: the master key, or no auth configured).
    pub owner: String,
    /// The deployment that answered (`model_id`).
    pub deployment_id: String,
    /// Served by a deployment with the Responses API itself, which keeps the content.
    pub native: bool,
    /// The Response object as the client got it (translated responses).
    #[serde(default)]
    pub response: Value,
    /// The request's input items, with ids (translated responses).
    #[serde(default)]
    pub input_items: Vec<Value>,
    /// The conversation through this response as chat messages: what a request continuing
    /// from it starts with (translated responses).
    #[serde(default)]
    pub messages: Vec<Value>,
    pub created_at_ms: i64,
}

impl StoredResponse {
    /// Whether `caller_key` (a hashed token, `""` for the master key) may see it; proxy admins
    /// see every response.
    pub fn visible_to(&self, caller_key: &str, admin: bool) -> bool {
        admin || self.owner == caller_key
    }
}

/// The key store's table, with the responses not written to it yet in memory (all of them
/// without a key store).
pub struct ResponseStore {
    memory: moka::sync::Cache<String, Arc<StoredResponse>>,
    db: Option<Store>,
}

impl ResponseStore {
    pub fn new(db: Option<Store>) -> ResponseStore {
        ResponseStore {
            memory: moka::sync::Cache::builder()
                .max_capacity(MEMORY_ENTRIES)
                .time_to_live(RETENTION)
                .build(),
            db,
        }
    }

    /// The stored response `id`, if it exists and has not expired.
    pub async fn get(&self, id: &str, now_ms: i64) -> Option<Arc<StoredResponse>> {
        if let Some(hit) = self.memory.get(id) {
            return Some(hit);
        }
        let db = self.db.as_ref()?;
        let found = match db.get_response(id).await {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!("reading stored response {id}: {e}");
                return None;
            }
        };
        // Not cached: another instance may delete it.
        (now_ms - found.created_at_ms <= RETENTION.as_millis() as i64).then(|| Arc::new(found))
    }

    /// Keeps `response`: in memory at once (a request continuing from it on this instance
    /// finds it), in the key store in the background (then memory lets it go).
    pub fn put(self: &Arc<Self>, response: StoredResponse) {
        let response = Arc::new(response);
        self.memory
            .insert(response.id.clone(), Arc::clone(&response));
        if let Some(db) = self.db.clone() {
            let store = Arc::clone(self);
            tokio::spawn(async move {
                match db.insert_response(&response).await {
                    Ok(()) => store.memory.invalidate(&response.id),
                    Err(e) => tracing::warn!("storing response {}: {e}", response.id),
                }
            });
        }
    }

    /// Forgets `id` everywhere; whether the key store held it (or, without one, memory did).
    pub async fn delete(&self, id: &str) -> bool {
        let in_memory = self.memory.remove(id).is_some();
        match &self.db {
            Some(db) => db.delete_response(id).await.unwrap_or(in_memory),
            None => in_memory,
        }
    }
}
