//! The response cache's metrics (LiteLLM's `litellm_cache_*_metric`), recorded by `logging`
//! for requests the cache looked up.

use super::{Metrics, RequestLabels};

/// The cache metrics' labels (LiteLLM's `_cache_metric_labels`).
pub(super) const CACHE_LABELS: &[&str] = &[
    "model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "end_user",
    "user",
    "model_id",
    "api_provider",
];

impl Metrics {
    /// Records a request the response cache looked up: a hit (and the tokens it saved) or a
    /// miss. Its owner and model labels are bounded like the request metrics'.
    pub fn record_cache(&self, l: &RequestLabels<'_>, hit: bool, tokens: u64) {
        let folded;
        let l = if self.admit_label_set(l) {
            l
        } else {
            folded = l.folded();
            &folded
        };
        let values = [
            l.requested_model,
            l.hashed_api_key,
            l.api_key_alias,
            l.team,
            l.team_alias,
            l.end_user,
            l.user,
            l.model_id,
            l.api_provider,
        ];
        let [hits, misses, tokens_saved] = &self.cache;
        if hit {
            hits.with_label_values(&values).inc();
            tokens_saved.with_label_values(&values).inc_by(tokens);
        } else {
            misses.with_label_values(&values).inc();
        }
    }
}
