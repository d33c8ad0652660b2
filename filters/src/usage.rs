//! Token usage as OpenAI reports it, the input to metrics, spend and budgets.

use serde::Deserialize;

use crate::request_fast::Parser;

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

    /// The common shape, read with the strict reader of the request fast path: integer counts
    /// (`null` as 0), `prompt_tokens_details` with integer counts. `None` (serde decides) on
    /// anything else: escaped names, fractional or negative counts, malformed JSON.
    fn scan(json: &[u8]) -> Option<Usage> {
        let mut usage = Usage::default();
        let mut p = Parser::new(json);
        p.object(|p, key| {
            match key.plain()? {
                b"prompt_tokens" => usage.prompt_tokens = p.optional_count()?.unwrap_or(0),
                b"completion_tokens" => usage.completion_tokens = p.optional_count()?.unwrap_or(0),
                b"total_tokens" => usage.total_tokens = p.optional_count()?.unwrap_or(0),
                b"prompt_tokens_details" if p.peek()? == b'{' => {
                    let mut details = PromptTokensDetails::default();
                    p.object(|p, key| {
                        // A detail that is not a count is left out, not a reason to fail.
                        let value = p.value_span(2)?;
                        match key.plain()? {
                            b"cached_tokens" => details.cached_tokens = parse_count(value),
                            b"cache_write_tokens" => {
                                details.cache_write_tokens = parse_count(value)
                            }
                            _ => {}
                        }
                        Some(())
                    })?;
                    usage.prompt_tokens_details = Some(details);
                }
                _ => p.value(1)?,
            }
            Some(())
        })?;
        p.at_end().then_some(usage)
    }

    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }
}

/// A non-negative integer JSON value (`null` counts as 0).
pub(crate) fn parse_count(value: &[u8]) -> Option<u64> {
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

    /// Generated usage objects (counts, nulls, details, extra members of every kind, member
    /// order and spacing varied) read to the values they were made from.
    #[test]
    fn the_fast_scan_reads_generated_usage() {
        let mut rng = fastrand::Rng::with_seed(5);
        for round in 0..2000 {
            let mut expected = Usage::default();
            let mut members: Vec<(String, serde_json::Value)> = Vec::new();
            let count = |rng: &mut fastrand::Rng| -> (u64, serde_json::Value) {
                if rng.u8(0..6) == 0 {
                    (0, serde_json::Value::Null)
                } else {
                    let n = rng.u64(..u64::MAX / 2);
                    (n, serde_json::json!(n))
                }
            };
            let (n, v) = count(&mut rng);
            expected.prompt_tokens = n;
            members.push(("prompt_tokens".into(), v));
            let (n, v) = count(&mut rng);
            expected.completion_tokens = n;
            members.push(("completion_tokens".into(), v));
            if rng.bool() {
                let (n, v) = count(&mut rng);
                expected.total_tokens = n;
                members.push(("total_tokens".into(), v));
            }
            if rng.bool() {
                let (cached, v) = count(&mut rng);
                expected.prompt_tokens_details = Some(PromptTokensDetails {
                    cached_tokens: Some(cached),
                    cache_write_tokens: None,
                });
                members.push((
                    "prompt_tokens_details".into(),
                    serde_json::json!({"audio_tokens": [1, {"x": "}"}], "cached_tokens": v}),
                ));
            }
            members.push((
                "completion_tokens_details".into(),
                serde_json::json!({"reasoning_tokens": 3, "s": "a\"b\\", "f": -1.5e3}),
            ));
            rng.shuffle(&mut members);
            let object: serde_json::Map<_, _> = members.into_iter().collect();
            let json = if round % 2 == 0 {
                serde_json::to_vec(&object).unwrap()
            } else {
                serde_json::to_vec_pretty(&object).unwrap()
            };
            assert_eq!(
                Usage::scan(&json),
                Some(expected),
                "{}",
                String::from_utf8_lossy(&json)
            );
        }
    }
}
