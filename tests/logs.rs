//! Operations: JSON logs with one access line per request and no secrets in them; host names
//! resolved by the background resolver.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_access_line_per_request_and_no_secrets() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        "{}litellm_settings:\n  json_logs: true\n",
        basic_config(&mock)
    );
    let gw = Gateway::start(&config).await;
    let c = gw.client();
    let (status, headers, _) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let first_id = headers["x-request-id"].to_str().unwrap().to_string();
    let (status, _, _) = c
        .clone()
        .without_key()
        .post_json("/v1/chat/completions", &json!({"model": "gpt-4o"}))
        .await;
    assert_eq!(status, 401);
    let resp = c
        .post("/v1/chat/completions")
        .header("x-litellm-call-id", "client-chosen-id-42")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-litellm-call-id"], "client-chosen-id-42");
    resp.text().await.unwrap();
    // The background writer flushes asynchronously.
    let mut access = Vec::new();
    for _ in 0..50 {
        let logs = gw.logs();
        access = logs
            .lines()
            .filter(|l| l.contains("sluice::access"))
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
            })
            .filter(|v| v["path"] == "/v1/chat/completions")
            .collect();
        if access.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(access.len(), 3, "{}", gw.logs());
    assert_eq!(access[0]["request_id"], first_id);
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["model"], "gpt-4o");
    assert_eq!(access[0]["model_group"], "gpt-4o");
    assert!(access[0]["prompt_tokens"].as_u64().unwrap() >= 1);
    assert_eq!(access[1]["status"], 401);
    assert_eq!(access[1]["error"], "Litellm.AuthenticationError");
    assert_eq!(access[2]["request_id"], "client-chosen-id-42");
    assert_eq!(access[2]["stream"], true);
    assert!(access[2]["ttft_ms"].as_f64().unwrap() >= 0.0);
    for line in gw.logs().lines() {
        assert!(line.starts_with('{'), "every line is JSON: {line}");
    }
    let logs = gw.logs();
    assert!(!logs.contains(MASTER_KEY));
    assert!(!logs.contains("sk-upstream-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_are_resolved_in_the_background() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let base = format!("http://localhost:{}/v1", mock.addr.port());
    let config = format!(
        "model_list:\n  - model_name: named\n    litellm_params:\n      model: openai/x\n      api_base: {base}\nsluice_settings:\n  dns_refresh_seconds: 0.2\n  threads: 1\n"
    );
    let gw = Gateway::start(&config).await;
    for _ in 0..5 {
        let (status, headers, body) = gw
            .client()
            .without_key()
            .post_json(
                "/v1/chat/completions",
                &json!({"model": "named", "messages": []}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["x-litellm-model-api-base"], base.as_str());
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    assert_eq!(
        mock.last_request().unwrap().headers["host"],
        format!("localhost:{}", mock.addr.port())
    );
}

/// Text logs: a client's `model` with a newline and a NUL (and a path with a space) cannot
/// forge an access line; every request is exactly one line. The probe forged
/// `request_id=FORGED ... status=200` this way.
#[tokio::test]
async fn text_logs_escape_what_clients_send() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let forged = "gpt-4o\n2026-01-01T00:00:00.000000Z  INFO sluice::access: access request_id=FORGED method=POST path=/v1/chat/completions status=200\u{0}";
    let (status, _, _) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": forged, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 400);
    let line = eventually(std::time::Duration::from_secs(5), || async {
        gw.logs()
            .lines()
            .find(|l| l.contains("FORGED"))
            .map(str::to_string)
    })
    .await
    .expect("the request's access line");
    let logs = gw.logs();
    assert!(!logs.contains('\0'), "a NUL byte reached the log");
    assert!(
        !logs.lines().any(|l| l.starts_with("2026-01-01T00:00:00")),
        "a forged line:\n{logs}"
    );
    assert!(
        line.contains("sluice::access: access request_id="),
        "{line}"
    );
    assert!(
        line.contains(r#" model="gpt-4o\n2026-01-01T00:00:00.000000Z"#),
        "{line}"
    );
    assert!(line.contains(r#"status=200\u0000""#), "{line}");
    assert!(line.contains(" status=400 "), "{line}");
}
