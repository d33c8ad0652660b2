//! Bad input and broken upstreams: every case gets a clear OpenAI-style error with the right
//! status, and the gateway keeps serving afterwards.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_mock::{RawBehavior, RawServer};
use support::*;

async fn still_serving(gw: &Gateway) {
    let (status, _, body) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "ok?"}]}),
        )
        .await;
    assert_eq!(status, 200, "gateway stopped serving: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_are_400_404_405_and_413() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = basic_config(&mock).replace(
        "general_settings:\n",
        "general_settings:\n  max_request_size_mb: 1\n",
    );
    let gw = Gateway::start(&config).await;
    let c = gw.client();

    let resp = c
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(r#"{"model": "gpt-4o", "messages": [}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    let message = error_message(&body, 400);
    assert!(message.starts_with("Invalid JSON payload"), "{message}");
    assert_eq!(body["error"]["param"], "request_body");

    let (status, _, body) = c
        .post_json("/v1/chat/completions", &json!({"messages": []}))
        .await;
    assert_eq!(status, 400);
    assert!(error_message(&body, 400).contains("Invalid model name passed in model=None"));

    let (status, _, body) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-5-nope", "messages": []}),
        )
        .await;
    assert_eq!(status, 400);
    let message = error_message(&body, 400);
    assert!(
        message.contains("Invalid model name passed in model=gpt-5-nope"),
        "{message}"
    );
    assert!(message.starts_with("/chat/completions: "), "{message}");

    let (status, _, body) = c
        .post_json("/v1/chat/completions", &json!({"model": 42}))
        .await;
    assert_eq!(status, 400);
    assert!(error_message(&body, 400).contains("`model`"));

    let big = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(2 * 1024 * 1024)}]});
    let (status, _, body) = c.post_json("/v1/chat/completions", &big).await;
    assert_eq!(status, 413);
    assert!(error_message(&body, 413).contains("max_request_size_mb"));

    let (status, body) = c.get_json("/v1/nothing-here").await;
    assert_eq!(status, 404);
    error_message(&body, 404);
    let (status, body) = c.get_json("/v1/chat/completions").await;
    assert_eq!(status, 405);
    error_message(&body, 405);

    assert_eq!(mock.calls(), 0, "no bad request reached the provider");
    still_serving(&gw).await;
}

/// Chat `messages`, embeddings `input` and completions `prompt` are checked before routing:
/// a body without them is a 400 in OpenAI's words, and the provider is never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_missing_what_the_endpoint_needs_never_reach_the_provider() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let c = gw.client();
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o"}),
            "messages",
            "Missing required parameter: 'messages'.",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": "hello"}),
            "messages",
            "Invalid type for 'messages': expected an array, but got a string instead.",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "a"}, 7]}),
            "messages[1]",
            "Invalid type for 'messages[1]': expected an object, but got a number instead.",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"content": "no role"}]}),
            "messages[0].role",
            "Missing required parameter: 'messages[0].role'.",
        ),
        (
            "/v1/messages",
            json!({"model": "gpt-4o", "max_tokens": 5}),
            "messages",
            "Missing required parameter: 'messages'.",
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding"}),
            "input",
            "Missing required parameter: 'input'.",
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding", "input": {"text": "x"}}),
            "input",
            "Invalid type for 'input': expected one of a string, array of strings, array of integers, or array of arrays of integers, but got an object instead.",
        ),
        (
            "/v1/completions",
            json!({"model": "instruct", "max_tokens": 3}),
            "prompt",
            "Missing required parameter: 'prompt'.",
        ),
    ];
    for (path, body, param, message) in cases {
        let (status, _, answer) = c.post_json(path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(error_message(&answer, 400), message, "{path} {body}");
        assert_eq!(answer["error"]["param"], param, "{path} {body}");
        assert_eq!(answer["error"]["type"], "invalid_request_error");
    }
    // The model is judged first, as LiteLLM does.
    let (status, _, answer) = c
        .post_json("/v1/chat/completions", &json!({"model": "nope"}))
        .await;
    assert_eq!(status, 400);
    assert!(error_message(&answer, 400).contains("Invalid model name passed in model=nope"));
    assert_eq!(mock.calls(), 0, "no invalid body reached the provider");
    // Well-formed bodies of each kind still go through.
    for (path, body) in [
        (
            "/v1/embeddings",
            json!({"model": "text-embedding", "input": ["a", "b"]}),
        ),
        (
            "/v1/completions",
            json!({"model": "instruct", "prompt": "Say hi"}),
        ),
    ] {
        let (status, _, answer) = c.post_json(path, &body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    still_serving(&gw).await;
    assert_eq!(mock.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_pass_through_with_their_status_and_body() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let c = gw.client();

    let resp = c
        .post("/v1/chat/completions")
        .json(&json!({"model": "gpt-4o", "messages": [], "mock": {"status": 429}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(resp.headers().contains_key("x-litellm-model-id"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["type"], "rate_limit_error",
        "the provider's own error body: {body}"
    );
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    // A non-JSON error page is wrapped in an OpenAI error, status kept.
    let (status, _, body) = c
        .post_json("/v1/chat/completions", &json!({"model": "gpt-4o", "messages": [], "mock": {"status": 503, "error_body": "<html>upstream down</html>"}}))
        .await;
    assert_eq!(status, 503);
    assert!(error_message(&body, 503).contains("<html>upstream down</html>"));

    // A 200 whose body is not JSON.
    let (status, _, body) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o", "messages": [], "mock": {"invalid_json": true}}),
        )
        .await;
    assert_eq!(status, 502);
    assert!(error_message(&body, 502).contains("not a JSON object"));

    let metrics = gw.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("litellm_proxy_failed_requests_metric_total{")
                && l.contains(r#"exception_status="429""#)
                && l.contains(r#"exception_class="Openai.RateLimitError""#)
        ),
        "{metrics}"
    );
    assert!(metrics.lines().any(
        |l| l.starts_with("litellm_deployment_failure_responses_total{")
            && l.contains(r#"exception_status="503""#)
    ));
    still_serving(&gw).await;
}

/// A config whose `gpt-4o` group points at `base` (and a healthy `ok` group at the mock).
fn config_with(base: &str, mock: &MockProvider, extra: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: broken
    litellm_params:
      model: openai/broken
      api_base: {base}
{extra}
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {ok}
general_settings:
  master_key: {MASTER_KEY}
sluice_settings:
  threads: 1
  upstream_connect_timeout: 0.5
"#,
        ok = mock.api_base()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_garbage_and_resetting_upstreams_are_502() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let closed_port = free_port();
    let garbage = RawServer::start(RawBehavior::Reply(bytes::Bytes::from_static(
        b"\x00\x01garbage that is not HTTP\r\n\r\n",
    )))
    .await;
    let reset = RawServer::start(RawBehavior::Close).await;
    for (base, expect) in [
        (
            format!("http://127.0.0.1:{closed_port}/v1"),
            "connection refused",
        ),
        (garbage.api_base(), ""),
        (reset.api_base(), ""),
    ] {
        let gw = Gateway::start(&config_with(&base, &mock, "")).await;
        let (status, headers, body) = gw
            .client()
            .post_json(
                "/v1/chat/completions",
                &json!({"model": "broken", "messages": []}),
            )
            .await;
        assert_eq!(status, 502, "{base}: {body}");
        let message = error_message(&body, 502);
        assert!(message.contains("broken"), "{message}");
        assert!(message.contains(expect), "{message}");
        assert!(headers.contains_key("x-request-id"));
        still_serving(&gw).await;
    }
    assert!(garbage.connections() >= 1);
    assert!(reset.connections() >= 1);
}

/// A pooled connection the provider closed while it sat in the pool is not used: the next
/// request goes out once, on a fresh connection, and every request reaches the provider whole
/// (head and body written together, `Host`, `Content-Length` and the rewritten model as sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_provider_closed_is_not_used() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let answer = r#"{"id":"chatcmpl-raw","object":"chat.completion","created":1,"model":"broken","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
        answer.len()
    );
    let raw = RawServer::start(RawBehavior::CloseAfterReply(bytes::Bytes::from(
        reply.clone(),
    )))
    .await;
    let gw = Gateway::start(&config_with(&raw.api_base(), &mock, "")).await;
    for content in ["first", "second"] {
        let (status, _, body) = gw
            .client()
            .post_json(
                "/v1/chat/completions",
                &json!({"model": "broken", "messages": [{"role": "user", "content": content}]}),
            )
            .await;
        assert_eq!(status, 200, "{content}: {body}");
        assert_eq!(body["choices"][0]["message"]["content"], "hi");
    }
    // Each request went out once, on a connection of its own.
    assert_eq!(raw.connections(), 2);
    let requests = raw.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for (request, content) in requests.iter().zip(["first", "second"]) {
        let text = String::from_utf8(request.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let lines: Vec<&str> = head.split("\r\n").collect();
        assert_eq!(lines[0], "POST /v1/chat/completions HTTP/1.1", "{head}");
        let header = |name: &str| {
            lines[1..]
                .iter()
                .filter_map(|l| l.split_once(": "))
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .collect::<Vec<_>>()
        };
        assert_eq!(header("host"), [raw.addr.to_string()], "{head}");
        assert_eq!(header("content-length"), [body.len().to_string()], "{head}");
        assert_eq!(header("content-type"), ["application/json"], "{head}");
        assert_eq!(header("user-agent").len(), 1, "{head}");
        assert!(header("user-agent")[0].starts_with("sluice/"), "{head}");
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            sent["model"], "broken",
            "the deployment's model, prefix stripped"
        );
        assert_eq!(sent["messages"][0]["content"], content);
    }
    still_serving(&gw).await;

    // A provider that reads a request on a kept-alive connection and then drops the
    // connection may have received (and billed) it: the request is not sent again, on this
    // deployment or another (docs/routing.md); the client gets a 502 that says so.
    let raw = RawServer::start(RawBehavior::OnePerConnection(bytes::Bytes::from(reply))).await;
    let gw = Gateway::start(&config_with(&raw.api_base(), &mock, "")).await;
    let (status, _, _) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "broken", "messages": [{"role": "user", "content": "first"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _, body) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "broken", "messages": [{"role": "user", "content": "second"}]}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        error_message(&body, 502).contains("it was not sent again"),
        "{body}"
    );
    assert_eq!(raw.requests().len(), 2, "the request was sent twice");
    still_serving(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_times_out_with_litellms_408() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let hung = RawServer::start(RawBehavior::Hang).await;
    // No retries: this is about one attempt's timeout (tests/router.rs retries them).
    let gw = Gateway::start(&config_with(
        &hung.api_base(),
        &mock,
        "      timeout: 0.4\n      num_retries: 0",
    ))
    .await;
    let start = Instant::now();
    let (status, _, body) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "broken", "messages": []}),
        )
        .await;
    // LiteLLM's litellm.Timeout (a provider's own 504 stays 504).
    assert_eq!(status, 408, "{body}");
    assert!(
        error_message(&body, 408)
            .starts_with("litellm.Timeout: APITimeoutError - Request timed out."),
        "{body}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    still_serving(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_hosts_are_a_clear_502_not_a_panic() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&config_with("http://no-such-host.invalid/v1", &mock, "")).await;
    let (status, _, body) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "broken", "messages": []}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(error_message(&body, 502).contains("no-such-host.invalid"));
    still_serving(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_not_supported_yet_answer_501() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = basic_config(&mock).replace(
        "model_list:\n",
        "model_list:\n  - model_name: claude\n    litellm_params:\n      model: replicate/meta/llama-3-70b\n      api_key: r8-x\n",
    );
    let gw = Gateway::start(&config).await;
    let (status, _, body) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "claude", "messages": []}),
        )
        .await;
    assert_eq!(status, 501);
    assert!(error_message(&body, 501).contains("replicate"));
    assert!(
        gw.logs().contains("is not supported by Sluice yet"),
        "{}",
        gw.logs()
    );
    still_serving(&gw).await;
}
