//! Users as clients see them, and the request bodies that change them.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use utoipa::ToSchema;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::config::{PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "customer" => Some(Self::Customer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A user. The password hash never leaves the store.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    /// Normalised (trimmed, lower-case); unique.
    pub email: String,
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A user with its password hash, for login and password changes.
#[derive(Debug, Clone)]
pub struct StoredUser {
    pub user: User,
    pub password_hash: String,
}

/// Trims and lower-cases an email so that `Ann@Example.com ` and
/// `ann@example.com` are one account.
/// The form an email is stored and compared in. NFKC first, so that
/// compatibility look-alikes become what they imitate (fullwidth
/// `ＡＮＮ@ｅｘａｍｐｌｅ.ｃｏｍ` is `ann@example.com`, and so taken by Ann);
/// registration then refuses what is still not ASCII (see [`ascii_email`]).
pub fn normalize_email(email: &str) -> String {
    email.nfkc().collect::<String>().trim().to_lowercase()
}

/// Addresses are ASCII: a Cyrillic `а` in `exаmple.com` survives NFKC and
/// would make a second account that reads the same as someone else's.
fn ascii_email(email: &str) -> Result<(), ValidationError> {
    if email.is_ascii() {
        Ok(())
    } else {
        Err(ValidationError::new("ascii").with_message(
            "must be ASCII (internationalised addresses can imitate others and are not accepted)"
                .into(),
        ))
    }
}

fn password_policy(password: &str) -> Result<(), ValidationError> {
    let length = password.chars().count();
    if (PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&length) {
        Ok(())
    } else {
        Err(ValidationError::new("length").with_message(
            format!("must be {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters").into(),
        ))
    }
}

fn display_name(name: &str) -> Result<(), ValidationError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 100 {
        return Err(
            ValidationError::new("length").with_message("must be 1 to 100 characters".into())
        );
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new("characters")
            .with_message("must not contain control characters".into()));
    }
    Ok(())
}

#[derive(Debug, Deserialize, Serialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[validate(
        email(message = "must be a valid email address"),
        length(max = 254),
        custom(function = "ascii_email")
    )]
    #[schema(example = "ann@example.com", format = Email, max_length = 254)]
    pub email: String,
    /// 8 to 128 characters.
    #[validate(custom(function = "password_policy"))]
    #[schema(
        example = "correct horse battery staple",
        min_length = 8,
        max_length = 128
    )]
    pub password: String,
    #[validate(custom(function = "display_name"))]
    #[schema(
        example = "Ann",
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: String,
}

/// Changes to one's own profile. A password change needs the current password
/// and ends every other session of the user.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[validate(custom(function = "display_name"))]
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$"
    )]
    pub name: Option<String>,
    #[validate(custom(function = "password_policy"))]
    #[schema(min_length = 8, max_length = 128)]
    pub password: Option<String>,
    /// Required with `password`.
    pub current_password: Option<String>,
}

/// What an admin may change on any user.
#[derive(Debug, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUpdateUserRequest {
    pub role: Option<Role>,
    /// Disabling ends every session of the user at once.
    pub disabled: Option<bool>,
}
