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
}

impl Usage {
    /// Parses a `usage` object; `None` when it is not one.
    pub fn parse(json: &[u8]) -> Option<Usage> {
        if json.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        let mut usage: Usage = serde_json::from_slice(json).ok()?;
        if usage.total_tokens == 0 {
            usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
        }
        Some(usage)
    }

    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
    }
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
}
