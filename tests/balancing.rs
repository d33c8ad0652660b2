//! Load balancing across deployments of one model group (LiteLLM's simple-shuffle with
//! `weight`, `rpm` and `order`), visible in the response headers and in the mock's call counts.

mod support;

use std::collections::HashMap;

use serde_json::json;
use support::*;

async fn spread(gw: &Gateway, requests: usize) -> HashMap<String, usize> {
    let c = gw.client();
    let mut by_id = HashMap::new();
    for _ in 0..requests {
        let (status, headers, body) = c
            .post_json(
                "/v1/chat/completions",
                &json!({"model": "balanced", "messages": []}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-litellm-model-group"], "balanced");
        *by_id
            .entry(headers["x-litellm-model-id"].to_str().unwrap().to_string())
            .or_default() += 1;
    }
    by_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_traffic_and_headers_show_where_it_went() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        r#"
model_list:
  - model_name: balanced
    litellm_params: {{model: openai/model-a, api_base: "{a}", weight: 3}}
    model_info: {{id: deployment-a}}
  - model_name: balanced
    litellm_params: {{model: openai/model-b, api_base: "{b}", weight: 1}}
    model_info: {{id: deployment-b}}
sluice_settings:
  threads: 1
"#,
        a = a.api_base(),
        b = b.api_base()
    );
    let gw = Gateway::start(&config).await;
    let counts = spread(&gw, 400).await;
    let share_a = counts["deployment-a"] as f64 / 400.0;
    // 3:1 → 0.75; with 400 draws the standard deviation is ~0.022.
    assert!(
        (0.65..=0.85).contains(&share_a),
        "share of a = {share_a} ({counts:?})"
    );
    assert_eq!(
        a.calls() as usize,
        counts["deployment-a"],
        "headers match real upstream calls"
    );
    assert_eq!(b.calls() as usize, counts["deployment-b"]);
    assert_eq!(a.last_request().unwrap().json()["model"], "model-a");
    assert_eq!(b.last_request().unwrap().json()["model"], "model-b");

    let metrics = gw.metrics().await;
    for id in ["deployment-a", "deployment-b"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("litellm_deployment_success_responses_total{")
                    && l.contains(&format!("model_id=\"{id}\""))
            })
            .unwrap_or_else(|| panic!("no success metric for {id}"));
        assert!(line.ends_with(&format!(" {}", counts[id])), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_weights_when_no_weight_is_set() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        r#"
model_list:
  - model_name: balanced
    litellm_params: {{model: openai/a, api_base: "{a}", rpm: 900}}
  - model_name: balanced
    litellm_params: {{model: openai/b, api_base: "{b}", rpm: 100}}
sluice_settings:
  threads: 1
"#,
        a = a.api_base(),
        b = b.api_base()
    );
    let gw = Gateway::start(&config).await;
    spread(&gw, 300).await;
    let share_a = a.calls() as f64 / 300.0;
    assert!((0.82..=0.97).contains(&share_a), "share of a = {share_a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lowest_order_is_always_used_first() {
    let primary = MockProvider::start(MockConfig::default()).await;
    let backup = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        r#"
model_list:
  - model_name: balanced
    litellm_params: {{model: openai/backup, api_base: "{backup}", order: 2}}
  - model_name: balanced
    litellm_params: {{model: openai/primary, api_base: "{primary}", order: 1}}
sluice_settings:
  threads: 1
"#,
        primary = primary.api_base(),
        backup = backup.api_base()
    );
    let gw = Gateway::start(&config).await;
    spread(&gw, 50).await;
    assert_eq!(primary.calls(), 50);
    assert_eq!(backup.calls(), 0);
}
