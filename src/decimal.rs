//! A float's shortest round-trip decimal text in the form Rust's `Display` gives it
//! (`0.0000051`, `12`, never an exponent), for the cost and spend headers of every response
//! (`x-litellm-response-cost`; `x-litellm-key-spend` on virtual keys), written when the
//! response header is built (`request_filter`, forwarder).
//!
//! `Display` runs the `fmt` machinery and Grisu with a Dragon fallback; `zmij` (dtolnay's
//! Schubfach, already in the tree through `serde_json`) finds the shortest digits in about 150
//! instructions, and moving its decimal point costs a few more. Where two shortest candidates
//! are equally close to the exact value (`1658206780088562.25`), the two may pick different
//! last digits; both read back as the same float.

/// Longest mantissa `zmij` writes before it switches to an exponent (`0.00001234567890123456`
/// is 22 bytes); anything longer goes through `Display`.
const MAX_MANTISSA: usize = 40;

/// `v` as a header value, in `Display`'s form.
pub fn header_value(v: f64) -> http::HeaderValue {
    let mut text = Vec::with_capacity(24);
    write_shortest(&mut text, v);
    http::HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or(http::HeaderValue::from_static("0"))
}

/// Appends `v` as `format!("{v}")` would.
fn write_shortest(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() && relayout(out, zmij::Buffer::new().format_finite(v).as_bytes()) {
        return;
    }
    use std::io::Write;
    let _ = write!(out, "{v}");
}

/// Rewrites `zmij`'s `[-]d[.ddd][e±n]` (`5.1e-6`, `1.0`, `1e+16`) as plain decimal digits
/// without a trailing `.0`, in one pass. `false` (nothing written) when the text is not of
/// that shape.
fn relayout(out: &mut Vec<u8>, text: &[u8]) -> bool {
    let negative = text.first() == Some(&b'-');
    let mut digits = [0u8; MAX_MANTISSA];
    let (mut len, mut int_len, mut seen_point, mut exponent) = (0, 0, false, 0);
    let mut i = usize::from(negative);
    while i < text.len() {
        match text[i] {
            b @ b'0'..=b'9' => {
                if len == MAX_MANTISSA {
                    return false;
                }
                digits[len] = b;
                len += 1;
                if !seen_point {
                    int_len += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            b'e' => {
                match parse_exponent(&text[i + 1..]) {
                    Some(e) => exponent = e,
                    None => return false,
                }
                break;
            }
            _ => return false,
        }
        i += 1;
    }
    if len == 0 {
        return false;
    }
    // The decimal point sits after `point` digits (negative: that many zeros before them).
    let mut point: i32 = int_len + exponent;
    let mut start = 0;
    while start < len && digits[start] == b'0' {
        start += 1;
        point -= 1;
    }
    while len > start && digits[len - 1] == b'0' {
        len -= 1;
    }
    if negative {
        out.push(b'-');
    }
    let digits = &digits[start..len];
    if digits.is_empty() {
        out.push(b'0');
    } else if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    } else if point as usize >= digits.len() {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', point as usize - digits.len()));
    } else {
        let (whole, fraction) = digits.split_at(point as usize);
        out.extend_from_slice(whole);
        out.push(b'.');
        out.extend_from_slice(fraction);
    }
    true
}

/// `+16`, `-6`, `300`: at most three digits (a double's decimal exponent is within ±324).
fn parse_exponent(text: &[u8]) -> Option<i32> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 3 {
        return None;
    }
    let mut e = 0i32;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        e = e * 10 + i32::from(d - b'0');
    }
    Some(if negative { -e } else { e })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shortest(v: f64) -> String {
        let mut s = Vec::new();
        write_shortest(&mut s, v);
        String::from_utf8(s).unwrap()
    }

    #[test]
    fn matches_display_for_typical_costs_and_edges() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            5.1e-6,
            0.0000051,
            0.0153,
            1234.56789,
            0.30000000000000004,
            1e-5,
            1e-4,
            7e-7,
            1e15,
            1e16,
            1e21,
            123456789012345680.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            -2.5e-300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert_eq!(shortest(v), format!("{v}"), "{v:e}");
        }
    }

    /// Floats from a spread of bit patterns (all exponents, random mantissas), and sums of
    /// small prices as spend accumulates them.
    #[test]
    fn matches_display_across_the_range() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let v = f64::from_bits(next());
            if !v.is_finite() {
                continue;
            }
            let (ours, display) = (shortest(v), format!("{v}"));
            // The same shortest digits, except that when two candidates are equally close to
            // the exact value (1658206780088562.25 lies halfway between ...562.2 and ...562.3)
            // either may be chosen: both read back as `v`.
            assert_eq!(ours.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{v:e}");
            assert_eq!(ours.len(), display.len(), "{v:e}");
            assert_eq!(
                ours[..ours.len() - 1],
                display[..display.len() - 1],
                "{v:e}"
            );
        }
        let mut spend = 0.0_f64;
        for i in 0..20_000 {
            spend += 0.15e-6 * (i % 97) as f64 + 0.6e-6 * (i % 13) as f64;
            assert_eq!(shortest(spend), format!("{spend}"));
        }
    }

    #[test]
    fn header_values_are_the_text() {
        assert_eq!(header_value(5.1e-6).to_str().unwrap(), "0.0000051");
        assert_eq!(header_value(12.0).to_str().unwrap(), "12");
    }

    #[test]
    fn refuses_text_of_another_shape() {
        let mut s = Vec::new();
        for bad in ["1.5e", "1x5", "", "-", "1.2.3", "1e+1234", "1e5x"] {
            assert!(!relayout(&mut s, bad.as_bytes()), "{bad}");
        }
        assert!(s.is_empty());
        assert!(relayout(&mut s, b"1.25e+2"));
        assert_eq!(s, b"125");
    }
}
