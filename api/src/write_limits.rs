//! Per-user rate limits on writes that leave state behind (purchases,
//! cancels, stock changes): a token bucket per user in Redis
//! (`lua/lib/write_bucket.lua`), shared by every API replica. Defaults a
//! shopper never meets (10 a second, bursts of 20) still stop one account
//! from filling Redis with purchases, or the hashing threads with work, as
//! fast as it can send. A purchase takes its token inside `purchase.lua`
//! (one round trip less on the hot path); cancels and stock changes call
//! [`WriteLimits::take`] first. The bucket is never waited for on its own:
//! losing it in a failover only forgives a burst.

use uuid::Uuid;

use crate::config::LimitSettings;
use crate::error::ApiError;
use crate::redis::{Keys, Redis, scripts};

#[derive(Debug)]
pub struct WriteLimits<'a> {
    pub redis: &'a Redis,
    pub keys: &'a Keys,
    pub settings: &'a LimitSettings,
}

/// A user's bucket as the scripts take it: its size and the ms one token
/// takes to come back.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    pub size: u64,
    pub refill_ms: u64,
}

impl Bucket {
    pub fn of(settings: &LimitSettings) -> Self {
        Self {
            size: settings.write_burst_per_user,
            refill_ms: ((1000.0 / settings.writes_per_second_per_user).ceil() as u64).max(1),
        }
    }
}

/// 429 with `Retry-After` for a write a bucket refused (nothing was
/// written: retrying later is safe).
pub fn too_many_writes(retry_after_ms: u64) -> ApiError {
    ApiError::TooManyRequests {
        detail: "too many writes by this user; slow down".to_owned(),
        retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
    }
}

impl WriteLimits<'_> {
    /// Takes one write from `user`'s allowance, or refuses with 429.
    pub async fn take(&self, user: Uuid) -> Result<(), ApiError> {
        let bucket = Bucket::of(self.settings);
        let call = scripts::TAKE_WRITE_TOKEN
            .call(&[self.keys.write_bucket(user)])
            .arg(bucket.size)
            .arg(bucket.refill_ms)
            .to_owned();
        let reply = self
            .redis
            .run_script_unconfirmed("write_token", call)
            .await?;
        match reply.tag.as_str() {
            "taken" => Ok(()),
            "limited" => Err(too_many_writes(reply.value(0)?)),
            _ => Err(reply.unknown().into()),
        }
    }
}
