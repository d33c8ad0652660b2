//! Ollama native codec: `ollama_chat/` deployments to `POST {api_base}/api/chat`, `ollama/`
//! to `POST {api_base}/api/generate` (LiteLLM's URLs), NDJSON streaming back to OpenAI SSE.
//! Called by the forwarder inside Pingora's `request_filter`; pure and Pingora-free.
//!
//! Wire format: `providers.md` 6.1. Sampling parameters live in `options`; tool-call arguments
//! are JSON objects; images are bare base64 strings; the final line has `done: true` with
//! `prompt_eval_count` / `eval_count`.

use bytes::{Bytes, BytesMut};
use filters::ApiError;
use filters::usage::Usage;
use serde_json::{Map, Value, json};

use super::openai::{Target, UpstreamRequest};
use super::translate::{
    ChatRequest, Completion, DecodeOptions, Image, Lines, Message, Part, ProviderFailure,
    ResponseFormat, SamplingKeys, StreamState, Tokens, compact, generated_id, quoted,
    upstream_error,
};
use super::translated_stream::{ProviderEvents, Translated};

/// OpenAI parameters this codec maps.
pub const SUPPORTED: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "tools",
    "response_format",
    "frequency_penalty",
    "presence_penalty",
    "functions",
];

/// `ollama/` (`/api/generate`) has no tools.
pub const SUPPORTED_GENERATE: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "response_format",
    "frequency_penalty",
    "presence_penalty",
];

fn options(req: &ChatRequest) -> Map<String, Value> {
    let mut o = Map::new();
    req.put_sampling(
        &mut o,
        &SamplingKeys {
            max_tokens: Some("num_predict"),
            temperature: Some("temperature"),
            temperature_max: None,
            top_p: Some("top_p"),
            stop: Some("stop"),
            seed: Some("seed"),
            frequency_penalty: Some("frequency_penalty"),
            presence_penalty: Some("presence_penalty"),
        },
    );
    o
}

fn format(req: &ChatRequest) -> Option<Value> {
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => Some("json".into()),
        Some(ResponseFormat::JsonSchema { schema, .. }) => Some(schema.clone()),
        _ => None,
    }
}

fn inline_images(parts: &[Part], at: usize) -> Result<(String, Vec<Value>), ApiError> {
    let mut text = String::new();
    let mut images = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        match p {
            Part::Text { text: t, .. } => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
            }
            Part::Image(Image::Inline { data, .. }) => images.push(Value::String(data.clone())),
            Part::Image(Image::Url(_)) => {
                return Err(ApiError::bad_request(
                    "ollama cannot fetch image URLs; send the image inline as a data: URL",
                )
                .with_param(format!("messages[{at}].content[{j}].image_url")));
            }
        }
    }
    Ok((text, images))
}

/// Encodes for `/api/chat` (`generate == false`) or `/api/generate`.
pub fn encode(
    req: ChatRequest,
    target: &Target<'_>,
    generate: bool,
) -> Result<UpstreamRequest, ApiError> {
    let mut body = Map::new();
    body.insert("model".into(), target.upstream_model.into());
    if generate {
        let mut prompt = String::new();
        let mut images = Vec::new();
        for (i, m) in req.messages.iter().enumerate() {
            let text = match m {
                Message::System { .. } => continue,
                Message::User(parts) => {
                    let (t, imgs) = inline_images(parts, i)?;
                    images.extend(imgs);
                    t
                }
                Message::Assistant { text, .. } => text.clone().unwrap_or_default(),
                Message::Tool { content, .. } => content.clone(),
            };
            if !prompt.is_empty() {
                prompt.push_str("\n\n");
            }
            prompt.push_str(&text);
        }
        body.insert("prompt".into(), prompt.into());
        let system: Vec<&str> = req.system_texts().map(|(t, _)| t).collect();
        if !system.is_empty() {
            body.insert("system".into(), system.join("\n").into());
        }
        if !images.is_empty() {
            body.insert("images".into(), Value::Array(images));
        }
    } else {
        let mut messages = Vec::with_capacity(req.messages.len());
        for (i, m) in req.messages.iter().enumerate() {
            messages.push(match m {
                Message::System { text, .. } => json!({"role": "system", "content": text}),
                Message::User(parts) => {
                    let (text, images) = inline_images(parts, i)?;
                    let mut msg = json!({"role": "user", "content": text});
                    if !images.is_empty() {
                        msg["images"] = Value::Array(images);
                    }
                    msg
                }
                Message::Assistant { text, tool_calls } => {
                    let mut msg =
                        json!({"role": "assistant", "content": text.clone().unwrap_or_default()});
                    if !tool_calls.is_empty() {
                        msg["tool_calls"] = tool_calls
                            .iter()
                            .map(
                                |c| json!({"function": {"name": c.name, "arguments": c.arguments}}),
                            )
                            .collect();
                    }
                    msg
                }
                Message::Tool { name, content, .. } => {
                    json!({"role": "tool", "content": content, "tool_name": name})
                }
            });
        }
        body.insert("messages".into(), Value::Array(messages));
        if !req.tools.is_empty() {
            let tools: Vec<Value> = req
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name,
                        "description": t.description.clone().unwrap_or_default(),
                        "parameters": t.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}))
                    }})
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(f) = format(&req) {
        body.insert("format".into(), f);
    }
    let opts = options(&req);
    if !opts.is_empty() {
        body.insert("options".into(), Value::Object(opts));
    }
    // Ollama streams unless told not to.
    body.insert("stream".into(), req.stream.into());
    for (k, v) in req.extra {
        match (k.as_str(), v) {
            // Client-given options merge with the mapped ones.
            ("options", Value::Object(extra)) => {
                if let Some(Value::Object(o)) = body.get_mut("options") {
                    for (ok, ov) in extra {
                        o.entry(ok).or_insert(ov);
                    }
                } else {
                    body.insert("options".into(), Value::Object(extra));
                }
            }
            (_, v) => {
                body.entry(k).or_insert(v);
            }
        }
    }
    let path = if generate {
        "/api/generate"
    } else {
        "/api/chat"
    };
    Ok(UpstreamRequest {
        include_usage: req.include_usage,
        ..UpstreamRequest::post(
            target.base.target(path),
            target.headers,
            Bytes::from(serde_json::to_vec(&Value::Object(body)).unwrap_or_default()),
            None,
        )
    })
}

fn tokens(v: &Value) -> Tokens {
    let prompt = v["prompt_eval_count"].as_u64().unwrap_or(0);
    let completion = v["eval_count"].as_u64().unwrap_or(0);
    Tokens {
        prompt,
        completion,
        total: prompt.saturating_add(completion),
        ..Tokens::default()
    }
}

fn finish_reason(done_reason: Option<&str>, had_calls: bool) -> &'static str {
    match done_reason {
        Some("length") => "length",
        _ if had_calls => "tool_calls",
        _ => "stop",
    }
}

fn call_id(call: &Value, response_id: &str, n: usize) -> String {
    call.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("call_{response_id}_{n}"))
}

/// Decodes a non-streamed `/api/chat` or `/api/generate` answer.
pub fn decode(body: &[u8], opts: &DecodeOptions) -> Result<(Bytes, Usage), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_gateway("ollama answered with a body that is not JSON"))?;
    if v.get("error").is_some() {
        return Err(error(200, body));
    }
    let id = generated_id();
    let message = &v["message"];
    let content = message["content"]
        .as_str()
        .or_else(|| v["response"].as_str())
        .map(str::to_owned);
    let calls: Vec<(String, String, String)> = message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(n, c)| {
            (
                call_id(c, &id, n),
                c["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                arguments(&c["function"]["arguments"]),
            )
        })
        .collect();
    let t = tokens(&v);
    let completion = Completion {
        id: &id,
        model: opts.model(v["model"].as_str()),
        created: opts.created,
        content: content.filter(|c| !c.is_empty() || calls.is_empty()),
        reasoning: message["thinking"].as_str().map(str::to_owned),
        finish_reason: finish_reason(v["done_reason"].as_str(), !calls.is_empty()),
        tool_calls: calls,
        tokens: t,
    };
    Ok((Bytes::from(completion.to_json()), t.usage()))
}

/// Arguments arrive as an object; some versions send a JSON string.
fn arguments(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "{}".into(),
        other => compact(other),
    }
}

/// Maps `{"error": "..."}`.
pub fn error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| super::translate::raw_message(body));
    let status = if status == 200 { 500 } else { status };
    let lower = message.to_ascii_lowercase();
    upstream_error(
        status,
        ProviderFailure {
            context_window: lower.contains("context length") || lower.contains("context window"),
            message,
            ..Default::default()
        },
    )
}

/// Streaming decoder: NDJSON lines to OpenAI chunks; the `done` line finishes the stream at
/// once (Ollama sends no terminator).
pub type StreamDecoder = Translated<StreamEvents, Lines>;

/// Ollama's stream lines, handled for the [`Translated`] driver.
#[derive(Debug)]
pub struct StreamEvents {
    opts: DecodeOptions,
    state: StreamState,
    id: String,
    calls: usize,
}

impl StreamDecoder {
    pub fn new(opts: DecodeOptions) -> Self {
        let framing = Lines::with_limit(opts.max_event_bytes);
        Translated::with(
            StreamEvents {
                opts,
                state: StreamState::default(),
                id: generated_id(),
                calls: 0,
            },
            framing,
        )
    }
}

impl ProviderEvents for StreamEvents {
    fn event(&mut self, _name: &str, line: &str, out: &mut BytesMut) {
        self.line(line, out)
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
}

impl StreamEvents {
    fn line(&mut self, line: &str, out: &mut BytesMut) {
        if self.state.closed {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return;
        };
        if v.get("error").is_some() {
            self.state.fail(out, &error(200, line.as_bytes()));
            return;
        }
        let model = self.opts.model(v["model"].as_str()).to_string();
        let id = self.id.clone();
        self.state.start(out, &id, &model, self.opts.created);
        let message = &v["message"];
        if let Some(thinking) = message["thinking"].as_str().filter(|t| !t.is_empty()) {
            self.state.writer.delta(
                out,
                &format!(r#"{{"reasoning_content":{}}}"#, quoted(thinking)),
                None,
            );
        }
        if let Some(text) = message["content"]
            .as_str()
            .or_else(|| v["response"].as_str())
            .filter(|t| !t.is_empty())
        {
            self.state.writer.content(out, text);
            self.state.output_seen = true;
        }
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            let k = self.calls;
            self.calls += 1;
            self.state.writer.tool_call(
                out,
                k,
                &call_id(call, &id, k),
                call["function"]["name"].as_str().unwrap_or_default(),
                &arguments(&call["function"]["arguments"]),
            );
            self.state.output_seen = true;
        }
        if v["done"].as_bool() == Some(true) {
            self.state.tokens = Some(tokens(&v));
            self.state.output_seen = true;
            self.state.finish(
                out,
                finish_reason(v["done_reason"].as_str(), self.calls > 0),
            );
            self.state.end(out, self.opts.include_usage, "stop");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{fixture, obj, split_invariant, target_for};

    fn opts(include_usage: bool) -> DecodeOptions {
        DecodeOptions {
            model_override: Some("llama".into()),
            fallback_model: "llama".into(),
            created: 1_700_000_000,
            include_usage,
            max_event_bytes: crate::providers::translate::DEFAULT_MAX_EVENT_BYTES,
        }
    }

    /// Replaces the random response id so outputs compare.
    fn stable(s: &str) -> String {
        let re_start = s.find("chatcmpl-");
        match re_start {
            Some(i) => {
                let id = &s[i..i + 9 + 32];
                s.replace(id, "chatcmpl-X")
            }
            None => s.to_string(),
        }
    }

    #[test]
    fn chat_request_uses_options_images_and_object_arguments() {
        let (base, headers) = target_for("http://localhost:11434");
        let target = Target::new(super::super::Wire::OllamaChat, &base, "llama3.2", &headers);
        let req = ChatRequest::read(obj(json!({
            "messages": [
                {"role": "system", "content": "terse"},
                {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "temperature": 0.2, "max_tokens": 128, "stop": ["END"], "seed": 7,
            "response_format": {"type": "json_object"}, "keep_alive": "5m"
        })))
        .unwrap();
        let up = encode(req, &target, false).unwrap();
        assert_eq!(up.target, "/api/chat");
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            sent,
            json!({
                "model": "llama3.2",
                "messages": [
                    {"role": "system", "content": "terse"},
                    {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]},
                    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
                    {"role": "tool", "content": "42", "tool_name": "f"}
                ],
                "format": "json",
                "options": {"temperature": 0.2, "num_predict": 128, "stop": ["END"], "seed": 7},
                "stream": false,
                "keep_alive": "5m"
            })
        );
    }

    #[test]
    fn generate_builds_a_prompt() {
        let (base, headers) = target_for("http://localhost:11434");
        let target = Target::new(super::super::Wire::Ollama, &base, "llama3.2", &headers);
        let req = ChatRequest::read(obj(json!({"messages": [
            {"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}]})))
        .unwrap();
        let up = encode(req, &target, true).unwrap();
        assert_eq!(up.target, "/api/generate");
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(sent["prompt"], "hi");
        assert_eq!(sent["system"], "terse");
    }

    #[test]
    fn chat_response_maps_tool_calls_and_counts() {
        let body = br#"{"model":"llama3.2","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},"done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":12}"#;
        let (out, usage) = decode(body, &opts(false)).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert!(v["choices"][0]["message"]["content"].is_null());
        assert_eq!(v["model"], "llama");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (26, 12));
    }

    fn run_stream(chunks: &[&[u8]], include_usage: bool) -> String {
        let mut d = StreamDecoder::new(opts(include_usage));
        let mut out = BytesMut::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        stable(std::str::from_utf8(&out).unwrap())
    }

    #[test]
    fn ndjson_stream_becomes_openai_chunks() {
        let upstream = fixture("ollama/chat_stream.ndjson");
        let out = run_stream(&[upstream.as_bytes()], true);
        assert_eq!(out, fixture("ollama/chat_stream_openai.sse"));
    }

    #[test]
    fn ndjson_stream_decodes_the_same_at_every_split() {
        let upstream = fixture("ollama/chat_stream.ndjson");
        split_invariant(upstream.as_bytes(), |c| run_stream(c, true));
    }

    #[test]
    fn an_error_line_ends_the_stream_with_an_error_event() {
        let out = run_stream(
            &[b"{\"model\":\"llama\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n{\"error\":\"model crashed\"}\n"],
            false,
        );
        assert!(out.contains("\"content\":\"Hi\""));
        assert!(out.ends_with("data: {\"error\":{\"message\":\"model crashed\",\"type\":\"api_error\",\"param\":null,\"code\":\"500\"}}\n\n"), "{out}");
        assert_eq!(
            error(404, br#"{"error":"model 'x' not found"}"#)
                .status
                .as_u16(),
            404
        );
    }
}
