//! What every translating codec (Anthropic, Gemini, Ollama, Cohere) shares: reading an OpenAI
//! chat request into a provider-neutral form, the parameter policy (`drop_params`), and writing
//! OpenAI responses and stream chunks. Pure functions, called by the forwarder inside Pingora's
//! `request_filter` when it encodes an attempt and decodes the answer.
//!
//! Rules come from `providers.md` section 8: system and developer messages are hoisted in
//! order; consecutive tool results merge into one user turn; tool arguments travel as JSON
//! objects upstream and as compact JSON strings to the client; usage details are omitted when
//! zero.

use filters::ApiError;
use serde_json::{Map, Value};

pub use super::translated_stream::{DEFAULT_MAX_EVENT_BYTES, Lines, SseEvents, event_too_large};
pub use crate::config::ParamPolicy;
// The response and error halves of translation, under their old paths.
pub use super::openai_response::*;
pub use super::provider_error::*;

/// Every request parameter of OpenAI's chat API. A parameter outside this list is provider
/// specific and goes upstream unchanged (LiteLLM's behaviour for e.g. `top_k`, `thinking`).
pub const OPENAI_CHAT_PARAMS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_completion_tokens",
    "max_tokens",
    "n",
    "stop",
    "seed",
    "user",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "reasoning_effort",
    "metadata",
    "store",
    "service_tier",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "functions",
    "function_call",
];

impl ParamPolicy {
    /// Removes `always_drop` and every OpenAI parameter the provider does not support from
    /// `body`: refused with 400 naming it unless `drop_unsupported`. A parameter whose value is
    /// null, or equals OpenAI's default where the provider has no such knob (`n: 1`,
    /// `logprobs: false`, `parallel_tool_calls: true`, `store: false`), is harmless and dropped.
    pub fn apply(
        &self,
        body: &mut Map<String, Value>,
        supported: &[&str],
        provider: &str,
    ) -> Result<(), ApiError> {
        for name in &self.always_drop {
            body.remove(name);
        }
        let unsupported: Vec<String> = body
            .keys()
            .filter(|k| {
                OPENAI_CHAT_PARAMS.contains(&k.as_str()) && !supported.contains(&k.as_str())
            })
            .cloned()
            .collect();
        for name in unsupported {
            let value = body.remove(&name).unwrap_or(Value::Null);
            let harmless = match (name.as_str(), &value) {
                (_, Value::Null) => true,
                ("n", v) => v.as_u64() == Some(1),
                ("logprobs" | "store", v) => v.as_bool() == Some(false),
                ("parallel_tool_calls", v) => v.as_bool() == Some(true),
                _ => false,
            };
            if !harmless && !self.drop_unsupported {
                return Err(ApiError::bad_request(format!(
                    "{provider} does not support parameters: ['{name}']. To drop unsupported parameters, set `litellm_settings: {{drop_params: true}}` or `drop_params: true` on the deployment"
                ))
                .with_param(name)
                .with_code("unsupported_params"));
            }
        }
        Ok(())
    }
}

/// A piece of user content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text, with its `cache_control` if the client set one (Anthropic prompt caching).
    Text {
        text: String,
        cache_control: Option<Value>,
    },
    Image(Image),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// A `data:` URL, split.
    Inline { mime: String, data: String },
    /// An `http(s)://` (or `gs://`) URL.
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON object (parsed from OpenAI's string).
    pub arguments: Value,
}

/// One OpenAI message in provider-neutral form.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    System {
        text: String,
        cache_control: Option<Value>,
    },
    User(Vec<Part>),
    Assistant {
        text: Option<String>,
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        call_id: String,
        /// The function name, looked up from the assistant's call with the same id.
        name: String,
        content: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { name: String, schema: Value },
}

/// Where a provider puts OpenAI's sampling parameters; `None`: it has no such field (or the
/// codec maps it itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct SamplingKeys {
    pub max_tokens: Option<&'static str>,
    pub temperature: Option<&'static str>,
    /// Upper end of the provider's temperature range (values are clamped, not scaled: 8.9).
    pub temperature_max: Option<f64>,
    pub top_p: Option<&'static str>,
    pub stop: Option<&'static str>,
    pub seed: Option<&'static str>,
    pub frequency_penalty: Option<&'static str>,
    pub presence_penalty: Option<&'static str>,
}

/// Appends `items` as a `role` turn, joining the previous turn when it has the same role: the
/// providers that need strict user/assistant alternation (Anthropic, Gemini, Bedrock) get tool
/// results and a following user message in one turn.
pub fn push_turn<T>(turns: &mut Vec<(&'static str, Vec<T>)>, role: &'static str, items: Vec<T>) {
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(items),
        _ => turns.push((role, items)),
    }
}

/// The OpenAI chat request, read once for a translating codec.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub n: Option<u64>,
    pub user: Option<String>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    /// `reasoning_effort` (Anthropic turns it into a thinking budget).
    pub reasoning_effort: Option<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Parameters that are not OpenAI's: forwarded to the provider as they are.
    pub extra: Map<String, Value>,
}

impl ChatRequest {
    /// Reads an OpenAI chat request. `body` must already have passed [`ParamPolicy::apply`].
    pub fn read(mut body: Map<String, Value>) -> Result<ChatRequest, ApiError> {
        let mut req = ChatRequest::default();
        let messages = match body.remove("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => {
                return Err(bad(
                    "messages must contain at least one message",
                    "messages",
                ));
            }
            Some(_) => return Err(bad("messages must be an array", "messages")),
            None => return Err(bad("messages is required", "messages")),
        };
        req.messages = read_messages(&messages)?;
        req.max_tokens = body
            .remove("max_completion_tokens")
            .filter(|v| !v.is_null())
            .or_else(|| body.remove("max_tokens"))
            .map(|v| uint(&v, "max_tokens"))
            .transpose()?;
        body.remove("max_tokens");
        req.temperature = number(body.remove("temperature"), "temperature")?;
        req.top_p = number(body.remove("top_p"), "top_p")?;
        req.frequency_penalty = number(body.remove("frequency_penalty"), "frequency_penalty")?;
        req.presence_penalty = number(body.remove("presence_penalty"), "presence_penalty")?;
        req.stop = match body.remove("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(bad("stop must be a string or a list of strings", "stop")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("stop must be a string or a list of strings", "stop")),
        };
        req.seed = match body.remove("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| bad("seed must be an integer", "seed"))?,
            ),
        };
        req.n = body
            .remove("n")
            .filter(|v| !v.is_null())
            .map(|v| uint(&v, "n"))
            .transpose()?;
        req.user = body
            .remove("user")
            .or_else(|| body.remove("safety_identifier"))
            .and_then(|v| v.as_str().map(str::to_owned));
        body.remove("safety_identifier");
        req.tools = read_tools(body.remove("tools"), body.remove("functions"))?;
        req.tool_choice = read_tool_choice(
            body.remove("tool_choice")
                .or_else(|| body.remove("function_call")),
        )?;
        body.remove("function_call");
        req.parallel_tool_calls = body.remove("parallel_tool_calls").and_then(|v| v.as_bool());
        req.response_format = read_response_format(body.remove("response_format"))?;
        req.reasoning_effort = body
            .remove("reasoning_effort")
            .and_then(|v| v.as_str().map(str::to_owned));
        req.stream = body.remove("stream").and_then(|v| v.as_bool()) == Some(true);
        let options = body.remove("stream_options");
        req.include_usage = req.stream
            && options
                .as_ref()
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                == Some(true);
        body.remove("model");
        // What is left: OpenAI parameters the codec supports but maps itself (none by default)
        // and provider-specific extras.
        req.extra = body
            .into_iter()
            .filter(|(k, _)| !OPENAI_CHAT_PARAMS.contains(&k.as_str()))
            .collect();
        Ok(req)
    }

    /// Writes the sampling parameters the client set under the provider's names (`keys`),
    /// clamping temperature to the provider's range.
    pub fn put_sampling(&self, into: &mut Map<String, Value>, keys: &SamplingKeys) {
        let mut put = |key: Option<&'static str>, value: Option<Value>| {
            if let (Some(key), Some(value)) = (key, value) {
                into.insert(key.into(), value);
            }
        };
        put(keys.max_tokens, self.max_tokens.map(Value::from));
        put(
            keys.temperature,
            self.temperature
                .map(|t| Value::from(keys.temperature_max.map_or(t, |max| t.clamp(0.0, max)))),
        );
        put(keys.top_p, self.top_p.map(Value::from));
        put(
            keys.stop,
            (!self.stop.is_empty()).then(|| Value::from(self.stop.clone())),
        );
        put(keys.seed, self.seed.map(Value::from));
        put(
            keys.frequency_penalty,
            self.frequency_penalty.map(Value::from),
        );
        put(
            keys.presence_penalty,
            self.presence_penalty.map(Value::from),
        );
    }

    /// System and developer messages, in order.
    pub fn system_texts(&self) -> impl Iterator<Item = (&str, Option<&Value>)> {
        self.messages.iter().filter_map(|m| match m {
            Message::System {
                text,
                cache_control,
            } => Some((text.as_str(), cache_control.as_ref())),
            _ => None,
        })
    }
}

fn bad(message: impl Into<String>, param: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).with_param(param)
}

fn uint(v: &Value, name: &str) -> Result<u64, ApiError> {
    v.as_u64()
        .ok_or_else(|| bad(format!("{name} must be a non-negative integer"), name))
}

fn number(v: Option<Value>, name: &str) -> Result<Option<f64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(format!("{name} must be a number"), name)),
    }
}

/// Text of a content value that may only hold text (system, tool, assistant).
fn text_content(content: &Value, path: &str) -> Result<(String, Option<Value>), ApiError> {
    match content {
        Value::Null => Ok((String::new(), None)),
        Value::String(s) => Ok((s.clone(), None)),
        Value::Array(parts) => {
            let mut text = String::new();
            let mut cache = None;
            for (j, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""));
                        if let Some(c) = part.get("cache_control") {
                            cache = Some(c.clone());
                        }
                    }
                    Some("refusal") => {}
                    other => {
                        return Err(bad(
                            format!("content part type {other:?} is not allowed here; only text"),
                            format!("{path}.content[{j}]"),
                        ));
                    }
                }
            }
            Ok((text, cache))
        }
        _ => Err(bad(
            "content must be a string or a list of parts",
            format!("{path}.content"),
        )),
    }
}

fn read_messages(messages: &[Value]) -> Result<Vec<Message>, ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages[{i}]");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("every message needs a role", format!("{path}.role")))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let (text, cache_control) = text_content(content, &path)?;
                out.push(Message::System {
                    text,
                    cache_control,
                });
            }
            "user" => out.push(Message::User(user_parts(content, &path)?)),
            "assistant" => {
                let (text, _) = text_content(content, &path)?;
                let mut tool_calls = Vec::new();
                if let Some(Value::Array(calls)) = m.get("tool_calls") {
                    for (j, call) in calls.iter().enumerate() {
                        let f = &call["function"];
                        let name = f["name"].as_str().unwrap_or_default().to_string();
                        let raw = match &f["arguments"] {
                            // Some clients send the arguments as an object rather than a string.
                            Value::Object(_) => {
                                tool_calls.push(ToolCall {
                                    id: call["id"].as_str().unwrap_or_default().to_string(),
                                    name,
                                    arguments: f["arguments"].clone(),
                                });
                                continue;
                            }
                            other => other.as_str().unwrap_or(""),
                        };
                        let arguments = if raw.trim().is_empty() {
                            Value::Object(Map::new())
                        } else {
                            match serde_json::from_str::<Value>(raw) {
                                Ok(v @ Value::Object(_)) => v,
                                _ => {
                                    return Err(bad(
                                        "tool call arguments must be a JSON object encoded as a string",
                                        format!("{path}.tool_calls[{j}].function.arguments"),
                                    ));
                                }
                            }
                        };
                        tool_calls.push(ToolCall {
                            id: call["id"].as_str().unwrap_or_default().to_string(),
                            name,
                            arguments,
                        });
                    }
                } else if let Some(fc) = m.get("function_call").filter(|v| v.is_object()) {
                    let name = fc["name"].as_str().unwrap_or_default().to_string();
                    let arguments = serde_json::from_str(fc["arguments"].as_str().unwrap_or("{}"))
                        .unwrap_or(Value::Object(Map::new()));
                    tool_calls.push(ToolCall {
                        id: format!("call_{name}"),
                        name,
                        arguments,
                    });
                }
                out.push(Message::Assistant {
                    text: (!text.is_empty()).then_some(text),
                    tool_calls,
                });
            }
            "tool" | "function" => {
                let (content, _) = text_content(content, &path)?;
                let call_id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| {
                        m.get("name")
                            .and_then(Value::as_str)
                            .map(|n| format!("call_{n}"))
                    })
                    .ok_or_else(|| {
                        bad(
                            "tool messages need tool_call_id",
                            format!("{path}.tool_call_id"),
                        )
                    })?;
                let name = m
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| lookup_call_name(&out, &call_id))
                    .unwrap_or_default();
                out.push(Message::Tool {
                    call_id,
                    name,
                    content,
                });
            }
            other => {
                return Err(bad(
                    format!(
                        "unknown role {other:?}; expected system, developer, user, assistant or tool"
                    ),
                    format!("{path}.role"),
                ));
            }
        }
    }
    Ok(out)
}

fn lookup_call_name(before: &[Message], call_id: &str) -> Option<String> {
    before.iter().rev().find_map(|m| match m {
        Message::Assistant { tool_calls, .. } => tool_calls
            .iter()
            .find(|c| c.id == call_id)
            .map(|c| c.name.clone()),
        _ => None,
    })
}

fn user_parts(content: &Value, path: &str) -> Result<Vec<Part>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![Part::Text {
            text: s.clone(),
            cache_control: None,
        }]),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let at = format!("{path}.content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(Part::Text {
                        text: part["text"].as_str().unwrap_or_default().to_string(),
                        cache_control: part.get("cache_control").cloned(),
                    }),
                    Some("image_url") => {
                        let url = part["image_url"]
                            .get("url")
                            .and_then(Value::as_str)
                            .or_else(|| part["image_url"].as_str())
                            .ok_or_else(|| bad("image_url needs a url", &at))?;
                        out.push(Part::Image(parse_image(url, &at)?));
                    }
                    other => {
                        return Err(bad(
                            format!("content part type {other:?} cannot be sent to this provider"),
                            at,
                        ));
                    }
                }
            }
            Ok(out)
        }
        Value::Null => Ok(Vec::new()),
        _ => Err(bad(
            "content must be a string or a list of parts",
            format!("{path}.content"),
        )),
    }
}

fn parse_image(url: &str, at: &str) -> Result<Image, ApiError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("malformed data: URL", at))?;
        let mime = meta.strip_suffix(";base64").ok_or_else(|| {
            bad(
                "data: URLs must be base64 encoded (data:<mime>;base64,...)",
                at,
            )
        })?;
        return Ok(Image::Inline {
            mime: mime.to_string(),
            data: data.to_string(),
        });
    }
    Ok(Image::Url(url.to_string()))
}

fn read_tools(tools: Option<Value>, functions: Option<Value>) -> Result<Vec<ToolDef>, ApiError> {
    let mut out = Vec::new();
    if let Some(Value::Array(items)) = tools {
        for (i, t) in items.iter().enumerate() {
            match t.get("type").and_then(Value::as_str) {
                Some("function") | None => {}
                Some(other) => {
                    return Err(bad(
                        format!("tool type {other:?} has no equivalent on this provider"),
                        format!("tools[{i}].type"),
                    ));
                }
            }
            let f = &t["function"];
            let name = f["name"].as_str().ok_or_else(|| {
                bad(
                    "every tool needs function.name",
                    format!("tools[{i}].function.name"),
                )
            })?;
            out.push(ToolDef {
                name: name.to_string(),
                description: f["description"].as_str().map(str::to_owned),
                parameters: f.get("parameters").filter(|p| !p.is_null()).cloned(),
                strict: f["strict"].as_bool(),
            });
        }
    }
    if let Some(Value::Array(items)) = functions {
        for f in &items {
            if let Some(name) = f["name"].as_str() {
                out.push(ToolDef {
                    name: name.to_string(),
                    description: f["description"].as_str().map(str::to_owned),
                    parameters: f.get("parameters").cloned(),
                    strict: None,
                });
            }
        }
    }
    Ok(out)
}

fn read_tool_choice(v: Option<Value>) -> Result<Option<ToolChoice>, ApiError> {
    Ok(match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" | "any" => ToolChoice::Required,
            other => {
                return Err(bad(
                    format!("tool_choice {other:?} is not one of auto, none, required"),
                    "tool_choice",
                ));
            }
        }),
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .or_else(|| v.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice must name a function", "tool_choice"))?;
            Some(ToolChoice::Function(name.to_string()))
        }
    })
}

fn read_response_format(v: Option<Value>) -> Result<Option<ResponseFormat>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    Ok(Some(match v.get("type").and_then(Value::as_str) {
        Some("text") => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some("json_schema") => {
            let js = &v["json_schema"];
            ResponseFormat::JsonSchema {
                name: js["name"].as_str().unwrap_or("json_response").to_string(),
                schema: js
                    .get("schema")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            }
        }
        _ => {
            return Err(bad(
                "response_format.type must be text, json_object or json_schema",
                "response_format",
            ));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn unsupported_params_are_refused_by_name_unless_dropped() {
        let policy = ParamPolicy::default();
        let mut body =
            obj(json!({"model": "m", "messages": [], "logit_bias": {"1": 2}, "top_k": 5}));
        let e = policy
            .apply(&mut body, &["model", "messages"], "anthropic")
            .unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.param.as_deref(), Some("logit_bias"));
        assert!(e.message.contains("drop_params"), "{}", e.message);

        let dropping = ParamPolicy {
            drop_unsupported: true,
            always_drop: vec!["top_k".into()],
        };
        let mut body = obj(json!({"model": "m", "logit_bias": {"1": 2}, "top_k": 5, "n": 1}));
        dropping.apply(&mut body, &["model"], "x").unwrap();
        assert_eq!(Value::Object(body), json!({"model": "m"}));

        // Defaults are harmless even without drop_params.
        let mut body = obj(json!({"model": "m", "n": 1, "logprobs": false, "seed": null}));
        policy.apply(&mut body, &["model"], "x").unwrap();
    }

    #[test]
    fn reads_messages_tools_and_looks_up_tool_names() {
        let req = ChatRequest::read(obj(json!({
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}
            ],
            "max_tokens": 10, "stop": "END", "stream": true, "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "top_k": 3
        })))
        .unwrap();
        assert_eq!(req.messages.len(), 4);
        assert_eq!(
            req.messages[3],
            Message::Tool {
                call_id: "c1".into(),
                name: "f".into(),
                content: "ok".into()
            }
        );
        assert_eq!(
            req.messages[1],
            Message::User(vec![
                Part::Text {
                    text: "hi".into(),
                    cache_control: None
                },
                Part::Image(Image::Inline {
                    mime: "image/png".into(),
                    data: "AAA".into()
                })
            ])
        );
        assert_eq!(req.max_tokens, Some(10));
        assert_eq!(req.stop, vec!["END"]);
        assert!(req.include_usage);
        assert_eq!(req.tool_choice, Some(ToolChoice::Function("f".into())));
        assert_eq!(req.extra.get("top_k"), Some(&json!(3)));
    }

    #[test]
    fn bad_tool_arguments_name_their_path() {
        let e = ChatRequest::read(obj(json!({"messages": [
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}
        ]})))
        .unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
    }

    #[test]
    fn error_classes_follow_the_routing_table() {
        use ErrorClass::*;
        let class =
            |status: u16, failure: ProviderFailure<'_>| classify(&upstream_error(status, failure));
        assert_eq!(class(429, ProviderFailure::default()), RateLimited);
        assert_eq!(
            class(529, ProviderFailure::default()),
            RateLimited,
            "Anthropic overloaded"
        );
        assert_eq!(class(503, ProviderFailure::default()), Unavailable);
        assert_eq!(class(500, ProviderFailure::default()), Unavailable);
        assert_eq!(class(504, ProviderFailure::default()), Timeout);
        assert_eq!(class(401, ProviderFailure::default()), Auth);
        assert_eq!(class(400, ProviderFailure::default()), BadRequest);
        assert_eq!(
            class(
                400,
                ProviderFailure {
                    context_window: true,
                    ..Default::default()
                }
            ),
            ContextWindowExceeded
        );
        assert_eq!(
            class(
                400,
                ProviderFailure {
                    content_policy: true,
                    ..Default::default()
                }
            ),
            ContentPolicy
        );
        assert_eq!(
            class(
                429,
                ProviderFailure {
                    quota: true,
                    code: Some("insufficient_quota"),
                    ..Default::default()
                }
            ),
            QuotaExhausted
        );
        assert!(RateLimited.retryable() && Unavailable.retryable() && Timeout.retryable());
        assert!(
            !ContextWindowExceeded.retryable() && !Auth.retryable() && !ContentPolicy.retryable()
        );
        // OpenAI-compatible bodies, passed through as they are.
        assert_eq!(
            classify_openai_body(400, br#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#),
            ContextWindowExceeded
        );
        assert_eq!(
            classify_openai_body(400, br#"{"object":"error","message":"This model's maximum context length is 16384 tokens. However, you requested 19591 tokens","type":"BadRequestError","param":null,"code":400}"#),
            ContextWindowExceeded,
            "old vLLM shape"
        );
        assert_eq!(
            classify_openai_body(400, br#"{"error":{"message":"The response was filtered","type":null,"param":"prompt","code":"content_filter","status":400}}"#),
            ContentPolicy,
            "Azure content filter"
        );
        assert_eq!(
            classify_openai_body(429, br#"{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}"#),
            QuotaExhausted
        );
    }

    #[test]
    fn usage_omits_zero_details() {
        let mut s = String::new();
        Tokens {
            prompt: 1436,
            completion: 11,
            total: 1447,
            cached: 1024,
            ..Tokens::default()
        }
        .write_json(&mut s);
        assert_eq!(
            s,
            r#"{"prompt_tokens":1436,"completion_tokens":11,"total_tokens":1447,"prompt_tokens_details":{"cached_tokens":1024}}"#
        );
    }

    #[test]
    fn sse_events_survive_any_split() {
        let stream =
            "event: a\ndata: {\"x\":1}\n\n: comment\n\ndata: line1\ndata: line2\r\n\r\ndata: tail";
        let collect = |chunks: &[&[u8]]| {
            let mut events = SseEvents::default();
            let mut got = Vec::new();
            for c in chunks {
                events.feed(c, |n, d| got.push((n.to_string(), d.to_string())));
            }
            events.finish(|n, d| got.push((n.to_string(), d.to_string())));
            got
        };
        let whole = collect(&[stream.as_bytes()]);
        assert_eq!(
            whole,
            vec![
                ("a".to_string(), "{\"x\":1}".to_string()),
                (String::new(), "line1\nline2".to_string()),
                (String::new(), "tail".to_string())
            ]
        );
        let b = stream.as_bytes();
        for cut in 0..=b.len() {
            assert_eq!(collect(&[&b[..cut], &b[cut..]]), whole, "cut at {cut}");
        }
    }
}
