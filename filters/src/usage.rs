//! Token usage as OpenAI reports it, the input to metrics, spend and budgets.

use serde::Deserialize;

/// `usage` of a completion, embedding or final stream chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache (Anthropic's and Bedrock's
    /// `cache_creation_input_tokens`), priced at `cache_creation_input_token_cost`.
    #[serde(default)]
    pub cache_write_tokens: Option<u64>,
}

impl Usage {
    /// Parses a `usage` object; `None` when it is not one.
    ///
    /// The common shape (integer counts) is read with the top-level scanner, which costs a
    /// fraction of a serde parse on every response; anything unusual falls back to serde.
    pub fn parse(json: &[u8]) -> Option<Usage> {
        if json.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        let mut usage = Usage::scan(json).or_else(|| serde_json::from_slice(json).ok())?;
        if usage.total_tokens == 0 {
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        }
        Some(usage)
    }

    fn scan(json: &[u8]) -> Option<Usage> {
        let mut usage = Usage::default();
        let mut ok = true;
        let complete = crate::json_scan::for_each_member(json, |key, span| {
            let value = &json[span];
            let count = || parse_count(value);
            match key {
                b"prompt_tokens" => ok &= count().map(|n| usage.prompt_tokens = n).is_some(),
                b"completion_tokens" => {
                    ok &= count().map(|n| usage.completion_tokens = n).is_some()
                }
                b"total_tokens" => ok &= count().map(|n| usage.total_tokens = n).is_some(),
                b"prompt_tokens_details" if value.first() == Some(&b'{') => {
                    let mut cached = None;
                    let mut written = None;
                    let inner_ok = crate::json_scan::for_each_member(value, |k, s| {
                        if k == b"cached_tokens" {
                            cached = parse_count(&value[s]);
                        } else if k == b"cache_write_tokens" {
                            written = parse_count(&value[s]);
                        }
                    });
                    ok &= inner_ok == Some(true);
                    usage.prompt_tokens_details = Some(PromptTokensDetails {
                        cached_tokens: cached,
                        cache_write_tokens: written,
                    });
                }
                _ => {}
            }
        })?;
        (complete && ok).then_some(usage)
    }

    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }
}

/// A non-negative integer JSON value (`null` counts as 0).
fn parse_count(value: &[u8]) -> Option<u64> {
    if value == b"null" {
        return Some(0);
    }
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_usage_and_fills_total() {
        let u = Usage::parse(br#"{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0}}"#).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (9, 2, 11)
        );
        assert_eq!(u.cached_tokens(), 4);
        let u = Usage::parse(br#"{"prompt_tokens":5}"#).unwrap();
        assert_eq!(u.total_tokens, 5);
        assert!(Usage::parse(b"[1]").is_none());
    }

    #[test]
    fn the_fast_scan_agrees_with_serde_and_falls_back_when_unsure() {
        for json in [
            &br#"{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}"#[..],
            br#"{"prompt_tokens":3.0,"completion_tokens":1}"#,
            br#"{"prompt_tokens":"7"}"#,
        ] {
            let serde: Option<Usage> = serde_json::from_slice(json).ok().map(|mut u: Usage| {
                if u.total_tokens == 0 {
                    u.total_tokens = u.prompt_tokens + u.completion_tokens;
                }
                u
            });
            assert_eq!(Usage::parse(json), serde, "{}", String::from_utf8_lossy(json));
        }
        assert!(
            Usage::scan(br#"{"prompt_tokens":3.0}"#).is_none(),
            "floats go to serde"
        );
        // Some providers send null counts; they read as 0 (serde alone would reject the object).
        let u = Usage::parse(br#"{ "prompt_tokens" : 1 , "completion_tokens" : null }"#).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (1, 0, 1)
        );
    }
}
