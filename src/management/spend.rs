//! Spend waiting to be written: per-owner increments summed in memory and spend-log rows,
//! drained every `proxy_batch_write_at` seconds by the management runtime (and on SIGTERM).
//! Each instance writes only its own increments, so two instances never count a request twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use filters::identity::KeyIdentity;
use filters::route::Deployment;
use parking_lot::Mutex;
use serde_json::Value;

use super::store::Kind;

/// Spend-log rows kept while the database is down, beyond which the oldest are dropped (spend
/// increments are never dropped: they are one number per owner).
const MAX_QUEUED_LOGS: usize = 1_000_000;

/// A spend-log row as the request queues it (`logging` phase): the request's own figures, and
/// shared references to the key and the deployment, whose columns (hash, owners, metadata,
/// model, provider, api_base) the writer reads from them. Queuing one costs the request two
/// small allocations instead of a copy of every column (about a sixth of the request's CPU
/// went into building, holding and freeing full rows at 20k requests per second).
#[derive(Debug, Clone, Default)]
pub struct SpendEntry {
    pub request_id: String,
    pub call_type: &'static str,
    /// `None`: the master key (or no key at all).
    pub key: Option<Arc<KeyIdentity>>,
    pub deployment: Option<Arc<Deployment>>,
    pub spend: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub start_time: i64,
    pub end_time: i64,
    pub completion_start_time: Option<i64>,
    pub end_user: Option<String>,
    pub requester_ip_address: String,
    pub success: bool,
    /// Answered from the response cache (`cache_hit: True` in the row).
    pub cache_hit: bool,
    /// After a retry or a fallback: the key's metadata with LiteLLM's routing fields added
    /// (`attempted_retries`, `max_retries`, `attempted_fallbacks`, `previous_models`).
    pub routed_metadata: Option<Box<str>>,
    /// A row read back from the spend spool (`spool.rs`): the columns a live row reads from
    /// its key and deployment, as they were when it was spooled.
    pub spooled: Option<Box<SpooledColumns>>,
}

/// The columns of a spooled spend-log row that a live row reads from its key and deployment.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SpooledColumns {
    pub api_key: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub metadata: String,
    /// `(model, model_id, model_group, custom_llm_provider, api_base)`.
    pub deployment: [String; 5],
}

impl SpendEntry {
    /// The `api_key` column: the key's hash, or the master key's for master-key calls.
    pub fn api_key<'a>(&'a self, master_key_hash: &'a str) -> &'a str {
        if let Some(s) = &self.spooled {
            return &s.api_key;
        }
        self.key.as_ref().map_or(master_key_hash, |k| &*k.token)
    }

    pub fn user_id(&self) -> Option<&str> {
        if let Some(s) = &self.spooled {
            return s.user_id.as_deref();
        }
        self.key.as_ref().and_then(|k| k.user_id.as_deref())
    }

    pub fn team_id(&self) -> Option<&str> {
        if let Some(s) = &self.spooled {
            return s.team_id.as_deref();
        }
        self.key.as_ref().and_then(|k| k.team_id.as_deref())
    }

    pub fn metadata(&self) -> &str {
        if let Some(s) = &self.spooled {
            return &s.metadata;
        }
        if let Some(m) = &self.routed_metadata {
            return m;
        }
        self.key.as_ref().map_or("{}", |k| k.log_metadata.as_str())
    }

    /// The deployment's `(model, model_id, model_group, custom_llm_provider, api_base)`.
    pub fn deployment_columns(&self) -> [&str; 5] {
        if let Some(s) = &self.spooled {
            return s.deployment.each_ref().map(String::as_str);
        }
        match &self.deployment {
            Some(d) => [
                d.upstream_model.as_str(),
                d.id.as_str(),
                d.model_name.as_str(),
                d.provider.as_str(),
                d.public_api_base(),
            ],
            None => [""; 5],
        }
    }

    pub fn status(&self) -> &'static str {
        if self.success { "success" } else { "failure" }
    }

    /// The `cache_hit` column, as LiteLLM writes it.
    pub fn cache_hit_text(&self) -> &'static str {
        if self.cache_hit { "True" } else { "False" }
    }
}

/// One batch to write.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// The batch's id (given when it is taken from the queue): the writer records it in
    /// `sluice_spend_batches` in the same transaction and skips a batch already there, so a
    /// batch written again (its first write's answer was lost, it was spooled and read back,
    /// or a replay stopped after its commit) never books its increments twice.
    pub id: Option<String>,
    pub deltas: Vec<(Kind, String, f64)>,
    pub logs: Vec<SpendEntry>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.logs.is_empty()
    }
}

#[derive(Debug, Default)]
struct Pending {
    /// Per kind, per id: looked up by `&str`, so adding to a known owner allocates nothing.
    /// aHash (randomly keyed): SipHash over a 64-character key hash was most of an `add`.
    deltas: HashMap<Kind, HashMap<String, f64, ahash::RandomState>, ahash::RandomState>,
    logs: VecDeque<SpendEntry>,
}

/// Queued rows that make the writer go before its interval is up.
const EARLY_WRITE_ROWS: usize = 5_000;

/// The queue (filled from the `logging` phase).
#[derive(Debug, Default)]
pub struct SpendQueue {
    pending: Mutex<Pending>,
    /// Batches a write failed for, kept whole with their ids (see [`SpendQueue::hold`]).
    held: Mutex<Vec<Batch>>,
    /// Woken when [`EARLY_WRITE_ROWS`] rows are queued.
    pub full: tokio::sync::Notify,
}

impl SpendQueue {
    pub fn add(&self, kind: Kind, id: &str, cost: f64) {
        let mut p = self.pending.lock();
        let of_kind = p.deltas.entry(kind).or_default();
        match of_kind.get_mut(id) {
            Some(d) => *d += cost,
            None => {
                of_kind.insert(id.to_string(), cost);
            }
        }
    }

    pub fn log(&self, row: SpendEntry) {
        let mut p = self.pending.lock();
        if p.logs.len() >= MAX_QUEUED_LOGS {
            p.logs.pop_front();
            tracing::error!("spend-log queue full (database down?): dropping the oldest row");
        }
        p.logs.push_back(row);
        if p.logs.len() == EARLY_WRITE_ROWS {
            self.full.notify_one();
        }
    }

    /// Everything queued so far. The row queue starts again with the capacity the last batch
    /// needed, so a busy gateway does not regrow it row by row after every write.
    pub fn take(&self) -> Batch {
        let mut p = self.pending.lock();
        let deltas: Vec<(Kind, String, f64)> = std::mem::take(&mut p.deltas)
            .into_iter()
            .flat_map(|(k, ids)| ids.into_iter().map(move |(id, d)| (k, id, d)))
            .collect();
        let capacity = p.logs.len().min(EARLY_WRITE_ROWS);
        let logs = std::mem::replace(&mut p.logs, VecDeque::with_capacity(capacity));
        let id = (!deltas.is_empty() || !logs.is_empty())
            .then(|| uuid::Uuid::now_v7().simple().to_string());
        Batch {
            id,
            deltas,
            logs: logs.into(),
        }
    }

    /// Keeps a batch that could not be written (nor spooled) for the next attempt, whole and
    /// with its id: merged back into the queue it would get a new id, and a first write that
    /// committed after all (its answer lost, or given up on) would be booked twice. Past
    /// [`MAX_QUEUED_LOGS`] rows held, the oldest batches lose their spend-log rows (never their
    /// increments, which are one number per owner).
    pub fn hold(&self, batch: Batch) {
        let mut held = self.held.lock();
        held.push(batch);
        let mut rows: usize = held.iter().map(|b| b.logs.len()).sum();
        for b in held.iter_mut() {
            if rows <= MAX_QUEUED_LOGS {
                break;
            }
            rows -= b.logs.len();
            if !b.logs.is_empty() {
                tracing::error!(
                    rows = b.logs.len(),
                    "too many spend-log rows waiting for the database: dropping the oldest batch's rows (its spend is kept)"
                );
            }
            b.logs.clear();
        }
    }

    /// The batches held by [`SpendQueue::hold`], oldest first.
    pub fn take_held(&self) -> Vec<Batch> {
        std::mem::take(&mut *self.held.lock())
    }
}

/// `base` (a metadata JSON object) with `routing`'s fields added.
pub fn with_routing(base: &str, routing: &serde_json::Map<String, Value>) -> Box<str> {
    let mut m = match serde_json::from_str::<Value>(base) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    m.extend(routing.clone());
    Value::Object(m).to_string().into_boxed_str()
}

/// The spend-log `metadata` column: the caller's key fields, as LiteLLM's `user_api_key_*`.
/// Only the fields the key has, and not its hash (the row's `api_key` column holds it): a
/// shorter row is a cheaper insert, once per request.
pub fn metadata_json(k: &KeyIdentity, key_metadata: Option<&Value>) -> String {
    let mut m = serde_json::Map::new();
    for (name, value) in [
        ("user_api_key_alias", &k.key_alias),
        ("user_api_key_user_id", &k.user_id),
        ("user_api_key_team_id", &k.team_id),
        ("user_api_key_team_alias", &k.team_alias),
        ("user_api_key_org_id", &k.organization_id),
    ] {
        if let Some(v) = value {
            m.insert(name.into(), Value::String(v.clone()));
        }
    }
    if let Some(v) = key_metadata.filter(|v| v.as_object().is_some_and(|o| !o.is_empty())) {
        m.insert("user_api_key_metadata".into(), v.clone());
    }
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_sum_and_survive_a_failed_write() {
        let q = SpendQueue::default();
        q.add(Kind::Key, "k", 0.5);
        q.add(Kind::Key, "k", 0.25);
        q.add(Kind::Team, "t", 1.0);
        q.log(SpendEntry {
            request_id: "r1".into(),
            ..SpendEntry::default()
        });
        let batch = q.take();
        assert_eq!(batch.logs.len(), 1);
        let key: f64 = batch
            .deltas
            .iter()
            .filter(|(k, id, _)| *k == Kind::Key && id == "k")
            .map(|(_, _, d)| d)
            .sum();
        assert_eq!(key, 0.75);
        assert!(q.take().is_empty());
        q.add(Kind::Key, "k", 1.0);
        q.log(SpendEntry {
            request_id: "r2".into(),
            ..SpendEntry::default()
        });
        let id = batch.id.clone();
        assert!(id.is_some());
        q.hold(batch);
        // A held batch comes back whole, with its id; the queue goes on on its own.
        let held = q.take_held();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].id, id);
        assert_eq!(held[0].logs[0].request_id, "r1");
        assert!(q.take_held().is_empty());
        let again = q.take();
        assert_ne!(again.id, id);
        let key: f64 = again
            .deltas
            .iter()
            .filter(|(k, _, _)| *k == Kind::Key)
            .map(|(_, _, d)| d)
            .sum();
        assert_eq!(key, 1.0);
        let ids: Vec<_> = again.logs.iter().map(|l| l.request_id.as_str()).collect();
        assert_eq!(ids, ["r2"]);
    }
}
