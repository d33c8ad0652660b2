//! Fuzz targets for the parsers of this crate that read untrusted bytes: every provider's
//! stream decoder (the SSE framer and the passthrough rewriter, the Anthropic, Gemini, Cohere
//! and Ollama decoders, Bedrock's event-stream decoder) and whole-body decoder, the
//! `Content-Encoding` decoders and the config loader. The request body reader and the JSON
//! scanners are in `filters::fuzz`.
//!
//! Each target is a plain function of the input that panics when an invariant breaks (a panic
//! in a decoder would reach a request). `scripts/fuzz` runs them under AFL++ (`tests/fuzz`);
//! the tests below replay the committed corpus, every crash turned regression, and seeded
//! mutations on every test run. Not part of the request path.

use bytes::BytesMut;

use crate::providers::Wire;
use crate::providers::codec::{self, ClientStream, Ingress};
use crate::providers::openai::UpstreamRequest;
use crate::providers::translate::DecodeOptions;

/// A fuzz target: panics when an invariant breaks.
pub type Target = fn(&[u8]);

/// The targets by name (`tests/fuzz/corpus/<name>/`, and the AFL binary's argument).
pub const TARGETS: &[(&str, Target)] = &[
    ("request_body", filters::fuzz::request_body),
    ("json_scan", filters::fuzz::json_scan),
    ("sse_passthrough", |d| {
        stream(Wire::OpenAi, Ingress::OpenAi, d)
    }),
    ("sse_to_messages", |d| {
        stream(Wire::OpenAi, Ingress::Anthropic, d)
    }),
    ("anthropic_stream", |d| {
        stream(Wire::Anthropic, Ingress::OpenAi, d)
    }),
    ("gemini_stream", |d| {
        stream(Wire::Gemini, Ingress::OpenAi, d)
    }),
    ("cohere_stream", |d| {
        stream(Wire::Cohere, Ingress::OpenAi, d)
    }),
    ("ollama_stream", |d| {
        stream(Wire::OllamaChat, Ingress::OpenAi, d)
    }),
    ("bedrock_stream", |d| {
        stream(Wire::Bedrock, Ingress::OpenAi, d)
    }),
    ("response_body", response_body),
    ("content_encoding", content_encoding),
    ("config", config),
];

/// The largest event the decoders accept while fuzzing: small, so overflows are reached.
const FUZZ_MAX_EVENT: usize = 4096;

fn opts() -> DecodeOptions {
    DecodeOptions {
        model_override: Some("m".into()),
        fallback_model: "m".into(),
        created: 1,
        include_usage: true,
        max_event_bytes: FUZZ_MAX_EVENT,
    }
}

fn request() -> UpstreamRequest {
    UpstreamRequest {
        include_usage: true,
        ..UpstreamRequest::post("/".into(), &Default::default(), bytes::Bytes::new(), None)
    }
}

/// The first two bytes pick where the rest is split; `None` for a too-short input.
fn split(data: &[u8]) -> Option<(usize, &[u8])> {
    let (head, rest) = data.split_first_chunk::<2>()?;
    let at = usize::from(u16::from_le_bytes(*head)) % (rest.len() + 1);
    Some((at, rest))
}

fn decode(wire: Wire, ingress: Ingress, chunks: &[&[u8]]) -> (Vec<u8>, bool, bool) {
    let mut stream = ClientStream::new(ingress, wire, &request(), opts());
    let mut out = BytesMut::new();
    for c in chunks {
        stream.feed(c, &mut out);
    }
    stream.finish(&mut out);
    let _ = stream.usage();
    (
        out.to_vec(),
        stream.upstream_error().is_some(),
        stream.is_closed(),
    )
}

/// A stream decoder: the output does not depend on where the upstream's bytes were split, and
/// a translated stream ends in exactly one terminal event (`[DONE]` or an error).
pub fn stream(wire: Wire, ingress: Ingress, data: &[u8]) {
    let Some((at, rest)) = split(data) else {
        return;
    };
    let whole = decode(wire, ingress, &[rest]);
    let parts = decode(wire, ingress, &[&rest[..at], &rest[at..]]);
    let (a, b) = (without_random_ids(&whole.0), without_random_ids(&parts.0));
    assert!(
        a == b && whole.1 == parts.1 && whole.2 == parts.2,
        "{wire:?} gives another output when the input is split at {at}:\n{a}\n---\n{b}"
    );
    if ingress == Ingress::OpenAi && wire.translates() {
        let text = String::from_utf8_lossy(&whole.0);
        let done = text.matches("data: [DONE]").count();
        assert!(
            (done == 1) != whole.1,
            "{wire:?}: [DONE] {done} time(s), error {}",
            whole.1
        );
    }
}

/// The output with the ids a decoder makes up when the provider sends none
/// (`chatcmpl-<uuid>`, and `msg_<uuid>` derived from it) set to zeros.
fn without_random_ids(out: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(out).into_owned();
    for prefix in ["chatcmpl-", "msg_"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(prefix) {
            let start = from + i + prefix.len();
            let len = text[start..]
                .bytes()
                .take_while(u8::is_ascii_hexdigit)
                .count();
            if len == 32 {
                text.replace_range(start..start + 32, &"0".repeat(32));
            }
            from = start;
        }
    }
    text
}

/// Whole-body decoders and error mappers of every wire: no panic, and an error is mapped to
/// the status it came with.
pub fn response_body(data: &[u8]) {
    for wire in [
        Wire::OpenAi,
        Wire::Anthropic,
        Wire::Gemini,
        Wire::Cohere,
        Wire::OllamaChat,
        Wire::Bedrock,
    ] {
        let _ = codec::decode_body(wire, data, &opts(), &request(), "model-x");
        let e = codec::decode_error(wire, 429, &http::HeaderMap::new(), data);
        assert_eq!(e.status.as_u16(), 429, "{wire:?}");
    }
    let _ =
        crate::providers::sse::rewrite_json_response(bytes::Bytes::copy_from_slice(data), b"\"m\"");
    let _ = crate::providers::messages_api::usage_of_response(data);
}

/// The `Content-Encoding` decoders on arbitrary bytes: no panic, and the output does not depend
/// on the chunking. Decoded output is capped (a small input can expand a thousandfold).
pub fn content_encoding(data: &[u8]) {
    use crate::providers::content_encoding::BodyDecoder;
    let Some((at, rest)) = split(data) else {
        return;
    };
    let run = |chunks: &[&[u8]], name: &[u8]| -> Option<Vec<u8>> {
        let mut d = BodyDecoder::for_encoding(Some(name)).ok()??;
        let mut out = Vec::new();
        for c in chunks {
            d.decode(c, &mut out, 16 * 1024 * 1024).ok()?;
        }
        d.finish(&mut out).ok()?;
        Some(out)
    };
    for name in [&b"gzip"[..], b"deflate", b"br"] {
        let whole = run(&[rest], name);
        let parts = run(&[&rest[..at], &rest[at..]], name);
        if let (Some(whole), Some(parts)) = (whole, parts) {
            assert_eq!(whole, parts, "{}", String::from_utf8_lossy(name));
        }
    }
}

/// The config loader on arbitrary text: never panics (a bad config is a report, not a crash).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let prices = prices();
    let _ = crate::config::load_str(
        &text,
        &crate::config::env::Env::default(),
        &crate::config::Overrides::default(),
        prices,
        false,
    );
}

fn prices() -> &'static crate::pricing::PriceTable {
    static PRICES: std::sync::OnceLock<crate::pricing::PriceTable> = std::sync::OnceLock::new();
    PRICES.get_or_init(|| crate::pricing::PriceTable::load().expect("the price table loads"))
}

/// Runs `target` on stdin's bytes (the AFL binary's way in, and `scripts/fuzz`'s way of
/// replaying a crash): `sluice-fuzz <target> < input`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target on its committed corpus, every committed regression (a crash AFL found,
    /// kept once fixed), and 1,500 seeded mutations of the corpus.
    #[test]
    fn targets_survive_their_corpus_regressions_and_mutations() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (name, run) in TARGETS {
            let corpus = filters::fuzz::corpus(root, "corpus", name);
            assert!(!corpus.is_empty(), "tests/fuzz/corpus/{name} is empty");
            for input in corpus
                .iter()
                .chain(&filters::fuzz::corpus(root, "regressions", name))
            {
                run(input);
            }
            let mut rng = fastrand::Rng::with_seed(0x5eed);
            let rounds = if *name == "config" { 300 } else { 1500 };
            for _ in 0..rounds {
                let seed = &corpus[rng.usize(..corpus.len())];
                run(&filters::fuzz::mutate(seed, &mut rng));
            }
        }
    }
}
