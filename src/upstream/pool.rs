//! The forwarder's keep-alive pool of upstream connections (used from `request_filter`, where
//! the forwarder runs): idle streams per peer, newest first, taken and put back without a task
//! or a system call.
//!
//! Pingora's `Connector` pool costs more per request than its lookup: every reuse asks the
//! kernel for the socket's peer address (`getpeername`) to check it against the peer, and every
//! release spawns a task that watches the idle connection (with a timer) until it is taken
//! again. Together about 6k instructions and one system call per request (callgrind, strace,
//! load benchmark at c64). Here a released stream just goes on a list; a stream the upstream
//! closed while it sat there is found out when it is taken (a read that must find nothing, as
//! Pingora also does) or, when the close races the request, by the forwarder's retry of a
//! request on a stale connection.

use std::collections::HashMap;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// Idle upstream connections, per peer (Pingora's `reuse_hash`: address, TLS settings, SNI).
pub struct UpstreamPool {
    idle: parking_lot::Mutex<HashMap<u64, Vec<Idle>, ahash::RandomState>>,
    /// Idle connections kept per peer; more are closed.
    per_peer: usize,
    /// How long a connection may sit idle before it is closed instead of reused.
    max_idle: Duration,
}

struct Idle {
    stream: Stream,
    since: Instant,
}

impl UpstreamPool {
    pub fn new(per_peer: usize, max_idle: Duration) -> UpstreamPool {
        UpstreamPool {
            idle: parking_lot::Mutex::new(HashMap::default()),
            per_peer,
            max_idle,
        }
    }

    /// The most recently released connection to `peer` that is still usable, if any. Older
    /// connections past the idle limit, closed by the upstream or holding unexpected data are
    /// dropped (closed) on the way.
    pub fn take(&self, peer: u64) -> Option<Stream> {
        let now = Instant::now();
        loop {
            let Idle { mut stream, since } = self.idle.lock().get_mut(&peer)?.pop()?;
            if now.duration_since(since) <= self.max_idle && is_quiet(&mut stream) {
                return Some(stream);
            }
        }
    }

    /// Keeps `stream` for the next request to `peer` (closes it when the peer has enough).
    pub fn put(&self, peer: u64, stream: Stream) {
        let mut idle = self.idle.lock();
        let list = idle.entry(peer).or_default();
        if list.len() < self.per_peer {
            list.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    /// Idle connections kept for `peer`.
    #[cfg(test)]
    fn idle(&self, peer: u64) -> usize {
        self.idle.lock().get(&peer).map_or(0, Vec::len)
    }
}

/// Whether an idle stream has nothing to read: not closed by the upstream, no stray bytes (a
/// server that sent something on an idle connection, a late `408` say, must not have it read as
/// the answer to the next request). One non-blocking read attempt, as Pingora's pool makes.
fn is_quiet(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // Unconstrained: tokio's cooperative budget must not make the read look pending.
    let read = tokio::task::unconstrained(stream.read(&mut byte));
    let read = std::pin::pin!(read);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(read.poll(&mut cx), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: our side as a Pingora stream, the server's side as it is.
    async fn pair(listener: &TcpListener) -> (Stream, TcpStream) {
        let (ours, theirs) = raw_pair(listener).await;
        (pingora_stream(ours), theirs)
    }

    async fn raw_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let ours = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (theirs, _) = listener.accept().await.unwrap();
        (ours, theirs)
    }

    fn pingora_stream(ours: TcpStream) -> Stream {
        Box::new(pingora::protocols::l4::stream::Stream::from(ours))
    }

    fn fd(s: &Stream) -> i32 {
        s.id()
    }

    #[tokio::test]
    async fn takes_the_newest_quiet_connection_of_the_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = UpstreamPool::new(2, Duration::from_secs(55));
        assert!(pool.take(1).is_none());
        let (a, _a_server) = pair(&listener).await;
        let (b, _b_server) = pair(&listener).await;
        let (c, _c_server) = pair(&listener).await;
        let (a_fd, b_fd) = (fd(&a), fd(&b));
        pool.put(1, a);
        pool.put(1, b);
        pool.put(1, c); // over the peer's limit: closed
        assert_eq!(pool.idle(1), 2);
        assert!(
            pool.take(2).is_none(),
            "another peer's connections are not shared"
        );
        assert_eq!(fd(&pool.take(1).unwrap()), b_fd, "newest first");
        assert_eq!(fd(&pool.take(1).unwrap()), a_fd);
        assert!(pool.take(1).is_none());
    }

    #[tokio::test]
    async fn skips_connections_closed_talkative_or_idle_too_long() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = UpstreamPool::new(8, Duration::from_secs(55));
        let (quiet, _quiet_server) = pair(&listener).await;
        let (closed, closed_server) = raw_pair(&listener).await;
        let (talkative, mut talkative_server) = raw_pair(&listener).await;
        drop(closed_server);
        talkative_server
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .unwrap();
        // The close and the bytes have reached our sides (the reactor has seen them).
        closed.readable().await.unwrap();
        talkative.readable().await.unwrap();
        let quiet_fd = fd(&quiet);
        pool.put(7, quiet);
        pool.put(7, pingora_stream(closed));
        pool.put(7, pingora_stream(talkative));
        assert_eq!(fd(&pool.take(7).unwrap()), quiet_fd);
        assert_eq!(pool.idle(7), 0, "the other two were closed on the way");

        // Expiry is about time itself: a connection older than the idle limit (here none is
        // allowed) is not reused.
        let expiring = UpstreamPool::new(8, Duration::ZERO);
        let (old, _old_server) = pair(&listener).await;
        expiring.put(7, old);
        std::thread::sleep(Duration::from_millis(1));
        assert!(expiring.take(7).is_none());
    }
}
