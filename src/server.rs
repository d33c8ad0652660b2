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
///
/// `upgrade`: take the listening sockets from the Sluice running on this port (binary upgrade,
/// `--upgrade`): this process waits on the upgrade socket, and the old one, sent SIGQUIT, hands
/// them over and drains (`shutdown.rs`).
pub fn run(
    config: RuntimeConfig,
    prices: Arc<PriceTable>,
    tls: Option<TlsFiles>,
    upgrade: bool,
    restart: Option<Vec<std::ffi::OsString>>,
) -> anyhow::Result<()> {
    let listen = listen_address(&config);
    // Pingora only panics its service thread when the port is taken; fail clearly instead
    // (unless the port is taken by the Sluice this one takes over from).
    if !upgrade {
        TcpListener::bind(&listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    }
    let (upgrade_sock, pid_file) = upgrade_paths(&config)?;

    let grace = config.server.graceful_shutdown;
    let conf = ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        // Pingora sleeps the whole grace period after SIGTERM (default 300 s); Sluice exits as
        // soon as it is drained (see shutdown.rs), so this is only the upper bound.
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool_size,
        pid_file: pid_file.clone(),
        upgrade_sock: upgrade_sock.clone(),
        // A new process (`--upgrade`) waits this many seconds for the old one's sockets.
        upgrade_sock_connect_accept_max_retries: Some(30),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    if upgrade {
        tracing::info!(socket = %upgrade_sock, "waiting for the running Sluice's listening sockets (send it SIGQUIT)");
    }
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    // The pid file names the process that holds the port now (`sluice reload` reads it).
    if let Err(e) = std::fs::write(&pid_file, std::process::id().to_string()) {
        tracing::warn!("cannot write the pid file {pid_file}: {e}");
    }

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
    // systemd (`Type=notify`, `NotifyAccess=all`): this process is the service's main one now,
    // also when it took over from another (`sluice reload`).
    notify_systemd(&format!("READY=1\nMAINPID={}", std::process::id()));
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
            upgrade_socket: upgrade_sock,
            restart,
        }),
    });
    app.flush_before_exit();
    crate::logging::flush();
    Ok(())
}

/// The upgrade socket and the pid file: `sluice_settings.upgrade_socket` (the pid file beside
/// it), else `upgrade-<port>.sock` and `sluice-<port>.pid` in a directory only this user can
/// write: systemd's `$RUNTIME_DIRECTORY`, else `$XDG_RUNTIME_DIR/sluice`, else
/// `/tmp/sluice-<uid>` (created with mode 0700). A shared, world-writable name would let another
/// user's process take the sockets.
pub fn upgrade_paths(config: &RuntimeConfig) -> anyhow::Result<(String, String)> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let port = config.server.port;
    if let Some(sock) = &config.server.upgrade_socket {
        let dir = std::path::Path::new(sock)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let pid = dir.join(format!("sluice-{port}.pid"));
        return Ok((sock.clone(), pid.to_string_lossy().into_owned()));
    }
    let env_dir = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = match (env_dir("RUNTIME_DIRECTORY"), env_dir("XDG_RUNTIME_DIR")) {
        // systemd may list several directories: the first.
        (Some(d), _) => std::path::PathBuf::from(
            d.to_string_lossy()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
        (None, Some(d)) => std::path::PathBuf::from(d).join("sluice"),
        (None, None) => {
            let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
            std::path::PathBuf::from(format!("/tmp/sluice-{uid}"))
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let owned = std::fs::metadata(&dir).map(|m| m.uid()).ok();
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if owned != me {
        anyhow::bail!(
            "{} belongs to another user; set sluice_settings.upgrade_socket",
            dir.display()
        );
    }
    let path = |name: String| dir.join(name).to_string_lossy().into_owned();
    Ok((
        path(format!("upgrade-{port}.sock")),
        path(format!("sluice-{port}.pid")),
    ))
}

/// Sends a message to systemd's notification socket (`$NOTIFY_SOCKET`, sd_notify(3)'s
/// protocol: one datagram), when there is one.
fn notify_systemd(message: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty()) else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let address = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = address
        .and_then(|address| UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &address));
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd at {path}: {e}");
    }
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
