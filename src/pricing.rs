//! The public price and context-window table (LiteLLM's `model_prices_and_context_window.json`),
//! parsed once at start-up into a keyed map. Requests look an entry up; nothing scans the table
//! on the request path (a Rust LiteLLM port lost 90% of its throughput doing that).
//!
//! The table is embedded in the binary; `SLUICE_MODEL_PRICES=/path.json` replaces it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

static EMBEDDED: &[u8] = include_bytes!("../config/model_prices_and_context_window.json");

/// The fields of a table entry Sluice uses.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ModelPrice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub litellm_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u64"
    )]
    pub max_tokens: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u64"
    )]
    pub max_input_tokens: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u64"
    )]
    pub max_output_tokens: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub input_cost_per_token: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub output_cost_per_token: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub cache_read_input_token_cost: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub cache_creation_input_token_cost: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub input_cost_per_pixel: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub output_cost_per_pixel: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub input_cost_per_image: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub output_cost_per_image: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub input_cost_per_character: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub input_cost_per_second: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub output_cost_per_second: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_f64"
    )]
    pub input_cost_per_query: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_function_calling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_parallel_function_calling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_vision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_web_search: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_reasoning: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_response_schema: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_system_messages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_prompt_caching: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_tool_choice: Option<bool>,
}

/// The prices a deployment may set itself (`litellm_params` or `model_info`), over the table's.
pub const CUSTOM_PRICE_FIELDS: &[&str] = &[
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "input_cost_per_pixel",
    "output_cost_per_pixel",
    "input_cost_per_image",
    "output_cost_per_image",
    "input_cost_per_character",
    "input_cost_per_second",
    "output_cost_per_second",
    "input_cost_per_query",
];

impl ModelPrice {
    /// The price named `field` (one of [`CUSTOM_PRICE_FIELDS`]).
    pub fn slot(&mut self, field: &str) -> Option<&mut Option<f64>> {
        Some(match field {
            "input_cost_per_token" => &mut self.input_cost_per_token,
            "output_cost_per_token" => &mut self.output_cost_per_token,
            "cache_read_input_token_cost" => &mut self.cache_read_input_token_cost,
            "cache_creation_input_token_cost" => &mut self.cache_creation_input_token_cost,
            "input_cost_per_pixel" => &mut self.input_cost_per_pixel,
            "output_cost_per_pixel" => &mut self.output_cost_per_pixel,
            "input_cost_per_image" => &mut self.input_cost_per_image,
            "output_cost_per_image" => &mut self.output_cost_per_image,
            "input_cost_per_character" => &mut self.input_cost_per_character,
            "input_cost_per_second" => &mut self.input_cost_per_second,
            "output_cost_per_second" => &mut self.output_cost_per_second,
            "input_cost_per_query" => &mut self.input_cost_per_query,
            _ => return None,
        })
    }
}

/// Some entries carry strings or nulls where numbers belong (`sample_spec`); they read as absent.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?
        .as_f64()
        .map(|f| f as u64))
}

fn lenient_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_f64())
}

/// The table, keyed by model name as it appears in the file.
#[derive(Debug, Default)]
pub struct PriceTable {
    entries: HashMap<String, ModelPrice>,
}

impl PriceTable {
    /// The embedded table, or the file named by `SLUICE_MODEL_PRICES`.
    pub fn load() -> anyhow::Result<PriceTable> {
        match std::env::var("SLUICE_MODEL_PRICES") {
            Ok(path) if !path.is_empty() => {
                let bytes = std::fs::read(&path)
                    .map_err(|e| anyhow::anyhow!("reading SLUICE_MODEL_PRICES={path}: {e}"))?;
                Self::parse(&bytes)
            }
            _ => Self::parse(EMBEDDED),
        }
    }

    pub fn parse(bytes: &[u8]) -> anyhow::Result<PriceTable> {
        let raw: HashMap<String, serde_json::Value> = serde_json::from_slice(bytes)?;
        let entries = raw
            .into_iter()
            .filter(|(name, _)| name != "sample_spec")
            .filter_map(|(name, v)| Some((name, serde_json::from_value(v).ok()?)))
            .collect();
        Ok(PriceTable { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&ModelPrice> {
        self.entries.get(name)
    }

    /// LiteLLM's lookup order for a deployment: `base_model`, then `<provider>/<model>`, then
    /// `<model>`.
    pub fn lookup(
        &self,
        provider: &str,
        model: &str,
        base_model: Option<&str>,
    ) -> Option<&ModelPrice> {
        if let Some(base) = base_model
            && let Some(p) = self.get(base)
        {
            return Some(p);
        }
        self.get(&format!("{provider}/{model}"))
            .or_else(|| self.get(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_parses_and_has_known_models() {
        let table = PriceTable::parse(EMBEDDED).unwrap();
        assert!(table.len() > 1000, "{}", table.len());
        let gpt4o = table.get("gpt-4o").unwrap();
        assert_eq!(gpt4o.litellm_provider.as_deref(), Some("openai"));
        assert_eq!(gpt4o.max_input_tokens, Some(128_000));
        assert_eq!(gpt4o.input_cost_per_token, Some(2.5e-6));
        assert!(table.get("sample_spec").is_none());
        assert!(table.lookup("openai", "gpt-4o", None).is_some());
        assert!(table.lookup("groq", "nope", None).is_none());
    }
}
