//! Small helpers to read loosely typed Redis replies (hashes, Sentinel maps,
//! Lua tables) without a `FromRedisValue` impl per shape.

use std::collections::HashMap;

use redis::Value;

use super::RedisError;

/// A reply as text, for bulk strings, simple strings and integers.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// A flat `[k1, v1, k2, v2, ...]` array or a RESP3 map, as a `HashMap`.
pub fn map(value: &Value) -> HashMap<String, String> {
    match value {
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|pair| Some((text(&pair[0])?, text(&pair[1])?)))
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// The elements of an array reply (empty for nil).
pub fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// Reads a required field of a hash reply.
pub fn field<'a>(fields: &'a HashMap<String, String>, name: &str) -> Result<&'a str, RedisError> {
    fields
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| RedisError::Unexpected(format!("stored record lacks field `{name}`")))
}

/// Reads and parses a required field of a hash reply.
pub fn parse<T: std::str::FromStr>(
    fields: &HashMap<String, String>,
    name: &str,
) -> Result<T, RedisError> {
    field(fields, name)?
        .parse()
        .map_err(|_| RedisError::Unexpected(format!("stored field `{name}` has an invalid value")))
}
