//! Translated providers through the real gateway, against the mock speaking each provider's own
//! wire format: Azure OpenAI, Anthropic, Gemini, Ollama and Cohere next to plain OpenAI. The
//! official OpenAI SDK must get identical-looking answers from all of them; each upstream call
//! must carry its provider's URL and auth; errors keep the provider's status.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::*;

const GROUPS: &[&str] = &[
    "via-openai",
    "via-azure",
    "via-anthropic",
    "via-gemini",
    "via-ollama",
    "via-cohere",
    "via-bedrock",
];

fn providers_config(mock: &MockProvider, extra: &str) -> String {
    let host = format!("http://{}", mock.addr);
    format!(
        r#"
model_list:
  - model_name: via-openai
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{host}/v1", api_key: sk-openai}}
  - model_name: via-azure
    litellm_params: {{model: azure/gpt4o-deploy, api_base: "{host}", api_key: az-key, api_version: "2024-10-21"}}
  - model_name: via-anthropic
    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: "{host}", api_key: sk-ant}}
  - model_name: via-gemini
    litellm_params: {{model: gemini/gemini-2.5-flash, api_base: "{host}/v1beta", api_key: g-key}}
  - model_name: via-ollama
    litellm_params: {{model: ollama_chat/llama3.2, api_base: "{host}"}}
  - model_name: via-cohere
    litellm_params: {{model: cohere_chat/command-r, api_base: "{host}/v2/chat", api_key: co-key}}
  - model_name: via-bedrock
    litellm_params: {{model: "bedrock/anthropic.claude-3-haiku-20240307-v1:0", aws_bedrock_runtime_endpoint: "{host}", aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: wJalrXUtnFEMI, aws_region_name: us-west-2}}
{extra}
general_settings:
  master_key: {MASTER_KEY}
sluice_settings:
  threads: 1
"#
    )
}

fn hello(group: &str) -> Value {
    json!({"model": group, "messages": [{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_gets_its_own_url_auth_and_body() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&providers_config(&mock, "")).await;
    let c = gw.client();
    for group in GROUPS {
        let resp = c
            .post("/v1/chat/completions")
            .header("anthropic-beta", "prompt-caching-2024-07-31")
            .json(&hello(group))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{group}: {body}\n{}", gw.logs());
        assert_eq!(body["model"], *group);
        assert_eq!(
            body["choices"][0]["message"]["content"], "Hello word1 word2 word3 word4",
            "{group}: {body}"
        );
        assert_eq!(headers["x-litellm-model-group"], *group);
        let up = mock.last_request().unwrap();
        let h = &up.headers;
        let sent = up.json();
        match *group {
            "via-openai" => {
                assert_eq!(up.path, "/v1/chat/completions");
                assert_eq!(h["authorization"], "Bearer sk-openai");
                assert!(!h.contains_key("anthropic-beta"), "client headers stay put");
            }
            "via-azure" => {
                assert_eq!(up.path, "/openai/deployments/gpt4o-deploy/chat/completions");
                assert_eq!(h["api-key"], "az-key");
                assert!(!h.contains_key("authorization"));
            }
            "via-anthropic" => {
                assert_eq!(up.path, "/v1/messages");
                assert_eq!(h["x-api-key"], "sk-ant");
                assert_eq!(h["anthropic-version"], "2023-06-01");
                assert_eq!(h["anthropic-beta"], "prompt-caching-2024-07-31");
                assert!(!h.contains_key("authorization"));
                assert_eq!(sent["system"], "be terse");
                assert_eq!(sent["model"], "claude-sonnet-4-5");
                assert!(sent["max_tokens"].as_u64().unwrap() > 0, "{sent}");
            }
            "via-gemini" => {
                assert_eq!(up.path, "/v1beta/models/gemini-2.5-flash:generateContent");
                assert_eq!(h["x-goog-api-key"], "g-key");
                assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "be terse");
            }
            "via-ollama" => {
                assert_eq!(up.path, "/api/chat");
                assert_eq!(sent["stream"], false);
                assert_eq!(sent["model"], "llama3.2");
            }
            "via-cohere" => {
                assert_eq!(up.path, "/v2/chat");
                assert_eq!(h["authorization"], "Bearer co-key");
                assert_eq!(sent["messages"][0]["role"], "system");
            }
            "via-bedrock" => {
                assert_eq!(
                    up.path,
                    "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
                );
                let auth = &h["authorization"];
                assert!(
                    auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                        && auth.contains("/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="),
                    "{auth}"
                );
                assert!(h.contains_key("x-amz-date"));
                assert_eq!(sent["system"], json!([{"text": "be terse"}]));
            }
            _ => unreachable!(),
        }
        // Usage was read from each provider's own fields.
        let u = &body["usage"];
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
        );
        assert_eq!(u["completion_tokens"], 5, "{group}: {u}");
    }
    assert_eq!(mock.calls(), GROUPS.len() as u64);
    // Token counts reach the metrics for translated providers too.
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("model_group=\"via-anthropic\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_streams_are_not_buffered() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&providers_config(&mock, "")).await;
    for group in [
        "via-anthropic",
        "via-gemini",
        "via-ollama",
        "via-cohere",
        "via-bedrock",
    ] {
        let mut body = hello(group);
        body["stream"] = true.into();
        body["mock"] = json!({"chunks": 4, "chunk_delay_ms": 80});
        let start = Instant::now();
        let resp = gw
            .client()
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut stream = resp.bytes_stream();
        let mut text = String::new();
        let mut first_word_at = None;
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if first_word_at.is_none() && text.contains("\"content\":\"Hello\"") {
                first_word_at = Some(start.elapsed());
            }
        }
        let total = start.elapsed();
        let first = first_word_at.unwrap_or_else(|| panic!("{group}: {text}"));
        assert!(
            total >= Duration::from_millis(240),
            "{group}: the mock paces 4+ frames 80 ms apart ({total:?})"
        );
        assert!(
            first + Duration::from_millis(150) < total,
            "{group}: the first word came at {first:?} of {total:?}: buffered"
        );
        assert!(text.ends_with("data: [DONE]\n\n"), "{group}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_keep_their_status_and_mid_stream_errors_end_the_stream() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&providers_config(&mock, "")).await;
    let c = gw.client();

    let mut body = hello("via-anthropic");
    body["mock"] = json!({"status": 529});
    let (status, _, err) = c.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 529, "{err}");
    assert_eq!(
        err,
        json!({"error": {"message": "Overloaded", "type": "overloaded_error", "param": null, "code": "overloaded_error"}})
    );

    body["mock"] = json!({"status": 400, "context_overflow": true});
    let (status, _, err) = c.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "context_length_exceeded");

    let mut body = hello("via-gemini");
    body["mock"] = json!({"status": 429});
    let (status, headers, err) = c.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 429);
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    assert_eq!(headers["retry-after"], "1");

    for group in ["via-anthropic", "via-gemini", "via-ollama", "via-bedrock"] {
        let mut body = hello(group);
        body["stream"] = true.into();
        body["mock"] = json!({"stream_error_after": 3});
        let resp = c
            .post("/v1/chat/completions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        // The provider's error event in OpenAI's shape, then [DONE], as LiteLLM ends it.
        let mut events = text.trim_end().rsplit("\n\n");
        assert_eq!(events.next(), Some("data: [DONE]"), "{group}: {text}");
        let error = events.next().unwrap();
        let v: Value = serde_json::from_str(error.strip_prefix("data: ").unwrap()).unwrap();
        assert!(v["error"]["message"].is_string(), "{group}: {text}");
        assert_eq!(text.matches("[DONE]").count(), 1, "{group}: {text}");
    }
    let mut body = hello("via-bedrock");
    body["mock"] = json!({"status": 429});
    let (status, _, err) = c.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 429);
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock failure")
    );

    // The gateway keeps serving.
    let (status, _, _) = c
        .post_json("/v1/chat/completions", &hello("via-anthropic"))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_parameters_are_refused_unless_dropped() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let extra = format!(
        r#"  - model_name: dropping
    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: "http://{}", api_key: k, drop_params: true, additional_drop_params: [top_k]}}"#,
        mock.addr
    );
    let gw = Gateway::start(&providers_config(&mock, &extra)).await;
    let c = gw.client();
    let mut body = hello("via-anthropic");
    body["logit_bias"] = json!({"50256": -100});
    let (status, _, err) = c.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "logit_bias");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("drop_params")
    );
    assert_eq!(mock.calls(), 0, "refused before any upstream call");

    let mut body = hello("dropping");
    body["logit_bias"] = json!({"50256": -100});
    body["top_k"] = 5.into();
    body["temperature"] = 0.5.into();
    let (status, _, answer) = c.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let sent = mock.last_request().unwrap().json();
    assert!(sent.get("logit_bias").is_none(), "{sent}");
    assert!(sent.get("top_k").is_none(), "{sent}");
    assert_eq!(sent["temperature"], 0.5);
}

/// Runs an SDK script from `tests/sdk/` against every group in `GROUPS` and returns its
/// per-group JSON summaries, the group name removed so they can be compared.
async fn run_sdk_script(gw: &Gateway, script: &str) -> Vec<Value> {
    run_sdk_script_for(gw, script, GROUPS).await
}

/// [`run_sdk_script`] for the given groups.
async fn run_sdk_script_for(gw: &Gateway, script: &str, groups: &[&str]) -> Vec<Value> {
    let python = tokio::task::spawn_blocking(support::python_with_openai)
        .await
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(gw.url(""))
        .arg(MASTER_KEY)
        .args(groups)
        .output()
        .await
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} checks failed:\n{stdout}\n{stderr}\n--- gateway log ---\n{}",
        script.display(),
        gw.logs()
    );
    let mut summaries: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(summaries.len(), groups.len(), "{stdout}");
    for s in &mut summaries {
        s.as_object_mut().unwrap().remove("group");
    }
    summaries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_openai_sdk_script_gets_identical_answers_from_every_provider() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&providers_config(&mock, "")).await;
    let summaries = run_sdk_script(&gw, "provider_sdk_check.py").await;
    let reference = &summaries[0];
    assert_eq!(reference["content"], "Hello word1 word2 word3 word4");
    assert_eq!(
        reference["tool"],
        json!(["tool_calls", "get_weather", {"city": "Paris"}])
    );
    for (group, s) in GROUPS.iter().zip(&summaries) {
        assert_eq!(s, reference, "{group} differs from via-openai");
    }
}

/// `client.responses.create` through every provider: OpenAI and Azure get the Responses API
/// itself, the others (and a chat-only OpenAI-compatible server) chat, translated both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_responses_api_works_against_every_provider() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let vllm = format!(
        "  - model_name: via-vllm\n    litellm_params: {{model: hosted_vllm/llama, api_base: \"http://{}/v1\"}}",
        mock.addr
    );
    let gw = Gateway::start(&providers_config(&mock, &vllm)).await;
    let mut groups = GROUPS.to_vec();
    groups.push("via-vllm");
    let summaries = run_sdk_script_for(&gw, "responses_sdk_check.py", &groups).await;
    let text_events = json!([
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed"
    ]);
    let reference = json!({
        "text": "Hello word1 word2 word3 word4", "status": "completed", "output_tokens": 5,
        "stream_text": "Hello word1 word2 word3 word4", "stream_events": text_events,
        "stream_output_tokens": 5,
        "tool": ["get_weather", {"city": "Paris"}],
        "tool_followup": "Hello word1 word2 word3 word4",
        "stream_tool": ["get_weather", {"city": "Paris"}],
        "input_items": [["message", "user", "What is my name?"]],
        "unknown_previous": "Previous response with id 'resp_nope' not found.",
    });
    for (group, s) in groups.iter().zip(&summaries) {
        assert_eq!(s, &reference, "{group}");
    }
    // OpenAI and Azure got the Responses API; the others their chat APIs.
    let calls = mock.requests();
    let to = |path: &str| calls.iter().filter(|r| r.path == path).count();
    assert_eq!(to("/v1/responses"), 7, "OpenAI: seven calls");
    assert_eq!(to("/openai/responses"), 7, "Azure: seven calls");
    let azure = calls
        .iter()
        .find(|r| r.path == "/openai/responses")
        .unwrap();
    assert_eq!(azure.json()["model"], "gpt4o-deploy");
    assert_eq!(to("/v1/messages"), 7, "Anthropic: seven calls");
    // The provider that keeps a native response was asked to read, list and delete it.
    let kept = |method: &str, suffix: &str| {
        calls
            .iter()
            .filter(|r| r.method == method && r.path.starts_with("/v1/responses/resp_mock"))
            .filter(|r| r.path.ends_with(suffix))
            .count()
    };
    assert_eq!(kept("GET", "/input_items"), 1);
    assert_eq!(kept("DELETE", ""), 1);
    // The translated conversation was continued with its first turn in front.
    let continued = calls
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .find(|r| {
            r.json()["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 3)
                && r.json()["messages"][0]["content"]
                    .to_string()
                    .contains("My name is Ada.")
        })
        .unwrap_or_else(|| {
            let sent: Vec<Value> = calls
                .iter()
                .filter(|r| r.path == "/v1/messages")
                .map(|r| r.json()["messages"].clone())
                .collect();
            panic!("the continued conversation: {sent:#?}")
        });
    assert_eq!(continued.json()["messages"][1]["role"], "assistant");
    let last = continued.json()["messages"][2].clone();
    assert_eq!(last["role"], "user");
    assert!(
        last["content"].to_string().contains("What is my name?"),
        "{last}"
    );
    let anthropic = calls.iter().find(|r| r.path == "/v1/messages").unwrap();
    assert_eq!(anthropic.json()["system"], "You are terse.");
    assert_eq!(anthropic.json()["max_tokens"], 50);
    // The round trip's second call carried the call and its result in the provider's terms.
    let round_trip = calls
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .find(|r| {
            r.json()["messages"]
                .as_array()
                .is_some_and(|m| m.len() == 3)
        })
        .expect("the follow-up call");
    let messages = &round_trip.json()["messages"];
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["content"], "18C and sunny");
    let metrics = gw.metrics().await;
    for group in &groups {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("litellm_output_tokens_metric_total")
                    && l.contains(&format!("requested_model=\"{group}\""))
                    && l.ends_with(" 35")),
            "{group}: 35 output tokens counted (seven answers of five)\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_gets_messages_answers_from_every_provider() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&providers_config(&mock, "")).await;
    let summaries = run_sdk_script(&gw, "anthropic_sdk_check.py").await;
    let reference = json!({
        "text": "Hello word1 word2 word3 word4", "stop": "end_turn", "output_tokens": 5,
        "stream_text": "Hello word1 word2 word3 word4", "stream_stop": "end_turn", "stream_output_tokens": 5,
        "tool": ["tool_use", "get_weather", {"city": "Paris"}],
        "stream_tool": ["tool_use", "get_weather", {"city": "Paris"}],
        "errors": "ok"
    });
    for (group, s) in GROUPS.iter().zip(&summaries) {
        assert_eq!(s, &reference, "{group}");
    }
    // The Anthropic deployment got the client's request as it was (no double translation).
    let anthropic_calls: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert!(!anthropic_calls.is_empty());
    assert!(
        anthropic_calls
            .iter()
            .all(|r| r.json()["system"] == "You are terse." || r.json()["system"].is_null())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_translated_for_gemini_ollama_bedrock_and_azure() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let host = format!("http://{}", mock.addr);
    let extra = format!(
        r#"  - model_name: emb-gemini
    litellm_params: {{model: gemini/text-embedding-004, api_base: "{host}/v1beta", api_key: g-key}}
    model_info: {{mode: embedding}}
  - model_name: emb-ollama
    litellm_params: {{model: ollama/nomic-embed-text, api_base: "{host}"}}
    model_info: {{mode: embedding}}
  - model_name: emb-bedrock
    litellm_params: {{model: "bedrock/amazon.titan-embed-text-v2:0", aws_bedrock_runtime_endpoint: "{host}", aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: s3cret}}
    model_info: {{mode: embedding}}
  - model_name: emb-azure
    litellm_params: {{model: azure/emb-deploy, api_base: "{host}", api_key: az-key}}
    model_info: {{mode: embedding}}"#
    );
    let gw = Gateway::start(&providers_config(&mock, &extra)).await;
    let c = gw.client();
    for (group, path) in [
        (
            "emb-gemini",
            "/v1beta/models/text-embedding-004:batchEmbedContents",
        ),
        ("emb-ollama", "/api/embed"),
        (
            "emb-bedrock",
            "/model/amazon.titan-embed-text-v2%3A0/invoke",
        ),
        ("emb-azure", "/openai/deployments/emb-deploy/embeddings"),
    ] {
        let (status, _, body) = c
            .post_json(
                "/v1/embeddings",
                &json!({"model": group, "input": "hello world"}),
            )
            .await;
        assert_eq!(status, 200, "{group}: {body}\n{}", gw.logs());
        assert_eq!(body["object"], "list");
        assert_eq!(body["model"], group, "{body}");
        let v = body["data"][0]["embedding"].as_array().unwrap();
        assert_eq!(v.len(), 8, "{group}: {body}");
        assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        assert_eq!(mock.last_request().unwrap().path, path);
    }
    // Several inputs in one call where the provider batches.
    let (status, _, body) = c
        .post_json(
            "/v1/embeddings",
            &json!({"model": "emb-gemini", "input": ["a", "bb", "ccc"]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"].as_array().unwrap().len(), 3);
    assert_eq!(body["data"][2]["index"], 2);
    // Titan embeds one input per call: a clear 400, no upstream call.
    let before = mock.calls();
    let (status, _, body) = c
        .post_json(
            "/v1/embeddings",
            &json!({"model": "emb-bedrock", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "input");
    assert_eq!(mock.calls(), before);

    // The official SDK asks for base64 by default and decodes it.
    let python = tokio::task::spawn_blocking(support::python_with_openai)
        .await
        .unwrap();
    let script = format!(
        "import openai\nc = openai.OpenAI(base_url={:?}, api_key={:?}, max_retries=0)\nfor g in ['emb-gemini', 'emb-ollama', 'emb-bedrock']:\n    e = c.embeddings.create(model=g, input='hello world')\n    assert len(e.data[0].embedding) == 8, (g, e)\n    assert abs(e.data[0].embedding[0] - 0.0) < 1.0\nprint('ok')\n",
        gw.url(""),
        MASTER_KEY
    );
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = mock.last_request().unwrap().json();
    assert_eq!(sent, json!({"inputText": "hello world"}));
}
