//! A mock LLM provider that speaks OpenAI's wire format over real HTTP, for Sluice's tests and
//! load benchmark.
//!
//! It answers `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/responses`
//! (OpenAI's Responses API, also Azure's `/openai/responses`, keeping what it answers for
//! `previous_response_id` and `GET`/`DELETE /v1/responses/{id}` and `.../input_items`, as
//! OpenAI does) and `/v1/models` (with or without `/v1`), streams SSE with configurable chunk count and pacing, adds latency,
//! fails on request, and counts and records every call so tests can assert how many upstream
//! calls happened and what they carried.
//!
//! Behaviour comes from the server defaults ([`MockConfig`]) and can be overridden per request
//! by a `"mock"` object in the JSON body, which the gateway forwards untouched:
//! `{"mock": {"status": 429, "latency_ms": 50, "chunks": 3, "chunk_delay_ms": 50,
//! "reset_after_chunks": 1, "invalid_json": true, "model": "served-name", "content": "hi"}}`,
//! `"status_for_model": {"model-a": 429}` (fail only where the upstream model is model-a),
//! `"for_model": {"model-a": {"reset_after_chunks": 0}}` (any fields, for one upstream model) and
//! `"retry_after": "2"`, `"status_ratio": 0.5` (the status for half the calls only).
//! [`MockConfig::script`] fails the first calls whatever they ask.
//! A [`RawServer`] answers with bytes that are not HTTP at all, or closes without answering.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub mod formats;
use formats::{Answer, Format};

/// Server-wide defaults.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Delay before the response header.
    pub latency: Duration,
    /// Content chunks in a streamed answer.
    pub chunks: usize,
    /// Pause between streamed chunks.
    pub chunk_delay: Duration,
    /// Model name in responses; `None` echoes the request's `model`.
    pub served_model: Option<String>,
    /// Dimensions of mock embeddings.
    pub embedding_dims: usize,
    /// Keep the last this many requests for inspection.
    pub record_limit: usize,
    /// Statuses for the first calls since start (not undone by [`MockProvider::reset`]), in
    /// order (200: answer normally); later calls answer as the request asks. A retry of the
    /// same request can so fail first and then succeed.
    pub script: Vec<u16>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Duration::ZERO,
            chunks: 5,
            chunk_delay: Duration::ZERO,
            served_model: None,
            embedding_dims: 8,
            record_limit: 200,
            script: Vec::new(),
        }
    }
}

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query string ("" without one).
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct State {
    calls: AtomicU64,
    by_path: Mutex<HashMap<String, u64>>,
    recorded: Mutex<Vec<Recorded>>,
    /// Streams the mock noticed were abandoned by the client before their end.
    streams_cut_by_client: AtomicU64,
    sequence: AtomicU64,
    /// Calls since start (not reset): what [`MockConfig::script`] counts.
    lifetime_calls: AtomicU64,
    /// Responses API answers kept, as OpenAI keeps them: id -> (Response, input items).
    responses: Mutex<HashMap<String, (Value, Value)>>,
}

/// A running mock.
#[derive(Clone)]
pub struct MockProvider {
    pub addr: SocketAddr,
    state: Arc<State>,
    config: Arc<MockConfig>,
}

impl MockProvider {
    /// Starts on `127.0.0.1:0` on the current tokio runtime.
    pub async fn start(config: MockConfig) -> MockProvider {
        Self::bind("127.0.0.1:0".parse().expect("address"), config).await
    }

    /// Starts on the given address on the current tokio runtime.
    pub async fn bind(addr: SocketAddr, config: MockConfig) -> MockProvider {
        let listener = TcpListener::bind(addr).await.expect("bind mock provider");
        let addr = listener.local_addr().expect("local addr");
        let mock = MockProvider {
            addr,
            state: Arc::new(State::default()),
            config: Arc::new(config),
        };
        let server = mock.clone();
        tokio::spawn(async move { server.serve(listener).await });
        mock
    }

    /// `http://127.0.0.1:<port>/v1`, an `api_base` for the gateway's config.
    pub fn api_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Model calls received (chat, completions, embeddings), all paths together.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Calls per request path.
    pub fn calls_to(&self, path: &str) -> u64 {
        self.state.by_path.lock().get(path).copied().unwrap_or(0)
    }

    /// The recorded requests, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.recorded.lock().clone()
    }

    pub fn last_request(&self) -> Option<Recorded> {
        self.state.recorded.lock().last().cloned()
    }

    /// Streams whose client (the gateway) went away before the mock finished sending.
    pub fn streams_cut_by_client(&self) -> u64 {
        self.state.streams_cut_by_client.load(Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.state.calls.store(0, Ordering::SeqCst);
        self.state.by_path.lock().clear();
        self.state.recorded.lock().clear();
        self.state.streams_cut_by_client.store(0, Ordering::SeqCst);
    }

    async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let mock = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let mock = mock.clone();
                    async move { Ok::<_, Infallible>(mock.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, std::io::Error>> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let headers: HashMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(StatusCode::BAD_REQUEST, "unreadable body"),
        };
        let format = Format::of(&method, &path);
        let route = match format {
            // `/openai/deployments/{deployment}/chat/completions` answers like `/chat/completions`.
            Some(Format::Azure) if path.ends_with("/responses") => "/responses".to_string(),
            Some(Format::Azure) => path
                .strip_prefix("/openai/deployments/")
                .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
                .unwrap_or_default(),
            _ => path.strip_prefix("/v1").unwrap_or(&path).to_string(),
        };
        let stored_route = route
            .strip_prefix("/responses/")
            .or_else(|| path.strip_prefix("/openai/responses/"))
            .filter(|_| method == "GET" || method == "DELETE");
        if let Some(rest) = stored_route {
            self.state.calls.fetch_add(1, Ordering::SeqCst);
            self.record(&method, &path, &query, &headers, &body);
            return self.stored_response(&method, rest);
        }
        if format.is_none() {
            match (method.as_str(), route.as_str()) {
                ("GET", "/models") => return json_response(StatusCode::OK, &models()),
                ("GET", "/__mock/calls") => {
                    let by_path = self.state.by_path.lock().clone();
                    return json_response(
                        StatusCode::OK,
                        &json!({"calls": self.calls(), "by_path": by_path}),
                    );
                }
                ("POST", "/__mock/reset") => {
                    self.reset();
                    return json_response(StatusCode::OK, &json!({"reset": true}));
                }
                (
                    "POST",
                    "/chat/completions"
                    | "/completions"
                    | "/embeddings"
                    | "/responses"
                    | "/images/generations"
                    | "/audio/speech"
                    | "/audio/transcriptions"
                    | "/moderations"
                    | "/rerank"
                    | "/v2/rerank",
                ) => {}
                _ => {
                    return json_response(
                        StatusCode::NOT_FOUND,
                        &openai_error("Invalid URL (POST /nope)", "invalid_request_error", None),
                    );
                }
            }
        }
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        let call = self.state.lifetime_calls.fetch_add(1, Ordering::SeqCst);
        let scripted = self
            .config
            .script
            .get(call as usize)
            .copied()
            .filter(|s| *s != 200);
        self.record(&method, &path, &query, &headers, &body);
        if route == "/audio/transcriptions" {
            return transcription(&headers, &body);
        }
        if let Some(format) = format {
            let request: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &formats::error_body(format, 400, &format!("invalid JSON: {e}")),
                    );
                }
            };
            if let Err(refusal) = formats::validate(format, &headers, &query, &request) {
                let mut response = json_response(refusal.status, &refusal.body);
                if let Format::Bedrock { .. } = format.family() {
                    response.headers_mut().insert(
                        "x-amzn-errortype",
                        http::HeaderValue::from_static(formats::bedrock_error_type(
                            refusal.status.as_u16(),
                        )),
                    );
                }
                return response;
            }
            if format != Format::Azure {
                return self.provider_call(format, &path, &request, scripted).await;
            }
        }
        let request: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &openai_error(
                        &format!("We could not parse the JSON body of your request: {e}"),
                        "invalid_request_error",
                        None,
                    ),
                );
            }
        };
        let mut plan = Plan::new(&self.config, &request);
        plan.status = scripted.or(plan.status);
        if !plan.latency.is_zero() {
            tokio::time::sleep(plan.latency).await;
        }
        if let Some(status) = plan.status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Some(raw) = &plan.error_body {
                return text(status, raw);
            }
            let (kind, code) = match status.as_u16() {
                429 => ("rate_limit_error", Some("rate_limit_exceeded")),
                401 => ("invalid_request_error", Some("invalid_api_key")),
                400 => ("invalid_request_error", None),
                _ => ("server_error", None),
            };
            let mut response = json_response(
                status,
                &openai_error(
                    &format!("mock failure with status {}", status.as_u16()),
                    kind,
                    code,
                ),
            );
            plan.add_retry_after(&mut response, status);
            return response;
        }
        // OpenAI's moderations default their model (`omni-moderation-latest`); every other
        // route needs one.
        if request.get("model").and_then(Value::as_str).is_none() && route != "/moderations" {
            return json_response(
                StatusCode::BAD_REQUEST,
                &openai_error(
                    "you must provide a model parameter",
                    "invalid_request_error",
                    None,
                ),
            );
        }
        let n = self.state.sequence.fetch_add(1, Ordering::Relaxed);
        match route.as_str() {
            "/embeddings" => self.embeddings(&request, &plan),
            "/images/generations" => {
                let n = request["n"].as_u64().unwrap_or(1);
                let data: Vec<Value> = (0..n)
                    .map(|i| json!({"url": format!("https://images.example/{n}-{i}.png"), "revised_prompt": request["prompt"]}))
                    .collect();
                json_response(StatusCode::OK, &json!({"created": now(), "data": data}))
            }
            "/audio/speech" => {
                // "Audio": the input's bytes repeated, sent in chunks at the plan's pace.
                let input = request["input"]
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec();
                let frames = (0..plan.chunks.max(1))
                    .map(|i| {
                        let mut frame = format!("ID3-{i}-").into_bytes();
                        frame.extend_from_slice(&input);
                        Bytes::from(frame)
                    })
                    .collect();
                let mut response = self.send_frames(frames, plan, None);
                response
                    .headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("audio/mpeg"));
                response
            }
            "/moderations" => json_response(
                StatusCode::OK,
                &json!({"id": format!("modr-{n}"), "model": plan.model, "results": [{
                    "flagged": false, "categories": {"violence": false, "harassment": false},
                    "category_scores": {"violence": 0.0001, "harassment": 0.0002}}]}),
            ),
            "/rerank" | "/v2/rerank" => {
                let docs = request["documents"].as_array().cloned().unwrap_or_default();
                let results: Vec<Value> = (0..docs.len())
                    .rev()
                    .map(|i| json!({"index": i, "relevance_score": (i + 1) as f64 / (docs.len() + 1) as f64}))
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({"id": format!("rerank-{n}"), "results": results,
                        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}}),
                )
            }
            "/responses" => {
                if let Some(previous) = request["previous_response_id"].as_str()
                    && !self.state.responses.lock().contains_key(previous)
                {
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &openai_error(
                            &format!("Previous response with id '{previous}' not found."),
                            "invalid_request_error",
                            Some("previous_response_not_found"),
                        ),
                    );
                }
                let id = format!("resp_mock{}_{n}", self.addr.port());
                let (response, events) = responses_answer(&request, &plan, &id);
                let input = match &request["input"] {
                    Value::String(text) => {
                        json!([{"type": "message", "role": "user", "id": format!("msg_in{n}"),
                        "content": [{"type": "input_text", "text": text}]}])
                    }
                    other => other.clone(),
                };
                self.state
                    .responses
                    .lock()
                    .insert(id, (response.clone(), input));
                if request.get("stream").and_then(Value::as_bool) == Some(true) {
                    let frames = events
                        .into_iter()
                        .map(|(name, data)| Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
                        .collect();
                    self.send_frames(frames, plan, None)
                } else {
                    json_response(StatusCode::OK, &response)
                }
            }
            kind => {
                let chat = kind == "/chat/completions";
                if plan.invalid_json {
                    return text_with_type(StatusCode::OK, "application/json", "{\"id\": \"broken");
                }
                if request.get("stream").and_then(Value::as_bool) == Some(true) {
                    self.stream(&request, plan, chat, n)
                } else {
                    json_response(StatusCode::OK, &completion(&request, &plan, chat, n))
                }
            }
        }
    }

    /// Counts a call by path and keeps it (up to `record_limit`).
    fn record(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &HashMap<String, String>,
        body: &Bytes,
    ) {
        *self
            .state
            .by_path
            .lock()
            .entry(path.to_string())
            .or_default() += 1;
        if self.config.record_limit > 0 {
            let mut recorded = self.state.recorded.lock();
            if recorded.len() >= self.config.record_limit {
                recorded.remove(0);
            }
            recorded.push(Recorded {
                method: method.to_string(),
                path: path.to_string(),
                query: query.to_string(),
                headers: headers.clone(),
                body: body.clone(),
            });
        }
    }

    /// `GET`/`DELETE /v1/responses/{id}` and `GET .../input_items` on what this mock keeps.
    fn stored_response(
        &self,
        method: &str,
        rest: &str,
    ) -> Response<BoxBody<Bytes, std::io::Error>> {
        let (id, items) = match rest.strip_suffix("/input_items") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        let mut kept = self.state.responses.lock();
        let Some((response, input)) = kept.get(id).cloned() else {
            return json_response(
                StatusCode::NOT_FOUND,
                &openai_error(
                    &format!("Response with id '{id}' not found."),
                    "invalid_request_error",
                    None,
                ),
            );
        };
        match (method, items) {
            ("DELETE", _) => {
                kept.remove(id);
                json_response(
                    StatusCode::OK,
                    &json!({"id": id, "object": "response", "deleted": true}),
                )
            }
            (_, true) => json_response(
                StatusCode::OK,
                &json!({"object": "list", "data": input, "has_more": false,
                    "first_id": input[0]["id"], "last_id": input[0]["id"]}),
            ),
            _ => json_response(StatusCode::OK, &response),
        }
    }

    /// A call in a provider's own format (Anthropic, Gemini, Ollama, Cohere).
    async fn provider_call(
        &self,
        format: Format,
        path: &str,
        request: &Value,
        scripted: Option<u16>,
    ) -> Response<BoxBody<Bytes, std::io::Error>> {
        let mut plan = Plan::new(&self.config, request);
        plan.status = scripted.or(plan.status);
        if plan.model.is_empty() {
            // Gemini names the model in the path.
            plan.model = path
                .rsplit('/')
                .next()
                .and_then(|m| m.split(':').next())
                .unwrap_or("mock")
                .to_string();
        }
        if !plan.latency.is_zero() {
            tokio::time::sleep(plan.latency).await;
        }
        if format.is_embedding() && plan.status.is_none() {
            return json_response(
                StatusCode::OK,
                &formats::embedding_body(format, request, self.config.embedding_dims),
            );
        }
        if let Some(status) = plan.status {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = match (format, status.as_u16()) {
                (Format::Anthropic, 529) => "Overloaded".to_string(),
                (Format::Anthropic, 400) if plan.context_overflow => {
                    "prompt is too long: 208656 tokens > 200000 maximum".to_string()
                }
                (_, s) => format!("mock failure with status {s}"),
            };
            let mut response = json_response(
                status,
                &formats::error_body(format, status.as_u16(), &message),
            );
            if let Format::Bedrock { .. } = format.family() {
                response.headers_mut().insert(
                    "x-amzn-errortype",
                    http::HeaderValue::from_static(formats::bedrock_error_type(status.as_u16())),
                );
            }
            plan.add_retry_after(&mut response, status);
            return response;
        }
        let n = self.state.sequence.fetch_add(1, Ordering::Relaxed);
        let answer = Answer {
            id: format!("mock-{}-{n}", format.name()),
            model: &plan.model,
            words: plan.words(),
            tool_call: request
                .get("mock")
                .unwrap_or(&request["additionalModelRequestFields"]["mock"])["tool_call"]
                .as_object()
                .map(|t| {
                    (
                        t.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("tool")
                            .to_string(),
                        t.get("arguments").cloned().unwrap_or_else(|| json!({})),
                    )
                }),
            prompt_tokens: prompt_tokens_any(request),
        };
        let streaming = match format {
            Format::Gemini { stream } | Format::Bedrock { stream } => stream,
            // Ollama streams unless told not to.
            Format::OllamaChat | Format::OllamaGenerate => {
                request["stream"].as_bool() != Some(false)
            }
            _ => request["stream"].as_bool() == Some(true),
        };
        if !streaming {
            return json_response(StatusCode::OK, &answer.body(format));
        }
        let mut frames = answer.frames(format);
        if let Some(after) = plan.stream_error_after {
            frames.truncate(after);
            frames.push(Answer::stream_error(format));
        }
        self.paced(frames, plan, Answer::content_type(format))
    }

    /// Sends frames with the plan's pacing (and reset), noticing a client that leaves early.
    fn paced(
        &self,
        frames: Vec<Bytes>,
        plan: Plan,
        content_type: &'static str,
    ) -> Response<BoxBody<Bytes, std::io::Error>> {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            let total = frames.len();
            for (i, frame) in frames.into_iter().enumerate() {
                if i > 0 && !plan.chunk_delay.is_zero() {
                    tokio::time::sleep(plan.chunk_delay).await;
                }
                if plan.reset_after_chunks == Some(i) {
                    let _ = tx
                        .send(Err(std::io::Error::other("mock reset mid-stream")))
                        .await;
                    return;
                }
                if tx.send(Ok(Frame::data(frame))).await.is_err() {
                    if i + 1 < total {
                        state.streams_cut_by_client.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", content_type)
            .header("x-mock-provider", "mock")
            .body(BoxBody::new(StreamBody::new(ReceiverStream(rx))))
            .expect("response")
    }

    fn embeddings(&self, request: &Value, plan: &Plan) -> Response<BoxBody<Bytes, std::io::Error>> {
        let inputs: Vec<String> = match &request["input"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items.iter().map(|i| i.to_string()).collect(),
            other => vec![other.to_string()],
        };
        let dims = request["dimensions"]
            .as_u64()
            .map_or(self.config.embedding_dims, |d| d as usize);
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let seed = text.len() as f64;
                let vector: Vec<f64> = (0..dims)
                    .map(|d| ((seed + d as f64) * 0.37).sin() / 10.0)
                    .collect();
                json!({"object": "embedding", "index": i, "embedding": vector})
            })
            .collect();
        let tokens: u64 = inputs.iter().map(|t| tokens_of(t)).sum();
        json_response(
            StatusCode::OK,
            &json!({
                "object": "list",
                "data": data,
                "model": plan.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
            }),
        )
    }

    fn stream(
        &self,
        request: &Value,
        plan: Plan,
        chat: bool,
        n: u64,
    ) -> Response<BoxBody<Bytes, std::io::Error>> {
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        let prompt_tokens = prompt_tokens_any(request);
        let request_tool_call = request["mock"]["tool_call"].as_object().map(|t| {
            (
                t.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("tool")
                    .to_string(),
                t.get("arguments")
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "{}".into()),
            )
        });
        let id = format!("chatcmpl-mock-{n}");
        let created = now();
        let object = if chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let tool_call = request_tool_call.clone();
        let words = if tool_call.is_some() {
            Vec::new()
        } else {
            plan.words()
        };
        let mut events: Vec<Value> = Vec::new();
        if chat {
            events.push(json!({"id": id, "object": object, "created": created, "model": plan.model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]}));
        }
        for word in &words {
            let choice = if chat {
                json!({"index": 0, "delta": {"content": word}, "logprobs": null, "finish_reason": null})
            } else {
                json!({"index": 0, "text": word, "logprobs": null, "finish_reason": null})
            };
            events.push(json!({"id": id, "object": object, "created": created, "model": plan.model, "system_fingerprint": "fp_mock", "choices": [choice]}));
        }
        if let Some((name, args)) = &tool_call {
            events.push(json!({"id": id, "object": object, "created": created, "model": plan.model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_mock1", "type": "function", "function": {"name": name, "arguments": ""}}]}, "logprobs": null, "finish_reason": null}]}));
            events.push(json!({"id": id, "object": object, "created": created, "model": plan.model, "system_fingerprint": "fp_mock",
                "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args}}]}, "logprobs": null, "finish_reason": null}]}));
        }
        let last = if chat {
            json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": if tool_call.is_some() { "tool_calls" } else { "stop" }})
        } else {
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "stop"})
        };
        events.push(json!({"id": id, "object": object, "created": created, "model": plan.model, "system_fingerprint": "fp_mock", "choices": [last]}));
        if include_usage {
            let completion_tokens = if tool_call.is_some() {
                5
            } else {
                words.len() as u64
            };
            events.push(json!({"id": id, "object": object, "created": created, "model": plan.model, "system_fingerprint": "fp_mock", "choices": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}}));
        }
        let frames = events
            .into_iter()
            .map(|event| Bytes::from(format!("data: {event}\n\n")))
            .collect();
        self.send_frames(frames, plan, Some(Bytes::from_static(b"data: [DONE]\n\n")))
    }

    /// Sends SSE `frames` at the plan's pace (then `trailer`), cutting the connection where
    /// the plan says.
    fn send_frames(
        &self,
        frames: Vec<Bytes>,
        plan: Plan,
        trailer: Option<Bytes>,
    ) -> Response<BoxBody<Bytes, std::io::Error>> {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let state = self.state.clone();
        tokio::spawn(async move {
            let total = frames.len();
            for (i, frame) in frames.into_iter().enumerate() {
                if i > 0 && !plan.chunk_delay.is_zero() {
                    tokio::time::sleep(plan.chunk_delay).await;
                }
                if plan.reset_after_chunks == Some(i) {
                    let _ = tx
                        .send(Err(std::io::Error::other("mock reset mid-stream")))
                        .await;
                    return;
                }
                if tx.send(Ok(Frame::data(frame))).await.is_err() {
                    if i + 1 < total {
                        state.streams_cut_by_client.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
            }
            if let Some(trailer) = trailer {
                if !plan.chunk_delay.is_zero() {
                    tokio::time::sleep(plan.chunk_delay).await;
                }
                let _ = tx.send(Ok(Frame::data(trailer))).await;
            }
        });
        let body = StreamBody::new(ReceiverStream(rx));
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream; charset=utf-8")
            .header("x-mock-provider", "openai")
            .body(BoxBody::new(body))
            .expect("response")
    }
}

/// A Responses API answer: the Response object and, for a stream, its event sequence (text
/// from the plan, or the request's `mock.tool_call` as a function call).
fn responses_answer(request: &Value, plan: &Plan, id: &str) -> (Value, Vec<(String, Value)>) {
    let input_tokens = prompt_tokens_any(request);
    let words = plan.words();
    let text = plan.content.clone().unwrap_or_else(|| words.concat());
    let output_tokens = plan
        .content
        .as_deref()
        .map_or(words.len() as u64, tokens_of);
    let item = match request["mock"]["tool_call"].as_object() {
        Some(t) => {
            json!({"type": "function_call", "id": format!("fc_{id}"), "status": "completed", "call_id": "call_mock1",
            "name": t.get("name").and_then(Value::as_str).unwrap_or("tool"),
            "arguments": t.get("arguments").map(|a| a.to_string()).unwrap_or_else(|| "{}".into())})
        }
        None => {
            json!({"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]})
        }
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": now(), "status": status, "error": null,
            "incomplete_details": null, "instructions": request.get("instructions").cloned().unwrap_or(Value::Null),
            "model": plan.model, "output": output, "parallel_tool_calls": true, "tool_choice": "auto",
            "tools": request.get("tools").cloned().unwrap_or(json!([])),
            "previous_response_id": request.get("previous_response_id").cloned().unwrap_or(Value::Null),
            "text": {"format": {"type": "text"}}, "usage": usage})
    };
    let usage = json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens});
    let done = response("completed", json!([item]), usage);
    let mut events = vec![
        (
            "response.created".to_string(),
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
        (
            "response.in_progress".to_string(),
            json!({"response": response("in_progress", json!([]), Value::Null)}),
        ),
    ];
    let mut pending = item.clone();
    if item["type"] == "message" {
        pending["status"] = json!("in_progress");
        pending["content"] = json!([]);
        events.push((
            "response.output_item.added".into(),
            json!({"output_index": 0, "item": pending}),
        ));
        events.push((
            "response.content_part.added".into(),
            json!({"item_id": item["id"], "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
        ));
        for word in &words {
            events.push(("response.output_text.delta".into(), json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "delta": word, "logprobs": []})));
        }
        events.push(("response.output_text.done".into(), json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "text": text, "logprobs": []})));
        events.push(("response.content_part.done".into(), json!({"item_id": item["id"], "output_index": 0, "content_index": 0, "part": item["content"][0]})));
    } else {
        pending["status"] = json!("in_progress");
        pending["arguments"] = json!("");
        events.push((
            "response.output_item.added".into(),
            json!({"output_index": 0, "item": pending}),
        ));
        events.push((
            "response.function_call_arguments.delta".into(),
            json!({"item_id": item["id"], "output_index": 0, "delta": item["arguments"]}),
        ));
        events.push((
            "response.function_call_arguments.done".into(),
            json!({"item_id": item["id"], "output_index": 0, "arguments": item["arguments"]}),
        ));
    }
    events.push((
        "response.output_item.done".into(),
        json!({"output_index": 0, "item": item}),
    ));
    events.push(("response.completed".into(), json!({"response": done})));
    let events = events
        .into_iter()
        .enumerate()
        .map(|(i, (name, mut data))| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(i);
            (name, data)
        })
        .collect();
    (done, events)
}

/// `POST /v1/audio/transcriptions`: a multipart form with `model` and `file`; the answer
/// says which model and how many file bytes it got, as JSON with the audio's duration (one
/// second per 100 bytes) or, with `response_format=text`, as text.
fn transcription(
    headers: &HashMap<String, String>,
    body: &Bytes,
) -> Response<BoxBody<Bytes, std::io::Error>> {
    let content_type = headers.get("content-type").cloned().unwrap_or_default();
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &openai_error("expected a multipart form", "invalid_request_error", None),
        );
    };
    let delimiter = format!("--{}", boundary.trim_matches('"'));
    let text = String::from_utf8_lossy(body);
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut file_bytes = 0;
    for part in text.split(delimiter.as_str()) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        if name == "file" {
            file_bytes = value.len();
        } else {
            fields.insert(name.to_string(), value.to_string());
        }
    }
    let model = fields.get("model").cloned().unwrap_or_default();
    let said = format!("transcribed {file_bytes} bytes with {model}");
    if fields.get("response_format").map(String::as_str) == Some("text") {
        return text_with_type(StatusCode::OK, "text/plain; charset=utf-8", &said);
    }
    json_response(
        StatusCode::OK,
        &json!({"text": said, "usage": {"type": "duration", "seconds": (file_bytes as f64 / 100.0).ceil()}}),
    )
}

/// What one request should get.
struct Plan {
    latency: Duration,
    chunks: usize,
    chunk_delay: Duration,
    status: Option<u16>,
    error_body: Option<String>,
    reset_after_chunks: Option<usize>,
    invalid_json: bool,
    model: String,
    content: Option<String>,
    /// Provider formats: replace the frames after this many by the provider's error event.
    stream_error_after: Option<usize>,
    /// Anthropic 400: say "prompt is too long".
    context_overflow: bool,
    /// `retry-after` on an error answer (429s get "1" unless the request says).
    retry_after: Option<String>,
}

/// The next of an evenly spread sequence in [0, 1) (Weyl's, golden-ratio step): which calls a
/// `status_ratio` fails.
fn draw() -> f64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64
}

impl Plan {
    fn new(config: &MockConfig, request: &Value) -> Plan {
        // Bedrock carries extra fields in additionalModelRequestFields.
        let base = match request.get("mock") {
            Some(m) => m,
            None => &request["additionalModelRequestFields"]["mock"],
        };
        // `for_model: {"model-a": {...}}`: fields that apply only where the upstream model is
        // model-a, so one request can behave differently on each deployment it is sent to.
        let merged;
        let m = match request["model"]
            .as_str()
            .and_then(|model| base["for_model"][model].as_object())
        {
            Some(over) => {
                let mut all = base.as_object().cloned().unwrap_or_default();
                all.extend(over.clone());
                merged = Value::Object(all);
                &merged
            }
            None => base,
        };
        let ms =
            |key: &str, default: Duration| m[key].as_u64().map_or(default, Duration::from_millis);
        Plan {
            latency: ms("latency_ms", config.latency),
            chunks: m["chunks"].as_u64().map_or(config.chunks, |c| c as usize),
            chunk_delay: ms("chunk_delay_ms", config.chunk_delay),
            // `status_for_model: {"model-a": 429}`: fail only for the deployments sending
            // that model, so one request can fail on one deployment and succeed on another.
            status: request["model"]
                .as_str()
                .and_then(|model| m["status_for_model"][model].as_u64())
                .or_else(|| m["status"].as_u64())
                .map(|s| s as u16)
                // `status_ratio: 0.5`: the status for that share of the calls only (an evenly
                // spread sequence, the rest answer normally), e.g. a deployment that answers
                // 429 to half its requests.
                .filter(|_| {
                    m["status_ratio"]
                        .as_f64()
                        .is_none_or(|ratio| draw() < ratio)
                }),
            error_body: m["error_body"].as_str().map(str::to_owned),
            reset_after_chunks: m["reset_after_chunks"].as_u64().map(|c| c as usize),
            invalid_json: m["invalid_json"].as_bool() == Some(true),
            model: m["model"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| config.served_model.clone())
                .or_else(|| request["model"].as_str().map(str::to_owned))
                .unwrap_or_default(),
            content: m["content"].as_str().map(str::to_owned),
            stream_error_after: m["stream_error_after"].as_u64().map(|c| c as usize),
            context_overflow: m["context_overflow"].as_bool() == Some(true),
            retry_after: m["retry_after"].as_str().map(str::to_owned),
        }
    }

    fn add_retry_after(
        &self,
        response: &mut Response<BoxBody<Bytes, std::io::Error>>,
        status: StatusCode,
    ) {
        let value = match (&self.retry_after, status.as_u16()) {
            (Some(v), _) => v.clone(),
            (None, 429) => "1".to_string(),
            _ => return,
        };
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            response.headers_mut().insert("retry-after", v);
        }
    }

    fn words(&self) -> Vec<String> {
        match &self.content {
            Some(c) => vec![c.clone()],
            None => (0..self.chunks)
                .map(|i| {
                    if i == 0 {
                        "Hello".to_string()
                    } else {
                        format!(" word{i}")
                    }
                })
                .collect(),
        }
    }
}

fn completion(request: &Value, plan: &Plan, chat: bool, n: u64) -> Value {
    let content = plan
        .content
        .clone()
        .unwrap_or_else(|| plan.words().concat());
    let prompt_tokens = prompt_tokens_any(request);
    let completion_tokens = plan
        .content
        .as_deref()
        .map_or(plan.chunks as u64, tokens_of);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}});
    if chat {
        let (message, finish) = match request["mock"]["tool_call"].as_object() {
            Some(t) => (
                json!({"role": "assistant", "content": null, "refusal": null, "annotations": [], "tool_calls": [{
                    "id": "call_mock1", "type": "function", "function": {
                        "name": t.get("name").and_then(Value::as_str).unwrap_or("tool"),
                        "arguments": t.get("arguments").map(|a| a.to_string()).unwrap_or_else(|| "{}".into())}}]}),
                "tool_calls",
            ),
            None => (
                json!({"role": "assistant", "content": content, "refusal": null, "annotations": []}),
                "stop",
            ),
        };
        json!({
            "id": format!("chatcmpl-mock-{n}"), "object": "chat.completion", "created": now(), "model": plan.model,
            "system_fingerprint": "fp_mock", "service_tier": "default",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage
        })
    } else {
        json!({
            "id": format!("cmpl-mock-{n}"), "object": "text_completion", "created": now(), "model": plan.model,
            "choices": [{"text": content, "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage
        })
    }
}

/// A rough, deterministic token count: one per four characters, at least one.
fn tokens_of(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// Prompt tokens of a request in any provider format: the characters of every text it carries
/// (`content`, `text`, `system`, `prompt` strings, wherever they sit) over four, so the same
/// conversation counts the same in every format.
fn prompt_tokens_any(request: &Value) -> u64 {
    fn walk(v: &Value, chars: &mut u64) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("mock", _) => {}
                        ("content" | "text" | "system" | "prompt", Value::String(s)) => {
                            *chars += s.chars().count() as u64
                        }
                        _ => walk(v, chars),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, chars)),
            _ => {}
        }
    }
    let mut chars = 0;
    walk(request, &mut chars);
    chars.div_ceil(4).max(1)
}

fn models() -> Value {
    json!({"object": "list", "data": [
        {"id": "mock-gpt", "object": "model", "created": 1_715_367_049u64, "owned_by": "system"},
        {"id": "mock-embedding", "object": "model", "created": 1_715_367_049u64, "owned_by": "system"}
    ]})
}

/// OpenAI's error body.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn json_response(status: StatusCode, value: &Value) -> Response<BoxBody<Bytes, std::io::Error>> {
    text_with_type(status, "application/json", &value.to_string())
}

fn text(status: StatusCode, body: &str) -> Response<BoxBody<Bytes, std::io::Error>> {
    text_with_type(status, "text/plain", body)
}

fn text_with_type(
    status: StatusCode,
    content_type: &str,
    body: &str,
) -> Response<BoxBody<Bytes, std::io::Error>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-mock-provider", "openai")
        .body(BoxBody::new(
            Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}),
        ))
        .expect("response")
}

/// An `mpsc::Receiver` as the `Stream` that `StreamBody` takes.
struct ReceiverStream(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<Frame<Bytes>, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A TCP server that answers every connection with bytes that are not HTTP, or closes it
/// without a word: the "upstream returns garbage" and "upstream resets" cases.
pub struct RawServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// What a [`RawServer`] does with each connection.
#[derive(Debug, Clone)]
pub enum RawBehavior {
    /// Read the request, answer these bytes, close.
    Reply(Bytes),
    /// Read the request, close without answering.
    Close,
    /// Read the request and never answer (a hung upstream).
    Hang,
    /// Read the request, answer these bytes, then keep the connection open without sending
    /// more (a stream that stalls after its start).
    ReplyThenHang(Bytes),
    /// Answer the first request on a connection with these bytes and keep it open; read the
    /// next one and close without answering: a provider that takes a request on a kept-alive
    /// connection and drops the connection. Every request is read whole (head and
    /// `content-length` body) and kept, see [`RawServer::requests`].
    OnePerConnection(Bytes),
    /// Answer the first request on a connection with these bytes, then close the connection
    /// at once: a kept-alive connection the provider closed while it sat in the gateway's
    /// pool. Requests are kept as with `OnePerConnection`.
    CloseAfterReply(Bytes),
}

/// Reads one HTTP/1.1 request (head and `content-length` body); `None` at EOF or on a read
/// error.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                return Some(request);
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
}

impl RawServer {
    pub async fn start(behavior: RawBehavior) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw server");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let received = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let behavior = behavior.clone();
                let received = received.clone();
                tokio::spawn(async move {
                    if let RawBehavior::CloseAfterReply(answer) = &behavior {
                        let Some(first) = read_request(&mut stream).await else {
                            return;
                        };
                        received.lock().push(first);
                        let _ = stream.write_all(answer).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                    if let RawBehavior::OnePerConnection(answer) = &behavior {
                        let Some(first) = read_request(&mut stream).await else {
                            return;
                        };
                        received.lock().push(first);
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        if let Some(second) = read_request(&mut stream).await {
                            received.lock().push(second);
                        }
                        return;
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = stream.read(&mut buf).await;
                    match behavior {
                        RawBehavior::Reply(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            let _ = stream.shutdown().await;
                        }
                        RawBehavior::Close => {}
                        RawBehavior::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        RawBehavior::ReplyThenHang(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        RawBehavior::OnePerConnection(_) | RawBehavior::CloseAfterReply(_) => {}
                    }
                });
            }
        });
        RawServer {
            addr,
            accepted,
            requests,
        }
    }

    /// The requests read whole so far, raw (kept by [`RawBehavior::OnePerConnection`]).
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().clone()
    }

    pub fn api_base(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}
