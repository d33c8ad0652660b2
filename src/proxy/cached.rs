//! The response cache around the forwarder, inside Pingora's `request_filter`: a chat request
//! whose answer is cached is answered here (whole, or replayed as a stream) before admission
//! and routing; a request that missed carries its cache plan through delivery, which hands
//! back the complete answer to store.

use bytes::Bytes;
use filters::usage::Usage;
use filters::{ApiError, Endpoint};
use pingora::proxy::Session;
use serde_json::Value;

use super::ctx::Ctx;
use super::respond;
use crate::app::App;
use crate::cache::{self, Plan};
use crate::config::CacheScope;

/// A missed request's cache plan, the answer to store once delivered, and its single flight
/// (identical requests wait until it is dropped, after the store).
#[derive(Debug)]
pub struct CacheState {
    pub plan: Plan,
    pub fill: Option<Bytes>,
    pub flight: Option<cache::Flight>,
}

/// A key's `allowed_cache_controls` refuses any other control (403, LiteLLM's message); its
/// metadata `cache` controls replace the request's own.
pub fn key_controls(ctx: &mut Ctx) -> Result<(), ApiError> {
    let Some(key) = ctx.cx.caller.key() else {
        return Ok(());
    };
    if !key.allowed_cache_controls.is_empty()
        && let Some(name) = ctx
            .options
            .cache
            .names
            .iter()
            .find(|n| !key.allowed_cache_controls.contains(n))
    {
        return Err(ApiError::new(
            http::StatusCode::FORBIDDEN,
            "auth_error",
            format!(
                "Not allowed to set {name} as a cache control. Contact admin to change permissions."
            ),
        ));
    }
    if let Some(controls) = &key.cache_controls {
        let caching_off = ctx.options.cache.caching_off;
        ctx.options.cache = cache::Controls {
            caching_off,
            ..Default::default()
        };
        ctx.options.cache.read_cache(controls);
    }
    Ok(())
}

/// Looks the request up in the cache: `true` when it was answered from it. Otherwise a plan
/// that may write is left in `ctx.cache` for the delivery.
pub async fn lookup(app: &App, session: &mut Session, ctx: &mut Ctx, body: &Bytes) -> bool {
    let (Some(cache), Some(route)) = (&app.cache, ctx.cx.plan.as_ref()) else {
        return false;
    };
    // A mocked answer (`mock_response`, taken out of the body before the key is computed)
    // must never be served to, or stored for, a real request.
    if ctx.cx.endpoint() != Endpoint::ChatCompletions || ctx.options.mock_response.is_some() {
        return false;
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let caller = &ctx.cx.caller;
    let scope = match cache.settings().scope {
        CacheScope::Global => "",
        CacheScope::Key => caller.key_label(),
        CacheScope::Team => caller
            .key()
            .and_then(|k| k.team_id.as_deref())
            .unwrap_or(caller.key_label()),
    };
    let Some(plan) = cache.plan(&route.group, scope, &map, &ctx.options.cache) else {
        return false;
    };
    let mut flight = None;
    if plan.read {
        if let Some(entry) = cache.get(&plan).await
            && answer(session, ctx, &entry.body, &plan).await
        {
            return true;
        }
        ctx.record.cache_hit = Some(false);
        // A miss: one identical request at a time calls the provider (when its answer will
        // be stored); the others wait for it and are answered from the cache.
        if plan.write {
            match cache.fly(&plan).await {
                Ok(f) => flight = f,
                Err(entry) => {
                    if answer(session, ctx, &entry.body, &plan).await {
                        return true;
                    }
                }
            }
        }
    }
    if plan.write {
        ctx.cache = Some(Box::new(CacheState {
            plan,
            fill: None,
            flight,
        }));
    }
    false
}

/// Stores what the delivery handed back (a complete, storable answer).
pub fn finish(app: &App, ctx: &mut Ctx) {
    if let (Some(cache), Some(state)) = (&app.cache, ctx.cache.take())
        && let Some(body) = state.fill
    {
        cache.put(&state.plan, body);
        // `state.flight` drops here, after the answer is in memory: the waiters find it.
    }
}

/// The delivered whole answer, kept for the cache when it may be stored.
pub fn offer(ctx: &mut Ctx, answer: &Bytes) {
    if let Some(state) = ctx.cache.as_mut()
        && serde_json::from_slice::<Value>(answer).is_ok_and(|v| cache::storable(&v))
    {
        state.fill = Some(answer.clone());
    }
}

/// Answers from `stored`: the cached completion with a fresh id, whole or replayed as a
/// stream, at no cost. `false` when the entry cannot be read (then it is a miss).
async fn answer(session: &mut Session, ctx: &mut Ctx, stored: &[u8], plan: &Plan) -> bool {
    let Some(route) = ctx.cx.plan.as_ref() else {
        return false;
    };
    let Some(body) = cache::hit_body(stored, &route.requested_model) else {
        return false;
    };
    let (stream, include_usage) = ctx.cx.view.as_ref().map_or((false, false), |v| {
        (v.stream, v.include_usage == Some(true))
    });
    ctx.record.usage = serde_json::to_vec(&body["usage"])
        .ok()
        .and_then(|u| Usage::parse(&u));
    ctx.record.cost = Some(0.0);
    ctx.record.cache_hit = Some(true);
    let headers = [
        ("x-litellm-cache-key", plan.key.clone()),
        ("x-litellm-response-cost", "0.0".to_string()),
    ];
    let (content_type, bytes) = if stream {
        (
            "text/event-stream",
            cache::replay_stream(&body, include_usage),
        )
    } else {
        (
            "application/json",
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        )
    };
    respond::send(session, ctx, 200, content_type, &headers, bytes).await;
    true
}

/// LiteLLM's cache admin routes, for proxy admins: `GET /cache/ping`, `POST /cache/delete`
/// (`{"keys": [...]}`), `POST /cache/flushall` (Sluice's entries only, never the rest of the
/// Redis database) and `GET /cache/redis/info`, with LiteLLM's bodies and statuses.
pub async fn admin(app: &App, session: &mut Session, ctx: &mut Ctx, body: &Bytes) {
    let path = session.req_header().uri.path().to_string();
    if !ctx.cx.caller.is_admin() {
        return respond::error(session, ctx, &crate::admin::admin_only(&path)).await;
    }
    let method = session.req_header().method.clone();
    let wants = if path == "/cache/ping" || path == "/cache/redis/info" {
        http::Method::GET
    } else {
        http::Method::POST
    };
    if method != wants {
        let e = filters::ApiError::method_not_allowed(format!("{method} is not allowed on {path}"));
        return respond::error(session, ctx, &e).await;
    }
    let cache = app.cache.as_deref();
    let kind = cache.map(|c| {
        if c.settings().redis_url.is_some() {
            "redis"
        } else {
            "local"
        }
    });
    let (status, answer) = match (path.as_str(), cache) {
        ("/cache/ping", None) => (
            503,
            ping_error("Cache not initialized. litellm.cache is None"),
        ),
        ("/cache/ping", Some(c)) => match c.ping().await {
            Ok(()) => (200, ping_body(c)),
            Err(why) => {
                tracing::warn!("/cache/ping: {why}");
                (503, ping_error("Service Unhealthy"))
            }
        },
        ("/cache/delete", None) => (
            500,
            serde_json::json!({"detail": "Cache Delete Failed(500: Cache not initialized. litellm.cache is None)"}),
        ),
        ("/cache/delete", Some(c)) => {
            let keys: Vec<String> = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| serde_json::from_value(v.get("keys")?.clone()).ok())
                .unwrap_or_default();
            match c.delete(&keys).await {
                Ok(()) => (200, serde_json::json!({"status": "success"})),
                Err(why) => (
                    500,
                    serde_json::json!({"detail": format!("Cache Delete Failed(500: {why})")}),
                ),
            }
        }
        ("/cache/flushall", None) => (
            503,
            serde_json::json!({"detail": "Service Unhealthy (500: Cache not initialized. litellm.cache is None)"}),
        ),
        ("/cache/flushall", Some(c)) => match c.flush().await {
            Ok(_) => (200, serde_json::json!({"status": "success"})),
            Err(why) => (
                503,
                serde_json::json!({"detail": format!("Service Unhealthy (500: {why})")}),
            ),
        },
        (_, Some(c)) if kind == Some("redis") => match c.redis_info().await {
            Ok((info, clients)) => {
                let clients: Vec<&str> = clients.lines().collect();
                (
                    200,
                    serde_json::json!({"num_clients": clients.len(), "clients": clients, "info": info}),
                )
            }
            Err(why) => (
                503,
                serde_json::json!({"detail": format!("Service Unhealthy (500: {why})")}),
            ),
        },
        _ => (
            503,
            serde_json::json!({"detail": format!("Service Unhealthy (500: Cache type {} has no Redis)", kind.unwrap_or("None"))}),
        ),
    };
    let bytes = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
    respond::send(session, ctx, status, "application/json", &[], bytes).await;
}

/// `/cache/ping`'s failure body, as LiteLLM nests it.
fn ping_error(message: &str) -> Value {
    let inner = serde_json::json!({"message": message, "litellm_cache_params": "{}",
        "health_check_cache_params": "{}"});
    serde_json::json!({"error": {"message": inner.to_string(), "type": "cache_ping_error",
        "param": "cache_ping", "code": "503"}})
}

/// `/cache/ping`'s healthy body: the cache's settings, the Redis password masked.
fn ping_body(c: &cache::ResponseCache) -> Value {
    let s = c.settings();
    let params = serde_json::json!({
        "type": if s.redis_url.is_some() { "redis" } else { "local" },
        "namespace": s.namespace, "ttl": s.ttl().as_secs_f64(),
        "mode": if s.default_on { "default_on" } else { "default_off" },
        "max_messages": s.max_messages,
    });
    match &s.redis_url {
        Some(url) => serde_json::json!({"status": "healthy", "cache_type": "redis",
            "ping_response": true, "set_cache_response": "success",
            "litellm_cache_params": params.to_string(),
            "health_check_cache_params": {"url": cache::redacted(url), "namespace": s.namespace}}),
        None => serde_json::json!({"status": "healthy", "cache_type": "local",
            "litellm_cache_params": params.to_string()}),
    }
}
