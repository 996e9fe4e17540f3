//! Small typed accessors over `serde_json` values.
//!
//! Two flavours: *strict* readers for the user's create body, which report a
//! wrong type as an [`ExprError::BadField`] (a request we cannot read must
//! not be scheduled as if the field were absent), and *lenient* readers for
//! the engines' own JSON, where a missing or odd field just means "none".

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::ExprError;

fn bad(field: &str, expected: &'static str) -> ExprError {
    ExprError::BadField { field: field.to_string(), expected }
}

/// Strict: an optional object field (`null` counts as absent).
pub(crate) fn object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, ExprError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(bad(path, "a JSON object")),
    }
}

/// Strict: an optional string field (`null` counts as absent).
pub(crate) fn string<'a>(parent: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>, ExprError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(path, "a string")),
    }
}

/// Strict: an optional array of strings (`null` counts as absent).
pub(crate) fn string_array(
    parent: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<Vec<String>>, ExprError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad(path, "an array of strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad(path, "an array of strings")),
    }
}

/// Strict: an optional integer field; absent or `null` is 0, negative
/// values are clamped to 0 (they reserve nothing). A fraction or a number
/// beyond 64 bits is refused, as the engine's decoder refuses it.
pub(crate) fn non_negative_int(parent: &Map<String, Value>, key: &str, path: &str) -> Result<i64, ExprError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n.as_i64().map(|i| i.max(0)).ok_or_else(|| bad(path, "a 64-bit integer")),
        Some(_) => Err(bad(path, "a number")),
    }
}

/// Converts any JSON number to i64, saturating and truncating fractions.
pub(crate) fn number_to_i64(n: &serde_json::Number) -> i64 {
    if let Some(i) = n.as_i64() {
        i
    } else if n.as_u64().is_some() {
        i64::MAX
    } else {
        // `as` saturates on out-of-range floats and maps NaN to 0.
        n.as_f64().map_or(0, |f| f as i64)
    }
}

/// Strict: a string-ish scalar (string or number) or absent/`null` (empty).
pub(crate) fn scalar_string(value: Option<&Value>, path: &str) -> Result<String, ExprError> {
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(bad(path, "a string")),
    }
}

/// Lenient: the string at `key`, or "".
pub(crate) fn lenient_str<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Lenient: the integer at `key`, or 0 (negative clamped to 0).
pub(crate) fn lenient_int(value: &Value, key: &str) -> i64 {
    match value.get(key) {
        Some(Value::Number(n)) => number_to_i64(n).max(0),
        _ => 0,
    }
}

/// Lenient: the strings of the array at `key` (non-strings skipped).
pub(crate) fn lenient_strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Lenient: a string→string map from the object at `key` (non-string
/// values skipped).
pub(crate) fn lenient_string_map(value: &Value, key: &str) -> BTreeMap<String, String> {
    value.get(key).and_then(Value::as_object).map(string_entries).unwrap_or_default()
}

/// The string-valued entries of an object.
pub(crate) fn string_entries(map: &Map<String, Value>) -> BTreeMap<String, String> {
    map.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test input is an object"),
        }
    }

    #[test]
    fn strict_readers_reject_wrong_types() {
        let m = obj(json!({"a": 1, "s": "x", "arr": ["x", 2], "n": null}));
        assert!(string(&m, "a", "a").is_err());
        assert_eq!(string(&m, "s", "s").unwrap(), Some("x"));
        assert_eq!(string(&m, "n", "n").unwrap(), None);
        assert!(string_array(&m, "arr", "arr").is_err());
        assert!(string_array(&m, "s", "s").is_err());
        assert!(object(&m, "s", "s").is_err());
        assert!(non_negative_int(&m, "s", "s").is_err());
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_and_negatives_clamp() {
        let m = obj(json!({"big": u64::MAX, "neg": -5, "f": 2.7, "huge": 1e300, "max": i64::MAX}));
        for key in ["big", "f", "huge"] {
            let e = non_negative_int(&m, key, &format!("HostConfig.{key}")).unwrap_err();
            assert!(e.to_string().contains(&format!("HostConfig.{key}")), "{e}");
        }
        assert_eq!(non_negative_int(&m, "max", "max").unwrap(), i64::MAX);
        assert_eq!(non_negative_int(&m, "neg", "neg").unwrap(), 0);
        assert_eq!(non_negative_int(&m, "missing", "missing").unwrap(), 0);
    }
}
