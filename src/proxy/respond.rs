//! Writing locally generated responses (errors, JSON, metrics) to the client, from
//! `request_filter`.

use bytes::Bytes;
use filters::{ApiError, FailureOrigin, exception_class};
use pingora::proxy::Session;

use super::ctx::Ctx;
use super::headers::*;

/// Writes a complete response with the given status, content type and body.
pub async fn send(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    content_type: &str,
    extra: &[(&'static str, String)],
    body: Bytes,
) {
    ctx.record.status = status;
    ctx.record.response_bytes = body.len() as u64;
    let head_only = session.req_header().method == http::Method::HEAD;
    let mut resp = ResponseHead::new(status, 4 + extra.len());
    resp.set(CONTENT_TYPE, content_type);
    resp.set_value(CONTENT_LENGTH, http::HeaderValue::from(body.len()));
    resp.set_request_id(&ctx.request_id);
    for (name, value) in extra {
        resp.set(http::header::HeaderName::from_static(name), value);
    }
    let resp = resp.finish();
    if session
        .write_response_header(Box::new(resp), head_only)
        .await
        .is_err()
    {
        ctx.record.client_closed = true;
        return;
    }
    if !head_only && session.write_response_body(Some(body), true).await.is_err() {
        ctx.record.client_closed = true;
    }
}

/// Answers an OpenAI-style error and records it as the request's failure.
pub async fn error(session: &mut Session, ctx: &mut Ctx, err: &ApiError) {
    let status = err.status.as_u16();
    ctx.record.failure = Some((status, exception_class(FailureOrigin::Gateway, status)));
    let extra: Vec<(&'static str, String)> = err.headers.clone();
    send(session, ctx, status, "application/json", &extra, err.body()).await;
}
