//! Query-string parameters of admin and listing routes (`?key=`, `?model_group=`), decoded as
//! HTML forms encode them (`+` is a space), with the `form_urlencoded` crate that `url` uses.
//! Called from `request_filter`'s local answers; never on the forwarding path.

/// The first value of query parameter `name`, percent-decoded; `None` when absent. A malformed
/// escape (`%zz`) is kept as written, and invalid UTF-8 is replaced, never refused.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_decode() {
        assert_eq!(
            query_param(Some("a=1&model_group=gpt%2D4o+x"), "model_group").as_deref(),
            Some("gpt-4o x")
        );
        assert_eq!(query_param(Some("a=1"), "b"), None);
        assert_eq!(query_param(None, "b"), None);
        assert_eq!(query_param(Some("a"), "a").as_deref(), Some(""));
        assert_eq!(query_param(Some("k=%zz%"), "k").as_deref(), Some("%zz%"));
        assert_eq!(query_param(Some("k=%é1"), "k").as_deref(), Some("%é1"));
        assert_eq!(query_param(Some("k=1&k=2"), "k").as_deref(), Some("1"));
    }
}
