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
    }
}

fn request() -> UpstreamRequest {
    UpstreamRequest {
        method: http::Method::POST,
        target: "/".into(),
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::new(),
        injected_usage: false,
        json_tool: false,
        include_usage: true,
        embedding: None,
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
    for wire in WIRES {
        for ingress in [Ingress::OpenAi, Ingress::Anthropic] {
            for input in &inputs {
                let mut stream = ClientStream::new(ingress, *wire, &request(), opts());
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
                // Whole-body decoders and error mappers take the same bytes.
                let _ = codec::decode_body(*wire, input, &opts(), &request(), "model-x");
                let e = codec::decode_error(*wire, 500, &http::HeaderMap::new(), input);
                assert_eq!(e.status.as_u16(), 500);
            }
        }
    }
}
