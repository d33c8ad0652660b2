//! Embeddings for providers with their own API: Gemini (`batchEmbedContents`), Ollama
//! (`/api/embed`) and Bedrock (`invoke` with Titan or Cohere embed models). OpenAI-compatible
//! and Azure deployments forward `/embeddings` as they are. Called by the forwarder inside
//! Pingora's `request_filter`; pure and Pingora-free.
//!
//! The client's `input` (a string or a list of strings) goes out in the provider's shape; the
//! vectors come back as OpenAI's `{"object":"list","data":[{"object":"embedding","index",
//! "embedding"}],"model","usage"}`, copied as the provider wrote them, or packed as base64
//! little-endian float32 when the client asked for `encoding_format: "base64"`.

use std::fmt::Write as _;

use base64::Engine as _;
use bytes::Bytes;
use filters::ApiError;
use filters::usage::Usage;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::Wire;
use super::openai::{Target, UpstreamRequest};
use super::translate::quoted;

/// What decoding an embedding answer needs to know about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingPlan {
    /// Used when the provider reports no token count.
    pub estimated_tokens: u64,
    pub base64: bool,
}

/// What the client asked for.
#[derive(Debug)]
pub struct EmbeddingRequest {
    pub inputs: Vec<String>,
    pub dimensions: Option<u64>,
    pub base64: bool,
}

impl EmbeddingRequest {
    pub fn read(body: &Map<String, Value>) -> Result<EmbeddingRequest, ApiError> {
        let inputs = match body.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ApiError::bad_request(
                        "this provider embeds text only: input must be a string or a list of strings (token arrays are OpenAI-only)",
                    )
                    .with_param("input")),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(
                    ApiError::bad_request("input must be a non-empty string or list of strings")
                        .with_param("input"),
                );
            }
        };
        let base64 = match body.get("encoding_format").and_then(Value::as_str) {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "encoding_format must be float or base64, not {other:?}"
                ))
                .with_param("encoding_format"));
            }
        };
        Ok(EmbeddingRequest {
            inputs,
            dimensions: body.get("dimensions").and_then(Value::as_u64),
            base64,
        })
    }
}

/// Which Bedrock embedding family a model id belongs to.
fn bedrock_family(model: &str) -> Option<&'static str> {
    if model.contains("titan-embed") {
        Some("titan")
    } else if model.contains("cohere.embed") {
        Some("cohere")
    } else {
        None
    }
}

/// Encodes an embedding request for `wire`.
pub fn encode(
    wire: Wire,
    req: &EmbeddingRequest,
    target: &Target<'_>,
) -> Result<UpstreamRequest, ApiError> {
    let model = target.upstream_model;
    let (path, body) = match wire {
        Wire::Gemini => {
            let bare = model.strip_prefix("models/").unwrap_or(model);
            let requests: Vec<Value> = req
                .inputs
                .iter()
                .map(|text| {
                    let mut r = json!({"model": format!("models/{bare}"), "content": {"parts": [{"text": text}]}});
                    if let Some(d) = req.dimensions {
                        r["outputDimensionality"] = d.into();
                    }
                    r
                })
                .collect();
            let mut path = format!(
                "{}/models/{}:batchEmbedContents",
                target.base.path,
                super::path::segment(bare)
            );
            if let Some(q) = &target.base.query {
                path.push('?');
                path.push_str(q);
            }
            (path, json!({"requests": requests}))
        }
        Wire::OllamaChat | Wire::Ollama => {
            let mut body = json!({"model": model, "input": req.inputs});
            if let Some(d) = req.dimensions {
                body["dimensions"] = d.into();
            }
            (target.base.target("/api/embed"), body)
        }
        Wire::Bedrock => {
            let body = match bedrock_family(model) {
                Some("titan") => {
                    if req.inputs.len() != 1 {
                        return Err(ApiError::bad_request(
                            "Titan embedding models take one input per request; send one string",
                        )
                        .with_param("input"));
                    }
                    let mut body = json!({"inputText": req.inputs[0]});
                    if let Some(d) = req.dimensions {
                        body["dimensions"] = d.into();
                    }
                    body
                }
                Some(_) => json!({"texts": req.inputs, "input_type": "search_document"}),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "{model} is not a Bedrock embedding model Sluice knows (amazon.titan-embed-*, cohere.embed-*)"
                    ))
                    .with_param("model"));
                }
            };
            let path = format!(
                "{}/model/{}/invoke",
                target.base.path,
                super::bedrock::encode_model_id(model)
            );
            (path, body)
        }
        _ => {
            return Err(ApiError::bad_request(format!(
                "{} deployments do not serve embeddings",
                super::codec::provider_name(wire)
            ))
            .with_param("model"));
        }
    };
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut request = UpstreamRequest {
        embedding: Some(EmbeddingPlan {
            estimated_tokens: estimate_tokens(&req.inputs),
            base64: req.base64,
        }),
        ..UpstreamRequest::post(path, target.headers, body, Some("application/json"))
    };
    if wire == Wire::Bedrock {
        super::bedrock::sign_request(
            &mut request,
            target,
            target.aws,
            std::time::SystemTime::now(),
        )?;
    }
    Ok(request)
}

#[derive(Deserialize)]
struct GeminiEmbeddings<'a> {
    #[serde(borrow)]
    embeddings: Vec<GeminiVector<'a>>,
}

#[derive(Deserialize)]
struct GeminiVector<'a> {
    #[serde(borrow)]
    values: &'a RawValue,
}

#[derive(Deserialize)]
struct OllamaEmbeddings<'a> {
    #[serde(borrow)]
    embeddings: Vec<&'a RawValue>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
}

#[derive(Deserialize)]
struct TitanEmbedding<'a> {
    #[serde(borrow)]
    embedding: &'a RawValue,
    #[serde(default, rename = "inputTextTokenCount")]
    tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CohereEmbeddings<'a> {
    #[serde(borrow)]
    embeddings: Vec<&'a RawValue>,
}

/// A rough token count for providers that report none (Gemini, Cohere on Bedrock): one token
/// per four characters, so usage and spend are never zero. Documented as an estimate.
pub fn estimate_tokens(inputs: &[String]) -> u64 {
    inputs
        .iter()
        .map(|t| (t.chars().count() as u64).div_ceil(4).max(1))
        .sum()
}

/// Decodes a provider's embeddings into OpenAI's list.
pub fn decode(
    wire: Wire,
    upstream_model: &str,
    body: &[u8],
    plan: &EmbeddingPlan,
    model: &str,
) -> Result<(Bytes, Usage), ApiError> {
    let base64 = plan.base64;
    let bad = || ApiError::bad_gateway("the provider answered embeddings in an unexpected shape");
    let (vectors, tokens): (Vec<&RawValue>, u64) = match wire {
        Wire::Gemini => {
            let r: GeminiEmbeddings<'_> = serde_json::from_slice(body).map_err(|_| bad())?;
            (
                r.embeddings.iter().map(|e| e.values).collect(),
                plan.estimated_tokens,
            )
        }
        Wire::OllamaChat | Wire::Ollama => {
            let r: OllamaEmbeddings<'_> = serde_json::from_slice(body).map_err(|_| bad())?;
            let tokens = r.prompt_eval_count.unwrap_or(plan.estimated_tokens);
            (r.embeddings, tokens)
        }
        Wire::Bedrock if bedrock_family(upstream_model) == Some("titan") => {
            let r: TitanEmbedding<'_> = serde_json::from_slice(body).map_err(|_| bad())?;
            (vec![r.embedding], r.tokens.unwrap_or(plan.estimated_tokens))
        }
        Wire::Bedrock => {
            let r: CohereEmbeddings<'_> = serde_json::from_slice(body).map_err(|_| bad())?;
            (r.embeddings, plan.estimated_tokens)
        }
        _ => return Err(bad()),
    };
    let mut out = String::with_capacity(body.len() + 128);
    out.push_str(r#"{"object":"list","data":["#);
    for (i, v) in vectors.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, r#"{{"object":"embedding","index":{i},"embedding":"#);
        if base64 {
            let floats: Vec<f32> = serde_json::from_str(v.get()).map_err(|_| bad())?;
            let mut bytes = Vec::with_capacity(floats.len() * 4);
            for f in floats {
                bytes.extend_from_slice(&f.to_le_bytes());
            }
            out.push_str(&quoted(
                &base64::engine::general_purpose::STANDARD.encode(bytes),
            ));
        } else {
            out.push_str(v.get());
        }
        out.push('}');
    }
    let _ = write!(
        out,
        r#"],"model":{},"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#,
        quoted(model)
    );
    let usage = Usage {
        prompt_tokens: tokens,
        completion_tokens: 0,
        total_tokens: tokens,
        prompt_tokens_details: None,
    };
    Ok((Bytes::from(out), usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{obj, target_for};

    fn request(input: Value) -> EmbeddingRequest {
        EmbeddingRequest::read(&obj(json!({"model": "e", "input": input}))).unwrap()
    }

    #[test]
    fn gemini_batches_every_input_and_copies_vectors() {
        let (base, headers) = target_for("https://generativelanguage.googleapis.com/v1beta");
        let target = Target::new(Wire::Gemini, &base, "text-embedding-004", &headers);
        let req = request(json!(["a", "bb"]));
        let up = encode(Wire::Gemini, &req, &target).unwrap();
        assert_eq!(
            up.target,
            "/v1beta/models/text-embedding-004:batchEmbedContents"
        );
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(
            sent["requests"][1],
            json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "bb"}]}})
        );
        let (out, usage) = decode(
            Wire::Gemini,
            "text-embedding-004",
            br#"{"embeddings":[{"values":[0.1,-0.25]},{"values":[1.5e-3,2]}]}"#,
            up.embedding.as_ref().unwrap(),
            "emb",
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-0.25]},{"object":"embedding","index":1,"embedding":[1.5e-3,2]}],"model":"emb","usage":{"prompt_tokens":2,"total_tokens":2}}"#
        );
        assert_eq!(usage.prompt_tokens, 2);
    }

    #[test]
    fn ollama_and_base64() {
        let (base, headers) = target_for("http://localhost:11434");
        let target = Target::new(Wire::OllamaChat, &base, "nomic-embed-text", &headers);
        let req = EmbeddingRequest::read(&obj(json!({"input": "hi", "encoding_format": "base64"})))
            .unwrap();
        let up = encode(Wire::OllamaChat, &req, &target).unwrap();
        assert_eq!(up.target, "/api/embed");
        let (out, usage) = decode(
            Wire::OllamaChat,
            "nomic-embed-text",
            br#"{"model":"nomic-embed-text","embeddings":[[1.0,0.5]],"prompt_eval_count":3}"#,
            up.embedding.as_ref().unwrap(),
            "emb",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let packed = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            packed,
            [1.0f32.to_le_bytes(), 0.5f32.to_le_bytes()].concat()
        );
        assert_eq!(usage.prompt_tokens, 3);
    }

    #[test]
    fn bedrock_titan_takes_one_input_and_is_signed() {
        let (base, headers) = target_for("https://bedrock-runtime.us-east-1.amazonaws.com");
        let auth = super::super::bedrock::AwsAuth::SigV4 {
            access_key_id: "AKID".into(),
            secret_access_key: filters::route::Secret::new("s"),
            session_token: None,
            region: "us-east-1".into(),
        };
        let target = Target {
            aws: Some(&auth),
            ..Target::new(
                Wire::Bedrock,
                &base,
                "amazon.titan-embed-text-v2:0",
                &headers,
            )
        };
        let up = encode(Wire::Bedrock, &request(json!("hello")), &target).unwrap();
        assert_eq!(up.target, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert!(
            up.headers["authorization"]
                .to_str()
                .unwrap()
                .starts_with("AWS4-HMAC-SHA256")
        );
        let sent: Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(sent, json!({"inputText": "hello"}));
        assert!(encode(Wire::Bedrock, &request(json!(["a", "b"])), &target).is_err());
        let (out, usage) = decode(
            Wire::Bedrock,
            "amazon.titan-embed-text-v2:0",
            br#"{"embedding":[0.25,0.5],"inputTextTokenCount":2}"#,
            up.embedding.as_ref().unwrap(),
            "emb",
        )
        .unwrap();
        assert!(
            std::str::from_utf8(&out)
                .unwrap()
                .contains(r#""embedding":[0.25,0.5]"#)
        );
        assert_eq!(usage.total_tokens, 2);
    }

    #[test]
    fn token_arrays_are_refused_for_translated_providers() {
        let e = EmbeddingRequest::read(&obj(json!({"input": [[1, 2, 3]]}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
    }
}
