//! SIGTERM: stop accepting, let in-flight requests (streams included) finish, exit as soon as
//! drained; never wait past the configured grace period.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use support::*;

const SIGTERM: i32 = 15;

fn config(mock: &MockProvider, grace_seconds: u64) -> String {
    basic_config(mock).replace(
        "sluice_settings:\n",
        &format!("sluice_settings:\n  graceful_shutdown_seconds: {grace_seconds}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gateway_exits_promptly_on_sigterm() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let mut gw = Gateway::start(&config(&mock, 60)).await;
    let start = Instant::now();
    gw.signal(SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(5)).await.expect("exits");
    assert!(status.success(), "{status:?}\n{}", gw.logs());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?} (Pingora alone would sleep the whole grace period)",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_streams_finish_before_the_gateway_exits() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let mut gw = Gateway::start(&config(&mock, 60)).await;
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [], "mock": {"chunks": 15, "chunk_delay_ms": 100}}))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    gw.signal(SIGTERM);
    // New connections are no longer accepted (as soon as Pingora closed its listener).
    let refused = eventually(Duration::from_secs(5), || async {
        reqwest::Client::new()
            .get(gw.url("/health/liveliness"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .err()
    })
    .await;
    assert!(
        refused.is_some(),
        "a new connection was accepted while draining"
    );
    // The stream in flight runs to its end.
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(
            &chunk.expect("stream completes without error"),
        ));
    }
    let done_at = Instant::now();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(text.matches("\"content\":\" word").count(), 14);
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits after draining");
    assert!(status.success());
    assert!(
        done_at.elapsed() < Duration::from_secs(2),
        "exited {:?} after the last stream ended",
        done_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_the_wait() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let mut gw = Gateway::start(&config(&mock, 1)).await;
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [], "mock": {"chunks": 100, "chunk_delay_ms": 100}}))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let start = Instant::now();
    gw.signal(SIGTERM);
    let status = gw
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("exits once the grace period is over");
    assert!(status.success() || status.code().is_some(), "{status:?}");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "left after {waited:?}, before the grace period"
    );
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
}
