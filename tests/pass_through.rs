//! Provider pass-through routes (`/anthropic`, `/openai`, `/gemini`, `/bedrock`, `/cohere`)
//! through the real gateway against the mock provider, which speaks every provider's format:
//! the providers' own SDKs with a Sluice virtual key, the gateway's credentials sent in its
//! place (Bedrock re-signed), answers and streams relayed as the provider sent them, spend
//! booked from the answers' usage at the price table's prices, and the refusals.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

/// The mock's root URL (its `api_base` without `/v1`): what a provider's base variable holds.
fn root(mock: &MockProvider) -> String {
    mock.api_base().trim_end_matches("/v1").to_string()
}

fn config(mock: &MockProvider) -> String {
    format!(
        r#"
model_list:
  - model_name: claude-direct
    litellm_params:
      model: anthropic/claude-haiku-4-5-20251001
      api_base: {root}
      api_key: sk-ant-from-deployment
      use_in_pass_through: true
  - model_name: bedrock-claude
    litellm_params:
      model: bedrock/anthropic.claude-3-5-haiku-20241022-v1:0
      aws_access_key_id: AKIDDEPLOYMENT
      aws_secret_access_key: deployment-secret
      aws_region_name: us-west-2
      aws_bedrock_runtime_endpoint: {root}
general_settings:
  master_key: {MASTER_KEY}
  database_url: {db}
  proxy_batch_write_at: 0.2
sluice_settings:
  threads: 2
"#,
        root = root(mock),
        db = test_database_url(),
    )
}

async fn start(mock: &MockProvider) -> Gateway {
    let root = root(mock);
    let env = [
        ("ANTHROPIC_API_BASE", root.as_str()),
        // The `use_in_pass_through` deployment's key wins over this one.
        ("ANTHROPIC_API_KEY", "sk-ant-from-env"),
        ("OPENAI_API_BASE", root.as_str()),
        ("OPENAI_API_KEY", "sk-openai-provider"),
        ("GEMINI_API_BASE", root.as_str()),
        ("GEMINI_API_KEY", "gemini-provider-key"),
        ("COHERE_API_BASE", root.as_str()),
        ("COHERE_API_KEY", "co-provider-key"),
        ("AZURE_API_BASE", root.as_str()),
        ("AZURE_API_KEY", "az-provider-key"),
        ("AWS_BEDROCK_RUNTIME_ENDPOINT", root.as_str()),
        ("AWS_ACCESS_KEY_ID", "AKIDENVIRONMENT"),
        ("AWS_SECRET_ACCESS_KEY", "environment-secret"),
        ("AWS_REGION_NAME", "eu-central-1"),
        ("MISTRAL_API_KEY", ""),
    ];
    Gateway::start_with(&config(mock), &[], &env).await
}

async fn new_key(gw: &Gateway, body: Value) -> String {
    let (status, _, key) = gw.client().post_json("/key/generate", &body).await;
    assert_eq!(status, 200, "{key}");
    key["key"].as_str().unwrap().to_string()
}

/// What `usage` costs at the price table's prices for `model` (the table the gateway embeds).
fn table_cost(model: &str, input: u64, output: u64) -> f64 {
    static TABLE: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/model_prices_and_context_window.json"
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    });
    let entry = &table[model];
    assert!(entry.is_object(), "{model} is in the price table");
    input as f64 * entry["input_cost_per_token"].as_f64().unwrap()
        + output as f64 * entry["output_cost_per_token"].as_f64().unwrap()
}

/// Waits until the key's recorded spend is `want` (to 1e-9) and returns it.
async fn spend_reaches(gw: &Gateway, key: &str, want: f64) -> f64 {
    let admin = gw.client();
    let found = eventually(Duration::from_secs(10), || async {
        let (_, info) = admin.get_json(&format!("/key/info?key={key}")).await;
        let spend = info["info"]["spend"].as_f64()?;
        ((spend - want).abs() < 1e-9).then_some(spend)
    })
    .await;
    let (_, info) = admin.get_json(&format!("/key/info?key={key}")).await;
    found.unwrap_or_else(|| panic!("key spend reaches {want}: {}", info["info"]["spend"]))
}

/// POSTs `body` to `path` and returns the answer's JSON, which must be a 200.
async fn answer_of(client: &Client, path: &str, body: &Value) -> Value {
    let resp = client.post(path).json(body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().await.unwrap()
}

/// The provider's last request went to a Bedrock model path, signed with `access_key_id`.
fn signed_by(mock: &MockProvider, access_key_id: &str) {
    let r = mock.last_request().unwrap();
    assert!(
        r.path.starts_with("/model/anthropic.claude-3-5-haiku"),
        "{}",
        r.path
    );
    let auth = &r.headers["authorization"];
    let want = format!("AWS4-HMAC-SHA256 Credential={access_key_id}/");
    assert!(auth.starts_with(&want), "{auth}");
}

/// No request the provider received carries the virtual key anywhere.
fn key_never_reached_the_provider(mock: &MockProvider, key: &str) {
    for r in mock.requests() {
        assert!(!r.query.contains(key), "{} query: {}", r.path, r.query);
        for (name, value) in &r.headers {
            assert!(!value.contains(key), "{} header {name}: {value}", r.path);
        }
        assert!(
            !String::from_utf8_lossy(&r.body).contains(key),
            "{} body",
            r.path
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_and_openai_sdks_work_through_the_pass_through_routes_with_a_virtual_key() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = start(&mock).await;
    let key = new_key(&gw, json!({"max_budget": 100})).await;
    let python = tokio::task::spawn_blocking(python_with_openai)
        .await
        .unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/pass_through_sdk_check.py"
    );
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(gw.url(""))
        .arg(&key)
        .arg("claude-haiku-4-5-20251001")
        .arg("gpt-4o-mini")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}\n--- gateway log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        gw.logs()
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    for text in [
        "anthropic_text",
        "anthropic_stream_text",
        "openai_text",
        "openai_stream_text",
    ] {
        assert!(
            !summary[text].as_str().unwrap().is_empty(),
            "{text}: {summary}"
        );
    }
    assert_eq!(summary["anthropic_error"], json!([429, "rate_limit_error"]));

    let requests = mock.requests();
    let anthropic: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert_eq!(anthropic.len(), 3, "create, stream, the 429");
    for r in &anthropic {
        assert_eq!(
            r.headers["x-api-key"], "sk-ant-from-deployment",
            "the use_in_pass_through deployment's key, before ANTHROPIC_API_KEY"
        );
        assert!(
            r.headers.contains_key("anthropic-version"),
            "the SDK's headers go on"
        );
    }
    let openai: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .collect();
    assert_eq!(openai.len(), 2);
    for r in &openai {
        assert_eq!(r.headers["authorization"], "Bearer sk-openai-provider");
    }
    key_never_reached_the_provider(&mock, &key);

    // Spend: every answer's usage at the table's price of the model it names.
    let usage = |name: &str| {
        let u = &summary[name];
        (u[0].as_u64().unwrap(), u[1].as_u64().unwrap())
    };
    let mut want = 0.0;
    for name in ["anthropic_usage", "anthropic_stream_usage"] {
        let (i, o) = usage(name);
        assert!(i > 0 && o > 0, "{name}: {summary}");
        want += table_cost("claude-haiku-4-5-20251001", i, o);
    }
    for name in ["openai_usage", "openai_stream_usage"] {
        let (i, o) = usage(name);
        want += table_cost("gpt-4o-mini", i, o);
    }
    assert!(want > 0.0);
    spend_reaches(&gw, &key, want).await;

    // Spend logs name the route's call type and the provider.
    let (status, logs) = gw
        .client()
        .get_json(&format!("/spend/logs?api_key={key}"))
        .await;
    assert_eq!(status, 200, "{logs}");
    let rows = logs.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["call_type"] == "pass_through_endpoint"),
        "{logs}"
    );
    assert!(
        rows.iter().any(|r| r["custom_llm_provider"] == "anthropic"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_bedrock_cohere_and_azure_are_forwarded_with_the_gateways_credentials_and_priced() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = start(&mock).await;
    let key = new_key(&gw, json!({})).await;
    let client = as_key(&gw, &key);
    let open = gw.client().without_key();
    let hello = json!({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]});
    let mut want = 0.0;

    // Google's SDKs send the key as `?key=`: it is read there and replaced.
    let resp = open
        .post(&format!(
            "/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={key}"
        ))
        .json(&hello)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let meta = &answer["usageMetadata"];
    want += table_cost(
        "gemini/gemini-2.5-flash",
        meta["promptTokenCount"].as_u64().unwrap(),
        meta["candidatesTokenCount"].as_u64().unwrap(),
    );
    let r = mock.last_request().unwrap();
    assert_eq!(r.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(r.query, "key=gemini-provider-key");

    // A stream comes back as the provider sent it.
    let resp = open
        .post(&format!(
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={key}"
        ))
        .json(&hello)
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
    let text = resp.text().await.unwrap();
    let last: Value = serde_json::from_str(
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .unwrap(),
    )
    .unwrap();
    let meta = &last["usageMetadata"];
    want += table_cost(
        "gemini/gemini-2.5-flash",
        meta["promptTokenCount"].as_u64().unwrap(),
        meta["candidatesTokenCount"].as_u64().unwrap(),
    );
    assert_eq!(
        mock.last_request().unwrap().query,
        "alt=sse&key=gemini-provider-key"
    );

    // Bedrock, re-signed with the environment's credentials.
    let converse = json!({"messages": [{"role": "user", "content": [{"text": "Say hello"}]}]});
    let model = "anthropic.claude-3-5-haiku-20241022-v1:0";
    let answer = answer_of(
        &client,
        &format!("/bedrock/model/{model}/converse"),
        &converse,
    )
    .await;
    want += table_cost(
        model,
        answer["usage"]["inputTokens"].as_u64().unwrap(),
        answer["usage"]["outputTokens"].as_u64().unwrap(),
    );
    signed_by(&mock, "AKIDENVIRONMENT");
    let auth = &mock.last_request().unwrap().headers["authorization"];
    assert!(
        auth.contains("/eu-central-1/bedrock/aws4_request"),
        "{auth}"
    );

    // A path naming a model group goes to its deployment, with its credentials and model id.
    let answer = answer_of(&client, "/bedrock/model/bedrock-claude/converse", &converse).await;
    want += table_cost(
        model,
        answer["usage"]["inputTokens"].as_u64().unwrap(),
        answer["usage"]["outputTokens"].as_u64().unwrap(),
    );
    signed_by(&mock, "AKIDDEPLOYMENT");

    // Bedrock's binary event stream is relayed byte for byte.
    let resp = client
        .post(&format!("/bedrock/model/{model}/converse-stream"))
        .json(&converse)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let mut frames = bytes::BytesMut::from(&resp.bytes().await.unwrap()[..]);
    let mut decoder = aws_smithy_eventstream::frame::MessageFrameDecoder::new();
    let mut metadata = None;
    while let Ok(aws_smithy_eventstream::frame::DecodedFrame::Complete(m)) =
        decoder.decode_frame(&mut frames)
    {
        let payload: Value = serde_json::from_slice(m.payload()).unwrap();
        if payload.get("usage").is_some() {
            metadata = Some(payload);
        }
    }
    let usage = &metadata.expect("the stream's metadata event")["usage"];
    want += table_cost(
        model,
        usage["inputTokens"].as_u64().unwrap(),
        usage["outputTokens"].as_u64().unwrap(),
    );

    // Cohere.
    let resp = client
        .post("/cohere/v2/chat")
        .json(&json!({"model": "command-r-08-2024", "messages": [{"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let billed = &answer["usage"]["billed_units"];
    want += table_cost(
        "command-r-08-2024",
        billed["input_tokens"].as_u64().unwrap(),
        billed["output_tokens"].as_u64().unwrap(),
    );
    assert_eq!(
        mock.last_request().unwrap().headers["authorization"],
        "Bearer co-provider-key"
    );

    // Azure: the deployment in the path, `api-version` kept, the key in both of LiteLLM's headers.
    let resp = client
        .post("/azure/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    want += table_cost(
        "gpt-4o-mini",
        answer["usage"]["prompt_tokens"].as_u64().unwrap(),
        answer["usage"]["completion_tokens"].as_u64().unwrap(),
    );
    let r = mock.last_request().unwrap();
    assert_eq!(r.path, "/openai/deployments/gpt4o-prod/chat/completions");
    assert_eq!(r.query, "api-version=2024-10-21");
    assert_eq!(r.headers["api-key"], "az-provider-key");
    assert_eq!(r.headers["authorization"], "Bearer az-provider-key");
    key_never_reached_the_provider(&mock, &key);

    spend_reaches(&gw, &key, want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_refusals_keys_paths_missing_credentials_and_budgets() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = start(&mock).await;
    let body = json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 20,
                      "messages": [{"role": "user", "content": "Say hello"}]});
    let anthropic = |c: &Client| {
        c.post("/anthropic/v1/messages")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
    };

    let resp = anthropic(&gw.client().without_key()).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = anthropic(&as_key(&gw, "sk-not-a-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let key = new_key(&gw, json!({"max_budget": 1e-7})).await;
    let client = as_key(&gw, &key);
    // A path that climbs above the provider's base never leaves the gateway.
    let calls = mock.calls();
    let resp = client
        .post("/anthropic/v1/..%2f..%2fadmin")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let error: Value = resp.json().await.unwrap();
    assert!(error_message(&error, 400).contains(".."));
    // A provider without credentials says which variable to set.
    let resp = client
        .post("/mistral/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(
        error_message(&error, 500),
        "Required 'MISTRAL_API_KEY' in environment to make pass-through calls to mistral."
    );
    assert_eq!(mock.calls(), calls, "nothing was forwarded");

    // A budget for part of one call: the call is made (as LiteLLM admits it), then refused.
    let resp = anthropic(&client).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let refused = eventually(Duration::from_secs(10), || async {
        let resp = anthropic(&client).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        (status != 200).then_some((status, body))
    })
    .await;
    let (status, error) = refused.expect("the key is refused once its budget is spent");
    assert_eq!(status, 400, "{error}");
    assert!(
        error_message(&error, 400).starts_with("Budget has been exceeded!"),
        "{error}"
    );
    assert_eq!(
        mock.requests()
            .iter()
            .filter(|r| r.path == "/v1/messages")
            .count(),
        1,
        "the refused calls never reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_streams_arrive_unbuffered_and_a_hang_up_closes_the_provider_stream() {
    use futures_util::StreamExt;
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = start(&mock).await;
    let key = new_key(&gw, json!({})).await;
    let client = as_key(&gw, &key);
    let stream_request = |chunks: u64| {
        client
            .post("/anthropic/v1/messages")
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": "claude-haiku-4-5-20251001", "max_tokens": 500, "stream": true,
                          "messages": [{"role": "user", "content": "Say hello"}],
                          "mock": {"chunks": chunks, "chunk_delay_ms": 100}}),
            )
    };

    // Ten events 100 ms apart: the first reaches the client long before the last is sent.
    let started = std::time::Instant::now();
    let resp = stream_request(10).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut first = None;
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        if first.is_none() && String::from_utf8_lossy(&chunk).contains("content_block_delta") {
            first = Some(started.elapsed());
        }
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let total = started.elapsed();
    let first = first.expect("a content event");
    assert!(
        first + Duration::from_millis(500) < total,
        "first event at {first:?}, stream done at {total:?}"
    );
    assert!(text.contains("message_stop"), "{text}");

    // A client that hangs up mid-stream: the provider's stream is closed at once.
    let resp = stream_request(100).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("content_block_delta") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    let hung_up = std::time::Instant::now();
    let cut = eventually(Duration::from_secs(2), || async {
        (mock.streams_cut_by_client() == 1).then_some(())
    })
    .await;
    assert!(
        cut.is_some(),
        "the provider's stream is closed within 2 s of the hang-up ({:?})",
        hung_up.elapsed()
    );
    // The cut stream is still booked: its prompt at least, at the model's price.
    let admin = gw.client();
    let booked = eventually(Duration::from_secs(10), || async {
        let (_, logs) = admin.get_json(&format!("/spend/logs?api_key={key}")).await;
        (logs.as_array()?.len() == 2).then_some(logs)
    })
    .await
    .expect("both streams have spend-log rows");
    assert!(
        booked
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["spend"].as_f64().unwrap() > 0.0),
        "{booked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_sdk_deployment_routes_are_served_by_the_model_group_they_name() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let open = gw.client().without_key();
    // The Azure OpenAI SDK: the key in `api-key`, the model only in the path.
    let resp = open
        .post("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
        .header("api-key", MASTER_KEY)
        .json(&json!({"messages": [{"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-litellm-model-group"], "gpt-4o");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["model"], "gpt-4o");
    let r = mock.last_request().unwrap();
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(
        r.json()["model"],
        "gpt-4o-mini",
        "the group's deployment model"
    );
    // The path's model wins over the body's; embeddings too.
    let resp = open
        .post("/openai/deployments/text-embedding/embeddings")
        .header("api-key", MASTER_KEY)
        .json(&json!({"model": "gpt-4o", "input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-litellm-model-group"], "text-embedding");
    let resp = open
        .post("/engines/nope/chat/completions")
        .header("api-key", MASTER_KEY)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        400,
        "an unknown group, as on /chat/completions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderations_without_a_model_group_go_to_openai_and_moderation_model_names_one() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = start(&mock).await;
    let client = gw.client();
    // No model, and a model no group serves: OpenAI's moderation API with the gateway's key,
    // as LiteLLM calls it.
    for body in [
        json!({"input": "I want to hug everyone"}),
        json!({"model": "text-moderation-stable", "input": "I want to hug everyone"}),
    ] {
        let (status, _, answer) = client.post_json("/v1/moderations", &body).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer["results"].is_array(), "{answer}");
        let r = mock.last_request().unwrap();
        assert_eq!(r.path, "/v1/moderations");
        assert_eq!(r.headers["authorization"], "Bearer sk-openai-provider");
        assert_eq!(r.json()["input"], "I want to hug everyone");
    }
    let (status, _, answer) = client.post_json("/v1/moderations", &json!({})).await;
    assert_eq!(status, 400, "{answer}");

    // `general_settings.moderation_model` is every request's model.
    let config = format!(
        r#"
model_list:
  - model_name: moderation
    litellm_params: {{model: openai/omni-moderation-latest, api_base: "{base}", api_key: sk-mod}}
general_settings:
  master_key: {MASTER_KEY}
  moderation_model: moderation
"#,
        base = mock.api_base()
    );
    let gw = Gateway::start(&config).await;
    let (status, headers, answer) = gw
        .client()
        .post_json(
            "/v1/moderations",
            &json!({"model": "text-moderation-stable", "input": "hello"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(headers["x-litellm-model-group"], "moderation");
    let r = mock.last_request().unwrap();
    assert_eq!(r.headers["authorization"], "Bearer sk-mod");
    assert_eq!(r.json()["model"], "omni-moderation-latest");
}
