//! The mock's non-OpenAI wire formats: Anthropic Messages, Gemini, Ollama native, Cohere v2 and
//! Azure OpenAI's URLs, each validating what the real API requires (headers, fields) and
//! answering 400 in that API's own error shape when something is missing, as the real one does.

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

/// Which provider API a request path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Anthropic,
    Gemini {
        stream: bool,
    },
    OllamaChat,
    OllamaGenerate,
    Cohere,
    /// Azure's `/openai/deployments/{d}/...`; answered in OpenAI's format after its checks.
    Azure,
    /// Bedrock Converse / ConverseStream (`/model/{id}/converse[-stream]`), SigV4 checked for form.
    Bedrock {
        stream: bool,
    },
    /// Gemini `batchEmbedContents`.
    GeminiEmbed,
    /// Ollama `/api/embed`.
    OllamaEmbed,
    /// Bedrock `invoke` of an embedding model (Titan or Cohere body).
    BedrockInvoke,
}

impl Format {
    pub fn of(method: &str, path: &str) -> Option<Format> {
        if method != "POST" {
            return None;
        }
        if path == "/v1/messages" {
            return Some(Format::Anthropic);
        }
        if let Some(rest) = path.strip_prefix("/model/") {
            if rest.ends_with("/converse") {
                return Some(Format::Bedrock { stream: false });
            }
            if rest.ends_with("/converse-stream") {
                return Some(Format::Bedrock { stream: true });
            }
            if rest.ends_with("/invoke") {
                return Some(Format::BedrockInvoke);
            }
        }
        if path.contains("/models/") {
            if path.ends_with(":generateContent") {
                return Some(Format::Gemini { stream: false });
            }
            if path.ends_with(":streamGenerateContent") {
                return Some(Format::Gemini { stream: true });
            }
            if path.ends_with(":batchEmbedContents") {
                return Some(Format::GeminiEmbed);
            }
        }
        match path {
            "/api/chat" => Some(Format::OllamaChat),
            "/api/generate" => Some(Format::OllamaGenerate),
            "/api/embed" => Some(Format::OllamaEmbed),
            "/v2/chat" => Some(Format::Cohere),
            p if p.starts_with("/openai/deployments/") => Some(Format::Azure),
            "/openai/responses" | "/openai/v1/responses" => Some(Format::Azure),
            _ => None,
        }
    }

    /// The chat format whose headers, errors and checks an embedding format shares.
    pub fn family(self) -> Format {
        match self {
            Format::GeminiEmbed => Format::Gemini { stream: false },
            Format::OllamaEmbed => Format::OllamaGenerate,
            Format::BedrockInvoke => Format::Bedrock { stream: false },
            other => other,
        }
    }

    pub fn is_embedding(self) -> bool {
        matches!(
            self,
            Format::GeminiEmbed | Format::OllamaEmbed | Format::BedrockInvoke
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Anthropic => "anthropic",
            Format::Gemini { .. } => "gemini",
            Format::OllamaChat | Format::OllamaGenerate => "ollama",
            Format::Cohere => "cohere",
            Format::Azure => "azure",
            Format::Bedrock { .. } | Format::BedrockInvoke => "bedrock",
            Format::GeminiEmbed => "gemini",
            Format::OllamaEmbed => "ollama",
        }
    }
}

/// Bedrock's error type for a status (sent in `x-amzn-ErrorType`).
pub fn bedrock_error_type(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// A request that the real API would refuse: status and body in its error format.
pub struct Refusal {
    pub status: StatusCode,
    pub body: Value,
}

/// The provider's error body for a status and message.
pub fn error_body(format: Format, status: u16, message: &str) -> Value {
    let format = format.family();
    match format {
        Format::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"})
        }
        Format::Gemini { .. } => {
            let rpc = match status {
                400 => "INVALID_ARGUMENT",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                _ => "INTERNAL",
            };
            json!({"error": {"code": status, "message": message, "status": rpc, "details": []}})
        }
        Format::OllamaChat | Format::OllamaGenerate => json!({"error": message}),
        Format::Cohere => json!({"id": "mock-error", "message": message}),
        Format::Azure => {
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": status.to_string()}})
        }
        Format::Bedrock { .. }
        | Format::GeminiEmbed
        | Format::OllamaEmbed
        | Format::BedrockInvoke => json!({"message": message}),
    }
}

fn refuse(format: Format, status: u16, message: &str) -> Refusal {
    Refusal {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body: error_body(format, status, message),
    }
}

/// Checks what the real API checks before generating anything.
pub fn validate(
    format: Format,
    headers: &std::collections::HashMap<String, String>,
    query: &str,
    request: &Value,
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).filter(|v| !v.is_empty());
    match format {
        Format::GeminiEmbed => {
            if header("x-goog-api-key").is_none() && !query.contains("key=") {
                return Err(refuse(
                    format,
                    403,
                    "Method doesn't allow unregistered callers",
                ));
            }
            if !request["requests"].is_array() {
                return Err(refuse(
                    format,
                    400,
                    "* BatchEmbedContentsRequest.requests: requests is required",
                ));
            }
            return Ok(());
        }
        Format::OllamaEmbed => {
            if request.get("input").is_none() {
                return Err(refuse(format, 400, "input is required"));
            }
            return Ok(());
        }
        Format::BedrockInvoke => {
            let auth = header("authorization").map(String::as_str).unwrap_or("");
            if !auth.starts_with("Bearer ") && !well_formed_sigv4(auth, "bedrock") {
                return Err(refuse(
                    format,
                    403,
                    "The request signature we calculated does not match the signature you provided (mock: malformed or missing SigV4 Authorization header)",
                ));
            }
            if request.get("inputText").is_none() && request.get("texts").is_none() {
                return Err(refuse(
                    format,
                    400,
                    "Malformed input request: required key [inputText] not found",
                ));
            }
            return Ok(());
        }
        _ => {}
    }
    match format {
        Format::GeminiEmbed | Format::OllamaEmbed | Format::BedrockInvoke => {}
        Format::Anthropic => {
            if header("x-api-key").is_none() && header("authorization").is_none() {
                return Err(refuse(format, 401, "x-api-key header is required"));
            }
            if header("anthropic-version").is_none() {
                return Err(refuse(format, 400, "anthropic-version: header is required"));
            }
            for field in ["model", "max_tokens", "messages"] {
                if request.get(field).is_none() {
                    return Err(refuse(format, 400, &format!("{field}: Field required")));
                }
            }
            for (i, m) in request["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                match m["role"].as_str() {
                    Some("user" | "assistant") => {}
                    other => {
                        return Err(refuse(
                            format,
                            400,
                            &format!(
                                "messages.{i}.role: Input should be 'user' or 'assistant', got {other:?}"
                            ),
                        ));
                    }
                }
            }
        }
        Format::Gemini { stream } => {
            if header("x-goog-api-key").is_none() && !query.contains("key=") {
                return Err(refuse(
                    format,
                    403,
                    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                ));
            }
            if stream && !query.split('&').any(|p| p == "alt=sse") {
                return Err(refuse(format, 400, "mock: streaming requires alt=sse"));
            }
            if !request["contents"].is_array() {
                return Err(refuse(
                    format,
                    400,
                    "* GenerateContentRequest.contents: contents is not specified",
                ));
            }
        }
        Format::OllamaChat => {
            if request.get("model").is_none() {
                return Err(refuse(format, 400, "model is required"));
            }
            if !request["messages"].is_array() {
                return Err(refuse(format, 400, "messages is required"));
            }
        }
        Format::OllamaGenerate => {
            if request.get("model").is_none() {
                return Err(refuse(format, 400, "model is required"));
            }
        }
        Format::Cohere => {
            let auth = header("authorization").map(String::as_str).unwrap_or("");
            if !auth.starts_with("Bearer ") || auth.len() <= 7 {
                return Err(refuse(format, 401, "no api key supplied"));
            }
            for field in ["model", "messages"] {
                if request.get(field).is_none() {
                    return Err(refuse(
                        format,
                        400,
                        &format!("invalid request: {field} is required"),
                    ));
                }
            }
        }
        Format::Bedrock { .. } => {
            let auth = header("authorization").map(String::as_str).unwrap_or("");
            if !auth.starts_with("Bearer ") {
                if !well_formed_sigv4(auth, "bedrock") {
                    return Err(refuse(
                        format,
                        403,
                        "The request signature we calculated does not match the signature you provided (mock: malformed or missing SigV4 Authorization header)",
                    ));
                }
                if header("x-amz-date").is_none() {
                    return Err(refuse(format, 403, "Missing X-Amz-Date"));
                }
            }
            if !request["messages"].is_array() {
                return Err(refuse(
                    format,
                    400,
                    "1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null",
                ));
            }
        }
        Format::Azure => {
            if header("api-key").is_none() && header("authorization").is_none() {
                return Err(refuse(
                    format,
                    401,
                    "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
                ));
            }
            if !query
                .split('&')
                .any(|p| p.starts_with("api-version=") && p.len() > 12)
            {
                return Err(refuse(format, 404, "Resource not found"));
            }
        }
    }
    Ok(())
}

/// `AWS4-HMAC-SHA256 Credential=<akid>/<yyyymmdd>/<region>/<service>/aws4_request,
/// SignedHeaders=<...host...;x-amz-date...>, Signature=<64 hex>`.
fn well_formed_sigv4(auth: &str, service: &str) -> bool {
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return false;
    };
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(", ") {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return false,
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return false;
    };
    let scope: Vec<&str> = credential.split('/').collect();
    scope.len() == 5
        && scope[1].len() == 8
        && scope[3] == service
        && scope[4] == "aws4_request"
        && signed.split(';').any(|h| h == "host")
        && signed.split(';').any(|h| h == "x-amz-date")
        && signature.len() == 64
        && signature.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the mock answers: text words, or one tool call.
pub struct Answer<'a> {
    pub id: String,
    pub model: &'a str,
    pub words: Vec<String>,
    pub tool_call: Option<(String, Value)>,
    pub prompt_tokens: u64,
}

impl Answer<'_> {
    fn text(&self) -> String {
        self.words.concat()
    }

    fn completion_tokens(&self) -> u64 {
        if self.tool_call.is_some() {
            5
        } else {
            self.words.len() as u64
        }
    }

    /// The complete (non-streamed) body.
    pub fn body(&self, format: Format) -> Value {
        let out = self.completion_tokens();
        let prompt = self.prompt_tokens;
        match format {
            Format::Anthropic => {
                let content = match &self.tool_call {
                    Some((name, args)) => {
                        json!([{"type": "tool_use", "id": "toolu_mock1", "name": name, "input": args}])
                    }
                    None => json!([{"type": "text", "text": self.text()}]),
                };
                json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": content,
                    "stop_reason": if self.tool_call.is_some() { "tool_use" } else { "end_turn" },
                    "stop_sequence": null,
                    "usage": {"input_tokens": prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": out}})
            }
            Format::Gemini { .. } => {
                let parts = match &self.tool_call {
                    Some((name, args)) => json!([{"functionCall": {"name": name, "args": args}}]),
                    None => json!([{"text": self.text()}]),
                };
                json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out},
                    "modelVersion": self.model, "responseId": self.id})
            }
            Format::OllamaChat | Format::OllamaGenerate => {
                let mut v = json!({"model": self.model, "created_at": "2024-01-01T00:00:00Z", "done": true, "done_reason": "stop",
                    "total_duration": 1000, "prompt_eval_count": prompt, "eval_count": out});
                if format == Format::OllamaGenerate {
                    v["response"] = self.text().into();
                } else {
                    v["message"] = match &self.tool_call {
                        Some((name, args)) => {
                            json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": args}}]})
                        }
                        None => json!({"role": "assistant", "content": self.text()}),
                    };
                }
                v
            }
            Format::Cohere => {
                let message = match &self.tool_call {
                    Some((name, args)) => {
                        json!({"role": "assistant", "tool_plan": "calling", "tool_calls": [
                        {"id": "call_mock1", "type": "function", "function": {"name": name, "arguments": args.to_string()}}]})
                    }
                    None => {
                        json!({"role": "assistant", "content": [{"type": "text", "text": self.text()}]})
                    }
                };
                json!({"id": self.id, "finish_reason": if self.tool_call.is_some() { "TOOL_CALL" } else { "COMPLETE" },
                    "message": message,
                    "usage": {"billed_units": {"input_tokens": prompt, "output_tokens": out}, "tokens": {"input_tokens": prompt, "output_tokens": out}}})
            }
            Format::Bedrock { .. } => {
                let content = match &self.tool_call {
                    Some((name, args)) => {
                        json!([{"toolUse": {"toolUseId": "tooluse_mock1", "name": name, "input": args}}])
                    }
                    None => json!([{"text": self.text()}]),
                };
                json!({"output": {"message": {"role": "assistant", "content": content}},
                    "stopReason": if self.tool_call.is_some() { "tool_use" } else { "end_turn" },
                    "usage": {"inputTokens": prompt, "outputTokens": out, "totalTokens": prompt + out},
                    "metrics": {"latencyMs": 1}})
            }
            Format::Azure | Format::GeminiEmbed | Format::OllamaEmbed | Format::BedrockInvoke => {
                Value::Null
            }
        }
    }

    /// The streamed frames, in the provider's framing.
    pub fn frames(&self, format: Format) -> Vec<Bytes> {
        let out = self.completion_tokens();
        let prompt = self.prompt_tokens;
        let sse =
            |event: &str, data: Value| Bytes::from(format!("event: {event}\ndata: {data}\n\n"));
        let data = |v: Value| Bytes::from(format!("data: {v}\n\n"));
        let line = |v: Value| Bytes::from(format!("{v}\n"));
        let mut frames = Vec::new();
        match format {
            Format::Anthropic => {
                frames.push(sse("message_start", json!({"type": "message_start", "message": {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": prompt, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}}})));
                frames.push(sse("ping", json!({"type": "ping"})));
                match &self.tool_call {
                    Some((name, args)) => {
                        frames.push(sse("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_mock1", "name": name, "input": {}}})));
                        let text = args.to_string();
                        let (a, b) = text.split_at(text.len() / 2);
                        for part in ["", a, b] {
                            frames.push(sse("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": part}})));
                        }
                    }
                    None => {
                        frames.push(sse("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
                        for w in &self.words {
                            frames.push(sse("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})));
                        }
                    }
                }
                frames.push(sse(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ));
                let stop = if self.tool_call.is_some() {
                    "tool_use"
                } else {
                    "end_turn"
                };
                frames.push(sse("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": out}})));
                frames.push(sse("message_stop", json!({"type": "message_stop"})));
            }
            Format::Gemini { .. } => {
                let n = self.words.len();
                match &self.tool_call {
                    Some((name, args)) => frames.push(data(json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name, "args": args}}]}, "finishReason": "STOP", "index": 0}],
                        "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": out, "totalTokenCount": prompt + out}, "modelVersion": self.model, "responseId": self.id}))),
                    None => {
                        for (i, w) in self.words.iter().enumerate() {
                            let mut chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": w}]}, "index": 0}],
                                "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": i + 1, "totalTokenCount": prompt + i as u64 + 1},
                                "modelVersion": self.model, "responseId": self.id});
                            if i + 1 == n {
                                chunk["candidates"][0]["finishReason"] = "STOP".into();
                            }
                            frames.push(data(chunk));
                        }
                    }
                }
            }
            Format::OllamaChat | Format::OllamaGenerate => {
                let generate = format == Format::OllamaGenerate;
                match &self.tool_call {
                    Some((name, args)) if !generate => frames.push(line(json!({"model": self.model, "created_at": "2024-01-01T00:00:00Z",
                        "message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": args}}]}, "done": false}))),
                    _ => {
                        for w in &self.words {
                            frames.push(line(if generate {
                                json!({"model": self.model, "created_at": "2024-01-01T00:00:00Z", "response": w, "done": false})
                            } else {
                                json!({"model": self.model, "created_at": "2024-01-01T00:00:00Z", "message": {"role": "assistant", "content": w}, "done": false})
                            }));
                        }
                    }
                }
                let mut last = json!({"model": self.model, "created_at": "2024-01-01T00:00:01Z", "done": true, "done_reason": "stop",
                    "total_duration": 1000, "prompt_eval_count": prompt, "eval_count": out});
                if generate {
                    last["response"] = "".into();
                } else {
                    last["message"] = json!({"role": "assistant", "content": ""});
                }
                frames.push(line(last));
            }
            Format::Cohere => {
                frames.push(sse("message-start", json!({"id": self.id, "type": "message-start", "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}})));
                match &self.tool_call {
                    Some((name, args)) => {
                        frames.push(sse("tool-plan-delta", json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "calling"}}})));
                        frames.push(sse("tool-call-start", json!({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {"id": "call_mock1", "type": "function", "function": {"name": name, "arguments": ""}}}}})));
                        frames.push(sse("tool-call-delta", json!({"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": args.to_string()}}}}})));
                        frames.push(sse(
                            "tool-call-end",
                            json!({"type": "tool-call-end", "index": 0}),
                        ));
                    }
                    None => {
                        frames.push(sse("content-start", json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
                        for w in &self.words {
                            frames.push(sse("content-delta", json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": w}}}})));
                        }
                        frames.push(sse(
                            "content-end",
                            json!({"type": "content-end", "index": 0}),
                        ));
                    }
                }
                let reason = if self.tool_call.is_some() {
                    "TOOL_CALL"
                } else {
                    "COMPLETE"
                };
                frames.push(sse("message-end", json!({"type": "message-end", "delta": {"finish_reason": reason,
                    "usage": {"billed_units": {"input_tokens": prompt, "output_tokens": out}, "tokens": {"input_tokens": prompt, "output_tokens": out}}}})));
                frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Format::Bedrock { .. } => {
                frames.push(bedrock_event("messageStart", json!({"role": "assistant"})));
                match &self.tool_call {
                    Some((name, args)) => {
                        frames.push(bedrock_event("contentBlockStart", json!({"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_mock1", "name": name}}})));
                        let text = args.to_string();
                        let (a, b) = text.split_at(text.len() / 2);
                        for part in [a, b] {
                            frames.push(bedrock_event("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": part}}})));
                        }
                    }
                    None => {
                        for w in &self.words {
                            frames.push(bedrock_event(
                                "contentBlockDelta",
                                json!({"contentBlockIndex": 0, "delta": {"text": w}, "p": "abcd"}),
                            ));
                        }
                    }
                }
                frames.push(bedrock_event(
                    "contentBlockStop",
                    json!({"contentBlockIndex": 0}),
                ));
                let stop = if self.tool_call.is_some() {
                    "tool_use"
                } else {
                    "end_turn"
                };
                frames.push(bedrock_event("messageStop", json!({"stopReason": stop})));
                frames.push(bedrock_event("metadata", json!({"usage": {"inputTokens": prompt, "outputTokens": out, "totalTokens": prompt + out}, "metrics": {"latencyMs": 1}})));
            }
            Format::Azure | Format::GeminiEmbed | Format::OllamaEmbed | Format::BedrockInvoke => {}
        }
        frames
    }

    /// A mid-stream error in the provider's framing.
    pub fn stream_error(format: Format) -> Bytes {
        match format {
            Format::Anthropic => Bytes::from_static(
                b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
            ),
            Format::Gemini { .. } => Bytes::from_static(
                b"data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}\n\n",
            ),
            Format::OllamaChat | Format::OllamaGenerate => {
                Bytes::from_static(b"{\"error\":\"model runner crashed\"}\n")
            }
            Format::Bedrock { .. } => {
                use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
                let m = Message::new(Bytes::from_static(br#"{"message":"The system encountered an unexpected error during processing. Try your request again."}"#))
                    .add_header(Header::new(":exception-type", HeaderValue::String("internalServerException".into())))
                    .add_header(Header::new(":content-type", HeaderValue::String("application/json".into())))
                    .add_header(Header::new(":message-type", HeaderValue::String("exception".into())));
                let mut out = Vec::new();
                aws_smithy_eventstream::frame::write_message_to(&m, &mut out).expect("frame");
                Bytes::from(out)
            }
            Format::Cohere | Format::Azure | Format::GeminiEmbed | Format::OllamaEmbed | Format::BedrockInvoke => Bytes::from_static(
                b"data: {\"error\":{\"message\":\"internal error\",\"type\":\"server_error\"}}\n\n",
            ),
        }
    }

    pub fn content_type(format: Format) -> &'static str {
        match format {
            Format::Bedrock { .. } => "application/vnd.amazon.eventstream",
            Format::GeminiEmbed | Format::OllamaEmbed | Format::BedrockInvoke => "application/json",
            Format::OllamaChat | Format::OllamaGenerate => "application/x-ndjson",
            _ => "text/event-stream",
        }
    }
}

/// One ConverseStream event, framed as Bedrock sends it.
fn bedrock_event(kind: &'static str, payload: Value) -> Bytes {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let m = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(":event-type", HeaderValue::String(kind.into())))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&m, &mut out).expect("frame");
    Bytes::from(out)
}

/// A deterministic mock vector for a text.
pub fn vector(text: &str, dims: usize) -> Vec<f64> {
    let seed = text.len() as f64;
    (0..dims)
        .map(|d| ((seed + d as f64) * 0.37).sin() / 10.0)
        .collect()
}

/// The answer of an embedding format.
pub fn embedding_body(format: Format, request: &Value, dims: usize) -> Value {
    let tokens = |t: &str| (t.chars().count() as u64).div_ceil(4).max(1);
    match format {
        Format::GeminiEmbed => {
            let embeddings: Vec<Value> = request["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let text = r["content"]["parts"][0]["text"].as_str().unwrap_or("");
                    let dims = r["outputDimensionality"]
                        .as_u64()
                        .map_or(dims, |d| d as usize);
                    json!({"values": vector(text, dims)})
                })
                .collect();
            json!({"embeddings": embeddings})
        }
        Format::OllamaEmbed => {
            let inputs: Vec<String> = match &request["input"] {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            let total: u64 = inputs.iter().map(|t| tokens(t)).sum();
            let embeddings: Vec<Vec<f64>> = inputs.iter().map(|t| vector(t, dims)).collect();
            json!({"model": request["model"], "embeddings": embeddings, "prompt_eval_count": total})
        }
        _ => {
            if let Some(text) = request["inputText"].as_str() {
                let dims = request["dimensions"].as_u64().map_or(dims, |d| d as usize);
                json!({"embedding": vector(text, dims), "inputTextTokenCount": tokens(text)})
            } else {
                let texts: Vec<String> = request["texts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                let embeddings: Vec<Vec<f64>> = texts.iter().map(|t| vector(t, dims)).collect();
                json!({"id": "mock-embed", "embeddings": embeddings, "texts": texts, "response_type": "embeddings_floats"})
            }
        }
    }
}
