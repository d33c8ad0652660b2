//! The request body's fast path: one validating pass over the JSON that also records the
//! top-level members [`RequestView`] needs, in about a third of the instructions serde_json
//! spends on the same body with every other value skipped as `IgnoredAny` (callgrind).
//!
//! It accepts a subset of what the serde path accepts and reads the same values from it: any
//! document it is unsure about (invalid JSON, an escape in a key or in `model`, an unexpected
//! type, a duplicate `model`, deep nesting) gets `None`, and [`RequestView::parse`] hands it to
//! serde, which gives the exact error LiteLLM users see. The differential tests hold it to that.

use crate::request::{JsonKind, RequestView, Shape};

/// Deeper documents go to serde (its own limit is 128).
const MAX_DEPTH: u32 = 100;

/// The view of `body`, or `None` when serde must decide.
pub(crate) fn parse(body: &[u8]) -> Option<RequestView> {
    let mut p = Parser::new(body);
    let mut view = RequestView::default();
    let mut max_tokens = None;
    let mut max_completion_tokens = None;
    p.object(|p, key| {
        let start = p.i;
        match key.plain()? {
            b"model" => {
                if view.model_span.is_some() {
                    return None;
                }
                view.model = match p.peek()? {
                    b'"' => Some(p.plain_string()?.to_owned()),
                    b'n' => p.literal(b"null").map(|()| None)?,
                    _ => return None,
                };
                view.model_span = Some(start..p.i);
            }
            b"stream" => view.stream = p.optional_bool()?.unwrap_or(false),
            b"stream_options" => {
                view.has_stream_options = true;
                view.include_usage = match p.peek()? {
                    b'n' => p.literal(b"null").map(|()| None)?,
                    b'{' => p.stream_options()?,
                    _ => return None,
                };
            }
            b"user" => {
                // Only a plain string here; serde reads anything else as a JSON value
                // (decoding escapes this pass does not judge).
                view.user = Some(p.plain_string()?.to_owned());
            }
            b"max_tokens" => max_tokens = p.optional_count()?,
            b"max_completion_tokens" => max_completion_tokens = p.optional_count()?,
            b"messages" => view.messages = p.messages_shape()?,
            b"input" => view.input = p.value_shape()?,
            b"prompt" => view.prompt = p.value_shape()?,
            _ => p.value(1)?,
        }
        Some(())
    })?;
    if !p.at_end() {
        return None;
    }
    view.max_tokens = max_completion_tokens.or(max_tokens);
    view.object_end = body.iter().rposition(|b| *b == b'}').unwrap_or(body.len());
    Some(view)
}

/// A member name as read: its bytes between the quotes, and whether it holds an escape.
pub(crate) struct Key<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl<'a> Key<'a> {
    /// The name when it has no escape (serde decodes escaped names; the fast paths leave those
    /// documents to it). Valid UTF-8: [`Parser::string`] checks any name with non-ASCII bytes.
    pub(crate) fn plain(&self) -> Option<&'a [u8]> {
        (!self.escaped).then_some(self.raw)
    }
}

/// A strict JSON reader over a byte slice (RFC 8259): every method checks what it consumes and
/// gives `None` on anything else. Also reads `usage` objects ([`crate::usage`]).
pub(crate) struct Parser<'a> {
    doc: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(doc: &'a [u8]) -> Parser<'a> {
        Parser { doc, i: 0 }
    }

    /// Whether everything was read (trailing whitespace allowed).
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.i == self.doc.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.doc.get(self.i).copied()
    }

    pub(crate) fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    pub(crate) fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    /// JSON's whitespace: space, tab, line feed, carriage return (not form feed).
    pub(crate) fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.doc.get(self.i) {
            self.i += 1;
        }
    }

    pub(crate) fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.doc.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// Any JSON value, checked and skipped.
    pub(crate) fn value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.object(|p, _| p.value(depth + 1))
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// Any JSON value, checked and skipped; returns its bytes.
    pub(crate) fn value_span(&mut self, depth: u32) -> Option<&'a [u8]> {
        let start = self.i;
        self.value(depth)?;
        Some(&self.doc[start..self.i])
    }

    /// Reads the object at the reader's position, calling `member(reader, name)` with the reader
    /// at each member's value, which `member` must consume.
    pub(crate) fn object(
        &mut self,
        mut member: impl FnMut(&mut Parser<'a>, Key<'a>) -> Option<()>,
    ) -> Option<()> {
        self.ws();
        self.expect(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let (raw, escaped) = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            member(self, Key { raw, escaped })?;
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// A string at `self.i` (an opening quote): checked and skipped. Returns its content and
    /// whether it holds an escape. Eight bytes at a time until a quote, a backslash or a control
    /// byte; content with non-ASCII bytes is checked as UTF-8 once at the end.
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let doc = self.doc;
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        let mut high = 0u64;
        loop {
            // Find the next quote, backslash or control byte.
            while let Some(chunk) = doc.get(i..i + 8) {
                let v = u64::from_le_bytes(chunk.try_into().ok()?);
                let quote = v ^ (ONES * u64::from(b'"'));
                let backslash = v ^ (ONES * u64::from(b'\\'));
                let special = (quote.wrapping_sub(ONES) & !quote)
                    | (backslash.wrapping_sub(ONES) & !backslash)
                    | (v.wrapping_sub(ONES * 0x20) & !v);
                let special = special & HIGH;
                if special != 0 {
                    // The lowest flagged byte is exact; bytes before it are plain.
                    let plain = (special.trailing_zeros() / 8) as usize;
                    high |= v & (u64::MAX >> (64 - 8 * plain.max(1))) & HIGH;
                    i += plain;
                    break;
                }
                high |= v & HIGH;
                i += 8;
            }
            let b = *doc.get(i)?;
            match b {
                b'"' => {
                    let content = &doc[start..i];
                    self.i = i + 1;
                    if high != 0 && std::str::from_utf8(content).is_err() {
                        return None;
                    }
                    return Some((content, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *doc.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            let hex = doc.get(i + 2..i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 6;
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => {
                    // The byte-wise tail (fewer than eight bytes left).
                    high |= u64::from(b & 0x80);
                    i += 1;
                }
            }
        }
    }

    /// A string without escapes, as text.
    fn plain_string(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        match self.string()? {
            (content, false) => std::str::from_utf8(content).ok(),
            _ => None,
        }
    }

    /// The type of the value at the reader's position, from its first byte.
    fn kind(&self) -> Option<JsonKind> {
        Some(match self.peek()? {
            b'"' => JsonKind::String,
            b'{' => JsonKind::Object,
            b'[' => JsonKind::Array,
            b't' | b'f' => JsonKind::Boolean,
            b'n' => JsonKind::Null,
            b'-' | b'0'..=b'9' => JsonKind::Number,
            _ => return None,
        })
    }

    /// A top-level member's value, checked and skipped: its [`Shape`] by type.
    fn value_shape(&mut self) -> Option<Shape> {
        let kind = self.kind()?;
        self.value(1)?;
        Some(match kind {
            JsonKind::String => Shape::Text,
            JsonKind::Array => Shape::List,
            other => Shape::Other(other),
        })
    }

    /// `messages`: as [`Parser::value_shape`], and for a list the first item that is not an
    /// object with a `role` member.
    fn messages_shape(&mut self) -> Option<Shape> {
        if self.peek()? != b'[' {
            return self.value_shape();
        }
        self.i += 1;
        self.ws();
        let mut shape = Shape::List;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(shape);
        }
        let mut index = 0u32;
        loop {
            let kind = self.kind()?;
            let problem = if kind == JsonKind::Object {
                let mut role = false;
                self.object(|p, key| {
                    role |= key.plain()? == b"role";
                    p.value(3)
                })?;
                (!role).then_some(Shape::ItemWithoutRole { index })
            } else {
                self.value(2)?;
                Some(Shape::ItemNotObject { index, kind })
            };
            if shape == Shape::List
                && let Some(problem) = problem
            {
                shape = problem;
            }
            index = index.saturating_add(1);
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                b']' => return Some(shape),
                _ => return None,
            }
        }
    }

    /// `true`, `false` or `null`.
    fn optional_bool(&mut self) -> Option<Option<bool>> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| Some(true)),
            b'f' => self.literal(b"false").map(|()| Some(false)),
            b'n' => self.literal(b"null").map(|()| None),
            _ => None,
        }
    }

    /// A non-negative integer of at most 19 digits, or `null`; `None` for anything else.
    pub(crate) fn optional_count(&mut self) -> Option<Option<u64>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        // Negative, fractional or very long numbers: serde's reading of those is its own.
        crate::usage::parse_count(self.value_span(1)?).map(Some)
    }

    /// `stream_options` as an object: its `include_usage` (`true`, `false`, `null`, or absent).
    fn stream_options(&mut self) -> Option<Option<bool>> {
        let mut include_usage = None;
        let mut seen = false;
        self.object(|p, key| {
            if key.plain()? == b"include_usage" {
                if seen {
                    return None; // serde: duplicate field
                }
                seen = true;
                include_usage = p.optional_bool()?;
                Some(())
            } else {
                p.value(2)
            }
        })?;
        Some(include_usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(body: &[u8]) -> Option<RequestView> {
        RequestView::parse_with_serde(body).ok()
    }

    /// Whatever the fast pass accepts, serde accepts too and reads the same way.
    fn agrees(body: &[u8]) -> bool {
        match parse(body) {
            Some(fast) => {
                assert_eq!(
                    Some(&fast),
                    serde(body).as_ref(),
                    "{}",
                    String::from_utf8_lossy(body)
                );
                true
            }
            None => false,
        }
    }

    #[test]
    fn reads_typical_requests_itself() {
        for body in [
            &br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello, how are you today?"}]}"#[..],
            br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"caf\u00e9 \"quoted\" \\ \n"}],"max_tokens":5,"max_completion_tokens":7,"user":"u1","temperature":0.2,"n":1,"stop":null,"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}]}"#,
            "{ \"model\" : \"m\" , \"input\" : [ \"caf\u{e9} \u{4f60}\u{597d} \u{1f600}\" , -1.5e+3 , 0 , true , false ] }\n".as_bytes(),
            b"{}",
            br#"{"model":null,"stream":null,"stream_options":null,"max_tokens":null}"#,
        ] {
            assert!(agrees(body), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn leaves_what_it_is_unsure_of_to_serde() {
        for body in [
            &br#"{"model":"gpt\u002d4"}"#[..], // escape in model
            br#"{"mod\u0065l":"m"}"#,          // escape in a key
            br#"{"model":"a","model":"b"}"#,
            br#"{"model":5}"#,
            br#"{"stream":"yes"}"#,
            br#"{"stream_options":5}"#,
            br#"{"stream_options":{"include_usage":true,"include_usage":false}}"#,
            br#"{"max_tokens":-1}"#,
            br#"{"max_tokens":1.5}"#,
            br#"{"max_tokens":99999999999999999999999}"#,
            br#"{"user":5}"#,
            br#"[1]"#,
            b"{\"a\":1}\x0c",
            br#"{"a":01}"#,
            br#"{"a":"\x"}"#,
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\xff\xfe\"}",
            br#"{"a":[1,]}"#,
            br#"{"a":1,}"#,
            br#"{"a":1} {}"#,
        ] {
            assert!(parse(body).is_none(), "{}", String::from_utf8_lossy(body));
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(120), "]".repeat(120));
        assert!(parse(deep.as_bytes()).is_none());
    }

    /// Generated bodies: typical members with values of every type, then truncated and mangled
    /// copies. Every body the fast pass reads, serde reads to the same view; most clean ones it
    /// reads itself.
    #[test]
    fn agrees_with_serde_on_generated_bodies() {
        let mut rng = fastrand::Rng::with_seed(3);
        let text = |rng: &mut fastrand::Rng| -> String {
            // Mostly plain text; now and then a character JSON must escape.
            let special = if rng.bool() { 24 } else { 250 };
            (0..rng.usize(0..40))
                .map(|_| match rng.u8(0..special) {
                    0 => '"',
                    1 => '\\',
                    2 => '\n',
                    3 => '\u{1}',
                    4 => '\u{e9}',
                    5 => '\u{1f600}',
                    6 => '}',
                    _ => rng.alphanumeric(),
                })
                .collect()
        };
        let scalar = |rng: &mut fastrand::Rng| -> serde_json::Value {
            match rng.u8(0..7) {
                0 => serde_json::Value::Null,
                1 => serde_json::Value::Bool(rng.bool()),
                2 => serde_json::json!(rng.u64(..)),
                3 => serde_json::json!(rng.i64(..)),
                4 => serde_json::json!(f64::from(rng.i32(..)) / 8.0),
                _ => serde_json::Value::String(text(rng)),
            }
        };
        let (mut clean, mut fast) = (0, 0);
        for round in 0..4000 {
            let mut doc = serde_json::Map::new();
            for key in [
                "model",
                "messages",
                "stream",
                "stream_options",
                "user",
                "max_tokens",
                "max_completion_tokens",
                "temperature",
                "input",
                "prompt",
            ] {
                if rng.u8(0..5) == 0 {
                    continue;
                }
                let value = match key {
                    "messages" => match rng.u8(0..6) {
                        0 => scalar(&mut rng),
                        1 => serde_json::json!([{"role": "user"}, scalar(&mut rng)]),
                        2 => serde_json::json!([{"role": "user"}, {"content": "x"}, []]),
                        _ => serde_json::json!([
                            {"role": "user", "content": text(&mut rng)},
                            {"content": [scalar(&mut rng)], "role": scalar(&mut rng)}
                        ]),
                    },
                    "input" | "prompt" if rng.bool() => {
                        serde_json::json!([text(&mut rng), [rng.u32(..)], {"a": scalar(&mut rng)}])
                    }
                    "stream_options" if rng.u8(0..8) != 0 => {
                        let include = if rng.u8(0..8) == 0 {
                            scalar(&mut rng)
                        } else {
                            serde_json::json!(rng.bool())
                        };
                        serde_json::json!({"include_usage": include, "x": [scalar(&mut rng)]})
                    }
                    "model" | "user" if rng.u8(0..8) != 0 => {
                        let name: String =
                            (0..rng.usize(1..24)).map(|_| rng.alphanumeric()).collect();
                        serde_json::json!(if rng.u8(0..8) == 0 {
                            text(&mut rng)
                        } else {
                            name
                        })
                    }
                    "stream" if rng.u8(0..8) != 0 => serde_json::json!(rng.bool()),
                    "max_tokens" | "max_completion_tokens" if rng.u8(0..8) != 0 => {
                        serde_json::json!(rng.u32(..))
                    }
                    _ => scalar(&mut rng),
                };
                doc.insert(key.to_string(), value);
            }
            let body = if round % 3 == 0 {
                serde_json::to_vec_pretty(&doc).unwrap()
            } else {
                serde_json::to_vec(&doc).unwrap()
            };
            clean += 1;
            if agrees(&body) {
                fast += 1;
            }
            let cut = rng.usize(0..=body.len());
            agrees(&body[..cut]);
            let mut mangled = body.clone();
            for _ in 0..rng.usize(1..3) {
                let at = rng.usize(0..mangled.len());
                mangled[at] = b"\"\\{}[]:, 0-.eE\x01\x1f\x0c\t\xc3\xa9\xff tfnu"[rng.usize(0..26)];
            }
            agrees(&mangled);
        }
        // Escapes, odd types and control bytes send some to serde; most go the fast way.
        assert!(fast * 2 > clean, "fast {fast} of {clean}");
    }
}
