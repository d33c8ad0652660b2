//! The access log: one line per request, written from Pingora's `logging` phase.
//!
//! Lines have the same shape as the rest of the log (text, or JSON with
//! `litellm_settings.json_logs`) but are formatted here directly into a reused buffer and
//! appended to the batched log buffer (see `logging`): going through `tracing`'s field visitors
//! cost several microseconds per request under load. No key, header value or body is written.

use std::cell::RefCell;
use std::fmt;
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
    /// Attempts after the first (retries on this or another deployment).
    pub retries: u64,
    /// After a retry, every attempt as `deployment_id:status:milliseconds`, comma-separated
    /// ("" when there was one attempt, and then not written).
    pub attempts: &'a str,
    /// When the request finished (the line's timestamp).
    pub at: SystemTime,
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

/// Writes the entry, if logging is initialised and the level lets INFO through.
pub fn write(entry: &AccessEntry<'_>) {
    let Some(json) = crate::logging::access_format() else {
        return;
    };
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        if json {
            format_json(&mut line, entry);
        } else {
            format_text(&mut line, entry);
        }
        line.push('\n');
        crate::logging::append(line.as_bytes());
    });
}

/// Appends the current UTC time as RFC 3339 with microseconds. The date and time to the second
/// are formatted once per second per thread.
fn push_timestamp(out: &mut String, at: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != now.as_secs() {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            cell.1 = text.trim_end_matches('Z').to_string();
            cell.0 = now.as_secs();
        }
        out.push_str(&cell.1);
    });
    out.push('.');
    push_padded(out, u64::from(now.subsec_micros()), 6);
    out.push('Z');
}

/// Appends a number in decimal, zero-padded to `width`, without the fmt machinery (`itoa`
/// writes two digits per step and hands back `&str`, so nothing is validated again).
fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n);
    for _ in digits.len()..width.min(20) {
        out.push('0');
    }
    out.push_str(digits);
}

pub(crate) fn push_u64(out: &mut String, n: u64) {
    push_padded(out, n, 1);
}

/// A duration in milliseconds (three decimals) as a header value, without the `fmt`
/// machinery (`x-litellm-response-duration-ms` and `-overhead-duration-ms` on every response).
pub fn millis_header(d: Duration) -> http::HeaderValue {
    let mut text = String::with_capacity(16);
    push_millis(&mut text, Some(d));
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| http::HeaderValue::from_static("-1"))
}

fn push_millis(out: &mut String, d: Option<Duration>) {
    match d {
        Some(d) => {
            let us = d.as_micros() as u64;
            push_u64(out, us / 1000);
            out.push('.');
            push_padded(out, us % 1000, 3);
        }
        None => out.push_str("-1"),
    }
}

fn push_bool(out: &mut String, b: bool) {
    out.push_str(if b { "true" } else { "false" });
}

/// `2026-01-01T00:00:00.000000Z  INFO sluice::access: access request_id=... status=200 ...`
pub fn format_text(out: &mut String, e: &AccessEntry<'_>) {
    push_timestamp(out, e.at);
    out.push_str("  INFO sluice::access: access");
    for (k, v) in [
        ("request_id", e.request_id),
        ("method", e.method),
        ("path", e.path),
    ] {
        push_pair(out, k, v);
    }
    out.push_str(" status=");
    push_u64(out, u64::from(e.status));
    for (k, v) in [
        ("error", e.error),
        ("model", e.model),
        ("model_group", e.model_group),
        ("model_id", e.model_id),
    ] {
        push_pair(out, k, v);
    }
    out.push_str(" stream=");
    push_bool(out, e.stream);
    out.push_str(" duration_ms=");
    push_millis(out, Some(e.duration));
    out.push_str(" upstream_ms=");
    push_millis(out, e.upstream);
    out.push_str(" ttft_ms=");
    push_millis(out, e.ttft);
    out.push_str(" prompt_tokens=");
    push_u64(out, e.prompt_tokens);
    out.push_str(" completion_tokens=");
    push_u64(out, e.completion_tokens);
    out.push_str(" bytes=");
    push_u64(out, e.bytes);
    out.push_str(" client_closed=");
    push_bool(out, e.client_closed);
    push_pair(out, "client_ip", e.client_ip);
    out.push_str(" retries=");
    push_u64(out, e.retries);
    if !e.attempts.is_empty() {
        push_pair(out, "attempts", e.attempts);
    }
}

/// ` key=value`, the value quoted and escaped (as a JSON string) when it holds anything that
/// could end the pair or the line: a space, a control character, `"`, `\`, `=`, or a Unicode
/// line separator. Values are partly client-controlled (`model`, `path`): a newline written
/// as it is would forge a log line.
fn push_pair(out: &mut String, key: &str, value: &str) {
    out.push(' ');
    out.push_str(key);
    out.push('=');
    let plain = value
        .bytes()
        .all(|b| b > b' ' && b != 0x7f && !matches!(b, b'"' | b'\\' | b'=' | 0xe2));
    if plain {
        out.push_str(value);
    } else {
        json_string(out, value);
    }
}

/// The same fields as tracing's flattened JSON events.
pub fn format_json(out: &mut String, e: &AccessEntry<'_>) {
    out.push_str("{\"timestamp\":\"");
    push_timestamp(out, e.at);
    out.push_str("\",\"level\":\"INFO\",\"message\":\"access\"");
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
        out.push_str(",\"");
        out.push_str(k);
        out.push_str("\":");
        json_string(out, v);
    }
    out.push_str(",\"status\":");
    push_u64(out, u64::from(e.status));
    out.push_str(",\"stream\":");
    push_bool(out, e.stream);
    out.push_str(",\"duration_ms\":");
    push_millis(out, Some(e.duration));
    out.push_str(",\"upstream_ms\":");
    push_millis(out, e.upstream);
    out.push_str(",\"ttft_ms\":");
    push_millis(out, e.ttft);
    out.push_str(",\"prompt_tokens\":");
    push_u64(out, e.prompt_tokens);
    out.push_str(",\"completion_tokens\":");
    push_u64(out, e.completion_tokens);
    out.push_str(",\"bytes\":");
    push_u64(out, e.bytes);
    out.push_str(",\"client_closed\":");
    push_bool(out, e.client_closed);
    out.push_str(",\"retries\":");
    push_u64(out, e.retries);
    if !e.attempts.is_empty() {
        out.push_str(",\"attempts\":");
        json_string(out, e.attempts);
    }
    out.push_str(",\"target\":\"sluice::access\"}");
}

fn json_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
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
            retries: 0,
            attempts: "",
            at: SystemTime::now(),
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
        assert_eq!(
            millis_header(Duration::from_micros(12_345_678)),
            "12345.678"
        );
        assert_eq!(millis_header(Duration::from_micros(7)), "0.007");
    }

    #[test]
    fn numbers_and_timestamps_are_formatted_like_fmt() {
        let mut s = String::new();
        push_millis(&mut s, Some(Duration::from_micros(12_003_004)));
        s.push(' ');
        push_millis(&mut s, Some(Duration::from_micros(7)));
        s.push(' ');
        push_u64(&mut s, 0);
        s.push(' ');
        push_u64(&mut s, 18_446_744_073_709_551_615);
        assert_eq!(s, "12003.004 0.007 0 18446744073709551615");
        let mut t = String::new();
        push_timestamp(&mut t, SystemTime::now());
        assert_eq!(t.len(), "2026-11-22T01:04:29.263926Z".len(), "{t}");
        assert!(humantime::parse_rfc3339(&t).is_ok(), "{t}");
    }

    /// A client's model name (or path) cannot end its pair or its line: the probe forged a
    /// whole access line with a newline in `model`.
    #[test]
    fn text_values_that_could_forge_a_line_are_quoted() {
        let mut s = String::new();
        let forged = "gpt-4o\n2026-01-01T00:00:00.000000Z  INFO sluice::access: access request_id=FORGED status=200\0\u{2028}x";
        format_text(
            &mut s,
            &AccessEntry {
                model: forged,
                path: "/v1/a b",
                ..entry()
            },
        );
        assert_eq!(s.lines().count(), 1, "{s}");
        assert!(!s.contains('\0') && !s.contains('\u{2028}'), "{s}");
        assert!(
            s.contains(r#" model="gpt-4o\n2026-01-01T00:00:00.000000Z  INFO sluice::access: access request_id=FORGED status=200\u0000\u2028x" "#),
            "{s}"
        );
        assert!(s.contains(r#" path="/v1/a b" "#), "{s}");
        // Ordinary values stay bare; non-ASCII text too.
        let mut s = String::new();
        format_text(
            &mut s,
            &AccessEntry {
                model: "modèle-1",
                ..entry()
            },
        );
        assert!(s.contains(" model=modèle-1 "), "{s}");
    }

    #[test]
    fn retries_are_counted_and_attempts_listed_only_after_one() {
        let mut s = String::new();
        format_text(&mut s, &entry());
        assert!(s.ends_with(" retries=0"), "{s}");
        let retried = AccessEntry {
            retries: 1,
            attempts: "deployment-a:429:3,deployment-b:200:41",
            ..entry()
        };
        let mut s = String::new();
        format_text(&mut s, &retried);
        assert!(
            s.ends_with(" retries=1 attempts=deployment-a:429:3,deployment-b:200:41"),
            "{s}"
        );
        let mut j = String::new();
        format_json(&mut j, &retried);
        let v: serde_json::Value = serde_json::from_str(&j).expect("one JSON object");
        assert_eq!(v["retries"], 1);
        assert_eq!(v["attempts"], "deployment-a:429:3,deployment-b:200:41");
        let mut j = String::new();
        format_json(&mut j, &entry());
        let v: serde_json::Value = serde_json::from_str(&j).expect("one JSON object");
        assert!(v.get("attempts").is_none(), "{j}");
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
