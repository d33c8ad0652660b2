//! AWS Bedrock codec (`bedrock/` and `bedrock/converse/` deployments): OpenAI chat request to
//! the Converse API (`POST {endpoint}/model/{modelId}/converse`, `/converse-stream`), signed
//! with SigV4 (service `bedrock`) or sent with a Bedrock API key, and the answer back: JSON, or
//! the binary `application/vnd.amazon.eventstream` framing decoded incrementally (CRCs checked)
//! into OpenAI chunks. Called by the forwarder inside Pingora's `request_filter`.
//!
//! Signing uses AWS's own `aws-sigv4` crate and the event stream AWS's `aws-smithy-eventstream`
//! (the SDK's implementations, tested against AWS's suites); wire format and vectors:
//! `providers.md` section 5.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use filters::ApiError;
use filters::usage::Usage;
use http::HeaderValue;
use serde_json::{Map, Value, json};

use super::openai::{Target, UpstreamRequest};
use super::translate::{
    ChatRequest, Completion, DecodeOptions, Image, Message, Part, ProviderFailure, ResponseFormat,
    SamplingKeys, StreamState, Tokens, ToolChoice, TranslatedStream, compact, generated_id,
    push_turn, quoted, upstream_error,
};

pub use crate::config::provider_catalog::{AwsAuth, BEDROCK_DEFAULT_REGION as DEFAULT_REGION};

/// SigV4 signing name of the Bedrock runtime (not `bedrock-runtime`).
pub const SIGNING_NAME: &str = "bedrock";

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
    "response_format",
    "user",
    "safety_identifier",
    "functions",
    "function_call",
];

/// The model id as one path segment: everything but unreserved characters percent-encoded
/// (`:` becomes `%3A`, `/` in ARNs `%2F`), as the AWS SDK writes it.
pub fn encode_model_id(model: &str) -> std::borrow::Cow<'_, str> {
    super::path::segment(model)
}

/// The request target: `{base path}/model/{id}/converse[-stream]`.
pub fn target_path(base_path: &str, model: &str, stream: bool) -> String {
    let model = model.strip_prefix("converse/").unwrap_or(model);
    format!(
        "{base_path}/model/{}/{}",
        encode_model_id(model),
        if stream {
            "converse-stream"
        } else {
            "converse"
        }
    )
}

/// Adds the SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`) for a POST of
/// `body` to `https://{host}{path}`, signing `host` and `content-type` (when set).
#[allow(clippy::too_many_arguments)]
pub fn sign(
    auth: &AwsAuth,
    method: &str,
    service: &str,
    host: &str,
    tls: bool,
    path: &str,
    body: &[u8],
    time: SystemTime,
    headers: &mut http::HeaderMap,
) -> Result<(), ApiError> {
    let (access_key_id, secret, token, region) = match auth {
        AwsAuth::ApiKey(key) => {
            if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
                v.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, v);
            }
            return Ok(());
        }
        AwsAuth::SigV4 {
            access_key_id,
            secret_access_key,
            session_token,
            region,
        } => (access_key_id, secret_access_key, session_token, region),
    };
    let identity = aws_credential_types::Credentials::new(
        access_key_id.clone(),
        secret.expose().to_string(),
        token.as_ref().map(|t| t.expose().to_string()),
        None,
        "sluice-config",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .map_err(|e| ApiError::internal(format!("cannot sign the Bedrock request: {e}")))?
        .into();
    let url = format!("{}://{host}{path}", if tls { "https" } else { "http" });
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut signed_headers = Vec::with_capacity(2);
    if let Some(ct) = &content_type {
        signed_headers.push(("content-type", ct.as_str()));
    }
    signed_headers.push(("host", host));
    let signable = aws_sigv4::http_request::SignableRequest::new(
        method,
        &url,
        signed_headers.into_iter(),
        aws_sigv4::http_request::SignableBody::Bytes(body),
    )
    .map_err(|e| ApiError::internal(format!("cannot sign the Bedrock request: {e}")))?;
    let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| ApiError::internal(format!("cannot sign the Bedrock request: {e}")))?
        .into_parts();
    let (new_headers, _query) = instructions.into_parts();
    for header in new_headers {
        let name = http::HeaderName::from_bytes(header.name().as_bytes());
        let value = HeaderValue::from_str(header.value());
        if let (Ok(name), Ok(mut value)) = (name, value) {
            // Signatures and session tokens are credentials: never logged.
            value.set_sensitive(
                header.sensitive()
                    || name == http::header::AUTHORIZATION
                    || name == "x-amz-security-token",
            );
            headers.insert(name, value);
        }
    }
    Ok(())
}

/// Signs an encoded request for `target` (SigV4 over its path and body, or the API key).
pub fn sign_request(
    request: &mut UpstreamRequest,
    target: &Target<'_>,
    auth: Option<&AwsAuth>,
    now: SystemTime,
) -> Result<(), ApiError> {
    request.headers_mut().remove(http::header::AUTHORIZATION);
    let Some(auth) = auth else {
        return Ok(());
    };
    // `headers_mut` above made the map this request's own, `Accept` included (it is signed).
    let headers = std::sync::Arc::make_mut(&mut request.headers);
    sign(
        auth,
        "POST",
        SIGNING_NAME,
        &target.base.host_header(),
        target.base.tls,
        &request.target,
        &request.body,
        now,
        headers,
    )
}

/// Encodes an OpenAI chat request as a Converse request and signs it.
pub fn encode(
    req: ChatRequest,
    target: &Target<'_>,
    auth: Option<&AwsAuth>,
    now: SystemTime,
) -> Result<UpstreamRequest, ApiError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(ApiError::bad_request("bedrock does not support n > 1").with_param("n"));
    }
    let mut body = Map::new();
    let (messages, history_tools) = messages(&req.messages)?;
    body.insert("messages".into(), Value::Array(messages));
    let system: Vec<Value> = req
        .system_texts()
        .map(|(text, _)| json!({"text": text}))
        .collect();
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    req.put_sampling(
        &mut inference,
        &SamplingKeys {
            max_tokens: Some("maxTokens"),
            temperature: Some("temperature"),
            temperature_max: Some(1.0),
            top_p: Some("topP"),
            stop: Some("stopSequences"),
            ..SamplingKeys::default()
        },
    );
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let none_chosen = req.tool_choice == Some(ToolChoice::None);
    let mut specs: Vec<Value> = if none_chosen {
        Vec::new()
    } else {
        req.tools
            .iter()
            .map(|t| {
                let mut spec = Map::new();
                spec.insert("name".into(), t.name.clone().into());
                if let Some(d) = &t.description {
                    spec.insert("description".into(), d.clone().into());
                }
                spec.insert(
                    "inputSchema".into(),
                    json!({"json": t.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}))}),
                );
                json!({"toolSpec": spec})
            })
            .collect()
    };
    // Bedrock refuses a history with tool blocks unless toolConfig is present.
    if specs.is_empty() && !history_tools.is_empty() {
        specs = history_tools
            .iter()
            .map(|name| json!({"toolSpec": {"name": name, "inputSchema": {"json": {"type": "object", "properties": {}}}}}))
            .collect();
    }
    if !specs.is_empty() {
        let mut config = json!({"tools": specs});
        match &req.tool_choice {
            Some(ToolChoice::Auto) => config["toolChoice"] = json!({"auto": {}}),
            Some(ToolChoice::Required) => config["toolChoice"] = json!({"any": {}}),
            Some(ToolChoice::Function(name)) => {
                config["toolChoice"] = json!({"tool": {"name": name}})
            }
            _ => {}
        }
        body.insert("toolConfig".into(), config);
    }
    if let Some(ResponseFormat::JsonSchema { name, schema }) = &req.response_format {
        body.insert(
            "outputConfig".into(),
            json!({"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": schema.to_string(), "name": name}}}}),
        );
    }
    if !req.extra.is_empty() {
        body.insert(
            "additionalModelRequestFields".into(),
            Value::Object(req.extra),
        );
    }
    let body = Bytes::from(serde_json::to_vec(&Value::Object(body)).unwrap_or_default());
    let path = target_path(&target.base.path, target.upstream_model, req.stream);
    let accept = if req.stream {
        "application/vnd.amazon.eventstream"
    } else {
        "application/json"
    };
    let mut request = UpstreamRequest {
        include_usage: req.include_usage,
        ..UpstreamRequest::post(path, target.headers, body, Some(accept))
    };
    sign_request(&mut request, target, auth, now)?;
    Ok(request)
}

/// OpenAI messages to Converse messages (roles alternate; tool results join the next user
/// turn). Returns the tool names used in the history too.
fn messages(messages: &[Message]) -> Result<(Vec<Value>, Vec<String>), ApiError> {
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut tool_names: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m {
            Message::System { .. } => {}
            Message::User(parts) => {
                let mut blocks = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    blocks.push(match p {
                        Part::Text { text, .. } => json!({"text": text}),
                        Part::Image(Image::Inline { mime, data }) => {
                            let format = mime.strip_prefix("image/").unwrap_or(mime);
                            if !matches!(format, "png" | "jpeg" | "gif" | "webp") {
                                return Err(ApiError::bad_request(format!(
                                    "bedrock accepts png, jpeg, gif and webp images, not {mime}"
                                ))
                                .with_param(format!("messages[{i}].content[{j}]")));
                            }
                            json!({"image": {"format": format, "source": {"bytes": data}}})
                        }
                        Part::Image(Image::Url(_)) => {
                            return Err(ApiError::bad_request(
                                "bedrock cannot fetch image URLs; send the image inline as a data: URL",
                            )
                            .with_param(format!("messages[{i}].content[{j}].image_url")));
                        }
                    });
                }
                push_turn(&mut out, "user", blocks);
            }
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if let Some(t) = text {
                    blocks.push(json!({"text": t}));
                }
                for c in tool_calls {
                    if !tool_names.contains(&c.name) {
                        tool_names.push(c.name.clone());
                    }
                    blocks.push(json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.arguments}}));
                }
                push_turn(&mut out, "assistant", blocks);
            }
            Message::Tool {
                call_id, content, ..
            } => {
                let result = match serde_json::from_str::<Value>(content) {
                    Ok(v @ Value::Object(_)) => json!({"json": v}),
                    _ => json!({"text": content}),
                };
                push_turn(
                    &mut out,
                    "user",
                    vec![
                        json!({"toolResult": {"toolUseId": call_id, "content": [result], "status": "success"}}),
                    ],
                );
            }
        }
    }
    Ok((
        out.into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect(),
        tool_names,
    ))
}

/// `stopReason` to `finish_reason` (5.3).
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

fn tokens(u: &Value) -> Tokens {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let read = n("cacheReadInputTokens");
    let write = n("cacheWriteInputTokens");
    let prompt = n("inputTokens").saturating_add(read).saturating_add(write);
    let completion = n("outputTokens");
    Tokens {
        prompt,
        completion,
        total: prompt.saturating_add(completion),
        cached: read,
        cache_write: write,
        reasoning: 0,
    }
}

/// Decodes a Converse response.
pub fn decode(body: &[u8], opts: &DecodeOptions) -> Result<(Bytes, Usage), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_gateway("bedrock answered with a body that is not JSON"))?;
    let mut content = String::new();
    let mut has_text = false;
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    for block in v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            content.push_str(t);
            has_text = true;
        } else if let Some(u) = block.get("toolUse") {
            calls.push((
                u["toolUseId"].as_str().unwrap_or_default().to_string(),
                u["name"].as_str().unwrap_or_default().to_string(),
                compact(u.get("input").unwrap_or(&json!({}))),
            ));
        } else if let Some(t) = block
            .pointer("/reasoningContent/reasoningText/text")
            .and_then(Value::as_str)
        {
            reasoning.get_or_insert_with(String::new).push_str(t);
        }
    }
    let id = generated_id();
    let t = tokens(&v["usage"]);
    let completion = Completion {
        id: &id,
        model: opts.model(None),
        created: opts.created,
        content: has_text.then_some(content),
        reasoning,
        tool_calls: calls,
        finish_reason: finish_reason(v["stopReason"].as_str().unwrap_or("end_turn")),
        tokens: t,
    };
    Ok((Bytes::from(completion.to_json()), t.usage()))
}

/// The status an exception name stands for (5.4), for exceptions inside a 200 stream.
fn status_of(exception: &str) -> u16 {
    match exception
        .trim_end_matches("Exception")
        .to_ascii_lowercase()
        .as_str()
    {
        "validation" | "servicequotaexceeded" => 400,
        "accessdenied" | "unrecognizedclient" => 403,
        "resourcenotfound" => 404,
        "modeltimeout" => 408,
        "modelerror" => 424,
        "throttling" | "modelnotready" => 429,
        "serviceunavailable" => 503,
        _ => 500,
    }
}

/// Maps a Bedrock error: the code from `x-amzn-ErrorType` (anything after `:` stripped), else
/// the body's `__type` / `code`; the message from `message` / `Message`.
pub fn error(status: u16, error_type: Option<&str>, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let code = error_type
        .or_else(|| v["__type"].as_str())
        .or_else(|| v["code"].as_str())
        .map(|c| c.split(':').next().unwrap_or(c))
        .map(|c| c.rsplit('#').next().unwrap_or(c).to_string());
    let message = v["message"]
        .as_str()
        .or_else(|| v["Message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| super::translate::raw_message(body));
    let lower = message.to_ascii_lowercase();
    let code_ref = code.as_deref();
    upstream_error(
        if status == 200 {
            code_ref.map_or(500, status_of)
        } else {
            status
        },
        ProviderFailure {
            context_window: code_ref.is_some_and(|c| c.starts_with("ValidationException"))
                && (lower.contains("too long") || lower.contains("context")),
            code: code_ref,
            message,
            ..Default::default()
        },
    )
}

/// Streaming decoder: `application/vnd.amazon.eventstream` frames (split anywhere across reads)
/// to OpenAI chunks (mapping in 5.6).
pub struct StreamDecoder {
    opts: DecodeOptions,
    frames: aws_smithy_eventstream::frame::MessageFrameDecoder,
    pending: BytesMut,
    state: StreamState,
    /// Converse block index -> OpenAI tool index.
    tool_blocks: Vec<(u64, usize)>,
    tools_with_args: Vec<u64>,
    id: String,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("bedrock::StreamDecoder")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl StreamDecoder {
    pub fn new(opts: DecodeOptions) -> Self {
        StreamDecoder {
            opts,
            frames: aws_smithy_eventstream::frame::MessageFrameDecoder::new(),
            pending: BytesMut::new(),
            state: StreamState::default(),
            tool_blocks: Vec::new(),
            tools_with_args: Vec::new(),
            id: generated_id(),
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        self.pending.extend_from_slice(chunk);
        while !self.state.closed {
            match self.frames.decode_frame(&mut self.pending) {
                Ok(aws_smithy_eventstream::frame::DecodedFrame::Complete(message)) => {
                    self.message(&message, out)
                }
                Ok(aws_smithy_eventstream::frame::DecodedFrame::Incomplete) => break,
                Err(e) => {
                    self.state.fail(
                        out,
                        &ApiError::bad_gateway(format!(
                            "bedrock sent a malformed event-stream frame: {e}"
                        )),
                    );
                    break;
                }
            }
        }
    }

    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.pending.is_empty() && !self.state.closed {
            self.state.fail(
                out,
                &ApiError::bad_gateway("the bedrock stream ended inside an event-stream frame"),
            );
        }
        self.state.end(out, self.opts.include_usage, "stop");
    }

    fn start(&mut self, out: &mut BytesMut) {
        if !self.state.role_sent {
            let model = self.opts.model(None).to_string();
            let id = self.id.clone();
            self.state.start(out, &id, &model, self.opts.created);
        }
    }

    fn message(&mut self, message: &aws_smithy_types::event_stream::Message, out: &mut BytesMut) {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str().to_string())
        };
        let payload: Value = serde_json::from_slice(message.payload()).unwrap_or(Value::Null);
        match header(":message-type").as_deref() {
            Some("event") => {}
            Some("exception") => {
                let kind = header(":exception-type").unwrap_or_default();
                let body = serde_json::to_vec(&payload).unwrap_or_default();
                self.state.fail(out, &error(200, Some(&kind), &body));
                return;
            }
            _ => {
                let code =
                    header(":error-code").unwrap_or_else(|| "InternalServerException".into());
                let text = header(":error-message").unwrap_or_default();
                let body = serde_json::to_vec(&json!({"message": text})).unwrap_or_default();
                self.state.fail(out, &error(200, Some(&code), &body));
                return;
            }
        }
        match header(":event-type").as_deref().unwrap_or_default() {
            "messageStart" => self.start(out),
            "contentBlockStart" => {
                self.start(out);
                if let Some(tool) = payload.pointer("/start/toolUse") {
                    let index = payload["contentBlockIndex"].as_u64().unwrap_or(0);
                    let k = self.tool_blocks.len();
                    self.tool_blocks.push((index, k));
                    self.state.writer.tool_call_start(
                        out,
                        k,
                        tool["toolUseId"].as_str().unwrap_or_default(),
                        tool["name"].as_str().unwrap_or_default(),
                    );
                    self.state.output_seen = true;
                }
            }
            "contentBlockDelta" => {
                self.start(out);
                let index = payload["contentBlockIndex"].as_u64().unwrap_or(0);
                let delta = &payload["delta"];
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    self.state.writer.content(out, text);
                    self.state.output_seen = true;
                } else if let Some(input) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                {
                    if let Some((_, k)) = self.tool_blocks.iter().find(|(i, _)| *i == index)
                        && !input.is_empty()
                    {
                        let k = *k;
                        self.state.writer.tool_arguments(out, k, input);
                        self.tools_with_args.push(index);
                    }
                } else if let Some(text) = delta
                    .pointer("/reasoningContent/text")
                    .and_then(Value::as_str)
                {
                    self.state.writer.delta(
                        out,
                        &format!(r#"{{"reasoning_content":{}}}"#, quoted(text)),
                        None,
                    );
                }
            }
            "contentBlockStop" => {
                let index = payload["contentBlockIndex"].as_u64().unwrap_or(0);
                if let Some((_, k)) = self.tool_blocks.iter().find(|(i, _)| *i == index)
                    && !self.tools_with_args.contains(&index)
                {
                    let k = *k;
                    self.state.writer.tool_arguments(out, k, "{}");
                }
            }
            "messageStop" => {
                self.start(out);
                self.state.output_seen = true;
                let reason = finish_reason(payload["stopReason"].as_str().unwrap_or("end_turn"));
                self.state.finish(out, reason);
            }
            "metadata" => {
                if let Some(u) = payload.get("usage") {
                    self.state.tokens = Some(tokens(u));
                }
                // metadata comes after messageStop: the stream is complete.
                if self.state.finish_sent {
                    self.state.end(out, self.opts.include_usage, "stop");
                }
            }
            _ => {}
        }
    }
}

impl TranslatedStream for StreamDecoder {
    fn state(&self) -> &StreamState {
        &self.state
    }
}

#[cfg(test)]
mod tests;
