//! The router between attempts (issue 16, first slice): retries over the route plan, the
//! request's own `num_retries`, backoff only when no other deployment is left, cooldowns out
//! and back in, and LiteLLM's 429 when every deployment is cooling down. Counted against mock
//! providers over real HTTP.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// Two deployments of `pair` (ids `deployment-a`, `deployment-b`, upstream models `model-a`,
/// `model-b`) and a one-deployment group `lone` on `a`, with `router` lines added to
/// `router_settings`.
fn pair_config(a: &MockProvider, b: &str, router: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: pair
    litellm_params: {{model: openai/model-a, api_base: "{a}", api_key: sk-a}}
    model_info: {{id: deployment-a}}
  - model_name: pair
    litellm_params: {{model: openai/model-b, api_base: "{b}", api_key: sk-b}}
    model_info: {{id: deployment-b}}
  - model_name: lone
    litellm_params: {{model: openai/model-lone, api_base: "{a}", api_key: sk-a}}
    model_info: {{id: deployment-lone}}
router_settings:
  num_retries: 2
{router}
sluice_settings:
  threads: 1
"#,
        a = a.api_base(),
    )
}

async fn chat(gw: &Gateway, body: Value) -> (u16, reqwest::header::HeaderMap, Value, Duration) {
    let started = Instant::now();
    let (status, headers, json) = gw.client().post_json("/v1/chat/completions", &body).await;
    (status, headers, json, started.elapsed())
}

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_goes_to_the_other_deployment_at_once_and_cools_the_first_down() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&pair_config(&a, &b.api_base(), "")).await;
    // deployment-a answers 429 (retry-after: 1) to these requests; b answers.
    let body =
        json!({"model": "pair", "messages": [], "mock": {"status_for_model": {"model-a": 429}}});
    let mut retried = None;
    for _ in 0..24 {
        let (status, headers, json, took) = chat(&gw, body.clone()).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(header(&headers, "x-litellm-model-id"), Some("deployment-b"));
        if header(&headers, "x-litellm-attempted-retries") == Some("1") {
            retried = Some((headers.clone(), took));
        } else {
            assert_eq!(header(&headers, "x-litellm-attempted-retries"), Some("0"));
            assert_eq!(header(&headers, "x-litellm-max-retries"), None);
        }
    }
    // Shuffled, a goes first half the time; after its one 429 it cools down (5 s), so it was
    // called exactly once and every request was served by b.
    let (headers, took) = retried.expect("a was never picked first in 24 shuffles");
    assert_eq!(a.calls(), 1, "a cooled down after its 429");
    assert_eq!(b.calls(), 24);
    assert_eq!(header(&headers, "x-litellm-max-retries"), Some("2"));
    // Another deployment takes a retry at once: no backoff, no wait for a's retry-after.
    assert!(
        took < Duration::from_millis(900),
        "the retry waited: {took:?}"
    );
    // The access line lists both attempts.
    let logged = eventually(Duration::from_secs(5), || async {
        gw.logs()
            .lines()
            .find(|l| l.contains(" retries=1 attempts=deployment-a:429:"))
            .map(str::to_string)
    })
    .await
    .expect("an access line with the retry");
    assert!(logged.contains(",deployment-b:200:"), "{logged}");
    // The client never saw a's 429, the metrics did.
    let metrics = gw.metrics().await;
    let line = |name: &str, id: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("model_id=\"{id}\"")))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(
        line(
            "litellm_deployment_failure_responses_total{",
            "deployment-a"
        )
        .as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(
            |l| l.starts_with("litellm_deployment_failure_responses_total{")
                && l.contains("exception_status=\"429\"")
                && l.contains("exception_class=\"Openai.RateLimitError\"")
        ),
        "{metrics}"
    );
    assert_eq!(
        line("litellm_deployment_cooled_down_total{", "deployment-a").as_deref(),
        Some("1")
    );
    assert_eq!(
        line("litellm_deployment_state{", "deployment-a").as_deref(),
        Some("2")
    );
    assert_eq!(
        line("litellm_deployment_state{", "deployment-b").as_deref(),
        Some("0")
    );
    assert_eq!(
        line(
            "litellm_deployment_success_responses_total{",
            "deployment-b"
        )
        .as_deref(),
        Some("24")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_deployment_is_retried_after_its_retry_after() {
    let a = MockProvider::start(MockConfig {
        script: vec![429],
        ..MockConfig::default()
    })
    .await;
    let b = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&pair_config(&a, &b.api_base(), "")).await;
    let (status, headers, json, took) = chat(&gw, json!({"model": "lone", "messages": []})).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(a.calls(), 2, "one 429, one success");
    assert_eq!(header(&headers, "x-litellm-attempted-retries"), Some("1"));
    // The provider said `retry-after: 1`; the retry came after it (plus at most 0.75 s jitter).
    assert!(
        took >= Duration::from_secs(1),
        "retried too early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_refused_connections_are_retried_client_errors_are_not() {
    let a = MockProvider::start(MockConfig {
        script: vec![500, 503],
        ..MockConfig::default()
    })
    .await;
    let b = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&pair_config(&a, &b.api_base(), "")).await;
    // A lone deployment: 500, then 503 (0.5 s and 1 s backoff), then served.
    let (status, headers, json, _) = chat(&gw, json!({"model": "lone", "messages": []})).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(a.calls(), 3);
    assert_eq!(header(&headers, "x-litellm-attempted-retries"), Some("2"));

    // 400, 422 and 404 are not retried: one call each, the provider's answer.
    a.reset();
    for code in [400, 422, 404] {
        let (status, _, json, _) = chat(
            &gw,
            json!({"model": "lone", "messages": [], "mock": {"status": code}}),
        )
        .await;
        assert_eq!(status, code, "{json}");
    }
    assert_eq!(a.calls(), 3, "never retried");
    // A 404 (the model is not there) cools even a lone deployment down, as LiteLLM does; 400
    // and 422 (the request's fault) never do.
    let (status, _, json, _) = chat(&gw, json!({"model": "lone", "messages": []})).await;
    assert_eq!(status, 429, "{json}");
    assert_eq!(json["error"]["type"], "all_deployments_in_cooldown");
    assert_eq!(a.calls(), 3);

    // A deployment nobody listens on: the connection is refused, the other one serves.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(&pair_config(&a, &closed, "")).await;
    a.reset();
    for _ in 0..8 {
        let (status, headers, json, _) = chat(&gw, json!({"model": "pair", "messages": []})).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(header(&headers, "x-litellm-model-id"), Some("deployment-a"));
    }
    assert_eq!(a.calls(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn num_retries_comes_from_the_request_the_header_and_the_config() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&pair_config(&a, &b.api_base(), "  retry_after: 0")).await;
    let failing = |extra: Value| {
        let mut body =
            json!({"model": "lone", "messages": [], "mock": {"status": 500, "retry_after": "0"}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    // router_settings.num_retries: 2 -> three calls, then the provider's error.
    let (status, _, json, _) = chat(&gw, failing(json!({}))).await;
    assert_eq!(status, 500, "{json}");
    assert_eq!(a.calls(), 3);
    // The body's num_retries: 0 -> one call.
    a.reset();
    let (status, _, _, _) = chat(&gw, failing(json!({"num_retries": 0}))).await;
    assert_eq!(status, 500);
    assert_eq!(a.calls(), 1);
    // The header wins over the body.
    a.reset();
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .header("x-litellm-num-retries", "1")
        .json(&failing(json!({"num_retries": 0})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    assert_eq!(a.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_cools_down_and_comes_back_when_its_time_is_up() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let clock = scratch_path("router-clock");
    std::fs::write(&clock, "0").unwrap();
    let gw = Gateway::start_with(
        &pair_config(&a, &b.api_base(), "  cooldown_time: 30"),
        &[],
        &[("SLUICE_TEST_CLOCK_FILE", clock.to_str().unwrap())],
    )
    .await;
    // 401 on a: not retryable in itself, so a is skipped, and it cools down for 30 s even
    // though its failure rate is no rule's business yet.
    let body =
        json!({"model": "pair", "messages": [], "mock": {"status_for_model": {"model-a": 401}}});
    let served = eventually(Duration::from_secs(10), || async {
        let (status, headers, _, _) = chat(&gw, body.clone()).await;
        assert_eq!(status, 200);
        (header(&headers, "x-litellm-attempted-retries") == Some("1")).then_some(())
    })
    .await;
    assert!(served.is_some(), "a was never tried first");
    a.reset();
    let plain = json!({"model": "pair", "messages": []});
    for _ in 0..12 {
        let (status, headers, _, _) = chat(&gw, plain.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "x-litellm-model-id"), Some("deployment-b"));
    }
    assert_eq!(a.calls(), 0, "a is cooling down");
    // 31 s later on the gateway's clock a takes traffic again.
    std::fs::write(&clock, "31000").unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        let (_, headers, _, _) = chat(&gw, plain.clone()).await;
        (header(&headers, "x-litellm-model-id") == Some("deployment-a")).then_some(())
    })
    .await;
    assert!(back.is_some(), "a never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deployment_cooling_down_is_litellms_429_with_retry_after() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&pair_config(&a, &b.api_base(), "  cooldown_time: 5")).await;
    // Both answer 429 with retry-after: 60, so both cool down for 60 s (the provider's
    // retry-after wins over cooldown_time); the client gets the last provider error.
    let body =
        json!({"model": "pair", "messages": [], "mock": {"status": 429, "retry_after": "60"}});
    let (status, _, json, _) = chat(&gw, body).await;
    assert_eq!(status, 429, "{json}");
    assert_eq!(a.calls() + b.calls(), 2, "each tried once");
    let (status, headers, json, _) = chat(&gw, json!({"model": "pair", "messages": []})).await;
    assert_eq!(status, 429, "{json}");
    assert_eq!(header(&headers, "retry-after"), Some("60"));
    assert_eq!(json["error"]["type"], "all_deployments_in_cooldown");
    assert_eq!(json["error"]["code"], "429");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("No deployments available for selected model, Try again in 60 seconds. All deployments for selected model are in cooldown. Passed model=pair."),
        "{message}"
    );
    assert!(
        message.contains("deployment-a") && message.contains("deployment-b"),
        "{message}"
    );
    assert_eq!(
        a.calls() + b.calls(),
        2,
        "nothing called while all cool down"
    );
    // The other group is untouched.
    let (status, _, _, _) = chat(&gw, json!({"model": "lone", "messages": []})).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_reservation_covers_the_dearest_deployment_a_retry_may_reach() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    // cheap: 0.001 per output token; dear: 0.1. With max_tokens 10 the worst cases are 0.01
    // and 1.0; a key with 0.5 left can afford the cheap one only. Fail-closed, so the whole
    // worst case must fit (by default it would be reserved up to the 0.5 left, as LiteLLM).
    let config = format!(
        r#"
model_list:
  - model_name: mixed
    litellm_params: {{model: openai/cheap, api_base: "{a}", input_cost_per_token: 0, output_cost_per_token: 0.001}}
  - model_name: mixed
    litellm_params: {{model: openai/dear, api_base: "{b}", input_cost_per_token: 0, output_cost_per_token: 0.1}}
  - model_name: cheap-only
    litellm_params: {{model: openai/cheap, api_base: "{a}", input_cost_per_token: 0, output_cost_per_token: 0.001}}
  - model_name: guarded
    litellm_params: {{model: openai/cheap, api_base: "{a}", input_cost_per_token: 0, output_cost_per_token: 0.001}}
  - model_name: dear-only
    litellm_params: {{model: openai/dear, api_base: "{b}", input_cost_per_token: 0, output_cost_per_token: 0.1}}
router_settings:
  fallbacks: [{{"guarded": ["dear-only"]}}]
general_settings:
  master_key: {MASTER_KEY}
  fail_closed_budget_enforcement: true
sluice_settings:
  threads: 1
"#,
        a = a.api_base(),
        b = b.api_base(),
    );
    let gw = Gateway::start(&config).await;
    let (status, _, key) = gw
        .client()
        .post_json("/key/generate", &json!({"max_budget": 0.5}))
        .await;
    assert_eq!(status, 200, "{key}");
    let client = as_key(&gw, key["key"].as_str().unwrap());
    // Whichever deployment the shuffle puts first, a retry could reach the dear one: refused
    // every time, before any upstream call.
    for _ in 0..6 {
        let (status, _, body) = client
            .post_json(
                "/v1/chat/completions",
                &json!({"model": "mixed", "messages": [], "max_tokens": 10}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "budget_exceeded", "{body}");
    }
    assert_eq!(a.calls() + b.calls(), 0);
    let (status, _, body) = client
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "cheap-only", "messages": [], "max_tokens": 10}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A cheap group whose fallback is dear: the reservation covers the fallback too, unless
    // the request turns fallbacks off.
    let ask = |disable: bool| json!({"model": "guarded", "messages": [], "max_tokens": 10, "disable_fallbacks": disable});
    let (status, _, body) = client.post_json("/v1/chat/completions", &ask(false)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "budget_exceeded", "{body}");
    let (status, _, body) = client.post_json("/v1/chat/completions", &ask(true)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried_elsewhere_but_a_request_the_provider_may_have_taken_is_not_resent() {
    use sluice_mock::{RawBehavior, RawServer};
    let b = MockProvider::start(MockConfig::default()).await;
    let hung = RawServer::start(RawBehavior::Hang).await;
    let config = |a: &str, timeout: &str| {
        format!(
            r#"
model_list:
  - model_name: pair
    litellm_params: {{model: openai/model-a, api_base: "{a}", timeout: {timeout}}}
    model_info: {{id: deployment-a}}
  - model_name: pair
    litellm_params: {{model: openai/model-b, api_base: "{b}"}}
    model_info: {{id: deployment-b}}
sluice_settings:
  threads: 1
"#,
            b = b.api_base()
        )
    };
    // a never answers: after its 0.3 s timeout the request goes to b, and the client sees b's
    // answer.
    let gw = Gateway::start(&config(&hung.api_base(), "0.3")).await;
    let timed_out = eventually(Duration::from_secs(20), || async {
        let (status, headers, json, took) =
            chat(&gw, json!({"model": "pair", "messages": []})).await;
        assert_eq!(status, 200, "{json}");
        assert_eq!(header(&headers, "x-litellm-model-id"), Some("deployment-b"));
        (header(&headers, "x-litellm-attempted-retries") == Some("1")).then_some(took)
    })
    .await
    .expect("a was never tried first");
    assert!(timed_out >= Duration::from_millis(300), "{timed_out:?}");

    // a reads the request and closes the connection without answering: it may have taken
    // (and billed) it, so it goes nowhere else; the client gets the 502.
    let dropping = RawServer::start(RawBehavior::Close).await;
    let gw = Gateway::start(&config(&dropping.api_base(), "5")).await;
    let body = eventually(Duration::from_secs(20), || async {
        let before = b.calls();
        let (status, _, json, _) = chat(&gw, json!({"model": "pair", "messages": []})).await;
        if status == 502 {
            assert_eq!(b.calls(), before, "the dropped request was sent to b too");
            return Some(json);
        }
        assert_eq!(status, 200, "{json}");
        None
    })
    .await
    .expect("a was never tried first");
    assert_eq!(body["error"]["code"], "502", "{body}");
    assert_eq!(dropping.connections(), 1, "sent to a once");
}

/// Groups `primary` (model-p on a), `backup` (model-b on b), `big` (model-big on b) and
/// `other` (model-o on b), with `router` lines in `router_settings` and no retries.
fn fallback_config(a: &MockProvider, b: &MockProvider, router: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: primary
    litellm_params: {{model: openai/model-p, api_base: "{a}"}}
    model_info: {{id: deployment-p}}
  - model_name: backup
    litellm_params: {{model: openai/model-b, api_base: "{b}"}}
    model_info: {{id: deployment-backup}}
  - model_name: big
    litellm_params: {{model: openai/model-big, api_base: "{b}"}}
    model_info: {{id: deployment-big}}
  - model_name: other
    litellm_params: {{model: openai/model-o, api_base: "{b}"}}
    model_info: {{id: deployment-other}}
router_settings:
  num_retries: 0
{router}
sluice_settings:
  threads: 1
"#,
        a = a.api_base(),
        b = b.api_base(),
    )
}

/// A body whose upstream model `model-p` fails with `status` (and `error_body`, if given).
fn failing_primary(status: u16, error_body: Option<&str>) -> Value {
    let mut mock = json!({"status_for_model": {"model-p": status}});
    if let Some(body) = error_body {
        mock["error_body"] = json!(body);
    }
    json!({"model": "primary", "messages": [{"role": "user", "content": "hi"}], "mock": mock})
}

const CONTEXT_ERROR: &str = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
const POLICY_ERROR: &str = r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_failure_falls_back_to_its_own_list() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let router = r#"  fallbacks: [{"primary": ["backup"]}]
  context_window_fallbacks: [{"primary": ["big"]}]
  content_policy_fallbacks: [{"*": ["other"]}]"#;
    let gw = Gateway::start(&fallback_config(&a, &b, router)).await;
    for (body, served_by) in [
        (failing_primary(500, None), "backup"),
        (failing_primary(429, None), "backup"),
        (failing_primary(400, Some(CONTEXT_ERROR)), "big"),
        (failing_primary(400, Some(POLICY_ERROR)), "other"),
    ] {
        let (status, headers, json, _) = chat(&gw, body.clone()).await;
        assert_eq!(status, 200, "{body} -> {json}");
        assert_eq!(
            header(&headers, "x-litellm-model-group"),
            Some(served_by),
            "{body}"
        );
        assert_eq!(header(&headers, "x-litellm-attempted-fallbacks"), Some("1"));
        assert_eq!(header(&headers, "x-litellm-attempted-retries"), Some("0"));
        // As LiteLLM: the answer names the model that served it.
        assert_eq!(json["model"], served_by, "{json}");
    }
    // The requested group serving: 0 fallbacks.
    let (status, headers, _, _) = chat(&gw, json!({"model": "primary", "messages": []})).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-litellm-attempted-fallbacks"), Some("0"));
    assert_eq!(header(&headers, "x-litellm-model-group"), Some("primary"));
    let metrics = gw.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("litellm_deployment_successful_fallbacks_total{")
                && l.contains("fallback_model=\"backup\"")
                && l.contains("requested_model=\"primary\"")
                && l.contains("exception_status=\"500\"")
                && l.ends_with(" 1")
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_serving_fallback_the_client_gets_the_requested_groups_error() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    // context_window_fallbacks is set but has no entry for primary: a context error gets no
    // fallback at all (not the generic one), as in LiteLLM.
    let router = r#"  fallbacks: [{"primary": ["backup", "other"]}]
  context_window_fallbacks: [{"big": ["other"]}]
  max_fallbacks: 1"#;
    let gw = Gateway::start(&fallback_config(&a, &b, router)).await;
    let (status, _, json, _) = chat(&gw, failing_primary(400, Some(CONTEXT_ERROR))).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(b.calls(), 0, "no fallback for a context error");
    // Both fail: the primary's 503 reaches the client, not backup's 500; max_fallbacks: 1
    // stops before `other`.
    let body = json!({"model": "primary", "messages": [], "mock": {"status_for_model": {"model-p": 503, "model-b": 500}}});
    let (status, _, json, _) = chat(&gw, body).await;
    assert_eq!(status, 503, "{json}");
    assert_eq!(b.calls(), 1, "backup tried, other not (max_fallbacks: 1)");
    let metrics = gw.metrics().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("litellm_deployment_failed_fallbacks_total{")
                && l.contains("fallback_model=\"backup\"")
        ),
        "{metrics}"
    );
    // disable_fallbacks: the primary's error at once.
    b.reset();
    let mut body = failing_primary(500, None);
    body["disable_fallbacks"] = json!(true);
    let (status, _, _, _) = chat(&gw, body).await;
    assert_eq!(status, 500);
    assert_eq!(b.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_fallbacks_and_retries_are_the_gateways_and_never_reach_the_provider() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&fallback_config(&a, &b, "")).await;
    let mut body = failing_primary(500, None);
    body["fallbacks"] = json!(["other"]);
    body["num_retries"] = json!(1);
    let (status, headers, json, _) = chat(&gw, body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(header(&headers, "x-litellm-model-group"), Some("other"));
    assert_eq!(
        a.calls(),
        2,
        "primary tried twice (num_retries: 1 from the body)"
    );
    for sent in a.requests().iter().chain(b.requests().iter()) {
        let sent = sent.json();
        for field in ["fallbacks", "num_retries"] {
            assert!(
                sent.get(field).is_none(),
                "{field} reached the provider: {sent}"
            );
        }
        assert_eq!(sent["messages"][0]["content"], "hi", "the rest is as sent");
    }
    // LiteLLM's other form: [{"model": name}]. A bad value is the client's 400.
    let mut body = failing_primary(500, None);
    body["fallbacks"] = json!([{"model": "backup"}]);
    let (status, headers, _, _) = chat(&gw, body).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-litellm-model-group"), Some("backup"));
    let mut body = failing_primary(500, None);
    body["fallbacks"] = json!("backup");
    let (status, _, json, _) = chat(&gw, body).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["param"], "fallbacks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_cooling_down_falls_back_without_calling_it() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let router = "  fallbacks: [{\"primary\": [\"backup\"]}]\n  cooldown_time: 60";
    let gw = Gateway::start(&fallback_config(&a, &b, router)).await;
    // A 401 cools even a lone deployment down; backup serves this request and the next one,
    // which never reaches primary.
    let (status, _, _, _) = chat(&gw, failing_primary(401, None)).await;
    assert_eq!(status, 200);
    let (status, headers, json, _) = chat(&gw, json!({"model": "primary", "messages": []})).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(header(&headers, "x-litellm-model-group"), Some("backup"));
    assert_eq!(a.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_context_window_error_takes_the_context_window_fallback() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        r#"
model_list:
  - model_name: claude
    litellm_params: {{model: anthropic/claude-small, api_base: "http://{host}", api_key: sk-ant}}
  - model_name: big
    litellm_params: {{model: openai/model-big, api_base: "http://{host}/v1"}}
  - model_name: backup
    litellm_params: {{model: openai/model-b, api_base: "http://{host}/v1"}}
router_settings:
  fallbacks: [{{"claude": ["backup"]}}]
  context_window_fallbacks: [{{"claude": ["big"]}}]
sluice_settings:
  threads: 1
"#,
        host = mock.addr
    );
    let gw = Gateway::start(&config).await;
    // Anthropic's 400 "prompt is too long" is a context-window error: to `big`, not `backup`,
    // and never retried on the same group.
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": "long"}],
        "mock": {"status_for_model": {"claude-small": 400}, "context_overflow": true}});
    let (status, headers, json, _) = chat(&gw, body).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(header(&headers, "x-litellm-model-group"), Some("big"));
    assert_eq!(
        mock.calls_to("/v1/messages"),
        1,
        "no retry of a context error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_the_client_sets_applies_to_each_attempt_and_cools_nothing_down() {
    use sluice_mock::{RawBehavior, RawServer};
    let b = MockProvider::start(MockConfig::default()).await;
    let hung = RawServer::start(RawBehavior::Hang).await;
    let config = format!(
        r#"
model_list:
  - model_name: pair
    litellm_params: {{model: openai/model-a, api_base: "{a}", timeout: 0.3}}
    model_info: {{id: deployment-a}}
  - model_name: pair
    litellm_params: {{model: openai/model-b, api_base: "{b}"}}
    model_info: {{id: deployment-b}}
router_settings:
  num_retries: 0
sluice_settings:
  threads: 1
"#,
        a = hung.api_base(),
        b = b.api_base()
    );
    let gw = Gateway::start(&config).await;
    let cooled = |metrics: &str| {
        metrics.lines().any(|l| {
            l.starts_with("litellm_deployment_cooled_down_total{")
                && l.contains("model_id=\"deployment-a\"")
        })
    };
    // The client's own timeout (header or body): 408 when a is picked, and however often a
    // times out, it is not cooled down.
    let mut timeouts = 0;
    for i in 0..16 {
        let mut request = gw.client().post("/v1/chat/completions");
        let mut body = json!({"model": "pair", "messages": []});
        if i % 2 == 0 {
            request = request.header("x-litellm-timeout", "0.2");
        } else {
            body["timeout"] = json!(0.2);
        }
        let resp = request.json(&body).send().await.unwrap();
        match resp.status().as_u16() {
            200 => {}
            408 => timeouts += 1,
            other => panic!("status {other}"),
        }
    }
    assert!(timeouts >= 3, "a was picked {timeouts} times in 16");
    assert!(
        !cooled(&gw.metrics().await),
        "a client's timeout cooled a down"
    );
    for sent in b.requests() {
        assert!(
            sent.json().get("timeout").is_none(),
            "timeout reached the provider"
        );
    }
    // The deployment's own timeout: more than half of at least 5 requests failing cools it.
    let outcome = eventually(Duration::from_secs(20), || async {
        let (status, _, _, _) = chat(&gw, json!({"model": "pair", "messages": []})).await;
        assert!(status == 200 || status == 408, "{status}");
        cooled(&gw.metrics().await).then_some(())
    })
    .await;
    assert!(
        outcome.is_some(),
        "a was never cooled down by its own timeouts"
    );
    // A bad value is the client's 400.
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .header("x-litellm-timeout", "soon")
        .json(&json!({"model": "pair", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

/// Reads an SSE response to its end: the `data:` payloads.
async fn stream_events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.expect("stream body");
    text.split("\n\n")
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_retried_until_its_first_event_and_never_after() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        r#"
model_list:
  - model_name: pair
    litellm_params: {{model: anthropic/claude-a, api_base: "http://{a}", api_key: sk-ant}}
    model_info: {{id: deployment-a}}
  - model_name: pair
    litellm_params: {{model: openai/model-b, api_base: "{b}"}}
    model_info: {{id: deployment-b}}
  - model_name: openai-pair
    litellm_params: {{model: openai/model-a, api_base: "{b}"}}
    model_info: {{id: deployment-oa}}
  - model_name: openai-pair
    litellm_params: {{model: openai/model-b, api_base: "{b}"}}
    model_info: {{id: deployment-ob}}
router_settings:
  disable_cooldowns: true
sluice_settings:
  threads: 1
"#,
        a = mock.addr,
        b = b.api_base()
    );
    let gw = Gateway::start(&config).await;
    let stream = |group: &str, mock: Value| {
        let request = gw.client().post("/v1/chat/completions").json(&json!({
            "model": group, "stream": true, "messages": [{"role": "user", "content": "hi"}], "mock": mock
        }));
        async move { request.send().await.unwrap() }
    };
    // Anthropic's stream begins with an `error` event (overloaded): nothing is sent yet, so the
    // request goes to b and the client gets one clean stream.
    let first_error = json!({"for_model": {"claude-a": {"stream_error_after": 0}}});
    let retried = eventually(Duration::from_secs(20), || async {
        let resp = stream("pair", first_error.clone()).await;
        assert_eq!(resp.status(), 200);
        let retries = header(resp.headers(), "x-litellm-attempted-retries").map(str::to_string);
        assert_eq!(
            header(resp.headers(), "x-litellm-model-id"),
            Some("deployment-b")
        );
        let events = stream_events(resp).await;
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
        assert!(
            !events.iter().any(|e| e.contains("\"error\"")),
            "{events:?}"
        );
        (retries.as_deref() == Some("1")).then_some(())
    })
    .await;
    assert!(retried.is_some(), "a was never tried first");

    // A connection reset before the first chunk: retried the same way.
    let reset_first = json!({"for_model": {"model-a": {"reset_after_chunks": 0}}});
    let retried = eventually(Duration::from_secs(20), || async {
        let resp = stream("openai-pair", reset_first.clone()).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            header(resp.headers(), "x-litellm-model-id"),
            Some("deployment-ob")
        );
        let retries = header(resp.headers(), "x-litellm-attempted-retries").map(str::to_string);
        let events = stream_events(resp).await;
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
        (retries.as_deref() == Some("1")).then_some(())
    })
    .await;
    assert!(retried.is_some(), "model-a was never tried first");

    // After content went out, a reset is not retried: the stream ends with an error event and
    // [DONE], and the provider was called once.
    b.reset();
    let resp = stream(
        "openai-pair",
        json!({"reset_after_chunks": 2, "chunk_delay_ms": 30}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let events = stream_events(resp).await;
    let n = events.len();
    assert_eq!(events[n - 1], "[DONE]", "{events:?}");
    assert!(events[n - 2].contains("\"error\""), "{events:?}");
    assert_eq!(b.calls(), 1, "no retry once content was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_policy_decides_per_error_class() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let router = "  retry_after: 0\n  retry_policy: {BadRequestErrorRetries: 1, RateLimitErrorRetries: 0}\n  model_group_retry_policy:\n    pair: {InternalServerErrorRetries: 0}";
    let gw = Gateway::start(&pair_config(&a, &b.api_base(), router)).await;
    let lone = |status: u16| json!({"model": "lone", "messages": [], "mock": {"status": status, "retry_after": "0"}});
    // The policy retries a 400 (which num_retries never does) once...
    let (status, _, _, _) = chat(&gw, lone(400)).await;
    assert_eq!(status, 400);
    assert_eq!(a.calls(), 2);
    // ...and a 429 not at all, whatever num_retries (2) says.
    a.reset();
    let (status, _, _, _) = chat(&gw, lone(429)).await;
    assert_eq!(status, 429);
    assert_eq!(a.calls(), 1);
    // A class the policy does not name keeps num_retries: 2.
    a.reset();
    let (status, _, _, _) = chat(&gw, lone(503)).await;
    assert_eq!(status, 503);
    assert_eq!(a.calls(), 3);
    // The group's own policy: no retry of a 500 in `pair`, not even on the other deployment.
    a.reset();
    let body = json!({"model": "pair", "messages": [], "mock": {"status": 500}});
    let (status, _, _, _) = chat(&gw, body).await;
    assert_eq!(status, 500);
    assert_eq!(a.calls() + b.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_testing_parameters_exercise_retries_and_fallbacks_for_admins() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let router = r#"  fallbacks: [{"primary": ["backup"]}]
  context_window_fallbacks: [{"primary": ["big"]}]
general_settings:
  master_key: sk-test-master-1234"#;
    let gw = Gateway::start(&fallback_config(&a, &b, router)).await;
    // LiteLLM's load-balancing walkthrough: the master key sends mock_testing_rate_limit_error;
    // the first attempt fails without calling the provider, the retry is served.
    let (status, headers, json, _) = chat(
        &gw,
        json!({"model": "primary", "messages": [], "mock_testing_rate_limit_error": true, "num_retries": 2}),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(header(&headers, "x-litellm-attempted-retries"), Some("1"));
    assert_eq!(header(&headers, "x-litellm-max-retries"), Some("2"));
    assert_eq!(a.calls(), 1, "only the retry reached the provider");
    assert!(
        a.requests()
            .iter()
            .all(|r| r.json().get("mock_testing_rate_limit_error").is_none()),
        "the parameter reached the provider"
    );
    // mock_testing_fallbacks and the context-window kind go straight to their fallbacks.
    for (flag, served_by) in [
        ("mock_testing_fallbacks", "backup"),
        ("mock_testing_context_fallbacks", "big"),
    ] {
        let (status, headers, json, _) =
            chat(&gw, json!({"model": "primary", "messages": [], flag: true})).await;
        assert_eq!(status, 200, "{flag}: {json}");
        assert_eq!(
            header(&headers, "x-litellm-model-group"),
            Some(served_by),
            "{flag}"
        );
        assert_eq!(header(&headers, "x-litellm-attempted-fallbacks"), Some("1"));
    }
    assert_eq!(
        a.calls(),
        1,
        "the requested group was never called for them"
    );
    // Mocked failures never cool a real deployment down.
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("litellm_deployment_cooled_down_total{"),
        "{metrics}"
    );

    // A virtual key that is not an admin may not send them (LiteLLM's 400).
    let (status, _, key) = gw.client().post_json("/key/generate", &json!({})).await;
    assert_eq!(status, 200, "{key}");
    let user = as_key(&gw, key["key"].as_str().unwrap());
    let (status, _, json) = user
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "primary", "messages": [], "mock_testing_fallbacks": "true"}),
        )
        .await;
    assert_eq!(status, 400, "{json}");
    let message = error_message(&json, 400);
    assert!(
        message.starts_with(
            "Mock testing request params are disabled on this proxy: mock_testing_fallbacks."
        ),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_timeout_waits_out_the_timeout_and_the_setting_opens_mocks_to_every_key() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let router = r#"general_settings:
  master_key: sk-test-master-1234
  dangerously_allow_mock_testing_request_params: true"#;
    let gw = Gateway::start(&fallback_config(&a, &b, router)).await;
    let (status, _, key) = gw.client().post_json("/key/generate", &json!({})).await;
    assert_eq!(status, 200, "{key}");
    let user = as_key(&gw, key["key"].as_str().unwrap());
    let started = Instant::now();
    let (status, _, json) = user
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "primary", "messages": [], "mock_timeout": true, "timeout": 0.3}),
        )
        .await;
    assert_eq!(status, 408, "{json}");
    assert!(error_message(&json, 408).contains("mock timeout"), "{json}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.calls(), 0, "no provider call");
    assert!(
        gw.logs()
            .contains("dangerously_allow_mock_testing_request_params")
    );
}

/// `pair` with deployments a (model-a) and b (model-b) on one mock, and `strategy` lines.
fn strategy_config(mock: &MockProvider, strategy: &str, deployment_extra: (&str, &str)) -> String {
    format!(
        r#"
model_list:
  - model_name: pair
    litellm_params: {{model: openai/model-a, api_base: "{base}"{a_extra}}}
    model_info: {{id: deployment-a}}
  - model_name: pair
    litellm_params: {{model: openai/model-b, api_base: "{base}"{b_extra}}}
    model_info: {{id: deployment-b}}
router_settings:
{strategy}
sluice_settings:
  threads: 1
"#,
        base = mock.api_base(),
        a_extra = deployment_extra.0,
        b_extra = deployment_extra.1,
    )
}

async fn served_by(gw: &Gateway, body: Value) -> String {
    let (status, headers, json, _) = chat(gw, body).await;
    assert_eq!(status, 200, "{json}");
    header(&headers, "x-litellm-model-id").unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_sends_a_request_to_the_idle_deployment() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&strategy_config(
        &mock,
        "  routing_strategy: least-busy",
        ("", ""),
    ))
    .await;
    for _ in 0..4 {
        // One slow request holds a deployment; the next goes to the other one.
        let slow = json!({"model": "pair", "messages": [], "mock": {"latency_ms": 400}});
        let before = mock.calls();
        let busy = {
            let gw_client = gw.client();
            tokio::spawn(async move {
                let (_, headers, _) = gw_client.post_json("/v1/chat/completions", &slow).await;
                header(&headers, "x-litellm-model-id").unwrap().to_string()
            })
        };
        // Wait until the slow one is in flight at the provider.
        eventually(Duration::from_secs(5), || async {
            (mock.calls() > before).then_some(())
        })
        .await
        .expect("the slow request reached the provider");
        let quick = served_by(&gw, json!({"model": "pair", "messages": []})).await;
        let slow = busy.await.unwrap();
        assert_ne!(quick, slow, "the busy deployment got the request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_based_prefers_the_faster_deployment_and_retries_the_slower_after_ttl() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let clock = scratch_path("latency-clock");
    std::fs::write(&clock, "0").unwrap();
    let strategy = "  routing_strategy: latency-based-routing\n  routing_strategy_args: {ttl: 60}";
    let gw = Gateway::start_with(
        &strategy_config(&mock, strategy, ("", "")),
        &[],
        &[("SLUICE_TEST_CLOCK_FILE", clock.to_str().unwrap())],
    )
    .await;
    // a answers in 150 ms, b at once.
    let body = json!({"model": "pair", "messages": [], "mock": {"for_model": {"model-a": {"latency_ms": 150}}}});
    // Unseen deployments go first: both are tried once, then b every time.
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(served_by(&gw, body.clone()).await);
    }
    first.sort();
    assert_eq!(first, ["deployment-a", "deployment-b"]);
    for _ in 0..8 {
        assert_eq!(served_by(&gw, body.clone()).await, "deployment-b");
    }
    // After the ttl the samples are forgotten: a is unseen again and tried again.
    std::fs::write(&clock, "61000").unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        (served_by(&gw, body.clone()).await == "deployment-a").then_some(())
    })
    .await;
    assert!(back.is_some(), "a never came back after the ttl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_based_picks_the_cheapest_and_usage_based_respects_rpm() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let prices = (
        ", input_cost_per_token: 0.00001, output_cost_per_token: 0.00003",
        ", input_cost_per_token: 0.000001, output_cost_per_token: 0.000002",
    );
    let gw = Gateway::start(&strategy_config(
        &mock,
        "  routing_strategy: cost-based-routing",
        prices,
    ))
    .await;
    for _ in 0..6 {
        assert_eq!(
            served_by(&gw, json!({"model": "pair", "messages": []})).await,
            "deployment-b"
        );
    }

    // usage-based: a may take 2 requests a minute, b 3; the sixth request finds both full.
    let limits = (", rpm: 2", ", rpm: 3");
    let gw = Gateway::start(&strategy_config(
        &mock,
        "  routing_strategy: usage-based-routing-v2",
        limits,
    ))
    .await;
    let mut served = std::collections::HashMap::new();
    for _ in 0..5 {
        *served
            .entry(served_by(&gw, json!({"model": "pair", "messages": []})).await)
            .or_insert(0) += 1;
    }
    assert_eq!(served.get("deployment-a"), Some(&2), "{served:?}");
    assert_eq!(served.get("deployment-b"), Some(&3), "{served:?}");
    let (status, headers, json, _) = chat(&gw, json!({"model": "pair", "messages": []})).await;
    assert_eq!(status, 429, "{json}");
    assert_eq!(header(&headers, "retry-after"), Some("60"));
    assert!(
        error_message(&json, 429).starts_with("No deployments available for selected model."),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_call_checks_leave_out_deployments_the_prompt_is_too_long_for() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        r#"
model_list:
  - model_name: mixed
    litellm_params: {{model: openai/small, api_base: "{base}"}}
    model_info: {{id: deployment-small, max_input_tokens: 20}}
  - model_name: mixed
    litellm_params: {{model: openai/large, api_base: "{base}"}}
    model_info: {{id: deployment-large, max_input_tokens: 100000}}
  - model_name: small-only
    litellm_params: {{model: openai/small, api_base: "{base}"}}
    model_info: {{id: deployment-small-only, max_input_tokens: 20}}
  - model_name: large-only
    litellm_params: {{model: openai/large, api_base: "{base}"}}
    model_info: {{max_input_tokens: 100000}}
router_settings:
  enable_pre_call_checks: true
  context_window_fallbacks: [{{"small-only": ["large-only"]}}]
sluice_settings:
  threads: 1
"#,
        base = mock.api_base()
    );
    let gw = Gateway::start(&config).await;
    let long = "the quick brown fox jumps over the lazy dog ".repeat(20);
    let ask =
        |group: &str| json!({"model": group, "messages": [{"role": "user", "content": long}]});
    // The small deployment is never called with the long prompt.
    for _ in 0..8 {
        assert_eq!(served_by(&gw, ask("mixed")).await, "deployment-large");
    }
    assert!(
        mock.requests().iter().all(|r| r.json()["model"] != "small"),
        "the small deployment was called"
    );
    // A group where nothing fits: its context-window fallback, without calling it.
    let (status, headers, json, _) = chat(&gw, ask("small-only")).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        header(&headers, "x-litellm-model-group"),
        Some("large-only")
    );
    // A short prompt still goes anywhere.
    let short = json!({"model": "small-only", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(served_by(&gw, short).await, "deployment-small-only");
    // Without a fallback: LiteLLM's context-window error.
    let config = config.replace(
        "  context_window_fallbacks: [{\"small-only\": [\"large-only\"]}]\n",
        "",
    );
    let gw = Gateway::start(&config).await;
    let (status, _, json, _) = chat(&gw, ask("small-only")).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["code"], "context_length_exceeded");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("litellm._pre_call_checks: Context Window exceeded for given call."),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spend_log_records_the_attempts_a_retry_hid() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let router =
        "general_settings:\n  master_key: sk-test-master-1234\n  proxy_batch_write_at: 0.2";
    let gw = Gateway::start(&pair_config(&a, &b.api_base(), router)).await;
    let body =
        json!({"model": "pair", "messages": [], "mock": {"status_for_model": {"model-a": 429}}});
    // Until a is tried first (then retried on b).
    let request_id = eventually(Duration::from_secs(20), || async {
        let (status, headers, json, _) = chat(&gw, body.clone()).await;
        assert_eq!(status, 200, "{json}");
        (header(&headers, "x-litellm-attempted-retries") == Some("1"))
            .then(|| header(&headers, "x-litellm-call-id").unwrap().to_string())
    })
    .await
    .expect("a was never tried first");
    let row = eventually(Duration::from_secs(10), || async {
        let (status, rows) = gw
            .client()
            .get_json(&format!("/spend/logs?request_id={request_id}"))
            .await;
        assert_eq!(status, 200, "{rows}");
        rows.as_array().and_then(|r| r.first().cloned())
    })
    .await
    .expect("the spend-log row was written");
    assert_eq!(row["model_id"], "deployment-b", "{row}");
    let metadata = &row["metadata"];
    assert_eq!(metadata["attempted_retries"], 1, "{row}");
    assert_eq!(metadata["max_retries"], 2, "{row}");
    assert_eq!(metadata["attempted_fallbacks"], 0, "{row}");
    assert_eq!(
        metadata["previous_models"][0]["model_id"], "deployment-a",
        "{row}"
    );
    assert_eq!(metadata["previous_models"][0]["status"], 429, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_bring_its_own_context_window_and_content_policy_fallbacks() {
    let a = MockProvider::start(MockConfig::default()).await;
    let b = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&fallback_config(&a, &b, "")).await;
    for own in [json!([{"primary": ["big"]}]), json!(["big"])] {
        let mut body = failing_primary(400, Some(CONTEXT_ERROR));
        body["context_window_fallbacks"] = own.clone();
        body["content_policy_fallbacks"] = json!([{"primary": ["other"]}]);
        let (status, headers, json, _) = chat(&gw, body).await;
        assert_eq!(status, 200, "{own}: {json}");
        assert_eq!(
            header(&headers, "x-litellm-model-group"),
            Some("big"),
            "{own}"
        );
    }
    // Lists for other kinds of error do not serve a 500, and nothing of them reaches a provider.
    let mut body = failing_primary(500, None);
    body["context_window_fallbacks"] = json!(["big"]);
    let (status, _, _, _) = chat(&gw, body).await;
    assert_eq!(status, 500);
    for sent in a.requests().iter().chain(b.requests().iter()) {
        let sent = sent.json();
        assert!(sent.get("context_window_fallbacks").is_none(), "{sent}");
        assert!(sent.get("content_policy_fallbacks").is_none(), "{sent}");
    }
    let mut body = failing_primary(400, Some(CONTEXT_ERROR));
    body["context_window_fallbacks"] = json!({"primary": "big"});
    let (status, _, json, _) = chat(&gw, body).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["param"], "context_window_fallbacks", "{json}");
}
