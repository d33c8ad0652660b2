//! Metrics and the access-log line of a finished request, from Pingora's `logging` phase
//! (`Gateway::logging` in `mod.rs` reads the clock and the cost once and passes them here).

use filters::{FailureOrigin, exception_class};
use pingora::proxy::Session;

use super::Finished;
use super::ctx::{Ctx, ModelLabel};
use crate::access_log::AccessEntry;
use crate::app::App;
use crate::metrics::{RequestLabels, RequestOutcome};

/// Metrics and the access log line, from the `logging` phase.
pub(super) fn record(
    app: &App,
    session: &Session,
    ctx: &Ctx,
    client_ip: &str,
    finished: &Finished<'_>,
) {
    let r = &ctx.record;
    let status = r.client_status();
    let total = finished.total;
    let head = session.req_header();
    let user_agent = head
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A pass-through request names its provider, model and base in a deployment's shape.
    let deployment = r
        .deployment
        .as_deref()
        .or_else(|| r.pass_through.as_ref().map(|p| &*p.deployment));
    let dc = finished.deployment;
    let litellm_model_name = dc.map_or("", |dc| dc.litellm_model_name.as_str());
    let (prompt_tokens, completion_tokens) = r
        .usage
        .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    let endpoint = ctx.cx.endpoint();
    let [team, team_alias, user, user_email] = ctx.cx.caller.owner_labels();
    let labels = RequestLabels {
        end_user: "",
        hashed_api_key: ctx.cx.caller.key_label(),
        api_key_alias: ctx.cx.caller.alias_label(),
        team,
        team_alias,
        user,
        user_email,
        requested_model: match &r.model_label {
            ModelLabel::Unrouted => "",
            ModelLabel::Requested => r.requested_model.as_deref().unwrap_or(""),
            ModelLabel::Group(group) => group,
        },
        route: endpoint.route_label(),
        client_ip,
        user_agent,
        model_id: deployment.map_or("", |d| d.id.as_str()),
        model: deployment.map_or("", |d| d.upstream_model.as_str()),
        model_group: deployment.map_or("", |d| d.model_name.as_str()),
        api_provider: deployment.map_or("", |d| d.provider.as_str()),
        // Without the query string: some configs carry a key there, and /metrics is public.
        api_base: deployment.map_or("", |d| d.public_api_base()),
        litellm_model_name,
    };
    if let Some(hit) = r.cache_hit {
        app.metrics
            .record_cache(&labels, hit, prompt_tokens + completion_tokens);
    }
    let failure = r
        .failure
        .or((status >= 400).then(|| (status, exception_class(FailureOrigin::Gateway, status))));
    // Failed attempts a later attempt made up for: counted on their own deployments.
    if let Some((_, hidden)) = r.attempts.split_last() {
        for a in hidden.iter().filter(|a| a.class.is_some()) {
            let d = &a.deployment;
            let l = RequestLabels {
                model_id: d.id.as_str(),
                model: d.upstream_model.as_str(),
                model_group: d.model_name.as_str(),
                api_provider: d.provider.as_str(),
                api_base: d.public_api_base(),
                litellm_model_name: app.config.deployment(d.index).litellm_model_name.as_str(),
                ..labels
            };
            app.metrics.record_hidden_failure(&l, a.status, a.exception);
        }
    }
    if endpoint.is_llm() || r.pass_through.is_some() || status >= 400 {
        app.metrics.record(
            &labels,
            &RequestOutcome {
                status,
                failure,
                total_seconds: total.as_secs_f64(),
                upstream_seconds: r.upstream_elapsed.map(|d| d.as_secs_f64()),
                ttft_seconds: r.time_to_first_token.map(|d| d.as_secs_f64()),
                prompt_tokens,
                completion_tokens,
                spend: finished.cost,
                reached_deployment: r.upstream_started.is_some(),
            },
        );
    }
    if app.config.server.access_log {
        // Written out only after a retry (the common request has one attempt).
        let attempts = if r.attempts.len() > 1 {
            let each: Vec<String> = r
                .attempts
                .iter()
                .map(|a| format!("{}:{}:{}", a.deployment.id, a.status, a.elapsed.as_millis()))
                .collect();
            each.join(",")
        } else {
            String::new()
        };
        crate::access_log::write(&AccessEntry {
            request_id: &ctx.request_id,
            method: head.method.as_str(),
            path: head.uri.path(),
            status,
            error: failure.map_or("", |(_, class)| class),
            model: r.requested_model.as_deref().unwrap_or(""),
            model_group: deployment.map_or("", |d| d.model_name.as_str()),
            model_id: deployment.map_or("", |d| d.id.as_str()),
            stream: r.stream,
            duration: total,
            upstream: r.upstream_elapsed,
            ttft: r.time_to_first_token,
            prompt_tokens,
            completion_tokens,
            bytes: r.response_bytes,
            client_closed: r.client_closed,
            client_ip,
            retries: r.attempts.len().saturating_sub(1) as u64,
            attempts: &attempts,
            at: finished.at,
        });
    }
}
