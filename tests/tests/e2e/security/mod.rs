//! Attacks and abuse, against the real stack. One module per
//! category; `cargo nextest list security::` counts them.
//!
//! - `tokens`: forged, altered, expired, not-yet-valid, incomplete and
//!   misused tokens, and tokens of ended sessions, on every replica;
//! - `authorization`: every route for anonymous callers, customers, another
//!   customer and admins, and mass assignment;
//! - `brute_force`: nginx's per-address brake; password checks (sign-in,
//!   password change) reserved before hashing and throttled per account and
//!   address, per address and by an account's budget for unknown addresses,
//!   never locking the owner out; the real client address behind nginx; the
//!   timing of wrong email vs wrong password;
//! - `bounded_resources`: sessions per user capped, least recently used
//!   ending first;
//! - `least_privilege`: the last admin cannot be taken away, even by two
//!   admins at once;
//! - `input`: huge, deep, malformed and out-of-range input, all 4xx with
//!   nothing written;
//! - `surface`: what an attacker can reach: Redis without a password,
//!   metrics, headers, the body of a 500;
//! - `dependencies`: the cargo-deny audit (scripts/audit) catches an
//!   advisory against a crate we lock.
//!
//! What schemathesis found (scripts/fuzz) has its regular tests in
//! `schemathesis_findings`.

mod authorization;
mod bounded_resources;
mod brute_force;
mod dependencies;
mod input;
mod least_privilege;
mod surface;
mod tokens;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

pub fn now_secs() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit in i64")
}

/// `claims` signed as the API would sign them if `secret` were its key.
pub fn sign(claims: &Value, algorithm: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token can be signed")
}
