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

/// Spans of the top-level `model` (a string) and `usage` (an object) of a response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModelAndUsage {
    pub model: Option<Range<usize>>,
    pub usage: Option<Range<usize>>,
}

/// The top-level `model` and `usage` of a JSON response object, found from both ends so that
/// the middle is not walked: members are read forward from the start until `model` (or until a
/// member whose value is an array: `choices`, `data`), then backward from the end until both
/// are known. OpenAI-format responses put `model` near the start (chat, completions) or the
/// end (embeddings) and `usage` at the end, so this reads the same few hundred bytes however
/// long the generated text or the embeddings are; [`scan_top_level`] walks all of it.
///
/// What is not walked is not checked: the object must start and end well-formed (nothing but
/// whitespace after its closing brace), but a member in the middle is passed on as the upstream
/// sent it. `None` when the walked parts are not well-formed; the caller then falls back to
/// [`scan_top_level`], which judges the whole document.
pub fn model_and_usage(doc: &[u8]) -> Option<ModelAndUsage> {
    let mut found = ModelAndUsage::default();
    let mut i = skip_ws(doc, 0);
    if doc.get(i) != Some(&b'{') {
        return None;
    }
    // Forward. `meet` is the separator (`{` or `,`) before the first member not walked.
    let mut meet = i;
    i += 1;
    loop {
        i = skip_ws(doc, i);
        match doc.get(i) {
            Some(b'"') => {}
            Some(b'}') => return (skip_ws(doc, i + 1) == doc.len()).then_some(found),
            _ => return None,
        }
        let key_end = string_end(doc, i)?;
        let key = &doc[i + 1..key_end - 1];
        i = skip_ws(doc, key_end);
        if doc.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(doc, i + 1);
        if doc.get(i) == Some(&b'[') {
            break; // leave `choices` / `data` to the backward walk
        }
        let value = i..value_end(doc, i)?;
        let is_model = key == b"model";
        record(&mut found, doc, key, value.clone());
        i = skip_ws(doc, value.end);
        match doc.get(i) {
            Some(b',') => {
                meet = i;
                i += 1;
                if is_model {
                    break;
                }
            }
            Some(b'}') => return (skip_ws(doc, i + 1) == doc.len()).then_some(found),
            _ => return None,
        }
    }
    // Backward, from the closing brace.
    let mut j = rskip_ws(doc, doc.len()).checked_sub(1)?;
    if doc[j] != b'}' || j <= meet {
        return None;
    }
    while found.model.is_none() || found.usage.is_none() {
        // `j` is at the separator (`}` or `,`) just after a member.
        let value_end = rskip_ws(doc, j);
        let value_start = value_start(doc, value_end)?;
        let colon = rskip_ws(doc, value_start).checked_sub(1)?;
        if doc[colon] != b':' {
            return None;
        }
        let key_close = rskip_ws(doc, colon).checked_sub(1)?;
        if doc[key_close] != b'"' || key_close <= meet {
            return None;
        }
        let key_open = string_start(doc, key_close)?;
        if key_open <= meet {
            return None;
        }
        let key = &doc[key_open + 1..key_close];
        record(&mut found, doc, key, value_start..value_end);
        let separator = rskip_ws(doc, key_open).checked_sub(1)?;
        if separator == meet {
            break; // the walks met: every member was seen
        }
        if separator < meet || doc[separator] != b',' {
            return None;
        }
        j = separator;
    }
    Some(found)
}

/// Keeps the first `model` and `usage` seen (in the document, duplicates are not expected).
fn record(found: &mut ModelAndUsage, doc: &[u8], key: &[u8], value: Range<usize>) {
    match key {
        b"model" if doc[value.start] == b'"' && found.model.is_none() => found.model = Some(value),
        b"usage" if doc[value.start] == b'{' && found.usage.is_none() => found.usage = Some(value),
        _ => {}
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

/// The index just past the last non-whitespace byte before `end`.
fn rskip_ws(doc: &[u8], mut end: usize) -> usize {
    while end > 0 && doc[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    end
}

/// `close` is at a closing quote; returns the index of the opening quote. Inside a string every
/// quote is escaped, that is preceded by an odd number of backslashes, so the first quote before
/// `close` with an even number (none, normally) opens it.
fn string_start(doc: &[u8], close: usize) -> Option<usize> {
    let mut end = close;
    loop {
        let quote = memchr::memrchr(b'"', &doc[..end])?;
        let backslashes = doc[..quote]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(quote);
        }
        end = quote;
    }
}

/// Returns the index of the first byte of the JSON value whose last byte is at `end - 1`.
fn value_start(doc: &[u8], end: usize) -> Option<usize> {
    let last = end.checked_sub(1)?;
    match doc[last] {
        b'"' => string_start(doc, last),
        close @ (b'}' | b']') => {
            let open = if close == b'}' { b'{' } else { b'[' };
            let mut depth = 0usize;
            let mut end = end;
            loop {
                let at = memchr::memrchr3(b'"', open, close, &doc[..end])?;
                match doc[at] {
                    b'"' => {
                        end = string_start(doc, at)?;
                        continue;
                    }
                    b if b == close => depth += 1,
                    _ => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at);
                        }
                    }
                }
                end = at;
            }
        }
        _ => {
            // number, true, false, null: back to a delimiter
            let len = doc[..end]
                .iter()
                .rev()
                .position(|b| matches!(b, b',' | b':' | b'[' | b'{') || b.is_ascii_whitespace())
                .unwrap_or(end);
            (len > 0).then_some(end - len)
        }
    }
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
    fn both_ends_find_model_and_usage_of_real_responses() {
        let chat = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"say \"model\":\"x\", \\\"usage\":{} ]}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":0}},"service_tier":"default","system_fingerprint":"fp_1"}"#;
        let embeddings = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-2e-3,3]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        let pretty = b"{\n  \"model\" : \"m\" ,\n  \"choices\" : [ ] ,\n  \"usage\" : { \"total_tokens\" : 1 }\n}\n";
        for doc in [&chat[..], embeddings, pretty] {
            let full = scan_top_level(doc).unwrap();
            assert!(full.complete);
            let ends =
                model_and_usage(doc).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(doc)));
            assert_eq!((ends.model, ends.usage), (full.model, full.usage));
        }
        // No usage: the backward walk goes on until it meets the forward one.
        let doc = br#"{"id":"x","model":"m","choices":[{"text":"]}\"usage\":{}"}],"n":null}"#;
        let ends = model_and_usage(doc).unwrap();
        assert_eq!(&doc[ends.model.unwrap()], br#""m""#);
        assert_eq!(ends.usage, None);
        // Not an object, or not ending like one: the full scan decides.
        for doc in [
            &b"nope"[..],
            b"{\"model\":\"m\",\"choices\":[",
            b"{\"model\":\"m\"} x",
            b"{\"model\":\"m\",}",
            b"{\"model\":\"m\",\"usage\":{\"a\":1}",
        ] {
            assert_eq!(
                model_and_usage(doc),
                None,
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    /// Against the full scan, over generated responses with `model`, `usage` and array members
    /// at random places and decoys (nested `model`/`usage`, quotes and brackets in strings).
    #[test]
    fn both_ends_agree_with_the_full_scan() {
        let mut rng = fastrand::Rng::with_seed(11);
        for round in 0..3000 {
            let mut doc = serde_json::Map::new();
            let mut keys: Vec<String> = (0..rng.usize(0..6)).map(|i| format!("k{i}")).collect();
            for special in ["model", "usage", "choices", "data"] {
                if rng.u8(0..4) != 0 {
                    keys.insert(rng.usize(0..=keys.len()), special.to_string());
                }
            }
            for key in keys {
                let value = match key.as_str() {
                    "model" if rng.u8(0..8) != 0 => serde_json::json!("gpt-\"4o\"\\"),
                    "usage" if rng.u8(0..8) != 0 => {
                        serde_json::json!({"prompt_tokens": rng.u32(..), "model": "decoy"})
                    }
                    "choices" | "data" => serde_json::Value::Array(
                        (0..rng.usize(0..4))
                            .map(|_| {
                                let mut v = random_value(&mut rng, 2);
                                if let serde_json::Value::Object(m) = &mut v {
                                    m.insert("usage".into(), serde_json::json!({"x": "]}"}));
                                    m.insert("model".into(), serde_json::json!("decoy"));
                                }
                                v
                            })
                            .collect(),
                    ),
                    _ => random_value(&mut rng, 3),
                };
                doc.insert(key, value);
            }
            let text = if round % 2 == 0 {
                serde_json::to_vec(&doc).unwrap()
            } else {
                serde_json::to_vec_pretty(&doc).unwrap()
            };
            let full = scan_top_level(&text).unwrap();
            let ends = model_and_usage(&text);
            assert_eq!(
                ends,
                Some(ModelAndUsage {
                    model: full.model,
                    usage: full.usage
                }),
                "{}",
                String::from_utf8_lossy(&text)
            );
            // Truncated and mangled copies never panic.
            let cut = rng.usize(0..text.len());
            let _ = model_and_usage(&text[..cut]);
            let mut mangled = text.clone();
            let at = rng.usize(0..mangled.len());
            mangled[at] = b"\"\\{}[]:, x"[rng.usize(0..10)];
            let _ = model_and_usage(&mangled);
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
            let _ = model_and_usage(doc);
            let _ = replace_model(Bytes::copy_from_slice(doc), b"\"x\"");
        }
    }
}
