//! Names in upstream URLs (a Gemini model, an Azure deployment, a Bedrock model id) written as
//! exactly one path segment, whatever a client sent. With a wildcard group (`gemini/*`) the
//! name comes from the request, and the upstream request carries the operator's credentials:
//! a `/`, `?`, `#` or `..` left as it is would reach another path of the provider (the probe
//! sent `gemini/../../../../canary?x=`). Called while the forwarder encodes a request, in
//! Pingora's `request_filter`.

use std::borrow::Cow;

/// `name` as one path segment: every byte but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) percent-encoded (as the AWS SDK encodes Bedrock model ids), and the
/// dot segments `.` and `..` encoded whole, so no URL normalization can remove them.
pub fn segment(name: &str) -> Cow<'_, str> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if name.bytes().all(unreserved) && name != "." && name != ".." {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    let dots_only = name == "." || name == "..";
    for b in name.bytes() {
        if unreserved(b) && !dots_only {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn names_stay_one_segment() {
        assert!(matches!(
            segment("gemini-2.5-flash"),
            std::borrow::Cow::Borrowed("gemini-2.5-flash")
        ));
        assert_eq!(
            segment("../../../../canary?x="),
            "..%2F..%2F..%2F..%2Fcanary%3Fx%3D"
        );
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
        assert_eq!(segment("..."), "...");
        assert_eq!(segment("a#b c"), "a%23b%20c");
        assert_eq!(
            segment("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
        assert_eq!(segment("é"), "%C3%A9");
        assert_eq!(segment("%2e%2e"), "%252e%252e");
    }
}
