//! The one driver for translated stream decoders (Anthropic, Gemini, Cohere, Ollama): it frames
//! the upstream's bytes (SSE events or NDJSON lines, bounded by `max_stream_event_mb`), hands
//! each event to the provider's handler, ends the stream with an error event when an event is
//! too large, and writes the end (finish chunk, usage, `[DONE]`) when the upstream finishes.
//! A provider plugs in only its event handling ([`ProviderEvents`]). Called from
//! `codec::StreamDecoder`, inside Pingora's `request_filter` (forwarder mode) as each upstream
//! chunk arrives. Bedrock's binary event-stream frames are decoded by `aws-smithy-eventstream`
//! in `bedrock.rs`.

use bytes::BytesMut;
use filters::ApiError;

use super::translate::{DecodeOptions, StreamState, TranslatedStream};

/// Splits a byte stream into complete SSE events: `(event name, data)` with multiple `data:`
/// lines joined by `\n`. Holds only the unfinished tail; any split of the input gives the same
/// events.
#[derive(Debug)]
pub struct SseEvents {
    pending: Vec<u8>,
    /// Bytes at the start of `pending` already searched for a terminator (resume there, so a
    /// long event arriving in many reads is not rescanned from its start each time).
    scanned: usize,
    overflowed: bool,
    limit: usize,
}

/// By default an event or line larger than this is refused (the upstream is broken or
/// hostile): `sluice_settings.max_stream_event_mb`.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The error that ends a stream whose upstream sent an event over `limit` bytes.
pub fn event_too_large(limit: usize) -> ApiError {
    ApiError::bad_gateway(format!(
        "the upstream sent a stream event larger than {} MiB (sluice_settings.max_stream_event_mb)",
        limit.div_ceil(1024 * 1024)
    ))
}

impl Default for SseEvents {
    fn default() -> Self {
        SseEvents::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseEvents {
    pub fn with_limit(limit: usize) -> SseEvents {
        SseEvents {
            pending: Vec::new(),
            scanned: 0,
            overflowed: false,
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Appends `chunk` and calls `each` for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&str, &str)) {
        if self.overflowed {
            return;
        }
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        // A terminator may straddle the old end: back up two bytes.
        let mut resume = self.scanned.saturating_sub(2);
        while let Some(len) = super::sse::event_end(&self.pending[start..], resume) {
            let event = &self.pending[start..start + len];
            start += len;
            resume = 0;
            let (name, data) = parse_event(event);
            if !data.is_empty() || !name.is_empty() {
                each(&name, &data);
            }
        }
        self.pending.drain(..start);
        self.scanned = self.pending.len();
        if self.pending.len() > self.limit {
            self.pending = Vec::new();
            self.scanned = 0;
            self.overflowed = true;
        }
    }

    /// The upstream sent an event over the limit; nothing more is parsed.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// End of stream: an unterminated last event still counts.
    pub fn finish(&mut self, mut each: impl FnMut(&str, &str)) {
        if self.pending.iter().any(|b| !b.is_ascii_whitespace()) {
            let rest = std::mem::take(&mut self.pending);
            let (name, data) = parse_event(&rest);
            if !data.is_empty() {
                each(&name, &data);
            }
        }
        self.pending.clear();
    }

    /// Whatever is buffered, as text (an error body sent without SSE framing).
    pub fn pending_text(&self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

fn parse_event(event: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(event);
    let mut name = String::new();
    let mut data = String::new();
    let mut has_data = false;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(v) = line.strip_prefix("data:") {
            if has_data {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
            has_data = true;
        } else if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        }
    }
    (name, data)
}

/// Splits a byte stream into complete lines (NDJSON), holding the unfinished tail.
#[derive(Debug)]
pub struct Lines {
    pending: Vec<u8>,
    overflowed: bool,
    limit: usize,
}

impl Default for Lines {
    fn default() -> Self {
        Lines::with_limit(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl Lines {
    pub fn with_limit(limit: usize) -> Lines {
        Lines {
            pending: Vec::new(),
            overflowed: false,
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&str)) {
        if self.overflowed {
            return;
        }
        // Only the new bytes can hold the next newline: search from where they start.
        let mut search = self.pending.len();
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &self.pending[search..]) {
            let end = search + i;
            let line = String::from_utf8_lossy(&self.pending[start..end]);
            let line = line.trim();
            if !line.is_empty() {
                each(line);
            }
            start = end + 1;
            search = start;
        }
        self.pending.drain(..start);
        if self.pending.len() > self.limit {
            self.pending = Vec::new();
            self.overflowed = true;
        }
    }

    /// The upstream sent a line over the limit; nothing more is parsed.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub fn finish(&mut self, mut each: impl FnMut(&str)) {
        let rest = std::mem::take(&mut self.pending);
        let line = String::from_utf8_lossy(&rest);
        if !line.trim().is_empty() {
            each(line.trim());
        }
    }
}

/// How a stream is cut into events: SSE events, or NDJSON lines (as events without a name).
pub trait Framing {
    /// Appends `chunk` and calls `each(name, data)` for every event it completes.
    fn feed(&mut self, chunk: &[u8], each: impl FnMut(&str, &str));
    /// End of stream: an unterminated last event still counts.
    fn finish(&mut self, each: impl FnMut(&str, &str));
    /// An event over the limit arrived; nothing more is parsed.
    fn overflowed(&self) -> bool;
    fn limit(&self) -> usize;
    /// The bytes of an unfinished event.
    fn pending(&self) -> &[u8];
}

impl Framing for SseEvents {
    fn feed(&mut self, chunk: &[u8], each: impl FnMut(&str, &str)) {
        SseEvents::feed(self, chunk, each)
    }
    fn finish(&mut self, each: impl FnMut(&str, &str)) {
        SseEvents::finish(self, each)
    }
    fn overflowed(&self) -> bool {
        SseEvents::overflowed(self)
    }
    fn limit(&self) -> usize {
        SseEvents::limit(self)
    }
    fn pending(&self) -> &[u8] {
        &self.pending
    }
}

impl Framing for Lines {
    fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&str, &str)) {
        Lines::feed(self, chunk, |line| each("", line))
    }
    fn finish(&mut self, mut each: impl FnMut(&str, &str)) {
        Lines::finish(self, |line| each("", line))
    }
    fn overflowed(&self) -> bool {
        Lines::overflowed(self)
    }
    fn limit(&self) -> usize {
        Lines::limit(self)
    }
    fn pending(&self) -> &[u8] {
        &self.pending
    }
}

/// What a provider's translated stream does with its events.
pub trait ProviderEvents {
    /// One event: an SSE event's name and data, or an NDJSON line (empty name). Writes OpenAI
    /// chunks to `out` through [`StreamState`].
    fn event(&mut self, name: &str, data: &str, out: &mut BytesMut);
    fn state(&self) -> &StreamState;
    fn state_mut(&mut self) -> &mut StreamState;
    fn options(&self) -> &DecodeOptions;
    /// The finish reason of the last chunk, as far as the provider said one.
    fn finish_reason(&self) -> &str {
        "stop"
    }
    /// The stream ended with `rest` unframed (no event terminator): `true` when the provider
    /// handled it itself (an error body sent without SSE framing), else it is read as a last
    /// event.
    fn unframed(&mut self, _rest: &[u8], _out: &mut BytesMut) -> bool {
        false
    }
}

/// A translated stream decoder: a provider's event handling behind a framing.
#[derive(Debug)]
pub struct Translated<P, F = SseEvents> {
    framing: F,
    provider: P,
}

impl<P: ProviderEvents, F: Framing> Translated<P, F> {
    pub fn with(provider: P, framing: F) -> Self {
        Translated { framing, provider }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        let provider = &mut self.provider;
        self.framing
            .feed(chunk, |name, data| provider.event(name, data, out));
        if self.framing.overflowed() {
            let error = event_too_large(self.framing.limit());
            self.provider.state_mut().fail(out, &error);
        }
    }

    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.provider.unframed(self.framing.pending(), out) {
            let provider = &mut self.provider;
            self.framing
                .finish(|name, data| provider.event(name, data, out));
        }
        let finish = self.provider.finish_reason().to_owned();
        let include_usage = self.provider.options().include_usage;
        self.provider.state_mut().end(out, include_usage, &finish);
    }

    pub fn provider(&self) -> &P {
        &self.provider
    }
}

impl<P: ProviderEvents, F> TranslatedStream for Translated<P, F> {
    fn state(&self) -> &StreamState {
        self.provider.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider that writes each event's data as one content chunk and finishes with
    /// `length`.
    #[derive(Debug)]
    struct Echo {
        opts: DecodeOptions,
        state: StreamState,
        seen: Vec<(String, String)>,
    }

    impl ProviderEvents for Echo {
        fn event(&mut self, name: &str, data: &str, out: &mut BytesMut) {
            self.seen.push((name.to_string(), data.to_string()));
            self.state.start(out, "id-1", "m", 1);
            self.state.writer.content(out, data);
            self.state.output_seen = true;
        }
        fn state(&self) -> &StreamState {
            &self.state
        }
        fn state_mut(&mut self) -> &mut StreamState {
            &mut self.state
        }
        fn options(&self) -> &DecodeOptions {
            &self.opts
        }
        fn finish_reason(&self) -> &str {
            "length"
        }
    }

    fn echo<F: Framing>(framing: F) -> Translated<Echo, F> {
        let opts = DecodeOptions {
            model_override: None,
            fallback_model: "m".into(),
            created: 1,
            include_usage: false,
            max_event_bytes: 64,
        };
        Translated::with(
            Echo {
                opts,
                state: StreamState::default(),
                seen: Vec::new(),
            },
            framing,
        )
    }

    #[test]
    fn events_reach_the_provider_whatever_the_split_and_the_end_is_written() {
        let input = b"event: a\ndata: one\n\ndata: two\r\n\r\nevent: b\ndata: three";
        for split in 1..input.len() {
            let mut d = echo(SseEvents::with_limit(64));
            let mut out = BytesMut::new();
            d.feed(&input[..split], &mut out);
            d.feed(&input[split..], &mut out);
            d.finish(&mut out);
            let seen: Vec<_> = d
                .provider()
                .seen
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            assert_eq!(
                seen,
                [("a", "one"), ("", "two"), ("b", "three")],
                "split {split}"
            );
            let text = String::from_utf8(out.to_vec()).unwrap();
            assert!(text.contains(r#""finish_reason":"length""#), "{text}");
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
            assert!(d.is_closed());
        }
    }

    #[test]
    fn lines_are_events_without_a_name() {
        let mut d = echo(Lines::with_limit(64));
        let mut out = BytesMut::new();
        d.feed(b"{\"a\":1}\n\n{\"b\"", &mut out);
        d.feed(b":2}", &mut out);
        d.finish(&mut out);
        let seen: Vec<_> = d
            .provider()
            .seen
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(seen, [("", "{\"a\":1}"), ("", "{\"b\":2}")]);
    }

    #[test]
    fn an_event_over_the_limit_ends_the_stream_with_an_error() {
        let mut d = echo(SseEvents::with_limit(64));
        let mut out = BytesMut::new();
        d.feed(b"data: ok\n\n", &mut out);
        d.feed(&[b'x'; 100], &mut out);
        assert!(d.is_closed());
        assert!(d.upstream_error().unwrap().contains("larger than"));
        d.feed(b"\n\ndata: late\n\n", &mut out);
        d.finish(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(!text.contains("late") && !text.contains("[DONE]"), "{text}");
        assert!(text.contains("\"error\""), "{text}");
    }
}
