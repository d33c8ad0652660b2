//! Google Gemini codec (`gemini/` deployments, the Generative Language API): OpenAI chat
//! request to `{api_base}/models/{model}:generateContent` (`:streamGenerateContent?alt=sse`
//! when streaming) and the answer back to OpenAI's shapes. Called by the forwarder inside
//! Pingora's `request_filter`; pure and Pingora-free.
//!
//! Mapping rules and test vectors: `providers.md` sections 4, 8 and 9.3/9.4. The key travels in
//! the `x-goog-api-key` header, never in the query string (LiteLLM's `?key=` leaked keys into
//! error traces).

use bytes::{Bytes, BytesMut};
use filters::ApiError;
use filters::usage::Usage;
use http::HeaderValue;
use serde_json::{Map, Value, json};

use super::openai::{Target, UpstreamRequest, sse_or_json};
use super::translate::{
    ChatRequest, Completion, DecodeOptions, Image, Message, Part, ProviderFailure, ResponseFormat,
    SamplingKeys, SseEvents, StreamState, Tokens, ToolChoice, compact, push_turn, upstream_error,
};
use super::translated_stream::{ProviderEvents, Translated};

/// OpenAI parameters this codec maps (`user` is accepted and dropped: Gemini has no field).
pub const SUPPORTED: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "n",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "response_format",
    "frequency_penalty",
    "presence_penalty",
    "user",
    "safety_identifier",
    "functions",
    "function_call",
];

pub fn base_headers(key: Option<&str>, headers: &mut http::HeaderMap) {
    headers.remove(http::header::AUTHORIZATION);
    if let Some(key) = key
        && let Ok(mut v) = HeaderValue::from_str(key)
    {
        v.set_sensitive(true);
        headers.insert("x-goog-api-key", v);
    }
}

/// The request target: `{base}/models/{model}:generateContent`, or the SSE streaming method.
pub fn target_path(base: &crate::config::UpstreamUrl, model: &str, stream: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let method = if stream {
        "streamGenerateContent"
    } else {
        "generateContent"
    };
    let mut t = format!(
        "{}/models/{}:{method}",
        base.path,
        super::path::segment(model)
    );
    let mut query: Vec<&str> = Vec::new();
    if stream {
        query.push("alt=sse");
    }
    if let Some(q) = &base.query {
        query.push(q);
    }
    if !query.is_empty() {
        t.push('?');
        t.push_str(&query.join("&"));
    }
    t
}

/// Encodes an OpenAI chat request as a `GenerateContentRequest`.
pub fn encode(req: ChatRequest, target: &Target<'_>) -> Result<UpstreamRequest, ApiError> {
    let mut body = Map::new();
    let system: Vec<Value> = req
        .system_texts()
        .map(|(text, _)| json!({"text": text}))
        .collect();
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    body.insert("contents".into(), Value::Array(contents(&req.messages)?));
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = Map::new();
                d.insert("name".into(), t.name.clone().into());
                if let Some(desc) = &t.description {
                    d.insert("description".into(), desc.clone().into());
                }
                if let Some(p) = &t.parameters {
                    d.insert("parametersJsonSchema".into(), p.clone());
                }
                Value::Object(d)
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(choice) = &req.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Function(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert(
            "toolConfig".into(),
            json!({"functionCallingConfig": config}),
        );
    }
    if req.n.is_some_and(|n| n > 1) {
        // Only the first candidate would be decoded (and all of them billed).
        return Err(
            ApiError::bad_request("gemini deployments answer one choice: n must be 1")
                .with_param("n"),
        );
    }
    let mut generation = Map::new();
    req.put_sampling(
        &mut generation,
        &SamplingKeys {
            max_tokens: Some("maxOutputTokens"),
            temperature: Some("temperature"),
            temperature_max: Some(2.0),
            top_p: Some("topP"),
            stop: Some("stopSequences"),
            seed: Some("seed"),
            frequency_penalty: Some("frequencyPenalty"),
            presence_penalty: Some("presencePenalty"),
        },
    );
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            generation.insert("responseMimeType".into(), "application/json".into());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            generation.insert("responseMimeType".into(), "application/json".into());
            generation.insert("responseJsonSchema".into(), schema.clone());
        }
        _ => {}
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    let mut extra = req.extra;
    // Sampling extras Gemini has under another name go into generationConfig.
    if let Some(k) = extra.remove("top_k") {
        body.entry("generationConfig")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .map(|g| g.insert("topK".into(), k));
    }
    for (k, v) in extra {
        body.entry(k).or_insert(v);
    }
    Ok(UpstreamRequest {
        include_usage: req.include_usage,
        ..UpstreamRequest::post(
            target_path(target.base, target.upstream_model, req.stream),
            target.headers,
            Bytes::from(serde_json::to_vec(&Value::Object(body)).unwrap_or_default()),
            Some(sse_or_json(req.stream)),
        )
    })
}

/// OpenAI messages to Gemini `contents`: `assistant` is `model`, tool results are
/// `functionResponse` parts of a user turn, same-role neighbours merge.
fn contents(messages: &[Message]) -> Result<Vec<Value>, ApiError> {
    let mut out: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match m {
            Message::System { .. } => {}
            Message::User(parts) => {
                let mut converted = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    converted.push(match p {
                        Part::Text { text, .. } => json!({"text": text}),
                        Part::Image(Image::Inline { mime, data }) => {
                            json!({"inlineData": {"mimeType": mime, "data": data}})
                        }
                        Part::Image(Image::Url(url)) if url.starts_with("gs://") => {
                            json!({"fileData": {"mimeType": mime_from_extension(url), "fileUri": url}})
                        }
                        Part::Image(Image::Url(_)) => {
                            return Err(ApiError::bad_request(
                                "gemini cannot fetch image URLs; send the image inline as a data: URL (data:<mime>;base64,...)",
                            )
                            .with_param(format!("messages[{i}].content[{j}].image_url")));
                        }
                    });
                }
                push_turn(&mut out, "user", converted);
            }
            Message::Assistant { text, tool_calls } => {
                let mut parts = Vec::new();
                if let Some(t) = text {
                    parts.push(json!({"text": t}));
                }
                for c in tool_calls {
                    let mut part = json!({"functionCall": {"name": c.name, "args": c.arguments}});
                    if let Some(signature) = thought_signature(&c.id) {
                        part["thoughtSignature"] = signature.into();
                    }
                    parts.push(part);
                }
                push_turn(&mut out, "model", parts);
            }
            Message::Tool { name, content, .. } => {
                let response = match serde_json::from_str::<Value>(content) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({"output": content}),
                };
                push_turn(
                    &mut out,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect())
}

fn mime_from_extension(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    match lower.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("pdf") => "application/pdf",
        _ => "image/jpeg",
    }
}

/// `finishReason` to `finish_reason` (4.3).
pub fn finish_reason(reason: &str, had_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if had_calls => "tool_calls",
        _ => "stop",
    }
}

/// `usageMetadata` to OpenAI counts (8.6).
fn tokens(u: &Value) -> Tokens {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let prompt = n("promptTokenCount").saturating_add(n("toolUsePromptTokenCount"));
    let completion = n("candidatesTokenCount").saturating_add(n("thoughtsTokenCount"));
    let total = match n("totalTokenCount") {
        0 => prompt.saturating_add(completion),
        t => t,
    };
    Tokens {
        prompt,
        completion,
        total,
        cached: n("cachedContentTokenCount"),
        cache_write: 0,
        reasoning: n("thoughtsTokenCount"),
    }
}

/// Thought signatures of the function calls this instance returned, by tool-call id. Gemini 3
/// refuses a replayed `functionCall` part without its signature (8.4), and OpenAI clients
/// cannot carry it, so the gateway keeps it and puts it back. Bounded: cleared when full (a
/// replay that misses loses only the signature, as with another instance behind a balancer).
static SIGNATURES: parking_lot::Mutex<Option<std::collections::HashMap<String, String>>> =
    parking_lot::Mutex::new(None);
const SIGNATURES_LIMIT: usize = 100_000;

fn remember_signature(call_id: &str, part: &Value) {
    let Some(signature) = part.get("thoughtSignature").and_then(Value::as_str) else {
        return;
    };
    let mut map = SIGNATURES.lock();
    let map = map.get_or_insert_with(std::collections::HashMap::new);
    if map.len() >= SIGNATURES_LIMIT {
        map.clear();
    }
    map.insert(call_id.to_string(), signature.to_string());
}

fn thought_signature(call_id: &str) -> Option<String> {
    SIGNATURES.lock().as_ref()?.get(call_id).cloned()
}

/// The tool-call id: the part's own, else `call_<responseId>_<n>` (8.4).
fn call_id(call: &Value, response_id: &str, n: usize) -> String {
    call.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("call_{response_id}_{n}"))
}

/// Decodes a non-streamed `GenerateContentResponse`.
pub fn decode(body: &[u8], opts: &DecodeOptions) -> Result<(Bytes, Usage), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_gateway("gemini answered with a body that is not JSON"))?;
    if v.get("error").is_some() {
        return Err(error(200, body));
    }
    let id = v["responseId"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(super::translate::generated_id);
    let candidate = &v["candidates"][0];
    let mut content = String::new();
    let mut has_text = false;
    let mut reasoning: Option<String> = None;
    let mut calls = Vec::new();
    for part in candidate["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(text) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                reasoning.get_or_insert_with(String::new).push_str(text);
            } else {
                content.push_str(text);
                has_text = true;
            }
        } else if let Some(call) = part.get("functionCall") {
            let n = calls.len();
            let call_id = call_id(call, &id, n);
            remember_signature(&call_id, part);
            calls.push((
                call_id,
                call["name"].as_str().unwrap_or_default().to_string(),
                compact(call.get("args").unwrap_or(&json!({}))),
            ));
        }
    }
    let finish = if candidate.is_null() && v.pointer("/promptFeedback/blockReason").is_some() {
        "content_filter"
    } else {
        finish_reason(
            candidate["finishReason"].as_str().unwrap_or("STOP"),
            !calls.is_empty(),
        )
    };
    let t = tokens(&v["usageMetadata"]);
    let completion = Completion {
        id: &id,
        model: opts.model(v["modelVersion"].as_str()),
        created: opts.created,
        content: has_text.then_some(content),
        reasoning,
        tool_calls: calls,
        finish_reason: finish,
        tokens: t,
    };
    Ok((Bytes::from(completion.to_json()), t.usage()))
}

/// Maps Google's RPC error envelope (`{"error":{"code","message","status"}}`).
pub fn error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // Some streamed errors arrive as a one-element array.
    let e = v
        .get(0)
        .unwrap_or(&v)
        .get("error")
        .cloned()
        .unwrap_or(Value::Null);
    let message = e["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| super::translate::raw_message(body));
    let rpc_status = e["status"].as_str();
    let status = match (status, e["code"].as_u64()) {
        (s, Some(code)) if s < 400 => u16::try_from(code)
            .ok()
            .filter(|c| (400..=599).contains(c))
            .unwrap_or(502),
        // An error inside a 2xx answer with no usable code: the upstream failed.
        (s, None) if s < 400 => 502,
        (s, _) => s,
    };
    let lower = message.to_ascii_lowercase();
    upstream_error(
        status,
        ProviderFailure {
            context_window: lower.contains("input token count")
                && lower.contains("exceeds the maximum"),
            content_policy: false,
            quota: rpc_status == Some("FAILED_PRECONDITION"),
            code: rpc_status,
            message,
        },
    )
}

/// Streaming decoder: `data:` lines of `GenerateContentResponse` chunks to OpenAI chunks (4.4).
pub type StreamDecoder = Translated<StreamEvents>;

/// Gemini's stream chunks, handled for the [`Translated`] driver.
#[derive(Debug)]
pub struct StreamEvents {
    opts: DecodeOptions,
    state: StreamState,
    calls: usize,
    finish: Option<String>,
}

impl StreamDecoder {
    pub fn new(opts: DecodeOptions) -> Self {
        let framing = SseEvents::with_limit(opts.max_event_bytes);
        Translated::with(
            StreamEvents {
                opts,
                state: StreamState::default(),
                calls: 0,
                finish: None,
            },
            framing,
        )
    }
}

impl ProviderEvents for StreamEvents {
    fn event(&mut self, _name: &str, data: &str, out: &mut BytesMut) {
        self.chunk(data, out)
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
        self.finish.as_deref().unwrap_or("stop")
    }

    fn unframed(&mut self, rest: &[u8], out: &mut BytesMut) -> bool {
        let body = rest.trim_ascii_start();
        if !body.starts_with(b"{") && !body.starts_with(b"[") {
            return false;
        }
        // An error body sent without SSE framing.
        self.state.fail(out, &error(200, rest));
        true
    }
}

impl StreamEvents {
    fn chunk(&mut self, data: &str, out: &mut BytesMut) {
        if self.state.closed {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if v.get("error").is_some() {
            self.state.fail(out, &error(200, data.as_bytes()));
            return;
        }
        let id = v["responseId"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(super::translate::generated_id);
        let model = self.opts.model(v["modelVersion"].as_str()).to_string();
        self.state.start(out, &id, &model, self.opts.created);
        if let Some(u) = v.get("usageMetadata") {
            self.state.tokens = Some(tokens(u));
        }
        let candidate = &v["candidates"][0];
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                if part.get("thought").and_then(Value::as_bool) == Some(true) || text.is_empty() {
                    continue;
                }
                self.state.writer.content(out, text);
                self.state.output_seen = true;
            } else if let Some(call) = part.get("functionCall") {
                let k = self.calls;
                self.calls += 1;
                let call_id = call_id(call, &id, k);
                remember_signature(&call_id, part);
                self.state.writer.tool_call(
                    out,
                    k,
                    &call_id,
                    call["name"].as_str().unwrap_or_default(),
                    &compact(call.get("args").unwrap_or(&json!({}))),
                );
                self.state.output_seen = true;
            }
        }
        let reason = if let Some(r) = candidate["finishReason"].as_str() {
            Some(finish_reason(r, self.calls > 0))
        } else if candidate.is_null() && v.pointer("/promptFeedback/blockReason").is_some() {
            Some("content_filter")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.finish = Some(reason.to_string());
            self.state.output_seen = true;
            self.state.finish(out, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{fixture, json_fixture, obj, split_invariant, target_for};
    use crate::providers::translate::ParamPolicy;
    use crate::providers::translate::TranslatedStream;

    fn opts(include_usage: bool) -> DecodeOptions {
        DecodeOptions {
            model_override: None,
            fallback_model: "gemini-2.5-flash".into(),
            created: 1_700_000_000,
            include_usage,
            max_event_bytes: crate::providers::translate::DEFAULT_MAX_EVENT_BYTES,
        }
    }

    fn encode_value(body: Value) -> UpstreamRequest {
        let (base, headers) = target_for("https://generativelanguage.googleapis.com/v1beta");
        let target = Target::new(
            super::super::Wire::Gemini,
            &base,
            "gemini-2.5-flash",
            &headers,
        );
        let mut body = obj(body);
        ParamPolicy::default()
            .apply(&mut body, SUPPORTED, "gemini")
            .unwrap();
        encode(ChatRequest::read(body).unwrap(), &target).unwrap()
    }

    #[test]
    fn g1_request_is_translated_as_the_vector_says() {
        let req = encode_value(json_fixture("gemini/g1_1_openai_request.json"));
        assert_eq!(
            req.target,
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        let sent: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(sent, json_fixture("gemini/g1_2_upstream_request.json"));
    }

    #[test]
    fn g1_response_is_translated_as_the_vector_says() {
        let (body, usage) = decode(
            fixture("gemini/g1_3_upstream_response.json").as_bytes(),
            &opts(false),
        )
        .unwrap();
        let got: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, json_fixture("gemini/g1_4_openai_response.json"));
        assert_eq!(usage.completion_tokens, 50);
    }

    fn run_stream(chunks: &[&[u8]], include_usage: bool) -> (String, StreamDecoder) {
        let mut d = StreamDecoder::new(opts(include_usage));
        let mut out = BytesMut::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        (String::from_utf8(out.to_vec()).unwrap(), d)
    }

    #[test]
    fn g2_stream_is_translated_byte_for_byte() {
        let mut client = json_fixture("gemini/g1_1_openai_request.json");
        client["messages"].as_array_mut().unwrap().truncate(2);
        client["stream"] = true.into();
        let req = encode_value(client);
        assert_eq!(
            req.target,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let (out, d) = run_stream(&[fixture("gemini/g2_1_upstream.sse").as_bytes()], true);
        assert_eq!(out, fixture("gemini/g2_2_openai.sse"));
        assert_eq!(d.usage().unwrap().total_tokens, 98);
    }

    #[test]
    fn thought_signatures_come_back_on_replayed_calls() {
        // G2.1 returns call_r-123_0 with signature c2lnLTE= (providers.md 9.4).
        run_stream(&[fixture("gemini/g2_1_upstream.sse").as_bytes()], true);
        let req = encode_value(json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_r-123_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_r-123_0", "content": "18C"}
        ]}));
        let sent: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            sent["contents"][1]["parts"][0]["thoughtSignature"],
            "c2lnLTE="
        );
        assert_eq!(
            sent["contents"][1]["parts"][0]["functionCall"]["name"],
            "get_weather"
        );
    }

    #[test]
    fn g2_stream_decodes_the_same_at_every_split() {
        split_invariant(fixture("gemini/g2_1_upstream.sse").as_bytes(), |c| {
            run_stream(c, true).0
        });
    }

    #[test]
    fn errors_keep_status_and_detect_context_overflow() {
        let e = error(
            400,
            br#"{"error": {"code": 400, "message": "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT", "details": []}}"#,
        );
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        let e = error(
            429,
            br#"{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(e.kind, "rate_limit_error");
    }

    #[test]
    fn an_unframed_error_body_on_the_stream_becomes_an_error_event() {
        let (out, d) = run_stream(
            &[b"{\n  \"error\": {\n    \"code\": 503,\n    \"message\": \"The model is overloaded.\",\n    \"status\": \"UNAVAILABLE\"\n  }\n}\n"],
            false,
        );
        assert!(out.starts_with("data: {\"error\""), "{out}");
        assert!(!out.contains("[DONE]"));
        assert_eq!(d.upstream_error(), Some("The model is overloaded."));
    }

    #[test]
    fn blocked_prompts_and_safety_stops_are_content_filter() {
        let (body, _) = decode(
            br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3,"totalTokenCount":3}}"#,
            &opts(false),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(finish_reason("SAFETY", false), "content_filter");
        assert_eq!(finish_reason("STOP", true), "tool_calls");
    }

    #[test]
    fn remote_image_urls_are_refused_with_their_path() {
        let (base, headers) = target_for("https://generativelanguage.googleapis.com/v1beta");
        let target = Target::new(super::super::Wire::Gemini, &base, "g", &headers);
        let req = ChatRequest::read(obj(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})))
        .unwrap();
        let e = encode(req, &target).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].image_url"));
    }
}
