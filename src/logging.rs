//! Structured logs: text by default, JSON with `litellm_settings.json_logs: true` (or
//! `JSON_LOGS=true`), written by a background thread so no request waits on stdout.
//!
//! Levels: `RUST_LOG` wins; otherwise `LITELLM_LOG` (DEBUG, INFO, WARNING, ERROR) or
//! `set_verbose: true` (debug) set Sluice's level, and Pingora's own logs stay at warn.
//! API keys are never logged: the access line carries the request id, route, model and numbers.

use std::io::IsTerminal;
use std::sync::OnceLock;

use parking_lot::Mutex;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::EnvFilter;

static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);
static ACCESS_WRITER: OnceLock<(NonBlocking, bool)> = OnceLock::new();

/// The writer and format (JSON or text) for access-log lines, once logging is initialised.
pub fn access_writer() -> Option<&'static (NonBlocking, bool)> {
    ACCESS_WRITER.get()
}

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(json: bool, verbose: bool) {
    let level = std::env::var("LITELLM_LOG")
        .ok()
        .map(|l| match l.to_ascii_uppercase().as_str() {
            "DEBUG" => "debug",
            "WARNING" | "WARN" => "warn",
            "ERROR" | "CRITICAL" => "error",
            _ => "info",
        })
        .unwrap_or(if verbose { "debug" } else { "info" });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!("warn,sluice={level},pingora_core::server=warn"))
    });
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let access_enabled = filter
        .max_level_hint()
        .is_none_or(|l| l >= tracing::level_filters::LevelFilter::INFO);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(true);
    let installed = if json {
        builder.json().flatten_event(true).try_init().is_ok()
    } else {
        builder.try_init().is_ok()
    };
    if installed {
        *GUARD.lock() = Some(guard);
        if access_enabled {
            let _ = ACCESS_WRITER.set((writer, json));
        }
    }
}

/// Flushes buffered log lines (before the process exits).
pub fn flush() {
    drop(GUARD.lock().take());
}
