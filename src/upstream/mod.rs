//! Upstream endpoints: each distinct `scheme://host:port` a deployment points at, with its
//! resolved address kept current by a background DNS service.
//!
//! `HttpPeer::new` resolves names synchronously and panics when that fails (pingora-core 0.9
//! `upstreams/peer.rs`), so peers are only ever built from addresses resolved here, off the
//! request path. The forwarder reads the current peer with one atomic load.

pub mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::{HttpPeer, Peer};

use crate::config::UpstreamUrl;

/// How long a pooled upstream connection may stay idle before it is closed.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// One upstream server and its current peer (`None` until its name resolves).
/// An endpoint's peer at its current address, with the key of its connections in the
/// forwarder's pool (`Peer::reuse_hash`: address, TLS settings, SNI), computed once per address.
#[derive(Debug)]
pub struct ResolvedPeer {
    pub peer: HttpPeer,
    pub pool_key: u64,
}

pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub host_header: String,
    peer: ArcSwapOption<ResolvedPeer>,
    last_error: parking_lot::Mutex<Option<String>>,
    connect_timeout: Duration,
}

impl Endpoint {
    fn new(url: &UpstreamUrl, connect_timeout: Duration) -> Endpoint {
        let endpoint = Endpoint {
            tls: url.tls,
            host: url.host.clone(),
            port: url.port,
            host_header: url.host_header(),
            peer: ArcSwapOption::empty(),
            last_error: parking_lot::Mutex::new(None),
            connect_timeout,
        };
        // IP literals need no resolver.
        if let Ok(ip) = url.host.parse::<std::net::IpAddr>() {
            endpoint.set_addr(SocketAddr::new(ip, url.port));
        }
        endpoint
    }

    /// The peer to connect to, or why there is none.
    pub fn peer(&self) -> Result<Arc<ResolvedPeer>, String> {
        self.peer.load_full().ok_or_else(|| {
            self.last_error
                .lock()
                .clone()
                .unwrap_or_else(|| format!("{} has not been resolved yet", self.host))
        })
    }

    fn set_addr(&self, addr: SocketAddr) {
        if let Some(current) = self.peer.load().as_ref()
            && current.peer.address().as_inet() == Some(&addr)
        {
            return;
        }
        let sni = if self.tls {
            self.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, self.tls, sni);
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout * 2);
        peer.options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
        let pool_key = peer.reuse_hash();
        self.peer
            .store(Some(Arc::new(ResolvedPeer { peer, pool_key })));
    }

    fn is_literal(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }

    async fn refresh(&self) {
        if self.is_literal() {
            return;
        }
        let lookup = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await;
        match lookup {
            Ok(Ok(addrs)) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                // Prefer IPv4, as most provider endpoints are reached over it.
                match addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) {
                    Some(addr) => {
                        self.set_addr(*addr);
                        *self.last_error.lock() = None;
                    }
                    None => self.resolution_failed(format!("{} resolved to no address", self.host)),
                }
            }
            Ok(Err(e)) => self.resolution_failed(format!("cannot resolve {}: {e}", self.host)),
            Err(_) => self.resolution_failed(format!("resolving {} timed out", self.host)),
        }
    }

    fn resolution_failed(&self, message: String) {
        // Keep the last good address: a flaky resolver must not take a provider down.
        if self.peer.load().is_none() {
            tracing::warn!(host = %self.host, "{message}");
        }
        *self.last_error.lock() = Some(message);
    }
}

/// All endpoints, deduplicated by scheme, host and port.
pub struct Endpoints {
    endpoints: Vec<Arc<Endpoint>>,
    /// Endpoint index per deployment index (`None` for deployments that are not routable).
    by_deployment: Vec<Option<usize>>,
    refresh_every: Duration,
}

impl Endpoints {
    /// Builds endpoints for the given deployment base URLs (by deployment index).
    pub fn new(
        bases: &[Option<UpstreamUrl>],
        connect_timeout: Duration,
        refresh_every: Duration,
    ) -> Endpoints {
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::new();
        let mut index: HashMap<(bool, String, u16), usize> = HashMap::new();
        let by_deployment = bases
            .iter()
            .map(|base| {
                let url = base.as_ref()?;
                Some(*index.entry(url.authority_key()).or_insert_with(|| {
                    endpoints.push(Arc::new(Endpoint::new(url, connect_timeout)));
                    endpoints.len() - 1
                }))
            })
            .collect();
        Endpoints {
            endpoints,
            by_deployment,
            refresh_every,
        }
    }

    pub fn for_deployment(&self, deployment_index: usize) -> Option<&Arc<Endpoint>> {
        let i = (*self.by_deployment.get(deployment_index)?)?;
        self.endpoints.get(i)
    }

    pub fn all(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Resolves every name once (start-up), concurrently and bounded by a timeout each.
    pub async fn resolve_all(&self) {
        let lookups: Vec<_> = self
            .endpoints
            .iter()
            .map(|e| {
                let e = e.clone();
                tokio::spawn(async move { e.refresh().await })
            })
            .collect();
        for l in lookups {
            let _ = l.await;
        }
    }
}

/// The background service that keeps endpoint addresses current.
pub struct DnsRefresher {
    pub endpoints: Arc<Endpoints>,
}

#[async_trait]
impl BackgroundService for DnsRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.endpoints.refresh_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.endpoints.resolve_all().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_shared_per_authority_and_literals_resolve_at_once() {
        let a = UpstreamUrl::parse("http://127.0.0.1:9000/v1").ok();
        let b = UpstreamUrl::parse("http://127.0.0.1:9000/other").ok();
        let c = UpstreamUrl::parse("http://127.0.0.1:9001").ok();
        let eps = Endpoints::new(
            &[a, b, None, c],
            Duration::from_secs(1),
            Duration::from_secs(30),
        );
        assert_eq!(eps.all().len(), 2);
        assert!(Arc::ptr_eq(
            eps.for_deployment(0).unwrap(),
            eps.for_deployment(1).unwrap()
        ));
        assert!(eps.for_deployment(2).is_none());
        assert!(eps.for_deployment(0).unwrap().peer().is_ok());
    }

    #[tokio::test]
    async fn unresolvable_names_report_why() {
        let u = UpstreamUrl::parse("http://no-such-host.invalid:80").ok();
        let eps = Endpoints::new(&[u], Duration::from_secs(1), Duration::from_secs(30));
        eps.resolve_all().await;
        let err = eps.for_deployment(0).unwrap().peer().unwrap_err();
        assert!(err.contains("no-such-host.invalid"), "{err}");
    }
}
