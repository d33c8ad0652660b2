//! Bedrock codec tests: SigV4 against AWS's published `post-vanilla` vector and the
//! Bedrock-shaped vector of `providers.md` 5.5, the event-stream worked example of 5.6, a whole
//! ConverseStream fed split at every byte, Converse request and response mapping, errors.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::providers::testing::{obj, split_invariant, target_for};
use filters::route::Secret;

/// 2015-08-30T12:36:00Z, the time of AWS's test suite.
fn suite_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_440_938_160)
}

fn example_credentials(token: Option<&str>) -> AwsAuth {
    AwsAuth::SigV4 {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: token.map(Secret::new),
        region: "us-east-1".into(),
    }
}

#[test]
fn sigv4_matches_the_aws_suite_post_vanilla_vector() {
    let mut headers = http::HeaderMap::new();
    sign(
        &example_credentials(None),
        "POST",
        "service",
        "example.amazonaws.com",
        true,
        "/",
        b"",
        suite_time(),
        &mut headers,
    )
    .unwrap();
    assert_eq!(
        headers["authorization"],
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
    );
    assert_eq!(headers["x-amz-date"], "20150830T123600Z");
}

#[test]
fn sigv4_matches_the_bedrock_shaped_vector() {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let path = target_path("", "anthropic.claude-3-haiku-20240307-v1:0", false);
    assert_eq!(
        path,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    sign(
        &example_credentials(None),
        "POST",
        SIGNING_NAME,
        "bedrock-runtime.us-east-1.amazonaws.com",
        true,
        &path,
        br#"{"messages":[{"role":"user","content":[{"text":"Hi"}]}]}"#,
        suite_time(),
        &mut headers,
    )
    .unwrap();
    assert_eq!(
        headers["authorization"],
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=3727b71685329bac0dc44a4bb7e4cd9ccb076c5e1d0490659e5e2461fdb36539"
    );
    assert!(headers["authorization"].is_sensitive());
}

#[test]
fn session_tokens_are_sent_and_api_keys_are_bearer() {
    let mut headers = http::HeaderMap::new();
    sign(
        &example_credentials(Some("token-1")),
        "POST",
        SIGNING_NAME,
        "h",
        true,
        "/",
        b"",
        suite_time(),
        &mut headers,
    )
    .unwrap();
    assert_eq!(headers["x-amz-security-token"], "token-1");
    assert!(
        headers["authorization"]
            .to_str()
            .unwrap()
            .contains("x-amz-security-token")
    );
    let mut headers = http::HeaderMap::new();
    sign(
        &AwsAuth::ApiKey(Secret::new("bedrock-key")),
        "POST",
        SIGNING_NAME,
        "h",
        true,
        "/",
        b"",
        suite_time(),
        &mut headers,
    )
    .unwrap();
    assert_eq!(headers["authorization"], "Bearer bedrock-key");
}

fn opts(include_usage: bool) -> DecodeOptions {
    DecodeOptions {
        model_override: None,
        fallback_model: "claude-haiku".into(),
        created: 1_700_000_000,
        include_usage,
        max_event_bytes: crate::providers::translate::DEFAULT_MAX_EVENT_BYTES,
    }
}

#[test]
fn the_worked_example_frame_decodes_to_one_content_chunk() {
    // providers.md 5.6: one contentBlockDelta message, 148 bytes, both CRCs valid.
    let hex = concat!(
        "0000009400000057b4ab9aee0b3a6576656e742d74797065070011636f6e74656e74426c6f636b44656c74610d3a636f",
        "6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576",
        "656e747b22636f6e74656e74426c6f636b496e646578223a302c2264656c7461223a7b2274657874223a224869227d7d",
        "1f944657",
    );
    let hex: String = hex.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(bytes.len(), 148);
    let mut d = StreamDecoder::new(opts(false));
    let mut out = BytesMut::new();
    d.feed(&bytes, &mut out);
    let text = String::from_utf8(out.to_vec()).unwrap();
    assert!(text.contains(r#""delta":{"content":"Hi"}"#), "{text}");
    assert!(d.upstream_error().is_none());

    // A corrupted CRC is refused, not decoded.
    let mut bad = bytes.clone();
    bad[147] ^= 0xff;
    let mut d = StreamDecoder::new(opts(false));
    let mut out = BytesMut::new();
    d.feed(&bad, &mut out);
    assert!(d.upstream_error().is_some());
    assert!(String::from_utf8_lossy(&out).contains("\"error\""));
}

/// A whole ConverseStream, framed with the SDK's own writer.
fn converse_stream() -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue as H, Message as M};
    let event = |kind: &'static str, payload: Value| {
        M::new(Bytes::from(payload.to_string()))
            .add_header(Header::new(":event-type", H::String(kind.into())))
            .add_header(Header::new(
                ":content-type",
                H::String("application/json".into()),
            ))
            .add_header(Header::new(":message-type", H::String("event".into())))
    };
    let messages = [
        event("messageStart", json!({"role": "assistant"})),
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Checking"}, "p": "abcdef"}),
        ),
        event("contentBlockStop", json!({"contentBlockIndex": 0})),
        event(
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_abc", "name": "get_weather"}}}),
        ),
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"city\":"}}}),
        ),
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "\"Paris\"}"}}}),
        ),
        event("contentBlockStop", json!({"contentBlockIndex": 1})),
        event("messageStop", json!({"stopReason": "tool_use"})),
        event(
            "metadata",
            json!({"usage": {"inputTokens": 30, "outputTokens": 12, "totalTokens": 42}, "metrics": {"latencyMs": 380}}),
        ),
    ];
    let mut out = Vec::new();
    for m in &messages {
        aws_smithy_eventstream::frame::write_message_to(m, &mut out).unwrap();
    }
    out
}

fn run_stream(chunks: &[&[u8]], include_usage: bool) -> String {
    let mut d = StreamDecoder::new(opts(include_usage));
    let mut out = BytesMut::new();
    for c in chunks {
        d.feed(c, &mut out);
    }
    d.finish(&mut out);
    let s = String::from_utf8(out.to_vec()).unwrap();
    // The id is generated (Bedrock sends none); make it comparable.
    match s.find("chatcmpl-") {
        Some(i) => s.replace(&s[i..i + 41], "chatcmpl-X"),
        None => s,
    }
}

#[test]
fn converse_stream_becomes_openai_chunks() {
    let out = run_stream(&[&converse_stream()], true);
    let p = r#"{"id":"chatcmpl-X","object":"chat.completion.chunk","created":1700000000,"model":"claude-haiku","choices":"#;
    let expected = [
        r#"[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
        r#"[{"index":0,"delta":{"content":"Checking"},"logprobs":null,"finish_reason":null}]}"#,
        r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"tooluse_abc","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]}"#,
        r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"logprobs":null,"finish_reason":null}]}"#,
        r#"[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"logprobs":null,"finish_reason":null}]}"#,
        r#"[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
        r#"[],"usage":{"prompt_tokens":30,"completion_tokens":12,"total_tokens":42}}"#,
    ]
    .iter()
    .map(|c| format!("data: {p}{c}\n\n"))
    .collect::<String>()
        + "data: [DONE]\n\n";
    assert_eq!(out, expected);
}

#[test]
fn converse_stream_decodes_the_same_at_every_split() {
    let bytes = converse_stream();
    split_invariant(&bytes, |chunks| run_stream(chunks, true));
}

#[test]
fn exceptions_in_the_stream_become_error_events() {
    use aws_smithy_types::event_stream::{Header, HeaderValue as H, Message as M};
    let m = M::new(Bytes::from_static(br#"{"message":"Rate exceeded"}"#))
        .add_header(Header::new(
            ":exception-type",
            H::String("throttlingException".into()),
        ))
        .add_header(Header::new(":message-type", H::String("exception".into())));
    let mut bytes = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&m, &mut bytes).unwrap();
    let out = run_stream(&[&bytes], false);
    assert!(
        out.starts_with(
            "data: {\"error\":{\"message\":\"Rate exceeded\",\"type\":\"rate_limit_error\""
        ),
        "{out}"
    );
    assert!(!out.contains("[DONE]"));
}

#[test]
fn converse_request_maps_system_tools_images_and_inference_config() {
    let (base, headers) = target_for("https://bedrock-runtime.us-east-1.amazonaws.com");
    let target = Target::new(
        super::super::Wire::Bedrock,
        &base,
        "anthropic.claude-3-haiku-20240307-v1:0",
        &headers,
    );
    let req = ChatRequest::read(obj(json!({
        "messages": [
            {"role": "system", "content": "terse"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "tooluse_1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "{\"temp\":18}"}
        ],
        "max_tokens": 100, "temperature": 1.5, "stop": "END", "stream": true, "top_k": 5
    })))
    .unwrap();
    let up = encode(req, &target, Some(&example_credentials(None)), suite_time()).unwrap();
    assert_eq!(
        up.target,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    );
    assert!(
        up.headers["authorization"]
            .to_str()
            .unwrap()
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/")
    );
    let sent: Value = serde_json::from_slice(&up.body).unwrap();
    assert_eq!(
        sent,
        json!({
            "messages": [
                {"role": "user", "content": [{"text": "weather?"}, {"image": {"format": "jpeg", "source": {"bytes": "/9j/"}}}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_1", "name": "w", "input": {"city": "Paris"}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"json": {"temp": 18}}], "status": "success"}}]}
            ],
            "system": [{"text": "terse"}],
            "inferenceConfig": {"maxTokens": 100, "temperature": 1.0, "stopSequences": ["END"]},
            "toolConfig": {"tools": [{"toolSpec": {"name": "w", "inputSchema": {"json": {"type": "object", "properties": {}}}}}]},
            "additionalModelRequestFields": {"top_k": 5}
        })
    );
}

#[test]
fn converse_response_and_errors() {
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"It is 18C."}]}},"stopReason":"end_turn","usage":{"inputTokens":30,"outputTokens":7,"totalTokens":37,"cacheReadInputTokens":10,"cacheWriteInputTokens":0},"metrics":{"latencyMs":412}}"#;
    let (out, usage) = decode(body, &opts(false)).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "It is 18C.");
    assert_eq!(v["usage"]["prompt_tokens"], 40);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 10);
    assert_eq!(usage.total_tokens, 47);

    let e = error(
        429,
        Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    );
    assert_eq!(e.status.as_u16(), 429);
    assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
    let e = error(
        400,
        None,
        br#"{"__type":"ValidationException","message":"Input is too long for requested model."}"#,
    );
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
}
