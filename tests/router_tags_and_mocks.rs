//! The router's tag routing (`enable_tag_filtering`: request, header, metadata, key and team
//! tags against deployments' `tags`, `default`, `!`/`&`, LiteLLM's 401) and `mock_response`
//! (answered without the provider, streamed, errors retried, gated by caller), against a mock
//! provider over real HTTP.

mod support;

use serde_json::{Value, json};
use support::*;

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn tagged_config(mock: &MockProvider) -> String {
    format!(
        r#"
model_list:
  - model_name: tiered
    litellm_params: {{model: openai/model-free, api_base: "{base}", tags: [free, default]}}
    model_info: {{id: free}}
  - model_name: tiered
    litellm_params: {{model: openai/model-paid, api_base: "{base}", tags: [paid, us]}}
    model_info: {{id: paid-us}}
  - model_name: tiered
    litellm_params: {{model: openai/model-eu, api_base: "{base}", tags: [paid, eu]}}
    model_info: {{id: paid-eu}}
  - model_name: strict
    litellm_params: {{model: openai/model-s1, api_base: "{base}", tags: [teamA]}}
    model_info: {{id: strict-a}}
  - model_name: strict
    litellm_params: {{model: openai/model-s2, api_base: "{base}", tags: [teamB]}}
    model_info: {{id: strict-b}}
  - model_name: opted-out
    litellm_params: {{model: openai/model-o, api_base: "{base}", tags: [only-this]}}
    model_info: {{id: opted-out, enable_tag_filtering: false}}
router_settings:
  enable_tag_filtering: true
general_settings:
  master_key: sk-test-master-1234
sluice_settings:
  threads: 1
"#,
        base = mock.api_base()
    )
}

/// The deployments that served `n` requests built by `request`.
async fn served(client: &Client, body: Value, tags_header: Option<&str>, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let mut r = client.post("/v1/chat/completions").json(&body);
        if let Some(t) = tags_header {
            r = r.header("x-litellm-tags", t);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let id = header(resp.headers(), "x-litellm-model-id").map(str::to_string);
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "{body} -> {text}");
        let id = id.expect("x-litellm-model-id");
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_pick_the_deployments_of_a_group() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&tagged_config(&mock)).await;
    let c = gw.client();
    let msg = json!([{"role": "user", "content": "hi"}]);
    // Untagged: the `default` deployment only.
    assert_eq!(
        served(&c, json!({"model": "tiered", "messages": msg}), None, 6).await,
        ["free"]
    );
    // A plain tag: every deployment that carries it.
    assert_eq!(
        served(
            &c,
            json!({"model": "tiered", "messages": msg, "tags": ["paid"]}),
            None,
            16
        )
        .await,
        ["paid-eu", "paid-us"]
    );
    // `!` excludes, `&` requires; from the body, the header or metadata.
    assert_eq!(
        served(
            &c,
            json!({"model": "tiered", "messages": msg, "tags": ["paid", "!eu"]}),
            None,
            6
        )
        .await,
        ["paid-us"]
    );
    assert_eq!(
        served(
            &c,
            json!({"model": "tiered", "messages": msg}),
            Some("paid, &eu"),
            6
        )
        .await,
        ["paid-eu"]
    );
    assert_eq!(
        served(
            &c,
            json!({"model": "tiered", "messages": msg, "metadata": {"tags": ["eu"]}}),
            None,
            6
        )
        .await,
        ["paid-eu"]
    );
    // A tag nobody in the group has: the default deployment.
    assert_eq!(
        served(
            &c,
            json!({"model": "tiered", "messages": msg, "tags": ["nightly"]}),
            None,
            4
        )
        .await,
        ["free"]
    );
    // The routing parameters never reach the provider; `metadata` is the client's own.
    let sent: Vec<Value> = mock.requests().iter().map(|r| r.json()).collect();
    assert!(sent.iter().all(|b| b.get("tags").is_none()), "{sent:?}");

    // No default and no match: LiteLLM's 401.
    let (status, _, json) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "strict", "messages": msg, "tags": ["teamC", "x"]}),
        )
        .await;
    assert_eq!(status, 401, "{json}");
    assert_eq!(
        error_message(&json, 401),
        "Not allowed to access model due to tags configuration. Passed model=strict and tags=['teamC', 'x']"
    );
    let calls = mock.calls();
    // A group whose deployment turns tag filtering off ignores tags.
    assert_eq!(
        served(
            &c,
            json!({"model": "opted-out", "messages": msg, "tags": ["other"]}),
            None,
            2
        )
        .await,
        ["opted-out"]
    );
    assert_eq!(mock.calls(), calls + 2, "the refused request called nobody");

    // A key's tags (and its team's) route every request of the key.
    let (status, _, key) = c
        .post_json("/key/generate", &json!({"tags": ["teamB"]}))
        .await;
    assert_eq!(status, 200, "{key}");
    let team_b = as_key(&gw, key["key"].as_str().unwrap());
    assert_eq!(
        served(
            &team_b,
            json!({"model": "strict", "messages": msg}),
            None,
            6
        )
        .await,
        ["strict-b"]
    );
    let (status, _, key) = c
        .post_json("/key/generate", &json!({"metadata": {"tags": ["teamA"]}}))
        .await;
    assert_eq!(status, 200, "{key}");
    let team_a = as_key(&gw, key["key"].as_str().unwrap());
    assert_eq!(
        served(
            &team_a,
            json!({"model": "strict", "messages": msg}),
            None,
            6
        )
        .await,
        ["strict-a"]
    );
}

fn mock_config(mock: &MockProvider, general: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: pair
    litellm_params: {{model: openai/gpt-4o, api_base: "{base}"}}
    model_info: {{id: deployment-a}}
  - model_name: pair
    litellm_params: {{model: openai/gpt-4o, api_base: "{base}"}}
    model_info: {{id: deployment-b}}
  - model_name: backup
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{base}"}}
    model_info: {{id: deployment-backup}}
router_settings:
  num_retries: 1
  fallbacks: [{{"pair": ["backup"]}}]
general_settings:
  master_key: sk-test-master-1234
{general}
sluice_settings:
  threads: 1
"#,
        base = mock.api_base()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_response_answers_without_the_provider() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&mock_config(&mock, "")).await;
    let c = gw.client();
    let msg = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let (status, headers, json) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "pair", "messages": msg, "mock_response": "Paris."}),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["choices"][0]["message"]["content"], "Paris.");
    assert_eq!(json["model"], "gpt-4o");
    assert_eq!(json["usage"]["completion_tokens"], 20);
    let prompt = json["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 0, "{json}");
    assert!(
        header(&headers, "x-litellm-model-id")
            .unwrap()
            .starts_with("deployment-")
    );
    let cost: f64 = header(&headers, "x-litellm-response-cost")
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0, "priced like gpt-4o's answer: {cost}");
    assert_eq!(mock.calls(), 0);

    // A stream of the same answer, usage last when asked for.
    let resp = c
        .post("/v1/chat/completions")
        .json(&json!({"model": "pair", "messages": msg, "stream": true,
            "stream_options": {"include_usage": true}, "mock_response": "The capital is Paris."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        header(resp.headers(), "content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "The capital is Paris.");
    assert!(chunks.len() > 3, "streamed in pieces: {chunks:?}");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 20);

    // LiteLLM's error names fail like the provider would: retried, then the fallback; the
    // mocked failures cool nothing down.
    let (status, headers, json) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "pair", "messages": msg, "mock_response": "litellm.RateLimitError"}),
        )
        .await;
    assert_eq!(status, 429, "{json}");
    assert!(
        error_message(&json, 429).contains("mock rate limit error"),
        "{json}"
    );
    let _ = headers;
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("litellm_deployment_cooled_down_total{"),
        "{metrics}"
    );
    let (status, _, json) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "pair", "messages": msg, "mock_response": "litellm.InternalServerError"}),
        )
        .await;
    assert_eq!(status, 500, "{json}");
    assert_eq!(mock.calls(), 0, "no provider was called for any of them");
    let (status, _, json) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "pair", "messages": msg,
                "mock_response": "litellm.ContextWindowExceededError"}),
        )
        .await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["code"], "context_length_exceeded", "{json}");

    // A key that may not mock: mock_response is dropped silently (LiteLLM) and the provider
    // answers; a key whose metadata allows it gets the mock.
    let (_, _, key) = c.post_json("/key/generate", &json!({})).await;
    let plain = as_key(&gw, key["key"].as_str().unwrap());
    let (status, _, json) = plain
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "pair", "messages": msg, "mock_response": "Paris."}),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert_ne!(json["choices"][0]["message"]["content"], "Paris.");
    assert_eq!(mock.calls(), 1);
    assert!(mock.requests()[0].json().get("mock_response").is_none());
    let (_, _, key) = c
        .post_json(
            "/key/generate",
            &json!({"metadata": {"allow_client_mock_response": true}}),
        )
        .await;
    let allowed = as_key(&gw, key["key"].as_str().unwrap());
    let (status, _, json) = allowed
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "pair", "messages": msg, "mock_response": "Paris."}),
        )
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["choices"][0]["message"]["content"], "Paris.");
    assert_eq!(mock.calls(), 1);
}
