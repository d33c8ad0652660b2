//! The access log: one line per request, written from Pingora's `logging` phase.
//!
//! Lines have the same shape as the rest of the log (text, or JSON with
//! `litellm_settings.json_logs`) but are formatted here directly into a reused buffer and handed
//! to the background log writer: going through `tracing`'s field visitors cost several
//! microseconds per request under load. No key, header value or body is ever written.

use std::cell::RefCell;
use std::fmt;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

/// A duration written as milliseconds with three decimals, by integer arithmetic (float
/// formatting showed up in profiles); `None` is written as `-1`.
#[derive(Clone, Copy)]
pub struct Millis(pub Option<Duration>);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => {
                let us = d.as_micros();
                write!(f, "{}.{:03}", us / 1000, us % 1000)
            }
            None => f.write_str("-1"),
        }
    }
}

/// One request's access-log fields.
pub struct AccessEntry<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub error: &'a str,
    pub model: &'a str,
    pub model_group: &'a str,
    pub model_id: &'a str,
    pub stream: bool,
    pub duration: Duration,
    /// `None` (written as -1) when there was no upstream call.
    pub upstream: Option<Duration>,
    pub ttft: Option<Duration>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub bytes: u64,
    pub client_closed: bool,
    pub client_ip: &'a str,
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

/// Writes the entry, if logging is initialised and the level lets INFO through.
pub fn write(entry: &AccessEntry<'_>) {
    let Some((writer, json)) = crate::logging::access_writer() else {
        return;
    };
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        if *json {
            format_json(&mut line, entry);
        } else {
            format_text(&mut line, entry);
        }
        line.push('\n');
        let mut w = writer.clone();
        let _ = w.write_all(line.as_bytes());
    });
}

fn timestamp() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_micros(SystemTime::now())
}

/// `2026-01-01T00:00:00.000000Z  INFO sluice::access: access request_id=... status=200 ...`
pub fn format_text(out: &mut String, e: &AccessEntry<'_>) {
    let _ = write!(
        out,
        "{}  INFO sluice::access: access request_id={} method={} path={} status={} error={} model={} model_group={} model_id={} stream={} duration_ms={} upstream_ms={} ttft_ms={} prompt_tokens={} completion_tokens={} bytes={} client_closed={} client_ip={}",
        timestamp(),
        e.request_id,
        e.method,
        e.path,
        e.status,
        e.error,
        e.model,
        e.model_group,
        e.model_id,
        e.stream,
        Millis(Some(e.duration)),
        Millis(e.upstream),
        Millis(e.ttft),
        e.prompt_tokens,
        e.completion_tokens,
        e.bytes,
        e.client_closed,
        e.client_ip,
    );
}

/// The same fields as tracing's flattened JSON events.
pub fn format_json(out: &mut String, e: &AccessEntry<'_>) {
    let _ = write!(
        out,
        "{{\"timestamp\":\"{}\",\"level\":\"INFO\",\"message\":\"access\"",
        timestamp()
    );
    for (k, v) in [
        ("request_id", e.request_id),
        ("method", e.method),
        ("path", e.path),
        ("error", e.error),
        ("model", e.model),
        ("model_group", e.model_group),
        ("model_id", e.model_id),
        ("client_ip", e.client_ip),
    ] {
        let _ = write!(out, ",\"{k}\":");
        json_string(out, v);
    }
    let _ = write!(
        out,
        ",\"status\":{},\"stream\":{},\"duration_ms\":{},\"upstream_ms\":{},\"ttft_ms\":{},\"prompt_tokens\":{},\"completion_tokens\":{},\"bytes\":{},\"client_closed\":{},\"target\":\"sluice::access\"}}",
        e.status,
        e.stream,
        Millis(Some(e.duration)),
        Millis(e.upstream),
        Millis(e.ttft),
        e.prompt_tokens,
        e.completion_tokens,
        e.bytes,
        e.client_closed
    );
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AccessEntry<'static> {
        AccessEntry {
            request_id: "id-1",
            method: "POST",
            path: "/v1/chat/\"completions\"",
            status: 200,
            error: "",
            model: "gpt-4o",
            model_group: "gpt-4o",
            model_id: "abc",
            stream: true,
            duration: Duration::from_micros(1500),
            upstream: Some(Duration::from_millis(1)),
            ttft: None,
            prompt_tokens: 3,
            completion_tokens: 4,
            bytes: 99,
            client_closed: false,
            client_ip: "127.0.0.1",
        }
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut s = String::new();
        format_json(&mut s, &entry());
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["path"], "/v1/chat/\"completions\"");
        assert_eq!(v["status"], 200);
        assert_eq!(v["stream"], true);
        assert_eq!(v["target"], "sluice::access");
        assert_eq!(v["prompt_tokens"], 3);
        assert_eq!(v["ttft_ms"], -1);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(
            Millis(Some(Duration::from_micros(12_345_678))).to_string(),
            "12345.678"
        );
    }

    #[test]
    fn text_lines_are_key_value() {
        let mut s = String::new();
        format_text(&mut s, &entry());
        assert!(
            s.contains("INFO sluice::access: access request_id=id-1 method=POST"),
            "{s}"
        );
        assert!(s.contains(" status=200 "));
    }
}
