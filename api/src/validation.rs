//! Field-level validation problems, flattened from `validator`'s error tree
//! into the per-field list that a 422 problem (and a refused configuration)
//! shows. No HTTP here: settings are validated with the same list.

use serde::Serialize;
use utoipa::ToSchema;
use validator::{ValidationErrors, ValidationErrorsKind};

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `items[0].quantity`.
    pub field: String,
    /// Machine-readable rule that failed, e.g. `length`, `range`, `email`.
    pub code: String,
    /// Human-readable explanation. Never echoes the submitted value.
    pub message: String,
}

/// validator's error tree as a flat list sorted by field path.
pub fn field_errors(errors: &ValidationErrors) -> Vec<FieldError> {
    let mut list = Vec::new();
    flatten_validation(errors, "", &mut list);
    list.sort_by(|a, b| a.field.cmp(&b.field));
    list
}

/// Turns validator's tree into a flat list. `params.value` (the submitted value,
/// possibly a password) is deliberately dropped.
fn flatten_validation(errors: &ValidationErrors, path: &str, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let name = match (path.is_empty(), field.as_ref()) {
            // Struct-level (schema) errors belong to the struct itself.
            (_, "__all__") => path.to_owned(),
            (true, f) => f.to_owned(),
            (false, f) => format!("{path}.{f}"),
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    let message = error
                        .message
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_else(|| {
                            match (error.params.get("min"), error.params.get("max")) {
                                (Some(min), Some(max)) => {
                                    format!("must be between {min} and {max}")
                                }
                                (Some(min), None) => format!("must be at least {min}"),
                                (None, Some(max)) => format!("must be at most {max}"),
                                (None, None) => format!("is invalid ({})", error.code),
                            }
                        });
                    out.push(FieldError {
                        field: name.clone(),
                        code: error.code.to_string(),
                        message,
                    });
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten_validation(inner, &name, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten_validation(inner, &format!("{name}[{index}]"), out);
                }
            }
        }
    }
}
