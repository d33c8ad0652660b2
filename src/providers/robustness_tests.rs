//! Robustness of every decoder against hostile or broken upstream bytes: random bytes, truncated
//! and corrupted real fixtures, fed in random chunkings. Nothing may panic (a panic would reach a
//! request), and a stream must end in exactly one terminal state: `[DONE]` or an error event.

use bytes::BytesMut;

use super::Wire;
use super::codec::{self, ClientStream, Ingress};
use super::openai::UpstreamRequest;
use super::testing::fixture;
use super::translate::DecodeOptions;

const WIRES: &[Wire] = &[
    Wire::OpenAi,
    Wire::Azure,
    Wire::Anthropic,
    Wire::Gemini,
    Wire::OllamaChat,
    Wire::Ollama,
    Wire::Cohere,
    Wire::Bedrock,
];

fn opts() -> DecodeOptions {
    DecodeOptions {
        model_override: Some("m".into()),
        fallback_model: "m".into(),
        created: 1,
        include_usage: true,
        max_event_bytes: crate::providers::translate::DEFAULT_MAX_EVENT_BYTES,
    }
}

fn request() -> UpstreamRequest {
    UpstreamRequest {
        include_usage: true,
        ..UpstreamRequest::post("/".into(), &Default::default(), bytes::Bytes::new(), None)
    }
}

fn inputs(rng: &mut fastrand::Rng) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        "anthropic/a2_1_upstream.sse",
        "gemini/g2_1_upstream.sse",
        "ollama/chat_stream.ndjson",
        "cohere/chat_stream.sse",
        "anthropic/a1_3_upstream_response.json",
        "gemini/g1_3_upstream_response.json",
    ]
    .iter()
    .map(|f| fixture(f).into_bytes())
    .collect();
    // Truncations and byte corruptions of the real shapes, plus pure noise.
    let real = out.clone();
    for bytes in &real {
        for _ in 0..20 {
            let cut = rng.usize(0..=bytes.len());
            out.push(bytes[..cut].to_vec());
            let mut corrupted = bytes.clone();
            for _ in 0..rng.usize(1..8) {
                let at = rng.usize(0..corrupted.len().max(1));
                if let Some(b) = corrupted.get_mut(at) {
                    *b = rng.u8(..);
                }
            }
            out.push(corrupted);
        }
    }
    for _ in 0..50 {
        let len = rng.usize(0..600);
        out.push((0..len).map(|_| rng.u8(..)).collect());
    }
    out.push(
        b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":99999999999}]}}]}\n\n"
            .to_vec(),
    );
    out.push(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":-1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":null}}\n\n".to_vec());
    out
}

#[test]
fn no_decoder_panics_on_broken_upstream_bytes() {
    let mut rng = fastrand::Rng::with_seed(11);
    let inputs = inputs(&mut rng);
    // A Responses client: its stream passed through (native) or converted from chat.
    let translated = UpstreamRequest {
        responses: Some(Box::new(crate::providers::responses_api::Echo::of_request(
            b"{}",
            "resp_1".into(),
            "m",
            1,
        ))),
        ..request()
    };
    for wire in WIRES {
        for (ingress, upstream) in [
            (Ingress::OpenAi, request()),
            (Ingress::Anthropic, request()),
            (Ingress::Responses, request()),
            (Ingress::Responses, translated.clone()),
        ] {
            for input in &inputs {
                let mut stream = ClientStream::new(ingress, *wire, &upstream, opts());
                let mut out = BytesMut::new();
                let mut at = 0;
                while at < input.len() {
                    let n = rng.usize(1..=64).min(input.len() - at);
                    stream.feed(&input[at..at + n], &mut out);
                    at += n;
                }
                stream.finish(&mut out);
                let _ = stream.usage();
                let text = String::from_utf8_lossy(&out);
                if ingress == Ingress::OpenAi && wire.translates() {
                    let done = text.matches("data: [DONE]").count();
                    let errored = stream.upstream_error().is_some();
                    assert!(
                        (done == 1) != errored,
                        "{wire:?}: a stream ends in [DONE] or an error, exactly one: done={done} error={errored}\n{text}"
                    );
                }
                if upstream.responses.is_some() {
                    let ends = text.matches("event: response.completed\n").count()
                        + text.matches("event: response.incomplete\n").count();
                    let errored = text.contains("event: error\n");
                    assert!(
                        (ends == 1) != errored,
                        "{wire:?}: a Responses stream completes or errs, exactly one\n{text}"
                    );
                }
                // Whole-body decoders and error mappers take the same bytes.
                let _ = codec::decode_body(*wire, input, &opts(), &request(), "model-x");
                let e = codec::decode_error(*wire, 500, &http::HeaderMap::new(), input);
                assert_eq!(e.status.as_u16(), 500);
            }
        }
    }
}

#[test]
fn a_finished_stream_reports_closed_so_nothing_follows_it() {
    // Ollama's done line ends the client stream at once; a reset after it must add nothing.
    let mut stream = ClientStream::new(Ingress::OpenAi, Wire::OllamaChat, &request(), opts());
    let mut out = BytesMut::new();
    stream.feed(fixture("ollama/chat_stream.ndjson").as_bytes(), &mut out);
    assert!(stream.is_closed());
    assert!(String::from_utf8_lossy(&out).ends_with("data: [DONE]\n\n"));
    // And a stream cut in the middle is not closed: the error event belongs there.
    let mut stream = ClientStream::new(Ingress::Anthropic, Wire::Gemini, &request(), opts());
    let mut out = BytesMut::new();
    let g = fixture("gemini/g2_1_upstream.sse");
    stream.feed(&g.as_bytes()[..g.len() / 2], &mut out);
    assert!(!stream.is_closed());
}

#[test]
fn review_fixes_hold() {
    use super::openai::Target;
    use super::testing::{obj, target_for};
    use super::translate::ChatRequest;
    use serde_json::{Value, json};
    // Thinking: max_tokens above the budget, no sampling overrides, none in JSON mode.
    let (base, headers) = target_for("https://api.anthropic.com");
    let target = Target::new(Wire::Anthropic, &base, "claude", &headers);
    let req = ChatRequest::read(obj(json!({"messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 500, "temperature": 0.2, "reasoning_effort": "high"})))
    .unwrap();
    let sent: Value =
        serde_json::from_slice(&super::anthropic::encode(req, &target).unwrap().body).unwrap();
    assert_eq!(sent["thinking"]["budget_tokens"], 4096);
    assert!(sent["max_tokens"].as_u64().unwrap() > 4096);
    assert!(sent.get("temperature").is_none());
    // Gemini: n > 1 refused, top_k mapped.
    let (base, headers) = target_for("https://generativelanguage.googleapis.com/v1beta");
    let target = Target::new(Wire::Gemini, &base, "g", &headers);
    let req = ChatRequest::read(obj(
        json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
    ))
    .unwrap();
    assert_eq!(
        super::gemini::encode(req, &target)
            .unwrap_err()
            .param
            .as_deref(),
        Some("n")
    );
    let req = ChatRequest::read(obj(
        json!({"messages": [{"role": "user", "content": "hi"}], "top_k": 40}),
    ))
    .unwrap();
    let sent: Value =
        serde_json::from_slice(&super::gemini::encode(req, &target).unwrap().body).unwrap();
    assert_eq!(sent["generationConfig"]["topK"], 40);
    assert!(sent.get("top_k").is_none());
    // An error inside a 200 answer with no code is a 502, not a 200.
    assert_eq!(
        super::gemini::error(200, br#"{"error":{"message":"x","status":"INTERNAL"}}"#)
            .status
            .as_u16(),
        502
    );
    assert_eq!(
        super::anthropic::error(200, br#"{"error":{"message":"x"}}"#)
            .status
            .as_u16(),
        502
    );
    // Cohere: a deadline is not a context-window overflow.
    let e = super::cohere::error(503, br#"{"message":"context deadline exceeded"}"#);
    assert_ne!(e.code.as_deref(), Some("context_length_exceeded"));
    // Tool-call arguments given as an object are kept.
    let req = ChatRequest::read(obj(
        json!({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]}),
    ))
    .unwrap();
    assert!(
        matches!(&req.messages[0], super::translate::Message::Assistant { tool_calls, .. } if tool_calls[0].arguments == json!({"a": 1}))
    );
    // Huge counts saturate instead of overflowing.
    let (_, usage) = super::anthropic::decode(
        br#"{"id":"m","type":"message","content":[],"usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":5,"output_tokens":1}}"#,
        &opts(),
        false,
    )
    .unwrap();
    assert_eq!(usage.total_tokens, u64::MAX);
}

#[test]
fn an_endless_event_is_refused_not_buffered_forever() {
    for wire in [
        Wire::Anthropic,
        Wire::Gemini,
        Wire::Cohere,
        Wire::OllamaChat,
    ] {
        let mut stream = ClientStream::new(Ingress::OpenAi, wire, &request(), opts());
        let mut out = BytesMut::new();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..17 {
            stream.feed(&chunk, &mut out);
        }
        assert!(stream.is_closed(), "{wire:?}");
        assert!(
            String::from_utf8_lossy(&out).contains("larger than 16 MiB"),
            "{wire:?}"
        );
    }
}
