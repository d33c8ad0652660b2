//! Finding top-level fields in upstream JSON without parsing it.
//!
//! Responses pass through the gateway with two edits at most: the `model` value is set to the name
//! the client asked for, and `usage` is read for accounting. Both are top-level fields of the
//! response object (and of every streamed chunk), so a single forward scan that tracks nesting
//! depth and string state finds them; nothing else in the document is decoded.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

/// Spans of the top-level `model` and `usage` values of a JSON object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TopLevelFields {
    /// Span of the `model` value (quotes included) when it is a string.
    pub model: Option<Range<usize>>,
    /// Span of the `usage` value when it is an object.
    pub usage: Option<Range<usize>>,
    /// Whether the object has a top-level `error` key (an error event in a stream).
    pub has_error: bool,
    /// Whether `choices` is present and an empty array (the usage-only final chunk of a stream).
    pub empty_choices: bool,
    /// Whether the object closed properly with nothing but whitespace after it (a structural
    /// check that catches truncated or garbage bodies; nested values are only skipped).
    pub complete: bool,
}

/// Scans `doc` (a JSON object) for its top-level `model`, `usage`, `error` and `choices` fields.
/// Returns `None` when `doc` does not start with an object. Malformed input never panics; the
/// scan just finds fewer fields.
pub fn scan_top_level(doc: &[u8]) -> Option<TopLevelFields> {
    let mut out = TopLevelFields::default();
    out.complete = for_each_member(doc, |key, value| {
        let first = doc[value.start];
        match key {
            b"model" if first == b'"' => out.model = Some(value),
            b"usage" if first == b'{' => out.usage = Some(value),
            b"error" if first != b'n' => out.has_error = true,
            b"choices" => {
                out.empty_choices = first == b'['
                    && doc[value.start + 1..value.end - 1]
                        .iter()
                        .all(u8::is_ascii_whitespace)
            }
            _ => {}
        }
    })?;
    Some(out)
}

/// Calls `visit(key, value_span)` for each member of the JSON object `doc` (key bytes without
/// quotes, escapes not decoded). Returns `None` when `doc` does not start with an object, else
/// whether the object closed properly with nothing but whitespace after it.
pub fn for_each_member(doc: &[u8], mut visit: impl FnMut(&[u8], Range<usize>)) -> Option<bool> {
    let mut i = skip_ws(doc, 0);
    if doc.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(doc, i);
        match doc.get(i) {
            Some(b'"') => {}
            Some(b'}') => return Some(skip_ws(doc, i + 1) == doc.len()),
            _ => return Some(false), // malformed
        }
        let Some(key_end) = string_end(doc, i) else {
            return Some(false);
        };
        let key = &doc[i + 1..key_end - 1];
        i = skip_ws(doc, key_end);
        if doc.get(i) != Some(&b':') {
            return Some(false);
        }
        i = skip_ws(doc, i + 1);
        let value_start = i;
        let Some(value_end) = value_end(doc, i) else {
            return Some(false);
        };
        visit(key, value_start..value_end);
        i = skip_ws(doc, value_end);
        match doc.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Some(skip_ws(doc, i + 1) == doc.len()),
            _ => return Some(false),
        }
    }
}

/// `doc` with the byte range `span` replaced by the JSON string `value`, appended to `out`.
pub fn splice_string(out: &mut BytesMut, doc: &[u8], span: Range<usize>, quoted_value: &[u8]) {
    out.reserve(doc.len() + quoted_value.len());
    out.put_slice(&doc[..span.start]);
    out.put_slice(quoted_value);
    out.put_slice(&doc[span.end..]);
}

/// Replaces the top-level `model` string of a JSON document with `quoted_model` (already a JSON
/// string literal). Returns the input unchanged when there is no such field or it already matches.
pub fn replace_model(doc: Bytes, quoted_model: &[u8]) -> Bytes {
    let Some(fields) = scan_top_level(&doc) else {
        return doc;
    };
    match fields.model {
        Some(span) if &doc[span.clone()] != quoted_model => {
            let mut out = BytesMut::new();
            splice_string(&mut out, &doc, span, quoted_model);
            out.freeze()
        }
        _ => doc,
    }
}

fn skip_ws(doc: &[u8], mut i: usize) -> usize {
    while let Some(b) = doc.get(i) {
        if !b.is_ascii_whitespace() {
            break;
        }
        i += 1;
    }
    i
}

/// `start` is at an opening quote; returns the index just past the closing quote.
fn string_end(doc: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let at = memchr::memchr2(b'"', b'\\', &doc[i..])? + i;
        if doc[at] == b'\\' {
            i = at + 2;
            if i > doc.len() {
                return None;
            }
        } else {
            return Some(at + 1);
        }
    }
}

/// Returns the index just past the JSON value starting at `start`.
fn value_end(doc: &[u8], start: usize) -> Option<usize> {
    match doc.get(start)? {
        b'"' => string_end(doc, start),
        open @ (b'{' | b'[') => {
            // Only strings and brackets of the same kind matter for finding the matching close
            // in well-formed JSON, so jump between them with memchr (SIMD) instead of walking
            // every byte: embeddings responses are long runs of numbers.
            let close = if *open == b'{' { b'}' } else { b']' };
            let mut depth = 0usize;
            let mut i = start;
            while i < doc.len() {
                let at = memchr::memchr3(b'"', *open, close, &doc[i..])? + i;
                match doc[at] {
                    b'"' => {
                        i = string_end(doc, at)?;
                        continue;
                    }
                    b if b == *open => depth += 1,
                    _ => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                }
                i = at + 1;
            }
            None
        }
        _ => {
            // number, true, false, null: runs until a delimiter
            let rest = &doc[start..];
            let len = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            Some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_model_and_usage_at_top_level_only() {
        let doc = br#"{"id":"x","choices":[{"message":{"model":"inner","content":"\"model\":\"no\""}}],"model":"gpt-4o-2024","usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let f = scan_top_level(doc).unwrap();
        assert_eq!(&doc[f.model.unwrap()], br#""gpt-4o-2024""#);
        assert_eq!(
            &doc[f.usage.unwrap()],
            br#"{"prompt_tokens":3,"completion_tokens":4}"#
        );
        assert!(!f.has_error);
        assert!(!f.empty_choices);
        assert!(f.complete);
    }

    #[test]
    fn truncated_or_trailing_garbage_is_not_complete() {
        assert!(scan_top_level(b" {} \n").unwrap().complete);
        assert!(scan_top_level(br#"{"id": "broken"#).is_none_or(|f| !f.complete));
        assert!(!scan_top_level(br#"{"a":1} x"#).unwrap().complete);
        assert!(scan_top_level(br#"{"a":[1,2}"#).is_none_or(|f| !f.complete));
        assert!(scan_top_level(b"nope").is_none());
    }

    #[test]
    fn detects_usage_only_chunk_and_errors() {
        let f = scan_top_level(br#"{"id":"c","choices":[ ],"usage":{"total_tokens":1}}"#).unwrap();
        assert!(f.empty_choices);
        let f = scan_top_level(br#"{"error":{"message":"boom"}}"#).unwrap();
        assert!(f.has_error);
        let f = scan_top_level(br#"{"error":null,"model":"m"}"#).unwrap();
        assert!(!f.has_error);
    }

    #[test]
    fn replace_model_rewrites_the_value_and_keeps_everything_else() {
        let doc = Bytes::from_static(br#"{"object":"list","data":[{"embedding":[0.1,-2e-3]}],"model":"text-embedding-3-small-v2","usage":{"prompt_tokens":5}}"#);
        let out = replace_model(doc, br#""embed""#);
        assert_eq!(
            &out[..],
            br#"{"object":"list","data":[{"embedding":[0.1,-2e-3]}],"model":"embed","usage":{"prompt_tokens":5}}"#
        );
    }

    /// A JSON value with strings (escapes, brackets and quotes in them), numbers and nesting.
    fn random_value(rng: &mut fastrand::Rng, depth: usize) -> serde_json::Value {
        use serde_json::Value;
        let text = |rng: &mut fastrand::Rng| -> String {
            let len = rng.usize(0..48);
            (0..len)
                .map(|_| match rng.u8(0..20) {
                    0 => '"',
                    1 => '\\',
                    2 => '\n',
                    3 => '{',
                    4 => ']',
                    5 => '\u{e9}',
                    _ => rng.alphanumeric(),
                })
                .collect()
        };
        match rng.u8(0..if depth == 0 { 4 } else { 6 }) {
            0 => Value::String(text(rng)),
            // Exactly representable, so a re-parse compares equal.
            1 => Value::from(f64::from(rng.i32(..)) / 64.0),
            2 => Value::Bool(rng.bool()),
            3 => Value::Null,
            4 => Value::Array(
                (0..rng.usize(0..32))
                    .map(|_| random_value(rng, depth - 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.usize(0..6))
                    .map(|_| (text(rng), random_value(rng, depth - 1)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn every_member_span_is_the_value_serde_reads() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..2000 {
            let mut doc = serde_json::Map::new();
            for _ in 0..rng.usize(1..8) {
                let key = format!("k{}", rng.u32(..));
                doc.insert(key, random_value(&mut rng, 3));
            }
            let text = if round % 2 == 0 {
                serde_json::to_vec(&doc).unwrap()
            } else {
                serde_json::to_vec_pretty(&doc).unwrap()
            };
            let mut seen = Vec::new();
            let complete = for_each_member(&text, |key, span| {
                let key = std::str::from_utf8(key).unwrap().to_string();
                let value: serde_json::Value = serde_json::from_slice(&text[span]).unwrap();
                seen.push((key, value));
            });
            assert_eq!(complete, Some(true), "{}", String::from_utf8_lossy(&text));
            let expected: Vec<_> = doc.into_iter().collect();
            assert_eq!(seen, expected);
        }
    }

    #[test]
    fn malformed_input_never_panics() {
        for doc in [
            &b""[..],
            b"{",
            b"{\"",
            b"{\"model\"",
            b"{\"model\":",
            b"{\"model\":\"abc",
            b"{\"a\":[1,2",
            b"{\"a\":\"\\",
            b"[]",
            b"{\"a\" 1}",
        ] {
            let _ = scan_top_level(doc);
            let _ = replace_model(Bytes::copy_from_slice(doc), b"\"x\"");
        }
    }
}
