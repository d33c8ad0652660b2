//! What a request costs: the actual cost from its usage and the deployment's prices (LiteLLM's
//! `cost_per_token`), and the worst case reserved before it is forwarded (prompt tokens counted
//! with tiktoken, output at `max_tokens` or the model's output limit).

use std::sync::OnceLock;

use filters::Usage;
use serde_json::Value;

use crate::pricing::ModelPrice;

/// Output tokens assumed when neither the request nor the price table bounds them.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;
/// Tokens counted for one image part (OpenAI's high-detail 2048 px tile count, rounded up).
const IMAGE_TOKENS: u64 = 1_600;
/// Framing tokens per message (role, separators), as OpenAI's counting recipe adds.
const PER_MESSAGE_TOKENS: u64 = 4;

/// USD for this usage at these prices. Cached prompt tokens are charged at the cache-read
/// price when there is one.
pub fn cost_of(usage: &Usage, price: Option<&ModelPrice>) -> f64 {
    let Some(p) = price else {
        return 0.0;
    };
    let input = p.input_cost_per_token.unwrap_or(0.0);
    let output = p.output_cost_per_token.unwrap_or(0.0);
    let details = usage.prompt_tokens_details.unwrap_or_default();
    let cached = details.cached_tokens.unwrap_or(0).min(usage.prompt_tokens);
    let written = details
        .cache_write_tokens
        .unwrap_or(0)
        .min(usage.prompt_tokens - cached);
    let cached_price = p.cache_read_input_token_cost.unwrap_or(input);
    let written_price = p.cache_creation_input_token_cost.unwrap_or(input);
    (usage.prompt_tokens - cached - written) as f64 * input
        + cached as f64 * cached_price
        + written as f64 * written_price
        + usage.completion_tokens as f64 * output
}

/// Whether `endpoint` is priced per unit ([`units_cost`]) rather than by its usage's tokens.
pub fn priced_per_unit(endpoint: filters::Endpoint) -> bool {
    use filters::Endpoint;
    matches!(
        endpoint,
        Endpoint::ImageGenerations
            | Endpoint::AudioSpeech
            | Endpoint::AudioTranscriptions
            | Endpoint::Rerank
            | Endpoint::Moderations
    )
}

/// What a request priced per unit costs: images (per image or per pixel, LiteLLM's
/// `{quality}/{size}/{model}` table entries when the deployment has no image price), speech (per
/// character of `input`), transcriptions (per second of audio, or per token when the answer
/// counts tokens), rerank (per search unit, one by default) and moderations (free). `None` for
/// endpoints priced by their usage's tokens. `request` and `answer` are the JSON bodies (`Null`
/// when not JSON).
pub fn units_cost(
    endpoint: filters::Endpoint,
    request: &Value,
    answer: &Value,
    price: Option<&ModelPrice>,
    table: &crate::pricing::PriceTable,
    provider: &str,
    model: &str,
) -> Option<f64> {
    use filters::Endpoint;
    let of = |f: fn(&ModelPrice) -> Option<f64>| price.and_then(f).unwrap_or(0.0);
    Some(match endpoint {
        Endpoint::ImageGenerations => {
            let n = request["n"].as_u64().unwrap_or(1) as f64;
            let size = request["size"].as_str().unwrap_or("1024x1024");
            let (w, h) = size
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse::<f64>().ok()?, h.parse::<f64>().ok()?)))
                .unwrap_or((1024.0, 1024.0));
            let quality = request["quality"].as_str().unwrap_or("standard");
            let sized = size.replace('x', "-x-");
            let has_image_price = |p: &&ModelPrice| {
                p.input_cost_per_image.is_some()
                    || p.output_cost_per_image.is_some()
                    || p.input_cost_per_pixel.is_some()
            };
            let names = [
                format!("{quality}/{sized}/{model}"),
                format!("{sized}/{model}"),
            ];
            let image_price = price.filter(has_image_price).or_else(|| {
                names.iter().find_map(|name| {
                    table
                        .get(&format!("{provider}/{name}"))
                        .or_else(|| table.get(name))
                        .filter(has_image_price)
                })
            })?;
            let per_image = image_price.input_cost_per_image.unwrap_or(0.0)
                + image_price.output_cost_per_image.unwrap_or(0.0)
                + (image_price.input_cost_per_pixel.unwrap_or(0.0)
                    + image_price.output_cost_per_pixel.unwrap_or(0.0))
                    * w
                    * h;
            n * per_image
        }
        Endpoint::AudioSpeech => {
            let chars = request["input"].as_str().map_or(0, |t| t.chars().count());
            chars as f64 * of(|p| p.input_cost_per_character)
        }
        Endpoint::AudioTranscriptions => {
            let usage = &answer["usage"];
            if usage["type"] == "tokens" {
                let n = |k: &str| usage[k].as_u64().unwrap_or(0) as f64;
                n("input_tokens") * of(|p| p.input_cost_per_token)
                    + n("output_tokens") * of(|p| p.output_cost_per_token)
            } else {
                let seconds = usage["seconds"]
                    .as_f64()
                    .or_else(|| answer["duration"].as_f64())
                    .unwrap_or(0.0);
                seconds * of(|p| p.input_cost_per_second)
            }
        }
        Endpoint::Rerank => {
            let units = answer["meta"]["billed_units"]["search_units"]
                .as_f64()
                .unwrap_or(1.0);
            units * of(|p| p.input_cost_per_query)
        }
        Endpoint::Moderations => 0.0,
        _ => return None,
    })
}

/// The most a request can cost: counted prompt tokens plus its output bound, at full price.
pub fn worst_case(prompt_tokens: u64, max_output: u64, price: Option<&ModelPrice>) -> f64 {
    let Some(p) = price else {
        return 0.0;
    };
    let input = p
        .input_cost_per_token
        .unwrap_or(0.0)
        .max(p.cache_creation_input_token_cost.unwrap_or(0.0));
    prompt_tokens as f64 * input + max_output as f64 * p.output_cost_per_token.unwrap_or(0.0)
}

/// The output bound: the request's `max_tokens` / `max_completion_tokens`, else the model's.
pub fn output_bound(requested: Option<u64>, price: Option<&ModelPrice>, embedding: bool) -> u64 {
    if embedding {
        return 0;
    }
    let model = price.and_then(|p| p.max_output_tokens.or(p.max_tokens));
    match (requested, model) {
        (Some(r), Some(m)) => r.min(m),
        (Some(r), None) => r,
        (None, Some(m)) => m,
        (None, None) => DEFAULT_MAX_OUTPUT_TOKENS,
    }
}

fn bpe() -> &'static tiktoken_rs::CoreBPE {
    static BPE: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().expect("the embedded o200k table loads"))
}

/// Loads the tokenizer (a few hundred milliseconds) before the first request needs it.
pub fn warm_up() {
    let _ = bpe();
}

/// What the worst case of a request depends on besides its output limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestShape {
    /// Tokens of the text sent: messages (text parts; images at a fixed count), `prompt`,
    /// `input`, `system`, tools.
    pub prompt_tokens: u64,
    /// Completions asked for (`n`, `best_of`): each may use the whole output limit.
    pub choices: u64,
}

impl RequestShape {
    /// No prompt, one completion (a request with no budget to reserve against).
    pub const NONE: RequestShape = RequestShape {
        prompt_tokens: 0,
        choices: 1,
    };
}

/// The free upper bound of a request's shape: its length in bytes as prompt tokens (a token
/// is at least one byte of the text, and the JSON around the text is longer than the per-message
/// framing tokens), one completion. `None` when the body may carry what the length does not
/// bound (images, counted at a fixed size whatever their URL's length) or several completions
/// (`n`, `best_of`): those are parsed and counted.
pub fn quick_shape(body: &[u8]) -> Option<RequestShape> {
    static NEEDLES: OnceLock<[memchr::memmem::Finder<'static>; 3]> = OnceLock::new();
    let needles = NEEDLES.get_or_init(|| {
        [
            memchr::memmem::Finder::new(b"image"),
            memchr::memmem::Finder::new(b"\"n\""),
            memchr::memmem::Finder::new(b"best_of"),
        ]
    });
    if needles.iter().any(|f| f.find(body).is_some()) {
        return None;
    }
    Some(RequestShape {
        prompt_tokens: body.len() as u64,
        choices: 1,
    })
}

/// Most completions one request may ask for; `n` beyond this is counted as this many (the
/// providers cap `n` lower still).
const MAX_CHOICES: u64 = 128;

pub fn request_shape(body: &[u8]) -> RequestShape {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        // Not JSON we can read: every byte could be a token.
        return RequestShape {
            prompt_tokens: body.len() as u64,
            choices: 1,
        };
    };
    let mut total = 0;
    for field in ["messages", "prompt", "input", "system", "contents"] {
        if let Some(v) = req.get(field) {
            total += tokens_in(v, field == "messages");
        }
    }
    for field in ["tools", "functions", "response_format"] {
        if let Some(v) = req.get(field) {
            total += count_text(&v.to_string());
        }
    }
    let choices = ["n", "best_of"]
        .iter()
        .filter_map(|f| req.get(*f).and_then(Value::as_u64))
        .max()
        .unwrap_or(1)
        .clamp(1, MAX_CHOICES);
    RequestShape {
        prompt_tokens: total,
        choices,
    }
}

/// Prompt tokens of a request body (see [`request_shape`]).
pub fn prompt_tokens(body: &[u8]) -> u64 {
    request_shape(body).prompt_tokens
}

fn tokens_in(v: &Value, messages: bool) -> u64 {
    match v {
        Value::String(s) => count_text(s),
        Value::Array(items) => items
            .iter()
            .map(|item| tokens_in(item, false) + if messages { PER_MESSAGE_TOKENS } else { 0 })
            .sum(),
        Value::Object(o) => {
            if o.contains_key("image_url") || o.get("type").and_then(Value::as_str) == Some("image")
            {
                return IMAGE_TOKENS;
            }
            o.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("role" | "type" | "cache_control", _) => 1,
                    (_, Value::Number(_)) => 1,
                    (_, Value::String(s)) => count_text(s),
                    (_, v) => tokens_in(v, false),
                })
                .sum()
        }
        Value::Number(_) => 1,
        _ => 0,
    }
}

fn count_text(s: &str) -> u64 {
    bpe().encode_ordinary(s).len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use filters::usage::PromptTokensDetails;

    fn price(input: f64, output: f64) -> ModelPrice {
        ModelPrice {
            input_cost_per_token: Some(input),
            output_cost_per_token: Some(output),
            max_output_tokens: Some(1000),
            ..ModelPrice::default()
        }
    }

    #[test]
    fn cost_follows_the_price_table() {
        let table = crate::pricing::PriceTable::load().unwrap();
        let gpt4o = table.get("gpt-4o").unwrap();
        let usage = Usage {
            prompt_tokens: 1000,
            completion_tokens: 500,
            total_tokens: 1500,
            prompt_tokens_details: None,
        };
        let expected = 1000.0 * 2.5e-6 + 500.0 * 1e-5;
        assert!((cost_of(&usage, Some(gpt4o)) - expected).abs() < 1e-12);
        assert_eq!(cost_of(&usage, None), 0.0);
    }

    #[test]
    fn cached_tokens_use_the_cache_read_price() {
        let p = ModelPrice {
            cache_read_input_token_cost: Some(0.5),
            ..price(1.0, 2.0)
        };
        let usage = Usage {
            prompt_tokens: 10,
            completion_tokens: 1,
            total_tokens: 11,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(4),
                cache_write_tokens: None,
            }),
        };
        assert_eq!(cost_of(&usage, Some(&p)), 6.0 + 2.0 + 2.0);
    }

    #[test]
    fn cache_writes_use_the_cache_creation_price() {
        let p = ModelPrice {
            cache_read_input_token_cost: Some(0.5),
            cache_creation_input_token_cost: Some(1.25),
            ..price(1.0, 2.0)
        };
        // Anthropic's 2 input + 4 written + 4 read tokens, as the translated usage says them.
        let usage = Usage::parse(
            br#"{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(
            cost_of(&usage, Some(&p)),
            2.0 + 4.0 * 0.5 + 4.0 * 1.25 + 2.0
        );
        // Without a cache-creation price, written tokens cost the input price.
        let plain = ModelPrice {
            cache_read_input_token_cost: Some(0.5),
            ..price(1.0, 2.0)
        };
        assert_eq!(cost_of(&usage, Some(&plain)), 2.0 + 2.0 + 4.0 + 2.0);
    }

    #[test]
    fn worst_case_bounds_the_actual_cost() {
        let p = price(1e-6, 2e-6);
        let body = br#"{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the world in five words."}],"max_tokens":20}"#;
        let prompt = prompt_tokens(body);
        assert!((15..40).contains(&prompt), "{prompt}");
        assert_eq!(output_bound(Some(20), Some(&p), false), 20);
        assert_eq!(output_bound(None, Some(&p), false), 1000);
        assert_eq!(output_bound(Some(5000), Some(&p), false), 1000);
        assert_eq!(output_bound(None, None, false), DEFAULT_MAX_OUTPUT_TOKENS);
        assert_eq!(output_bound(Some(9), None, true), 0);
        let worst = worst_case(prompt, 20, Some(&p));
        let actual = cost_of(
            &Usage {
                prompt_tokens: prompt,
                completion_tokens: 20,
                total_tokens: prompt + 20,
                prompt_tokens_details: None,
            },
            Some(&p),
        );
        assert!(worst >= actual);
        let image = br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}"#;
        assert!(prompt_tokens(image) >= IMAGE_TOKENS);
        let many = br#"{"messages":[{"role":"user","content":"hi"}],"n":8}"#;
        assert_eq!(request_shape(many).choices, 8);
        let absurd = br#"{"messages":[],"n":100000,"best_of":3}"#;
        assert_eq!(request_shape(absurd).choices, MAX_CHOICES);
        assert_eq!(request_shape(b"not json").choices, 1);
        // The free bound is never below the count, and steps aside for images and `n`.
        let quick = quick_shape(body).unwrap();
        assert!(quick.prompt_tokens >= prompt && quick.choices == 1);
        assert_eq!(quick_shape(image), None);
        assert_eq!(quick_shape(many), None);
    }
}
