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
    /// How `messages` looked (chat completions and `/v1/messages` require a list of objects,
    /// each with a `role`).
    pub messages: Shape,
    /// How `input` looked (embeddings require a string or a list).
    pub input: Shape,
    /// How `prompt` looked (text completions require a string or a list).
    pub prompt: Shape,
    /// The body is a multipart form (`crate::multipart`): `model_span` is the field's raw text.
    pub form: bool,
}

/// The JSON type of a value, as named in an error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    /// OpenAI's wording: "expected an array, but got a string instead".
    fn with_article(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Boolean => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        }
    }
}

/// The shape of a member an endpoint requires, recorded by both readings of the body so the
/// request can be refused before any provider is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    #[default]
    Absent,
    /// A string.
    Text,
    /// An array (for `messages`: of objects that each have a `role`).
    List,
    /// Any other type.
    Other(JsonKind),
    /// `messages[index]` is not an object.
    ItemNotObject { index: u32, kind: JsonKind },
    /// `messages[index]` has no `role`.
    ItemWithoutRole { index: u32 },
}

/// Which members an endpoint requires: checked against the view before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// Chat completions and Anthropic's Messages API: `messages`, a list of objects with roles.
    Messages,
    /// Embeddings: `input`, a string or a list.
    Input,
    /// Text completions: `prompt`, a string or a list.
    Prompt,
}

impl Required {
    /// The error for a body that lacks what the endpoint requires: OpenAI's messages in
    /// LiteLLM's envelope (`code` is the status). LiteLLM itself lets these through to a 500 or
    /// to the provider.
    pub fn check(self, view: &RequestView) -> Result<(), ApiError> {
        let (name, shape, expected) = match self {
            Required::Messages => ("messages", view.messages, "an array"),
            Required::Input => (
                "input",
                view.input,
                "one of a string, array of strings, array of integers, or array of arrays of integers",
            ),
            Required::Prompt => (
                "prompt",
                view.prompt,
                "one of a string, array of strings, array of integers, or array of arrays of integers",
            ),
        };
        let missing = |param: String| {
            ApiError::bad_request(format!("Missing required parameter: '{param}'."))
                .with_param(param)
        };
        let wrong = |param: String, expected: &str, kind: JsonKind| {
            ApiError::bad_request(format!(
                "Invalid type for '{param}': expected {expected}, but got {} instead.",
                kind.with_article()
            ))
            .with_param(param)
        };
        match shape {
            Shape::List => Ok(()),
            Shape::Text if self != Required::Messages => Ok(()),
            Shape::Text => Err(wrong(name.into(), expected, JsonKind::String)),
            Shape::Absent => Err(missing(name.into())),
            Shape::Other(kind) => Err(wrong(name.into(), expected, kind)),
            Shape::ItemNotObject { index, kind } => {
                Err(wrong(format!("{name}[{index}]"), "an object", kind))
            }
            Shape::ItemWithoutRole { index } => Err(missing(format!("{name}[{index}].role"))),
        }
    }
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
        let quoted = if self.form {
            new_model.to_string()
        } else {
            serde_json::to_string(new_model).unwrap_or_else(|_| "\"\"".to_string())
        };
        let mut out = BytesMut::with_capacity(body.len() + quoted.len());
        out.extend_from_slice(&body[..span.start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[span.end..]);
        out.freeze()
    }

    /// `body` with `model` set to `model`: replaced where the body has one, else added as its
    /// first member (the Azure SDK's deployment routes name the model only in the path).
    pub fn with_model_set(body: &Bytes, model: &str) -> Result<Bytes, ApiError> {
        let view = RequestView::parse(body)?;
        if view.model_span.is_some() {
            return Ok(view.with_model(body, model));
        }
        let Some(open) = body.iter().position(|b| *b == b'{') else {
            return Ok(body.clone());
        };
        let empty = body[open + 1..].trim_ascii_start().first() == Some(&b'}');
        let quoted = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".to_string());
        let mut out = BytesMut::with_capacity(body.len() + quoted.len() + 10);
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(b"\"model\":");
        out.extend_from_slice(quoted.as_bytes());
        if !empty {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(&body[open + 1..]);
        Ok(out.freeze())
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
    Messages,
    Input,
    Prompt,
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
                    "messages" => Key::Messages,
                    "input" => Key::Input,
                    "prompt" => Key::Prompt,
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
                Key::Messages => view.messages = map.next_value::<MessagesShape>()?.0,
                Key::Input => view.input = map.next_value::<ValueShape>()?.0,
                Key::Prompt => view.prompt = map.next_value::<ValueShape>()?.0,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        view.max_tokens = max_completion_tokens.or(max_tokens);
        Ok(view)
    }
}

/// The type of a value from its first byte (a raw value is valid JSON).
fn kind_of(raw: &RawValue) -> JsonKind {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'"') => JsonKind::String,
        Some(b'{') => JsonKind::Object,
        Some(b'[') => JsonKind::Array,
        Some(b't' | b'f') => JsonKind::Boolean,
        Some(b'n') => JsonKind::Null,
        _ => JsonKind::Number,
    }
}

/// A required member's shape by its type (`input`, `prompt`, and `messages` that is no list).
fn shape_by_kind(kind: JsonKind) -> Shape {
    match kind {
        JsonKind::String => Shape::Text,
        JsonKind::Array => Shape::List,
        other => Shape::Other(other),
    }
}

/// `input` or `prompt`: its type. Read raw, so numbers are never converted (serde_json refuses
/// one beyond `f64`'s range that skipping accepts).
struct ValueShape(Shape);

impl<'de> de::Deserialize<'de> for ValueShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        Ok(ValueShape(shape_by_kind(kind_of(raw))))
    }
}

/// `messages`: its type and, for a list, the first item that is not an object with a `role`.
/// Items are read a second time from their raw text; this is the slow path's business only.
struct MessagesShape(Shape);

impl<'de> de::Deserialize<'de> for MessagesShape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        let kind = kind_of(raw);
        if kind != JsonKind::Array {
            return Ok(MessagesShape(shape_by_kind(kind)));
        }
        let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(de::Error::custom)?;
        for (index, item) in items.into_iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let problem = match kind_of(item) {
                JsonKind::Object => match serde_json::from_str::<HasRole>(item.get()) {
                    Ok(HasRole(true)) => None,
                    Ok(HasRole(false)) => Some(Shape::ItemWithoutRole { index }),
                    Err(e) => return Err(de::Error::custom(e)),
                },
                kind => Some(Shape::ItemNotObject { index, kind }),
            };
            if let Some(problem) = problem {
                return Ok(MessagesShape(problem));
            }
        }
        Ok(MessagesShape(Shape::List))
    }
}

/// Whether an object has a `role` member.
struct HasRole(bool);

impl<'de> de::Deserialize<'de> for HasRole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = HasRole;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HasRole, A::Error> {
                let mut role = false;
                while let Some(IsRole(is_role)) = map.next_key()? {
                    role |= is_role;
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(HasRole(role))
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// Whether a member name is `role` (read without allocating).
struct IsRole(bool);

impl<'de> de::Deserialize<'de> for IsRole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = IsRole;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IsRole, E> {
                Ok(IsRole(v == "role"))
            }
        }
        d.deserialize_str(NameVisitor)
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
    fn a_path_model_replaces_the_bodys_or_becomes_its_first_member() {
        let set = |body: &'static str| {
            let out = RequestView::with_model_set(&Bytes::from_static(body.as_bytes()), "az/gpt")
                .unwrap();
            String::from_utf8(out.to_vec()).unwrap()
        };
        assert_eq!(set(r#"{"model":"x","n":1}"#), r#"{"model":"az/gpt","n":1}"#);
        assert_eq!(
            set(r#" { "messages": []}"#),
            r#" {"model":"az/gpt", "messages": []}"#
        );
        assert_eq!(set("{ }"), r#"{"model":"az/gpt" }"#);
        let view = RequestView::parse(&Bytes::from(set(r#"{"messages":[]}"#))).unwrap();
        assert_eq!(view.model.as_deref(), Some("az/gpt"));
        assert!(
            RequestView::with_model_set(&Bytes::from_static(b"[1]"), "m").is_err()
                || RequestView::parse(&Bytes::from_static(b"[1]")).is_err()
        );
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

    /// Each shape a required member can have, read the same by both readings, and the error
    /// each endpoint gives for it.
    #[test]
    fn required_members_are_checked_with_openai_messages() {
        let cases = [
            (
                r#"{"messages":[{"role":"user"}]}"#,
                Required::Messages,
                None,
            ),
            (r#"{"messages":[]}"#, Required::Messages, None),
            (
                r#"{"model":"m"}"#,
                Required::Messages,
                Some(("messages", "Missing required parameter: 'messages'.")),
            ),
            (
                r#"{"messages":"hi"}"#,
                Required::Messages,
                Some((
                    "messages",
                    "Invalid type for 'messages': expected an array, but got a string instead.",
                )),
            ),
            (
                r#"{"messages":{"role":"user"}}"#,
                Required::Messages,
                Some(("messages", "but got an object instead")),
            ),
            (
                r#"{"messages":null}"#,
                Required::Messages,
                Some(("messages", "but got null instead")),
            ),
            (
                r#"{"messages":[{"role":"user"},"hi",{"x":1}]}"#,
                Required::Messages,
                Some((
                    "messages[1]",
                    "Invalid type for 'messages[1]': expected an object, but got a string instead.",
                )),
            ),
            (
                r#"{"messages":[{"role":"user"},{"content":"x","roles":"a"}]}"#,
                Required::Messages,
                Some((
                    "messages[1].role",
                    "Missing required parameter: 'messages[1].role'.",
                )),
            ),
            (
                r#"{"messages":[{"r\u006fle":"user"}]}"#,
                Required::Messages,
                None,
            ),
            (r#"{"input":"a"}"#, Required::Input, None),
            (r#"{"input":[[1,2]]}"#, Required::Input, None),
            (
                r#"{"input":5}"#,
                Required::Input,
                Some((
                    "input",
                    "Invalid type for 'input': expected one of a string",
                )),
            ),
            (
                r#"{"model":"m","messages":[]}"#,
                Required::Prompt,
                Some(("prompt", "Missing required parameter: 'prompt'.")),
            ),
            (r#"{"prompt":["a","b"]}"#, Required::Prompt, None),
        ];
        for (body, required, expected) in cases {
            let view = parse(body).unwrap();
            assert_eq!(
                Some(&view),
                RequestView::parse_with_serde(body.as_bytes()).ok().as_ref(),
                "{body}"
            );
            match (required.check(&view), expected) {
                (Ok(()), None) => {}
                (Err(e), Some((param, message))) => {
                    assert_eq!(e.status.as_u16(), 400, "{body}");
                    assert_eq!(e.param.as_deref(), Some(param), "{body}");
                    assert!(e.message.contains(message), "{body}: {}", e.message);
                }
                (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
    }
}
