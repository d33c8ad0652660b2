//! The usage (and model) of a pass-through answer, read from its bytes as they are relayed
//! unchanged: a JSON body, an SSE stream (OpenAI, Anthropic, Gemini, Cohere, the Responses
//! API) or Bedrock's binary event stream. Knows every provider's usage shape, so the route
//! does not have to; nothing here ever changes or holds back what the client gets.

use base64::Engine;
use bytes::BytesMut;
use filters::Usage;
use filters::usage::PromptTokensDetails;
use serde_json::Value;

/// The largest JSON body (or SSE event) read for its usage; a larger one is relayed unread.
const MAX_READ: usize = 8 * 1024 * 1024;

/// Token counts as the answer gave them, merged over a stream's events (each count the
/// largest seen: every provider's stream counts are running totals).
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    input: Option<u64>,
    output: Option<u64>,
    cached: Option<u64>,
    written: Option<u64>,
}

impl Counts {
    fn merge(&mut self, other: Counts) {
        let max = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.input = max(self.input, other.input);
        self.output = max(self.output, other.output);
        self.cached = max(self.cached, other.cached);
        self.written = max(self.written, other.written);
    }
}

enum Body {
    Json(Vec<u8>),
    Sse {
        line: Vec<u8>,
        data: Vec<u8>,
    },
    AwsEventStream(aws_smithy_eventstream::frame::MessageFrameDecoder, BytesMut),
    /// Audio, files, an over-long body: nothing to read.
    Opaque,
}

/// Reads usage from an answer's bytes as they go by.
pub struct UsageSniffer {
    body: Body,
    counts: Option<Counts>,
    model: Option<String>,
}

impl UsageSniffer {
    /// A sniffer for an answer of this `Content-Type`.
    pub fn new(content_type: Option<&[u8]>) -> UsageSniffer {
        let ct = content_type.unwrap_or_default();
        let body = if ct.starts_with(b"text/event-stream") {
            Body::Sse {
                line: Vec::new(),
                data: Vec::new(),
            }
        } else if ct.starts_with(b"application/vnd.amazon.eventstream") {
            Body::AwsEventStream(
                aws_smithy_eventstream::frame::MessageFrameDecoder::new(),
                BytesMut::new(),
            )
        } else if ct.starts_with(b"application/json") || ct.is_empty() {
            Body::Json(Vec::new())
        } else {
            Body::Opaque
        };
        UsageSniffer {
            body,
            counts: None,
            model: None,
        }
    }

    /// Reads the next bytes of the answer.
    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.body {
            Body::Json(buf) => {
                if buf.len() + chunk.len() > MAX_READ {
                    self.body = Body::Opaque;
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            Body::Sse { line, data } => {
                let mut events = Vec::new();
                for piece in chunk.split_inclusive(|&b| b == b'\n') {
                    if line.len() + piece.len() <= MAX_READ {
                        line.extend_from_slice(piece);
                    }
                    if !piece.ends_with(b"\n") {
                        continue;
                    }
                    let text = line.trim_ascii_end();
                    if text.is_empty() {
                        if !data.is_empty() {
                            events.push(std::mem::take(data));
                        }
                    } else if let Some(d) = text.strip_prefix(b"data:") {
                        if !data.is_empty() {
                            data.push(b'\n');
                        }
                        data.extend_from_slice(d.trim_ascii_start());
                    }
                    line.clear();
                }
                for event in events {
                    self.read_json(&event);
                }
            }
            Body::AwsEventStream(decoder, pending) => {
                pending.extend_from_slice(chunk);
                let mut payloads = Vec::new();
                while let Ok(aws_smithy_eventstream::frame::DecodedFrame::Complete(message)) =
                    decoder.decode_frame(&mut *pending)
                {
                    payloads.push(message.payload().clone());
                }
                for payload in payloads {
                    self.read_aws_payload(&payload);
                }
            }
            Body::Opaque => {}
        }
    }

    /// The answer's usage (`None` when it carried none) and the model it names.
    pub fn finish(mut self) -> (Option<Usage>, Option<String>) {
        match std::mem::replace(&mut self.body, Body::Opaque) {
            Body::Json(buf) => self.read_json(&buf),
            Body::Sse { data, .. } if !data.is_empty() => self.read_json(&data),
            _ => {}
        }
        let usage = self.counts.map(|c| {
            let cached = c.cached.unwrap_or(0);
            let written = c.written.unwrap_or(0);
            let prompt_tokens = c.input.unwrap_or(0);
            let completion_tokens = c.output.unwrap_or(0);
            Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
                prompt_tokens_details: (cached > 0 || written > 0).then_some(PromptTokensDetails {
                    cached_tokens: Some(cached),
                    cache_write_tokens: Some(written),
                }),
            }
        });
        (usage, self.model)
    }

    fn read_json(&mut self, bytes: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            return;
        };
        match &value {
            // Gemini's `streamGenerateContent` without `alt=sse`: one array of chunks.
            Value::Array(items) => items.iter().for_each(|v| self.read_value(v)),
            v => self.read_value(v),
        }
    }

    fn read_aws_payload(&mut self, payload: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        // `invoke-with-response-stream` wraps the model's own event in base64 `bytes`.
        if let Some(inner) = value.get("bytes").and_then(Value::as_str) {
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(inner) {
                self.read_json(&decoded);
            }
            return;
        }
        self.read_value(&value);
    }

    fn read_value(&mut self, v: &Value) {
        if self.model.is_none() {
            let model = v
                .get("model")
                .or_else(|| v.pointer("/message/model"))
                .or_else(|| v.pointer("/response/model"))
                .or_else(|| v.get("modelVersion"));
            self.model = model.and_then(Value::as_str).map(str::to_string);
        }
        if let Some(counts) = counts_of(v) {
            self.counts
                .get_or_insert_with(Counts::default)
                .merge(counts);
        }
    }
}

/// The token counts of one answer or event, in whichever provider's shape it has.
fn counts_of(v: &Value) -> Option<Counts> {
    let n = |o: &Value, key: &str| o.get(key).and_then(Value::as_u64);
    if let Some(u) = v
        .get("usage")
        .or_else(|| v.pointer("/message/usage"))
        .or_else(|| v.pointer("/response/usage"))
        .filter(|u| u.is_object())
    {
        // Cohere v2: `usage.billed_units`.
        if let Some(b) = u.get("billed_units").filter(|b| b.is_object()) {
            return Some(Counts {
                input: n(b, "input_tokens"),
                output: n(b, "output_tokens"),
                ..Counts::default()
            });
        }
        // Anthropic and Bedrock count cache reads and writes beside `input_tokens`; OpenAI's
        // `prompt_tokens` (and the Responses API's `input_tokens`) include the cached ones.
        let read = n(u, "cache_read_input_tokens").or_else(|| n(u, "cacheReadInputTokens"));
        let write = n(u, "cache_creation_input_tokens").or_else(|| n(u, "cacheWriteInputTokens"));
        let input = n(u, "prompt_tokens")
            .or_else(|| n(u, "input_tokens"))
            .or_else(|| n(u, "inputTokens"))
            .map(|i| i + read.unwrap_or(0) + write.unwrap_or(0));
        let cached = read
            .or_else(|| u.pointer("/prompt_tokens_details/cached_tokens")?.as_u64())
            .or_else(|| u.pointer("/input_tokens_details/cached_tokens")?.as_u64());
        let output = n(u, "completion_tokens")
            .or_else(|| n(u, "output_tokens"))
            .or_else(|| n(u, "outputTokens"));
        if input.is_none() && output.is_none() {
            return None;
        }
        return Some(Counts {
            input,
            output,
            cached,
            written: write,
        });
    }
    if let Some(m) = v.get("usageMetadata").filter(|m| m.is_object()) {
        // Gemini: thinking tokens are billed as output.
        let output = match (n(m, "candidatesTokenCount"), n(m, "thoughtsTokenCount")) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        return Some(Counts {
            input: n(m, "promptTokenCount"),
            output,
            cached: n(m, "cachedContentTokenCount"),
            written: None,
        });
    }
    if let Some(b) = v.pointer("/meta/billed_units").filter(|b| b.is_object()) {
        // Cohere v1.
        return Some(Counts {
            input: n(b, "input_tokens"),
            output: n(b, "output_tokens"),
            ..Counts::default()
        });
    }
    if let Some(m) = v
        .get("amazon-bedrock-invocationMetrics")
        .filter(|m| m.is_object())
    {
        return Some(Counts {
            input: n(m, "inputTokenCount"),
            output: n(m, "outputTokenCount"),
            ..Counts::default()
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(content_type: &str, chunks: &[&[u8]]) -> (Option<Usage>, Option<String>) {
        let mut s = UsageSniffer::new(Some(content_type.as_bytes()));
        for c in chunks {
            s.feed(c);
        }
        s.finish()
    }

    fn counts(u: Option<Usage>) -> (u64, u64, u64, u64) {
        let u = u.expect("usage");
        let d = u.prompt_tokens_details.unwrap_or_default();
        (
            u.prompt_tokens,
            u.completion_tokens,
            d.cached_tokens.unwrap_or(0),
            d.cache_write_tokens.unwrap_or(0),
        )
    }

    #[test]
    fn json_answers_of_every_provider() {
        type Case = (&'static str, (u64, u64, u64, u64), Option<&'static str>);
        let cases: [Case; 7] = [
            (
                r#"{"id":"chatcmpl-1","model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":4}}}"#,
                (12, 5, 4, 0),
                Some("gpt-4o-2024-08-06"),
            ),
            (
                r#"{"id":"msg_1","type":"message","model":"claude-3-5-sonnet-20241022","usage":{"input_tokens":10,"output_tokens":7,"cache_read_input_tokens":100,"cache_creation_input_tokens":20}}"#,
                (130, 7, 100, 20),
                Some("claude-3-5-sonnet-20241022"),
            ),
            (
                r#"{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":3,"thoughtsTokenCount":2,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash"}"#,
                (8, 5, 0, 0),
                Some("gemini-2.0-flash"),
            ),
            (
                r#"{"output":{"message":{}},"usage":{"inputTokens":9,"outputTokens":4,"totalTokens":13}}"#,
                (9, 4, 0, 0),
                None,
            ),
            (
                r#"{"id":"c","message":{},"usage":{"billed_units":{"input_tokens":6,"output_tokens":2},"tokens":{"input_tokens":70,"output_tokens":2}}}"#,
                (6, 2, 0, 0),
                None,
            ),
            (
                r#"{"text":"hi","meta":{"billed_units":{"input_tokens":5,"output_tokens":1}}}"#,
                (5, 1, 0, 0),
                None,
            ),
            (
                r#"{"id":"resp_1","object":"response","model":"gpt-4.1","usage":{"input_tokens":11,"input_tokens_details":{"cached_tokens":3},"output_tokens":6,"total_tokens":17}}"#,
                (11, 6, 3, 0),
                Some("gpt-4.1"),
            ),
        ];
        for (body, want, model) in cases {
            let bytes = body.as_bytes();
            // Split anywhere: the bytes arrive in pieces.
            let (a, b) = bytes.split_at(bytes.len() / 3);
            let (u, m) = sniff("application/json", &[a, b]);
            assert_eq!(counts(u), want, "{body}");
            assert_eq!(m.as_deref(), model, "{body}");
        }
        let (u, _) = sniff("application/json", &[br#"{"object":"list","data":[]}"#]);
        assert!(u.is_none());
        let (u, _) = sniff("audio/mpeg", &[br#"{"usage":{"prompt_tokens":1}}"#]);
        assert!(u.is_none(), "audio is not read");
    }

    #[test]
    fn streams_take_running_totals_across_events_split_anywhere() {
        let anthropic = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-3-haiku-20240307\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        )
        .as_bytes();
        for cut in [1, 17, 100, anthropic.len() - 3] {
            let (a, b) = anthropic.split_at(cut);
            let (u, m) = sniff("text/event-stream; charset=utf-8", &[a, b]);
            assert_eq!(counts(u), (25, 15, 0, 0), "cut at {cut}");
            assert_eq!(m.as_deref(), Some("claude-3-haiku-20240307"));
        }
        let openai = concat!(
            "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
            "data: [DONE]\n\n",
        );
        let (u, _) = sniff("text/event-stream", &[openai.as_bytes()]);
        assert_eq!(counts(u), (9, 2, 0, 0));
        let gemini = concat!(
            "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":1}}\r\n\r\n",
            "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":7}}\r\n\r\n",
        );
        let (u, _) = sniff("text/event-stream", &[gemini.as_bytes()]);
        assert_eq!(counts(u), (4, 7, 0, 0));
        // Without `alt=sse`, Gemini streams one JSON array.
        let array = br#"[{"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":1}},{"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6}}]"#;
        let (u, _) = sniff("application/json", &[array]);
        assert_eq!(counts(u), (4, 6, 0, 0));
        let (u, _) = sniff(
            "text/event-stream",
            &[b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"],
        );
        assert!(u.is_none(), "a stream without usage has none");
    }

    #[test]
    fn bedrock_event_streams_converse_and_invoke() {
        use aws_smithy_eventstream::frame::write_message_to;
        use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
        let frame = |event: &str, payload: &[u8]| {
            let message = Message::new(payload.to_vec())
                .add_header(Header::new(
                    ":message-type",
                    HeaderValue::String("event".into()),
                ))
                .add_header(Header::new(
                    ":event-type",
                    HeaderValue::String(event.to_string().into()),
                ));
            let mut out = Vec::new();
            write_message_to(&message, &mut out).unwrap();
            out
        };
        let mut converse = frame("contentBlockDelta", br#"{"delta":{"text":"hi"}}"#);
        converse.extend(frame(
            "metadata",
            br#"{"usage":{"inputTokens":30,"outputTokens":12,"totalTokens":42},"metrics":{"latencyMs":5}}"#,
        ));
        let (a, b) = converse.split_at(21);
        let (u, _) = sniff("application/vnd.amazon.eventstream", &[a, b]);
        assert_eq!(counts(u), (30, 12, 0, 0));
        let inner = br#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":14,"outputTokenCount":3}}"#;
        let wrapped = format!(
            r#"{{"bytes":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode(inner)
        );
        let invoke = frame("chunk", wrapped.as_bytes());
        let (u, _) = sniff("application/vnd.amazon.eventstream", &[&invoke]);
        assert_eq!(counts(u), (14, 3, 0, 0));
    }
}
