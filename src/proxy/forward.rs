//! The forwarder: the upstream leg of an LLM request, driven from inside Pingora's
//! `request_filter` (see `docs/architecture.md` and `forwarder-notes.md` for why: Pingora 0.9
//! cannot forward a pre-read body over 64 KiB).
//!
//! ```text
//! route plan ─► Attempt::prepare ─► Attempt::run ─┬─ Answer ─► deliver (stream | whole)
//!               (encode for the   (attempt.rs:    └─ Failed ─► deliver_failure
//!                deployment)       never writes
//!                                  to the client)
//! ```
//!
//! The seam between an attempt and its delivery is where a router loops (retries, fallbacks,
//! cooldowns): nothing reaches the client until an attempt is delivered, so until then every
//! failure can still be retried elsewhere. Each attempt is recorded in `ctx.record.attempts`.
//! A client that disconnects is noticed at once (a select on the downstream socket) and the
//! upstream connection is closed, which stops the generation and the token spend.

use bytes::Bytes;
use filters::ApiError;
use pingora::proxy::Session;

pub(crate) use super::attempt::boxed;
use super::attempt::{Attempt, Failure};
use super::ctx::{AttemptRecord, Ctx};
use super::deliver::client_gone;
use super::respond;
use crate::app::App;

/// Forwards the routed request and writes the response; records the outcome in `ctx`.
pub async fn forward(app: &App, session: &mut Session, ctx: &mut Ctx, body: Bytes) {
    let (Some(plan), Some(view)) = (ctx.cx.plan.take(), ctx.cx.view.take()) else {
        respond::error(session, ctx, &ApiError::internal("request was not routed")).await;
        return;
    };
    let endpoint = ctx.cx.endpoint();
    let Some(deployment) = plan.candidates.first().cloned() else {
        let e = ApiError::new(
            http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "No deployments available for selected model. Passed model={}",
                plan.requested_model
            ),
        );
        respond::error(session, ctx, &e).await;
        return;
    };
    ctx.record.deployment = Some(deployment.clone());
    let attempt = Attempt::prepare(
        app,
        &plan,
        0,
        &view,
        &body,
        endpoint,
        &session.req_header().headers,
    );
    let attempt = match attempt {
        Ok(a) => a,
        Err(e) => {
            respond::error(session, ctx, &e).await;
            return;
        }
    };
    ctx.record.upstream_started = Some(std::time::Instant::now());
    // The attempt's futures hold Pingora's I/O futures (the H1 response reader alone is ~9 KB);
    // boxing each stage keeps the outer futures small, since nested awaits store futures twice
    // (rust-lang/rust#62958) and an unboxed chain reached 82 KB, memcpy'd per request.
    let outcome = {
        let mut gone = std::pin::pin!(session.as_downstream_mut().read_body_or_idle(true));
        boxed(|| attempt.run(ctx, &mut gone)).await
    };
    match outcome {
        Ok(answer) => {
            ctx.record.attempts.push(AttemptRecord {
                deployment: deployment.clone(),
                status: answer.head.status.as_u16(),
                class: None,
                elapsed: answer.started.elapsed(),
            });
            boxed(|| attempt.deliver(session, ctx, answer)).await;
        }
        Err(Failure::Failed(failed)) => {
            ctx.record.upstream_elapsed = Some(failed.elapsed);
            ctx.record.attempts.push(AttemptRecord {
                deployment,
                status: failed.status,
                class: Some(failed.class),
                elapsed: failed.elapsed,
            });
            boxed(|| attempt.deliver_failure(session, ctx, *failed)).await;
        }
        Err(Failure::ClientGone) => {
            ctx.record.upstream_elapsed = ctx.record.upstream_started.map(|s| s.elapsed());
            client_gone(ctx);
        }
    }
}
