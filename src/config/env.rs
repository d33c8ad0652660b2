//! Environment lookups for the config: `os.environ/NAME` references and provider key variables.
//!
//! LiteLLM copies a config's `environment_variables` section into the process environment before
//! it resolves anything. Sluice keeps them as an overlay instead (mutating the environment of a
//! multi-threaded process is unsound), with the same precedence: the section wins.

use std::collections::HashMap;

/// The prefix that marks a value as an environment reference.
pub const ENV_PREFIX: &str = "os.environ/";

/// The process environment plus the config's `environment_variables` overlay.
#[derive(Debug, Clone, Default)]
pub struct Env {
    overlay: HashMap<String, String>,
    /// When set, the process environment is not consulted (tests).
    isolated: bool,
    process_fallback: HashMap<String, String>,
}

impl Env {
    /// The real process environment.
    pub fn process() -> Self {
        Env::default()
    }

    /// A fixed set of variables and nothing else (for tests and `sluice check` fixtures).
    pub fn fixed<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            overlay: HashMap::new(),
            isolated: true,
            process_fallback: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Adds the config's `environment_variables`; they take precedence, as in LiteLLM.
    pub fn with_overlay(mut self, overlay: HashMap<String, String>) -> Self {
        self.overlay.extend(overlay);
        self
    }

    /// A variable's value; empty values count as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        let value = self.overlay.get(name).cloned().or_else(|| {
            if self.isolated {
                self.process_fallback.get(name).cloned()
            } else {
                std::env::var(name).ok()
            }
        })?;
        (!value.is_empty()).then_some(value)
    }

    /// The first of `names` that is set.
    pub fn first(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| self.get(n))
    }
}

/// The variable name of an `os.environ/NAME` reference.
pub fn reference(value: &str) -> Option<&str> {
    value.strip_prefix(ENV_PREFIX).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_wins_and_empty_is_unset() {
        let env = Env::fixed([("A", "process"), ("EMPTY", "")])
            .with_overlay(HashMap::from([("A".to_string(), "config".to_string())]));
        assert_eq!(env.get("A").as_deref(), Some("config"));
        assert_eq!(env.get("EMPTY"), None);
        assert_eq!(env.first(&["NOPE", "A"]).as_deref(), Some("config"));
        assert_eq!(
            reference("os.environ/OPENAI_API_KEY"),
            Some("OPENAI_API_KEY")
        );
        assert_eq!(reference("sk-123"), None);
    }
}
