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
    // and 1.0; a key with 0.5 left can afford the cheap one only.
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
    assert_eq!(mock.calls_to("/v1/messages"), 1, "no retry of a context error");
}
