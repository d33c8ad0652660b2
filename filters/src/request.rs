//! A validating, allocation-light look at an OpenAI request body.
//!
//! The gateway must forward the client's bytes unchanged except for the `model` value, so it
//! never round-trips the JSON. This module validates the whole document once (serde_json, with
//! every value it does not need skipped as `IgnoredAny`) and records where the top-level fields
//! it acts on sit, so the forwarder can splice a new `model` in with one copy. Bodies go through
//! a faster validating pass first (`request_fast`); serde reads whatever that pass is unsure of.

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ApiError;

/// What the gateway needs to know about a request body, with byte spans into it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestView {
    /// The `model` value, if present and a string.
    pub model: Option<String>,
    /// Byte range of the `model` value, quotes included.
    pub model_span: Option<Range<usize>>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage`, when the client set it.
    pub include_usage: Option<bool>,
    /// Whether a `stream_options` key is present at all.
    pub has_stream_options: bool,
    /// The OpenAI `user` field (the end user id).
    pub user: Option<String>,
    /// `max_tokens` or `max_completion_tokens`, whichever is set (the latter wins).
    pub max_tokens: Option<u64>,
    /// Byte offset of the closing `}` of the top-level object.
    pub object_end: usize,
}

impl RequestView {
    /// Parses and validates `body`. Errors are 400s with a message naming the problem.
    pub fn parse(body: &[u8]) -> Result<RequestView, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "Request body is empty; expected a JSON object.",
            ));
        }
        if let Some(view) = crate::request_fast::parse(body) {
            return Ok(view);
        }
        Self::parse_with_serde(body)
    }

    /// The reference reading of `body`, and the one whose errors users see: serde_json validates
    /// it with every value the view does not need skipped.
    pub(crate) fn parse_with_serde(body: &[u8]) -> Result<RequestView, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let mut view = de
            .deserialize_any(ViewVisitor {
                base: body.as_ptr() as usize,
            })
            .map_err(|e| invalid_json(&e))?;
        de.end().map_err(|e| invalid_json(&e))?;
        view.object_end = body.iter().rposition(|b| *b == b'}').unwrap_or(body.len());
        Ok(view)
    }

    /// The body with `model` replaced by `new_model`; the same bytes (no copy) when it is unchanged.
    pub fn with_model(&self, body: &Bytes, new_model: &str) -> Bytes {
        let (Some(span), Some(model)) = (&self.model_span, &self.model) else {
            return body.clone();
        };
        if model == new_model {
            return body.clone();
        }
        let quoted = serde_json::to_string(new_model).unwrap_or_else(|_| "\"\"".to_string());
        let mut out = BytesMut::with_capacity(body.len() + quoted.len());
        out.extend_from_slice(&body[..span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[span.end..]);
        out.freeze()
    }

    /// `body` with `model` set to `new_model` and, when `add_usage` is true and the client did not
    /// send `stream_options`, `"stream_options":{"include_usage":true}` appended, so a stream
    /// reports its usage. One copy at most.
    pub fn rewrite(&self, body: &Bytes, new_model: &str, add_usage: bool) -> Bytes {
        let inject = add_usage && self.stream && !self.has_stream_options;
        if !inject {
            return self.with_model(body, new_model);
        }
        let with_model = self.with_model(body, new_model);
        let shift = with_model.len() as isize - body.len() as isize;
        let end = (self.object_end as isize + shift) as usize;
        const FIELD: &[u8] = b",\"stream_options\":{\"include_usage\":true}";
        let mut out = BytesMut::with_capacity(with_model.len() + FIELD.len());
        out.extend_from_slice(&with_model[..end]);
        out.extend_from_slice(FIELD);
        out.extend_from_slice(&with_model[end..]);
        out.freeze()
    }
}

/// LiteLLM answers `Invalid JSON payload: <parser message>` with `param: "request_body"`.
fn invalid_json(e: &serde_json::Error) -> ApiError {
    let message = if e.classify() == serde_json::error::Category::Data {
        e.to_string()
    } else {
        format!("Invalid JSON payload: {e}")
    };
    ApiError::bad_request(message).with_param("request_body")
}

/// Top-level keys the view records; everything else is skipped unparsed.
enum Key {
    Model,
    Stream,
    StreamOptions,
    User,
    MaxTokens,
    MaxCompletionTokens,
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "model" => Key::Model,
                    "stream" => Key::Stream,
                    "stream_options" => Key::StreamOptions,
                    "user" => Key::User,
                    "max_tokens" => Key::MaxTokens,
                    "max_completion_tokens" => Key::MaxCompletionTokens,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct ViewVisitor {
    base: usize,
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl<'de> Visitor<'de> for ViewVisitor {
    type Value = RequestView;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestView, A::Error> {
        let mut view = RequestView::default();
        let mut max_tokens = None;
        let mut max_completion_tokens = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Model => {
                    if view.model_span.is_some() {
                        return Err(de::Error::custom("duplicate field `model`"));
                    }
                    let raw: &'de RawValue = map.next_value()?;
                    let text = raw.get();
                    let start = text.as_ptr() as usize - self.base;
                    view.model_span = Some(start..start + text.len());
                    match serde_json::from_str::<Option<String>>(text) {
                        Ok(model) => view.model = model,
                        Err(_) => {
                            return Err(de::Error::custom(
                                "`model` must be a string naming a model group",
                            ));
                        }
                    }
                }
                Key::Stream => {
                    view.stream = map
                        .next_value::<Option<bool>>()
                        .map_err(|_| de::Error::custom("`stream` must be a boolean"))?
                        .unwrap_or(false)
                }
                Key::StreamOptions => {
                    view.has_stream_options = true;
                    let options: Option<StreamOptions> = map
                        .next_value()
                        .map_err(|_| de::Error::custom("`stream_options` must be an object"))?;
                    view.include_usage = options.and_then(|o| o.include_usage);
                }
                Key::User => view.user = map.next_value::<Option<UserField>>()?.and_then(|u| u.0),
                Key::MaxTokens => max_tokens = map.next_value::<Option<u64>>().ok().flatten(),
                Key::MaxCompletionTokens => {
                    max_completion_tokens = map.next_value::<Option<u64>>().ok().flatten()
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        view.max_tokens = max_completion_tokens.or(max_tokens);
        Ok(view)
    }
}

/// `user` is a string in the OpenAI spec; anything else is ignored rather than rejected.
struct UserField(Option<String>);

impl<'de> de::Deserialize<'de> for UserField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(UserField(value.as_str().map(str::to_owned)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RequestView, ApiError> {
        RequestView::parse(s.as_bytes())
    }

    #[test]
    fn finds_model_stream_and_user() {
        let v = parse(r#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","stream":true,"user":"u1","max_tokens":5}"#).unwrap();
        assert_eq!(v.model.as_deref(), Some("gpt-4o"));
        assert!(v.stream);
        assert_eq!(v.user.as_deref(), Some("u1"));
        assert_eq!(v.max_tokens, Some(5));
        assert!(!v.has_stream_options);
    }

    #[test]
    fn model_span_points_at_the_quoted_value_even_with_escapes() {
        let body = r#"{ "x": "a\"b", "model" : "gpt\u002d4" }"#;
        let v = parse(body).unwrap();
        assert_eq!(v.model.as_deref(), Some("gpt-4"));
        assert_eq!(&body[v.model_span.clone().unwrap()], r#""gpt\u002d4""#);
    }

    #[test]
    fn rewrite_changes_only_the_model_value() {
        let body = Bytes::from_static(
            br#"{"model":"alias","messages":[{"role":"user","content":"model"}]}"#,
        );
        let v = RequestView::parse(&body).unwrap();
        let out = v.with_model(&body, "gpt-4o-mini");
        assert_eq!(
            &out[..],
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"model"}]}"#
        );
        // Unchanged model: the very same buffer comes back.
        let same = v.with_model(&body, "alias");
        assert_eq!(same.as_ptr(), body.as_ptr());
    }

    #[test]
    fn rewrite_can_inject_include_usage_for_streams() {
        let body = Bytes::from_static(b"{\"model\":\"a\",\"stream\":true}\n");
        let v = RequestView::parse(&body).unwrap();
        let out = v.rewrite(&body, "bb", true);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["model"], "bb");
        assert_eq!(json["stream_options"]["include_usage"], true);
        // A client that set stream_options keeps its own choice.
        let body = Bytes::from_static(
            br#"{"model":"a","stream":true,"stream_options":{"include_usage":false}}"#,
        );
        let v = RequestView::parse(&body).unwrap();
        assert_eq!(v.include_usage, Some(false));
        assert_eq!(v.rewrite(&body, "a", true), body);
    }

    #[test]
    fn malformed_json_is_a_400_with_position() {
        let e = parse(r#"{"model": "x", "messages": [}"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(
            e.message.starts_with("Invalid JSON payload"),
            "{}",
            e.message
        );
        assert_eq!(e.param.as_deref(), Some("request_body"));
        assert!(e.message.contains("column"), "{}", e.message);
        assert!(parse("").unwrap_err().message.contains("empty"));
        assert!(parse(r#"{"model":"x"} trailing"#).is_err());
        assert!(
            parse(r#"["model"]"#)
                .unwrap_err()
                .message
                .contains("JSON object")
        );
    }

    #[test]
    fn wrong_types_are_named() {
        assert!(
            parse(r#"{"model": 5}"#)
                .unwrap_err()
                .message
                .contains("`model`")
        );
        assert!(
            parse(r#"{"model":"a","stream":"yes"}"#)
                .unwrap_err()
                .message
                .contains("`stream`")
        );
        assert!(
            parse(r#"{"model":"a","model":"b"}"#)
                .unwrap_err()
                .message
                .contains("duplicate")
        );
    }

    #[test]
    fn missing_model_is_not_a_parse_error() {
        let v = parse(r#"{"messages":[]}"#).unwrap();
        assert!(v.model.is_none());
    }
}
