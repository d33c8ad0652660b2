//! Router state shared through Redis (issue 16, item 8): two instances on one Redis see each
//! other's cooldowns and latency samples; Redis killed mid-run costs no request, and sharing
//! resumes when it is back. Each test runs its own redis-server, so it can kill it.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::services::PrivateRedis;
use support::*;

fn shared_config(mock: &MockProvider, redis: &PrivateRedis, router: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: pair
    litellm_params: {{model: openai/model-a, api_base: "{base}", order: 1}}
    model_info: {{id: deployment-a, cooldown_time: 60}}
  - model_name: pair
    litellm_params: {{model: openai/model-b, api_base: "{base}", order: 2}}
    model_info: {{id: deployment-b}}
router_settings:
  redis_url: "{redis}"
{router}
sluice_settings:
  threads: 1
"#,
        base = mock.api_base(),
        redis = redis.url(),
    )
}

async fn served_by(gw: &Gateway, body: &Value) -> String {
    let (status, headers, json) = gw.client().post_json("/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{json}");
    headers["x-litellm-model-id"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_cooldowns_and_keep_serving_when_redis_dies() {
    let mut redis = PrivateRedis::start().await;
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = shared_config(&mock, &redis, "");
    let one = Gateway::start(&config).await;
    let two = Gateway::start(&config).await;
    let plain = json!({"model": "pair", "messages": [{"role": "user", "content": "hi"}]});
    // a is the first tier: both instances send everything there while it is healthy.
    for gw in [&one, &two] {
        assert_eq!(served_by(gw, &plain).await, "deployment-a");
    }
    // a answers 429 to instance one, which cools it down and serves from b.
    let failing =
        json!({"model": "pair", "messages": [], "mock": {"status_for_model": {"model-a": 429}}});
    assert_eq!(served_by(&one, &failing).await, "deployment-b");
    let a_calls = mock
        .requests()
        .iter()
        .filter(|r| r.json()["model"] == "model-a")
        .count();
    assert_eq!(a_calls, 3);
    // Instance two learns of the cooldown through Redis (one writes at once, two reads every
    // second) and sends nothing to a, though it never saw a fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..6 {
        assert_eq!(served_by(&two, &plain).await, "deployment-b");
    }
    let a_calls = mock
        .requests()
        .iter()
        .filter(|r| r.json()["model"] == "model-a")
        .count();
    assert_eq!(a_calls, 3, "instance two called the cooled-down deployment");

    // Redis dies: every request is still served, from each instance's own state.
    redis.kill();
    for _ in 0..10 {
        for gw in [&one, &two] {
            assert_eq!(
                served_by(gw, &plain).await,
                "deployment-b",
                "a is still cooling"
            );
        }
    }
    let warned = eventually(Duration::from_secs(5), || async {
        [&one, &two]
            .iter()
            .all(|gw| gw.logs().matches("router state: Redis unreachable").count() == 1)
            .then_some(())
    })
    .await;
    assert!(warned.is_some(), "{}", two.logs());
    for _ in 0..3 {
        served_by(&one, &plain).await;
    }
    // Logged once, however long it lasts.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        one.logs()
            .matches("router state: Redis unreachable")
            .count(),
        1
    );
    // Back: the instances share again.
    redis.restart().await;
    let back = eventually(Duration::from_secs(10), || async {
        [&one, &two]
            .iter()
            .all(|gw| gw.logs().contains("router state: Redis answers again"))
            .then_some(())
    })
    .await;
    assert!(back.is_some(), "{}", one.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_latency_samples() {
    let redis = PrivateRedis::start().await;
    let mock = MockProvider::start(MockConfig::default()).await;
    // One tier: latency-based routing chooses.
    let config = shared_config(&mock, &redis, "  routing_strategy: latency-based-routing")
        .replace(", order: 1", "")
        .replace(", order: 2", "");
    let one = Gateway::start(&config).await;
    let two = Gateway::start(&config).await;
    // a answers in 200 ms, b at once; instance one learns it.
    let body = json!({"model": "pair", "messages": [], "mock": {"for_model": {"model-a": {"latency_ms": 200}}}});
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(served_by(&one, &body).await);
    }
    assert!(
        seen.contains(&"deployment-a".to_string()) && seen.contains(&"deployment-b".to_string())
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Instance two has no sample of its own, but one's samples say b is faster: every request
    // goes to b. Alone it would try the unseen deployments first (a among them).
    for _ in 0..6 {
        assert_eq!(served_by(&two, &body).await, "deployment-b");
    }
}
