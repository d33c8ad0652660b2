//! Graceful shutdown: SIGTERM stops accepting connections, lets in-flight requests (streams
//! included) finish, and exits as soon as none is left, or when the grace period ends.
//!
//! Pingora on its own sleeps the whole `grace_period_seconds` after SIGTERM even when idle
//! (pingora-core 0.9 `server/mod.rs`), and its default is 300 s. Sluice sets the grace period
//! from `sluice_settings.graceful_shutdown_seconds` and watches the in-flight count itself,
//! exiting early once the gateway is drained. SIGINT exits at once; SIGQUIT is Pingora's
//! graceful upgrade (listening sockets handed to a new process started with `--upgrade`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

use crate::app::App;

/// Pause after SIGTERM before the first drain check, so Pingora has stopped its listeners.
const SETTLE: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(25);

/// Pingora's shutdown signal source, with Sluice's drain monitor attached.
pub struct DrainingShutdown {
    pub app: Arc<App>,
    pub grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (mut quit, mut term, mut int) = match (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(q), Ok(t), Ok(i)) => (q, t, i),
            _ => {
                tracing::error!("cannot install signal handlers; SIGTERM will not drain");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = quit.recv() => {
                tracing::info!("SIGQUIT: handing listening sockets to the new process");
                self.app.start_draining();
                ShutdownSignal::GracefulUpgrade
            }
            _ = term.recv() => {
                tracing::info!(in_flight = self.app.in_flight(), grace_seconds = self.grace.as_secs_f64(), "SIGTERM: draining in-flight requests");
                self.app.start_draining();
                spawn_drain_monitor(self.app.clone(), self.grace);
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: exiting now");
                crate::logging::flush();
                ShutdownSignal::FastShutdown
            }
        }
    }
}

/// Exits the process once no request is in flight (Pingora would otherwise sleep out the
/// whole grace period); when the grace period ends first, Pingora's own shutdown takes over.
fn spawn_drain_monitor(app: Arc<App>, grace: Duration) {
    let spawned = std::thread::Builder::new()
        .name("sluice-drain".into())
        .spawn(move || {
            let deadline = Instant::now() + grace;
            std::thread::sleep(SETTLE);
            while Instant::now() < deadline {
                if app.in_flight() == 0 {
                    tracing::info!("drained: no request in flight, exiting");
                    app.flush_before_exit();
                    crate::logging::flush();
                    std::process::exit(0);
                }
                std::thread::sleep(POLL);
            }
            tracing::warn!(
                in_flight = app.in_flight(),
                "grace period over with requests still in flight"
            );
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the drain monitor: {e}");
    }
}
