//! Products in Redis: a hash per product (its layout is `fields_of` and
//! `from_fields`, here), a unique SKU index, and lex indexes by creation and
//! by price, over the whole catalog and per category. Catalog reads go to
//! replicas.

use std::collections::HashMap;

use redis::Value;
use uuid::Uuid;

use super::model::{MAX_STOCK, Product, ProductSort};
use crate::redis::keys::{self, Keys, ProductOrder};
use crate::redis::{Redis, RedisError, scripts, value};

/// At most this many products are examined per list request (5 round trips
/// of 100 `HGETALL`s at most); a sparse filter (`q`, prices within a
/// category) returns a short page with a cursor rather than scanning the
/// whole catalog. With nginx's read limit per address this bounds the Redis
/// work one client can cause.
const MAX_EXAMINED: usize = 500;

#[derive(Debug)]
pub struct ProductStore<'a> {
    pub redis: &'a Redis,
    pub keys: &'a Keys,
}

/// New product fields, already validated.
#[derive(Debug)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    pub category: String,
}

/// Changes of a PATCH, already validated.
#[derive(Debug, Default)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price_cents: Option<i64>,
    pub category: Option<String>,
}

/// Filters of a catalog listing.
#[derive(Debug)]
pub struct ProductFilter {
    pub category: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    /// Lower-cased name substring.
    pub name_contains: Option<String>,
    pub sort: ProductSort,
}

impl ProductFilter {
    fn matches(&self, product: &Product) -> bool {
        !product.archived
            && self.min_price.is_none_or(|min| product.price_cents >= min)
            && self.max_price.is_none_or(|max| product.price_cents <= max)
            && self
                .name_contains
                .as_ref()
                .is_none_or(|q| product.name.to_lowercase().contains(q))
    }

    fn by_price(&self) -> bool {
        matches!(
            self.sort,
            ProductSort::PriceAscending | ProductSort::PriceDescending
        )
    }

    /// Whether index order alone can answer the query, without filtering.
    fn index_answers_all(&self) -> bool {
        self.name_contains.is_none()
            && (self.by_price() || (self.min_price.is_none() && self.max_price.is_none()))
    }
}

// The outcomes below are returned once per request and matched at once:
// boxing the product buys nothing.

/// What creating a product did.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CreateOutcome {
    Created(Product),
    /// Another product holds the SKU.
    SkuTaken,
}

/// What a PATCH did.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum UpdateOutcome {
    Updated(Product),
    Missing,
    Archived,
    /// The product is at another version (ETag) than the caller expected.
    VersionChanged(u64),
}

/// What archiving did.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ArchiveOutcome {
    /// Archived now, or already.
    Archived(Product),
    Missing,
    /// Concurrent PATCHes kept moving it between the read and the script.
    KeptChanging,
}

/// What a stock delta did.
// Returned once per request and matched at once: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum StockOutcome {
    Applied(Product),
    /// The key was used before with the same request: the product as that
    /// first request left it.
    Replayed(Product),
    /// The key was used with another product or delta.
    KeyReused,
    Missing,
    /// Stock would go below zero; holds the current stock.
    Insufficient(i64),
    /// Stock would exceed the maximum; holds the current stock.
    TooLarge(i64),
}

/// A stock delta ready for the script.
#[derive(Debug)]
pub struct StockDelta<'a> {
    pub product_id: Uuid,
    pub delta: i64,
    pub admin_id: Uuid,
    pub idempotency_key: &'a str,
    /// See [`crate::idempotency::fingerprint`].
    pub fingerprint: &'a str,
    pub key_ttl_secs: u64,
}

fn now() -> (String, i64) {
    let now = chrono::Utc::now();
    (
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        now.timestamp_millis(),
    )
}

impl ProductStore<'_> {
    fn index_keys(&self, category: &str) -> [String; 4] {
        [
            self.keys.products_index(ProductOrder::Created, None),
            self.keys.products_index(ProductOrder::Price, None),
            self.keys
                .products_index(ProductOrder::Created, Some(category)),
            self.keys
                .products_index(ProductOrder::Price, Some(category)),
        ]
    }

    /// Creates the product unless its SKU is taken.
    pub async fn create(&self, new: NewProduct) -> Result<CreateOutcome, RedisError> {
        let id = Uuid::new_v4();
        let (timestamp, created_ms) = now();
        let [by_created, by_price, category_created, category_price] =
            self.index_keys(&new.category);
        let mut call = scripts::CREATE_PRODUCT.call(&[
            self.keys.product(id),
            self.keys.product_sku(&new.sku),
            by_created,
            by_price,
            category_created,
            category_price,
        ]);
        call.arg(id.to_string())
            .arg(keys::created_member(created_ms, id))
            .arg(keys::price_member(new.price_cents, id));
        let product = Product {
            id,
            sku: new.sku,
            name: new.name,
            description: new.description,
            price_cents: new.price_cents,
            currency: new.currency,
            stock: new.stock,
            category: new.category,
            archived: false,
            created_at: timestamp.clone(),
            updated_at: timestamp,
            version: 1,
            created_ms,
        };
        for (field, value) in fields_of(&product) {
            call.arg(field).arg(value);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(call);
        let (reply,): (Vec<Value>,) = self.redis.write("product_create", &pipe).await?;
        match reply.as_slice() {
            [Value::Int(1)] => Ok(CreateOutcome::Created(product)),
            [Value::Int(0), _] => Ok(CreateOutcome::SkuTaken),
            _ => Err(RedisError::Unexpected(
                "create_product: unexpected reply".to_owned(),
            )),
        }
    }

    /// A product from a replica (catalog read).
    pub async fn get(&self, id: Uuid) -> Result<Option<Product>, RedisError> {
        self.get_from(id, false).await
    }

    /// A product from the master, for read-modify-write.
    pub async fn get_latest(&self, id: Uuid) -> Result<Option<Product>, RedisError> {
        self.get_from(id, true).await
    }

    async fn get_from(&self, id: Uuid, master: bool) -> Result<Option<Product>, RedisError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(self.keys.product(id));
        let (fields,): (HashMap<String, String>,) = if master {
            self.redis.read_master("product_get", &pipe).await?
        } else {
            self.redis.read("product_get", &pipe).await?
        };
        if fields.is_empty() {
            Ok(None)
        } else {
            from_fields(&fields).map(Some)
        }
    }

    /// One page of the catalog after the index member `after`. Returns the page
    /// and the member to continue from, if there may be more.
    pub async fn list(
        &self,
        filter: &ProductFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Product>, Option<String>), RedisError> {
        let order = if filter.by_price() {
            ProductOrder::Price
        } else {
            ProductOrder::Created
        };
        let index = self.keys.products_index(order, filter.category.as_deref());
        let descending = matches!(
            filter.sort,
            ProductSort::PriceDescending | ProductSort::CreatedDescending
        );
        // Price bounds become index bounds when the index is by price:
        // members are "<20-digit price>:<uuid>", and ':' < ';'.
        let (low, high) = if filter.by_price() {
            (
                filter
                    .min_price
                    .map_or_else(|| "-".to_owned(), |min| format!("[{min:020}:")),
                filter
                    .max_price
                    .map_or_else(|| "+".to_owned(), |max| format!("({max:020};")),
            )
        } else {
            ("-".to_owned(), "+".to_owned())
        };
        let batch = if filter.index_answers_all() {
            limit + 1
        } else {
            (limit + 1).max(100)
        };
        let mut position = after.map(|member| format!("({member}"));
        let mut matched: Vec<(String, Product)> = Vec::new();
        let mut examined = 0;
        let mut last_examined = None;
        let mut exhausted = false;
        while matched.len() <= limit && !exhausted && examined < MAX_EXAMINED {
            let (start, end) = match (&position, descending) {
                (Some(p), false) => (p.clone(), high.clone()),
                (Some(p), true) => (p.clone(), low.clone()),
                (None, false) => (low.clone(), high.clone()),
                (None, true) => (high.clone(), low.clone()),
            };
            let mut pipe = redis::pipe();
            let command = pipe
                .cmd("ZRANGE")
                .arg(&index)
                .arg(start)
                .arg(end)
                .arg("BYLEX");
            if descending {
                command.arg("REV");
            }
            command.arg("LIMIT").arg(0).arg(batch);
            let (members,): (Vec<String>,) = self.redis.read("product_list", &pipe).await?;
            exhausted = members.len() < batch;
            if members.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for member in &members {
                let id = keys::member_id(member)
                    .ok_or_else(|| RedisError::Unexpected("bad product index member".to_owned()))?;
                pipe.cmd("HGETALL").arg(self.keys.product(id));
            }
            let records: Vec<HashMap<String, String>> =
                self.redis.read("product_list", &pipe).await?;
            for (member, fields) in members.into_iter().zip(records) {
                examined += 1;
                last_examined = Some(member.clone());
                if fields.is_empty() {
                    continue;
                }
                let product = from_fields(&fields)?;
                if filter.matches(&product) {
                    matched.push((member, product));
                    if matched.len() > limit {
                        break;
                    }
                }
            }
            position = last_examined.as_ref().map(|member| format!("({member}"));
        }
        let next = if matched.len() > limit {
            matched.truncate(limit);
            matched.last().map(|(member, _)| member.clone())
        } else if exhausted {
            None
        } else {
            // Examination budget spent: a short page, continue after what was seen.
            last_examined
        };
        Ok((
            matched.into_iter().map(|(_, product)| product).collect(),
            next,
        ))
    }

    /// Applies a PATCH if the product is still at `expected_version`.
    pub async fn update(
        &self,
        current: &Product,
        expected_version: u64,
        changes: ProductChanges,
    ) -> Result<UpdateOutcome, RedisError> {
        let (timestamp, _) = now();
        let new_price = changes.price_cents.unwrap_or(current.price_cents);
        let new_category = changes
            .category
            .clone()
            .unwrap_or_else(|| current.category.clone());
        let mut call = scripts::UPDATE_PRODUCT.call(&[
            self.keys.product(current.id),
            self.keys.products_index(ProductOrder::Price, None),
            self.keys
                .products_index(ProductOrder::Created, Some(&current.category)),
            self.keys
                .products_index(ProductOrder::Price, Some(&current.category)),
            self.keys
                .products_index(ProductOrder::Created, Some(&new_category)),
            self.keys
                .products_index(ProductOrder::Price, Some(&new_category)),
        ]);
        call.arg(expected_version)
            .arg(keys::price_member(current.price_cents, current.id))
            .arg(keys::price_member(new_price, current.id))
            .arg(keys::created_member(current.created_ms, current.id))
            .arg(timestamp);
        if let Some(name) = changes.name {
            call.arg("name").arg(name);
        }
        if let Some(description) = changes.description {
            call.arg("description").arg(description);
        }
        if let Some(price) = changes.price_cents {
            call.arg("price_cents").arg(price);
        }
        if let Some(category) = changes.category {
            call.arg("category").arg(category);
        }
        let reply = self.redis.run_script("product_update", call).await?;
        Ok(match reply.tag.as_str() {
            "ok" => UpdateOutcome::Updated(from_fields(&reply.fields(0))?),
            "missing" => UpdateOutcome::Missing,
            "archived" => UpdateOutcome::Archived,
            "version" => UpdateOutcome::VersionChanged(reply.value(0)?),
            _ => return Err(reply.unknown()),
        })
    }

    /// Archives the product (idempotent). The script checks the version it
    /// read, because the indexes it removes the product from depend on its
    /// price and category: a concurrent PATCH makes it read again.
    pub async fn archive(&self, id: Uuid) -> Result<ArchiveOutcome, RedisError> {
        for _ in 0..3 {
            let Some(current) = self.get_latest(id).await? else {
                return Ok(ArchiveOutcome::Missing);
            };
            let (timestamp, _) = now();
            let [by_created, by_price, category_created, category_price] =
                self.index_keys(&current.category);
            let mut call = scripts::ARCHIVE_PRODUCT.call(&[
                self.keys.product(current.id),
                by_created,
                by_price,
                category_created,
                category_price,
            ]);
            call.arg(current.version)
                .arg(keys::created_member(current.created_ms, current.id))
                .arg(keys::price_member(current.price_cents, current.id))
                .arg(timestamp);
            let reply = self.redis.run_script("product_archive", call).await?;
            match reply.tag.as_str() {
                "ok" => return Ok(ArchiveOutcome::Archived(from_fields(&reply.fields(0))?)),
                "missing" => return Ok(ArchiveOutcome::Missing),
                "version" => continue,
                _ => return Err(reply.unknown()),
            }
        }
        Ok(ArchiveOutcome::KeptChanging)
    }

    /// Adds the delta to the stock, never below zero, once per key.
    pub async fn add_stock(&self, change: StockDelta<'_>) -> Result<StockOutcome, RedisError> {
        let (timestamp, _) = now();
        let mut call = scripts::STOCK_DELTA.call(&[
            self.keys.product(change.product_id),
            self.keys
                .stock_idempotency(change.admin_id, change.idempotency_key),
        ]);
        call.arg(change.delta)
            .arg(MAX_STOCK)
            .arg(timestamp)
            .arg(change.fingerprint)
            .arg(change.key_ttl_secs);
        let reply = self.redis.run_script("product_stock", call).await?;
        Ok(match reply.tag.as_str() {
            "ok" => StockOutcome::Applied(from_fields(&reply.fields(0))?),
            "replayed" => StockOutcome::Replayed(from_fields(&reply.fields(0))?),
            "key_reused" => StockOutcome::KeyReused,
            "missing" => StockOutcome::Missing,
            "insufficient" => StockOutcome::Insufficient(reply.value(0)?),
            "too_large" => StockOutcome::TooLarge(reply.value(0)?),
            _ => return Err(reply.unknown()),
        })
    }
}

/// A product from its hash.
fn from_fields(fields: &HashMap<String, String>) -> Result<Product, RedisError> {
    Ok(Product {
        id: value::parse(fields, "id")?,
        sku: value::field(fields, "sku")?.to_owned(),
        name: value::field(fields, "name")?.to_owned(),
        description: value::field(fields, "description")?.to_owned(),
        price_cents: value::parse(fields, "price_cents")?,
        currency: value::field(fields, "currency")?.to_owned(),
        stock: value::parse(fields, "stock")?,
        category: value::field(fields, "category")?.to_owned(),
        archived: value::field(fields, "archived")? == "1",
        created_at: value::field(fields, "created_at")?.to_owned(),
        updated_at: value::field(fields, "updated_at")?.to_owned(),
        version: value::parse(fields, "version")?,
        created_ms: value::parse(fields, "created_ms")?,
    })
}

/// The hash fields of a product.
fn fields_of(product: &Product) -> Vec<(&'static str, String)> {
    vec![
        ("id", product.id.to_string()),
        ("sku", product.sku.clone()),
        ("name", product.name.clone()),
        ("description", product.description.clone()),
        ("price_cents", product.price_cents.to_string()),
        ("currency", product.currency.clone()),
        ("stock", product.stock.to_string()),
        ("category", product.category.clone()),
        (
            "archived",
            if product.archived { "1" } else { "0" }.to_owned(),
        ),
        ("created_at", product.created_at.clone()),
        ("created_ms", product.created_ms.to_string()),
        ("updated_at", product.updated_at.clone()),
        ("version", product.version.to_string()),
    ]
}
