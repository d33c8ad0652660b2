//! Server-sent events passed through chunk by chunk (the forwarder's streaming body loop, inside
//! Pingora's `request_filter`).
//!
//! Upstream chunks split events at arbitrary bytes. [`SseRewriter`] emits every *complete* event
//! as soon as its last byte arrives and holds only the unfinished tail, so nothing a client could
//! use is ever delayed. Per event it does what the OpenAI-compatible passthrough needs and no
//! more: it sets the top-level `model` to the name the client asked for, reads `usage`, notices
//! `[DONE]` and error events, and can hide the usage-only chunk the gateway asked for on the
//! client's behalf. Splitting the same stream at any byte yields the same output.

use bytes::{BufMut, Bytes, BytesMut};
use filters::Usage;
use filters::json_scan::scan_top_level;

/// Streaming rewriter for OpenAI-format SSE.
#[derive(Debug)]
pub struct SseRewriter {
    /// The requested model as a JSON string literal.
    quoted_model: Bytes,
    /// Drop the final `choices: []` usage chunk (the client did not ask for it).
    hide_usage_chunk: bool,
    pending: BytesMut,
    /// Bytes at the start of `pending` already searched for the end of an event: a long event
    /// arriving in many reads is searched once, not from its start on every read.
    scanned: usize,
    /// The largest event accepted; past it the stream ends with an error event.
    max_event: usize,
    overflowed: bool,
    usage: Option<Usage>,
    saw_done: bool,
    upstream_error: Option<String>,
    events: u64,
    /// Drop chunks with `choices: []` and no usage (Azure's content-filter preamble).
    drop_choiceless: bool,
}

impl SseRewriter {
    pub fn new(requested_model: &str, hide_usage_chunk: bool) -> Self {
        SseRewriter {
            quoted_model: quote(requested_model),
            hide_usage_chunk,
            pending: BytesMut::new(),
            scanned: 0,
            max_event: crate::providers::translate::DEFAULT_MAX_EVENT_BYTES,
            overflowed: false,
            usage: None,
            saw_done: false,
            upstream_error: None,
            events: 0,
            drop_choiceless: false,
        }
    }

    /// Azure starts streams with a chunk that has no choices, an empty id and model, and only
    /// `prompt_filter_results` (`providers.md` 2.3); clients that index `choices[0]` break on it.
    pub fn dropping_choiceless_chunks(mut self) -> Self {
        self.drop_choiceless = true;
        self
    }

    /// Events larger than `bytes` end the stream with an error event.
    pub fn with_max_event(mut self, bytes: usize) -> Self {
        self.max_event = bytes;
        self
    }

    /// Processes one upstream chunk, appending the complete events it finishes to `out`.
    /// Linear in the input: the unfinished tail is searched once and never copied again.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        if self.overflowed {
            return;
        }
        if self.pending.is_empty() {
            let consumed = self.process_events(chunk, 0, out);
            self.pending.extend_from_slice(&chunk[consumed..]);
        } else {
            self.pending.extend_from_slice(chunk);
            let mut buf = std::mem::take(&mut self.pending);
            // A terminator may straddle the old end: search again from two bytes before it.
            let consumed = self.process_events(&buf, self.scanned.saturating_sub(2), out);
            bytes::Buf::advance(&mut buf, consumed);
            self.pending = buf;
        }
        self.scanned = self.pending.len();
        if self.pending.len() > self.max_event {
            let error = crate::providers::translate::event_too_large(self.max_event);
            self.pending = BytesMut::new();
            self.scanned = 0;
            self.overflowed = true;
            self.upstream_error = Some(error.message.clone());
            out.put_slice(&error.sse_event());
        }
    }

    /// Whether the upstream sent an event over the limit (the stream was ended with an error).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The upstream ended: flushes an unterminated last event as it is.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.overflowed {
            return;
        }
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.process_event(&rest, out);
        }
    }

    /// Usage from the stream, if any chunk carried it.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Whether `data: [DONE]` was seen.
    pub fn saw_done(&self) -> bool {
        self.saw_done
    }

    /// The message of an error event the upstream sent, if any.
    pub fn upstream_error(&self) -> Option<&str> {
        self.upstream_error.as_deref()
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes buffered in an unfinished event.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Processes every complete event at the start of `buf` (the first one's end searched
    /// from `resume`); returns the bytes consumed.
    fn process_events(&mut self, buf: &[u8], resume: usize, out: &mut BytesMut) -> usize {
        let mut start = 0;
        let mut from = resume;
        while let Some(end) = event_end(&buf[start..], from) {
            self.process_event(&buf[start..start + end], out);
            start += end;
            from = 0;
        }
        start
    }

    fn process_event(&mut self, event: &[u8], out: &mut BytesMut) {
        self.events += 1;
        // Find the data line; OpenAI-format events carry exactly one.
        let Some((data_start, data_end)) = data_payload(event) else {
            out.put_slice(event);
            return;
        };
        let data = &event[data_start..data_end];
        if data == b"[DONE]" {
            self.saw_done = true;
            out.put_slice(event);
            return;
        }
        let Some(fields) = scan_top_level(data) else {
            out.put_slice(event);
            return;
        };
        if let Some(span) = &fields.usage
            && let Some(usage) = Usage::parse(&data[span.clone()])
        {
            self.usage = Some(usage);
        }
        if fields.has_error {
            self.upstream_error = Some(error_message(data));
        }
        if self.hide_usage_chunk && fields.empty_choices && fields.usage.is_some() {
            return;
        }
        if self.drop_choiceless && fields.empty_choices && fields.usage.is_none() {
            return;
        }
        match fields.model {
            Some(span) if data[span.clone()] != self.quoted_model[..] => {
                out.reserve(event.len() + self.quoted_model.len());
                out.put_slice(&event[..data_start + span.start]);
                out.put_slice(&self.quoted_model);
                out.put_slice(&event[data_start + span.end..]);
            }
            _ => out.put_slice(event),
        }
    }
}

/// A JSON string literal for `s`.
pub fn quote(s: &str) -> Bytes {
    Bytes::from(serde_json::to_vec(s).unwrap_or_else(|_| b"\"\"".to_vec()))
}

/// Length of the first complete event in `buf` (through its blank line: `\n\n` or
/// `\n\r\n`), if there is one; the search starts at `from` (the bytes before it are known to
/// hold no event end). The one SSE framer: the passthrough here and the translated providers'
/// decoders (`translate::SseEvents`) both split events with it.
pub(crate) fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut from = from.min(buf.len());
    while let Some(i) = memchr::memchr(b'\n', &buf[from..]) {
        let nl = from + i;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            Some(_) => from = nl + 1,
            None => return None,
        }
    }
    None
}

/// Byte range of the first `data:` line's value within an event.
fn data_payload(event: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    while line_start < event.len() {
        let line_end =
            memchr::memchr(b'\n', &event[line_start..]).map_or(event.len(), |i| line_start + i);
        let line = &event[line_start..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let skip = usize::from(rest.first() == Some(&b' '));
            let start = line_start + 5 + skip;
            return Some((start, line_start + line.len()));
        }
        line_start = line_end + 1;
    }
    None
}

fn error_message(data: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    value["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(data).chars().take(500).collect())
}

/// Rewrites a complete (non-streamed) OpenAI JSON response: sets `model` to the requested name
/// and returns the usage it reports. `Err` when the body is not a JSON object (its two ends are
/// walked; the middle only when they do not hold `model` and `usage`, see
/// [`filters::json_scan::model_and_usage`]).
pub fn rewrite_json_response(
    body: Bytes,
    quoted_model: &[u8],
) -> Result<(Bytes, Option<Usage>), Bytes> {
    // Both ends first (the middle, the generated text, is not walked); the whole document when
    // they are not well-formed, which decides whether it is JSON at all.
    let fields = match filters::json_scan::model_and_usage(&body) {
        Some(found) => found,
        None => match scan_top_level(&body).filter(|f| f.complete) {
            Some(f) => filters::json_scan::ModelAndUsage {
                model: f.model,
                usage: f.usage,
            },
            None => return Err(body),
        },
    };
    let usage = fields
        .usage
        .as_ref()
        .and_then(|span| Usage::parse(&body[span.clone()]));
    let body = match fields.model {
        Some(span) if body[span.clone()] != *quoted_model => {
            let mut out = BytesMut::with_capacity(body.len() + quoted_model.len());
            filters::json_scan::splice_string(&mut out, &body, span, quoted_model);
            out.freeze()
        }
        _ => body,
    };
    Ok((body, usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        ": keep-alive comment\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\\n\\nlo \\\"model\\\":\"},\"finish_reason\":null}]}\r\n\r\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(chunks: &[&[u8]], hide: bool) -> (Vec<u8>, SseRewriter) {
        let mut r = SseRewriter::new("gpt-4o", hide);
        let mut out = BytesMut::new();
        for c in chunks {
            r.feed(c, &mut out);
        }
        r.finish(&mut out);
        (out.to_vec(), r)
    }

    #[test]
    fn rewrites_model_reads_usage_and_keeps_everything_else() {
        let (out, r) = run(&[STREAM.as_bytes()], false);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, STREAM.replace("gpt-4o-2024-08-06", "gpt-4o"));
        assert_eq!(r.usage().unwrap().total_tokens, 11);
        assert!(r.saw_done());
        assert_eq!(r.events(), 6);
        assert!(r.upstream_error().is_none());
    }

    #[test]
    fn hides_the_usage_chunk_when_asked() {
        let (out, r) = run(&[STREAM.as_bytes()], true);
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("\"usage\""));
        assert!(out.ends_with("data: [DONE]\n\n"));
        assert_eq!(r.usage().unwrap().prompt_tokens, 9);
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let bytes = STREAM.as_bytes();
        let (whole, _) = run(&[bytes], true);
        for cut in 0..=bytes.len() {
            let (split, r) = run(&[&bytes[..cut], &bytes[cut..]], true);
            assert_eq!(split, whole, "split at {cut}");
            assert_eq!(r.usage().unwrap().total_tokens, 11);
        }
        // Random chunkings, deterministic seed.
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..200 {
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let n = rng.usize(1..=40).min(bytes.len() - at);
                chunks.push(&bytes[at..at + n]);
                at += n;
            }
            assert_eq!(run(&chunks, true).0, whole);
        }
    }

    /// Byte-at-a-time chunks (the longest resume path) give the same output too.
    #[test]
    fn one_byte_chunks_give_the_same_output() {
        let bytes = STREAM.as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&chunks, false).0, run(&[bytes], false).0);
    }

    /// An upstream that never ends its event (no line break) is cut off at the limit with an
    /// OpenAI error event; nothing after it is kept or written, and what came before went out.
    #[test]
    fn an_event_over_the_limit_ends_the_stream_with_an_error() {
        let mut r = SseRewriter::new("gpt-4o", false).with_max_event(1024);
        let mut out = BytesMut::new();
        r.feed(
            b"data: {\"model\":\"x\",\"choices\":[]}\n\ndata: ",
            &mut out,
        );
        let first = out.split();
        assert!(first.ends_with(b"\n\n"));
        for _ in 0..100 {
            r.feed(&[b'a'; 100], &mut out);
            assert!(r.pending_len() <= 1024 + 100);
        }
        assert!(r.overflowed());
        assert_eq!(r.pending_len(), 0);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("data: {\"error\":"), "{text}");
        assert!(text.contains("larger than 1 MiB"), "{text}");
        assert_eq!(text.matches("data:").count(), 1, "{text}");
        assert!(r.upstream_error().is_some());
        r.finish(&mut out);
        assert_eq!(out.len(), text.len(), "nothing after the error event");
    }

    #[test]
    fn complete_events_are_emitted_before_the_chunk_ends() {
        let mut r = SseRewriter::new("gpt-4o", false);
        let mut out = BytesMut::new();
        let first_event_end = STREAM.find("\n\n").unwrap() + 2;
        r.feed(&STREAM.as_bytes()[..first_event_end + 10], &mut out);
        assert!(out.ends_with(b"\n\n"));
        assert_eq!(r.pending_len(), 10);
    }

    #[test]
    fn error_events_are_noticed() {
        let (out, r) = run(
            &[b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n"],
            false,
        );
        assert_eq!(r.upstream_error(), Some("overloaded"));
        assert!(out.starts_with(b"data: {\"error\""));
    }

    #[test]
    fn json_response_gets_requested_model_and_usage() {
        let body = Bytes::from_static(br#"{"id":"x","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#);
        let (out, usage) = rewrite_json_response(body, &quote("gpt-4o")).unwrap();
        assert!(out.starts_with(br#"{"id":"x","object":"chat.completion","model":"gpt-4o","#));
        assert_eq!(usage.unwrap().completion_tokens, 2);
        assert!(rewrite_json_response(Bytes::from_static(b"{\"id\": \"bro"), b"\"m\"").is_err());
    }
}
