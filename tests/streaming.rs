//! Streaming through the gateway: chunks pass as they arrive (measured), usage is captured,
//! a client hang-up closes the upstream, and mid-stream failures reach the client in-band.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use support::*;

/// Reads an SSE response, returning each event's text and its arrival time since `start`.
async fn read_events(resp: reqwest::Response, start: Instant) -> Vec<(Duration, String)> {
    let mut events = Vec::new();
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            events.push((start.elapsed(), event.trim().to_string()));
        }
    }
    events
}

fn chat(stream_options: Option<serde_json::Value>, mock: serde_json::Value) -> serde_json::Value {
    let mut body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hello there"}], "mock": mock});
    if let Some(o) = stream_options {
        body["stream_options"] = o;
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_reach_the_client_as_the_upstream_paces_them() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let start = Instant::now();
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .json(&chat(None, json!({"chunks": 6, "chunk_delay_ms": 50})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(resp.headers()["x-litellm-model-group"], "gpt-4o");
    let events = read_events(resp, start).await;
    // role chunk, 6 content chunks, finish chunk, [DONE]; the usage chunk Sluice asked for is hidden.
    assert_eq!(events.len(), 9, "{events:#?}");
    assert_eq!(events.last().unwrap().1, "data: [DONE]");
    for (_, e) in &events[..8] {
        let v: serde_json::Value = serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["model"], "gpt-4o");
        assert!(
            v.get("usage").is_none(),
            "the client did not ask for usage: {e}"
        );
    }
    let gaps: Vec<f64> = events
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_secs_f64() * 1000.0)
        .collect();
    for (i, gap) in gaps.iter().enumerate() {
        assert!(
            (35.0..150.0).contains(gap),
            "gap {i} is {gap:.1} ms, expected about 50 ms: {gaps:?}"
        );
    }
    assert!(
        events[0].0 < Duration::from_millis(150),
        "first chunk after {:?}",
        events[0].0
    );

    // The stream's usage was still captured for accounting.
    let metrics = gw.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("litellm_output_tokens_metric_total{"))
        .expect("token metrics");
    assert!(line.ends_with(" 6"), "{line}");
    let upstream = mock.last_request().unwrap().json();
    assert_eq!(upstream["stream_options"]["include_usage"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_for_usage_gets_the_usage_chunk() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .json(&chat(
            Some(json!({"include_usage": true})),
            json!({"chunks": 3}),
        ))
        .send()
        .await
        .unwrap();
    let events = read_events(resp, Instant::now()).await;
    let usage_event = &events[events.len() - 2].1;
    let v: serde_json::Value =
        serde_json::from_str(usage_event.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["choices"], json!([]));
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["model"], "gpt-4o");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hang_up_closes_the_upstream_stream() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .json(&chat(None, json!({"chunks": 100, "chunk_delay_ms": 50})))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut seen = 0;
    while seen < 2 {
        let chunk = stream.next().await.unwrap().unwrap();
        seen += String::from_utf8_lossy(&chunk).matches("\n\n").count();
    }
    drop(stream);
    let hung_up = Instant::now();
    while mock.streams_cut_by_client() == 0 && hung_up.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        mock.streams_cut_by_client(),
        1,
        "the upstream stream should be closed by the gateway"
    );
    // The mock notices on its next write, at most one chunk interval (50 ms) later.
    assert!(
        hung_up.elapsed() < Duration::from_millis(500),
        "took {:?}",
        hung_up.elapsed()
    );
    // The cut request ends (its logging phase runs) after the upstream close.
    let settled = eventually(Duration::from_secs(2), || async {
        gw.metrics_now()
            .await
            .contains("litellm_in_flight_requests 1")
            .then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "only the /metrics request itself is in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_mid_stream_ends_with_an_error_event() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .json(&chat(
            None,
            json!({"chunks": 5, "reset_after_chunks": 3, "chunk_delay_ms": 20}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = read_events(resp, Instant::now()).await;
    // Three chunks, the error event, then [DONE] (LiteLLM's end of a failed stream).
    assert_eq!(events.len(), 5, "{events:#?}");
    let last: serde_json::Value =
        serde_json::from_str(events[3].1.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "502");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream stream broke")
    );
    assert_eq!(events[4].1, "data: [DONE]");

    // The gateway keeps serving.
    let (status, _, _) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": []}),
        )
        .await;
    assert_eq!(status, 200);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("litellm_proxy_failed_requests_metric_total{"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_timeout_bounds_the_wait_for_the_first_byte() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        r#"
model_list:
  - model_name: slow
    litellm_params:
      model: openai/slow-model
      api_base: {}
      stream_timeout: 0.3
      num_retries: 0
general_settings:
  master_key: {MASTER_KEY}
"#,
        mock.api_base()
    );
    let gw = Gateway::start(&config).await;
    let start = Instant::now();
    let (status, _, body) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "slow", "stream": true, "messages": [], "mock": {"latency_ms": 3000}}),
        )
        .await;
    assert_eq!(status, 408, "{body}");
    assert!(error_message(&body, 408).contains("litellm.Timeout"));
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        start.elapsed()
    );
}
