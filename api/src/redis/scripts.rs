//! One Lua script per invariant that must hold atomically, loaded from
//! `api/lua/*.lua`. Each script documents its KEYS, ARGV, reply and invariant
//! in its header. Scripts are called with `EVALSHA`; [`load_all`] runs on every
//! new master connection (a promoted replica has an empty script cache).

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::{RedisError, value};

/// A script and its SHA1, computed once.
#[derive(Debug)]
pub struct Script {
    pub name: &'static str,
    source: &'static str,
    sha: String,
}

impl Script {
    fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            sha: redis::Script::new(source).get_hash().to_owned(),
        }
    }

    /// `EVALSHA <sha> <numkeys> <keys...>`; append the ARGV with `.arg(..)`
    /// and run it with [`crate::redis::Redis::run_script`].
    pub fn call(&self, keys: &[String]) -> redis::Cmd {
        let mut command = redis::cmd("EVALSHA");
        command.arg(&self.sha).arg(keys.len()).arg(keys);
        command
    }

    /// The Lua source, for the tests that run each script by hand.
    pub fn source(&self) -> &'static str {
        self.source
    }
}

/// The reply of a script that answers `{'tag', ...}` (most of them): the
/// tag, and readers for what follows it, by position after the tag.
#[derive(Debug)]
pub struct Tagged {
    pub tag: String,
    rest: Vec<Value>,
}

impl Tagged {
    pub(crate) fn from_reply(script: &str, reply: Vec<Value>) -> Result<Self, RedisError> {
        let mut items = reply.into_iter();
        let tag = items
            .next()
            .as_ref()
            .and_then(value::text)
            .ok_or_else(|| RedisError::Unexpected(format!("{script}: reply without a tag")))?;
        Ok(Self {
            tag,
            rest: items.collect(),
        })
    }

    /// Item `index` after the tag, as text.
    pub fn text(&self, index: usize) -> Result<String, RedisError> {
        self.rest
            .get(index)
            .and_then(value::text)
            .ok_or_else(|| self.unexpected(index))
    }

    /// Item `index` after the tag, parsed (an id, a number).
    pub fn value<T: std::str::FromStr>(&self, index: usize) -> Result<T, RedisError> {
        self.text(index)?
            .parse()
            .map_err(|_| self.unexpected(index))
    }

    /// Item `index` after the tag, a hash as `HGETALL` returns it.
    pub fn fields(&self, index: usize) -> HashMap<String, String> {
        self.rest.get(index).map(value::map).unwrap_or_default()
    }

    /// The error for a tag the caller does not expect.
    pub fn unknown(&self) -> RedisError {
        RedisError::Unexpected(format!("script replied with unknown tag `{}`", self.tag))
    }

    fn unexpected(&self, index: usize) -> RedisError {
        RedisError::Unexpected(format!("`{}` reply lacks item {index}", self.tag))
    }
}

macro_rules! script {
    ($ident:ident, $file:literal) => {
        pub static $ident: LazyLock<Script> = LazyLock::new(|| {
            Script::new($file, include_str!(concat!("../../lua/", $file, ".lua")))
        });
    };
    // A script that calls functions of shared chunks (`api/lua/lib/`): they
    // go before its source, as one chunk, so EVALSHA needs nothing else.
    ($ident:ident, $file:literal, uses $($lib:literal),+) => {
        pub static $ident: LazyLock<Script> = LazyLock::new(|| {
            Script::new(
                $file,
                concat!(
                    $(include_str!(concat!("../../lua/lib/", $lib, ".lua")),)+
                    include_str!(concat!("../../lua/", $file, ".lua"))
                ),
            )
        });
    };
}

script!(REGISTER, "register");
script!(REFRESH_SESSION, "refresh_session");
script!(UPDATE_USER, "update_user");
script!(CREATE_PRODUCT, "create_product");
script!(UPDATE_PRODUCT, "update_product", uses "product_version");
script!(ARCHIVE_PRODUCT, "archive_product", uses "product_version");
script!(STOCK_DELTA, "stock_delta");
script!(PURCHASE, "purchase", uses "write_bucket", "purchase_record");
script!(SETTLE_PURCHASE_KEY, "settle_purchase_key", uses "purchase_record");
script!(CANCEL, "cancel");
script!(CREATE_SESSION, "create_session");
script!(RESERVE_PASSWORD_CHECK, "reserve_password_check");
script!(PASSWORD_CHECK_PASSED, "password_check_passed");
script!(RELEASE_PASSWORD_CHECK, "release_password_check");
script!(TAKE_WRITE_TOKEN, "take_write_token", uses "write_bucket");

/// Every script, for [`load_all`].
pub fn all() -> [&'static Script; 15] {
    [
        &REGISTER,
        &REFRESH_SESSION,
        &UPDATE_USER,
        &CREATE_PRODUCT,
        &UPDATE_PRODUCT,
        &ARCHIVE_PRODUCT,
        &STOCK_DELTA,
        &PURCHASE,
        &SETTLE_PURCHASE_KEY,
        &CANCEL,
        &CREATE_SESSION,
        &RESERVE_PASSWORD_CHECK,
        &PASSWORD_CHECK_PASSED,
        &RELEASE_PASSWORD_CHECK,
        &TAKE_WRITE_TOKEN,
    ]
}

/// Loads every script into the node's cache in one round trip.
pub async fn load_all(connection: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for script in all() {
        pipe.cmd("SCRIPT").arg("LOAD").arg(script.source).ignore();
    }
    pipe.query_async::<()>(connection).await
}
