//! Per-user rate limits on writes that leave state behind (purchases,
//! cancels, stock changes): a token bucket per user in Redis, shared by
//! every API replica. Defaults a shopper never meets (10 a second, bursts
//! of 20) still stop one account from filling Redis with purchases, or the
//! hashing threads with work, as fast as it can send. The bucket is written
//! without `WAIT`: losing it in a failover only forgives a burst.

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

impl WriteLimits<'_> {
    /// Takes one write from `user`'s allowance, or refuses with 429 and
    /// `Retry-After` (nothing was written: retrying later is safe).
    pub async fn take(&self, user: Uuid) -> Result<(), ApiError> {
        let refill_ms = (1000.0 / self.settings.writes_per_second_per_user).ceil() as u64;
        let call = scripts::TAKE_WRITE_TOKEN
            .call(&[self.keys.write_bucket(user)])
            .arg(self.settings.write_burst_per_user)
            .arg(refill_ms.max(1))
            .to_owned();
        let reply = self
            .redis
            .run_script_unconfirmed("write_token", call)
            .await?;
        match reply.tag.as_str() {
            "taken" => Ok(()),
            "limited" => {
                let retry_after_ms: u64 = reply.value(0)?;
                Err(ApiError::TooManyRequests {
                    detail: "too many writes by this user; slow down".to_owned(),
                    retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
                })
            }
            _ => Err(reply.unknown().into()),
        }
    }
}
