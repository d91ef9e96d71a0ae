//! One Lua script per invariant that must hold atomically, loaded from
//! `api/lua/*.lua`. Each script documents its KEYS, ARGV, reply and invariant
//! in its header. Scripts are called with `EVALSHA`; [`load_all`] runs on every
//! new master connection (a promoted replica has an empty script cache).

use std::sync::LazyLock;

use redis::aio::MultiplexedConnection;

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

    /// `EVALSHA <sha> <numkeys> <keys...>`; append the ARGV with `.arg(..)`.
    pub fn call(&self, keys: &[String]) -> redis::Cmd {
        let mut command = redis::cmd("EVALSHA");
        command.arg(&self.sha).arg(keys.len()).arg(keys);
        command
    }
}

macro_rules! script {
    ($ident:ident, $file:literal) => {
        pub static $ident: LazyLock<Script> = LazyLock::new(|| {
            Script::new($file, include_str!(concat!("../../lua/", $file, ".lua")))
        });
    };
}

script!(REGISTER, "register");
script!(REFRESH_SESSION, "refresh_session");
script!(UPDATE_USER, "update_user");
script!(CREATE_PRODUCT, "create_product");
script!(UPDATE_PRODUCT, "update_product");
script!(ARCHIVE_PRODUCT, "archive_product");
script!(STOCK_DELTA, "stock_delta");
script!(PURCHASE, "purchase");
script!(CANCEL, "cancel");

/// Every script, for [`load_all`].
pub fn all() -> [&'static Script; 9] {
    [
        &REGISTER,
        &REFRESH_SESSION,
        &UPDATE_USER,
        &CREATE_PRODUCT,
        &UPDATE_PRODUCT,
        &ARCHIVE_PRODUCT,
        &STOCK_DELTA,
        &PURCHASE,
        &CANCEL,
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
