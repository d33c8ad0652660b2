//! The filter chain: what runs on a request before it is forwarded, and in which order.
//!
//! ```text
//!  request_filter (Pingora)                                      forwarder
//!  ├─ pre-body filters   auth (master key, virtual key lookup)     │
//!  ├─ read body (bounded), RequestView::parse                      │
//!  ├─ post-body filters  route ─► RoutePlan                        │
//!  └─ admission (the gateway's management::admission, not a        │
//!     filter here): model access, budgets, rate limits ───────────►┘
//! ```
//!
//! Admission is not a filter of this crate: it needs the routed plan, the body's token count
//! and the key store's ledgers, and it hands the forwarder a hold that `logging` settles. It
//! runs right after the post-body filters, with this crate's types (`RoutePlan`,
//! `RequestView`, `KeyIdentity`) as its inputs.
//!
//! A filter returns [`Flow::Continue`] or [`Flow::Reject`] with the error to answer. Pre-body
//! filters see only the request head, so a rejection never reads a large body.

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderMap, Method};

use crate::endpoint::Endpoint;
use crate::error::ApiError;
use crate::identity::KeyIdentity;
use crate::request::RequestView;
use crate::route::RoutePlan;

/// Who is calling, as decided by the auth filter.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Caller {
    /// Not yet authenticated.
    #[default]
    Unknown,
    /// No master key is configured: the gateway is open.
    Open,
    /// The master key (proxy admin).
    MasterKey,
    /// A virtual key from the key store.
    Key(Arc<KeyIdentity>),
}

impl Caller {
    /// `hashed_api_key` metric label.
    pub fn key_label(&self) -> &str {
        match self {
            Caller::Key(k) => &k.token,
            _ => "",
        }
    }
    /// `api_key_alias` metric label (LiteLLM shows "None" for the master key).
    pub fn alias_label(&self) -> &str {
        match self {
            Caller::Key(k) => k.key_alias.as_deref().unwrap_or("None"),
            _ => "None",
        }
    }
    /// `team`, `team_alias`, `user` and `user_email` metric labels: the key's team and user
    /// (empty for the master key).
    pub fn owner_labels(&self) -> [&str; 4] {
        match self {
            Caller::Key(k) => [&k.team_id, &k.team_alias, &k.user_id, &k.user_email]
                .map(|v| v.as_deref().unwrap_or("")),
            _ => [""; 4],
        }
    }
    /// The virtual key, when the caller is one.
    pub fn key(&self) -> Option<&Arc<KeyIdentity>> {
        match self {
            Caller::Key(k) => Some(k),
            _ => None,
        }
    }
    /// May manage keys, teams and users: the master key, a proxy admin's key, or anyone when
    /// the gateway is open.
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::MasterKey | Caller::Open => true,
            Caller::Key(k) => k.is_admin,
            Caller::Unknown => false,
        }
    }
}

/// The request head, borrowed from the server's session.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// The query string (without `?`), when there is one.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// What the filters know about a request so far.
#[derive(Debug, Default)]
pub struct RequestCx {
    pub endpoint: Option<Endpoint>,
    pub caller: Caller,
    pub view: Option<RequestView>,
    pub plan: Option<RoutePlan>,
}

impl RequestCx {
    pub fn new(endpoint: Endpoint) -> Self {
        RequestCx {
            endpoint: Some(endpoint),
            ..RequestCx::default()
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.unwrap_or(Endpoint::NotFound)
    }
}

/// A filter's verdict.
#[derive(Debug)]
pub enum Flow {
    Continue,
    Reject(ApiError),
}

/// One stage of request processing, free of any server framework.
#[async_trait]
pub trait Filter: Send + Sync {
    /// Short name for logs and metrics.
    fn name(&self) -> &'static str;
    /// Whether the filter needs the parsed body (runs after the body is read) or only the head.
    fn needs_body(&self) -> bool {
        false
    }
    async fn on_request(&self, req: &Incoming<'_>, cx: &mut RequestCx) -> Flow;
}

/// The ordered filters, split by whether they need the body.
#[derive(Default, Clone)]
pub struct Chain {
    pre_body: Vec<Arc<dyn Filter>>,
    post_body: Vec<Arc<dyn Filter>>,
}

impl Chain {
    /// Keeps the given order within each stage.
    pub fn new(filters: Vec<Arc<dyn Filter>>) -> Self {
        let (post_body, pre_body) = filters.into_iter().partition(|f| f.needs_body());
        Chain {
            pre_body,
            post_body,
        }
    }

    /// Runs the head-only filters; stops at the first rejection.
    pub async fn run_pre_body(&self, req: &Incoming<'_>, cx: &mut RequestCx) -> Flow {
        run(&self.pre_body, req, cx).await
    }

    /// Runs the filters that need the parsed body; stops at the first rejection.
    pub async fn run_post_body(&self, req: &Incoming<'_>, cx: &mut RequestCx) -> Flow {
        run(&self.post_body, req, cx).await
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.pre_body
            .iter()
            .chain(&self.post_body)
            .map(|f| f.name())
            .collect()
    }
}

async fn run(filters: &[Arc<dyn Filter>], req: &Incoming<'_>, cx: &mut RequestCx) -> Flow {
    for filter in filters {
        if let Flow::Reject(e) = filter.on_request(req, cx).await {
            return Flow::Reject(e);
        }
    }
    Flow::Continue
}
