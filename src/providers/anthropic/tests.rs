//! Golden tests for the Anthropic codec: the vectors of `providers.md` 9.1, 9.2 and 9.5
//! (fixtures under `tests/fixtures/anthropic/`), stream split invariance, errors.

use super::*;
use crate::providers::testing::{fixture, json_fixture, obj, split_invariant, target_for};
use crate::providers::translate::ParamPolicy;
use crate::providers::translate::TranslatedStream;

fn opts(include_usage: bool) -> DecodeOptions {
    DecodeOptions {
        model_override: None,
        fallback_model: "claude-sonnet-4-5".into(),
        created: 1_700_000_000,
        include_usage,
        max_event_bytes: crate::providers::translate::DEFAULT_MAX_EVENT_BYTES,
    }
}

fn encode_fixture(body: Value) -> UpstreamRequest {
    let (base, headers) = target_for("https://api.anthropic.com");
    let target = Target {
        max_output_tokens: Some(64_000),
        ..Target::new(
            super::super::Wire::Anthropic,
            &base,
            "claude-sonnet-4-5",
            &headers,
        )
    };
    let mut body = obj(body);
    ParamPolicy::default()
        .apply(&mut body, SUPPORTED, "anthropic")
        .unwrap();
    encode(ChatRequest::read(body).unwrap(), &target).unwrap()
}

#[test]
fn a1_request_is_translated_as_the_vector_says() {
    let req = encode_fixture(json_fixture("anthropic/a1_1_openai_request.json"));
    assert_eq!(req.target, "/v1/messages");
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(sent, json_fixture("anthropic/a1_2_upstream_request.json"));
    assert!(!req.json_tool);
}

#[test]
fn a1_response_is_translated_as_the_vector_says() {
    let (body, usage) = decode(
        fixture("anthropic/a1_3_upstream_response.json").as_bytes(),
        &opts(false),
        false,
    )
    .unwrap();
    let got: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got, json_fixture("anthropic/a1_4_openai_response.json"));
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (1436, 11, 1447)
    );
}

fn run_stream(chunks: &[&[u8]], include_usage: bool) -> (String, StreamDecoder) {
    let mut d = StreamDecoder::new(opts(include_usage), false);
    let mut out = BytesMut::new();
    for c in chunks {
        d.feed(c, &mut out);
    }
    d.finish(&mut out);
    (String::from_utf8(out.to_vec()).unwrap(), d)
}

#[test]
fn a2_stream_is_translated_byte_for_byte() {
    let upstream = fixture("anthropic/a2_1_upstream.sse");
    let (out, d) = run_stream(&[upstream.as_bytes()], true);
    assert_eq!(out, fixture("anthropic/a2_2_openai.sse"));
    let usage = d.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (58, 41));
    assert!(d.upstream_error().is_none());
}

#[test]
fn a2_stream_without_include_usage_has_no_usage_chunk_but_counts_tokens() {
    let upstream = fixture("anthropic/a2_1_upstream.sse");
    let (out, d) = run_stream(&[upstream.as_bytes()], false);
    assert!(!out.contains("\"usage\""));
    assert!(out.ends_with("data: [DONE]\n\n"));
    assert_eq!(d.usage().unwrap().total_tokens, 99);
}

#[test]
fn a2_stream_decodes_the_same_at_every_split() {
    let upstream = fixture("anthropic/a2_1_upstream.sse");
    split_invariant(upstream.as_bytes(), |chunks| run_stream(chunks, true).0);
}

#[test]
fn overloaded_529_keeps_its_status_and_type() {
    // 9.5: non-streaming failure.
    let e = error(
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CXYZ"}"#,
    );
    assert_eq!(e.status.as_u16(), 529);
    let body: Value = serde_json::from_slice(&e.body()).unwrap();
    assert_eq!(
        body,
        json!({"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":"overloaded_error"}})
    );
    assert!(crate::providers::translate::classify(&e).retryable());
}

#[test]
fn error_event_mid_stream_becomes_one_error_line_and_no_done() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
        "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
    );
    let (out, d) = run_stream(&[stream.as_bytes()], true);
    assert!(out.ends_with(
        "data: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\",\"param\":null,\"code\":\"overloaded_error\"}}\n\n"
    ), "{out}");
    assert!(!out.contains("[DONE]"));
    assert_eq!(d.upstream_error(), Some("Overloaded"));
}

#[test]
fn context_window_errors_are_classified() {
    let e = error(
        400,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 208656 tokens > 200000 maximum"}}"#,
    );
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
    assert_eq!(
        crate::providers::translate::classify(&e),
        crate::providers::translate::ErrorClass::ContextWindowExceeded
    );
    let e = error(
        429,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
    );
    assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
}

#[test]
fn max_tokens_defaults_from_the_model_table_and_system_blocks_keep_cache_control() {
    let req = encode_fixture(json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "second"},
            {"role": "user", "content": "hi"}
        ]
    }));
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(sent["max_tokens"], 64_000);
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "second"}])
    );
    assert_eq!(sent["messages"], json!([{"role": "user", "content": "hi"}]));
}

#[test]
fn response_format_travels_as_a_forced_tool_and_returns_as_content() {
    let req = encode_fixture(json!({
        "model": "claude",
        "messages": [{"role": "user", "content": "give json"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "properties": {"t": {"type": "number"}}}}}
    }));
    assert!(req.json_tool);
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": JSON_TOOL})
    );
    assert_eq!(
        sent["tools"][0]["input_schema"]["properties"]["t"]["type"],
        "number"
    );

    let upstream = br#"{"id":"msg_j","type":"message","role":"assistant","model":"claude","content":[{"type":"tool_use","id":"toolu_1","name":"json_tool_call","input":{"t":18}}],"stop_reason":"tool_use","usage":{"input_tokens":3,"output_tokens":4}}"#;
    let (body, _) = decode(upstream, &opts(false), true).unwrap();
    let got: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(got["choices"][0]["message"]["content"], "{\"t\":18}");
    assert_eq!(got["choices"][0]["finish_reason"], "stop");
    assert!(got["choices"][0]["message"].get("tool_calls").is_none());
}

#[test]
fn tool_results_and_a_following_user_message_share_one_turn() {
    let req = encode_fixture(json!({
        "model": "claude",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "b", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "a", "content": "18C"},
            {"role": "tool", "tool_call_id": "b", "content": "25C"},
            {"role": "user", "content": "thanks"}
        ],
        "temperature": 1.7
    }));
    let sent: Value = serde_json::from_slice(&req.body).unwrap();
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(
        msgs[1]["content"][0],
        json!({"type": "text", "text": "Checking."})
    );
    assert_eq!(msgs[1]["content"][2]["input"], json!({"city": "Rome"}));
    assert_eq!(
        msgs[2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "a", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "b", "content": "25C"},
            {"type": "text", "text": "thanks"}
        ])
    );
    assert_eq!(sent["temperature"], 1.0, "clamped to Anthropic's range");
}

#[test]
fn unsupported_parameters_are_named() {
    let mut body = obj(
        json!({"model": "c", "messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 1}}),
    );
    let e = ParamPolicy::default()
        .apply(&mut body, SUPPORTED, "anthropic")
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("logit_bias"));
}

#[test]
fn a_stream_cut_before_any_output_is_an_error() {
    let (out, d) = run_stream(&[b"event: ping\ndata: {\"type\":\"ping\"}\n\n"], false);
    assert!(out.starts_with("data: {\"error\""), "{out}");
    assert!(d.upstream_error().is_some());
}
