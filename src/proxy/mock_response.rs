//! LiteLLM's `mock_response` request parameter: the answer a chat completion gets instead of
//! the provider's, to test clients, budgets and the router without a provider. Called from a
//! group's attempt loop (`group.rs`, inside Pingora's `request_filter`) in place of calling
//! the deployment: a text becomes the assistant's message (streamed when the client asked for a
//! stream), an object is the response itself, and LiteLLM's error names fail the attempt like
//! the provider's errors would (retries and fallbacks included; no cooldown).
//!
//! Usage as LiteLLM's `mock_completion` counts it: the prompt's tokens (as the budget
//! reservation counts them), 20 completion tokens; the cost is the deployment's price for that,
//! so spend and budgets behave as with a real answer.

use std::time::Instant;

use bytes::Bytes;
use filters::ApiError;
use filters::usage::Usage;
use http::header::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::{Value, json};

use super::attempt::{Attempt, Failed, Reply};
use super::ctx::Ctx;
use super::headers::*;
use crate::access_log::millis_header;
use crate::providers::translate::classify;

/// LiteLLM's `DEFAULT_MOCK_RESPONSE_COMPLETION_TOKEN_COUNT`.
const COMPLETION_TOKENS: u64 = 20;

/// What a `mock_response` answers, when it is not an error.
pub(super) enum Mocked<'v> {
    Text(&'v str),
    Object(&'v serde_json::Map<String, Value>),
}

/// The error a `mock_response` names (LiteLLM's `_handle_mock_potential_exceptions`), or the
/// answer it stands for.
pub(super) fn read(value: &Value, started: Instant) -> Result<Mocked<'_>, Box<Failed>> {
    let text = match value {
        Value::Object(map) => return Ok(Mocked::Object(map)),
        Value::String(s) => s.as_str(),
        // LiteLLM's default text when the value is no string or object.
        _ => "This is a mock request",
    };
    let error = match text {
        "litellm.RateLimitError" => ApiError::new(
            http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "litellm.RateLimitError: this is a mock rate limit error",
        ),
        "litellm.ContextWindowExceededError" => {
            let mut e = ApiError::bad_request(
                "litellm.ContextWindowExceededError: this is a mock context window exceeded error",
            );
            e.code = Some("context_length_exceeded".into());
            e
        }
        "litellm.InternalServerError" => ApiError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "litellm.InternalServerError: this is a mock internal server error",
        ),
        t if t.starts_with("Exception: content_filter_policy") => {
            let mut e = ApiError::bad_request(t.to_string());
            e.code = Some("content_filter".into());
            e
        }
        t if t.starts_with("Exception: mock_streaming_error") => ApiError::new(
            http::StatusCode::from_u16(529).unwrap_or(http::StatusCode::SERVICE_UNAVAILABLE),
            "internal_server_error",
            "This is a mock error raised mid-stream",
        ),
        t => return Ok(Mocked::Text(t)),
    };
    Err(Box::new(Failed {
        status: error.status.as_u16(),
        class: classify(&error),
        reply: Reply::Gateway(error),
        retry_after: None,
        may_have_received: false,
        nothing_generated: true,
        elapsed: started.elapsed(),
    }))
}

impl Attempt<'_> {
    /// Answers the client with a mocked response from this attempt's deployment.
    pub(super) async fn deliver_mock(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mocked: Mocked<'_>,
        body: &[u8],
        include_usage: bool,
        started: Instant,
    ) {
        let prompt_tokens = crate::management::cost::request_shape(body).prompt_tokens;
        let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
        let created = crate::clock::now_ms() / 1000;
        let model = &self.upstream_model;
        let (usage, response) = match mocked {
            Mocked::Object(map) => {
                let mut object = map.clone();
                for (k, v) in [
                    ("id", json!(id)),
                    ("object", json!("chat.completion")),
                    ("created", json!(created)),
                    ("model", json!(model)),
                ] {
                    object.entry(k).or_insert(v);
                }
                let usage = object
                    .get("usage")
                    .and_then(|u| serde_json::from_value::<Usage>(u.clone()).ok())
                    .unwrap_or_default();
                (usage, Value::Object(object))
            }
            Mocked::Text(text) => {
                let usage = Usage {
                    prompt_tokens,
                    completion_tokens: COMPLETION_TOKENS,
                    total_tokens: prompt_tokens + COMPLETION_TOKENS,
                    prompt_tokens_details: None,
                };
                let response = json!({
                    "id": id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }],
                    "usage": {
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.total_tokens,
                    },
                });
                (usage, response)
            }
        };
        let (content_type, payload) = if self.stream {
            ctx.record.time_to_first_token = Some(started.elapsed());
            ("text/event-stream", sse(&response, include_usage))
        } else {
            ("application/json", Bytes::from(response.to_string()))
        };
        let cost = crate::management::cost::cost_of(&usage, self.dc.price.as_ref());
        ctx.record.usage = Some(usage);
        ctx.record.cost = Some(cost);
        ctx.record.upstream_elapsed = Some(started.elapsed());
        // Building a bare 200 header cannot fail.
        let Ok(ok) = ResponseHeader::build(200, Some(0)) else {
            return;
        };
        let mut resp = self.client_header(ctx, &ok);
        resp.set_static(CONTENT_TYPE, content_type);
        resp.set_value(CONTENT_LENGTH, HeaderValue::from(payload.len()));
        resp.set_value(X_LITELLM_RESPONSE_COST, crate::decimal::header_value(cost));
        let total = ctx.started.elapsed();
        resp.set_value(X_LITELLM_RESPONSE_DURATION_MS, millis_header(total));
        resp.set_value(
            X_LITELLM_OVERHEAD_DURATION_MS,
            millis_header(total.saturating_sub(started.elapsed())),
        );
        super::deliver::write_complete(session, ctx, resp.finish(), payload).await;
    }
}

/// A chat completion as the SSE stream OpenAI would have sent: the role, the content in
/// pieces, the finish reason, the usage when asked for, `[DONE]`.
fn sse(response: &Value, include_usage: bool) -> Bytes {
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({
            "id": response["id"],
            "object": "chat.completion.chunk",
            "created": response["created"],
            "model": response["model"],
            "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u.clone();
        }
        format!("data: {c}\n\n")
    };
    let mut out = String::new();
    let choices = response["choices"].as_array().cloned().unwrap_or_default();
    for (i, choice) in choices.iter().enumerate() {
        let message = &choice["message"];
        out += &chunk(
            json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
            None,
        );
        if let Some(text) = message["content"].as_str() {
            for piece in text.split_inclusive(' ') {
                out += &chunk(
                    json!([{"index": i, "delta": {"content": piece}, "finish_reason": null}]),
                    None,
                );
            }
        }
        if let Some(calls) = message.get("tool_calls").filter(|c| c.is_array()) {
            let calls: Vec<Value> = calls
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(n, c)| {
                    let mut c = c.clone();
                    c["index"] = json!(n);
                    c
                })
                .collect();
            out += &chunk(
                json!([{"index": i, "delta": {"tool_calls": calls}, "finish_reason": null}]),
                None,
            );
        }
        let finish = choice
            .get("finish_reason")
            .cloned()
            .unwrap_or(json!("stop"));
        out += &chunk(
            json!([{"index": i, "delta": {}, "finish_reason": finish}]),
            None,
        );
    }
    if include_usage && let Some(usage) = response.get("usage") {
        out += &chunk(json!([]), Some(usage));
    }
    out += "data: [DONE]\n\n";
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_fail_like_the_provider_would() {
        let now = Instant::now();
        let status = |v: &str| match read(&json!(v), now) {
            Err(f) => f.status,
            Ok(_) => 200,
        };
        assert_eq!(status("litellm.RateLimitError"), 429);
        assert_eq!(status("litellm.ContextWindowExceededError"), 400);
        assert_eq!(status("litellm.InternalServerError"), 500);
        assert_eq!(status("Exception: content_filter_policy hit"), 400);
        assert_eq!(status("hello"), 200);
        let Err(f) = read(&json!("litellm.ContextWindowExceededError"), now) else {
            panic!("a context-window error")
        };
        assert_eq!(
            f.class,
            crate::providers::translate::ErrorClass::ContextWindowExceeded
        );
    }

    #[test]
    fn a_stream_carries_every_piece_and_ends_with_done() {
        let response = json!({
            "id": "x", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "one two three"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 20, "total_tokens": 23},
        });
        let text = String::from_utf8(sse(&response, true).to_vec()).unwrap();
        let events: Vec<Value> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let content: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "one two three");
        assert_eq!(events.last().unwrap()["usage"]["total_tokens"], 23);
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(!sse(&response, false).windows(7).any(|w| w == b"\"usage\""));
    }
}
