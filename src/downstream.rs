//! Downstream connections before Pingora reads a request: how long a client may take to send a
//! request header or keep an idle connection open, how many connections may be open, and which
//! HTTP version a plaintext connection speaks. It is the listening service's `ServerApp`: it
//! runs when a connection is accepted, before any `ProxyHttp` phase, and hands each request to
//! Pingora's own HTTP/1 or HTTP/2 session handling (`request_filter` and the rest follow).
//!
//! Why not Pingora's defaults (0.9.1, `apps/mod.rs`):
//! - The plaintext port's HTTP/2 prior-knowledge detection reads exactly 24 bytes
//!   (`read_exact`, no timeout) before anything else: a connection that sends nothing stays open
//!   for ever, and a complete request shorter than 24 bytes (`GET / HTTP/1.0\r\n\r\n`, HAProxy's
//!   `OPTIONS` check) is never answered. Here the decision is made at the first byte that
//!   differs from the HTTP/2 preface.
//! - After each request Pingora waits for the next one without a time limit (it turns
//!   keep-alive to "infinite" when it reads a header), and each read of a header has its own
//!   timeout, so a header trickled a byte at a time never times out. Here every request's
//!   header must be complete by a deadline: `client_header_timeout` on a new connection,
//!   `keepalive_timeout` + `client_header_timeout` after the previous response.
//! - Nothing bounds the number of open connections: idle ones exhausted the file limit and
//!   then nothing was accepted. Here at most `max_connections` are open; at the limit the new
//!   connection gets a 503 and the connection that has waited longest for a request header
//!   (a second or more) is closed, so the next connection (a health check) gets in.
//! - HTTP/1.1 pipelining: Pingora's opt-in (`set_pipelining_enabled`) is turned on, so
//!   pipelined requests are answered in order instead of dropped.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{ALPN, Stream};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::app::App;
use crate::metrics::Metrics;
use crate::proxy::{Gateway, header_read};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A connection waiting this long for a request header counts as idle: it may be closed to
/// make room when the connection limit is reached.
const IDLE_AFTER: Duration = Duration::from_secs(1);
/// The first request's header is read whole up to this size before Pingora parses it (a longer
/// one is left to Pingora's own limit).
const FIRST_HEADER_LIMIT: usize = 64 * 1024;
/// The answer to a connection over the limit.
const OVER_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 115\r\nConnection: close\r\n\r\n{\"error\":{\"message\":\"Too many open connections; try again\",\"type\":\"service_unavailable\",\"param\":null,\"code\":\"503\"}}";

/// Connection limits (`sluice_settings`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub client_header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
}

/// The listening service's connection handling.
pub struct Downstream {
    /// Pingora's proxy for HTTP/1 requests (HTTP/2 detection off: done here).
    h1: Arc<HttpProxy<Gateway>>,
    /// The same proxy for HTTP/2 connections (prior knowledge or ALPN).
    h2: Arc<HttpProxy<Gateway>>,
    limits: Limits,
    app: Arc<App>,
    open: AtomicUsize,
    /// Connections idle in a header wait for a second or more (they may be shed).
    idle: AtomicUsize,
    /// Woken once per connection refused at the limit: the longest-waiting idle connection
    /// closes (tokio's `Notify` wakes its waiters in order).
    shed: tokio::sync::Notify,
}

/// Counts a connection as idle until it drops.
struct Idle<'a>(&'a AtomicUsize);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection was closed by this module.
#[derive(Clone, Copy)]
enum Closed {
    HeaderTimeout,
    Shed,
    Shutdown,
    Malformed,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::Shed => "shed_idle",
            Closed::Shutdown => "shutdown",
            Closed::Malformed => "malformed",
        }
    }
}

/// An open connection, counted until it drops.
struct Slot<'a> {
    open: &'a AtomicUsize,
    metrics: &'a Metrics,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.open_connections.dec();
    }
}

impl Downstream {
    pub fn new(
        h1: HttpProxy<Gateway>,
        h2: HttpProxy<Gateway>,
        limits: Limits,
        app: Arc<App>,
    ) -> Downstream {
        Downstream {
            h1: Arc::new(h1),
            h2: Arc::new(h2),
            limits,
            app,
            open: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            shed: tokio::sync::Notify::new(),
        }
    }

    /// Takes a connection slot, or `None` at the limit (idle connections are told to close).
    fn enter(&self) -> Option<Slot<'_>> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            // One idle connection makes room for the next one, not all of them.
            if self.idle.load(Ordering::Acquire) > 0 {
                self.shed.notify_one();
            }
            return None;
        }
        self.app.metrics.open_connections.inc();
        Some(Slot {
            open: &self.open,
            metrics: &self.app.metrics,
        })
    }

    fn closed(&self, why: Closed) {
        self.app
            .metrics
            .closed_connections
            .with_label_values(&[why.label()])
            .inc();
    }

    /// Waits for `fut` until `deadline`; after [`IDLE_AFTER`] the wait can also be cut short
    /// by the connection limit or by shutdown. The first second costs one lazily created
    /// Pingora timer (most waits end within it); only longer waits register for shedding.
    async fn wait<F: Future>(
        &self,
        fut: F,
        deadline: Instant,
        shutdown: &ShutdownWatch,
    ) -> Result<F::Output, Closed> {
        let mut fut = pin!(fut);
        let quick = IDLE_AFTER.min(deadline.saturating_duration_since(Instant::now()));
        if let Ok(out) = pingora::time::timeout(quick, &mut fut).await {
            return Ok(out);
        }
        // During a binary upgrade an idle connection is not closed under a client that may
        // be sending on it: it waits for its next request, answered with `Connection: close`.
        let upgrading = self.app.is_upgrading();
        if *shutdown.borrow() && !upgrading {
            return Err(Closed::Shutdown);
        }
        let mut shutdown = shutdown.clone();
        self.idle.fetch_add(1, Ordering::AcqRel);
        let _idle = Idle(&self.idle);
        tokio::select! {
            biased;
            out = &mut fut => Ok(out),
            _ = self.shed.notified() => Err(Closed::Shed),
            _ = shutdown.changed(), if !upgrading => Err(Closed::Shutdown),
            _ = tokio::time::sleep_until(deadline) => Err(Closed::HeaderTimeout),
        }
    }

    /// Reads the start of a plaintext connection until it is known to be HTTP/2 (the whole
    /// preface: the bytes are put back for the HTTP/2 handshake) or not (the first byte that
    /// differs: the bytes read so far are returned, the start of an HTTP/1 request). `None`
    /// when the client sent nothing in time or went away.
    async fn detect_h2c(
        &self,
        stream: Stream,
        deadline: Instant,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, Option<BytesMut>)> {
        // Pingora's plaintext streams are its L4 stream (TCP or Unix socket), which can put
        // read bytes back.
        let mut tcp: Box<TcpStream> = match stream.into_any().downcast::<TcpStream>() {
            Ok(tcp) => tcp,
            Err(_) => {
                tracing::warn!("unexpected plaintext stream type; closing the connection");
                return None;
            }
        };
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            let read = self.wait(tcp.read_buf(&mut buf), deadline, shutdown).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(why) => {
                    self.closed(why);
                    return None;
                }
            }
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] != H2_PREFACE[..n] {
                return Some((tcp, Some(buf)));
            }
            if n == H2_PREFACE.len() {
                tcp.rewind(&buf);
                return Some((tcp, None));
            }
        }
    }

    /// Reads the first request's header whole (within the deadline) after `start`, and has
    /// Pingora's own parser judge a copy of it: a request it would refuse gets Sluice's
    /// OpenAI-style 400 here (Pingora answers those with an empty body). Returns the stream and
    /// the bytes read, which Pingora's session then parses first; `None` when the connection
    /// is over.
    async fn first_header(
        &self,
        mut stream: Stream,
        mut start: BytesMut,
        deadline: Instant,
        shutdown: &ShutdownWatch,
    ) -> Option<(Stream, BytesMut)> {
        while !header_complete(&start) && start.len() < FIRST_HEADER_LIMIT {
            match self
                .wait(stream.read_buf(&mut start), deadline, shutdown)
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(why) => {
                    self.closed(why);
                    return None;
                }
            }
        }
        if let Some(why) = malformed(&start).await {
            self.closed(Closed::Malformed);
            let answer = malformed_answer(&why);
            let _ = pingora::time::timeout(Duration::from_secs(1), async {
                let _ = stream.write_all(&answer).await;
                let _ = stream.flush().await;
            })
            .await;
            return None;
        }
        Some((stream, start))
    }

    /// HTTP/1 requests on one connection, one after the other, each header within its
    /// deadline (see the module comment).
    async fn serve_h1(
        &self,
        stream: Stream,
        first_header: BytesMut,
        first_deadline: Instant,
        shutdown: &ShutdownWatch,
    ) {
        let mut session = ServerSession::new_http1(stream);
        if let ServerSession::H1(h1) = &mut session {
            h1.set_pipelining_enabled(true);
            if !first_header.is_empty() {
                h1.set_pipelined_prefix(first_header);
            }
        }
        session.set_keepalive(if *shutdown.borrow() {
            None
        } else {
            Some(self.limits.keepalive_timeout.as_secs().max(1))
        });
        let mut deadline = first_deadline;
        loop {
            let mut request = pin!(self.h1.process_new_http(session, shutdown));
            // Pingora's request future until the header is read (or it ends first).
            let header = std::future::poll_fn(|cx| {
                header_read::reset();
                match request.as_mut().poll(cx) {
                    Poll::Ready(reused) => Poll::Ready(Some(reused)),
                    Poll::Pending if header_read::is_marked() => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            });
            let reused = match self.wait(header, deadline, shutdown).await {
                Ok(Some(reused)) => reused,
                Ok(None) => request.await,
                Err(why) => {
                    self.closed(why);
                    return;
                }
            };
            let Some((stream, settings)) = reused.map(|r| r.consume()) else {
                return;
            };
            // Later requests are parsed by Pingora alone: its empty 400 for one it refuses is
            // rewritten to Sluice's OpenAI-style 400 on the way out.
            let stream: Stream = if stream.as_any().is::<OpenAi400>() {
                stream
            } else {
                Box::new(OpenAi400::new(stream))
            };
            session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            deadline =
                Instant::now() + self.limits.keepalive_timeout + self.limits.client_header_timeout;
        }
    }
}

#[async_trait]
impl ServerApp for Downstream {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_slot) = self.enter() else {
            self.closed_over_limit(&mut stream).await;
            return None;
        };
        let deadline = Instant::now() + self.limits.client_header_timeout;
        let (stream, start) = if stream.get_ssl_digest().is_none() {
            match self.detect_h2c(stream, deadline, shutdown).await? {
                (stream, None) => return ServerApp::process_new(&self.h2, stream, shutdown).await,
                (stream, Some(start)) => (stream, start),
            }
        } else if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.h2, stream, shutdown).await;
        } else {
            (stream, BytesMut::new())
        };
        let (stream, header) = self.first_header(stream, start, deadline, shutdown).await?;
        self.serve_h1(stream, header, deadline, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        // Pingora's cleanup drops HTTP/1 connections idle between requests. During a binary
        // upgrade a client may be sending on one at that instant (and get a reset): they are
        // left to take one more request, answered with `Connection: close`, or to time out.
        if !self.app.is_upgrading() {
            self.h1.http_cleanup().await;
        }
        self.h2.http_cleanup().await;
    }
}

impl Downstream {
    /// A connection over the limit: a 503 (written without waiting) and closed.
    async fn closed_over_limit(&self, stream: &mut Stream) {
        self.app
            .metrics
            .closed_connections
            .with_label_values(&["over_limit"])
            .inc();
        let _ = pingora::time::timeout(Duration::from_millis(100), async {
            let _ = stream.write_all(OVER_LIMIT).await;
            let _ = stream.flush().await;
        })
        .await;
    }
}

/// Whether `buf` holds a whole request header (a blank line; httparse also takes bare LFs).
fn header_complete(buf: &[u8]) -> bool {
    memchr::memmem::find(buf, b"\r\n\r\n").is_some() || memchr::memmem::find(buf, b"\n\n").is_some()
}

/// Pingora's verdict on a request header (`Some(reason)`: it would refuse it), reached by
/// running its own parser, validation included, over a copy in memory: Sluice's answer then
/// matches exactly what Pingora accepts.
async fn malformed(header: &[u8]) -> Option<String> {
    let copy = MemoryStream {
        data: bytes::Bytes::copy_from_slice(header),
    };
    let mut session = pingora::protocols::http::v1::server::HttpSession::new(Box::new(copy));
    match session.read_request().await {
        Err(e) if e.etype() == &pingora::ErrorType::InvalidHTTPHeader => {
            // The parser's own reason (httparse's "invalid header name"), or Pingora's
            // explanation; never its context when that quotes the raw request (`buf: ...`),
            // which may hold headers a proxy in front added.
            let why = match (&e.cause, e.context.as_ref().map(|c| c.as_str())) {
                (Some(cause), _) => cause.to_string(),
                (None, Some(context)) if !context.contains("buf:") => context.to_string(),
                _ => "invalid request header".to_string(),
            };
            Some(why.chars().take(200).collect())
        }
        _ => None,
    }
}

/// The body of Sluice's 400 for a request header Pingora's parser refuses.
fn malformed_answer(why: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "message": format!("Malformed HTTP request: {why}"),
        "type": "invalid_request_error",
        "param": null,
        "code": "400",
    }})
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Whether `buf` is the answer Pingora writes itself to a request header it refuses (its
/// generated error response: 400, empty body, `Cache-Control: private, no-store`).
fn is_pingora_400(buf: &[u8]) -> bool {
    if !buf.starts_with(b"HTTP/1.1 400 ") {
        return false;
    }
    let head = buf.to_ascii_lowercase();
    memchr::memmem::find(&head, b"\r\ncontent-length: 0\r\n").is_some()
        && memchr::memmem::find(&head, b"\r\ncache-control: private, no-store\r\n").is_some()
}

/// A kept-alive client connection after its first request: everything passes through, but
/// Pingora's own empty 400 (a later request header it refuses; it writes that before any
/// Sluice code runs) goes out as Sluice's OpenAI-style 400. One prefix comparison per write.
#[derive(Debug)]
struct OpenAi400 {
    inner: Stream,
    /// The replacement still to be written.
    pending: bytes::Bytes,
}

impl OpenAi400 {
    fn new(inner: Stream) -> Self {
        OpenAi400 {
            inner,
            pending: bytes::Bytes::new(),
        }
    }

    fn drain(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        use tokio::io::AsyncWrite;
        while !self.pending.is_empty() {
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    let _ = self.pending.split_to(n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncRead for OpenAi400 {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for OpenAi400 {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map_ok(|()| 0),
        }
        if is_pingora_400(buf) {
            self.pending = bytes::Bytes::from(malformed_answer("invalid request header"));
            // Taken whole: what is left is written by the next write, flush or shutdown.
            let _ = self.drain(cx);
            return Poll::Ready(Ok(buf.len()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => std::pin::Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => std::pin::Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[async_trait]
impl pingora::protocols::Shutdown for OpenAi400 {
    async fn shutdown(&mut self) {
        let _ = std::future::poll_fn(|cx| self.drain(cx)).await;
        pingora::protocols::Shutdown::shutdown(self.inner.as_mut()).await;
    }
}

impl pingora::protocols::UniqueID for OpenAi400 {
    fn id(&self) -> pingora::protocols::UniqueIDType {
        self.inner.id()
    }
}

impl pingora::protocols::Ssl for OpenAi400 {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl pingora::protocols::GetTimingDigest for OpenAi400 {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl pingora::protocols::GetProxyDigest for OpenAi400 {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl pingora::protocols::GetSocketDigest for OpenAi400 {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl pingora::protocols::Peek for OpenAi400 {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A read-only in-memory stream holding a copy of a request header, for [`malformed`].
#[derive(Debug)]
struct MemoryStream {
    data: bytes::Bytes,
}

impl tokio::io::AsyncRead for MemoryStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.data.len());
        let chunk = self.data.split_to(n);
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for MemoryStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl pingora::protocols::Shutdown for MemoryStream {
    async fn shutdown(&mut self) {}
}

impl pingora::protocols::UniqueID for MemoryStream {
    fn id(&self) -> pingora::protocols::UniqueIDType {
        0
    }
}

impl pingora::protocols::Ssl for MemoryStream {}

impl pingora::protocols::GetTimingDigest for MemoryStream {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        Vec::new()
    }
}

impl pingora::protocols::GetProxyDigest for MemoryStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        None
    }
}

impl pingora::protocols::GetSocketDigest for MemoryStream {
    fn get_socket_digest(&self) -> Option<Arc<pingora::protocols::SocketDigest>> {
        None
    }
}

#[async_trait]
impl pingora::protocols::Peek for MemoryStream {}

#[cfg(test)]
mod tests {
    use super::OVER_LIMIT;

    #[tokio::test]
    async fn pingora_judges_request_headers() {
        assert_eq!(
            super::malformed(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await,
            None
        );
        assert_eq!(super::malformed(b"OPTIONS / HTTP/1.0\r\n\r\n").await, None);
        let why = super::malformed(b"GET / HTTP/1.1\r\nBad Header: secret-x\r\n\r\n")
            .await
            .unwrap();
        assert!(!why.contains("secret-x") && !why.contains("buf"), "{why}");
        assert!(
            super::malformed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .await
                .is_some()
        );
    }

    #[test]
    fn the_over_limit_answer_is_well_formed() {
        let text = std::str::from_utf8(OVER_LIMIT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "503");
    }
}
