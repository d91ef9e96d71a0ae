//! Every Redis key the service uses, built in one place. All keys start with
//! the configured prefix (`evergreen:v1:` by default): the version lets a data
//! migration write next to old data, and tests give each run its own prefix.
//!
//! Sorted "lex" indexes (`ZRANGE .. BYLEX`) hold members `<sortable>:<uuid>` with
//! score 0: the order is total, and a cursor (the last member seen) stays valid
//! whatever is inserted or removed around it.

use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Hash: one user (`id`, `email`, `name`, `role`, `disabled`, `created_at`, `password_hash`).
    pub fn user(&self, id: Uuid) -> String {
        format!("{}user:{id}", self.prefix)
    }
    /// String: normalised email -> user id; makes emails unique.
    pub fn user_email(&self, normalized_email: &str) -> String {
        format!("{}user-email:{normalized_email}", self.prefix)
    }
    /// Lex index of all users by creation.
    pub fn users_index(&self) -> String {
        format!("{}users", self.prefix)
    }
    /// Sorted set: session ids of one user by last use, to bound and revoke them.
    pub fn user_sessions(&self, user_id: Uuid) -> String {
        format!("{}{user_id}", self.user_sessions_prefix())
    }
    /// Prefix of the per-user session sets, for scripts that find a session's user.
    /// (`user-sessions:` held plain sets before sessions were bounded.)
    pub fn user_sessions_prefix(&self) -> String {
        format!("{}user-sessions-by-use:", self.prefix)
    }
    /// Set: session ids of one user as versions before the session cap kept
    /// them (unordered); still walked when a user's sessions end, until
    /// they expire (30 days after their last login).
    pub fn legacy_user_sessions(&self, user_id: Uuid) -> String {
        format!("{}user-sessions:{user_id}", self.prefix)
    }
    /// Set: ids of the enabled admins, so that the last one is never removed.
    pub fn admins(&self) -> String {
        format!("{}admins", self.prefix)
    }
    /// Hash: one login session (`user_id`, `refresh_hash`); expires with the refresh token.
    pub fn session(&self, session_id: Uuid) -> String {
        format!("{}{session_id}", self.session_prefix())
    }
    /// Prefix of session keys, for scripts that revoke sessions by id.
    pub fn session_prefix(&self) -> String {
        format!("{}session:", self.prefix)
    }
    /// Counter: password checks of one account from one client address that
    /// have not (yet) succeeded, within the failure window.
    pub fn password_failures(&self, normalized_email: &str, address: &str) -> String {
        format!(
            "{}password-failures:{address}:{normalized_email}",
            self.prefix
        )
    }
    /// Counter: failed password checks from one client address, any account.
    pub fn address_failures(&self, address: &str) -> String {
        format!("{}address-failures:{address}", self.prefix)
    }
    /// Hash: one account's budget of password checks from unknown addresses.
    pub fn password_budget(&self, normalized_email: &str) -> String {
        format!("{}password-budget:{normalized_email}", self.prefix)
    }
    /// Sorted set: client addresses one account signed in from, by time.
    pub fn known_addresses(&self, normalized_email: &str) -> String {
        format!("{}known-addresses:{normalized_email}", self.prefix)
    }

    /// Hash: one user's write allowance (token bucket).
    pub fn write_bucket(&self, user_id: Uuid) -> String {
        format!("{}write-bucket:{user_id}", self.prefix)
    }

    /// Hash: one product.
    pub fn product(&self, id: Uuid) -> String {
        format!("{}product:{id}", self.prefix)
    }
    /// String: SKU -> product id; makes SKUs unique.
    pub fn product_sku(&self, sku: &str) -> String {
        format!("{}product-sku:{sku}", self.prefix)
    }
    /// Lex index of the listed (not archived) products, by creation or by price,
    /// over the whole catalog (`category = None`) or one category.
    pub fn products_index(&self, order: ProductOrder, category: Option<&str>) -> String {
        let order = match order {
            ProductOrder::Created => "created",
            ProductOrder::Price => "price",
        };
        match category {
            None => format!("{}products:by-{order}", self.prefix),
            Some(category) => format!("{}products:category:{category}:by-{order}", self.prefix),
        }
    }

    /// Hash: one purchase.
    pub fn purchase(&self, id: Uuid) -> String {
        format!("{}purchase:{id}", self.prefix)
    }
    /// Stream: one entry (field `id`) per purchase, in the order they were
    /// made; the store-wide record of purchases, for operators and
    /// consumers (`XRANGE`, `XREAD`). A stream entry costs ~50 B where the
    /// lex index `purchases` it replaced cost ~170 B; nothing reads that
    /// old sorted set any more.
    pub fn purchase_log(&self) -> String {
        format!("{}purchase-log", self.prefix)
    }
    /// Lex index of one user's purchases by creation.
    pub fn user_purchases(&self, user_id: Uuid) -> String {
        format!("{}user-purchases:{user_id}", self.prefix)
    }
    /// String: the record of one purchase idempotency key of one user
    /// (`api/lua/lib/purchase_record.lua`).
    pub fn idempotency(&self, user_id: Uuid, key: &str) -> String {
        format!("{}idempotency:{user_id}:{key}", self.prefix)
    }
    /// Hash: the record of one stock-delta idempotency key of one admin
    /// (`fingerprint`, `response`). Apart from purchase keys: one key used
    /// on both routes names two different writes.
    pub fn stock_idempotency(&self, user_id: Uuid, key: &str) -> String {
        format!("{}idempotency:stock:{user_id}:{key}", self.prefix)
    }
}

/// The two orders a product index keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductOrder {
    Created,
    Price,
}

/// Lex member for "by creation" indexes: zero-padded milliseconds, then the id.
pub fn created_member(created_ms: i64, id: Uuid) -> String {
    format!("{created_ms:015}:{id}")
}

/// Lex member for "by price" indexes.
pub fn price_member(price_cents: i64, id: Uuid) -> String {
    format!("{price_cents:020}:{id}")
}

/// The id at the end of an index member.
pub fn member_id(member: &str) -> Option<Uuid> {
    member.rsplit_once(':').and_then(|(_, id)| id.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lex_members_sort_like_their_numbers() {
        let id = Uuid::nil();
        assert!(price_member(99, id) < price_member(100, id));
        assert!(created_member(1_700_000_000_000, id) < created_member(1_800_000_000_000, id));
        assert_eq!(member_id(&price_member(5, id)), Some(id));
    }
}
