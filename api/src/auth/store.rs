//! Sessions and login throttling in Redis. A session is what logout, refresh
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
    pub async fn create(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        refresh_hash: &str,
    ) -> Result<(), RedisError> {
        let ttl = self.settings.refresh_token_ttl_secs;
        let (session, sessions) = (
            self.keys.session(session_id),
            self.keys.user_sessions(user_id),
        );
        let pipe = transaction(|pipe| {
            pipe.cmd("HSET")
                .arg(&session)
                .arg("user_id")
                .arg(user_id.to_string())
                .arg("refresh_hash")
                .arg(refresh_hash)
                .ignore()
                .cmd("EXPIRE")
                .arg(&session)
                .arg(ttl)
                .ignore()
                .cmd("SADD")
                .arg(&sessions)
                .arg(session_id.to_string())
                .ignore()
                // The set lives as long as its newest session; stale ids in it are harmless.
                .cmd("EXPIRE")
                .arg(&sessions)
                .arg(ttl)
                .ignore();
        });
        self.redis.write::<()>("session_create", &pipe).await
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
                .cmd("SREM")
                .arg(self.keys.user_sessions(user_id))
                .arg(session_id.to_string())
                .ignore();
        });
        self.redis.write::<()>("session_revoke", &pipe).await
    }

    /// Seconds the account is still locked for, if it is, rounded up: `TTL`
    /// would round a lock with under half a second left down to 0 and lift
    /// it early.
    pub async fn lock_remaining(&self, email: &str) -> Result<Option<u64>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PTTL").arg(self.keys.login_lock(email));
        let (pttl,): (i64,) = self.redis.read_master("login_lock", &pipe).await?;
        Ok(u64::try_from(pttl)
            .ok()
            .filter(|ms| *ms > 0)
            .map(|ms| ms.div_ceil(1000)))
    }

    /// Counts a failure; from the `login_max_failures`-th on, locks the account
    /// for a time that doubles with each failure, up to the maximum. Returns the
    /// lock duration if one was set. Losing these counters in a failover only
    /// forgives a few failures, so they are not confirmed with `WAIT`.
    pub async fn record_failure(&self, email: &str) -> Result<Option<u64>, RedisError> {
        let failures_key = self.keys.login_failures(email);
        let mut pipe = redis::pipe();
        pipe.cmd("INCR")
            .arg(&failures_key)
            .cmd("EXPIRE")
            .arg(&failures_key)
            .arg(self.settings.login_failure_window_secs)
            .ignore();
        let (failures,): (u64,) = self.redis.write_unconfirmed("login_failure", &pipe).await?;
        if failures < self.settings.login_max_failures {
            return Ok(None);
        }
        let doublings = (failures - self.settings.login_max_failures).min(20) as u32;
        let lock = self
            .settings
            .login_lock_base_secs
            .saturating_mul(1 << doublings)
            .min(self.settings.login_lock_max_secs);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.login_lock(email))
            .arg("1")
            .arg("EX")
            .arg(lock)
            .ignore();
        self.redis
            .write_unconfirmed::<()>("login_lock", &pipe)
            .await?;
        Ok(Some(lock))
    }

    pub async fn clear_failures(&self, email: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(self.keys.login_failures(email))
            .ignore();
        self.redis
            .write_unconfirmed::<()>("login_failure", &pipe)
            .await
    }
}
