//! Structured logs: text by default, JSON with `litellm_settings.json_logs: true` (or
//! `JSON_LOGS=true`), written to stdout in batches so that no request waits on a syscall.
//!
//! Levels: `RUST_LOG` wins; otherwise `LITELLM_LOG` (DEBUG, INFO, WARNING, ERROR) or
//! `set_verbose: true` (debug) set Sluice's level, and Pingora's own logs stay at warn.
//! API keys are never logged: the access line carries the request id, route, model and numbers.
//!
//! Why not a channel to a writer thread (tracing-appender): under load every request woke that
//! thread (futex), which spun in `sched_yield` before parking, and wrote one line per syscall;
//! strace showed three `sched_yield`, one `futex` and one `write` per request on the proxy's
//! core. Here lines are appended to a shared buffer (an uncontended lock is one atomic
//! operation) and a flusher thread writes whatever accumulated every [`FLUSH_INTERVAL`].

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::Mutex;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How often buffered log lines are written out.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// A buffer this large is written out at once by the thread that filled it.
const HIGH_WATER: usize = 1024 * 1024;

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// The buffer being written out while the other one fills (only `flush` touches it).
static SPARE: Mutex<Vec<u8>> = Mutex::new(Vec::new());
const INITIAL_CAPACITY: usize = 64 * 1024;
static ACCESS_FORMAT: OnceLock<bool> = OnceLock::new();

/// Appends log bytes; a full buffer is written out by the caller.
pub fn append(bytes: &[u8]) {
    let full = {
        let mut buffer = BUFFER.lock();
        buffer.extend_from_slice(bytes);
        (buffer.len() >= HIGH_WATER).then(|| std::mem::take(&mut *buffer))
    };
    if let Some(full) = full {
        write_out(&full);
    }
}

/// Writes everything buffered so far (the flusher thread, and before the process exits).
pub fn flush() {
    // Double buffering: the two buffers alternate and keep their capacity, so the request path
    // appends into memory that is already allocated and touched, instead of regrowing (and
    // page-faulting in) a fresh buffer after every flush.
    let mut pending = SPARE.lock();
    pending.clear();
    if pending.capacity() < INITIAL_CAPACITY {
        pending.reserve(INITIAL_CAPACITY);
    }
    std::mem::swap(&mut *pending, &mut *BUFFER.lock());
    if !pending.is_empty() {
        write_out(&pending);
    }
    // A burst may have grown it far beyond the steady state: give that memory back.
    if pending.capacity() > 4 * HIGH_WATER {
        *pending = Vec::new();
    }
}

fn write_out(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// Whether access lines are JSON (`Some(true)`), text (`Some(false)`), or off (`None`: logging
/// not initialised, or the level filters INFO out).
pub fn access_format() -> Option<bool> {
    ACCESS_FORMAT.get().copied()
}

/// `tracing`'s writer: every formatted event goes into the shared buffer.
#[derive(Clone, Copy, Default)]
pub struct BufferedStdout;

impl Write for BufferedStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = BufferedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        BufferedStdout
    }
}

/// The text format's writer: each event arrives in one `write`, and any line break or control
/// character inside it (a value from a request or an upstream in a message) is written escaped,
/// so one event is always one line. ANSI colour escapes are kept when `ansi` is set (a terminal).
#[derive(Clone, Copy, Default)]
pub struct OneLineStdout {
    ansi: bool,
}

impl Write for OneLineStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        append(&one_line(buf, self.ansi));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for OneLineStdout {
    type Writer = OneLineStdout;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// `event` with its line breaks and control characters escaped, but its final newline.
fn one_line(event: &[u8], ansi: bool) -> std::borrow::Cow<'_, [u8]> {
    let (body, end) = match event.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (event, &b""[..]),
    };
    let unsafe_byte = |b: u8| (b < b' ' && b != b'\t' && !(ansi && b == 0x1b)) || b == 0x7f;
    if !body.iter().any(|&b| unsafe_byte(b)) {
        return std::borrow::Cow::Borrowed(event);
    }
    let mut out = Vec::with_capacity(event.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if unsafe_byte(b) => {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            b => out.push(b),
        }
    }
    out.extend_from_slice(end);
    std::borrow::Cow::Owned(out)
}

/// Installs the global subscriber and starts the flusher. Later calls are ignored.
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
    let access_enabled = filter
        .max_level_hint()
        .is_none_or(|l| l >= tracing::level_filters::LevelFilter::INFO);
    let ansi = std::io::stdout().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(true);
    let installed = if json {
        builder
            .with_writer(BufferedStdout)
            .json()
            .flatten_event(true)
            .try_init()
            .is_ok()
    } else {
        builder
            .with_writer(OneLineStdout { ansi })
            .try_init()
            .is_ok()
    };
    if !installed {
        return;
    }
    if access_enabled {
        let _ = ACCESS_FORMAT.set(json);
    }
    let started = std::thread::Builder::new()
        .name("sluice-log-flush".into())
        .spawn(|| {
            loop {
                std::thread::sleep(FLUSH_INTERVAL);
                flush();
            }
        });
    if started.is_err() {
        eprintln!("cannot start the log flusher; logs are written when the buffer fills");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_events_stay_one_line() {
        assert_eq!(
            &*one_line(b"INFO x: fine\tvalue\n", false),
            b"INFO x: fine\tvalue\n"
        );
        assert_eq!(
            &*one_line(b"WARN x: a\nINFO forged\r\0\x1b[31m\n", false),
            &b"WARN x: a\\nINFO forged\\r\\x00\\x1b[31m\n"[..]
        );
        // A terminal keeps its colours.
        assert_eq!(
            &*one_line(b"\x1b[32mINFO\x1b[0m x\n", true),
            b"\x1b[32mINFO\x1b[0m x\n"
        );
    }

    #[test]
    fn appended_lines_stay_buffered_until_flushed() {
        append(b"line one\n");
        append(b"line two\n");
        let buffered = BUFFER.lock().clone();
        let text = String::from_utf8_lossy(&buffered);
        assert!(text.contains("line one\nline two\n"), "{text}");
        flush();
        assert!(BUFFER.lock().is_empty());
    }
}
