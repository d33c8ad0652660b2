//! Writing OpenAI responses from a translating codec (Anthropic, Gemini, Ollama, Cohere): token
//! counts, whole completions, and stream chunks with their running state. Pure functions,
//! called when the forwarder decodes an attempt's answer (Pingora's `request_filter`).

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use filters::ApiError;
use filters::usage::{PromptTokensDetails, Usage};
use serde_json::Value;

/// Token counts in OpenAI's terms, built by each codec from its provider's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    pub cached: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Tokens {
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt,
            completion_tokens: self.completion,
            total_tokens: self.total,
            prompt_tokens_details: (self.cached > 0 || self.cache_write > 0).then_some(
                PromptTokensDetails {
                    cached_tokens: (self.cached > 0).then_some(self.cached),
                    cache_write_tokens: (self.cache_write > 0).then_some(self.cache_write),
                },
            ),
        }
    }

    /// OpenAI's `usage` object; detail objects only when they hold something (8.6).
    pub fn write_json(&self, out: &mut String) {
        let _ = write!(
            out,
            r#"{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}"#,
            self.prompt, self.completion, self.total
        );
        if self.cached > 0 || self.cache_write > 0 {
            out.push_str(r#","prompt_tokens_details":{"#);
            let mut first = true;
            if self.cached > 0 {
                let _ = write!(out, r#""cached_tokens":{}"#, self.cached);
                first = false;
            }
            if self.cache_write > 0 {
                if !first {
                    out.push(',');
                }
                let _ = write!(out, r#""cache_write_tokens":{}"#, self.cache_write);
            }
            out.push('}');
        }
        if self.reasoning > 0 {
            let _ = write!(
                out,
                r#","completion_tokens_details":{{"reasoning_tokens":{}}}"#,
                self.reasoning
            );
        }
        out.push('}');
    }

    pub fn json(&self) -> Value {
        let mut s = String::new();
        self.write_json(&mut s);
        serde_json::from_str(&s).unwrap_or(Value::Null)
    }
}

/// A JSON string literal.
pub fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Compact JSON of a value (tool arguments to the client: `,` and `:` without spaces, member
/// order kept).
pub fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

/// How a decoder labels what it writes (8.7): the provider's id and model unless the gateway
/// overrides the model with the name the client asked for.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// `Some(name)`: the `model` field is this (Sluice answers with the requested name);
    /// `None`: the provider-reported model, falling back to `fallback_model`.
    pub model_override: Option<String>,
    pub fallback_model: String,
    /// `created` (seconds); injected so tests are deterministic.
    pub created: u64,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// The largest event (or NDJSON line) the upstream may send; a larger one ends the stream
    /// with an error event (`sluice_settings.max_stream_event_mb`).
    pub max_event_bytes: usize,
}

impl DecodeOptions {
    pub fn model<'a>(&'a self, reported: Option<&'a str>) -> &'a str {
        self.model_override
            .as_deref()
            .or(reported.filter(|m| !m.is_empty()))
            .unwrap_or(&self.fallback_model)
    }
}

/// Writes `chat.completion.chunk` events in the exact shape of the vectors in section 9.
#[derive(Debug, Clone, Default)]
pub struct ChunkWriter {
    /// `{"id":"…","object":"chat.completion.chunk","created":N,"model":"…","choices":`
    prefix: String,
}

impl ChunkWriter {
    pub fn new(id: &str, model: &str, created: u64) -> ChunkWriter {
        ChunkWriter {
            prefix: format!(
                r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"choices":"#,
                quoted(id),
                created,
                quoted(model)
            ),
        }
    }

    pub fn is_ready(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// One chunk with `delta` (a JSON object) and an optional finish reason.
    pub fn delta(&self, out: &mut BytesMut, delta: &str, finish: Option<&str>) {
        out.reserve(self.prefix.len() + delta.len() + 80);
        out.put_slice(b"data: ");
        out.put_slice(self.prefix.as_bytes());
        out.put_slice(br#"[{"index":0,"delta":"#);
        out.put_slice(delta.as_bytes());
        out.put_slice(br#","logprobs":null,"finish_reason":"#);
        match finish {
            Some(f) => {
                out.put_u8(b'"');
                out.put_slice(f.as_bytes());
                out.put_u8(b'"');
            }
            None => out.put_slice(b"null"),
        }
        out.put_slice(b"}]}\n\n");
    }

    pub fn content(&self, out: &mut BytesMut, text: &str) {
        self.delta(out, &format!(r#"{{"content":{}}}"#, quoted(text)), None);
    }

    pub fn role(&self, out: &mut BytesMut) {
        self.delta(out, r#"{"role":"assistant","content":""}"#, None);
    }

    /// The head of a streamed tool call.
    pub fn tool_call_start(&self, out: &mut BytesMut, index: usize, id: &str, name: &str) {
        self.tool_call(out, index, id, name, "");
    }

    /// A complete tool call in one chunk (Gemini, Ollama) or its head (`arguments: ""`).
    pub fn tool_call(&self, out: &mut BytesMut, index: usize, id: &str, name: &str, args: &str) {
        self.delta(
            out,
            &format!(
                r#"{{"tool_calls":[{{"index":{index},"id":{},"type":"function","function":{{"name":{},"arguments":{}}}}}]}}"#,
                quoted(id),
                quoted(name),
                quoted(args)
            ),
            None,
        );
    }

    pub fn tool_arguments(&self, out: &mut BytesMut, index: usize, fragment: &str) {
        self.delta(
            out,
            &format!(
                r#"{{"tool_calls":[{{"index":{index},"function":{{"arguments":{}}}}}]}}"#,
                quoted(fragment)
            ),
            None,
        );
    }

    pub fn finish(&self, out: &mut BytesMut, reason: &str) {
        self.delta(out, "{}", Some(reason));
    }

    pub fn usage(&self, out: &mut BytesMut, tokens: &Tokens) {
        let mut usage = String::with_capacity(96);
        tokens.write_json(&mut usage);
        out.put_slice(b"data: ");
        out.put_slice(self.prefix.as_bytes());
        out.put_slice(b"[],\"usage\":");
        out.put_slice(usage.as_bytes());
        out.put_slice(b"}\n\n");
    }

    pub fn done(out: &mut BytesMut) {
        out.put_slice(b"data: [DONE]\n\n");
    }
}

/// A complete non-streamed OpenAI chat completion.
pub struct Completion<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created: u64,
    pub content: Option<String>,
    pub reasoning: Option<String>,
    /// (id, name, compact JSON arguments)
    pub tool_calls: Vec<(String, String, String)>,
    pub finish_reason: &'a str,
    pub tokens: Tokens,
}

impl Completion<'_> {
    /// The `chat.completion` JSON, written directly (no `Value` tree: this runs once per
    /// translated request).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(
            256 + self.content.as_ref().map_or(0, String::len)
                + self
                    .tool_calls
                    .iter()
                    .map(|(_, _, a)| a.len() + 96)
                    .sum::<usize>(),
        );
        let _ = write!(
            out,
            r#"{{"id":{},"object":"chat.completion","created":{},"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","content":"#,
            quoted(self.id),
            self.created,
            quoted(self.model)
        );
        match &self.content {
            Some(c) => out.push_str(&quoted(c)),
            None => out.push_str("null"),
        }
        out.push_str(r#","refusal":null"#);
        if let Some(r) = &self.reasoning {
            out.push_str(r#","reasoning_content":"#);
            out.push_str(&quoted(r));
        }
        if !self.tool_calls.is_empty() {
            out.push_str(r#","tool_calls":["#);
            for (i, (id, name, args)) in self.tool_calls.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(
                    out,
                    r#"{{"id":{},"type":"function","function":{{"name":{},"arguments":{}}}}}"#,
                    quoted(id),
                    quoted(name),
                    quoted(args)
                );
            }
            out.push(']');
        }
        let _ = write!(
            out,
            r#"}},"logprobs":null,"finish_reason":{}}}],"usage":"#,
            quoted(self.finish_reason)
        );
        self.tokens.write_json(&mut out);
        out.push('}');
        out.into_bytes()
    }
}

/// A fresh `chatcmpl-…` id for providers that send none.
pub fn generated_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// Shared bookkeeping of a translating stream decoder (8.8): role chunk once, exactly one
/// finish chunk, the usage chunk when asked for, then `[DONE]`; or an error event and no
/// `[DONE]`.
#[derive(Debug, Default)]
pub struct StreamState {
    pub writer: ChunkWriter,
    pub role_sent: bool,
    pub finish_sent: bool,
    /// `[DONE]` or an error event was written: nothing more goes out.
    pub closed: bool,
    pub tokens: Option<Tokens>,
    pub error: Option<String>,
    pub output_seen: bool,
}

impl StreamState {
    /// The first event: remembers id and model and sends the role chunk.
    pub fn start(&mut self, out: &mut BytesMut, id: &str, model: &str, created: u64) {
        if !self.writer.is_ready() {
            self.writer = ChunkWriter::new(id, model, created);
        }
        if !self.role_sent {
            self.writer.role(out);
            self.role_sent = true;
        }
    }

    pub fn finish(&mut self, out: &mut BytesMut, reason: &str) {
        if !self.finish_sent && !self.closed {
            self.writer.finish(out, reason);
            self.finish_sent = true;
        }
    }

    /// Writes the error event (OpenAI convention) and stops: no `[DONE]` follows.
    pub fn fail(&mut self, out: &mut BytesMut, error: &ApiError) {
        if !self.closed {
            out.put_slice(&error.sse_event());
            self.error = Some(error.message.clone());
            self.closed = true;
        }
    }

    /// The stream is complete: a finish chunk if none came (only when output arrived, else
    /// it is an error), the usage chunk when asked for, `[DONE]`.
    pub fn end(&mut self, out: &mut BytesMut, include_usage: bool, default_finish: &str) {
        if self.closed {
            return;
        }
        if !self.finish_sent {
            if !self.output_seen {
                self.fail(
                    out,
                    &ApiError::bad_gateway("the upstream stream ended before any output"),
                );
                return;
            }
            self.finish(out, default_finish);
        }
        if include_usage && let Some(tokens) = &self.tokens {
            self.writer.usage(out, tokens);
        }
        ChunkWriter::done(out);
        self.closed = true;
    }
}

/// What every translating stream decoder reports, read off its [`StreamState`].
pub trait TranslatedStream {
    fn state(&self) -> &StreamState;

    /// Usage from the stream, once a provider event carried it.
    fn usage(&self) -> Option<Usage> {
        self.state().tokens.map(|t| t.usage())
    }

    /// The message of the error event the stream ended with, if it did.
    fn upstream_error(&self) -> Option<&str> {
        self.state().error.as_deref()
    }

    /// `[DONE]` or an error event has been written: nothing more may follow.
    fn is_closed(&self) -> bool {
        self.state().closed
    }
}
