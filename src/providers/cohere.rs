//! Cohere v2 chat codec (`cohere/` and `cohere_chat/` deployments): OpenAI chat request to
//! `POST {api_base}` (LiteLLM: the whole endpoint, default `https://api.cohere.com/v2/chat`)
//! and the answer, streamed events included, back to OpenAI's shapes. Called by the forwarder
//! inside Pingora's `request_filter`; pure and Pingora-free.
//!
//! Wire format: `providers.md` 7.1. Messages and tools are close to OpenAI's (tool arguments
//! stay JSON strings); parameters are renamed (`p`, `k`, `stop_sequences`); finish reasons are
//! upper case; usage comes in `usage.tokens`.

use bytes::{Bytes, BytesMut};
use filters::ApiError;
use filters::usage::Usage;
use serde_json::{Map, Value, json};

use super::openai::{Target, UpstreamRequest};
use super::translate::{
    ChatRequest, Completion, DecodeOptions, Image, Message, Part, ProviderFailure, ResponseFormat,
    SamplingKeys, SseEvents, StreamState, Tokens, ToolChoice, compact, generated_id,
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
    "tool_choice",
    "response_format",
    "frequency_penalty",
    "presence_penalty",
    "functions",
    "function_call",
];

pub fn encode(req: ChatRequest, target: &Target<'_>) -> Result<UpstreamRequest, ApiError> {
    let mut body = Map::new();
    body.insert("model".into(), target.upstream_model.into());
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        messages.push(match m {
            Message::System { text, .. } => json!({"role": "system", "content": text}),
            Message::User(parts) => {
                let only_text = parts.iter().all(|p| matches!(p, Part::Text { .. }));
                if only_text {
                    let text: Vec<&str> = parts
                        .iter()
                        .filter_map(|p| match p {
                            Part::Text { text, .. } => Some(text.as_str()),
                            _ => None,
                        })
                        .collect();
                    json!({"role": "user", "content": text.join("\n")})
                } else {
                    let content: Vec<Value> = parts
                        .iter()
                        .map(|p| match p {
                            Part::Text { text, .. } => json!({"type": "text", "text": text}),
                            Part::Image(Image::Inline { mime, data }) => json!({
                                "type": "image_url",
                                "image_url": {"url": format!("data:{mime};base64,{data}")}
                            }),
                            Part::Image(Image::Url(url)) => {
                                json!({"type": "image_url", "image_url": {"url": url}})
                            }
                        })
                        .collect();
                    json!({"role": "user", "content": content})
                }
            }
            Message::Assistant { text, tool_calls } => {
                let mut msg = json!({"role": "assistant"});
                if let Some(t) = text {
                    msg["content"] = t.clone().into();
                }
                if !tool_calls.is_empty() {
                    msg["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": compact(&c.arguments)}}))
                        .collect();
                }
                msg
            }
            Message::Tool {
                call_id, content, ..
            } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
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
    match &req.tool_choice {
        Some(ToolChoice::Required) => {
            body.insert("tool_choice".into(), "REQUIRED".into());
        }
        Some(ToolChoice::None) => {
            body.insert("tool_choice".into(), "NONE".into());
        }
        Some(ToolChoice::Function(name)) => {
            return Err(ApiError::bad_request(format!(
                "cohere cannot force a named tool ({name}); use tool_choice \"required\" or \"auto\""
            ))
            .with_param("tool_choice"));
        }
        _ => {}
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            body.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert(
                "response_format".into(),
                json!({"type": "json_object", "json_schema": schema}),
            );
        }
        _ => {}
    }
    req.put_sampling(
        &mut body,
        &SamplingKeys {
            max_tokens: Some("max_tokens"),
            temperature: Some("temperature"),
            temperature_max: None,
            top_p: Some("p"),
            stop: Some("stop_sequences"),
            seed: Some("seed"),
            frequency_penalty: Some("frequency_penalty"),
            presence_penalty: Some("presence_penalty"),
        },
    );
    if req.stream {
        body.insert("stream".into(), true.into());
    }
    let mut extra = req.extra;
    if let Some(k) = extra.remove("top_k") {
        body.insert("k".into(), k);
    }
    for (k, v) in extra {
        body.entry(k).or_insert(v);
    }
    Ok(UpstreamRequest {
        include_usage: req.include_usage,
        ..UpstreamRequest::post(
            target.base.target(""),
            target.headers,
            Bytes::from(serde_json::to_vec(&Value::Object(body)).unwrap_or_default()),
            None,
        )
    })
}

/// `finish_reason` (either case) to OpenAI's; `None` for the failure reasons.
fn finish_reason(reason: &str) -> Option<&'static str> {
    match reason.to_ascii_uppercase().as_str() {
        "MAX_TOKENS" => Some("length"),
        "TOOL_CALL" => Some("tool_calls"),
        "ERROR" | "TIMEOUT" => None,
        _ => Some("stop"),
    }
}

fn tokens(usage: &Value) -> Tokens {
    let t = usage.get("tokens").unwrap_or(&usage["billed_units"]);
    let prompt = t["input_tokens"].as_u64().unwrap_or(0);
    let completion = t["output_tokens"].as_u64().unwrap_or(0);
    Tokens {
        prompt,
        completion,
        total: prompt.saturating_add(completion),
        ..Tokens::default()
    }
}

pub fn decode(body: &[u8], opts: &DecodeOptions) -> Result<(Bytes, Usage), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_gateway("cohere answered with a body that is not JSON"))?;
    let reason = v["finish_reason"].as_str().unwrap_or("COMPLETE");
    let Some(finish) = finish_reason(reason) else {
        return Err(ApiError::bad_gateway(format!(
            "cohere ended the generation with {reason}"
        )));
    };
    let message = &v["message"];
    let mut content = String::new();
    let mut has_text = false;
    for part in message["content"].as_array().into_iter().flatten() {
        if let Some(t) = part["text"].as_str() {
            content.push_str(t);
            has_text = true;
        }
    }
    let calls: Vec<(String, String, String)> = message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                c["function"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                match &c["function"]["arguments"] {
                    Value::String(s) => s.clone(),
                    other => compact(other),
                },
            )
        })
        .collect();
    let id = v["id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(generated_id);
    let t = tokens(&v["usage"]);
    let completion = Completion {
        id: &id,
        model: opts.model(None),
        created: opts.created,
        content: has_text.then_some(content),
        reasoning: None,
        tool_calls: calls,
        finish_reason: finish,
        tokens: t,
    };
    Ok((Bytes::from(completion.to_json()), t.usage()))
}

/// Maps Cohere's `{"message": "..."}` error bodies.
pub fn error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| super::translate::raw_message(body));
    let lower = message.to_ascii_lowercase();
    upstream_error(
        if status == 200 { 500 } else { status },
        ProviderFailure {
            context_window: lower.contains("too many tokens")
                || lower.contains("context length")
                || lower.contains("context window"),
            message,
            ..Default::default()
        },
    )
}

/// Streaming decoder: Cohere's typed SSE events to OpenAI chunks.
pub type StreamDecoder = Translated<StreamEvents>;

/// Cohere's stream events, handled for the [`Translated`] driver.
#[derive(Debug)]
pub struct StreamEvents {
    opts: DecodeOptions,
    state: StreamState,
    calls: usize,
}

impl StreamDecoder {
    pub fn new(opts: DecodeOptions) -> Self {
        let framing = SseEvents::with_limit(opts.max_event_bytes);
        Translated::with(
            StreamEvents {
                opts,
                state: StreamState::default(),
                calls: 0,
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
}

impl StreamEvents {
    fn ensure_started(&mut self, out: &mut BytesMut, id: Option<&str>) {
        if !self.state.role_sent {
            let id = id.map(str::to_owned).unwrap_or_else(generated_id);
            let model = self.opts.model(None).to_string();
            self.state.start(out, &id, &model, self.opts.created);
        }
    }

    fn handle(&mut self, data: &str, out: &mut BytesMut) {
        if self.state.closed || data == "[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let delta = &v["delta"]["message"];
        match v["type"].as_str().unwrap_or_default() {
            "message-start" => self.ensure_started(out, v["id"].as_str()),
            "content-delta" => {
                self.ensure_started(out, None);
                if let Some(text) = delta["content"]["text"].as_str() {
                    self.state.writer.content(out, text);
                    self.state.output_seen = true;
                }
            }
            "tool-call-start" => {
                self.ensure_started(out, None);
                let call = &delta["tool_calls"];
                let k = self.calls;
                self.calls += 1;
                let args = call["function"]["arguments"].as_str().unwrap_or("");
                self.state.writer.tool_call(
                    out,
                    k,
                    call["id"].as_str().unwrap_or_default(),
                    call["function"]["name"].as_str().unwrap_or_default(),
                    args,
                );
                self.state.output_seen = true;
            }
            "tool-call-delta" => {
                if let (Some(k), Some(fragment)) = (
                    self.calls.checked_sub(1),
                    delta["tool_calls"]["function"]["arguments"].as_str(),
                ) && !fragment.is_empty()
                {
                    self.state.writer.tool_arguments(out, k, fragment);
                }
            }
            "message-end" => {
                self.ensure_started(out, None);
                let d = &v["delta"];
                if d.get("usage").is_some() {
                    self.state.tokens = Some(tokens(&d["usage"]));
                }
                let reason = d["finish_reason"].as_str().unwrap_or("COMPLETE");
                match finish_reason(reason) {
                    Some(finish) => {
                        self.state.output_seen = true;
                        self.state.finish(out, finish);
                        self.state.end(out, self.opts.include_usage, finish);
                    }
                    None => self.state.fail(
                        out,
                        &ApiError::bad_gateway(format!(
                            "cohere ended the generation with {reason}"
                        )),
                    ),
                }
            }
            _ => {} // tool-plan-delta, citations, content-start/end...
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{fixture, obj, split_invariant, target_for};

    fn opts(include_usage: bool) -> DecodeOptions {
        DecodeOptions {
            model_override: None,
            fallback_model: "command-r".into(),
            created: 1_700_000_000,
            include_usage,
            max_event_bytes: crate::providers::translate::DEFAULT_MAX_EVENT_BYTES,
        }
    }

    #[test]
    fn request_uses_cohere_names_and_the_endpoint_as_configured() {
        let (base, headers) = target_for("https://api.cohere.com/v2/chat");
        let target = Target::new(super::super::Wire::Cohere, &base, "command-r", &headers);
        let req = ChatRequest::read(obj(json!({
            "messages": [
                {"role": "system", "content": "terse"},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "18C"}
            ],
            "top_p": 0.5, "stop": "END", "tool_choice": "required", "top_k": 3,
            "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]
        })))
        .unwrap();
        let up = encode(req, &target).unwrap();
        assert_eq!(up.target, "/v2/chat");
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(sent["p"], 0.5);
        assert_eq!(sent["k"], 3);
        assert_eq!(sent["stop_sequences"], json!(["END"]));
        assert_eq!(sent["tool_choice"], "REQUIRED");
        assert_eq!(
            sent["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            sent["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "18C"})
        );
    }

    #[test]
    fn response_maps_text_tools_and_usage() {
        let body = br#"{"id":"c-1","finish_reason":"TOOL_CALL","message":{"role":"assistant","tool_plan":"I will call w","tool_calls":[{"id":"w_1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Paris\"}"}}]},"usage":{"billed_units":{"input_tokens":10,"output_tokens":5},"tokens":{"input_tokens":200,"output_tokens":20}}}"#;
        let (out, usage) = decode(body, &opts(false)).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "c-1");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["id"], "w_1");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (200, 20));
    }

    fn run_stream(chunks: &[&[u8]], include_usage: bool) -> String {
        let mut d = StreamDecoder::new(opts(include_usage));
        let mut out = BytesMut::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn stream_events_become_openai_chunks() {
        let out = run_stream(&[fixture("cohere/chat_stream.sse").as_bytes()], true);
        assert_eq!(out, fixture("cohere/chat_stream_openai.sse"));
    }

    #[test]
    fn stream_decodes_the_same_at_every_split() {
        split_invariant(fixture("cohere/chat_stream.sse").as_bytes(), |c| {
            run_stream(c, true)
        });
    }
}
