//! Purchases in Redis: a hash per purchase, lex indexes (all, per user) and an
//! idempotency record per (user, key). Creating and cancelling are single
//! scripts, so stock can never be oversold on any number of API replicas.

use std::collections::HashMap;

use redis::Value;
use uuid::Uuid;

use super::model::Purchase;
use crate::redis::keys::{self, Keys};
use crate::redis::{Redis, RedisError, scripts, value};

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
}

#[derive(Debug)]
pub enum PurchaseOutcome {
    Created(Purchase),
    /// The key was used before with the same body: the original purchase.
    Replayed(Purchase),
    /// The first request with this key has not been confirmed yet.
    InFlight,
    /// The key was used with another body.
    KeyReused,
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
    pub async fn create(&self, order: Order<'_>) -> Result<PurchaseOutcome, RedisError> {
        let id = Uuid::new_v4();
        let now = chrono::Utc::now();
        let mut keys = vec![
            self.keys.idempotency(order.user_id, order.idempotency_key),
            self.keys.purchase(id),
            self.keys.purchases_index(),
            self.keys.user_purchases(order.user_id),
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
            .arg(keys::created_member(now.timestamp_millis(), id));
        for (product_id, quantity) in order.lines {
            call.arg(product_id.to_string()).arg(*quantity);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(call);
        let (reply,): (Vec<Value>,) = self.redis.write("purchase", &pipe).await?;
        let tag = reply.first().and_then(value::text).unwrap_or_default();
        let product = |index: usize| -> Result<Uuid, RedisError> {
            reply
                .get(index)
                .and_then(value::text)
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| RedisError::Unexpected("purchase script: bad product id".to_owned()))
        };
        let purchase = || -> Result<Purchase, RedisError> {
            Purchase::from_fields(&value::map(reply.get(1).unwrap_or(&Value::Nil)))
        };
        match tag.as_str() {
            "created" => purchase().map(PurchaseOutcome::Created),
            "replayed" => purchase().map(PurchaseOutcome::Replayed),
            "in_flight" => Ok(PurchaseOutcome::InFlight),
            "key_reused" => Ok(PurchaseOutcome::KeyReused),
            "not_found" => product(1).map(PurchaseOutcome::NotFound),
            "archived" => product(1).map(PurchaseOutcome::Archived),
            "insufficient" => Ok(PurchaseOutcome::Insufficient {
                product_id: product(1)?,
                available: reply
                    .get(2)
                    .and_then(value::text)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0),
            }),
            _ => Err(RedisError::Unexpected(
                "purchase script: unexpected reply".to_owned(),
            )),
        }
    }

    /// Marks the idempotency record settled, so that a retry with the same
    /// key replays at once instead of getting 409 "in flight" until the
    /// window ends. Called after a purchase was confirmed, and after it was
    /// NOT confirmed (503): that request is over too, and the replay's own
    /// `WAIT` confirms the original purchase (or, if it was lost with a
    /// demoted master, the record is gone as well and the retry buys anew).
    /// Losing this mark only delays replays, so it is not confirmed itself.
    pub async fn settle(&self, user_id: Uuid, idempotency_key: &str) -> Result<(), RedisError> {
        let key = self.keys.idempotency(user_id, idempotency_key);
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(&key);
        // Only the purchase script creates the record and nothing deletes it
        // before its TTL, so "exists, then set" needs no transaction.
        let (exists,): (bool,) = self
            .redis
            .write_unconfirmed("purchase_settle", &pipe)
            .await?;
        if exists {
            let mut pipe = redis::pipe();
            pipe.cmd("HSET")
                .arg(&key)
                .arg("state")
                .arg("completed")
                .ignore();
            self.redis
                .write_unconfirmed::<()>("purchase_settle", &pipe)
                .await?;
        }
        Ok(())
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
            Purchase::from_fields(&fields).map(Some)
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
            .map(Purchase::from_fields)
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
        let mut pipe = redis::pipe();
        pipe.add_command(call);
        let (reply,): (Vec<Value>,) = self.redis.write("purchase_cancel", &pipe).await?;
        let purchase = || Purchase::from_fields(&value::map(reply.get(1).unwrap_or(&Value::Nil)));
        match reply.first().and_then(value::text).as_deref() {
            Some("cancelled") => purchase().map(CancelOutcome::Cancelled),
            Some("replayed") => purchase().map(CancelOutcome::Replayed),
            Some("missing") => Ok(CancelOutcome::Missing),
            Some("already_cancelled") => Ok(CancelOutcome::AlreadyCancelled),
            _ => Err(RedisError::Unexpected(
                "cancel script: unexpected reply".to_owned(),
            )),
        }
    }
}
