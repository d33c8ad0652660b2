//! Criterion benchmarks for provider translation: encoding an OpenAI chat request for each
//! translated provider, and decoding each provider's stream into OpenAI chunks (reported per
//! chunk). Run: `cargo bench --bench codecs`. Inputs are the golden fixtures of `tests/fixtures/`.

/// The gateway's allocator, so the figures are the ones the binary sees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use filters::Endpoint;
use filters::request::RequestView;
use sluice::config::UpstreamUrl;
use sluice::providers::Wire;
use sluice::providers::codec::{self, StreamDecoder};
use sluice::providers::openai::{Target, UpstreamRequest};
use sluice::providers::translate::{DecodeOptions, ParamPolicy};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect(name)
}

const WIRES: &[(Wire, &str)] = &[
    (Wire::OpenAi, "openai"),
    (Wire::Anthropic, "anthropic"),
    (Wire::Gemini, "gemini"),
    (Wire::OllamaChat, "ollama_chat"),
    (Wire::Cohere, "cohere"),
];

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_chat");
    // The Anthropic vector's request: system prompt, image, tool call and result, tools.
    let body = Bytes::from(fixture("anthropic/a1_1_openai_request.json"));
    let view = RequestView::parse(&body).unwrap();
    let base = UpstreamUrl::parse("http://127.0.0.1:1/v1").unwrap();
    let headers = std::sync::Arc::new(http::HeaderMap::new());
    let policy = ParamPolicy {
        drop_unsupported: true,
        always_drop: Vec::new(),
    };
    for (wire, name) in WIRES {
        let target = Target::new(*wire, &base, "model-x", &headers);
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                codec::encode(
                    Endpoint::ChatCompletions,
                    &target,
                    black_box(&view),
                    black_box(&body),
                    true,
                    &policy,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

fn opts() -> DecodeOptions {
    DecodeOptions {
        model_override: Some("gpt-4o".into()),
        fallback_model: "gpt-4o".into(),
        created: 1_700_000_000,
        include_usage: true,
        max_event_bytes: sluice::providers::translate::DEFAULT_MAX_EVENT_BYTES,
    }
}

fn request() -> UpstreamRequest {
    UpstreamRequest {
        include_usage: true,
        ..UpstreamRequest::post("/".into(), &Default::default(), Bytes::new(), None)
    }
}

/// A long text stream in each provider's framing: `n` content deltas.
fn text_stream(wire: Wire, n: usize) -> String {
    let mut s = String::new();
    match wire {
        Wire::OpenAi => {
            for i in 0..n {
                s.push_str(&format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"));
            }
            s.push_str("data: [DONE]\n\n");
        }
        Wire::Anthropic => {
            s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n");
            for i in 0..n {
                s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" word{i}\"}}}}\n\n"));
            }
            s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        }
        Wire::Gemini => {
            for i in 0..n {
                s.push_str(&format!("data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"text\":\" word{i}\"}}]}},\"index\":0}}],\"usageMetadata\":{{\"promptTokenCount\":10,\"totalTokenCount\":10}},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r\"}}\n\n"));
            }
        }
        Wire::OllamaChat => {
            for i in 0..n {
                s.push_str(&format!("{{\"model\":\"llama3.2\",\"created_at\":\"2024-01-01T00:00:00Z\",\"message\":{{\"role\":\"assistant\",\"content\":\" word{i}\"}},\"done\":false}}\n"));
            }
            s.push_str("{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":10,\"eval_count\":9}\n");
        }
        Wire::Cohere => {
            s.push_str("event: message-start\ndata: {\"id\":\"c\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n");
            for i in 0..n {
                s.push_str(&format!("event: content-delta\ndata: {{\"type\":\"content-delta\",\"index\":0,\"delta\":{{\"message\":{{\"content\":{{\"text\":\" word{i}\"}}}}}}}}\n\n"));
            }
            s.push_str("event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"tokens\":{\"input_tokens\":10,\"output_tokens\":9}}}}\n\n");
        }
        _ => unreachable!(),
    }
    s
}

fn decode_stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_stream_per_chunk");
    const CHUNKS: usize = 200;
    for (wire, name) in WIRES {
        let stream = text_stream(*wire, CHUNKS);
        // Network-like reads: 1 KiB pieces.
        let pieces: Vec<&[u8]> = stream.as_bytes().chunks(1024).collect();
        g.throughput(Throughput::Elements(CHUNKS as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut d = StreamDecoder::new(*wire, &request(), opts());
                let mut out = BytesMut::with_capacity(4096);
                for p in &pieces {
                    d.feed(black_box(p), &mut out);
                    out.clear();
                }
                d.finish(&mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// What the load benchmark's translated path costs per request: the small chat request encoded
/// for Anthropic and the mock's Messages answer decoded back, split into its steps.
fn translated_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("translated_request");
    let body = Bytes::from_static(br#"{"model":"claude","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello, how are you today?"}]}"#);
    let view = RequestView::parse(&body).unwrap();
    let base = UpstreamUrl::parse("http://127.0.0.1:1").unwrap();
    let headers = std::sync::Arc::new(http::HeaderMap::new());
    let target = Target::new(Wire::Anthropic, &base, "claude-sonnet-4-5", &headers);
    let policy = ParamPolicy::default();
    g.bench_function("encode", |b| {
        b.iter(|| {
            codec::encode(
                Endpoint::ChatCompletions,
                &target,
                black_box(&view),
                black_box(&body),
                true,
                &policy,
            )
            .unwrap()
        })
    });
    let answer = br#"{"id":"mock-anthropic-1","type":"message","role":"assistant","model":"gpt-4o-mini-2024-07-18","content":[{"type":"text","text":"Hello word1 word2 word3 word4"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":14,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":5}}"#;
    let opts = opts();
    g.bench_function("decode", |b| {
        let request = request();
        b.iter(|| {
            codec::decode_body(
                Wire::Anthropic,
                black_box(answer),
                &opts,
                &request,
                "claude-sonnet-4-5",
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, encode, decode_stream, translated_request);
criterion_main!(benches);
