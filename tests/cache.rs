//! The response cache against a real Redis: hits skip the provider (counted at the mock), key
//! order and whitespace do not matter, answer-changing parameters do, one entry serves streamed
//! and whole requests both ways, the per-request controls, entries shared by two instances,
//! failures never stored, and a Redis that dies costs no request.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::services::PrivateRedis;
use support::*;

fn config(mock: &MockProvider, redis_url: &str, extra: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{base}", api_key: sk-up}}
litellm_settings:
  cache: true
  cache_params:
    type: redis
    url: {redis_url}
    namespace: "t{ns:016x}"
{extra}
general_settings:
  master_key: {MASTER_KEY}
  proxy_batch_write_at: 0.2
sluice_settings:
  threads: 1
"#,
        base = mock.api_base(),
        ns = fastrand::u64(..),
    )
}

async fn chat(client: &Client, body: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = client
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The text of an SSE chat stream, and whether it ended with `[DONE]`.
async fn stream_text(client: &Client, body: &Value) -> (String, bool, Option<String>) {
    let resp = client
        .post("/v1/chat/completions")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let key = resp
        .headers()
        .get("x-litellm-cache-key")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let mut content = String::new();
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
            content.push_str(piece);
        }
    }
    (content, text.ends_with("data: [DONE]\n\n"), key)
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_skip_the_provider_and_serve_streams_and_whole_answers_alike() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let yaml = config(&mock, &test_redis_url(), "");
    let gw = Gateway::start(&yaml).await;
    let c = gw.client();

    let first = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello cache"}],"temperature":0.5}"#;
    let (status, headers, miss) = chat(&c, first).await;
    assert_eq!(status, 200, "{miss}");
    assert!(headers.get("x-litellm-cache-key").is_none());
    assert_eq!(mock.calls(), 1);
    // Same request, members reordered and spaced: a hit, free, with a fresh id.
    let reordered = r#"{ "temperature" : 0.5 ,
        "messages" : [ { "content" : "hello cache", "role" : "user" } ], "model" : "gpt-4o" }"#;
    let (status, headers, hit) = chat(&c, reordered).await;
    assert_eq!(status, 200, "{hit}");
    assert_eq!(mock.calls(), 1, "served from the cache");
    assert_eq!(headers["x-litellm-response-cost"], "0.0");
    let key = headers["x-litellm-cache-key"].to_str().unwrap().to_string();
    assert_eq!(content(&hit), content(&miss));
    assert_ne!(hit["id"], miss["id"]);
    assert_eq!(hit["model"], "gpt-4o");
    assert_eq!(hit["usage"], miss["usage"]);
    // A parameter that changes the answer misses.
    let (_, headers, _) = chat(
        &c,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello cache"}],"temperature":0.6}"#,
    )
    .await;
    assert!(headers.get("x-litellm-cache-key").is_none());
    assert_eq!(mock.calls(), 2);

    // The whole answer replays as a stream (usage when asked), and the other way round.
    let streamed = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello cache"}],
        "temperature": 0.5, "stream": true});
    let (text, done, hit_key) = stream_text(&c, &streamed).await;
    assert_eq!(text, content(&miss));
    assert!(done);
    assert_eq!(hit_key.as_deref(), Some(key.as_str()));
    assert_eq!(mock.calls(), 2);
    let fresh = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "stream first"}], "stream": true});
    let (text, done, key) = stream_text(&c, &fresh).await;
    assert!(done && key.is_none());
    assert_eq!(mock.calls(), 3);
    let (status, headers, whole) = chat(
        &c,
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"stream first"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers.get("x-litellm-cache-key").is_some(),
        "a completed stream was stored"
    );
    assert_eq!(content(&whole), text);
    assert_eq!(mock.calls(), 3);

    // Counted: hits (with the tokens they saved) and misses.
    let metrics = gw.metrics().await;
    let value = |name: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains("model=\"gpt-4o\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(value("litellm_cache_hits_metric_total"), 3.0, "{metrics}");
    assert_eq!(value("litellm_cache_misses_metric_total"), 3.0, "{metrics}");
    assert!(value("litellm_cached_tokens_metric_total") > 0.0);
    // Each hit has its spend-log row: cache_hit True, no spend, the cached usage's tokens.
    let hits = eventually(Duration::from_secs(5), || async {
        let (_, logs) = c.get_json("/spend/logs").await;
        let hits: Vec<Value> = logs
            .as_array()?
            .iter()
            .filter(|r| r["cache_hit"] == "True")
            .cloned()
            .collect();
        (hits.len() == 3).then_some(hits)
    })
    .await
    .expect("three cache-hit rows");
    for row in hits {
        assert_eq!(row["spend"], 0.0, "{row}");
        assert!(row["total_tokens"].as_u64().unwrap() > 0, "{row}");
    }
    // Another instance on the same Redis finds the entries.
    let other = Gateway::start(&yaml).await;
    let (_, headers, _) = chat(&other.client(), first).await;
    assert!(headers.get("x-litellm-cache-key").is_some());
    assert_eq!(mock.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_controls_and_what_is_never_stored() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, &test_redis_url(), "")).await;
    let c = gw.client();
    let ask = |prompt: &str, extra: Value| {
        let mut body =
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body.to_string()
    };
    let calls = || mock.calls();

    // no-store: answered, not kept.
    chat(&c, &ask("a", json!({"cache": {"no-store": true}}))).await;
    chat(&c, &ask("a", json!({}))).await;
    assert_eq!(calls(), 2);
    // no-cache (and caching: false): looked up never, still stored.
    chat(&c, &ask("a", json!({"cache": {"no-cache": true}}))).await;
    chat(&c, &ask("a", json!({"caching": false}))).await;
    assert_eq!(calls(), 4);
    let (_, headers, _) = chat(&c, &ask("a", json!({}))).await;
    assert!(headers.get("x-litellm-cache-key").is_some());
    assert_eq!(calls(), 4);
    // The controls never reach the provider.
    let sent = mock.last_request().unwrap().json();
    assert!(
        sent.get("cache").is_none() && sent.get("caching").is_none(),
        "{sent}"
    );
    // namespace: its own entries (a fresh one: Redis outlives test runs).
    let other = format!("other{:x}", fastrand::u64(..));
    chat(&c, &ask("a", json!({"cache": {"namespace": other}}))).await;
    assert_eq!(calls(), 5);
    let (_, headers, _) = chat(&c, &ask("a", json!({"cache": {"namespace": other}}))).await;
    assert!(
        headers["x-litellm-cache-key"]
            .to_str()
            .unwrap()
            .starts_with(&format!("{other}:"))
    );
    assert_eq!(calls(), 5);
    // ttl: gone after it; s-maxage: an older entry is not taken.
    chat(&c, &ask("b", json!({"cache": {"ttl": 1}}))).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    chat(&c, &ask("b", json!({}))).await;
    assert_eq!(calls(), 7, "expired after its ttl");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    chat(&c, &ask("b", json!({"cache": {"s-maxage": 1}}))).await;
    assert_eq!(calls(), 8, "older than s-maxage");

    // A mocked answer is neither served from nor stored in the cache.
    let (status, _, mocked) = chat(&c, &ask("m", json!({"mock_response": "fake answer"}))).await;
    assert_eq!((status, content(&mocked)), (200, "fake answer"));
    let before = calls();
    let (_, headers, real) = chat(&c, &ask("m", json!({}))).await;
    assert!(headers.get("x-litellm-cache-key").is_none());
    assert_ne!(content(&real), "fake answer");
    assert_eq!(calls(), before + 1);
    // Failures and cut answers are never stored.
    let failing = ask("c", json!({"mock": {"status": 500}}));
    let (status, _, _) = chat(&c, &failing).await;
    assert_eq!(status, 500);
    let before = calls();
    chat(&c, &failing).await;
    assert!(calls() > before, "an error was not cached");
    let cut = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "d"}], "stream": true,
        "mock": {"reset_after_chunks": 3, "chunk_delay_ms": 20}});
    let mut keys = Vec::new();
    let before = calls();
    for _ in 0..2 {
        // A fresh connection each time: the gateway closes one whose stream broke.
        let resp = gw
            .client()
            .post("/v1/chat/completions")
            .json(&cut)
            .send()
            .await
            .unwrap();
        keys.push(resp.headers().get("x-litellm-cache-key").cloned());
        let _ = resp.text().await;
    }
    assert_eq!(keys, [None, None], "a cut stream was not cached");
    assert!(calls() >= before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_off_caches_only_what_asks_and_a_dead_redis_costs_nothing() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let mut redis = PrivateRedis::start().await;
    let gw = Gateway::start(&config(&mock, &redis.url(), "    mode: default_off")).await;
    let c = gw.client();
    let body = |opt_in: bool| {
        let mut b = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "off"}]});
        if opt_in {
            b["cache"] = json!({"use-cache": true});
        }
        b.to_string()
    };
    chat(&c, &body(false)).await;
    chat(&c, &body(false)).await;
    assert_eq!(mock.calls(), 2, "not cached by default");
    chat(&c, &body(true)).await;
    let (_, headers, _) = chat(&c, &body(true)).await;
    assert!(headers.get("x-litellm-cache-key").is_some());
    assert_eq!(mock.calls(), 3);

    // Redis dies: every request still succeeds (from memory, or from the provider).
    redis.kill();
    for i in 0..5 {
        let mut b: Value = serde_json::from_str(&body(true)).unwrap();
        b["messages"][0]["content"] = json!(format!("after {i}"));
        let (status, _, answer) = chat(&c, &b.to_string()).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, headers, _) = chat(&c, &body(true)).await;
    assert_eq!(status, 200);
    assert!(
        headers.get("x-litellm-cache-key").is_some(),
        "memory still serves"
    );
}

/// 50 identical requests at once make one upstream call; the others are answered from its
/// answer, streams included. With Redis, across two instances too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_misses_make_one_upstream_call() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let yaml = config(&mock, &test_redis_url(), "");
    let (a, b) = (Gateway::start(&yaml).await, Gateway::start(&yaml).await);
    let burst = |prompt: String, gateways: Vec<Client>| async move {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}],
            "mock": {"latency_ms": 400}});
        let mut tasks = Vec::new();
        for i in 0..50 {
            let client = gateways[i % gateways.len()].clone();
            let mut body = body.clone();
            if i % 5 == 0 {
                body["stream"] = json!(true);
            }
            tasks.push(tokio::spawn(async move {
                let resp = client
                    .post("/v1/chat/completions")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap();
                (status, text)
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    };
    for (round, gateways) in [vec![a.client()], vec![a.client(), b.client()]]
        .into_iter()
        .enumerate()
    {
        let before = mock.calls();
        let answers = burst(format!("burst {round}"), gateways).await;
        for (status, text) in &answers {
            assert_eq!(*status, 200, "{text}");
            assert!(text.contains("Hello"), "{text}");
        }
        assert_eq!(
            mock.calls() - before,
            1,
            "round {round}: one upstream call for 50 identical requests"
        );
    }
}

/// LiteLLM's cache admin routes: admin only; ping, delete, flushall (Sluice's keys only),
/// redis/info; and their answers without a cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_admin_routes() {
    let mock = MockProvider::start(MockConfig::default()).await;
    // A Redis of its own: flushall empties every Sluice entry, other tests' too.
    let redis = PrivateRedis::start().await;
    let gw = Gateway::start(&config(&mock, &redis.url(), "")).await;
    let admin = gw.client();
    let (status, _, key) = admin.post_json("/key/generate", &json!({})).await;
    assert_eq!(status, 200, "{key}");
    let user = as_key(&gw, key["key"].as_str().unwrap());
    let (status, body) = user.get_json("/cache/ping").await;
    assert_eq!(status, 401, "{body}");
    assert!(error_message(&body, 401).contains("Route=/cache/ping"));

    let (status, body) = admin.get_json("/cache/ping").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["cache_type"], "redis");
    assert_eq!(body["ping_response"], true);
    let (status, body) = admin.get_json("/cache/redis/info").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["num_clients"].as_u64().unwrap() >= 1);
    assert!(body["info"].as_str().unwrap().contains("redis_version"));

    let ask = |prompt: &str| {
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}).to_string()
    };
    chat(&admin, &ask("one")).await;
    let (_, headers, _) = chat(&admin, &ask("one")).await;
    let cache_key = headers["x-litellm-cache-key"].to_str().unwrap().to_string();
    assert_eq!(mock.calls(), 1);
    let (status, _, body) = admin
        .post_json("/cache/delete", &json!({"keys": [cache_key]}))
        .await;
    assert_eq!((status, body), (200, json!({"status": "success"})));
    chat(&admin, &ask("one")).await;
    assert_eq!(mock.calls(), 2, "deleted from memory and Redis");

    // flushall empties Sluice's entries and leaves the rest of the database alone.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let neighbour = format!("not-sluice:{:x}", fastrand::u64(..));
    let _: () = redis::cmd("SET")
        .arg(&neighbour)
        .arg("keep me")
        .query_async(&mut conn)
        .await
        .unwrap();
    chat(&admin, &ask("two")).await;
    let (status, _, body) = admin.post_json("/cache/flushall", &json!({})).await;
    assert_eq!((status, body), (200, json!({"status": "success"})));
    chat(&admin, &ask("one")).await;
    chat(&admin, &ask("two")).await;
    assert_eq!(mock.calls(), 5, "both answers were flushed");
    let kept: Option<String> = redis::cmd("GET")
        .arg(&neighbour)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("keep me"));
    let _: () = redis::cmd("DEL")
        .arg(&neighbour)
        .query_async(&mut conn)
        .await
        .unwrap();

    // Without a cache: LiteLLM's answers.
    let plain = Gateway::start(&basic_config(&mock)).await;
    let (status, body) = plain.client().get_json("/cache/ping").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], "cache_ping_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Cache not initialized")
    );
    let (status, _, body) = plain
        .client()
        .post_json("/cache/delete", &json!({"keys": ["x"]}))
        .await;
    assert_eq!(status, 500);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Cache Delete Failed")
    );
}

/// `scope: key` keeps each key's entries to itself; a key's `allowed_cache_controls` and its
/// metadata `cache` controls act as LiteLLM's do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_and_key_level_cache_controls() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config(&mock, &test_redis_url(), "    scope: key")).await;
    let admin = gw.client();
    let key = |body: Value| {
        let admin = admin.clone();
        async move {
            let (status, _, k) = admin.post_json("/key/generate", &body).await;
            assert_eq!(status, 200, "{k}");
            k["key"].as_str().unwrap().to_string()
        }
    };
    let (a, b) = (key(json!({})).await, key(json!({})).await);
    let ask = |extra: Value| {
        let mut body =
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "scoped"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body.to_string()
    };
    chat(&as_key(&gw, &a), &ask(json!({}))).await;
    let (_, headers, _) = chat(&as_key(&gw, &a), &ask(json!({}))).await;
    assert!(headers.get("x-litellm-cache-key").is_some());
    let (_, headers, _) = chat(&as_key(&gw, &b), &ask(json!({}))).await;
    assert!(
        headers.get("x-litellm-cache-key").is_none(),
        "another key's entry"
    );
    assert_eq!(mock.calls(), 2);

    let limited = key(json!({"allowed_cache_controls": ["no-cache"]})).await;
    let (status, _, body) = chat(&as_key(&gw, &limited), &ask(json!({"cache": {"ttl": 5}}))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"]["message"],
        "Not allowed to set ttl as a cache control. Contact admin to change permissions."
    );
    let (status, _, _) = chat(
        &as_key(&gw, &limited),
        &ask(json!({"cache": {"no-cache": true}})),
    )
    .await;
    assert_eq!(status, 200);

    // The key's own controls replace the request's: this key's answers are never stored.
    let no_store = key(json!({"metadata": {"cache": {"no-store": true}}})).await;
    let before = mock.calls();
    for _ in 0..2 {
        chat(&as_key(&gw, &no_store), &ask(json!({"cache": {"ttl": 60}}))).await;
    }
    assert_eq!(mock.calls(), before + 2);
}
