//! Throttling of password checks, after OWASP's authentication guidance:
//! failures are counted per (account, client address) and per client
//! address, and an account's checks from addresses it never signed in from
//! share a budget that refills over time. A check is reserved in Redis
//! before the argon2 hash runs, so guesses sent at once count as many and
//! the ones beyond the allowance cost no hashing at all. Nothing a stranger
//! does refuses the owner at an address the owner signed in from before, and
//! failures from one address never refuse another.
//!
//! The counters are written without `WAIT`: losing them in a failover only
//! forgives a few failures.

use crate::client_address::ClientAddress;
use crate::config::AuthSettings;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::redis::{Keys, Redis, scripts};

/// Addresses remembered per account as ones it signed in from.
const KNOWN_ADDRESSES_PER_ACCOUNT: u64 = 10;
/// How long an address stays known without a new sign-in from it.
const KNOWN_ADDRESS_DAYS: u64 = 90;

#[derive(Debug)]
pub struct PasswordChecks<'a> {
    pub redis: &'a Redis,
    pub keys: &'a Keys,
    pub settings: &'a AuthSettings,
    pub metrics: &'a Metrics,
}

/// A check that may run now. Report its outcome with
/// [`PasswordChecks::passed`] or [`PasswordChecks::failed`]; a reservation
/// nobody reports stays counted as a failure.
#[derive(Debug)]
#[must_use = "report whether the password was right"]
pub struct Reservation {
    account: String,
    address: String,
}

impl PasswordChecks<'_> {
    /// Reserves one check of `account`'s password (its normalised email;
    /// accounts that do not exist are throttled alike) from `address`, or
    /// refuses it with 429 and `Retry-After`.
    pub async fn reserve(
        &self,
        account: &str,
        address: ClientAddress,
    ) -> Result<Reservation, ApiError> {
        let address = address.throttle_key();
        let settings = self.settings;
        let call = scripts::RESERVE_PASSWORD_CHECK
            .call(&[
                self.keys.password_failures(account, &address),
                self.keys.address_failures(&address),
                self.keys.password_budget(account),
                self.keys.known_addresses(account),
            ])
            .arg(&address)
            .arg(settings.password_failures_per_account_and_address)
            .arg(settings.password_failures_per_address)
            .arg(settings.password_failure_window_secs)
            .arg(settings.password_checks_per_account_burst)
            .arg(settings.password_check_refill_ms)
            .to_owned();
        let reply = self
            .redis
            .run_script_unconfirmed("password_check_reserve", call)
            .await?;
        match reply.tag.as_str() {
            "reserved" => Ok(Reservation {
                account: account.to_owned(),
                address,
            }),
            "refused" => {
                self.count("refused");
                let scope: String = reply.text(0)?;
                let retry_after_ms: u64 = reply.value(1)?;
                let detail = if scope == "account" {
                    "too many password attempts for this account from addresses it has not \
                     signed in from; try again later"
                } else {
                    "too many failed password attempts from this address; try again later"
                };
                Err(ApiError::TooManyRequests {
                    detail: detail.to_owned(),
                    retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
                })
            }
            _ => Err(reply.unknown().into()),
        }
    }

    /// The reserved check found the right password: its failure is taken
    /// back and the address becomes one the account signed in from.
    pub async fn passed(&self, reservation: Reservation) -> Result<(), ApiError> {
        self.count("passed");
        let call = scripts::PASSWORD_CHECK_PASSED
            .call(&[
                self.keys
                    .password_failures(&reservation.account, &reservation.address),
                self.keys.address_failures(&reservation.address),
                self.keys.known_addresses(&reservation.account),
            ])
            .arg(&reservation.address)
            .arg(KNOWN_ADDRESSES_PER_ACCOUNT)
            .arg(KNOWN_ADDRESS_DAYS * 86_400)
            .to_owned();
        self.redis
            .run_script_unconfirmed("password_check_passed", call)
            .await?;
        Ok(())
    }

    /// The reserved check found a wrong password: it stays counted.
    pub fn failed(&self, reservation: Reservation) {
        self.count("failed");
        drop(reservation);
    }

    /// The reserved check reached no verdict (Redis or the hashing threads
    /// failed): it is given back, so an outage never counts against the
    /// owner. Best effort: if Redis fails here too, it stays counted.
    pub async fn release(&self, reservation: Reservation) {
        let call = scripts::RELEASE_PASSWORD_CHECK
            .call(&[
                self.keys
                    .password_failures(&reservation.account, &reservation.address),
                self.keys.address_failures(&reservation.address),
            ])
            .to_owned();
        if let Err(error) = self
            .redis
            .run_script_unconfirmed("password_check_release", call)
            .await
        {
            tracing::warn!(%error, "a password check without verdict stays counted");
        }
    }

    /// Runs `check` (the lookup and the hash) for `reservation`: a `true`
    /// verdict is [`Self::passed`], `false` [`Self::failed`], an error
    /// [`Self::release`]d.
    pub async fn settle<T>(
        &self,
        reservation: Reservation,
        check: impl Future<Output = Result<(bool, T), ApiError>>,
    ) -> Result<(bool, T), ApiError> {
        // On the heap: the lookup and the hash inline made a sign-in's
        // future too deep for an actix worker's stack in debug builds.
        match Box::pin(check).await {
            Ok((true, found)) => {
                self.passed(reservation).await?;
                Ok((true, found))
            }
            Ok((false, found)) => {
                self.failed(reservation);
                Ok((false, found))
            }
            Err(error) => {
                self.release(reservation).await;
                Err(error)
            }
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .password_checks
            .with_label_values(&[outcome])
            .inc();
    }
}
