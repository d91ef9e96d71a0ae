//! [`Body`]: the extractor of every JSON request body.
//!
//! `web::Json<T>` alone has two gaps at the edge of the API. serde reads a
//! struct from a JSON array as readily as from an object, so `[null, null]`
//! was a PATCH that set nothing and answered 200 (found by schemathesis). And
//! it refuses `1627.0` for an integer field, a number that JSON and JSON
//! Schema (so our OpenAPI document) call an integer, and that clients such as
//! Python's `json` send for a whole float. `Body` reads through
//! `web::Json<StrictValue>` (same size limit, content-type check and errors;
//! a key given twice is refused, as the derived struct would), refuses
//! anything but an object, turns exactly-integral numbers into integers, then
//! deserializes `T`.

use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{ApiError, Code};

/// A JSON object body deserialized into `T`.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T> Body<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Body<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<StrictValue>::from_request(request, payload);
        Box::pin(async move {
            let web::Json(StrictValue(value)) = json.await?;
            Ok(Body(parse(value)?))
        })
    }
}

fn parse<T: DeserializeOwned>(mut value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            Code::InvalidBody,
            "request body must be a JSON object",
        ));
    }
    integral_numbers_as_integers(&mut value);
    serde_json::from_value(value).map_err(|error| {
        ApiError::bad_request(
            Code::InvalidBody,
            format!("request body does not match the schema: {error}"),
        )
    })
}

/// Floats with no fractional part below 2^52 (where a double still holds
/// halves, so `x.5` is not rounded to a whole number) become integers;
/// anything else stays as it was. (A fraction beyond a double's precision,
/// `1.0000000000000001`, is the double 1.0 and counts as 1.)
fn integral_numbers_as_integers(value: &mut Value) {
    const EXACT: f64 = 4_503_599_627_370_496.0;
    match value {
        Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            if let Some(float) = number.as_f64()
                && float.fract() == 0.0
                && float.abs() < EXACT
            {
                *number = Number::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
    }
}

/// A JSON value in which no object names a key twice (serde_json's `Value`
/// keeps the last one silently, so two readers of one body could disagree).
#[derive(Debug)]
pub struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        StrictValue::deserialize(deserializer).map(|strict| strict.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
            }
            let StrictValue(value) = map.next_value()?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Line {
        quantity: u32,
        price_cents: Option<i64>,
    }

    fn parsed(value: Value) -> Result<Line, String> {
        parse::<Line>(value).map_err(|error| error.to_string())
    }

    #[test]
    fn an_array_is_refused_even_where_serde_would_read_a_struct_from_it() {
        assert!(serde_json::from_value::<Line>(json!([3, null])).is_ok());
        let error = parsed(json!([3, null])).expect_err("an array");
        assert!(error.contains("must be a JSON object"), "{error}");
        assert!(parsed(json!("text")).is_err());
        assert!(parsed(json!(null)).is_err());
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        let strict = |text: &str| serde_json::from_str::<StrictValue>(text).map(|v| v.0);
        let error = strict(r#"{"name": "a", "name": "b"}"#).expect_err("a duplicate");
        assert!(
            error.to_string().contains("duplicate field `name`"),
            "{error}"
        );
        assert!(strict(r#"{"items": [{"q": 1, "q": 2}]}"#).is_err());
        assert_eq!(
            strict(r#"{"a": [1, 2.5, null, "x", {"b": true}]}"#).expect("valid"),
            json!({"a": [1, 2.5, null, "x", {"b": true}]})
        );
        // serde_json's own limit on nesting still holds.
        assert!(strict(&format!("{}{}", "[".repeat(1000), "]".repeat(1000))).is_err());
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_stay_refused() {
        assert_eq!(
            parsed(json!({"quantity": 3.0, "price_cents": -1627.0})),
            Ok(Line {
                quantity: 3,
                price_cents: Some(-1627)
            })
        );
        assert!(parsed(json!({"quantity": 1.5})).is_err());
        assert!(parsed(json!({"quantity": -1.0})).is_err());
        assert!(parsed(json!({"quantity": 1, "price_cents": 1e300})).is_err());
        // 2^52 + 0.5 cannot be held by a double; from 2^52 on, floats stay floats.
        assert!(parsed(json!({"quantity": 1, "price_cents": 4_503_599_627_370_496.0})).is_err());
        assert!(parsed(json!({"quantity": 1, "role": "admin"})).is_err());
    }
}
