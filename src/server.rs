//! Building and running the Pingora server: one proxy service (the gateway) and the background
//! DNS refresher, with Pingora's settings chosen deliberately (threads, grace period, pool).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::app::App;
use crate::config::RuntimeConfig;
use crate::management::Management;
use crate::pricing::PriceTable;
use crate::proxy::Gateway;
use crate::shutdown::DrainingShutdown;
use crate::upstream::DnsRefresher;

/// TLS termination: certificate and key files (PEM), LiteLLM's `--ssl_certfile_path` and
/// `--ssl_keyfile_path`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
}

/// Runs the gateway until it is told to stop. Returns an error when it cannot start.
pub fn run(
    config: RuntimeConfig,
    prices: Arc<PriceTable>,
    tls: Option<TlsFiles>,
) -> anyhow::Result<()> {
    let listen = listen_address(&config);
    // Pingora only panics its service thread when the port is taken; fail clearly instead.
    TcpListener::bind(&listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;

    let grace = config.server.graceful_shutdown;
    let conf = ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        // Pingora sleeps the whole grace period after SIGTERM (default 300 s); Sluice exits as
        // soon as it is drained (see shutdown.rs), so this is only the upper bound.
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool_size,
        pid_file: format!("/tmp/sluice-{}.pid", config.server.port),
        upgrade_sock: format!("/tmp/sluice-upgrade-{}.sock", config.server.port),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let management = match config.management.clone() {
        Some(settings) => Some(Management::start(&config, settings)?),
        None => None,
    };
    let app = Arc::new(App::new(config, prices, management));
    resolve_upstreams_once(&app);
    app.share_router_state()?;

    // Two faces of the same proxy: HTTP/1 requests (whose connections downstream.rs drives)
    // and HTTP/2 connections (prior knowledge on the plaintext port, or ALPN with TLS).
    let mut h1 = pingora::proxy::http_proxy(&server.configuration, Gateway { app: app.clone() });
    h1.server_options = Some(HttpServerOptions::default());
    let mut h2 = pingora::proxy::http_proxy(&server.configuration, Gateway { app: app.clone() });
    let mut h2_options = HttpServerOptions::default();
    h2_options.h2c = true;
    h2_options.h2_idle_timeout = Some(app.config.server.keepalive_timeout);
    h2.server_options = Some(h2_options);
    let file_limit = raise_file_limit();
    let limits = crate::downstream::Limits {
        client_header_timeout: app.config.server.client_header_timeout,
        keepalive_timeout: app.config.server.keepalive_timeout,
        max_connections: app
            .config
            .server
            .max_connections
            .unwrap_or((file_limit / 4 * 3).max(64)),
    };
    tracing::debug!(
        file_limit,
        max_connections = limits.max_connections,
        "connection limits"
    );
    let mut proxy = Service::new(
        "sluice".to_string(),
        crate::downstream::Downstream::new(h1, h2, limits, app.clone()),
    );
    match &tls {
        Some(files) => {
            let mut settings = TlsSettings::intermediate(&files.cert, &files.key).map_err(|e| {
                anyhow::anyhow!(
                    "loading TLS certificate {} / key {}: {e}",
                    files.cert,
                    files.key
                )
            })?;
            settings.enable_h2();
            proxy.add_tls_with_settings(&listen, None, settings);
        }
        None => proxy.add_tcp(&listen),
    }
    server.add_service(proxy);

    let mut dns = background_service(
        "dns-refresh",
        DnsRefresher {
            endpoints: app.endpoints.clone(),
        },
    );
    dns.threads = Some(1);
    server.add_service(dns);

    tracing::info!(
        address = %listen,
        tls = tls.is_some(),
        threads = app.config.server.threads,
        deployments = app.config.deployments.len(),
        "Sluice is listening"
    );
    let pass_through: Vec<&str> = app
        .config
        .pass_through
        .configured()
        .map(|p| p.name())
        .collect();
    if !pass_through.is_empty() {
        tracing::info!(
            routes = %pass_through.join(", "),
            "provider pass-through routes have credentials"
        );
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainingShutdown {
            app: app.clone(),
            grace,
        }),
    });
    app.flush_before_exit();
    crate::logging::flush();
    Ok(())
}

fn listen_address(config: &RuntimeConfig) -> String {
    let host = &config.server.host;
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{}", config.server.port)
    } else {
        format!("{host}:{}", config.server.port)
    }
}

/// Raises the open-file limit to what the system allows (each client and upstream connection
/// takes a descriptor) and returns it.
fn raise_file_limit() -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map_or(1024, |(soft, _)| usize::try_from(soft).unwrap_or(1024))
        }
    }
}

/// Resolves every upstream host once before serving, so the first requests find addresses.
fn resolve_upstreams_once(app: &Arc<App>) {
    let endpoints = app.endpoints.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(6), endpoints.resolve_all()).await;
        }),
        Err(e) => tracing::warn!("cannot resolve upstream hosts at start-up: {e}"),
    }
}
