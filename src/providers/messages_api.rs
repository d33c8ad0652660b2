//! Anthropic-format ingress (`POST /v1/messages`, as LiteLLM serves it): an Anthropic Messages
//! request for any model group. Called by the forwarder inside Pingora's `request_filter`.
//!
//! An `anthropic/` deployment gets the request as it is (only `model` rewritten) and its answer
//! goes back untouched, so nothing is translated twice. Any other deployment gets the request
//! converted to OpenAI's chat format, which its codec then encodes as usual; its answer, decoded
//! to OpenAI's format by that codec, is converted back into a Messages response or into
//! Messages stream events here.

use bytes::{BufMut, Bytes, BytesMut};
use filters::ApiError;
use filters::usage::Usage;
use serde_json::{Map, Value, json};

use super::translate::{SseEvents, compact};

/// Converts a Messages request into an OpenAI chat request body. Streams ask for usage, which
/// the final `message_delta` reports.
pub fn to_openai_request(body: &[u8]) -> Result<Bytes, ApiError> {
    let chat = to_openai_chat(body)?;
    Ok(Bytes::from(
        serde_json::to_vec(&Value::Object(chat)).unwrap_or_default(),
    ))
}

/// [`to_openai_request`] as the JSON object, for codecs that read it as one (no serialize and
/// re-parse on the way to a translating codec).
pub fn to_openai_chat(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(mut req) = v else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let mut out = Map::new();
    out.insert("model".into(), req.remove("model").unwrap_or(Value::Null));
    let mut messages = Vec::new();
    match req.remove("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let parts: Vec<Value> = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .map(|b| {
                    let mut p = json!({"type": "text", "text": b["text"]});
                    if let Some(c) = b.get("cache_control") {
                        p["cache_control"] = c.clone();
                    }
                    p
                })
                .collect();
            messages.push(json!({"role": "system", "content": parts}));
        }
        Some(_) => {
            return Err(
                ApiError::bad_request("system must be a string or a list of text blocks")
                    .with_param("system"),
            );
        }
    }
    let Some(Value::Array(turns)) = req.remove("messages") else {
        return Err(ApiError::bad_request("messages: Field required").with_param("messages"));
    };
    for (i, turn) in turns.iter().enumerate() {
        let role = turn["role"].as_str().unwrap_or_default();
        let blocks = match &turn["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            _ => {
                return Err(
                    ApiError::bad_request("content must be a string or a list of blocks")
                        .with_param(format!("messages[{i}].content")),
                );
            }
        };
        match role {
            "user" => {
                let mut parts = Vec::new();
                for b in &blocks {
                    match b["type"].as_str() {
                        Some("text") => {
                            let mut p = json!({"type": "text", "text": b["text"]});
                            if let Some(c) = b.get("cache_control") {
                                p["cache_control"] = c.clone();
                            }
                            parts.push(p);
                        }
                        Some("image") => {
                            let src = &b["source"];
                            let url = match src["type"].as_str() {
                                Some("base64") => format!(
                                    "data:{};base64,{}",
                                    src["media_type"].as_str().unwrap_or("image/png"),
                                    src["data"].as_str().unwrap_or("")
                                ),
                                _ => src["url"].as_str().unwrap_or_default().to_string(),
                            };
                            parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                        }
                        Some("tool_result") => {
                            let content = match &b["content"] {
                                Value::String(s) => s.clone(),
                                Value::Array(items) => items
                                    .iter()
                                    .filter_map(|i| i["text"].as_str())
                                    .collect::<Vec<_>>()
                                    .join("\n"),
                                Value::Null => String::new(),
                                other => other.to_string(),
                            };
                            messages.push(json!({"role": "tool", "tool_call_id": b["tool_use_id"], "content": content}));
                        }
                        _ => {}
                    }
                }
                if !parts.is_empty() {
                    messages.push(json!({"role": "user", "content": parts}));
                }
            }
            "assistant" => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for b in &blocks {
                    match b["type"].as_str() {
                        Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
                        Some("tool_use") => calls.push(json!({
                            "id": b["id"], "type": "function",
                            "function": {"name": b["name"], "arguments": compact(&b["input"])}
                        })),
                        _ => {}
                    }
                }
                let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
                if !calls.is_empty() {
                    m["tool_calls"] = Value::Array(calls);
                }
                messages.push(m);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant', got {other:?}"
                ))
                .with_param(format!("messages[{i}].role")));
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(m) = req.remove("max_tokens") {
        out.insert("max_tokens".into(), m);
    }
    if let Some(s) = req.remove("stop_sequences") {
        out.insert("stop".into(), s);
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.remove(key) {
            out.insert(key.into(), v);
        }
    }
    if let Some(user) = req
        .remove("metadata")
        .and_then(|m| m.get("user_id").cloned())
    {
        out.insert("user".into(), user);
    }
    if let Some(Value::Array(tools)) = req.remove("tools") {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t["name"],
                    "description": t.get("description").cloned().unwrap_or(Value::Null),
                    "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))
                }})
            })
            .collect();
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = req.remove("tool_choice") {
        let mapped = match choice["type"].as_str() {
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": choice["name"]}}),
            _ => json!("auto"),
        };
        if choice["disable_parallel_tool_use"] == true {
            out.insert("parallel_tool_calls".into(), false.into());
        }
        out.insert("tool_choice".into(), mapped);
    }
    if req.remove("stream").and_then(|v| v.as_bool()) == Some(true) {
        out.insert("stream".into(), true.into());
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    // Anthropic-only fields (top_k, thinking, ...) travel on as provider-specific parameters.
    for (k, v) in req {
        out.entry(k).or_insert(v);
    }
    Ok(out)
}

/// OpenAI `finish_reason` to Messages `stop_reason`.
fn stop_reason(finish: &str) -> &'static str {
    match finish {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

fn anthropic_usage(u: &Value) -> Value {
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = u
        .pointer("/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let written = u
        .pointer("/prompt_tokens_details/cache_write_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": prompt.saturating_sub(cached + written),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

/// Converts an OpenAI chat completion into a Messages response.
pub fn to_anthropic_response(openai: &[u8], model: &str) -> Result<Bytes, ApiError> {
    let v: Value = serde_json::from_slice(openai).map_err(|_| {
        ApiError::bad_gateway("the deployment answered with a body that is not JSON")
    })?;
    let choice = &v["choices"][0];
    let message = &choice["message"];
    let mut content = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let input: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or("{}"))
                .unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
    }
    let id = v["id"].as_str().unwrap_or_default();
    let id = if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{}", id.trim_start_matches("chatcmpl-"))
    };
    let body = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        "stop_sequence": null,
        "usage": anthropic_usage(&v["usage"]),
    });
    Ok(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
}

/// An error for a Messages client: `{"type":"error","error":{"type","message"}}`.
pub fn error_body(error: &ApiError) -> Bytes {
    let kind = filters::error_type_for_status(error.status.as_u16());
    Bytes::from(
        serde_json::to_vec(
            &json!({"type": "error", "error": {"type": kind, "message": error.message}}),
        )
        .unwrap_or_default(),
    )
}

/// Converts an OpenAI error body (any upstream's error, already mapped) into a Messages one.
pub fn error_from_openai(status: u16, body: &[u8]) -> Bytes {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| super::translate::raw_message(body));
    let mut e = ApiError::new(
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY),
        "api_error",
        message,
    );
    e.code = None;
    error_body(&e)
}

/// Reads the usage of a Messages response (passthrough: for metrics and spend).
pub fn usage_of_response(body: &[u8]) -> Option<Usage> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let u = v.get("usage")?;
    Some(usage_from_anthropic(u, None))
}

fn usage_from_anthropic(u: &Value, before: Option<Usage>) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let prev = before.unwrap_or_default();
    let prev_details = prev.prompt_tokens_details.unwrap_or_default();
    let input = n("input_tokens");
    let write = n("cache_creation_input_tokens");
    let read = n("cache_read_input_tokens");
    let prompt = match input {
        Some(i) => i
            .saturating_add(write.unwrap_or(0))
            .saturating_add(read.unwrap_or(0)),
        None => prev.prompt_tokens,
    };
    let cached = read.unwrap_or(prev_details.cached_tokens.unwrap_or(0));
    let written = write.unwrap_or(prev_details.cache_write_tokens.unwrap_or(0));
    let completion = n("output_tokens").unwrap_or(prev.completion_tokens);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        prompt_tokens_details: (cached > 0 || written > 0).then_some(
            filters::usage::PromptTokensDetails {
                cached_tokens: (cached > 0).then_some(cached),
                cache_write_tokens: (written > 0).then_some(written),
            },
        ),
    }
}

/// Where the last complete SSE event of `buf` ends (after its blank line), if any.
fn last_event_end(buf: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::rfind(buf, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::rfind(buf, b"\r\n\r\n").map(|i| i + 4);
    lf.max(crlf)
}

/// Which API's events a [`PassthroughObserver`] reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Anthropic's Messages stream (to a `/v1/messages` client).
    #[default]
    Anthropic,
    /// OpenAI's Responses stream (to a `/v1/responses` client).
    Responses,
}

/// Passthrough of an Anthropic stream to a Messages client, or of a Responses stream to a
/// Responses client: bytes forwarded untouched, whole events at a time (the unfinished tail of
/// a read waits for its end, so an error event is recognised, and its credentials redacted,
/// before any of it goes out), events read on the side for usage and errors.
#[derive(Debug, Default)]
pub struct PassthroughObserver {
    dialect: Dialect,
    events: SseEvents,
    /// The bytes after the last complete event seen.
    tail: BytesMut,
    usage: Option<Usage>,
    error: Option<String>,
    stopped: bool,
    /// A Responses stream's Response id, once it completed.
    completed_id: Option<String>,
}

impl PassthroughObserver {
    /// Events larger than `max_event` bytes are passed on without being read.
    pub fn new(dialect: Dialect, max_event: usize) -> PassthroughObserver {
        PassthroughObserver {
            dialect,
            events: SseEvents::with_limit(max_event),
            ..PassthroughObserver::default()
        }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        let mut events = std::mem::take(&mut self.events);
        events.feed(chunk, |_, data| self.event(data));
        self.tail.extend_from_slice(chunk);
        let complete = last_event_end(&self.tail).unwrap_or(0);
        if events.overflowed() || self.tail.len() > events.limit() {
            // Not held any longer: an event this long is passed on as it comes.
            out.put_slice(&self.tail.split());
        } else if complete > 0 {
            out.put_slice(&self.tail.split_to(complete));
        }
        self.events = events;
    }

    pub fn finish(&mut self, out: &mut BytesMut) {
        let mut events = std::mem::take(&mut self.events);
        events.finish(|_, data| self.event(data));
        out.put_slice(&self.tail.split());
    }

    fn event(&mut self, data: &str) {
        if self.dialect == Dialect::Responses {
            return self.responses_event(data);
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match v["type"].as_str() {
            Some("message_start") => {
                self.usage = Some(usage_from_anthropic(&v["message"]["usage"], None));
                // `output_tokens: 1` of message_start is a placeholder, not a count.
                if let Some(u) = &mut self.usage {
                    u.total_tokens -= u.completion_tokens;
                    u.completion_tokens = 0;
                }
            }
            Some("message_delta") => {
                self.usage = Some(usage_from_anthropic(&v["usage"], self.usage));
            }
            Some("error") => {
                self.error = v["error"]["message"].as_str().map(str::to_owned);
            }
            Some("message_stop") => self.stopped = true,
            _ => {}
        }
    }

    /// A Responses event: usage and the end from the final Response, errors. Deltas (nearly
    /// every event) are told apart by their type without parsing them.
    fn responses_event(&mut self, data: &str) {
        const ENDS: [&str; 3] = [
            r#""type":"response.completed""#,
            r#""type":"response.incomplete""#,
            r#""type":"response.failed""#,
        ];
        let ends = ENDS.iter().any(|t| data.contains(t));
        if !ends && !data.contains(r#""type":"error""#) {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match v["type"].as_str() {
            Some("error") => {
                self.error = Some(v["message"].as_str().unwrap_or("upstream error").to_owned());
            }
            Some("response.completed" | "response.incomplete" | "response.failed") => {
                let response = &v["response"];
                self.usage = super::responses_api::usage_of(&response["usage"]).or(self.usage);
                if let Some(message) = response["error"]["message"].as_str() {
                    self.error = Some(message.to_owned());
                } else {
                    self.completed_id = response["id"].as_str().map(str::to_owned);
                }
                self.stopped = true;
            }
            _ => {}
        }
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// A Responses stream's Response id, once it completed (or was cut at its token limit).
    pub fn completed_id(&self) -> Option<&str> {
        self.completed_id.as_deref()
    }

    /// `message_stop` (`response.completed`) or an error event went through.
    pub fn is_closed(&self) -> bool {
        self.stopped || self.error.is_some()
    }

    pub fn upstream_error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// Converts OpenAI chat chunks (what every codec's decoder produces) into Messages stream
/// events, as they arrive.
#[derive(Debug)]
pub struct ToAnthropicStream {
    model: String,
    events: SseEvents,
    started: bool,
    /// The open content block: its index and whether it is a tool block.
    open: Option<(usize, bool)>,
    next_index: usize,
    /// OpenAI tool index -> open block index.
    tool_blocks: Vec<(u64, usize)>,
    finish: Option<String>,
    usage: Option<Value>,
    done: bool,
    error: Option<String>,
}

impl ToAnthropicStream {
    pub fn new(model: &str) -> Self {
        ToAnthropicStream {
            model: model.to_string(),
            events: SseEvents::default(),
            started: false,
            open: None,
            next_index: 0,
            tool_blocks: Vec::new(),
            finish: None,
            usage: None,
            done: false,
            error: None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// `message_stop` or an error event has been written.
    pub fn is_closed(&self) -> bool {
        self.done
    }

    fn emit(out: &mut BytesMut, event: &str, data: &Value) {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(&serde_json::to_vec(data).unwrap_or_default());
        out.put_slice(b"\n\n");
    }

    /// Feeds OpenAI SSE bytes; writes the Messages events they complete.
    pub fn feed(&mut self, openai: &[u8], out: &mut BytesMut) {
        let mut events = std::mem::take(&mut self.events);
        events.feed(openai, |_, data| self.chunk(data, out));
        self.events = events;
    }

    /// The OpenAI stream ended (with or without `[DONE]`).
    pub fn finish(&mut self, out: &mut BytesMut) {
        let mut events = std::mem::take(&mut self.events);
        events.finish(|_, data| self.chunk(data, out));
        self.close(out);
    }

    fn start(&mut self, out: &mut BytesMut, id: &str) {
        if self.started {
            return;
        }
        self.started = true;
        let id = if id.starts_with("msg_") {
            id.to_string()
        } else {
            format!("msg_{}", id.trim_start_matches("chatcmpl-"))
        };
        Self::emit(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0}}}),
        );
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((index, _)) = self.open.take() {
            Self::emit(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn chunk(&mut self, data: &str, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if data == "[DONE]" {
            self.close(out);
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if let Some(e) = v.get("error") {
            let message = e["message"]
                .as_str()
                .unwrap_or("upstream error")
                .to_string();
            let kind = match e["type"].as_str() {
                Some("overloaded_error") => "overloaded_error",
                Some("rate_limit_error") => "rate_limit_error",
                _ => "api_error",
            };
            Self::emit(
                out,
                "error",
                &json!({"type": "error", "error": {"type": kind, "message": message}}),
            );
            self.error = Some(message);
            self.done = true;
            return;
        }
        self.start(out, v["id"].as_str().unwrap_or_default());
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = v["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Some((_, false))) {
                self.close_block(out);
                let index = self.next_index;
                self.next_index += 1;
                self.open = Some((index, false));
                Self::emit(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                );
            }
            let index = self.open.map_or(0, |(i, _)| i);
            Self::emit(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            );
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let k = call["index"].as_u64().unwrap_or(0);
            let block = self
                .tool_blocks
                .iter()
                .find(|(t, _)| *t == k)
                .map(|(_, b)| *b);
            let block = match block {
                Some(b) => b,
                None => {
                    self.close_block(out);
                    let index = self.next_index;
                    self.next_index += 1;
                    self.tool_blocks.push((k, index));
                    self.open = Some((index, true));
                    Self::emit(
                        out,
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": index, "content_block": {
                            "type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": {}}}),
                    );
                    index
                }
            };
            if let Some(fragment) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                Self::emit(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": block, "delta": {"type": "input_json_delta", "partial_json": fragment}}),
                );
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
    }

    fn close(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.started {
            self.start(out, "");
        }
        self.close_block(out);
        let usage = self
            .usage
            .as_ref()
            .map(anthropic_usage)
            .unwrap_or_else(|| json!({"input_tokens": 0, "output_tokens": 0}));
        Self::emit(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(self.finish.as_deref().unwrap_or("stop")), "stop_sequence": null}, "usage": usage}),
        );
        Self::emit(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::split_invariant;

    #[test]
    fn messages_request_becomes_an_openai_chat_request() {
        let body = json!({
            "model": "claude", "max_tokens": 100, "system": "terse",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}, {"type": "text", "text": "and?"}]}
            ],
            "tools": [{"name": "w", "description": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"], "stream": true, "top_k": 3, "metadata": {"user_id": "u1"}
        });
        let out = to_openai_request(&serde_json::to_vec(&body).unwrap()).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["messages"],
            json!([
                {"role": "system", "content": "terse"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "user", "content": [{"type": "text", "text": "and?"}]}
            ])
        );
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(v["stop"], json!(["END"]));
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["top_k"], 3);
        assert_eq!(v["user"], "u1");
        assert_eq!(
            v["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
    }

    #[test]
    fn openai_completion_becomes_a_messages_response() {
        let openai = br#"{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","tool_calls":[{"id":"call_1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":5,"total_tokens":25,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        let out = to_anthropic_response(openai, "claude-x").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"id": "msg_9", "type": "message", "role": "assistant", "model": "claude-x",
                "content": [{"type": "text", "text": "Hi"}, {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 16, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4, "output_tokens": 5}})
        );
    }

    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Checking\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"w\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":7,\"total_tokens\":17}}\n\n",
        "data: [DONE]\n\n",
    );

    fn convert(chunks: &[&[u8]]) -> String {
        let mut s = ToAnthropicStream::new("claude-x");
        let mut out = BytesMut::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        s.finish(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn openai_chunks_become_messages_events() {
        let out = convert(&[OPENAI_STREAM.as_bytes()]);
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(out.contains(r#""delta":{"type":"text_delta","text":"Checking"}"#));
        assert!(out.contains(
            r#""content_block":{"type":"tool_use","id":"call_1","name":"w","input":{}}"#
        ));
        assert!(out.contains(r#""partial_json":"{\"city\":\"Paris\"}""#));
        assert!(out.contains(r#""stop_reason":"tool_use""#));
        assert!(out.contains(r#""output_tokens":7"#));
    }

    #[test]
    fn conversion_is_split_invariant() {
        split_invariant(OPENAI_STREAM.as_bytes(), convert);
    }

    /// An event split across reads goes out whole once its end arrives (an error event is
    /// recognised before any of it is sent); the bytes are the upstream's, in order.
    #[test]
    fn passthrough_forwards_whole_events() {
        let mut o = PassthroughObserver::new(Dialect::Anthropic, 1024);
        let mut out = BytesMut::new();
        o.feed(
            b"event: ping\ndata: {\"type\":\"ping\"}\n\nevent: error\ndata: {\"type\":\"er",
            &mut out,
        );
        assert_eq!(&out[..], b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        assert!(o.upstream_error().is_none());
        o.feed(
            b"ror\",\"error\":{\"type\":\"x\",\"message\":\"key sk-1\"}}\n\n",
            &mut out,
        );
        assert_eq!(o.upstream_error(), Some("key sk-1"));
        assert!(out.ends_with(b"sk-1\"}}\n\n"));
        o.finish(&mut out);
        assert!(out.starts_with(b"event: ping"));
    }

    #[test]
    fn passthrough_reads_usage_without_touching_bytes() {
        let upstream = crate::providers::testing::fixture("anthropic/a2_1_upstream.sse");
        let mut o = PassthroughObserver::default();
        let mut out = BytesMut::new();
        o.feed(upstream.as_bytes(), &mut out);
        o.finish(&mut out);
        assert_eq!(out, upstream.as_bytes());
        let u = o.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (58, 41));
    }

    /// A Responses stream passes untouched; its usage comes from `response.completed`, its
    /// end from there or an `error` event.
    #[test]
    fn responses_passthrough_reads_the_final_usage() {
        let upstream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"Hi\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":2},\"output_tokens\":3,\"total_tokens\":15}}}\n\n",
        );
        let mut o = PassthroughObserver::new(Dialect::Responses, 1 << 20);
        let mut out = BytesMut::new();
        o.feed(&upstream.as_bytes()[..100], &mut out);
        assert!(!o.is_closed());
        o.feed(&upstream.as_bytes()[100..], &mut out);
        o.finish(&mut out);
        assert_eq!(out, upstream.as_bytes());
        assert!(o.is_closed());
        assert_eq!(o.completed_id(), Some("resp_1"));
        let u = o.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
            (12, 3, 2)
        );
        let mut o = PassthroughObserver::new(Dialect::Responses, 1 << 20);
        o.feed(
            b"event: error\ndata: {\"type\":\"error\",\"message\":\"overloaded\",\"sequence_number\":0}\n\n",
            &mut out,
        );
        assert_eq!(o.upstream_error(), Some("overloaded"));
        assert!(o.is_closed());
    }
}
