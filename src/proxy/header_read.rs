//! The signal from Pingora's `new_ctx` (a request header was read) to the connection loop in
//! `downstream.rs`, which polls Pingora's request future on the same thread and stops the
//! connection's header deadline once it sees the signal. A thread-local: set and read within
//! one poll, no synchronization.

use std::cell::Cell;

thread_local! {
    static HEADER_READ: Cell<bool> = const { Cell::new(false) };
}

/// Called from `new_ctx`: the request header of the connection being polled is complete.
pub fn mark() {
    HEADER_READ.with(|h| h.set(true));
}

/// Before polling a connection's request future.
pub fn reset() {
    HEADER_READ.with(|h| h.set(false));
}

/// After polling it: whether its request header was read during the poll.
pub fn is_marked() -> bool {
    HEADER_READ.with(Cell::get)
}
