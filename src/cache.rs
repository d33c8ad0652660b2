//! The response cache (`litellm_settings.cache: true` with `cache_params`): exact-match answers
//! of chat completions, in a bounded in-process layer and, for `type: redis`, in Redis shared
//! by every instance. Looked up after the body is read and the model group known, before
//! admission and the provider (inside Pingora's `request_filter`); written after a successful
//! delivery, off the request path.
//!
//! The key is a BLAKE3 hash of the model group and every member of the request that can change
//! the answer, in a canonical form (object keys sorted at every depth), so JSON key order and
//! whitespace never matter; `stream` and `stream_options` are left out, so one entry answers
//! both a streamed and a whole request (LiteLLM keys them apart). An in-process copy never
//! outlives the TTL it was written with.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::clock;
use crate::config::CacheSettings;

/// Request members that never change the answer: the stream framing, LiteLLM's own controls
/// and bookkeeping.
const NOT_IN_KEY: [&str; 5] = ["stream", "stream_options", "metadata", "cache", "caching"];
/// In-process entries weigh their body's bytes; the layer holds this many bytes at most.
const MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// Entries larger than this are not stored (LiteLLM's in-memory cache skips items over 1 MB).
const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// How long an identical request waits for the one in flight before calling the provider
/// itself (long streams take minutes).
pub const SINGLE_FLIGHT_WAIT: Duration = Duration::from_secs(300);
/// The cross-instance lock's life: renewed by nothing, so a crashed leader blocks no one long.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// How often a request waiting on another instance's call looks for its answer.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// A request's cache controls (LiteLLM's body `cache` object and `caching`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Controls {
    /// `no-cache`: skip the lookup (still store).
    pub no_cache: bool,
    /// `no-store`: skip the write.
    pub no_store: bool,
    /// `ttl`: the write's time to live.
    pub ttl: Option<Duration>,
    /// `s-maxage`: the oldest entry accepted.
    pub max_age: Option<Duration>,
    /// `namespace`: the key's prefix.
    pub namespace: Option<String>,
    /// `use-cache: true`: opt in under `mode: default_off`.
    pub use_cache: bool,
    /// `caching: false`: skip the lookup.
    pub caching_off: bool,
    /// The names the request's `cache` object used (for `allowed_cache_controls`).
    pub names: Vec<String>,
}

impl Controls {
    /// Reads the body's `cache` object.
    pub fn read_cache(&mut self, cache: &Value) {
        let get = |name: &str| cache.get(name);
        let seconds = |v: Option<&Value>| {
            v.and_then(Value::as_f64)
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
        };
        self.no_cache = get("no-cache").and_then(Value::as_bool) == Some(true);
        self.no_store = get("no-store").and_then(Value::as_bool) == Some(true);
        self.ttl = seconds(get("ttl"));
        self.max_age = seconds(get("s-maxage").or_else(|| get("s-max-age")));
        self.namespace = get("namespace").and_then(Value::as_str).map(str::to_owned);
        self.use_cache = get("use-cache").and_then(Value::as_bool) == Some(true);
        self.names = cache
            .as_object()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
    }
}

/// What the cache does for one request: its key, whether to look it up and whether to store
/// its answer (and for how long).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub key: String,
    pub read: bool,
    pub write: bool,
    pub ttl: Duration,
    pub max_age: Option<Duration>,
}

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    /// The chat completion as the client got it.
    pub body: Bytes,
    pub stored_at_ms: i64,
    pub expires_at_ms: i64,
}

/// The cache: its settings, the in-process layer and the Redis layer.
pub struct ResponseCache {
    settings: CacheSettings,
    memory: moka::sync::Cache<String, Arc<Entry>>,
    /// Keys whose answer one request of this instance is fetching: the others wait for it.
    flights:
        parking_lot::Mutex<std::collections::HashMap<String, tokio::sync::watch::Receiver<()>>>,
    redis: Option<tokio::sync::OnceCell<Option<redis::aio::ConnectionManager>>>,
    /// Redis answered the last time (errors are logged once per outage).
    redis_up: AtomicBool,
}

impl ResponseCache {
    pub fn new(settings: CacheSettings) -> ResponseCache {
        let memory = moka::sync::Cache::builder()
            .max_capacity(MEMORY_BYTES)
            .weigher(|_: &String, e: &Arc<Entry>| {
                u32::try_from(e.body.len() + 64).unwrap_or(u32::MAX)
            })
            .build();
        let redis = settings
            .redis_url
            .is_some()
            .then(tokio::sync::OnceCell::new);
        ResponseCache {
            settings,
            memory,
            flights: Default::default(),
            redis,
            redis_up: AtomicBool::new(true),
        }
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// The plan for a request to `group` with this `body` (its controls already taken out);
    /// `None` when the cache does not apply (mode `default_off` without `use-cache`, more
    /// messages than `max_messages`). `scope` isolates entries (`cache_params.scope: key |
    /// team`): the key's or team's id, or `""` for the global scope.
    pub fn plan(
        &self,
        group: &str,
        scope: &str,
        body: &Map<String, Value>,
        controls: &Controls,
    ) -> Option<Plan> {
        if !self.settings.default_on && !controls.use_cache {
            return None;
        }
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if messages > self.settings.max_messages {
            return None;
        }
        let namespace = controls
            .namespace
            .as_deref()
            .or(self.settings.namespace.as_deref());
        let hash = if scope.is_empty() {
            key_hash(group, body)
        } else {
            key_hash(&format!("{group}\0scope\0{scope}"), body)
        };
        let key = match namespace {
            Some(ns) => format!("{ns}:{hash}"),
            None => hash,
        };
        Some(Plan {
            key,
            read: !controls.no_cache && !controls.caching_off,
            write: !controls.no_store,
            ttl: controls.ttl.unwrap_or(self.settings.ttl()),
            max_age: controls.max_age,
        })
    }

    /// The entry for `plan`, from memory, else Redis (copied into memory for what is left of
    /// its TTL). Expired entries and entries older than `s-maxage` are misses.
    pub async fn get(&self, plan: &Plan) -> Option<Arc<Entry>> {
        let now = clock::now_ms();
        let fresh = |e: &Entry| {
            e.expires_at_ms > now
                && plan
                    .max_age
                    .is_none_or(|age| now - e.stored_at_ms <= age.as_millis() as i64)
        };
        if let Some(e) = self.memory.get(&plan.key) {
            if fresh(&e) {
                return Some(e);
            }
            if e.expires_at_ms <= now {
                self.memory.invalidate(&plan.key);
            }
        }
        let mut conn = self.redis().await?;
        let stored: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
            .arg(self.redis_key(&plan.key))
            .query_async(&mut conn)
            .await;
        let raw = self.redis_result(stored)??;
        let entry = Arc::new(decode_entry(&raw)?);
        if entry.expires_at_ms <= now {
            return None;
        }
        self.memory.insert(plan.key.clone(), Arc::clone(&entry));
        fresh(&entry).then_some(entry)
    }

    /// Stores `body` (a complete chat completion) under `plan`: in memory at once, in Redis in
    /// the background.
    pub fn put(self: &Arc<Self>, plan: &Plan, body: Bytes) {
        if body.len() > MAX_ENTRY_BYTES || plan.ttl.is_zero() {
            return;
        }
        let now = clock::now_ms();
        let entry = Arc::new(Entry {
            body,
            stored_at_ms: now,
            expires_at_ms: now + plan.ttl.as_millis() as i64,
        });
        self.memory.insert(plan.key.clone(), Arc::clone(&entry));
        if self.redis.is_some() {
            let cache = Arc::clone(self);
            let key = cache.redis_key(&plan.key);
            let ttl = plan.ttl.as_secs().max(1);
            tokio::spawn(async move {
                let Some(mut conn) = cache.redis().await else {
                    return;
                };
                let done: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(key)
                    .arg(encode_entry(&entry))
                    .arg("EX")
                    .arg(ttl)
                    .query_async(&mut conn)
                    .await;
                cache.redis_result(done);
            });
        }
    }

    /// Single flight for a key that missed: the first request becomes the one that calls the
    /// provider ([`Flight`], held until its answer is stored or it failed); an identical one
    /// arriving meanwhile waits for it (on this instance, or with Redis on another one holding
    /// the key's lock), up to [`SINGLE_FLIGHT_WAIT`], then looks again. `Ok(flight)`: go ahead
    /// and call; `Err(entry)`: the answer that arrived while waiting.
    pub async fn fly(self: &Arc<Self>, plan: &Plan) -> Result<Option<Flight>, Arc<Entry>> {
        let deadline = tokio::time::Instant::now() + SINGLE_FLIGHT_WAIT;
        loop {
            // Decided under the lock, awaited after it.
            let joined = {
                let mut flights = self.flights.lock();
                match flights.get(&plan.key) {
                    Some(rx) => Err(rx.clone()),
                    None => {
                        let (tx, rx) = tokio::sync::watch::channel(());
                        flights.insert(plan.key.clone(), rx);
                        Ok(tx)
                    }
                }
            };
            let waiting = match joined {
                Err(rx) => Some(rx),
                Ok(tx) => {
                    let lock = self.lock_elsewhere(plan).await;
                    return match lock {
                        Lock::Held => Ok(Some(Flight {
                            cache: Arc::clone(self),
                            key: plan.key.clone(),
                            redis_lock: self.redis.is_some(),
                            _done: tx,
                        })),
                        Lock::Answered(entry) => {
                            self.flights.lock().remove(&plan.key);
                            Err(entry)
                        }
                        Lock::TimedOut => {
                            self.flights.lock().remove(&plan.key);
                            Ok(None)
                        }
                    };
                }
            };
            let Some(mut rx) = waiting else { continue };
            // The sender is dropped when the call in flight ends: `changed` then errs.
            let ended = tokio::time::timeout_at(deadline, rx.changed()).await;
            if let Some(entry) = self.get(plan).await {
                return Err(entry);
            }
            if ended.is_err() {
                return Ok(None);
            }
        }
    }

    /// With Redis: takes the key's lock (`SET NX PX`), or, when another instance holds it,
    /// waits for its answer to appear or the lock to go. Without Redis (or with it down), the
    /// lock is this instance's alone.
    async fn lock_elsewhere(&self, plan: &Plan) -> Lock {
        let Some(mut conn) = self.redis().await else {
            return Lock::Held;
        };
        let lock = format!("sluice:cache:lock:{}", plan.key);
        let deadline = tokio::time::Instant::now() + SINGLE_FLIGHT_WAIT;
        loop {
            let taken: redis::RedisResult<Option<String>> = redis::cmd("SET")
                .arg(&lock)
                .arg(std::process::id())
                .arg("NX")
                .arg("PX")
                .arg(LOCK_TTL.as_millis() as u64)
                .query_async(&mut conn)
                .await;
            match self.redis_result(taken) {
                None | Some(Some(_)) => return Lock::Held,
                Some(None) => {}
            }
            tokio::time::sleep(LOCK_POLL).await;
            if let Some(entry) = self.get(plan).await {
                return Lock::Answered(entry);
            }
            if tokio::time::Instant::now() > deadline {
                return Lock::TimedOut;
            }
        }
    }

    /// `/cache/ping`: Redis answers `PING` and takes a test entry (no Redis: always healthy).
    pub async fn ping(&self) -> Result<(), String> {
        let Some(url) = &self.settings.redis_url else {
            return Ok(());
        };
        let mut conn = self
            .redis()
            .await
            .ok_or_else(|| format!("Redis at {} is unreachable", redacted(url)))?;
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _: () = redis::cmd("SET")
            .arg("sluice:cache:health-check")
            .arg(pong)
            .arg("EX")
            .arg(60)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// `/cache/delete`: the entries of these keys (as `x-litellm-cache-key` names them), in
    /// memory and in Redis.
    pub async fn delete(&self, keys: &[String]) -> Result<(), String> {
        for key in keys {
            self.memory.invalidate(key);
        }
        if self.redis.is_none() || keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis().await.ok_or("Redis is unreachable")?;
        let mut del = redis::cmd("DEL");
        for key in keys {
            del.arg(self.redis_key(key));
        }
        let _: i64 = del
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// `/cache/flushall`: every entry, in memory and Sluice's keys in Redis (never the rest of
    /// the database, which LiteLLM's `FLUSHALL` empties). How many Redis keys went.
    pub async fn flush(&self) -> Result<u64, String> {
        self.memory.invalidate_all();
        if self.redis.is_none() {
            return Ok(0);
        }
        let mut conn = self.redis().await.ok_or("Redis is unreachable")?;
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("sluice:cache:*")
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// `/cache/redis/info`: `INFO` and `CLIENT LIST`.
    pub async fn redis_info(&self) -> Result<(String, String), String> {
        let mut conn = self.redis().await.ok_or("Redis is unreachable")?;
        let info: String = redis::cmd("INFO")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok((info, clients))
    }

    /// `sluice:cache:<key>`: Sluice's namespace in a Redis it may share.
    fn redis_key(&self, key: &str) -> String {
        format!("sluice:cache:{key}")
    }

    async fn redis(&self) -> Option<redis::aio::ConnectionManager> {
        let cell = self.redis.as_ref()?;
        let url = self.settings.redis_url.as_deref()?;
        cell.get_or_init(|| async move {
            let client = redis::Client::open(url).ok()?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Duration::from_millis(500))
                .set_response_timeout(Duration::from_millis(500))
                .set_number_of_retries(1);
            match redis::aio::ConnectionManager::new_with_config(client, config).await {
                Ok(conn) => Some(conn),
                Err(e) => {
                    tracing::warn!("response cache: Redis is unreachable ({e}); memory only");
                    None
                }
            }
        })
        .await
        .clone()
    }

    /// A Redis answer, with failures logged once per outage: the cache then acts as a miss.
    fn redis_result<T>(&self, r: redis::RedisResult<T>) -> Option<T> {
        match r {
            Ok(v) => {
                if !self.redis_up.swap(true, Ordering::Relaxed) {
                    tracing::info!("response cache: Redis answers again");
                }
                Some(v)
            }
            Err(e) => {
                if self.redis_up.swap(false, Ordering::Relaxed) {
                    tracing::warn!("response cache: Redis failed ({e}); serving without it");
                }
                None
            }
        }
    }
}

/// A Redis URL without its password.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// What taking a key's cross-instance lock came to.
enum Lock {
    Held,
    /// Another instance's call stored the answer meanwhile.
    Answered(Arc<Entry>),
    TimedOut,
}

/// The one call in flight for a key: while it lives, identical requests wait. Dropped once its
/// answer is stored (or the call failed): the waiters look again.
pub struct Flight {
    cache: Arc<ResponseCache>,
    key: String,
    redis_lock: bool,
    _done: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight").field("key", &self.key).finish()
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.cache.flights.lock().remove(&self.key);
        if self.redis_lock {
            let cache = Arc::clone(&self.cache);
            let lock = format!("sluice:cache:lock:{}", self.key);
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Some(mut conn) = cache.redis().await {
                        let r: redis::RedisResult<()> =
                            redis::cmd("DEL").arg(lock).query_async(&mut conn).await;
                        cache.redis_result(r);
                    }
                });
            }
        }
    }
}

/// `stored_at_ms`, `expires_at_ms` (8 bytes each, little-endian), then the body.
fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + e.body.len());
    out.extend_from_slice(&e.stored_at_ms.to_le_bytes());
    out.extend_from_slice(&e.expires_at_ms.to_le_bytes());
    out.extend_from_slice(&e.body);
    out
}

fn decode_entry(raw: &[u8]) -> Option<Entry> {
    let stored_at_ms = i64::from_le_bytes(raw.get(..8)?.try_into().ok()?);
    let expires_at_ms = i64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
    Some(Entry {
        body: Bytes::copy_from_slice(raw.get(16..)?),
        stored_at_ms,
        expires_at_ms,
    })
}

/// The hash of `group` and the answer-changing members of `body`, canonical: members sorted by
/// name at every depth, each written as compact JSON, with separators no JSON text contains.
pub fn key_hash(group: &str, body: &Map<String, Value>) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(group.as_bytes());
    hasher.update(b"\0");
    let mut names: Vec<&String> = body
        .keys()
        .filter(|k| !NOT_IN_KEY.contains(&k.as_str()) && k.as_str() != "model")
        .collect();
    names.sort();
    let mut text = Vec::new();
    for name in names {
        text.clear();
        canonical(&body[name.as_str()], &mut text);
        hasher.update(name.as_bytes());
        hasher.update(b"\0");
        hasher.update(&text);
        hasher.update(b"\0");
    }
    hasher.finalize().to_hex().to_string()
}

/// Compact JSON with object members sorted by name.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(&serde_json::to_vec(scalar).unwrap_or_default()),
    }
}

/// Whether a chat completion may be stored: it has choices with content or tool calls, and
/// none was cut at its token limit or filtered.
pub fn storable(answer: &Value) -> bool {
    let Some(choices) = answer["choices"].as_array().filter(|c| !c.is_empty()) else {
        return false;
    };
    choices.iter().all(|c| {
        let message = &c["message"];
        let has_output = message["content"].as_str().is_some_and(|t| !t.is_empty())
            || message["tool_calls"]
                .as_array()
                .is_some_and(|t| !t.is_empty());
        has_output && matches!(c["finish_reason"].as_str(), Some("stop" | "tool_calls"))
    })
}

/// A cached chat completion as this request's answer: a fresh id, now, the model it asked for.
pub fn hit_body(stored: &[u8], requested_model: &str) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(stored).ok()?;
    v["id"] = json!(format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()));
    v["created"] = json!(clock::now_ms() / 1000);
    v["model"] = json!(requested_model);
    Some(v)
}

/// A cached chat completion replayed as an OpenAI stream, as LiteLLM replays hits: the role,
/// the content in word-sized pieces, the tool calls, the finish reason, usage when asked, and
/// `[DONE]`.
pub fn replay_stream(answer: &Value, include_usage: bool) -> Bytes {
    let base = |choices: Value| {
        json!({"id": answer["id"], "object": "chat.completion.chunk", "created": answer["created"],
            "model": answer["model"], "choices": choices})
    };
    let mut out = Vec::new();
    let mut event = |v: Value| {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    };
    for choice in answer["choices"].as_array().into_iter().flatten() {
        let index = choice["index"].clone();
        let message = &choice["message"];
        event(base(
            json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        ));
        if let Some(reasoning) = message["reasoning_content"].as_str() {
            event(base(
                json!([{"index": index, "delta": {"reasoning_content": reasoning}, "finish_reason": null}]),
            ));
        }
        if let Some(text) = message["content"].as_str() {
            for piece in word_pieces(text) {
                event(base(
                    json!([{"index": index, "delta": {"content": piece}, "finish_reason": null}]),
                ));
            }
        }
        for (i, call) in message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            event(base(
                json!([{"index": index, "delta": {"tool_calls": [{"index": i, "id": call["id"],
                "type": "function", "function": call["function"]}]}, "finish_reason": null}]),
            ));
        }
        event(base(
            json!([{"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}]),
        ));
    }
    if include_usage {
        let mut chunk = base(json!([]));
        chunk["usage"] = answer["usage"].clone();
        event(chunk);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Bytes::from(out)
}

/// `text` cut after each run of whitespace that follows a word (LiteLLM's `\s*\S+\s*`).
fn word_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut seen_word = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !c.is_whitespace() {
            seen_word = true;
        }
        let next_starts_word = chars.peek().is_some_and(|(_, n)| !n.is_whitespace());
        if seen_word && c.is_whitespace() && next_starts_word {
            pieces.push(&text[start..i + c.len_utf8()]);
            start = i + c.len_utf8();
            seen_word = false;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Builds the chat completion a stream amounted to from its OpenAI chunks (the client's
/// bytes), so a streamed answer can be stored once it completed.
#[derive(Debug, Default)]
pub struct StreamAssembler {
    pending: Vec<u8>,
    id: Value,
    model: Value,
    created: Value,
    content: String,
    reasoning: String,
    /// (id, name, arguments) per tool call index.
    calls: Vec<(Value, Value, String)>,
    finish: Option<String>,
    usage: Value,
    done: bool,
    broken: bool,
}

impl StreamAssembler {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = memchr::memmem::find(&self.pending, b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            self.event(&event);
        }
    }

    fn event(&mut self, event: &[u8]) {
        let Some(data) = event
            .split(|b| *b == b'\n')
            .find_map(|line| line.strip_prefix(b"data: "))
        else {
            return;
        };
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            self.broken = true;
            return;
        };
        if v.get("error").is_some() {
            self.broken = true;
            return;
        }
        if self.id.is_null() {
            (self.id, self.model, self.created) =
                (v["id"].clone(), v["model"].clone(), v["created"].clone());
        }
        if v["usage"].is_object() {
            self.usage = v["usage"].clone();
        }
        let Some(choice) = v["choices"].get(0) else {
            return;
        };
        if choice["index"].as_u64().unwrap_or(0) != 0 {
            // Several choices (`n` > 1) are not assembled: such streams are not stored.
            self.broken = true;
            return;
        }
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str() {
            self.content.push_str(t);
        }
        if let Some(t) = delta["reasoning_content"].as_str() {
            self.reasoning.push_str(t);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = call["index"].as_u64().unwrap_or(0) as usize;
            while self.calls.len() <= i {
                self.calls.push((Value::Null, Value::Null, String::new()));
            }
            let slot = &mut self.calls[i];
            if !call["id"].is_null() {
                slot.0 = call["id"].clone();
            }
            if !call["function"]["name"].is_null() {
                slot.1 = call["function"]["name"].clone();
            }
            if let Some(a) = call["function"]["arguments"].as_str() {
                slot.2.push_str(a);
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
    }

    /// The completion, if the stream ended cleanly (`[DONE]`, no error event).
    pub fn completion(&self) -> Option<Value> {
        if !self.done || self.broken {
            return None;
        }
        let mut message = json!({"role": "assistant",
            "content": (!self.content.is_empty()).then_some(&self.content)});
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        if !self.calls.is_empty() {
            message["tool_calls"] = Value::Array(
                self.calls
                    .iter()
                    .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                    .collect(),
            );
        }
        Some(
            json!({"id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "message": message, "finish_reason": self.finish}],
            "usage": self.usage}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn key_order_whitespace_and_stream_do_not_matter_but_parameters_do() {
        let a = map(
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}),
        );
        let b: Map<String, Value> = serde_json::from_str(
            r#"{ "temperature" : 0.2, "stream": true, "stream_options": {"include_usage": true},
                 "messages" : [ {"content":"hi","role":"user"} ], "model":"g", "metadata": {"x": 1} }"#,
        )
        .unwrap();
        assert_eq!(key_hash("g", &a), key_hash("g", &b));
        for changed in [
            json!({"model": "g", "messages": [{"role": "user", "content": "hi!"}], "temperature": 0.2}),
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3}),
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "seed": 1}),
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "user": "u"}),
        ] {
            assert_ne!(key_hash("g", &a), key_hash("g", &map(changed)));
        }
        assert_ne!(key_hash("g", &a), key_hash("other-group", &a));
        // Separators cannot be forged by member names or values.
        let x = map(json!({"a": "b\u{0}c"}));
        let y = map(json!({"a": "b", "c": ""}));
        assert_ne!(key_hash("g", &x), key_hash("g", &y));
    }

    #[test]
    fn controls_are_read_as_litellm_names_them() {
        let mut c = Controls {
            caching_off: true,
            ..Controls::default()
        };
        c.read_cache(
            &json!({"no-cache": true, "no-store": true, "ttl": 5, "s-maxage": 2,
            "namespace": "n", "use-cache": true}),
        );
        assert_eq!(
            c,
            Controls {
                no_cache: true,
                no_store: true,
                ttl: Some(Duration::from_secs(5)),
                max_age: Some(Duration::from_secs(2)),
                namespace: Some("n".into()),
                use_cache: true,
                caching_off: true,
                names: [
                    "no-cache",
                    "no-store",
                    "ttl",
                    "s-maxage",
                    "namespace",
                    "use-cache"
                ]
                .map(String::from)
                .to_vec(),
            }
        );
    }

    #[test]
    fn only_complete_answers_are_storable() {
        let ok = json!({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]});
        assert!(storable(&ok));
        for bad in [
            json!({"choices": []}),
            json!({"choices": [{"message": {"content": ""}, "finish_reason": "stop"}]}),
            json!({"choices": [{"message": {"content": "h"}, "finish_reason": "length"}]}),
            json!({"choices": [{"message": {"content": "h"}, "finish_reason": "content_filter"}]}),
            json!({"error": {"message": "x"}}),
        ] {
            assert!(!storable(&bad), "{bad}");
        }
    }

    #[test]
    fn a_replayed_stream_assembles_back_into_the_answer() {
        let answer = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "g",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello  big world ",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}});
        let replay = replay_stream(&answer, true);
        let text = String::from_utf8(replay.to_vec()).unwrap();
        assert!(text.contains(r#""delta":{"content":"Hello  "}"#), "{text}");
        assert!(text.contains(r#""delta":{"content":"big "}"#), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
        let mut assembler = StreamAssembler::default();
        for piece in replay.chunks(7) {
            assembler.feed(piece);
        }
        let back = assembler.completion().unwrap();
        assert_eq!(
            back["choices"][0]["message"]["content"],
            "Hello  big world "
        );
        assert_eq!(
            back["choices"][0]["message"]["tool_calls"],
            answer["choices"][0]["message"]["tool_calls"]
        );
        assert_eq!(back["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(back["usage"], answer["usage"]);
        // A stream that broke off, or carried an error, is not a completion.
        let mut cut = StreamAssembler::default();
        cut.feed(&replay[..replay.len() - 14]);
        assert!(cut.completion().is_none());
        let mut failed = StreamAssembler::default();
        failed.feed(b"data: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n");
        assert!(failed.completion().is_none());
    }

    #[test]
    fn entries_survive_their_redis_encoding() {
        let e = Entry {
            body: Bytes::from_static(b"{\"a\":1}"),
            stored_at_ms: 5,
            expires_at_ms: 9,
        };
        let back = decode_entry(&encode_entry(&e)).unwrap();
        assert_eq!(
            (back.body, back.stored_at_ms, back.expires_at_ms),
            (e.body, 5, 9)
        );
        assert!(decode_entry(b"short").is_none());
    }
}
