//! Sessions in Redis. A session is what logout, refresh
//! rotation and password changes revoke; access tokens name it, so revoking it
//! stops them on every API replica at once.

use uuid::Uuid;

use crate::config::AuthSettings;
use crate::redis::{Keys, Redis, RedisError, scripts, transaction};
use crate::users::model::Role;

#[derive(Debug)]
pub struct SessionStore<'a> {
    pub redis: &'a Redis,
    pub keys: &'a Keys,
    pub settings: &'a AuthSettings,
}

/// Result of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    /// The presented token was current and now has its successor; or it was
    /// the one rotated last and comes back within the reuse interval (a
    /// retry), in which case nothing changed. Either way the caller hands out
    /// the successor pair of the rotation made at `rotated_at_ms`.
    Rotated { user_id: Uuid, rotated_at_ms: u64 },
    /// No such session (expired, logged out, or never existed).
    Missing,
    /// A rotated token was presented again: the session has been ended.
    Reused,
}

/// What a live session says about its user right now.
#[derive(Debug)]
pub struct LiveSession {
    pub role: Role,
}

impl SessionStore<'_> {
    /// Starts a session; ends the user's least recently used ones beyond
    /// `sessions_per_user`. Returns how many it ended.
    pub async fn create(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        refresh_hash: &str,
    ) -> Result<u64, RedisError> {
        let call = scripts::CREATE_SESSION
            .call(&[
                self.keys.session(session_id),
                self.keys.user_sessions(user_id),
            ])
            .arg(user_id.to_string())
            .arg(refresh_hash)
            .arg(self.settings.refresh_token_ttl_secs)
            .arg(self.keys.session_prefix())
            .arg(session_id.to_string())
            .arg(self.settings.sessions_per_user)
            .to_owned();
        let reply = self.redis.run_script("session_create", call).await?;
        match reply.tag.as_str() {
            "created" => reply.value(0),
            _ => Err(reply.unknown()),
        }
    }

    /// The live role of the session's user, or `None` when the session was
    /// revoked, belongs to someone else, or the user is disabled or gone.
    pub async fn check(
        &self,
        session_id: Uuid,
        user_id: Uuid,
    ) -> Result<Option<LiveSession>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(self.keys.session(session_id))
            .arg("user_id")
            .cmd("HMGET")
            .arg(self.keys.user(user_id))
            .arg("role")
            .arg("disabled");
        let (owner, user): (Option<String>, (Option<String>, Option<String>)) =
            self.redis.read("session_check", &pipe).await?;
        if owner.as_deref() != Some(user_id.to_string().as_str()) {
            return Ok(None);
        }
        match user {
            (Some(role), Some(disabled)) if disabled == "0" => {
                Ok(Role::parse(&role).map(|role| LiveSession { role }))
            }
            _ => Ok(None),
        }
    }

    /// Replaces the presented refresh token (by digest) with its successor.
    pub async fn rotate(
        &self,
        session_id: Uuid,
        presented_hash: &str,
        successor_hash: &str,
    ) -> Result<Rotation, RedisError> {
        let call = scripts::REFRESH_SESSION
            .call(&[self.keys.session(session_id)])
            .arg(presented_hash)
            .arg(successor_hash)
            .arg(self.settings.refresh_token_ttl_secs)
            .arg(self.keys.user_sessions_prefix())
            .arg(session_id.to_string())
            .arg(self.settings.refresh_reuse_interval_secs * 1000)
            .to_owned();
        let reply = self.redis.run_script("session_refresh", call).await?;
        Ok(match reply.tag.as_str() {
            "rotated" | "replayed" => Rotation::Rotated {
                user_id: reply.value(0)?,
                rotated_at_ms: reply.value(1)?,
            },
            "missing" => Rotation::Missing,
            "reused" => Rotation::Reused,
            _ => return Err(reply.unknown()),
        })
    }

    /// Ends one session (logout).
    pub async fn revoke(&self, session_id: Uuid, user_id: Uuid) -> Result<(), RedisError> {
        let pipe = transaction(|pipe| {
            pipe.cmd("DEL")
                .arg(self.keys.session(session_id))
                .ignore()
                .cmd("ZREM")
                .arg(self.keys.user_sessions(user_id))
                .arg(session_id.to_string())
                .ignore();
        });
        self.redis.write::<()>("session_revoke", &pipe).await
    }
}
