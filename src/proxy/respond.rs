//! Writing locally generated responses (errors, JSON, metrics) to the client, from
//! `request_filter`.

use bytes::Bytes;
use filters::ApiError;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::ctx::Ctx;

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
    let mut resp = match ResponseHeader::build_no_case(status, Some(4 + extra.len())) {
        Ok(r) => r,
        Err(_) => return,
    };
    let _ = resp.insert_header("content-type", content_type);
    let _ = resp.insert_header("content-length", body.len().to_string());
    let _ = resp.insert_header("x-request-id", ctx.request_id.as_str());
    let _ = resp.insert_header("x-litellm-call-id", ctx.request_id.as_str());
    for (name, value) in extra {
        let _ = resp.insert_header(*name, value.as_str());
    }
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
    ctx.record.failure = Some((status, error_class(err)));
    let extra: Vec<(&'static str, String)> = err.headers.clone();
    send(session, ctx, status, "application/json", &extra, err.body()).await;
}

/// The `exception_class` metric label for an error, in LiteLLM's `Provider.ExceptionName` style.
pub fn error_class(err: &ApiError) -> &'static str {
    match err.status.as_u16() {
        400 => "Litellm.BadRequestError",
        401 => "Litellm.AuthenticationError",
        403 => "Litellm.PermissionDeniedError",
        404 => "Litellm.NotFoundError",
        405 => "Litellm.MethodNotAllowedError",
        413 => "Litellm.RequestTooLargeError",
        429 => "Litellm.RateLimitError",
        501 => "Litellm.NotImplementedError",
        502 => "Litellm.APIConnectionError",
        503 => "Litellm.ServiceUnavailableError",
        504 => "Litellm.Timeout",
        _ => "Litellm.APIError",
    }
}
