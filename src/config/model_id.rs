//! Deployment ids, computed exactly as LiteLLM computes them, so dashboards and the
//! `x-litellm-model-id` header keep the same values after switching.
//!
//! `litellm/router.py::_generate_model_id`: the SHA-256 (hex) of the model group name followed by
//! every key and value of the entry's `litellm_params` (after `os.environ/` resolution), in file
//! order, with no separators. Strings go in as they are, dicts as Python's `json.dumps`, every
//! other value as Python's `str()`.

use serde_yaml::Value;
use sha2::{Digest, Sha256};

/// LiteLLM's id for a `model_list` entry without `model_info.id`.
pub fn litellm_model_id(model_name: &str, litellm_params: &serde_yaml::Mapping) -> String {
    let mut text = String::from(model_name);
    for (k, v) in litellm_params {
        match k {
            Value::String(s) => text.push_str(s),
            other => text.push_str(&python_str(other)),
        }
        match v {
            Value::String(s) => text.push_str(s),
            Value::Mapping(_) => text.push_str(&json_dumps(v)),
            other => text.push_str(&python_str(other)),
        }
    }
    filters::auth::lower_hex(&Sha256::digest(text.as_bytes()))
}

/// Python's `str(value)` for YAML scalars and lists.
fn python_str(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => python_number(n),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => {
            let inner: Vec<String> = items.iter().map(python_repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Mapping(_) => python_repr(value),
        Value::Tagged(t) => python_str(&t.value),
    }
}

/// Python's `repr(value)` (used inside lists and dicts).
fn python_repr(value: &Value) -> String {
    match value {
        Value::String(s) => python_repr_str(s),
        Value::Mapping(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", python_repr(k), python_repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => python_str(other),
    }
}

fn python_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn python_number(n: &serde_yaml::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    python_float(n.as_f64().unwrap_or(0.0))
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Rust: "1e-5" / "1.5e20"; Python: "1e-05" / "1.5e+20".
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let s = format!("{f}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

/// Python's `json.dumps(value)` with default separators and `ensure_ascii=True`.
fn json_dumps(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                python_float(n.as_f64().unwrap_or(0.0))
            } else {
                python_number(n)
            }
        }
        Value::String(s) => json_ascii_string(s),
        Value::Sequence(items) => {
            let inner: Vec<String> = items.iter().map(json_dumps).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Mapping(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.clone(),
                        other => python_str(other),
                    };
                    format!("{}: {}", json_ascii_string(&key), json_dumps(v))
                })
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::Tagged(t) => json_dumps(&t.value),
    }
}

fn json_ascii_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(yaml: &str) -> serde_yaml::Mapping {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn sha(s: &str) -> String {
        Sha256::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn concatenates_group_keys_and_values_in_file_order() {
        let p = params("model: openai/gpt-4o\napi_base: http://x/v1\nrpm: 100\n");
        assert_eq!(
            litellm_model_id("gpt-4o", &p),
            sha("gpt-4omodelopenai/gpt-4oapi_basehttp://x/v1rpm100")
        );
    }

    #[test]
    fn formats_values_like_python() {
        let p = params(
            "weight: 0.5\ntiny: 0.00001\nflag: true\nnothing: null\ntags: [a, \"b'c\"]\nextra_headers: {X-A: \"é\", n: 1.0}\n",
        );
        let expected = concat!(
            "g",
            "weight0.5",
            "tiny1e-05",
            "flagTrue",
            "nothingNone",
            "tags['a', \"b'c\"]",
            "extra_headers{\"X-A\": \"\\u00e9\", \"n\": 1.0}"
        );
        assert_eq!(litellm_model_id("g", &p), sha(expected));
    }

    #[test]
    fn python_float_repr() {
        assert_eq!(python_float(100.0), "100.0");
        assert_eq!(python_float(0.0001), "0.0001");
        assert_eq!(python_float(1.5e-7), "1.5e-07");
        assert_eq!(python_float(2e16), "2e+16");
        assert_eq!(python_float(-0.25), "-0.25");
    }
}
