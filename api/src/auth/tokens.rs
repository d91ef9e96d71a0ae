//! Access tokens (short-lived HS256 JWTs) and refresh tokens (opaque, stored
//! only as a SHA-256 digest in the session).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::users::model::Role;

/// Clock difference tolerated between replicas, in seconds.
const CLOCK_LEEWAY_SECS: u64 = 5;

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    /// Session id: logout and refresh-token reuse end the session and with it
    /// every access token that names it.
    pub sid: Uuid,
    /// Role when the token was issued (informative: the live role is read from Redis).
    pub role: Role,
    /// Token id.
    pub jti: Uuid,
    pub iat: u64,
    pub exp: u64,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Keyed with the JWT secret: derives what a rotation hands out from the
    /// refresh token presented, so that a retried refresh gets the same pair.
    rotation_key: Hmac<Sha256>,
    /// Lifetime of access tokens, in seconds.
    pub access_ttl_secs: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_ttl_secs", &self.access_ttl_secs)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Tokens {
    pub fn new(secret: &SecretString, access_ttl_secs: u64) -> Self {
        let key = secret.expose_secret().as_bytes();
        // Only HS256 is accepted: `alg: none` and algorithm swaps are rejected.
        let mut validation = Validation::new(Algorithm::HS256);
        // (jsonwebtoken knows `exp`, `nbf`, `sub`...; `iat`, `sid`, `role` and
        // `jti` are required by `Claims` itself.)
        validation.set_required_spec_claims(&["exp", "sub"]);
        // We never issue `nbf`, but a token that carries one is held to it.
        validation.validate_nbf = true;
        validation.leeway = CLOCK_LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            rotation_key: rotation_key(key),
            access_ttl_secs,
        }
    }

    /// A new access token, issued now (sign-in).
    pub fn issue_access(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        role: Role,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.encode(user_id, session_id, role, Uuid::new_v4(), now_secs())
    }

    /// The access token a refresh hands out with [`Self::successor_of`]`(presented)`,
    /// the rotation having happened at `rotated_at_secs`. The same inputs give
    /// the same token (HS256 is deterministic), so a retried refresh returns
    /// the very pair the first one issued.
    pub fn issue_rotated_access(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        role: Role,
        presented: &str,
        rotated_at_secs: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let derived = self.derive(b"access-jti", presented);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&derived[..16]);
        let jti = uuid::Builder::from_random_bytes(bytes).into_uuid();
        self.encode(user_id, session_id, role, jti, rotated_at_secs)
    }

    /// The refresh token that replaces `presented` (of the same session):
    /// an HMAC of it under the server's key. Always the same for the same
    /// token, unpredictable without the key.
    pub fn successor_of(&self, presented: &str) -> Option<String> {
        let session_id = refresh_token_session(presented)?;
        let secret = self.derive(b"refresh-successor", presented);
        Some(format!(
            "rt.{session_id}.{}",
            URL_SAFE_NO_PAD.encode(secret)
        ))
    }

    fn derive(&self, purpose: &[u8], presented: &str) -> [u8; 32] {
        let mut mac = self.rotation_key.clone();
        mac.update(purpose);
        mac.update(&[0]);
        mac.update(presented.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn encode(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        role: Role,
        jti: Uuid,
        iat: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user_id,
            sid: session_id,
            role,
            jti,
            iat,
            exp: iat + self.access_ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Checks signature, algorithm, expiry, `nbf`, and that it was not issued
    /// in the future. Revocation is checked by the caller in Redis.
    pub fn verify_access(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?.claims;
        if claims.iat > now_secs() + CLOCK_LEEWAY_SECS {
            return Err(jsonwebtoken::errors::ErrorKind::ImmatureSignature.into());
        }
        Ok(claims)
    }
}

/// A key of its own for deriving rotations, derived from the JWT secret
/// (HMAC-SHA256 of a fixed label), so that the secret that signs access
/// tokens is never used directly for anything else. Changing the JWT secret
/// changes it too: a refresh retried across such a change counts as reuse.
fn rotation_key(secret: &[u8]) -> Hmac<Sha256> {
    let mut derive =
        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    derive.update(b"evergreen refresh-token rotation key v1");
    Hmac::new_from_slice(&derive.finalize().into_bytes()).expect("a 32-byte key")
}

/// A new refresh token for `session_id`: `rt.<session id>.<256 random bits>`.
pub fn new_refresh_token(session_id: Uuid) -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("rt.{session_id}.{}", URL_SAFE_NO_PAD.encode(secret))
}

/// The session a refresh token claims to belong to.
pub fn refresh_token_session(token: &str) -> Option<Uuid> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("rt"), Some(session), Some(secret), None) if secret.len() == 43 => {
            session.parse().ok()
        }
        _ => None,
    }
}

/// What the session stores instead of the token itself.
pub fn digest(token: &str) -> String {
    let hash = Sha256::digest(token.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&SecretString::from("kW3p9vQz7Lr2Xy8Nb5Tc1Hd6Jf4Gm0Sa"), 60)
    }

    // jsonwebtoken 11 panics at run time without a crypto backend feature:
    // this test fails loudly if the feature is ever dropped.
    #[test]
    fn an_access_token_round_trips() {
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let token = tokens()
            .issue_access(user, session, Role::Admin)
            .expect("encode");
        let claims = tokens().verify_access(&token).expect("decode");
        assert_eq!(
            (claims.sub, claims.sid, claims.role),
            (user, session, Role::Admin)
        );
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn a_token_signed_with_another_key_is_rejected() {
        let other = Tokens::new(
            &SecretString::from("another-key-0123456789-abcdefghijk"),
            60,
        );
        let token = other
            .issue_access(Uuid::new_v4(), Uuid::new_v4(), Role::Admin)
            .expect("encode");
        assert!(tokens().verify_access(&token).is_err());
    }

    #[test]
    fn an_unsigned_token_is_rejected() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"sub":"{}","sid":"{}","role":"admin","jti":"{}","iat":1,"exp":99999999999}}"#,
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4()
        ));
        assert!(
            tokens()
                .verify_access(&format!("{header}.{claims}."))
                .is_err()
        );
    }

    #[test]
    fn a_rotation_hands_out_the_same_pair_for_the_same_token_and_key_only() {
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let presented = new_refresh_token(session);
        let successor = tokens().successor_of(&presented).expect("well-formed");
        assert_eq!(refresh_token_session(&successor), Some(session));
        assert_eq!(tokens().successor_of(&presented), Some(successor.clone()));
        let other_key = Tokens::new(
            &SecretString::from("another-key-0123456789-abcdefghijk"),
            60,
        );
        assert_ne!(other_key.successor_of(&presented), Some(successor));
        let access = |t: &Tokens| {
            t.issue_rotated_access(user, session, Role::Customer, &presented, now_secs())
                .expect("encode")
        };
        assert_eq!(access(&tokens()), access(&tokens()));
        assert!(tokens().verify_access(&access(&tokens())).is_ok());
        assert_eq!(tokens().successor_of("rt.not-a-session.x"), None);
    }

    #[test]
    fn refresh_tokens_name_their_session() {
        let session = Uuid::new_v4();
        let token = new_refresh_token(session);
        assert_eq!(refresh_token_session(&token), Some(session));
        assert_eq!(refresh_token_session("rt.not-a-uuid.x"), None);
        assert_ne!(digest(&token), digest(&new_refresh_token(session)));
    }
}
