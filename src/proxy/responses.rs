//! The Responses API's state around the forwarder, inside Pingora's `request_filter`: a
//! `POST /v1/responses` continuing a stored response (`previous_response_id`) is pinned to the
//! deployment that keeps it or given its conversation; a delivered answer is stored
//! (`management::stored_responses`); `GET`/`DELETE /v1/responses/{id}` and `.../input_items`
//! are answered from the store, or forwarded to the OpenAI or Azure deployment that keeps the
//! response.

use std::sync::Arc;

use bytes::Bytes;
use filters::request::RequestView;
use filters::{ApiError, Endpoint};
use pingora::proxy::Session;
use serde_json::{Value, json};

use super::ctx::Ctx;
use super::{forward, respond};
use crate::app::App;
use crate::clock;
use crate::management::stored_responses::StoredResponse;
use crate::providers::responses_api::{self, Outcome};

/// A Responses request's state: whether to store its answer, and what it continues.
#[derive(Debug, Default)]
pub struct ResponsesTurn {
    pub store: bool,
    pub previous: Option<Arc<StoredResponse>>,
}

impl ResponsesTurn {
    /// The chat messages the request continues from (a translated previous response's).
    pub fn history(&self) -> &[Value] {
        match &self.previous {
            Some(p) if !p.native => &p.messages,
            _ => &[],
        }
    }
}

/// The members of a Responses request that Sluice acts on itself.
#[derive(serde::Deserialize)]
struct Controls {
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    store: Option<bool>,
}

/// Reads `previous_response_id` and `store`, finds the response continued (400 when it does
/// not exist or belongs to another key, as OpenAI answers) and pins a native one's deployment.
pub async fn begin(app: &App, ctx: &mut Ctx, body: &Bytes) -> Result<(), ApiError> {
    let controls: Controls = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("Invalid JSON payload: {e}")).with_param("request_body")
    })?;
    let mut turn = ResponsesTurn {
        store: controls.store != Some(false),
        previous: None,
    };
    if let Some(id) = controls.previous_response_id.filter(|id| !id.is_empty()) {
        let caller = &ctx.cx.caller;
        let found = app
            .responses
            .get(&id, clock::now_ms())
            .await
            .filter(|r| r.visible_to(caller.key_label(), caller.is_admin()));
        let Some(previous) = found else {
            return Err(ApiError::bad_request(format!(
                "Previous response with id '{id}' not found."
            ))
            .with_param("previous_response_id"));
        };
        // The provider that keeps a native response must be the one asked to continue it.
        if previous.native
            && let Some(plan) = ctx.cx.plan.as_mut()
            && plan
                .candidates
                .iter()
                .any(|d| d.id == previous.deployment_id)
        {
            plan.candidates.retain(|d| d.id == previous.deployment_id);
        }
        turn.previous = Some(previous);
    }
    ctx.responses = Some(Box::new(turn));
    Ok(())
}

/// Stores the delivered answer (unless the request said `store: false`): in memory at once,
/// in the key store in the background.
pub fn finish(app: &App, ctx: &mut Ctx, body: &Bytes) {
    let (Some(turn), Some(outcome), Some(deployment)) = (
        ctx.responses.take(),
        ctx.responses_outcome.take(),
        ctx.record.deployment.as_ref(),
    ) else {
        return;
    };
    if !turn.store {
        return;
    }
    let owner = ctx.cx.caller.key_label().to_string();
    let created_at_ms = clock::now_ms();
    let stored = match outcome {
        Outcome::Native(id) => StoredResponse {
            id,
            owner,
            deployment_id: deployment.id.clone(),
            native: true,
            response: Value::Null,
            input_items: Vec::new(),
            messages: Vec::new(),
            created_at_ms,
        },
        Outcome::Translated(response) => {
            let input = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|mut b| b.get_mut("input").map(Value::take))
                .unwrap_or(Value::Null);
            let input_items = input_items(&input);
            let mut messages = turn.history().to_vec();
            messages.extend(responses_api::input_messages(input).unwrap_or_default());
            let output = response["output"].as_array().cloned().unwrap_or_default();
            messages.extend(responses_api::output_as_messages(&output));
            StoredResponse {
                id: response["id"].as_str().unwrap_or_default().to_string(),
                owner,
                deployment_id: deployment.id.clone(),
                native: false,
                response,
                input_items,
                messages,
                created_at_ms,
            }
        }
    };
    if !stored.id.is_empty() {
        app.responses.put(stored);
    }
}

/// A request's `input` as the input items `GET .../input_items` lists: a string becomes one
/// user message; every item gets an id.
fn input_items(input: &Value) -> Vec<Value> {
    let items = match input {
        Value::String(text) => vec![json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]})],
        Value::Array(items) => items.clone(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .map(|mut item| {
            if item.get("id").is_none_or(Value::is_null) {
                let prefix = match item["type"].as_str() {
                    Some("function_call") => "fc",
                    Some("function_call_output") => "fco",
                    _ => "msg",
                };
                item["id"] = json!(responses_api::new_id(prefix));
            }
            item
        })
        .collect()
}

/// `GET`/`DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`.
pub async fn by_id(app: &App, session: &mut Session, ctx: &mut Ctx) {
    let path = session.req_header().uri.path().to_string();
    let rest = path.split("/responses/").nth(1).unwrap_or_default();
    let (id, input_items) = match rest.trim_end_matches('/').strip_suffix("/input_items") {
        Some(id) => (id, true),
        None => (rest.trim_end_matches('/'), false),
    };
    let caller = &ctx.cx.caller;
    let found = app
        .responses
        .get(id, clock::now_ms())
        .await
        .filter(|r| r.visible_to(caller.key_label(), caller.is_admin()));
    let Some(stored) = found else {
        let mut e = ApiError::not_found(format!("Response with id '{id}' not found."));
        e.param = None;
        return respond::error(session, ctx, &e).await;
    };
    let delete = session.req_header().method == http::Method::DELETE;
    if stored.native {
        return forward_to_keeper(app, session, ctx, &stored, delete).await;
    }
    let body = if delete {
        app.responses.delete(id).await;
        json!({"id": id, "object": "response", "deleted": true})
    } else if input_items {
        let data = &stored.input_items;
        json!({"object": "list", "data": data, "has_more": false,
            "first_id": data.first().map(|i| i["id"].clone()),
            "last_id": data.last().map(|i| i["id"].clone())})
    } else {
        stored.response.clone()
    };
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    respond::send(session, ctx, 200, "application/json", &[], bytes).await;
}

/// Sends a retrieval or deletion of a native response to the deployment that keeps it (the
/// forwarder encodes the path from the client's); a deletion it accepts is forgotten here too.
async fn forward_to_keeper(
    app: &App,
    session: &mut Session,
    ctx: &mut Ctx,
    stored: &StoredResponse,
    delete: bool,
) {
    let deployment = app
        .config
        .deployments
        .iter()
        .find(|d| d.deployment.id == stored.deployment_id);
    let plan = deployment.and_then(|d| {
        let mut plan = app
            .config
            .router
            .plan(&d.deployment.model_name, &mut fastrand::Rng::new())?;
        plan.candidates.retain(|c| c.id == stored.deployment_id);
        (!plan.candidates.is_empty()).then_some(plan)
    });
    let Some(plan) = plan else {
        let e = ApiError::not_found(format!(
            "Response with id '{}' was created by deployment {}, which is no longer configured.",
            stored.id, stored.deployment_id
        ));
        return respond::error(session, ctx, &e).await;
    };
    ctx.record.requested_model = Some(plan.requested_model.clone());
    ctx.cx.plan = Some(plan);
    ctx.cx.view = Some(RequestView::default());
    // Only this deployment knows the response: no fallback to another group.
    ctx.options.disable_fallbacks = true;
    forward::boxed(|| forward::forward(app, session, ctx, Bytes::new())).await;
    if delete && (200..300).contains(&ctx.record.status) {
        app.responses.delete(&stored.id).await;
    }
}

/// Whether `endpoint` reads or deletes a stored response.
pub fn is_by_id(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::ResponseItem | Endpoint::ResponseInputItems
    )
}
