//! Sluice's request logic, free of Pingora, sockets and databases.
//!
//! The gateway (`src/`) adapts Pingora's phases to this crate: it builds a [`chain::RequestCx`]
//! from the request head, runs the pre-body filters, reads and validates the body
//! ([`request::RequestView`]), runs the post-body filters, and forwards along the
//! [`route::RoutePlan`] they produced. Everything here is plain data and pure functions, so it
//! is unit-tested without a server.
//!
//! ```text
//!  request head ─► auth ─► [body] ─► route ─► RoutePlan ─► forwarder (src/proxy)
//! ```

pub mod auth;
pub mod chain;
pub mod endpoint;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod identity;
pub mod json_scan;
pub mod multipart;
pub mod request;
mod request_fast;
pub mod route;
pub mod usage;

pub use chain::{Caller, Chain, Filter, Flow, Incoming, RequestCx};
pub use endpoint::Endpoint;
pub use error::{ApiError, FailureOrigin, error_type_for_status, exception_class};
pub use identity::KeyIdentity;
pub use usage::Usage;
