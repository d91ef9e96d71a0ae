//! argon2id password hashing with OWASP's parameters (19 MiB, t=2, p=1),
//! always on the blocking pool: one hash takes tens of milliseconds of CPU and
//! would stall every request sharing the async worker.

use std::sync::Arc;

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

use crate::error::ApiError;

#[derive(Clone, Debug)]
pub struct Passwords {
    /// Hash of a random password, verified when the email is unknown so that a
    /// wrong email costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

fn hasher() -> Argon2<'static> {
    // OWASP password storage cheat sheet: argon2id, m=19 MiB, t=2, p=1.
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl Passwords {
    pub fn new() -> Self {
        let random = uuid::Uuid::new_v4().to_string();
        let dummy = hasher()
            .hash_password(random.as_bytes())
            .expect("hashing a fresh password cannot fail")
            .to_string();
        Self {
            dummy_hash: dummy.into(),
        }
    }

    /// PHC string of a new argon2id hash with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        actix_web::web::block(move || {
            hasher()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
        })
        .await
        .map_err(|e| ApiError::Internal(format!("hashing task failed: {e}")))?
        .map_err(|e| ApiError::Internal(format!("cannot hash password: {e}")))
    }

    /// Whether `password` matches `hash`; with `None` (unknown user) a dummy
    /// hash is checked and the answer is always `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = actix_web::web::block(move || {
            hasher()
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("verification task failed: {e}")))?;
        Ok(known && matches)
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new();
        let hash = passwords
            .hash("s3cret-passw0rd".to_owned())
            .await
            .expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify("s3cret-passw0rd".to_owned(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("wrong".to_owned(), Some(hash))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("anything".to_owned(), None)
                .await
                .expect("verify")
        );
    }
}
