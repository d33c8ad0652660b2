//! Graceful shutdown: SIGTERM stops accepting connections, lets in-flight requests (streams
//! included) finish, and exits as soon as none is left, or when the grace period ends.
//!
//! Pingora on its own sleeps the whole `grace_period_seconds` after SIGTERM even when idle
//! (pingora-core 0.9 `server/mod.rs`), and its default is 300 s. Sluice sets the grace period
//! from `sluice_settings.graceful_shutdown_seconds` and watches the in-flight count itself,
//! exiting early once the gateway is drained. SIGINT exits at once; SIGQUIT is Pingora's
//! graceful upgrade (listening sockets handed to a new process started with `--upgrade`), and
//! SIGHUP (`sluice reload`) starts that new process itself, once its config checks out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

use crate::app::App;

/// Pause after SIGTERM before the first drain check, so Pingora has stopped its listeners.
const SETTLE: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(25);

/// How long Pingora keeps accepting after handing the sockets over (its `CLOSE_TIMEOUT`),
/// plus a margin.
const UPGRADE_OVERLAP: Duration = Duration::from_millis(5_500);

/// Pingora's shutdown signal source, with Sluice's drain monitor attached.
pub struct DrainingShutdown {
    pub app: Arc<App>,
    pub grace: Duration,
    /// The socket a new process started with `--upgrade` waits on.
    pub upgrade_socket: String,
    /// How this process was started (program and arguments): SIGHUP starts it again with
    /// `--upgrade`.
    pub restart: Option<Vec<std::ffi::OsString>>,
}

/// Checks the config as the command line names it (`sluice check`), then starts the new
/// process with `--upgrade` and waits (up to 30 s) until it waits on the upgrade socket. `Err`:
/// why not (the config's problems, or the new process's failure).
async fn start_successor(command: &[std::ffi::OsString], socket: &str) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("no command line to start from".into());
    };
    let check = tokio::process::Command::new(program)
        .args(args)
        .arg("check")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.to_string_lossy()))?;
    if !check.status.success() {
        let said = String::from_utf8_lossy(&check.stderr).trim().to_string();
        return Err(format!("the config does not start: {said}"));
    }
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg("--upgrade")
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if is_socket(socket) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the new process exited at start ({status})"));
        }
        tokio::time::sleep(POLL).await;
    }
    let _ = child.start_kill();
    Err("the new process did not get ready within 30 s".into())
}

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (mut quit, mut term, mut int, mut hup) = match (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(q), Ok(t), Ok(i), Ok(h)) => (q, t, i, h),
            _ => {
                tracing::error!("cannot install signal handlers; SIGTERM will not drain");
                return std::future::pending().await;
            }
        };
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    // Pingora shuts down even when no new process takes the sockets: refuse
                    // that outage unless one is waiting on the upgrade socket.
                    if !is_socket(&self.upgrade_socket) {
                        tracing::error!(socket = %self.upgrade_socket, "SIGQUIT ignored: no new Sluice is waiting for the listening sockets (start one with --upgrade first)");
                        continue;
                    }
                    tracing::info!(in_flight = self.app.in_flight(), "SIGQUIT: handing the listening sockets to the new process, then draining");
                    return self.hand_over();
                }
                _ = hup.recv() => {
                    // Reload: a copy of this process (the binary at its path now, the config
                    // file as it is now) takes over, as after SIGQUIT.
                    let started = match &self.restart {
                        Some(command) => start_successor(command, &self.upgrade_socket).await,
                        None => Err("this process cannot restart itself".to_string()),
                    };
                    if let Err(why) = started {
                        tracing::error!("SIGHUP: not reloaded, this process keeps serving: {why}");
                        continue;
                    }
                    tracing::info!(in_flight = self.app.in_flight(), "SIGHUP: the new process is waiting; handing the listening sockets over, then draining");
                    return self.hand_over();
                }
                _ = term.recv() => {
                    tracing::info!(in_flight = self.app.in_flight(), grace_seconds = self.grace.as_secs_f64(), "SIGTERM: draining in-flight requests");
                    self.app.start_draining();
                    spawn_drain_monitor(self.app.clone(), self.grace, Duration::ZERO);
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    crate::logging::flush();
                    return ShutdownSignal::FastShutdown;
                }
            }
        }
    }
}

impl DrainingShutdown {
    /// Pingora's graceful upgrade, with the drain monitor: Pingora keeps accepting for 5 s
    /// after the hand-over, then stops; this process exits once drained.
    fn hand_over(&self) -> ShutdownSignal {
        self.app.start_upgrade();
        spawn_drain_monitor(
            self.app.clone(),
            self.grace + UPGRADE_OVERLAP,
            UPGRADE_OVERLAP,
        );
        ShutdownSignal::GracefulUpgrade
    }
}

/// Whether `path` is a Unix socket (a new process waits on it).
fn is_socket(path: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Exits the process once no request is in flight (Pingora would otherwise sleep out the
/// whole grace period), and after an upgrade once no client connection is open either; when
/// the grace period ends first, Pingora's own shutdown takes over. `after`: the first check
/// waits this long (an upgrade's overlap, while both processes accept).
fn spawn_drain_monitor(app: Arc<App>, grace: Duration, after: Duration) {
    let spawned = std::thread::Builder::new()
        .name("sluice-drain".into())
        .spawn(move || {
            let deadline = Instant::now() + grace;
            std::thread::sleep(after + SETTLE);
            let upgrading = app.is_upgrading();
            while Instant::now() < deadline {
                let idle_connections = upgrading && app.metrics.open_connections.get() > 0;
                if app.in_flight() == 0 && !idle_connections {
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
