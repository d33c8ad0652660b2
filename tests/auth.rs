//! Master-key auth on every model route, with the headers LiteLLM accepts; health and metrics
//! stay public; without a master key the gateway is open.

mod support;

use serde_json::json;
use support::*;

fn chat() -> serde_json::Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_routes_need_the_master_key_in_any_litellm_header() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let http = reqwest::Client::new();
    for (header, value) in [
        ("authorization", format!("Bearer {MASTER_KEY}")),
        ("x-api-key", MASTER_KEY.to_string()),
        ("api-key", MASTER_KEY.to_string()),
        ("x-litellm-api-key", MASTER_KEY.to_string()),
        ("x-goog-api-key", MASTER_KEY.to_string()),
        ("ocp-apim-subscription-key", MASTER_KEY.to_string()),
    ] {
        let resp = http
            .post(gw.url("/v1/chat/completions"))
            .header(header, value)
            .json(&chat())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{header}");
    }
    assert_eq!(mock.calls(), 6);

    for path in ["/v1/models", "/model/info", "/model_group/info"] {
        let resp = http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} needs a key");
    }

    let resp = http
        .post(gw.url("/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "Authentication Error, No api key passed in.", "type": "auth_error", "param": "None", "code": "401"}})
    );

    let resp = http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-wrong-key-abcdef")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    assert!(text.contains("Invalid proxy server token passed"), "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["type"], "token_not_found_in_db", "{body}");
    assert_eq!(body["error"]["param"], "key", "{body}");
    assert_eq!(body["error"]["code"], "401", "{body}");
    assert!(
        !text.contains("sk-wrong-key-abcdef"),
        "the key is never echoed"
    );

    let resp = http
        .post(gw.url("/v1/chat/completions"))
        .header("authorization", MASTER_KEY)
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("Malformed API Key"));
    assert_eq!(
        mock.calls(),
        6,
        "rejected requests never reach the provider"
    );

    for path in [
        "/health/liveliness",
        "/health/liveness",
        "/health/readiness",
        "/metrics",
    ] {
        let resp = http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path} is public");
    }
    let live = http
        .get(gw.url("/health/liveness"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(live, "\"I'm alive!\"");
    let ready: serde_json::Value = http
        .get(gw.url("/health/readiness"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // With a master key the key store (SQLite here) is open, as LiteLLM reports a database.
    assert_eq!(ready["status"], "connected");
    assert_eq!(ready["db"], "connected");
    assert!(ready["litellm_version"].is_string());

    let logs = gw.logs();
    assert!(
        !logs.contains(MASTER_KEY),
        "the master key must not be logged"
    );
    assert!(
        !logs.contains("sk-upstream-secret"),
        "provider keys must not be logged"
    );
    assert!(!logs.contains("sk-wrong-key-abcdef"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_request_keeps_the_connection_usable() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    // One client, one pooled connection: a 401 on it must not break the next request.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    for i in 0..3 {
        let status = http
            .post(gw.url("/v1/chat/completions"))
            .json(&chat())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "round {i}");
        let status = http
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(MASTER_KEY)
            .json(&chat())
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "round {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_master_key_the_gateway_is_open_and_says_so() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = basic_config(&mock).replace(
        &format!("general_settings:\n  master_key: {MASTER_KEY}\n"),
        "",
    );
    let gw = Gateway::start(&config).await;
    let (status, _, _) = gw
        .client()
        .without_key()
        .post_json("/v1/chat/completions", &chat())
        .await;
    assert_eq!(status, 200);
    assert!(gw.logs().contains("no master key is set"), "{}", gw.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_key_can_come_from_litellm_master_key() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = basic_config(&mock).replace(
        &format!("general_settings:\n  master_key: {MASTER_KEY}\n"),
        "",
    );
    let gw = Gateway::start_with(&config, &[], &[("LITELLM_MASTER_KEY", MASTER_KEY)]).await;
    let (status, _, _) = gw
        .client()
        .without_key()
        .post_json("/v1/chat/completions", &chat())
        .await;
    assert_eq!(status, 401);
    let (status, _, _) = gw.client().post_json("/v1/chat/completions", &chat()).await;
    assert_eq!(status, 200);
}
