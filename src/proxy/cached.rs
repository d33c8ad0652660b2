//! The response cache around the forwarder, inside Pingora's `request_filter`: a chat request
//! whose answer is cached is answered here (whole, or replayed as a stream) before admission
//! and routing; a request that missed carries its cache plan through delivery, which hands
//! back the complete answer to store.

use bytes::Bytes;
use filters::Endpoint;
use filters::usage::Usage;
use pingora::proxy::Session;
use serde_json::Value;

use super::ctx::Ctx;
use super::respond;
use crate::app::App;
use crate::cache::{self, Plan};

/// A missed request's cache plan, the answer to store once delivered, and its single flight
/// (identical requests wait until it is dropped, after the store).
#[derive(Debug)]
pub struct CacheState {
    pub plan: Plan,
    pub fill: Option<Bytes>,
    pub flight: Option<cache::Flight>,
}

/// Looks the request up in the cache: `true` when it was answered from it. Otherwise a plan
/// that may write is left in `ctx.cache` for the delivery.
pub async fn lookup(app: &App, session: &mut Session, ctx: &mut Ctx, body: &Bytes) -> bool {
    let (Some(cache), Some(route)) = (&app.cache, ctx.cx.plan.as_ref()) else {
        return false;
    };
    if ctx.cx.endpoint() != Endpoint::ChatCompletions {
        return false;
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let Some(plan) = cache.plan(&route.group, &map, &ctx.options.cache) else {
        return false;
    };
    let mut flight = None;
    if plan.read {
        if let Some(entry) = cache.get(&plan).await
            && answer(session, ctx, &entry.body, &plan).await
        {
            return true;
        }
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
