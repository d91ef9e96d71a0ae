//! Purchases in Redis: a hash per purchase (its layout is `from_fields` here,
//! the fields `purchase.lua` writes), a lex index per user, a store-wide
//! purchase log (a stream) and an idempotency record per (user, key). Creating and cancelling are single
//! scripts, so stock can never be oversold on any number of API replicas.

use std::collections::HashMap;
use std::time::Duration;

use uuid::Uuid;

use super::model::{Purchase, PurchaseStatus};
use crate::config::StoreSettings;
use crate::redis::keys::{self, Keys};
use crate::redis::{Redis, RedisError, scripts, value};
use crate::write_limits::Bucket;

/// Longest a response waits for its idempotency record to be settled.
const SETTLE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct PurchaseStore<'a> {
    pub redis: &'a Redis,
    pub keys: &'a Keys,
}

/// An order ready for the script: distinct products, summed quantities.
#[derive(Debug)]
pub struct Order<'a> {
    pub user_id: Uuid,
    pub idempotency_key: &'a str,
    /// SHA-256 of the request body as parsed; a different body under the same key is refused.
    pub fingerprint: &'a str,
    pub lines: &'a [(Uuid, u32)],
    pub currency: &'a str,
    pub key_ttl_secs: u64,
    pub in_flight_ms: u64,
    /// The buyer's write bucket: `purchase.lua` takes a token from it.
    pub bucket: Bucket,
}

impl<'a> Order<'a> {
    /// An order of `lines` by `user_id` under its idempotency key, in the
    /// store's currency and with its key lifetimes.
    pub fn new(
        user_id: Uuid,
        (idempotency_key, fingerprint): (&'a str, &'a str),
        lines: &'a [(Uuid, u32)],
        store: &'a StoreSettings,
        bucket: Bucket,
    ) -> Self {
        Self {
            user_id,
            idempotency_key,
            fingerprint,
            lines,
            currency: &store.currency,
            key_ttl_secs: store.idempotency_key_ttl_secs,
            in_flight_ms: store.idempotency_in_flight_secs * 1000,
            bucket,
        }
    }
}

#[derive(Debug)]
pub enum PurchaseOutcome {
    Created(Purchase),
    /// The key was used before with the same body: the original purchase, as
    /// the first answer showed it (`completed`, whatever happened since).
    Replayed(Purchase),
    /// The first request with this key has not been confirmed yet.
    InFlight,
    /// The key was used with another body.
    KeyReused,
    /// The buyer's write bucket is empty: nothing was written.
    Limited {
        retry_after_ms: u64,
    },
    NotFound(Uuid),
    Archived(Uuid),
    Insufficient {
        product_id: Uuid,
        available: i64,
    },
}

#[derive(Debug)]
pub enum CancelOutcome {
    Cancelled(Purchase),
    /// This session had cancelled it already: the same cancelled purchase.
    Replayed(Purchase),
    Missing,
    /// Cancelled by someone else (another session).
    AlreadyCancelled,
}

impl PurchaseStore<'_> {
    /// Buys every line or none, once per key, and settles the key's record
    /// right after the purchase's `WAIT`, in the same round trip; again on
    /// its own when that round trip broke off before it (a 503: that request
    /// is over too).
    pub async fn buy(&self, order: Order<'_>) -> Result<PurchaseOutcome, RedisError> {
        let (user_id, key) = (order.user_id, order.idempotency_key);
        let outcome = self.take_stock_and_record(order).await;
        if matches!(outcome, Err(RedisError::Unconfirmed)) {
            // Settling only spares a retry the in-flight window: never let
            // it hold the response for long.
            let settled = tokio::time::timeout(SETTLE_TIMEOUT, self.settle(user_id, key)).await;
            if !matches!(settled, Ok(Ok(()))) {
                tracing::warn!(
                    "could not settle the idempotency record; retries wait for the in-flight window"
                );
            }
        }
        outcome
    }

    async fn take_stock_and_record(&self, order: Order<'_>) -> Result<PurchaseOutcome, RedisError> {
        let id = Uuid::new_v4();
        let now = chrono::Utc::now();
        let mut keys = vec![
            self.keys.idempotency(order.user_id, order.idempotency_key),
            self.keys.purchase(id),
            self.keys.purchase_log(),
            self.keys.user_purchases(order.user_id),
            self.keys.write_bucket(order.user_id),
        ];
        keys.extend(
            order
                .lines
                .iter()
                .map(|(product_id, _)| self.keys.product(*product_id)),
        );
        let mut call = scripts::PURCHASE.call(&keys);
        call.arg(order.fingerprint)
            .arg(now.timestamp_millis())
            .arg(order.in_flight_ms)
            .arg(order.key_ttl_secs)
            .arg(id.to_string())
            .arg(order.user_id.to_string())
            .arg(order.currency)
            .arg(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .arg(keys::created_member(now.timestamp_millis(), id))
            .arg(order.bucket.size)
            .arg(order.bucket.refill_ms);
        for (product_id, quantity) in order.lines {
            call.arg(product_id.to_string()).arg(*quantity);
        }
        let settle = self.settle_call(order.user_id, order.idempotency_key);
        let reply = self
            .redis
            .run_script_then("purchase", call, Some(settle))
            .await?;
        Ok(match reply.tag.as_str() {
            "created" => PurchaseOutcome::Created(from_fields(&reply.fields(0))?),
            "replayed" => {
                let mut purchase = from_fields(&reply.fields(0))?;
                purchase.status = PurchaseStatus::Completed;
                PurchaseOutcome::Replayed(purchase)
            }
            "in_flight" => PurchaseOutcome::InFlight,
            "key_reused" => PurchaseOutcome::KeyReused,
            "limited" => PurchaseOutcome::Limited {
                retry_after_ms: reply.value(0)?,
            },
            "not_found" => PurchaseOutcome::NotFound(reply.value(0)?),
            "archived" => PurchaseOutcome::Archived(reply.value(0)?),
            "insufficient" => PurchaseOutcome::Insufficient {
                product_id: reply.value(0)?,
                available: reply.value(1).unwrap_or(0),
            },
            _ => return Err(reply.unknown()),
        })
    }

    /// Marks the idempotency record settled (`settle_purchase_key.lua`), so
    /// that a retry with the same key replays at once instead of getting 409
    /// "in flight" until the window ends. Sent after a purchase's `WAIT`
    /// whatever it counted: a request that got its 503 is over too, and the
    /// replay's own `WAIT` confirms the original purchase (or, if it was
    /// lost with a demoted master, the record is gone as well and the retry
    /// buys anew). Losing this mark only delays replays, so it is not
    /// confirmed itself.
    fn settle_call(&self, user_id: Uuid, idempotency_key: &str) -> redis::Cmd {
        scripts::SETTLE_PURCHASE_KEY
            .call(&[self.keys.idempotency(user_id, idempotency_key)])
            .arg("completed")
            .to_owned()
    }

    /// [`Self::settle_call`] on its own, when the purchase's round trip
    /// broke off before it.
    async fn settle(&self, user_id: Uuid, idempotency_key: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.add_command(self.settle_call(user_id, idempotency_key))
            .ignore();
        self.redis
            .write_unconfirmed::<()>("purchase_settle", &pipe)
            .await
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Purchase>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.keys.purchase(id));
        let (fields,): (HashMap<String, String>,) = self
            .redis
            .read_latest(
                "purchase_get",
                &pipe,
                |(fields,): &(HashMap<String, String>,)| fields.is_empty(),
            )
            .await?;
        if fields.is_empty() {
            Ok(None)
        } else {
            from_fields(&fields).map(Some)
        }
    }

    /// A user's purchases, newest first, after the index member `after`.
    pub async fn list_for_user(
        &self,
        user_id: Uuid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Purchase>, Option<String>), RedisError> {
        let start = after.map_or_else(|| "+".to_owned(), |member| format!("({member}"));
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(self.keys.user_purchases(user_id))
            .arg(start)
            .arg("-")
            .arg("BYLEX")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1);
        // A replica's list may miss the newest purchase but never denies one
        // that a page shows: no "absent" answer to refuse.
        let (mut members,): (Vec<String>,) = self
            .redis
            .read_latest("purchase_list", &pipe, |_: &(Vec<String>,)| false)
            .await?;
        let more = members.len() > limit;
        members.truncate(limit);
        if members.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut pipe = redis::pipe();
        for member in &members {
            let id = keys::member_id(member)
                .ok_or_else(|| RedisError::Unexpected("bad purchase index member".to_owned()))?;
            pipe.cmd("HGETALL").arg(self.keys.purchase(id));
        }
        let records: Vec<HashMap<String, String>> = self
            .redis
            .read_latest(
                "purchase_list",
                &pipe,
                |records: &Vec<HashMap<String, String>>| records.iter().any(HashMap::is_empty),
            )
            .await?;
        let purchases = records
            .iter()
            .filter(|f| !f.is_empty())
            .map(from_fields)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((purchases, if more { members.last().cloned() } else { None }))
    }

    /// Cancels and restocks, once. `purchase` was read just before; its items
    /// never change. `session_id` identifies the asker, so that its retry is
    /// answered with the cancelled purchase instead of a conflict.
    pub async fn cancel(
        &self,
        purchase: &Purchase,
        session_id: Uuid,
    ) -> Result<CancelOutcome, RedisError> {
        let mut keys = vec![self.keys.purchase(purchase.id)];
        keys.extend(
            purchase
                .items
                .iter()
                .map(|item| self.keys.product(item.product_id)),
        );
        let mut call = scripts::CANCEL.call(&keys);
        call.arg(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .arg(session_id.to_string());
        let reply = self.redis.run_script("purchase_cancel", call).await?;
        Ok(match reply.tag.as_str() {
            "cancelled" => CancelOutcome::Cancelled(from_fields(&reply.fields(0))?),
            "replayed" => CancelOutcome::Replayed(from_fields(&reply.fields(0))?),
            "missing" => CancelOutcome::Missing,
            "already_cancelled" => CancelOutcome::AlreadyCancelled,
            _ => return Err(reply.unknown()),
        })
    }
}

/// A purchase from its hash, as `purchase.lua` writes it (and `cancel.lua`
/// changes `status`, `cancelled_at`, `cancelled_by`).
fn from_fields(fields: &HashMap<String, String>) -> Result<Purchase, RedisError> {
    let items = serde_json::from_str(value::field(fields, "items")?)
        .map_err(|e| RedisError::Unexpected(format!("stored purchase items are invalid: {e}")))?;
    Ok(Purchase {
        id: value::parse(fields, "id")?,
        user_id: value::parse(fields, "user_id")?,
        items,
        total_cents: value::parse(fields, "total_cents")?,
        currency: value::field(fields, "currency")?.to_owned(),
        status: match value::field(fields, "status")? {
            "completed" => PurchaseStatus::Completed,
            "cancelled" => PurchaseStatus::Cancelled,
            _ => {
                return Err(RedisError::Unexpected(
                    "stored purchase has an unknown status".to_owned(),
                ));
            }
        },
        created_at: value::field(fields, "created_at")?.to_owned(),
    })
}
