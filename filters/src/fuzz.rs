//! Fuzz targets for the parsers in this crate that read untrusted bytes: the request body
//! reader (its fast path held to serde's reading) and the response scanners. Each target is a
//! plain function of the input that panics when an invariant breaks; `scripts/fuzz` runs them
//! under AFL++ (`tests/fuzz`), and the tests below replay the committed corpus and regressions
//! on every test run. Not part of the request path.

use crate::json_scan::{model_and_usage, scan_top_level};
use crate::request::RequestView;

/// The request body reader: never panics, and whatever its fast path accepts, serde accepts
/// too and reads the same way (model, its span, stream, user, max_tokens, ...).
pub fn request_body(data: &[u8]) {
    let fast = crate::request_fast::parse(data);
    let serde = RequestView::parse_with_serde(data).ok();
    if let Some(fast) = &fast {
        assert_eq!(
            Some(fast),
            serde.as_ref(),
            "the fast path read {:?} differently from serde",
            String::from_utf8_lossy(data)
        );
    }
    let _ = RequestView::parse(data);
}

/// The response scanners: never panic; spans they report lie inside the document and hold
/// what they say (a string for `model`, an object for `usage`), and on a document serde reads
/// as an object, the top-level `model` string is the one serde sees.
pub fn json_scan(data: &[u8]) {
    let full = scan_top_level(data);
    if let Some(f) = &full {
        if let Some(span) = &f.model {
            assert!(span.end <= data.len() && data[span.start] == b'"');
        }
        if let Some(span) = &f.usage {
            assert!(span.end <= data.len() && data[span.start] == b'{');
        }
    }
    if let Some(ends) = model_and_usage(data) {
        for span in ends.model.iter().chain(&ends.usage) {
            assert!(span.start < span.end && span.end <= data.len());
        }
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data)
        && let Some(f) = &full
        && f.complete
        // Duplicate keys: serde keeps the last, the scan the first.
        && !has_duplicate_top_level_model(data)
    {
        match (map.get("model"), &f.model) {
            (Some(serde_json::Value::String(m)), Some(span)) => {
                let scanned: String = serde_json::from_slice(&data[span.clone()])
                    .expect("a model span is a JSON string");
                assert_eq!(&scanned, m);
            }
            (Some(serde_json::Value::String(_)), None) => {
                panic!("serde sees a model string the scan missed")
            }
            _ => {}
        }
    }
}

fn has_duplicate_top_level_model(data: &[u8]) -> bool {
    let mut models = 0;
    crate::json_scan::for_each_member(data, |key, _| {
        if key == b"model" {
            models += 1;
        }
    });
    models > 1
}

/// A deterministic mutation of `seed` (bytes flipped, inserted, removed, duplicated), for the
/// corpus replay tests: no coverage guidance, but cheap enough for every test run.
pub fn mutate(seed: &[u8], rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..rng.usize(1..=4) {
        let at = if out.is_empty() {
            0
        } else {
            rng.usize(..out.len())
        };
        match rng.u8(..5) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.u8(..8),
            1 => out.insert(at, *b"{}[]\",:\\ 0en".get(rng.usize(..13)).unwrap_or(&b'x')),
            2 if !out.is_empty() => {
                out.remove(at);
            }
            3 if !out.is_empty() => {
                let end = (at + rng.usize(1..16)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.truncate(at),
        }
    }
    out
}

/// The files of `tests/fuzz/<kind>/<target>/` (the corpus, or crashes turned regressions).
pub fn corpus(root: &std::path::Path, kind: &str, target: &str) -> Vec<Vec<u8>> {
    let dir = root.join("tests").join("fuzz").join(kind).join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(target: &str, run: fn(&[u8])) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let seeds = corpus(&root, "corpus", target);
        assert!(!seeds.is_empty(), "tests/fuzz/corpus/{target} is empty");
        for input in seeds.iter().chain(&corpus(&root, "regressions", target)) {
            run(input);
        }
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for _ in 0..3000 {
            let seed = &seeds[rng.usize(..seeds.len())];
            run(&mutate(seed, &mut rng));
        }
    }

    #[test]
    fn request_body_corpus_and_mutations() {
        replay("request_body", request_body);
    }

    #[test]
    fn json_scan_corpus_and_mutations() {
        replay("json_scan", json_scan);
    }
}
