//! OpenAI's Responses API as an ingress (`POST /v1/responses`, the OpenAI SDK's
//! `responses.create`). Called by the forwarder inside Pingora's `request_filter`.
//!
//! OpenAI and Azure deployments have the API themselves: the request goes to them as it is
//! (only `model` rewritten) and the answer comes back untouched, read on the side for usage.
//! Every other deployment (Anthropic, Gemini, Bedrock, Ollama, Cohere, and OpenAI-compatible
//! servers with chat completions only) gets the request converted to OpenAI's chat format, which
//! its codec then encodes as usual; its answer, decoded to OpenAI's format by that codec, is
//! turned into a Response object or the Responses event sequence here, as LiteLLM's
//! completion bridge does.

use bytes::{BufMut, Bytes, BytesMut};
use filters::ApiError;
use filters::usage::{PromptTokensDetails, Usage};
use serde_json::{Map, Value, json};

use super::translate::SseEvents;

/// Request members that belong to the Responses API itself, never sent to a chat provider.
const RESPONSES_ONLY: [&str; 9] = [
    "store",
    "previous_response_id",
    "include",
    "truncation",
    "background",
    "conversation",
    "prompt_cache_key",
    "service_tier",
    "safety_identifier",
];

/// What a delivered Response leaves to store (`management::stored_responses`).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// An OpenAI or Azure Response: its id (the provider keeps the rest).
    Native(String),
    /// A translated Response, whole.
    Translated(Value),
}

impl Outcome {
    /// The outcome of a whole Response body as the client got it.
    pub fn of_body(body: &[u8], translated: bool) -> Option<Outcome> {
        let v: Value = serde_json::from_slice(body).ok()?;
        if translated {
            return Some(Outcome::Translated(v));
        }
        Some(Outcome::Native(v.get("id")?.as_str()?.to_string()))
    }
}

/// A fresh id with OpenAI's prefix for its kind (`resp`, `msg`, `fc`, `rs`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// Converts a Responses request into an OpenAI chat request (as a JSON object, for the codecs
/// that read it as one). `history` is the conversation of `previous_response_id`, as chat
/// messages, put before this request's input.
pub fn to_openai_chat(body: &[u8], history: &[Value]) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(mut req) = serde_json::from_slice::<Value>(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?
    else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let mut out = Map::new();
    out.insert("model".into(), req.remove("model").unwrap_or(Value::Null));
    let mut messages = Vec::new();
    match req.remove("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(_) => {
            return Err(
                ApiError::bad_request("instructions must be a string").with_param("instructions")
            );
        }
    }
    messages.extend_from_slice(history);
    messages.extend(input_messages(req.remove("input").unwrap_or(Value::Null))?);
    if messages.is_empty() {
        return Err(
            ApiError::bad_request("Missing required parameter: 'input'.").with_param("input"),
        );
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = req.remove("tools").filter(|t| !t.is_null()) {
        out.insert("tools".into(), chat_tools(&tools)?);
    }
    if let Some(choice) = req.remove("tool_choice") {
        let choice = match choice {
            Value::Object(c) if c.get("type").and_then(Value::as_str) == Some("function") => {
                json!({"type": "function", "function": {"name": c.get("name").cloned().unwrap_or(Value::Null)}})
            }
            other => other,
        };
        out.insert("tool_choice".into(), choice);
    }
    if let Some(max) = req.remove("max_output_tokens").filter(|m| !m.is_null()) {
        out.insert("max_tokens".into(), max);
    }
    if let Some(format) = req
        .remove("text")
        .and_then(|t| t.get("format").cloned())
        .filter(|f| f["type"] != "text")
    {
        let response_format = if format["type"] == "json_schema" {
            let mut schema = Map::new();
            for name in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(name) {
                    schema.insert(name.into(), v.clone());
                }
            }
            json!({"type": "json_schema", "json_schema": schema})
        } else {
            format
        };
        out.insert("response_format".into(), response_format);
    }
    if let Some(effort) = req
        .remove("reasoning")
        .and_then(|r| r.get("effort").cloned())
        .filter(|e| !e.is_null())
    {
        out.insert("reasoning_effort".into(), effort);
    }
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    for name in RESPONSES_ONLY.iter().chain(&["metadata", "stream_options"]) {
        req.remove(*name);
    }
    // Everything else (temperature, top_p, user, parallel_tool_calls, stream, provider
    // extras) has the same name in both APIs.
    out.extend(req);
    if stream {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(out)
}

/// `input` as chat messages: a string is one user message; a list holds messages and the
/// function calls and their outputs of earlier turns.
pub fn input_messages(input: Value) -> Result<Vec<Value>, ApiError> {
    let items = match input {
        Value::Null => return Ok(Vec::new()),
        Value::String(s) => return Ok(vec![json!({"role": "user", "content": s})]),
        Value::Array(items) => items,
        _ => {
            return Err(ApiError::bad_request(
                "Invalid type for 'input': expected a string or an array of input items.",
            )
            .with_param("input"));
        }
    };
    let mut messages: Vec<Value> = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = match item["role"].as_str() {
                    Some("developer") => "system",
                    Some(role @ ("user" | "system" | "assistant")) => role,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "Invalid value for 'input[{index}].role': expected one of user, assistant, system or developer."
                        ))
                        .with_param(format!("input[{index}].role")));
                    }
                };
                messages
                    .push(json!({"role": role, "content": chat_content(&item["content"], role)}));
            }
            "function_call" => {
                let call = json!({"id": item["call_id"], "type": "function", "function": {
                    "name": item["name"], "arguments": item["arguments"].as_str().unwrap_or("{}")}});
                // Calls of one turn go in one assistant message (after its text, if any).
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                            Some(calls) => calls.push(call),
                            None => last["tool_calls"] = json!([call]),
                        }
                    }
                    _ => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let output = match &item["output"] {
                    Value::String(s) => s.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(|p| p["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(""),
                    other => other.to_string(),
                };
                messages.push(
                    json!({"role": "tool", "tool_call_id": item["call_id"], "content": output}),
                );
            }
            // Reasoning of an earlier turn: chat providers take no such input.
            "reasoning" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "input item type {other:?} is not supported for this model group's provider (Sluice translates messages, function_call and function_call_output items)"
                ))
                .with_param(format!("input[{index}]")));
            }
        }
    }
    Ok(messages)
}

/// A message's content in chat's format: text stays text, parts become chat parts.
fn chat_content(content: &Value, role: &str) -> Value {
    let Some(parts) = content.as_array() else {
        return content.clone();
    };
    let text_only = parts
        .iter()
        .all(|p| matches!(p["type"].as_str(), Some("input_text" | "output_text")));
    if text_only && role != "user" {
        // Assistant and system turns as one string, the shape every chat provider takes.
        let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        return Value::String(text);
    }
    let converted: Vec<Value> = parts
        .iter()
        .filter_map(|p| match p["type"].as_str()? {
            "input_text" | "output_text" => Some(json!({"type": "text", "text": p["text"]})),
            "input_image" => {
                let mut image = json!({"url": p.get("image_url").cloned().unwrap_or(Value::Null)});
                if let Some(detail) = p.get("detail") {
                    image["detail"] = detail.clone();
                }
                Some(json!({"type": "image_url", "image_url": image}))
            }
            "input_file" => Some(json!({"type": "file", "file": {
                "file_data": p.get("file_data"), "file_id": p.get("file_id"), "filename": p.get("filename")}})),
            _ => None,
        })
        .collect();
    Value::Array(converted)
}

/// Function tools in chat's shape; any other tool type cannot be translated.
fn chat_tools(tools: &Value) -> Result<Value, ApiError> {
    let Some(list) = tools.as_array() else {
        return Err(ApiError::bad_request("tools must be a list").with_param("tools"));
    };
    let mut out = Vec::with_capacity(list.len());
    for tool in list {
        if tool["type"] != "function" {
            return Err(ApiError::bad_request(format!(
                "tool type {} is not supported for this model group's provider (only function tools translate to chat completions)",
                tool["type"]
            ))
            .with_param("tools"));
        }
        let mut function = Map::new();
        for name in ["name", "description", "parameters", "strict"] {
            if let Some(v) = tool.get(name).filter(|v| !v.is_null()) {
                function.insert(name.into(), v.clone());
            }
        }
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// What a Response object echoes of its request.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    pub id: String,
    pub created_at: u64,
    pub model: String,
    fields: Map<String, Value>,
}

impl Echo {
    /// Reads the members a Response repeats from the request `body`; `id` is the new
    /// response's.
    pub fn of_request(body: &[u8], id: String, model: &str, created_at: u64) -> Echo {
        let req: Map<String, Value> = serde_json::from_slice(body).unwrap_or_default();
        let mut fields = Map::new();
        for (name, default) in [
            ("instructions", Value::Null),
            ("max_output_tokens", Value::Null),
            ("metadata", json!({})),
            ("parallel_tool_calls", Value::Bool(true)),
            ("previous_response_id", Value::Null),
            ("reasoning", Value::Null),
            ("store", Value::Bool(true)),
            ("temperature", json!(1.0)),
            ("text", json!({"format": {"type": "text"}})),
            ("tool_choice", json!("auto")),
            ("tools", json!([])),
            ("top_p", json!(1.0)),
            ("truncation", json!("disabled")),
            ("user", Value::Null),
        ] {
            let value = req.get(name).filter(|v| !v.is_null()).cloned();
            fields.insert(name.into(), value.unwrap_or(default));
        }
        Echo {
            id,
            created_at,
            model: model.to_string(),
            fields,
        }
    }

    /// The Response object with `status`, `output` and `usage`.
    fn response(&self, status: &str, output: Vec<Value>, usage: Value, finish: &str) -> Value {
        let incomplete = match (status, finish) {
            ("incomplete", "content_filter") => json!({"reason": "content_filter"}),
            ("incomplete", _) => json!({"reason": "max_output_tokens"}),
            _ => Value::Null,
        };
        let mut v = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "model": self.model,
            "output": output,
            "usage": usage,
        });
        if let Value::Object(map) = &mut v {
            map.extend(self.fields.clone());
        }
        v
    }
}

/// `completed`, or `incomplete` when the model stopped at its token limit or a filter.
fn status_for(finish: &str) -> &'static str {
    match finish {
        "length" | "content_filter" => "incomplete",
        _ => "completed",
    }
}

/// A chat `usage` object in the Responses API's shape.
fn responses_usage(u: &Value) -> Value {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let input = n(&u["prompt_tokens"]);
    let output = n(&u["completion_tokens"]);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": n(&u["prompt_tokens_details"]["cached_tokens"])},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n(&u["completion_tokens_details"]["reasoning_tokens"])},
        "total_tokens": input + output,
    })
}

/// A Responses `usage` object as [`Usage`] (metrics, spend, budgets).
pub fn usage_of(u: &Value) -> Option<Usage> {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let input = n(u.get("input_tokens")?);
    let output = n(&u["output_tokens"]);
    let cached = n(&u["input_tokens_details"]["cached_tokens"]);
    Some(Usage {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: input.saturating_add(output),
        prompt_tokens_details: (cached > 0).then_some(PromptTokensDetails {
            cached_tokens: Some(cached),
            cache_write_tokens: None,
        }),
    })
}

/// The usage of a whole Response object (an OpenAI or Azure answer, passed through).
pub fn usage_of_response(body: &[u8]) -> Option<Usage> {
    let v: Value = serde_json::from_slice(body).ok()?;
    usage_of(v.get("usage")?)
}

/// The output items of a chat completion's message.
fn output_items(message: &Value) -> Vec<Value> {
    let mut output = Vec::new();
    if let Some(reasoning) = message["reasoning_content"]
        .as_str()
        .filter(|r| !r.is_empty())
    {
        output.push(json!({"type": "reasoning", "id": new_id("rs"),
            "summary": [{"type": "summary_text", "text": reasoning}]}));
    }
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        output.push(json!({"type": "message", "id": new_id("msg"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        output.push(
            json!({"type": "function_call", "id": new_id("fc"), "status": "completed",
            "call_id": call["id"], "name": call["function"]["name"],
            "arguments": call["function"]["arguments"].as_str().unwrap_or("{}")}),
        );
    }
    output
}

/// Converts an OpenAI chat completion into a Response object.
pub fn to_responses_response(openai: &[u8], echo: &Echo) -> Result<Bytes, ApiError> {
    let v: Value = serde_json::from_slice(openai).map_err(|_| {
        ApiError::bad_gateway("the deployment answered with a body that is not JSON")
    })?;
    let choice = &v["choices"][0];
    let finish = choice["finish_reason"].as_str().unwrap_or("stop");
    let response = echo.response(
        status_for(finish),
        output_items(&choice["message"]),
        responses_usage(&v["usage"]),
        finish,
    );
    Ok(Bytes::from(
        serde_json::to_vec(&response).unwrap_or_default(),
    ))
}

/// The conversation of a Response as chat messages: what a later request naming it as
/// `previous_response_id` continues from (its input, then its output).
pub fn output_as_messages(output: &[Value]) -> Vec<Value> {
    let items: Vec<Value> = output
        .iter()
        .filter(|item| item["type"] != "reasoning")
        .cloned()
        .collect();
    input_messages(Value::Array(items)).unwrap_or_default()
}

/// An error event for a Responses client.
pub fn error_event(error: &ApiError, sequence_number: u64) -> Bytes {
    let mut out = BytesMut::new();
    emit(
        &mut out,
        "error",
        &json!({"type": "error", "code": error.code, "message": error.message,
            "param": error.param, "sequence_number": sequence_number}),
    );
    out.freeze()
}

fn emit(out: &mut BytesMut, event: &str, data: &Value) {
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(&serde_json::to_vec(data).unwrap_or_default());
    out.put_slice(b"\n\n");
}

/// The item being streamed.
#[derive(Debug)]
enum Open {
    /// The model's reasoning (chat's `reasoning_content`), as a reasoning summary.
    Reasoning {
        id: String,
        text: String,
    },
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: Value,
        name: Value,
        arguments: String,
        tool_index: u64,
    },
}

/// Converts OpenAI chat chunks (what every codec's decoder produces) into the Responses event
/// sequence, as they arrive: `response.created`, `response.in_progress`, per item
/// `response.output_item.added` ... `response.output_item.done` with text and argument
/// deltas, then `response.completed` (or `response.incomplete`) carrying the whole Response.
#[derive(Debug)]
pub struct ToResponsesStream {
    echo: Echo,
    events: SseEvents,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    /// Items done, as they appear in the final Response.
    output: Vec<Value>,
    finish: Option<String>,
    usage: Option<Value>,
    done: bool,
    error: Option<String>,
    /// The Response as completed, for `previous_response_id` and retrieval.
    completed: Option<Value>,
}

impl ToResponsesStream {
    pub fn new(echo: Echo) -> Self {
        ToResponsesStream {
            echo,
            events: SseEvents::default(),
            sequence: 0,
            started: false,
            open: None,
            output: Vec::new(),
            finish: None,
            usage: None,
            done: false,
            error: None,
            completed: None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// `response.completed` (or an error event) has been written.
    pub fn is_closed(&self) -> bool {
        self.done
    }

    /// The final Response, once the stream completed.
    pub fn completed(&self) -> Option<&Value> {
        self.completed.as_ref()
    }

    /// The next event's `sequence_number`.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    fn emit(&mut self, out: &mut BytesMut, event: &str, mut data: Value) {
        data["type"] = json!(event);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        emit(out, event, &data);
    }

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

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self
            .echo
            .response("in_progress", Vec::new(), Value::Null, "");
        self.emit(out, "response.created", json!({"response": response}));
        let response = self
            .echo
            .response("in_progress", Vec::new(), Value::Null, "");
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    fn close_item(&mut self, out: &mut BytesMut) {
        let Some(open) = self.open.take() else {
            return;
        };
        let output_index = self.output.len();
        let item = match open {
            Open::Reasoning { id, text } => {
                let part = json!({"type": "summary_text", "text": text});
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "part": part}),
                );
                json!({"type": "reasoning", "id": id, "summary": [part]})
            }
            Open::Message { id, text } => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0, "part": part}),
                );
                json!({"type": "message", "id": id, "status": "completed", "role": "assistant", "content": [part]})
            }
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": output_index, "arguments": arguments}),
                );
                json!({"type": "function_call", "id": id, "status": "completed", "call_id": call_id, "name": name, "arguments": arguments})
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": item}),
        );
        self.output.push(item);
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
            self.emit(
                out,
                "error",
                json!({"code": e.get("code").cloned().unwrap_or(Value::Null), "message": message, "param": null}),
            );
            self.error = Some(message);
            self.done = true;
            return;
        }
        self.start(out);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = v["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["reasoning_content"]
            .as_str()
            .filter(|t| !t.is_empty())
        {
            if !matches!(self.open, Some(Open::Reasoning { .. })) {
                self.close_item(out);
                let id = new_id("rs");
                let output_index = self.output.len();
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": {"type": "reasoning", "id": id, "summary": []}}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.added",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
                );
                self.open = Some(Open::Reasoning {
                    id,
                    text: String::new(),
                });
            }
            let output_index = self.output.len();
            if let Some(Open::Reasoning { id, text: so_far }) = &mut self.open {
                so_far.push_str(text);
                let id = id.clone();
                self.emit(
                    out,
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "delta": text}),
                );
            }
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Some(Open::Message { .. })) {
                self.close_item(out);
                let id = new_id("msg");
                let output_index = self.output.len();
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}),
                );
                self.emit(
                    out,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
                );
                self.open = Some(Open::Message {
                    id,
                    text: String::new(),
                });
            }
            let output_index = self.output.len();
            if let Some(Open::Message { id, text: so_far }) = &mut self.open {
                so_far.push_str(text);
                let id = id.clone();
                self.emit(
                    out,
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0, "delta": text, "logprobs": []}),
                );
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let k = call["index"].as_u64().unwrap_or(0);
            let same =
                matches!(&self.open, Some(Open::Call { tool_index, .. }) if *tool_index == k);
            if !same {
                self.close_item(out);
                let id = new_id("fc");
                let output_index = self.output.len();
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": {"type": "function_call", "id": id, "status": "in_progress",
                        "call_id": call["id"], "name": call["function"]["name"], "arguments": ""}}),
                );
                self.open = Some(Open::Call {
                    id,
                    call_id: call["id"].clone(),
                    name: call["function"]["name"].clone(),
                    arguments: String::new(),
                    tool_index: k,
                });
            }
            let fragment = call["function"]["arguments"].as_str().unwrap_or("");
            let output_index = self.output.len();
            if let (false, Some(Open::Call { id, arguments, .. })) =
                (fragment.is_empty(), &mut self.open)
            {
                arguments.push_str(fragment);
                let id = id.clone();
                self.emit(
                    out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": output_index, "delta": fragment}),
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
        self.start(out);
        self.close_item(out);
        let finish = self.finish.clone().unwrap_or_else(|| "stop".into());
        let status = status_for(&finish);
        let usage = responses_usage(self.usage.as_ref().unwrap_or(&Value::Null));
        let response = self
            .echo
            .response(status, std::mem::take(&mut self.output), usage, &finish);
        let event = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, event, json!({"response": response}));
        self.completed = Some(response);
    }

    /// The stream's usage, as chat reported it.
    pub fn usage(&self) -> Option<Usage> {
        usage_of(&responses_usage(self.usage.as_ref()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::split_invariant;

    #[test]
    fn a_responses_request_becomes_a_chat_request() {
        let body = json!({
            "model": "claude", "instructions": "terse", "max_output_tokens": 50, "store": true,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA", "detail": "low"}]},
                {"type": "function_call", "call_id": "call_1", "name": "w", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                {"type": "message", "role": "developer", "content": "be brief"}
            ],
            "tools": [{"type": "function", "name": "w", "description": "weather", "parameters": {"type": "object"}, "strict": null}],
            "tool_choice": {"type": "function", "name": "w"},
            "text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": true}},
            "reasoning": {"effort": "low"}, "stream": true, "temperature": 0.2, "metadata": {"a": "b"}
        });
        let history = vec![json!({"role": "user", "content": "earlier"})];
        let chat = to_openai_chat(&serde_json::to_vec(&body).unwrap(), &history).unwrap();
        let v = Value::Object(chat);
        assert_eq!(
            v["messages"],
            json!([
                {"role": "system", "content": "terse"},
                {"role": "user", "content": "earlier"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "system", "content": "be brief"}
            ])
        );
        assert_eq!(
            v["tools"],
            json!([{"type": "function", "function": {"name": "w", "description": "weather", "parameters": {"type": "object"}}}])
        );
        assert_eq!(
            v["tool_choice"],
            json!({"type": "function", "function": {"name": "w"}})
        );
        assert_eq!(v["max_tokens"], 50);
        assert_eq!(
            v["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": true}})
        );
        assert_eq!(v["reasoning_effort"], "low");
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(v["temperature"], 0.2);
        for gone in [
            "store",
            "metadata",
            "instructions",
            "input",
            "text",
            "reasoning",
        ] {
            assert!(v.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn untranslatable_input_is_a_clear_400() {
        let e = to_openai_chat(
            br#"{"model":"m","input":[{"type":"web_search_call"}]}"#,
            &[],
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.param.as_deref(), Some("input[0]"));
        let e = to_openai_chat(
            br#"{"model":"m","input":"hi","tools":[{"type":"web_search"}]}"#,
            &[],
        )
        .unwrap_err();
        assert!(e.message.contains("only function tools"), "{}", e.message);
        let e = to_openai_chat(br#"{"model":"m"}"#, &[]).unwrap_err();
        assert_eq!(e.message, "Missing required parameter: 'input'.");
    }

    fn echo() -> Echo {
        Echo::of_request(
            br#"{"model":"claude","input":"hi","instructions":"terse","max_output_tokens":50}"#,
            "resp_1".into(),
            "claude",
            7,
        )
    }

    #[test]
    fn a_chat_completion_becomes_a_response() {
        let openai = br#"{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":"x","choices":[{"index":0,"message":{"role":"assistant","content":"Hi","tool_calls":[{"id":"call_1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":5,"total_tokens":25,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        let v: Value =
            serde_json::from_slice(&to_responses_response(openai, &echo()).unwrap()).unwrap();
        assert_eq!(v["id"], "resp_1");
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["model"], "claude");
        assert_eq!(v["instructions"], "terse");
        assert_eq!(v["max_output_tokens"], 50);
        assert_eq!(v["output"][0]["type"], "message");
        assert_eq!(v["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(v["output"][1]["type"], "function_call");
        assert_eq!(v["output"][1]["call_id"], "call_1");
        assert_eq!(v["output"][1]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 5,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 25})
        );
        let u = usage_of(&v["usage"]).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
            (20, 5, 4)
        );
        // The conversation continues from the output.
        let messages = output_as_messages(v["output"].as_array().unwrap());
        assert_eq!(messages[0]["role"], "assistant");
        assert_eq!(messages[0]["content"], "Hi");
        assert_eq!(messages[0]["tool_calls"][0]["id"], "call_1");
        // Cut at the token limit: incomplete, with the reason.
        let cut =
            br#"{"choices":[{"message":{"content":"Hi"},"finish_reason":"length"}],"usage":{}}"#;
        let v: Value =
            serde_json::from_slice(&to_responses_response(cut, &echo()).unwrap()).unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    }

    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Check\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ing\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"w\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":7,\"total_tokens\":17}}\n\n",
        "data: [DONE]\n\n",
    );

    fn convert(chunks: &[&[u8]]) -> String {
        let mut s = ToResponsesStream::new(echo());
        let mut out = BytesMut::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        s.finish(&mut out);
        // Generated item ids differ run to run.
        let text = String::from_utf8(out.to_vec()).unwrap();
        let ids = regex::Regex::new(r"(msg|fc|rs)_[0-9a-f]{32}").unwrap();
        ids.replace_all(&text, "$1_X").into_owned()
    }

    #[test]
    fn chat_chunks_become_the_responses_event_sequence() {
        let out = convert(&[OPENAI_STREAM.as_bytes()]);
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let data: Vec<Value> = out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        for (n, event) in data.iter().enumerate() {
            assert_eq!(event["sequence_number"], n as u64);
        }
        let completed = &data[13]["response"];
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["output"][0]["content"][0]["text"], "Checking");
        assert_eq!(completed["output"][1]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(completed["usage"]["output_tokens"], 7);
    }

    #[test]
    fn conversion_is_split_invariant() {
        split_invariant(OPENAI_STREAM.as_bytes(), convert);
    }

    /// Reasoning (Anthropic's thinking, Bedrock's and Ollama's reasoning, as chat's
    /// `reasoning_content`) becomes a reasoning item with a summary, before the message.
    #[test]
    fn reasoning_becomes_a_reasoning_item() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"Think\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"ing\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let out = convert(&[stream.as_bytes()]);
        assert!(
            out.contains("event: response.reasoning_summary_text.delta\n"),
            "{out}"
        );
        let completed: Value = out
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .find(|e| e["type"] == "response.completed")
            .unwrap();
        let output = &completed["response"]["output"];
        assert_eq!(output[0]["type"], "reasoning");
        assert_eq!(output[0]["summary"][0]["text"], "Thinking");
        assert_eq!(output[1]["content"][0]["text"], "Hi");
        // Not sent back to a chat provider when the conversation continues.
        let messages = output_as_messages(output.as_array().unwrap());
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["content"], "Hi");
    }

    #[test]
    fn an_error_chunk_ends_the_stream_with_an_error_event() {
        let mut s = ToResponsesStream::new(echo());
        let mut out = BytesMut::new();
        s.feed(
            b"data: {\"error\":{\"message\":\"overloaded\",\"code\":\"529\"}}\n\n",
            &mut out,
        );
        s.finish(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("event: error\n"), "{text}");
        assert!(text.contains("\"message\":\"overloaded\""));
        assert!(!text.contains("response.completed"));
        assert_eq!(s.error(), Some("overloaded"));
    }
}
