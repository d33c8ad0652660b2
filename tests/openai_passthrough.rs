//! OpenAI-compatible forwarding through the real gateway: chat, completions, embeddings, model
//! listings, the body forwarded byte for byte except `model`, and the routing headers.

mod support;

use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_is_forwarded_with_only_the_model_rewritten() {
    let mock = MockProvider::start(MockConfig {
        served_model: Some("gpt-4o-mini-2024-07-18".into()),
        ..MockConfig::default()
    })
    .await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    // Odd spacing, key order and unknown fields must survive untouched.
    let body = "{ \"messages\" : [{\"role\":\"user\",\"content\":\"Say \\\"model\\\": hi\"}],\n  \"model\":\"gpt-4o\", \"x_custom\": {\"a\": [1, 2.50]} , \"temperature\":0 }";
    let resp = gw
        .client()
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        answer["model"], "gpt-4o",
        "the client sees the model it asked for"
    );
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        answer["usage"]["total_tokens"],
        answer["usage"]["prompt_tokens"].as_u64().unwrap() + 5
    );

    let upstream = mock.last_request().unwrap();
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(
        String::from_utf8(upstream.body.to_vec()).unwrap(),
        body.replace("\"model\":\"gpt-4o\"", "\"model\":\"gpt-4o-mini\""),
        "byte-for-byte apart from the model"
    );
    assert_eq!(
        upstream.headers["authorization"], "Bearer sk-upstream-secret",
        "the deployment key, never the client's"
    );
    assert_eq!(
        upstream.headers["content-length"],
        upstream.body.len().to_string()
    );
    assert_eq!(mock.calls(), 1);

    assert_eq!(headers["x-litellm-model-group"], "gpt-4o");
    assert_eq!(headers["x-litellm-model-api-base"], mock.api_base());
    assert_eq!(
        headers["x-litellm-model-id"].to_str().unwrap().len(),
        64,
        "LiteLLM-style sha256 id"
    );
    let request_id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(headers["x-litellm-call-id"], request_id);
    assert!(headers.contains_key("x-litellm-overhead-duration-ms"));
    assert_eq!(headers["llm_provider-x-mock-provider"], "openai");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_route_spellings_and_all_three_model_endpoints_work() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let c = gw.client();
    for path in ["/chat/completions", "/v1/chat/completions"] {
        let (status, _, body) = c
            .post_json(
                path,
                &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["object"], "chat.completion");
    }
    for path in ["/completions", "/v1/completions"] {
        let (status, _, body) = c
            .post_json(path, &json!({"model": "instruct", "prompt": "Once upon"}))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["model"], "instruct");
    }
    assert_eq!(
        mock.last_request().unwrap().json()["model"],
        "gpt-3.5-turbo-instruct"
    );
    for path in ["/embeddings", "/v1/embeddings"] {
        let (status, _, body) = c
            .post_json(
                path,
                &json!({"model": "text-embedding", "input": ["a", "bb"]}),
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 2);
        assert_eq!(body["model"], "text-embedding");
        assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() >= 2);
    }
    assert_eq!(mock.calls_to("/v1/embeddings"), 2);
    assert_eq!(mock.calls_to("/v1/chat/completions"), 2);
    assert_eq!(mock.calls_to("/v1/completions"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_completion_deployments_refuse_chat_clearly() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let (status, _, body) = gw
        .client()
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "instruct", "messages": []}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_message(&body, 400).contains("/completions only"));
    assert_eq!(mock.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_listings_have_litellm_shapes() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        "{}router_settings:\n  model_group_alias:\n    gpt4: gpt-4o\n    hidden-alias: {{model: gpt-4o, hidden: true}}\n",
        basic_config(&mock)
    );
    let gw = Gateway::start(&config).await;
    let c = gw.client();
    for path in ["/models", "/v1/models"] {
        let (status, body) = c.get_json(path).await;
        assert_eq!(status, 200);
        assert_eq!(body["object"], "list");
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o", "text-embedding", "instruct", "gpt4"]);
        assert_eq!(body["data"][0]["object"], "model");
        assert_eq!(body["data"][0]["created"], 1_677_610_602);
        assert_eq!(body["data"][0]["owned_by"], "openai");
    }
    let (_, info) = c.get_json("/model/info").await;
    let data = info["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["model_name"], "gpt-4o");
    assert_eq!(data[0]["litellm_params"]["model"], "openai/gpt-4o-mini");
    assert!(
        data[0]["litellm_params"].get("api_key").is_none(),
        "keys never leave"
    );
    assert_eq!(
        data[0]["model_info"]["max_input_tokens"], 128_000,
        "merged from the price table"
    );
    assert_eq!(data[1]["model_info"]["mode"], "embedding");
    let id = data[1]["model_info"]["id"].as_str().unwrap();
    let (_, one) = c
        .get_json(&format!("/v1/model/info?litellm_model_id={id}"))
        .await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["model_name"], "text-embedding");

    let (_, groups) = c.get_json("/model_group/info?model_group=gpt-4o").await;
    let g = &groups["data"][0];
    assert_eq!(groups["data"].as_array().unwrap().len(), 1);
    assert_eq!(g["model_group"], "gpt-4o");
    assert_eq!(g["providers"], json!(["openai"]));
    assert_eq!(g["mode"], "chat");
    assert_eq!(g["max_input_tokens"], 128_000);
    assert!(
        g["supported_openai_params"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "tools")
    );

    // The hidden alias routes although it is not listed.
    let (status, _, body) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "hidden-alias", "messages": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "hidden-alias");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_groups_forward_the_matched_name() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let config = format!(
        r#"
model_list:
  - model_name: "*"
    litellm_params:
      model: "openai/*"
      api_base: {base}
  - model_name: "vendor/*"
    litellm_params:
      model: "hosted_vllm/*"
      api_base: {base}
sluice_settings:
  threads: 1
"#,
        base = mock.api_base()
    );
    let gw = Gateway::start(&config).await;
    let c = gw.client().without_key();
    let (status, _, body) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "any-model-name", "messages": []}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        mock.last_request().unwrap().json()["model"],
        "any-model-name"
    );
    let (status, headers, _) = c
        .post_json(
            "/v1/chat/completions",
            &json!({"model": "vendor/llama-3", "messages": []}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-litellm-model-group"], "vendor/*");
    assert_eq!(mock.last_request().unwrap().json()["model"], "llama-3");
    assert_eq!(
        mock.last_request().unwrap().headers["authorization"],
        "Bearer fake-api-key",
        "hosted_vllm's placeholder key, as LiteLLM sends"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_forwarded_whole() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    // A base64 image of ~5 MiB, far past Pingora's 64 KiB retry buffer, read in many chunks;
    // not one repeated letter, so chunks put together in the wrong order would show.
    const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let image: String = (0..5 * 1024 * 1024)
        .map(|i: usize| char::from(BASE64[(i / 4096 + i * 7) % 64]))
        .collect();
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{image}")}}
    ]}]});
    let sent = serde_json::to_vec(&body).unwrap();
    let (status, _, answer) = gw.client().post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let upstream = mock.last_request().unwrap();
    assert_eq!(
        upstream.body.len(),
        sent.len() - "gpt-4o".len() + "gpt-4o-mini".len()
    );
    assert_eq!(
        upstream.json()["messages"][0]["content"][1]["image_url"]["url"]
            .as_str()
            .unwrap(),
        format!("data:image/png;base64,{image}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_are_put_together_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let text: String = (0..20_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let body =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}).to_string();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER_KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Uneven chunks, each written on its own, so the gateway reads them one by one.
    for piece in body.as_bytes().chunks(3_001) {
        let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
        chunk.extend_from_slice(piece);
        chunk.extend_from_slice(b"\r\n");
        stream.write_all(&chunk).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    // Read until the answer (or an error) is in; a gateway that answers nothing fails in 10 s.
    let mut response = Vec::new();
    let mut buf = vec![0u8; 8192];
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !["\"usage\"", "\"error\""]
            .iter()
            .any(|end| String::from_utf8_lossy(&response).contains(end))
        {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let response = String::from_utf8_lossy(&response);
    assert!(answered.is_ok(), "no answer: {response}");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let upstream = mock.last_request().unwrap();
    assert_eq!(upstream.json()["messages"][0]["content"], text.as_str());
    assert_eq!(upstream.json()["model"], "gpt-4o-mini");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(2 * 1024 * 1024)}]}).to_string();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_millis(500), stream.read(&mut buf))
        .await
        .expect("100 Continue within 500 ms")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut chunk = vec![0u8; 8192];
    while !String::from_utf8_lossy(&response).contains("\"usage\"") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&response).contains("200 OK"));
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_on_the_plain_port() {
    let mock = MockProvider::start(MockConfig::default()).await;
    let gw = Gateway::start(&basic_config(&mock)).await;
    let http = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["model"], "gpt-4o");
}
