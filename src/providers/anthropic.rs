//! Anthropic Messages API codec (`anthropic/` deployments): OpenAI chat request to
//! `POST {api_base}/v1/messages`, and the answer (JSON or SSE events) back to OpenAI's shapes.
//! Called by the forwarder inside Pingora's `request_filter`; pure and Pingora-free.
//!
//! Mapping rules and test vectors: `providers.md` sections 3, 8 and 9.1/9.2. `response_format`
//! travels as a forced tool (`json_tool_call`, as LiteLLM does) whose input comes back as the
//! message content.

use bytes::{Bytes, BytesMut};
use filters::ApiError;
use filters::usage::Usage;
use http::HeaderValue;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::openai::{Target, UpstreamRequest, sse_or_json};
use super::translate::{
    ChatRequest, Completion, DecodeOptions, Image, Message, Part, ProviderFailure, ResponseFormat,
    SamplingKeys, SseEvents, StreamState, Tokens, ToolChoice, compact, push_turn, upstream_error,
};
use super::translated_stream::{ProviderEvents, Translated};

pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is mandatory; used when neither the request nor the price table gives one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The tool that carries `response_format` (LiteLLM's name for it).
pub const JSON_TOOL: &str = "json_tool_call";

/// OpenAI parameters this codec maps.
pub const SUPPORTED: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "user",
    "safety_identifier",
    "reasoning_effort",
    "functions",
    "function_call",
];

/// What goes after `api_base`: `/v1/messages`, or nothing when the base already ends so.
pub fn suffix(base_path: &str) -> &'static str {
    if base_path.trim_end_matches('/').ends_with("/v1/messages") {
        ""
    } else {
        "/v1/messages"
    }
}

/// Headers of every request: `x-api-key` and `anthropic-version` (plus configured extras).
pub fn base_headers(key: Option<&str>, headers: &mut http::HeaderMap) {
    headers.remove(http::header::AUTHORIZATION);
    if let Some(key) = key
        && let Ok(mut v) = HeaderValue::from_str(key)
    {
        v.set_sensitive(true);
        headers.insert("x-api-key", v);
    }
    headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
}

/// Encodes an OpenAI chat request for the Messages API.
pub fn encode(req: ChatRequest, target: &Target<'_>) -> Result<UpstreamRequest, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(ApiError::bad_request("anthropic does not support n > 1").with_param("n"));
    }
    let json_mode = matches!(
        req.response_format,
        Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
    );
    let mut body = Map::new();
    let system_texts: Vec<(&str, Option<&Value>)> = req.system_texts().collect();
    let system = match system_texts.as_slice() {
        [] => None,
        [(text, None)] => Some(Value::String((*text).to_string())),
        blocks => {
            let blocks: Vec<Value> = blocks
                .iter()
                .map(|(text, cache)| {
                    let mut b = json!({"type": "text", "text": text});
                    if let Some(c) = cache {
                        b["cache_control"] = (*c).clone();
                    }
                    b
                })
                .collect();
            Some(Value::Array(blocks))
        }
    };
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut tool = Map::new();
            tool.insert("name".into(), t.name.clone().into());
            if let Some(d) = &t.description {
                tool.insert("description".into(), d.clone().into());
            }
            tool.insert(
                "input_schema".into(),
                t.parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            );
            Value::Object(tool)
        })
        .collect();
    let mut tool_choice = match &req.tool_choice {
        None if req.parallel_tool_calls == Some(false) && !tools.is_empty() => {
            Some(json!({"type": "auto"}))
        }
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Function(name)) => Some(json!({"type": "tool", "name": name})),
    };
    if req.parallel_tool_calls == Some(false)
        && let Some(Value::Object(choice)) = &mut tool_choice
        && choice.get("type").and_then(Value::as_str) != Some("none")
    {
        choice.insert("disable_parallel_tool_use".into(), true.into());
    }
    if json_mode {
        let schema = match &req.response_format {
            Some(ResponseFormat::JsonSchema { schema, .. }) => schema.clone(),
            _ => json!({"type": "object"}),
        };
        tools.push(json!({"name": JSON_TOOL, "description": "Respond with a JSON object.", "input_schema": schema}));
        tool_choice = Some(json!({"type": "tool", "name": JSON_TOOL}));
    }
    if !tools.is_empty() {
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = tool_choice {
        body.insert("tool_choice".into(), choice);
    }
    // max_tokens is a typed field of the body (always present), set below.
    req.put_sampling(
        &mut body,
        &SamplingKeys {
            temperature: Some("temperature"),
            temperature_max: Some(1.0),
            top_p: Some("top_p"),
            stop: Some("stop_sequences"),
            ..SamplingKeys::default()
        },
    );
    if let Some(user) = &req.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if req.stream {
        body.insert("stream".into(), true.into());
    }
    let mut max_tokens = req
        .max_tokens
        .or(target.max_output_tokens)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let extra = req.extra;
    let effort = req.reasoning_effort;
    // Thinking is refused with a forced tool (JSON mode), so JSON mode wins there.
    if let Some(effort) = effort.filter(|_| !json_mode) {
        let budget: Option<u64> = match effort.as_str() {
            "none" => None,
            "minimal" | "low" => Some(1024),
            "medium" => Some(2048),
            _ => Some(4096),
        };
        if let Some(budget) = budget {
            body.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": budget}),
            );
            // Anthropic's rules for thinking: the budget is part of max_tokens and must be
            // below it, and sampling parameters other than the defaults are refused.
            max_tokens = max_tokens.max(budget.saturating_add(1024));
            body.remove("temperature");
            body.remove("top_p");
        }
    }
    for (k, v) in extra {
        if !matches!(k.as_str(), "model" | "max_tokens" | "system" | "messages") {
            body.entry(k).or_insert(v);
        }
    }
    let out = RequestOut {
        model: target.upstream_model,
        max_tokens,
        system,
        messages: messages(&req.messages),
        rest: body,
    };
    let body = Bytes::from(serde_json::to_vec(&out).unwrap_or_default());
    Ok(UpstreamRequest {
        json_tool: json_mode,
        include_usage: req.include_usage,
        ..UpstreamRequest::post(
            target.base.target(suffix(&target.base.path)),
            target.headers,
            body,
            Some(sse_or_json(req.stream)),
        )
    })
}

/// A Messages-API request for an Anthropic deployment (the `/v1/messages` route): the client's
/// bytes with only `model` rewritten, no translation.
pub fn encode_passthrough(
    view: &filters::request::RequestView,
    body: &Bytes,
    target: &Target<'_>,
) -> UpstreamRequest {
    UpstreamRequest::post(
        target.base.target(suffix(&target.base.path)),
        target.headers,
        view.rewrite(body, target.upstream_model, false),
        Some(sse_or_json(view.stream)),
    )
}

/// One turn of a Messages request, serialized straight from the request's own strings.
#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: TurnContent<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum TurnContent<'a> {
    /// A single plain text block, sent as a string as the SDKs write it.
    Text(&'a str),
    Blocks(Vec<BlockOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockOut<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a Value>,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a Value,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

/// OpenAI messages to Anthropic turns: system removed, tool results grouped into one user turn
/// (a user message right after them joins it), text before tool_use blocks.
fn messages<'a>(messages: &'a [Message]) -> Vec<Turn<'a>> {
    let mut out: Vec<(&'static str, Vec<BlockOut<'a>>)> = Vec::with_capacity(messages.len());
    for m in messages {
        match m {
            Message::System { .. } => {}
            Message::User(parts) => {
                let blocks = parts
                    .iter()
                    .map(|p| match p {
                        Part::Text {
                            text,
                            cache_control,
                        } => BlockOut::Text {
                            text,
                            cache_control: cache_control.as_ref(),
                        },
                        Part::Image(Image::Inline { mime, data }) => BlockOut::Image {
                            source: ImageSource::Base64 {
                                media_type: mime,
                                data,
                            },
                        },
                        Part::Image(Image::Url(url)) => BlockOut::Image {
                            source: ImageSource::Url { url },
                        },
                    })
                    .collect();
                push_turn(&mut out, "user", blocks);
            }
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::with_capacity(tool_calls.len() + 1);
                if let Some(t) = text {
                    blocks.push(BlockOut::Text {
                        text: t,
                        cache_control: None,
                    });
                }
                for c in tool_calls {
                    blocks.push(BlockOut::ToolUse {
                        id: &c.id,
                        name: &c.name,
                        input: &c.arguments,
                    });
                }
                push_turn(&mut out, "assistant", blocks);
            }
            Message::Tool {
                call_id, content, ..
            } => {
                push_turn(
                    &mut out,
                    "user",
                    vec![BlockOut::ToolResult {
                        tool_use_id: call_id,
                        content,
                    }],
                );
            }
        }
    }
    out.into_iter()
        .map(|(role, blocks)| {
            let content = match blocks.as_slice() {
                [
                    BlockOut::Text {
                        text,
                        cache_control: None,
                    },
                ] => TurnContent::Text(text),
                _ => TurnContent::Blocks(blocks),
            };
            Turn { role, content }
        })
        .collect()
}

/// The request body: the fixed fields typed, everything optional in `rest`.
#[derive(Serialize)]
struct RequestOut<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Value>,
    messages: Vec<Turn<'a>>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// `stop_reason` to `finish_reason` (8.5).
pub fn finish_reason(stop: &str, json_tool: bool) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" if json_tool => "stop",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn count(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Anthropic usage to OpenAI counts: prompt = input + cache creation + cache read (8.6).
fn tokens(input: u64, cache_write: u64, cache_read: u64, output: u64) -> Tokens {
    let prompt = input.saturating_add(cache_write).saturating_add(cache_read);
    Tokens {
        prompt,
        completion: output,
        total: prompt.saturating_add(output),
        cached: cache_read,
        cache_write,
        reasoning: 0,
    }
}

/// A Messages response, borrowed from the body (decoded once per translated request).
#[derive(Deserialize)]
struct MessageResponse<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Vec<Block<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: MessageUsage,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    input: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize, Default)]
struct MessageUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: u64,
}

/// Tool input as compact JSON (the provider may send spaces).
fn compact_raw(input: Option<&serde_json::value::RawValue>) -> String {
    match input {
        None => "{}".into(),
        Some(raw) => serde_json::from_str::<Value>(raw.get())
            .map(|v| compact(&v))
            .unwrap_or_else(|_| "{}".into()),
    }
}

/// Decodes a non-streamed Messages response into an OpenAI chat completion.
pub fn decode(
    body: &[u8],
    opts: &DecodeOptions,
    json_tool: bool,
) -> Result<(Bytes, Usage), ApiError> {
    let r: MessageResponse<'_> = serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_gateway("anthropic answered with a body that is not a Messages response")
    })?;
    if r.kind.as_deref() == Some("error") {
        return Err(error(200, body));
    }
    let mut content = String::new();
    let mut has_text = false;
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    for block in &r.content {
        match block.kind.as_ref() {
            "text" => {
                content.push_str(block.text.as_deref().unwrap_or(""));
                has_text = true;
            }
            "thinking" => reasoning
                .get_or_insert_with(String::new)
                .push_str(block.thinking.as_deref().unwrap_or("")),
            "tool_use" if json_tool && block.name.as_deref() == Some(JSON_TOOL) => {
                content = compact_raw(block.input);
                has_text = true;
            }
            "tool_use" => calls.push((
                block.id.as_deref().unwrap_or_default().to_string(),
                block.name.as_deref().unwrap_or_default().to_string(),
                compact_raw(block.input),
            )),
            _ => {}
        }
    }
    let u = &r.usage;
    let t = tokens(
        u.input_tokens,
        u.cache_creation_input_tokens.unwrap_or(0),
        u.cache_read_input_tokens.unwrap_or(0),
        u.output_tokens,
    );
    let completion = Completion {
        id: &r.id,
        model: opts.model(r.model.as_deref()),
        created: opts.created,
        content: has_text.then_some(content),
        reasoning,
        tool_calls: calls,
        finish_reason: finish_reason(r.stop_reason.as_deref().unwrap_or("end_turn"), json_tool),
        tokens: t,
    };
    Ok((Bytes::from(completion.to_json()), t.usage()))
}

/// Maps an Anthropic error body (`{"type":"error","error":{"type","message"}}`) and its status.
pub fn error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = v.pointer("/error/type").and_then(Value::as_str);
    let message = v
        .pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| super::translate::raw_message(body));
    let status = match (status, kind) {
        (200, Some(k)) => status_of(k),
        // An error inside a 2xx answer that names no type: the upstream failed.
        (s, None) if s < 400 => 502,
        (s, _) => s,
    };
    upstream_error(
        status,
        ProviderFailure {
            context_window: message.starts_with("prompt is too long"),
            quota: kind == Some("billing_error"),
            code: kind,
            message,
            content_policy: false,
        },
    )
}

/// The status an error type arrives with (for error events inside a 200 stream).
fn status_of(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// Streaming decoder: Anthropic SSE events to OpenAI chunks, as they arrive (table in 3.4).
pub type StreamDecoder = Translated<StreamEvents>;

/// Anthropic's stream events, handled for the [`Translated`] driver.
#[derive(Debug)]
pub struct StreamEvents {
    opts: DecodeOptions,
    json_tool: bool,
    state: StreamState,
    /// Anthropic block index -> OpenAI tool index (`None`: the JSON tool, streamed as content).
    tool_blocks: Vec<(u64, Option<usize>)>,
    tools_seen: usize,
    /// Tool blocks that have produced argument fragments.
    tools_with_args: Vec<u64>,
    input: (u64, u64, u64),
    output: u64,
    stop_reason: Option<String>,
}

impl StreamDecoder {
    pub fn new(opts: DecodeOptions, json_tool: bool) -> Self {
        let framing = SseEvents::with_limit(opts.max_event_bytes);
        Translated::with(
            StreamEvents {
                opts,
                json_tool,
                state: StreamState::default(),
                tool_blocks: Vec::new(),
                tools_seen: 0,
                tools_with_args: Vec::new(),
                input: (0, 0, 0),
                output: 0,
                stop_reason: None,
            },
            framing,
        )
    }
}

impl ProviderEvents for StreamEvents {
    fn event(&mut self, _name: &str, data: &str, out: &mut BytesMut) {
        self.handle(data, out)
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
        self.stop_reason
            .as_deref()
            .map_or("stop", |s| finish_reason(s, self.json_tool))
    }
}

impl StreamEvents {
    fn update_tokens(&mut self) {
        let (i, w, r) = self.input;
        self.state.tokens = Some(tokens(i, w, r, self.output));
    }

    fn handle(&mut self, data: &str, out: &mut BytesMut) {
        if self.state.closed {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match v["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let m = &v["message"];
                let u = &m["usage"];
                self.input = (
                    count(u, "input_tokens").unwrap_or(0),
                    count(u, "cache_creation_input_tokens").unwrap_or(0),
                    count(u, "cache_read_input_tokens").unwrap_or(0),
                );
                self.update_tokens();
                let model = self.opts.model(m["model"].as_str()).to_string();
                self.state.start(
                    out,
                    m["id"].as_str().unwrap_or_default(),
                    &model,
                    self.opts.created,
                );
            }
            "content_block_start" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    self.ensure_started(out);
                    if self.json_tool && block["name"] == JSON_TOOL {
                        self.tool_blocks.push((index, None));
                    } else {
                        let k = self.tools_seen;
                        self.tools_seen += 1;
                        self.tool_blocks.push((index, Some(k)));
                        self.state.writer.tool_call_start(
                            out,
                            k,
                            block["id"].as_str().unwrap_or_default(),
                            block["name"].as_str().unwrap_or_default(),
                        );
                        self.state.output_seen = true;
                    }
                }
            }
            "content_block_delta" => {
                self.ensure_started(out);
                let index = v["index"].as_u64().unwrap_or(0);
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        self.state
                            .writer
                            .content(out, delta["text"].as_str().unwrap_or(""));
                        self.state.output_seen = true;
                    }
                    Some("input_json_delta") => {
                        let fragment = delta["partial_json"].as_str().unwrap_or("");
                        if fragment.is_empty() {
                            return;
                        }
                        match self.tool_blocks.iter().find(|(i, _)| *i == index) {
                            Some((_, Some(k))) => {
                                let k = *k;
                                self.state.writer.tool_arguments(out, k, fragment);
                                self.tools_with_args.push(index);
                            }
                            Some((_, None)) => self.state.writer.content(out, fragment),
                            None => {}
                        }
                        self.state.output_seen = true;
                    }
                    Some("thinking_delta") => {
                        let text = delta["thinking"].as_str().unwrap_or("");
                        self.state.writer.delta(
                            out,
                            &format!(
                                r#"{{"reasoning_content":{}}}"#,
                                super::translate::quoted(text)
                            ),
                            None,
                        );
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = v["index"].as_u64().unwrap_or(0);
                if let Some((_, Some(k))) = self.tool_blocks.iter().find(|(i, _)| *i == index)
                    && !self.tools_with_args.contains(&index)
                {
                    let k = *k;
                    self.state.writer.tool_arguments(out, k, "{}");
                }
            }
            "message_delta" => {
                let u = &v["usage"];
                if let Some(o) = count(u, "output_tokens") {
                    self.output = o;
                }
                if let Some(i) = count(u, "input_tokens") {
                    self.input.0 = i;
                }
                if let Some(w) = count(u, "cache_creation_input_tokens") {
                    self.input.1 = w;
                }
                if let Some(r) = count(u, "cache_read_input_tokens") {
                    self.input.2 = r;
                }
                self.update_tokens();
                if let Some(stop) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.ensure_started(out);
                    self.stop_reason = Some(stop.to_string());
                    self.state.output_seen = true;
                    self.state.finish(out, finish_reason(stop, self.json_tool));
                }
            }
            "message_stop" => {
                let finish = self
                    .stop_reason
                    .as_deref()
                    .map(|s| finish_reason(s, self.json_tool))
                    .unwrap_or("stop");
                self.state.end(out, self.opts.include_usage, finish);
            }
            "error" => {
                let body = serde_json::to_vec(&v).unwrap_or_default();
                self.state.fail(out, &error(200, &body));
            }
            _ => {} // ping and future event types
        }
    }

    /// Providers should start with `message_start`; if one does not, start anyway.
    fn ensure_started(&mut self, out: &mut BytesMut) {
        if !self.state.role_sent {
            let model = self.opts.model(None).to_string();
            let id = super::translate::generated_id();
            self.state.start(out, &id, &model, self.opts.created);
        }
    }
}

#[cfg(test)]
mod tests;
