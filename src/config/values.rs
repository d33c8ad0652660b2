//! Typed readers of YAML values (each reports a wrong type with its path and returns
//! `None`), `os.environ/NAME` resolution, and the small text helpers of the config report.
//! Start-up only.

use serde_yaml::Value;

use super::Builder;
use super::env::{self, Env};

impl Builder<'_> {
    pub(super) fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => None,
            _ => {
                self.report.error(path, "must be a string");
                None
            }
        }
    }

    pub(super) fn string_list(&mut self, v: &Value, path: &str) -> Vec<String> {
        match v {
            Value::Null => Vec::new(),
            Value::String(s) => vec![s.clone()],
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string(item, &format!("{path}[{i}]")))
                .collect(),
            _ => {
                self.report.error(path, "must be a list of names");
                Vec::new()
            }
        }
    }

    pub(super) fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Some(true),
                "false" | "no" | "0" | "off" => Some(false),
                _ => {
                    self.report
                        .error(path, format!("must be true or false, got {s:?}"));
                    None
                }
            },
            other => {
                self.report.error(
                    path,
                    format!("must be true or false, got {}", describe(other)),
                );
                None
            }
        }
    }

    pub(super) fn number(&mut self, v: &Value, path: &str, what: &str) -> Option<f64> {
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            Value::Null => return None,
            _ => None,
        };
        if n.is_none() || n.is_some_and(|n| !n.is_finite()) {
            self.report
                .error(path, format!("must be {what}, got {}", describe(v)));
            return None;
        }
        n
    }

    pub(super) fn positive_f64(&mut self, v: &Value, path: &str) -> Option<f64> {
        let n = self.number(v, path, "a positive number")?;
        if n <= 0.0 {
            self.report
                .error(path, format!("must be a positive number, got {n}"));
            return None;
        }
        Some(n)
    }

    pub(super) fn non_negative_f64(&mut self, v: &Value, path: &str) -> Option<f64> {
        let n = self.number(v, path, "a number >= 0")?;
        if n < 0.0 {
            self.report
                .error(path, format!("must be a number >= 0, got {n}"));
            return None;
        }
        Some(n)
    }

    pub(super) fn non_negative_u64(&mut self, v: &Value, path: &str) -> Option<u64> {
        let n = self.number(v, path, "a whole number >= 0")?;
        if n < 0.0 || n.fract() != 0.0 {
            self.report
                .error(path, format!("must be a whole number >= 0, got {n}"));
            return None;
        }
        Some(n as u64)
    }

    pub(super) fn positive_u64(&mut self, v: &Value, path: &str) -> Option<u64> {
        let n = self.non_negative_u64(v, path)?;
        if n == 0 {
            self.report.error(path, "must be at least 1");
            return None;
        }
        Some(n)
    }
}

/// Replaces every `os.environ/NAME` string in the tree by the variable's value (or null), and
/// records the paths of unset variables.
/// Replaces every `os.environ/NAME` string in the tree by the variable's value (or null), and
/// records the paths of unset variables.
pub(super) fn resolve_env(
    value: &mut Value,
    path: String,
    env: &Env,
    missing: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(s) => {
            if let Some(var) = env::reference(s) {
                match env.get(var) {
                    Some(v) => *s = v,
                    None => {
                        missing.push((path, var.to_string()));
                        *value = Value::Null;
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_env(item, format!("{path}[{i}]"), env, missing);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = scalar_text(k);
                if path.is_empty() && key == "environment_variables" {
                    continue;
                }
                resolve_env(v, join(&path, &key), env, missing);
            }
        }
        _ => {}
    }
}

pub(super) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => format!("{other:?}"),
    }
}

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "nothing".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on"
    )
}

pub(super) fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    candidates
        .map(|c| {
            (
                strsim::normalized_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
