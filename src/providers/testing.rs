//! Helpers shared by the codecs' golden tests: fixtures from `tests/fixtures/`, and the
//! split-invariance check every streaming decoder must pass.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::config::UpstreamUrl;

pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

pub fn target_for(base: &str) -> (UpstreamUrl, std::sync::Arc<http::HeaderMap>) {
    (UpstreamUrl::parse(base).unwrap(), Default::default())
}

/// Feeds `bytes` whole, split at every offset, and in 300 random chunkings; `decode` must give
/// the same output every time.
pub fn split_invariant(bytes: &[u8], decode: impl Fn(&[&[u8]]) -> String) {
    let whole = decode(&[bytes]);
    assert!(!whole.is_empty());
    for cut in 0..=bytes.len() {
        assert_eq!(
            decode(&[&bytes[..cut], &bytes[cut..]]),
            whole,
            "split at byte {cut}"
        );
    }
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..300 {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = rng.usize(1..=48).min(bytes.len() - at);
            chunks.push(&bytes[at..at + n]);
            at += n;
        }
        assert_eq!(decode(&chunks), whole, "random chunking {round}");
    }
}
