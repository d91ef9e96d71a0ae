//! [`Body`]: the extractor of every JSON request body.
//!
//! `web::Json<T>` alone has two gaps at the edge of the API. serde reads a
//! struct from a JSON array as readily as from an object, so `[null, null]`
//! was a PATCH that set nothing and answered 200 (found by schemathesis). And
//! it refuses `1627.0` for an integer field, a number that JSON and JSON
//! Schema (so our OpenAPI document) call an integer, and that clients such as
//! Python's `json` send for a whole float. `Body` reads through
//! `web::Json<Value>` (same size limit, content-type check and errors),
//! refuses anything but an object, turns exactly-integral numbers into
//! integers, then deserializes `T`.

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Number, Value};

use crate::error::ApiError;

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
        let json = web::Json::<Value>::from_request(request, payload);
        Box::pin(async move {
            let web::Json(value) = json.await?;
            Ok(Body(parse(value)?))
        })
    }
}

fn parse<T: DeserializeOwned>(mut value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "request body must be a JSON object",
        ));
    }
    integral_numbers_as_integers(&mut value);
    serde_json::from_value(value).map_err(|error| {
        ApiError::bad_request(
            "invalid_body",
            format!("request body does not match the schema: {error}"),
        )
    })
}

/// Floats with no fractional part, within the range where a double is exact
/// (|x| <= 2^53), become integers; anything else stays as it was.
fn integral_numbers_as_integers(value: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            if let Some(float) = number.as_f64()
                && float.fract() == 0.0
                && float.abs() <= EXACT
            {
                *number = Number::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers_as_integers),
        _ => {}
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
        assert!(parsed(json!({"quantity": 1, "role": "admin"})).is_err());
    }
}
