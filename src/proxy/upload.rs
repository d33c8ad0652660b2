//! Streamed uploads (`POST /v1/audio/transcriptions`), inside Pingora's `request_filter`: the
//! form's head, up to and including its `model` field, is read (`body::read_form_head`) and
//! routed like any request; the attempt then sends that head (the deployment's model spliced
//! in) and the rest of the client's body, the audio file, as it arrives, instead of reading it
//! whole first. The file is not kept, so once it began to flow the request is not sent to
//! another deployment (`group.rs` stops there).

use std::time::Instant;

use filters::ApiError;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as Http1Session;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use tokio::io::AsyncWriteExt;

use super::attempt::{Answer, Attempt, Failure, read_final_header, write_head_and_body};
use super::ctx::Ctx;

/// The part of the client's body still to be sent on.
#[derive(Debug, Clone, Copy)]
pub struct Upload {
    /// Bytes of the body not read yet.
    pub remaining: usize,
    /// Some of them were read and sent: no other attempt can send the body.
    pub started: bool,
    /// The uploaded audio's duration, measured as it went by (for per-second prices when the
    /// answer reports none).
    pub audio_seconds: Option<f64>,
}

impl Attempt<'_> {
    /// Makes the attempt of a streamed upload: the head (`self.request.body`) and the rest of
    /// the client's body sent on one fresh connection (a pooled one the provider had closed
    /// would fail after the file began to flow, when nothing can be sent again), then the
    /// answer read as [`Attempt::run`] reads it.
    pub(super) async fn run_upload(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<Answer, Failure> {
        let started = Instant::now();
        let remaining = ctx.upload.map_or(0, |u| u.remaining);
        let failed = |error: ApiError, may_have_received: bool| {
            Failure::gateway(error, may_have_received, started)
        };
        let Some(head) = self.wire_head(self.request.body.len() + remaining) else {
            let e = ApiError::bad_gateway(
                "upstream request target or host is not valid in an HTTP/1.1 request",
            );
            return Err(failed(e, false));
        };
        let mut stream = self
            .transport()
            .new_stream(&self.peer.peer)
            .await
            .map_err(|e| failed(self.upstream_error(&e, "connecting to"), false))?;
        let sending = |e: std::io::Error| {
            let e = Error::because(ErrorType::WriteError, "while writing the request", e);
            failed(self.upstream_error(&e, "sending the request to"), false)
        };
        let stalled = || {
            failed(
                self.upstream_error(
                    &Error::explain(ErrorType::WriteTimedout, "while writing the request"),
                    "sending the request to",
                ),
                false,
            )
        };
        match tokio::time::timeout(
            self.timeout,
            write_head_and_body(&mut stream, &head, &self.request.body),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(sending(e)),
            Err(_) => return Err(stalled()),
        }
        if let Some(u) = ctx.upload.as_mut() {
            u.started = true;
        }
        let boundary = self
            .request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(filters::multipart::boundary);
        let mut audio = boundary.map(crate::providers::audio_duration::FormAudio::new);
        if let Some(a) = audio.as_mut() {
            a.feed(&self.request.body);
        }
        let mut left = remaining;
        while left > 0 {
            // The client's pace sets the upload's; a client silent for a whole read timeout
            // is treated as gone.
            let read = tokio::time::timeout(self.timeout, session.read_request_body()).await;
            let chunk = match read {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return Err(Failure::ClientGone),
            };
            left = left.saturating_sub(chunk.len());
            if let Some(a) = audio.as_mut() {
                a.feed(&chunk);
            }
            match tokio::time::timeout(self.timeout, stream.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(sending(e)),
                Err(_) => return Err(stalled()),
            }
        }
        if let Err(e) = stream.flush().await {
            return Err(sending(e));
        }
        if let Some(u) = ctx.upload.as_mut() {
            u.remaining = 0;
            u.audio_seconds = audio.and_then(|a| a.seconds());
        }
        let mut up = HttpSession::H1(Http1Session::new_with_options(stream, &self.peer.peer));
        up.set_read_timeout(Some(self.timeout));
        let read = {
            let mut gone = std::pin::pin!(session.as_downstream_mut().read_body_or_idle(true));
            tokio::select! {
                biased;
                r = read_final_header(&mut up) => r.map_err(Some),
                _ = &mut gone => Err(None),
            }
        };
        if let Err(e) = read {
            up.shutdown().await;
            let Some(e) = e else {
                return Err(Failure::ClientGone);
            };
            let error = if e.etype() == &ErrorType::ReadTimedout {
                ApiError::timeout(format!(
                    "litellm.Timeout: APITimeoutError - Request timed out. Error_str: deployment {} of model group {:?} sent no response within {:.1}s",
                    self.dc.deployment.id,
                    &*self.plan.group,
                    self.timeout.as_secs_f64()
                ))
            } else {
                self.upstream_error(&e, "waiting for the response of")
            };
            return Err(failed(error, true));
        }
        let mut gone = std::pin::pin!(session.as_downstream_mut().read_body_or_idle(true));
        self.answer(ctx, up, started, &mut gone).await
    }
}
