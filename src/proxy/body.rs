//! Reading the client's request body, bounded, inside `request_filter` (forwarder mode reads the
//! whole body before choosing a deployment; see docs/architecture.md).

use bytes::{Bytes, BytesMut};
use filters::ApiError;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Why the body could not be read.
pub enum BodyError {
    /// Over `general_settings.max_request_size_mb`: answer 413 and close the connection.
    TooLarge(ApiError),
    /// The body's framing is broken (a bad chunk size, a bad trailer): answer 400 and close
    /// the connection (the rest of the stream cannot be parsed).
    Malformed(ApiError),
    /// The client went away; nothing can be answered.
    Client(String),
}

/// A body read error as the client should see it.
fn body_error(e: &pingora::Error) -> BodyError {
    match e.etype().as_str() {
        "InvalidChunk" | "InvalidTrailerEnd" => BodyError::Malformed(
            ApiError::bad_request(format!(
                "Malformed request body: {}",
                // Pingora's explanation, unless it quotes the raw bytes.
                e.context
                    .as_ref()
                    .map(|c| c.as_str())
                    .filter(|c| !c.contains("buf:"))
                    .unwrap_or("invalid chunked encoding")
            ))
            .with_param("request_body"),
        ),
        _ => BodyError::Client(e.to_string()),
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
///
/// The body's `Content-Length`, when it has one.
fn declared_length(session: &Session) -> Option<usize> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

/// Answers `Expect: 100-continue` first: Pingora does not in this mode, and curl would otherwise
/// wait a second before sending large bodies.
pub async fn read_bounded(session: &mut Session, limit: usize) -> Result<Bytes, BodyError> {
    let declared = declared_length(session);
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(ApiError::payload_too_large(limit)));
    }
    continue_if_expected(session).await?;
    // The usual body arrives in one chunk (often with the header): kept as it is, without a
    // copy. A second chunk moves it into `body`, which allocates nothing until then.
    let mut first: Option<Bytes> = None;
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                let so_far = first.as_ref().map_or(0, Bytes::len) + body.len();
                if so_far + chunk.len() > limit {
                    return Err(BodyError::TooLarge(ApiError::payload_too_large(limit)));
                }
                if first.is_none() && body.is_empty() {
                    first = Some(chunk);
                    continue;
                }
                if let Some(f) = first.take() {
                    body.reserve(declared.unwrap_or(2 * (f.len() + chunk.len())).min(limit));
                    body.extend_from_slice(&f);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(first.unwrap_or_else(|| body.freeze())),
            Err(e) => return Err(body_error(&e)),
        }
    }
}

/// Answers `Expect: 100-continue` (Pingora does not in this mode; curl would wait a second).
async fn continue_if_expected(session: &mut Session) -> Result<(), BodyError> {
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && let Ok(header) = ResponseHeader::build(100, Some(0)) {
        session
            .write_response_header(Box::new(header), false)
            .await
            .map_err(|e| BodyError::Client(e.to_string()))?;
    }
    Ok(())
}

/// How far into a form its `model` field is looked for before the whole body is read instead.
const MAX_FORM_HEAD: usize = 256 * 1024;

/// The head of a multipart form (an upload), up to and including its `model` field, and how
/// many bytes of the body are still unread: the rest (the file) is then sent on as it arrives
/// (`upload.rs`). The whole body (0 unread) when it has no `Content-Length`, when its `model`
/// is not within the first 256 KiB, or when it arrived whole anyway.
pub async fn read_form_head(
    session: &mut Session,
    limit: usize,
    content_type: &str,
) -> Result<(Bytes, usize), BodyError> {
    let declared = declared_length(session);
    let Some(declared) = declared.filter(|_| filters::multipart::boundary(content_type).is_some())
    else {
        return read_bounded(session, limit).await.map(|b| (b, 0));
    };
    if declared > limit {
        return Err(BodyError::TooLarge(ApiError::payload_too_large(limit)));
    }
    continue_if_expected(session).await?;
    let mut head = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if head.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge(ApiError::payload_too_large(limit)));
                }
                head.extend_from_slice(&chunk);
                let unread = declared.saturating_sub(head.len());
                // A form's parts end at the next boundary: a `model` found is a whole field.
                if unread > 0
                    && head.len() <= MAX_FORM_HEAD
                    && filters::multipart::form_view(&head, content_type)
                        .is_ok_and(|v| v.model.is_some())
                {
                    return Ok((head.freeze(), unread));
                }
            }
            Ok(None) => return Ok((head.freeze(), 0)),
            Err(e) => return Err(body_error(&e)),
        }
    }
}
