//! Wall-clock time in Unix milliseconds, budget-window arithmetic (`budget_duration` strings as
//! LiteLLM writes them) and ISO-8601 rendering for the admin API's timestamps.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds added to the system clock: 0, unless a test moves the gateway's time on (see
/// [`follow_test_clock`]).
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Now, in Unix milliseconds: what budgets, rate-limit minutes, key expiry and spend-log times
/// are measured with.
pub fn now_ms() -> i64 {
    ms_at(SystemTime::now())
}

/// `now_ms` of a time already read (the logging phase reads the clock once for everything).
pub fn ms_at(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        + OFFSET_MS.load(Ordering::Relaxed)
}

/// The injectable clock: with `SLUICE_TEST_CLOCK_FILE` set, the file's content (a number of
/// milliseconds, re-read every 50 ms) is added to the time, so a test can move a running
/// gateway a month on and watch budget windows roll without waiting for them. Returns whether
/// it is on (the caller warns: a production gateway must never run with it).
pub fn follow_test_clock() -> bool {
    let Some(path) = std::env::var_os("SLUICE_TEST_CLOCK_FILE") else {
        return false;
    };
    let read = move || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    if let Some(offset) = read() {
        OFFSET_MS.store(offset, Ordering::Relaxed);
    }
    std::thread::Builder::new()
        .name("sluice-test-clock".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                if let Some(offset) = read() {
                    OFFSET_MS.store(offset, Ordering::Relaxed);
                }
            }
        })
        .is_ok()
}

/// Longest duration accepted (100 years): keeps window arithmetic and ISO dates in range.
const MAX_MILLIS: i64 = 100 * 366 * 86_400_000;
const MAX_MONTHS: i64 = 1200;

/// A `budget_duration` / `duration`: seconds, minutes, hours, days, weeks or calendar months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Millis(i64),
    Months(i64),
}

/// Parses LiteLLM's duration strings: `30s`, `30m`, `30h`, `30d`, `2w`, `1mo` (a bare number
/// is seconds, as in LiteLLM's `duration_in_seconds`).
pub fn parse_span(text: &str) -> Result<Span, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected a number and a unit such as 30s, 30m, 1h, 1d, 7d, 1mo"))?;
    if n <= 0 {
        return Err(format!("invalid duration {text:?}: must be positive"));
    }
    let unit_ms: i64 = match unit {
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "mo" => {
            if n > MAX_MONTHS {
                return Err(format!("invalid duration {text:?}: at most 100 years"));
            }
            return Ok(Span::Months(n));
        }
        _ => {
            return Err(format!(
                "invalid duration {text:?}: unit must be s, m, h, d, w or mo"
            ));
        }
    };
    match n.checked_mul(unit_ms) {
        Some(ms) if ms <= MAX_MILLIS => Ok(Span::Millis(ms)),
        _ => Err(format!("invalid duration {text:?}: at most 100 years")),
    }
}

impl Span {
    /// `from` plus this span (months keep the day of month, clamped to the month's length).
    pub fn after(self, from_ms: i64) -> i64 {
        match self {
            Span::Millis(ms) => from_ms + ms,
            Span::Months(n) => add_months(from_ms, n),
        }
    }

    /// The end of the window that contains `now`, for a window that ended at `reset_at`.
    pub fn next_after(self, mut reset_at: i64, now_ms: i64) -> i64 {
        if let Span::Millis(ms) = self {
            if reset_at <= now_ms {
                let behind = (now_ms - reset_at) / ms + 1;
                reset_at += behind * ms;
            }
            return reset_at;
        }
        while reset_at <= now_ms {
            reset_at = self.after(reset_at);
        }
        reset_at
    }
}

fn add_months(ms: i64, months: i64) -> i64 {
    let day_ms = 86_400_000;
    let days = ms.div_euclid(day_ms);
    let time = ms.rem_euclid(day_ms);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m as i64 - 1) + months;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) as u32 + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * day_ms + time
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// ISO-8601 UTC with milliseconds, as LiteLLM's JSON shows datetimes.
pub fn iso(ms: i64) -> String {
    // humantime renders years up to 9999; later times are clamped rather than failing.
    let ms = ms.clamp(0, 253_402_300_799_000);
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an ISO-8601 timestamp (`2026-01-01T00:00:00Z`, with or without fraction/zone).
pub fn parse_iso(text: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(text.trim().trim_end_matches('Z'))
        .or_else(|_| humantime::parse_rfc3339(text.trim()))
        .ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_litellm_durations() {
        assert_eq!(parse_span("30s"), Ok(Span::Millis(30_000)));
        assert_eq!(parse_span("30m"), Ok(Span::Millis(1_800_000)));
        assert_eq!(parse_span("1h"), Ok(Span::Millis(3_600_000)));
        assert_eq!(parse_span("7d"), Ok(Span::Millis(604_800_000)));
        assert_eq!(parse_span("30d"), Ok(Span::Millis(2_592_000_000)));
        assert_eq!(parse_span("1mo"), Ok(Span::Months(1)));
        assert_eq!(parse_span("45"), Ok(Span::Millis(45_000)));
        assert!(parse_span("1y").is_err());
        assert!(parse_span("abc").is_err());
        assert!(parse_span("0d").is_err());
        // Overflowing or absurd spans are refused, not wrapped.
        assert!(parse_span("2305843009213693952s").is_err());
        assert!(parse_span("3000000d").is_err());
        assert!(parse_span("99999mo").is_err());
        assert!(parse_span("36500d").is_ok());
    }

    #[test]
    fn months_keep_the_day_and_clamp() {
        let jan31 = parse_iso("2026-01-31T10:00:00Z").unwrap();
        assert_eq!(
            iso(Span::Months(1).after(jan31)),
            "2026-02-28T10:00:00.000Z"
        );
        let feb29 = parse_iso("2024-02-29T00:00:00Z").unwrap();
        assert_eq!(
            iso(Span::Months(12).after(feb29)),
            "2025-02-28T00:00:00.000Z"
        );
        let dec15 = parse_iso("2025-12-15T00:00:00Z").unwrap();
        assert_eq!(
            iso(Span::Months(1).after(dec15)),
            "2026-01-15T00:00:00.000Z"
        );
    }

    #[test]
    fn next_window_skips_missed_windows() {
        let s = Span::Millis(1000);
        assert_eq!(s.next_after(5000, 4000), 5000);
        assert_eq!(s.next_after(5000, 5000), 6000);
        assert_eq!(s.next_after(5000, 9500), 10_000);
        let m = Span::Months(1);
        let jan1 = parse_iso("2026-01-01T00:00:00Z").unwrap();
        let mar10 = parse_iso("2026-03-10T00:00:00Z").unwrap();
        assert_eq!(iso(m.next_after(jan1, mar10)), "2026-04-01T00:00:00.000Z");
    }
}
