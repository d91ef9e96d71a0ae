//! Each Lua script of the API (`scripts::all()`, the files in `api/lua/`),
//! called directly on the master with the KEYS and ARGV its header documents,
//! checking the documented reply and the invariant it keeps. No API instance
//! runs: only Redis and the script.

use std::collections::HashMap;

use evergreen_api::redis::keys::{self, Keys, ProductOrder};
use evergreen_api::redis::scripts::{
    self, ARCHIVE_PRODUCT, CANCEL, CREATE_PRODUCT, CREATE_SESSION, PASSWORD_CHECK_PASSED, PURCHASE,
    REFRESH_SESSION, REGISTER, RELEASE_PASSWORD_CHECK, RESERVE_PASSWORD_CHECK, SETTLE_PURCHASE_KEY,
    STOCK_DELTA, Script, TAKE_WRITE_TOKEN, UPDATE_PRODUCT, UPDATE_USER,
};
use evergreen_api::redis::value;
use evergreen_tests::app::TestStack;
use redis::Value;
use redis::aio::MultiplexedConnection;
use uuid::Uuid;

/// Redis only, a connection to its master, and the key builder of the API.
struct Lab {
    _stack: TestStack,
    redis: MultiplexedConnection,
    keys: Keys,
}

impl Lab {
    async fn new() -> Self {
        let stack = TestStack::sharing(0).await;
        let redis = stack.master_connection().await;
        let keys = stack.keys();
        Self {
            _stack: stack,
            redis,
            keys,
        }
    }

    /// `SCRIPT LOAD` then `EVALSHA`, as the API calls scripts.
    async fn run(&mut self, script: &Script, keys: &[String], args: &[String]) -> Value {
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(script.source())
            .query_async(&mut self.redis)
            .await
            .expect("the script loads");
        redis::cmd("EVALSHA")
            .arg(sha)
            .arg(keys.len())
            .arg(keys)
            .arg(args)
            .query_async(&mut self.redis)
            .await
            .expect("the script runs")
    }

    async fn hash(&mut self, key: &str) -> HashMap<String, String> {
        redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut self.redis)
            .await
            .expect("HGETALL")
    }

    async fn field(&mut self, key: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query_async(&mut self.redis)
            .await
            .expect("HGET")
    }

    async fn field_value(&mut self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.redis)
            .await
            .expect("GET")
    }

    async fn exists(&mut self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut self.redis)
            .await
            .expect("EXISTS")
            == 1
    }

    /// The `id` of every entry of a stream, oldest first.
    async fn log(&mut self, key: &str) -> Vec<String> {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(&mut self.redis)
            .await
            .expect("XRANGE");
        entries
            .into_iter()
            .flat_map(|(_, fields)| fields.into_iter().map(|(_, id)| id))
            .collect()
    }

    async fn members(&mut self, key: &str) -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.redis)
            .await
            .expect("ZRANGE")
    }

    async fn stock(&mut self, product: Uuid) -> i64 {
        let key = self.keys.product(product);
        self.field(&key, "stock")
            .await
            .and_then(|s| s.parse().ok())
            .expect("a stock")
    }

    /// A product made by `create_product.lua`, at version 1.
    async fn product(&mut self, price: i64, stock: i64, category: &str) -> Uuid {
        let id = Uuid::new_v4();
        let reply = self
            .create_product(id, &format!("SKU-{id}"), price, stock, category)
            .await;
        assert_eq!(reply, Value::Array(vec![Value::Int(1)]));
        id
    }

    async fn create_product(
        &mut self,
        id: Uuid,
        sku: &str,
        price: i64,
        stock: i64,
        category: &str,
    ) -> Value {
        let keys = vec![
            self.keys.product(id),
            self.keys.product_sku(sku),
            self.keys.products_index(ProductOrder::Created, None),
            self.keys.products_index(ProductOrder::Price, None),
            self.keys
                .products_index(ProductOrder::Created, Some(category)),
            self.keys
                .products_index(ProductOrder::Price, Some(category)),
        ];
        let mut args = strings(&[
            &id.to_string(),
            &keys::created_member(1_000, id),
            &keys::price_member(price, id),
        ]);
        for (field, value) in [
            ("id", id.to_string()),
            ("sku", sku.to_owned()),
            ("name", format!("Product {sku}")),
            ("description", String::new()),
            ("price_cents", price.to_string()),
            ("currency", "USD".to_owned()),
            ("stock", stock.to_string()),
            ("category", category.to_owned()),
            ("archived", "0".to_owned()),
            ("created_at", "2025-01-01T00:00:01.000Z".to_owned()),
            ("created_ms", "1000".to_owned()),
            ("updated_at", "2025-01-01T00:00:01.000Z".to_owned()),
            ("version", "1".to_owned()),
        ] {
            args.push(field.to_owned());
            args.push(value);
        }
        self.run(&CREATE_PRODUCT, &keys, &args).await
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The tag and the rest of a `{'tag', ...}` reply.
fn tagged(reply: Value) -> (String, Vec<Value>) {
    let mut items = value::array(reply);
    assert!(!items.is_empty(), "an empty reply");
    let rest = items.split_off(1);
    (value::text(&items[0]).expect("a text tag"), rest)
}

fn texts(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .map(|v| value::text(v).expect("text"))
        .collect()
}

/// Every script the API loads says what it takes, returns and keeps, and is
/// exactly a file of `api/lua/` (nothing is loaded that is not in the repo).
#[test]
fn every_script_documents_its_keys_argv_reply_and_invariant() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/lua");
    // Shared chunks (`api/lua/lib/`) are parts of scripts, not scripts.
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("api/lua")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "lua"))
        .map(|path| {
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    let mut loaded: Vec<String> = scripts::all()
        .iter()
        .map(|script| format!("{}.lua", script.name))
        .collect();
    loaded.sort();
    assert_eq!(loaded, files, "scripts::all() and api/lua/ differ");
    for script in scripts::all() {
        for part in ["-- KEYS[1]", "-- ARGV[1]", "-- Returns", "Invariant"] {
            assert!(
                script.source().contains(part),
                "{}.lua: the header lacks `{part}`",
                script.name
            );
        }
    }
}

#[tokio::test]
async fn register_lua_creates_a_user_once_per_email() {
    // Arrange
    let mut lab = Lab::new().await;
    let email = "ann@example.com";
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let call = |id: Uuid, keys: &Keys| {
        (
            vec![
                keys.user_email(email),
                keys.user(id),
                keys.users_index(),
                keys.admins(),
            ],
            strings(&[
                &id.to_string(),
                email,
                "Ann",
                "customer",
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
                "2025-01-01T00:00:00.000Z",
                &keys::created_member(1, id),
            ]),
        )
    };

    // Act
    let (k, a) = call(first, &lab.keys);
    let created = lab.run(&REGISTER, &k, &a).await;
    let (k, a) = call(second, &lab.keys);
    let refused = lab.run(&REGISTER, &k, &a).await;

    // Assert
    assert_eq!(created, Value::Array(vec![Value::Int(1)]));
    assert_eq!(texts(&value::array(refused)), ["0", &first.to_string()]);
    let user = lab.hash(&lab.keys.user(first)).await;
    assert_eq!(user["email"], email);
    assert_eq!(user["role"], "customer");
    assert_eq!(user["disabled"], "0");
    assert!(!lab.exists(&lab.keys.user(second)).await, "no second user");
    let index = lab.keys.users_index();
    assert_eq!(lab.members(&index).await, [keys::created_member(1, first)]);
}

#[tokio::test]
async fn refresh_session_lua_rotates_once_replays_a_retry_and_revokes_the_session_on_reuse() {
    // Arrange: a session whose user's session set has already expired.
    let mut lab = Lab::new().await;
    let (session, user) = (Uuid::new_v4(), Uuid::new_v4());
    let key = lab.keys.session(session);
    let set = lab.keys.user_sessions(user);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("user_id")
        .arg(user.to_string())
        .arg("refresh_hash")
        .arg("hash-1")
        .query_async(&mut lab.redis)
        .await
        .expect("HSET");
    let keys = vec![key.clone()];
    let prefix = lab.keys.user_sessions_prefix();
    // The reuse interval is the last argument; time is the master's (TIME).
    let args_within = |presented: &str, new: &str, interval_ms: &str| {
        strings(&[
            presented,
            new,
            "600",
            &prefix,
            &session.to_string(),
            interval_ms,
        ])
    };
    let args = |presented: &str, new: &str| args_within(presented, new, "60000");

    // Act
    let before = chrono::Utc::now().timestamp_millis();
    let rotated = lab
        .run(&REFRESH_SESSION, &keys, &args("hash-1", "hash-2"))
        .await;
    // A retry: the same token and so the same successor, within the interval.
    let retried = lab
        .run(&REFRESH_SESSION, &keys, &args("hash-1", "hash-2"))
        .await;
    let after_rotation = lab.hash(&key).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut lab.redis)
        .await
        .expect("TTL");
    let set_ttl: i64 = redis::cmd("TTL")
        .arg(&set)
        .query_async(&mut lab.redis)
        .await
        .expect("TTL");
    let members = lab.members(&set).await;
    // The same token once the interval is over (an interval of 0: always).
    let reused = lab
        .run(
            &REFRESH_SESSION,
            &keys,
            &args_within("hash-1", "hash-2", "0"),
        )
        .await;
    let gone = !lab.exists(&key).await;
    let missing = lab
        .run(&REFRESH_SESSION, &keys, &args("hash-2", "hash-4"))
        .await;

    // Assert
    let (tag, rest) = tagged(rotated);
    let rotated_at = texts(&rest);
    assert_eq!(
        (tag.as_str(), &rotated_at[0]),
        ("rotated", &user.to_string())
    );
    let rotated_ms: i64 = rotated_at[1].parse().expect("ms");
    assert!(
        (rotated_ms - before).abs() < 5_000,
        "the rotation is stamped with the master's clock: {rotated_ms} vs {before}"
    );
    let (tag, rest) = tagged(retried);
    assert_eq!(
        (tag.as_str(), texts(&rest)),
        ("replayed", rotated_at.clone()),
        "a retry gets the rotation it missed, not a new one"
    );
    assert_eq!(after_rotation["refresh_hash"], "hash-2");
    assert_eq!(after_rotation["previous_hash"], "hash-1");
    assert!(
        (1..=600).contains(&ttl),
        "the session lifetime is renewed: {ttl}"
    );
    assert_eq!(
        members,
        [session.to_string()],
        "the renewed session is findable by its user"
    );
    assert!(
        set_ttl >= ttl,
        "the set outlives the session: {set_ttl} < {ttl}"
    );
    assert_eq!(tagged(reused).0, "reused");
    assert!(gone, "reuse ends the session");
    assert_eq!(
        tagged(missing).0,
        "missing",
        "even the newest token is dead"
    );
}

#[tokio::test]
async fn update_user_lua_sets_fields_and_ends_the_sessions_it_is_told_to() {
    // Arrange
    let mut lab = Lab::new().await;
    let user = Uuid::new_v4();
    let sessions: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let (user_key, set_key) = (lab.keys.user(user), lab.keys.user_sessions(user));
    let _: () = redis::cmd("HSET")
        .arg(&user_key)
        .arg(&[
            ("id", user.to_string()),
            ("name", "Ann".to_owned()),
            ("disabled", "0".to_owned()),
        ])
        .query_async(&mut lab.redis)
        .await
        .expect("HSET");
    // The last session is listed as versions before the session cap did.
    let legacy_key = lab.keys.legacy_user_sessions(user);
    for (n, session) in sessions.iter().enumerate() {
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(lab.keys.session(*session))
            .arg("user_id")
            .arg(user.to_string())
            .ignore();
        if n < 2 {
            pipe.cmd("ZADD").arg(&set_key).arg(1);
        } else {
            pipe.cmd("SADD").arg(&legacy_key);
        }
        let _: () = pipe
            .arg(session.to_string())
            .ignore()
            .query_async(&mut lab.redis)
            .await
            .expect("a session");
    }
    let keys = vec![
        user_key.clone(),
        set_key.clone(),
        lab.keys.admins(),
        user_key.clone(),
        legacy_key.clone(),
    ];
    let prefix = lab.keys.session_prefix();

    // Act: a password change keeps the caller's session only.
    let others = lab
        .run(
            &UPDATE_USER,
            &keys,
            &strings(&[&prefix, "others", &sessions[1].to_string(), "name", "Ann B"]),
        )
        .await;
    let kept: Vec<bool> = {
        let mut kept = Vec::new();
        for session in &sessions {
            kept.push(lab.exists(&lab.keys.session(*session)).await);
        }
        kept
    };
    // Then a disable ends all of them.
    let all = lab
        .run(
            &UPDATE_USER,
            &keys,
            &strings(&[&prefix, "all", "", "disabled", "1"]),
        )
        .await;
    let still_kept = lab.exists(&lab.keys.session(sessions[1])).await;
    let missing_key = lab.keys.user(Uuid::new_v4());
    let missing = lab
        .run(
            &UPDATE_USER,
            &[
                missing_key.clone(),
                set_key.clone(),
                lab.keys.admins(),
                missing_key.clone(),
            ],
            &strings(&[&prefix, "none", "", "name", "Ghost"]),
        )
        .await;

    // Assert
    let (tag, rest) = tagged(others);
    assert_eq!(tag, "updated");
    assert_eq!(value::map(&rest[0])["name"], "Ann B");
    assert_eq!(kept, [false, true, false]);
    let (tag, rest) = tagged(all);
    assert_eq!(tag, "updated");
    assert_eq!(value::map(&rest[0])["disabled"], "1");
    assert!(!still_kept);
    let remaining = lab.members(&set_key).await;
    assert!(remaining.is_empty(), "{remaining:?}");
    assert_eq!(tagged(missing).0, "missing");
    assert!(
        !lab.exists(&missing_key).await,
        "no user is created by an update"
    );
}

#[tokio::test]
async fn update_user_lua_never_removes_the_last_enabled_admin() {
    // Arrange: two admins, A (made before the admins set existed: not in it) and B.
    let mut lab = Lab::new().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for id in [a, b] {
        let _: () = redis::cmd("HSET")
            .arg(lab.keys.user(id))
            .arg(&[
                ("id", id.to_string()),
                ("role", "admin".to_owned()),
                ("disabled", "0".to_owned()),
            ])
            .query_async(&mut lab.redis)
            .await
            .expect("HSET");
    }
    let by = |target: Uuid, actor: Uuid, keys: &Keys| {
        vec![
            keys.user(target),
            keys.user_sessions(target),
            keys.admins(),
            keys.user(actor),
        ]
    };
    let prefix = lab.keys.session_prefix();
    let demote = strings(&[&prefix, "none", "", "role", "customer"]);

    // Act: A demotes B, then B (acting as if still admin) demotes A.
    let first = lab.run(&UPDATE_USER, &by(b, a, &lab.keys), &demote).await;
    let second = lab.run(&UPDATE_USER, &by(a, b, &lab.keys), &demote).await;
    let disable = strings(&[&prefix, "all", "", "disabled", "1"]);
    let third = lab.run(&UPDATE_USER, &by(a, a, &lab.keys), &disable).await;

    // Assert: the first went through, the others would have left no admin.
    assert_eq!(tagged(first).0, "updated");
    assert_eq!(tagged(second).0, "last_admin");
    assert_eq!(tagged(third).0, "last_admin");
    assert_eq!(
        lab.field(&lab.keys.user(a), "role").await.as_deref(),
        Some("admin")
    );
    assert_eq!(
        lab.field(&lab.keys.user(a), "disabled").await.as_deref(),
        Some("0")
    );
    let admins: Vec<String> = redis::cmd("SMEMBERS")
        .arg(lab.keys.admins())
        .query_async(&mut lab.redis)
        .await
        .expect("SMEMBERS");
    assert_eq!(admins, [a.to_string()]);
}

#[tokio::test]
async fn create_session_lua_keeps_at_most_the_cap_ending_the_least_recently_used() {
    // Arrange: a cap of 2; one stale id whose session expired long ago.
    let mut lab = Lab::new().await;
    let user = Uuid::new_v4();
    let set = lab.keys.user_sessions(user);
    let _: () = redis::cmd("ZADD")
        .arg(&set)
        .arg(1)
        .arg("expired-long-ago")
        .query_async(&mut lab.redis)
        .await
        .expect("ZADD");
    let sessions: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let mut replies = Vec::new();

    // Act
    for session in &sessions {
        let keys = vec![lab.keys.session(*session), set.clone()];
        let args = strings(&[
            &user.to_string(),
            "refresh-hash",
            "600",
            &lab.keys.session_prefix(),
            &session.to_string(),
            "2",
        ]);
        replies.push(texts(&value::array(
            lab.run(&CREATE_SESSION, &keys, &args).await,
        )));
        // Distinct milliseconds of last use.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // Assert: the stale id left at once, the oldest session ended at the third.
    assert_eq!(
        replies,
        [["created", "0"], ["created", "0"], ["created", "1"]]
    );
    assert!(!lab.exists(&lab.keys.session(sessions[0])).await);
    assert_eq!(
        lab.field(&lab.keys.session(sessions[2]), "user_id").await,
        Some(user.to_string())
    );
    assert_eq!(
        lab.members(&set).await,
        [sessions[1].to_string(), sessions[2].to_string()]
    );
}

#[tokio::test]
async fn reserve_password_check_lua_counts_before_checking_and_spares_known_addresses() {
    // Arrange: 2 failures per account and address, 3 per address, a budget of 2.
    let mut lab = Lab::new().await;
    let account = "ann@example.com";
    async fn reserve(lab: &mut Lab, account: &str, address: &str) -> Vec<String> {
        let keys = vec![
            lab.keys.password_failures(account, address),
            lab.keys.address_failures(address),
            lab.keys.password_budget(account),
            lab.keys.known_addresses(account),
        ];
        let args = strings(&[address, "2", "3", "900", "2", "60000"]);
        texts(&value::array(
            lab.run(&RESERVE_PASSWORD_CHECK, &keys, &args).await,
        ))
    }

    // Act: two unknown addresses spend the budget; the owner's address is known.
    let first = reserve(&mut lab, account, "192.0.2.1").await;
    let second = reserve(&mut lab, account, "192.0.2.2").await;
    let third = reserve(&mut lab, account, "192.0.2.3").await;
    let passed_keys = vec![
        lab.keys.password_failures(account, "192.0.2.9"),
        lab.keys.address_failures("192.0.2.9"),
        lab.keys.known_addresses(account),
    ];
    lab.run(
        &PASSWORD_CHECK_PASSED,
        &passed_keys,
        &strings(&["192.0.2.9", "10", "3600"]),
    )
    .await;
    let owner = reserve(&mut lab, account, "192.0.2.9").await;
    lab.run(
        &PASSWORD_CHECK_PASSED,
        &passed_keys,
        &strings(&["192.0.2.9", "10", "3600"]),
    )
    .await;
    let owner_again = reserve(&mut lab, account, "192.0.2.9").await;
    let owner_third = reserve(&mut lab, account, "192.0.2.9").await;
    let owner_refused = reserve(&mut lab, account, "192.0.2.9").await;

    // Assert
    assert_eq!(first[..2], ["reserved", "unknown"]);
    assert_eq!(second[..2], ["reserved", "unknown"]);
    assert_eq!(third[..2], ["refused", "account"], "the budget is spent");
    let wait_ms: u64 = third[2].parse().expect("ms");
    assert!((1..=60_000).contains(&wait_ms), "{wait_ms}");
    assert_eq!(
        owner,
        ["reserved", "known"],
        "the budget never refuses a known address"
    );
    assert_eq!(
        owner_again,
        ["reserved", "known"],
        "a success forgave the reservation"
    );
    assert_eq!(owner_third, ["reserved", "known"]);
    assert_eq!(
        owner_refused[..2],
        ["refused", "address"],
        "2 unreported checks count as failures"
    );
    let failures = lab
        .field_value(&lab.keys.address_failures("192.0.2.9"))
        .await;
    assert_eq!(failures.as_deref(), Some("2"));

    // A check that reached no verdict is given back.
    let release_keys = vec![
        lab.keys.password_failures(account, "192.0.2.9"),
        lab.keys.address_failures("192.0.2.9"),
    ];
    let released = lab.run(&RELEASE_PASSWORD_CHECK, &release_keys, &[]).await;
    assert_eq!(texts(&value::array(released)), ["released"]);
    assert_eq!(
        reserve(&mut lab, account, "192.0.2.9").await,
        ["reserved", "known"]
    );

    // Others behind the owner's address (a NAT) spend its address-wide
    // allowance: the owner's account is not refused there, another is.
    lab.run(&RELEASE_PASSWORD_CHECK, &release_keys, &[]).await;
    let _: () = redis::cmd("SET")
        .arg(lab.keys.address_failures("192.0.2.9"))
        .arg(3)
        .arg("EX")
        .arg(900)
        .query_async(&mut lab.redis)
        .await
        .expect("SET");
    assert_eq!(
        reserve(&mut lab, account, "192.0.2.9").await,
        ["reserved", "known"]
    );
    assert_eq!(
        reserve(&mut lab, "bob@example.com", "192.0.2.9").await[..2],
        ["refused", "address"]
    );
}

#[tokio::test]
async fn take_write_token_lua_allows_a_burst_then_one_per_refill_interval() {
    // Arrange: bursts of 3, one token back every second.
    let mut lab = Lab::new().await;
    let keys = vec![lab.keys.write_bucket(Uuid::new_v4())];
    let args = strings(&["3", "1000"]);

    // Act
    let mut burst = Vec::new();
    for _ in 0..4 {
        burst.push(texts(&value::array(
            lab.run(&TAKE_WRITE_TOKEN, &keys, &args).await,
        )));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let after_refill = texts(&value::array(
        lab.run(&TAKE_WRITE_TOKEN, &keys, &args).await,
    ));
    let again = texts(&value::array(
        lab.run(&TAKE_WRITE_TOKEN, &keys, &args).await,
    ));

    // Assert
    assert_eq!(burst[..3], [["taken"], ["taken"], ["taken"]]);
    assert_eq!(burst[3][0], "limited");
    let wait_ms: u64 = burst[3][1].parse().expect("ms");
    assert!((1..=1000).contains(&wait_ms), "{wait_ms}");
    assert_eq!(after_refill, ["taken"]);
    assert_eq!(again[0], "limited");
}

#[tokio::test]
async fn create_product_lua_keeps_skus_unique_and_lists_the_product_in_four_indexes() {
    // Arrange
    let mut lab = Lab::new().await;
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());

    // Act
    let created = lab.create_product(first, "MUG-1", 500, 3, "kitchen").await;
    let refused = lab.create_product(second, "MUG-1", 900, 3, "tea").await;

    // Assert
    assert_eq!(created, Value::Array(vec![Value::Int(1)]));
    assert_eq!(texts(&value::array(refused)), ["0", &first.to_string()]);
    assert!(!lab.exists(&lab.keys.product(second)).await);
    assert_eq!(
        lab.hash(&lab.keys.product(first)).await["price_cents"],
        "500"
    );
    for (order, category, member) in [
        (
            ProductOrder::Created,
            None,
            keys::created_member(1_000, first),
        ),
        (ProductOrder::Price, None, keys::price_member(500, first)),
        (
            ProductOrder::Created,
            Some("kitchen"),
            keys::created_member(1_000, first),
        ),
        (
            ProductOrder::Price,
            Some("kitchen"),
            keys::price_member(500, first),
        ),
    ] {
        let index = lab.keys.products_index(order, category);
        assert_eq!(lab.members(&index).await, [member], "{index}");
    }
    for order in [ProductOrder::Created, ProductOrder::Price] {
        let index = lab.keys.products_index(order, Some("tea"));
        assert!(lab.members(&index).await.is_empty(), "{index}");
    }
}

#[tokio::test]
async fn update_product_lua_refuses_a_stale_version_and_moves_the_indexes() {
    // Arrange
    let mut lab = Lab::new().await;
    let id = lab.product(100, 5, "tea").await;
    let index = |lab: &Lab, order, category: Option<&str>| lab.keys.products_index(order, category);
    let keys = vec![
        lab.keys.product(id),
        index(&lab, ProductOrder::Price, None),
        index(&lab, ProductOrder::Created, Some("tea")),
        index(&lab, ProductOrder::Price, Some("tea")),
        index(&lab, ProductOrder::Created, Some("coffee")),
        index(&lab, ProductOrder::Price, Some("coffee")),
    ];
    let args = |version: &str| {
        strings(&[
            version,
            &keys::price_member(100, id),
            &keys::price_member(250, id),
            &keys::created_member(1_000, id),
            "2025-01-02T00:00:00.000Z",
            "price_cents",
            "250",
            "category",
            "coffee",
        ])
    };

    // Act
    let updated = lab.run(&UPDATE_PRODUCT, &keys, &args("1")).await;
    let stale = lab.run(&UPDATE_PRODUCT, &keys, &args("1")).await;
    let mut missing_keys = keys.clone();
    missing_keys[0] = lab.keys.product(Uuid::new_v4());
    let missing = lab.run(&UPDATE_PRODUCT, &missing_keys, &args("1")).await;

    // Assert
    let (tag, rest) = tagged(updated);
    assert_eq!(tag, "ok");
    let fields = value::map(&rest[0]);
    assert_eq!(
        (
            fields["version"].as_str(),
            fields["price_cents"].as_str(),
            fields["category"].as_str()
        ),
        ("2", "250", "coffee")
    );
    let (tag, rest) = tagged(stale);
    assert_eq!(
        (tag.as_str(), texts(&rest)),
        ("version", vec!["2".to_owned()])
    );
    assert_eq!(
        lab.field(&keys[0], "price_cents").await.as_deref(),
        Some("250"),
        "the stale write changed nothing"
    );
    assert_eq!(lab.members(&keys[1]).await, [keys::price_member(250, id)]);
    assert!(lab.members(&keys[2]).await.is_empty());
    assert!(lab.members(&keys[3]).await.is_empty());
    assert_eq!(
        lab.members(&keys[4]).await,
        [keys::created_member(1_000, id)]
    );
    assert_eq!(lab.members(&keys[5]).await, [keys::price_member(250, id)]);
    assert_eq!(tagged(missing).0, "missing");
    assert!(!lab.exists(&missing_keys[0]).await);
    // An archived product is refused even at the right version.
    let _: () = redis::cmd("HSET")
        .arg(&keys[0])
        .arg("archived")
        .arg("1")
        .query_async(&mut lab.redis)
        .await
        .expect("HSET");
    assert_eq!(
        tagged(lab.run(&UPDATE_PRODUCT, &keys, &args("2")).await).0,
        "archived"
    );
}

#[tokio::test]
async fn archive_product_lua_removes_the_product_from_every_index_once() {
    // Arrange
    let mut lab = Lab::new().await;
    let id = lab.product(700, 2, "tea").await;
    let keys = vec![
        lab.keys.product(id),
        lab.keys.products_index(ProductOrder::Created, None),
        lab.keys.products_index(ProductOrder::Price, None),
        lab.keys.products_index(ProductOrder::Created, Some("tea")),
        lab.keys.products_index(ProductOrder::Price, Some("tea")),
    ];
    let args = |version: &str| {
        strings(&[
            version,
            &keys::created_member(1_000, id),
            &keys::price_member(700, id),
            "2025-01-03T00:00:00.000Z",
        ])
    };

    // Act
    let stale = lab.run(&ARCHIVE_PRODUCT, &keys, &args("7")).await;
    let still_listed = lab.members(&keys[1]).await.len();
    let archived = lab.run(&ARCHIVE_PRODUCT, &keys, &args("1")).await;
    let again = lab.run(&ARCHIVE_PRODUCT, &keys, &args("2")).await;
    let mut missing_keys = keys.clone();
    missing_keys[0] = lab.keys.product(Uuid::new_v4());
    let missing = lab.run(&ARCHIVE_PRODUCT, &missing_keys, &args("1")).await;

    // Assert
    let (tag, rest) = tagged(stale);
    assert_eq!(
        (tag.as_str(), texts(&rest)),
        ("version", vec!["1".to_owned()])
    );
    assert_eq!(still_listed, 1, "a stale archive changes nothing");
    let (tag, rest) = tagged(archived);
    assert_eq!(tag, "ok");
    let fields = value::map(&rest[0]);
    assert_eq!(
        (fields["archived"].as_str(), fields["version"].as_str()),
        ("1", "2")
    );
    let (tag, rest) = tagged(again);
    assert_eq!(tag, "ok");
    assert_eq!(
        value::map(&rest[0])["version"],
        "2",
        "archiving twice does not bump the version"
    );
    for index in &keys[1..] {
        assert!(lab.members(index).await.is_empty(), "{index}");
    }
    assert_eq!(
        lab.hash(&keys[0]).await["stock"],
        "2",
        "the product stays readable"
    );
    assert_eq!(tagged(missing).0, "missing");
}

#[tokio::test]
async fn stock_delta_lua_never_goes_below_zero_nor_above_the_maximum_and_applies_a_key_once() {
    // Arrange
    let mut lab = Lab::new().await;
    let id = lab.product(100, 5, "tea").await;
    let admin = Uuid::new_v4();
    let keys = lab.keys.clone();
    let keyed = |key: &str| vec![keys.product(id), keys.stock_idempotency(admin, key)];
    let delta = |d: &str| {
        strings(&[
            d,
            "10",
            "2025-01-04T00:00:00.000Z",
            &format!("fp{d}"),
            "600",
        ])
    };
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        keyed(&format!("key-{n}"))
    };

    // Act + Assert
    let (tag, rest) = tagged(lab.run(&STOCK_DELTA, &keyed("a"), &delta("3")).await);
    assert_eq!(
        (tag.as_str(), value::map(&rest[0])["stock"].as_str()),
        ("ok", "8")
    );
    let first = value::map(&rest[0]);
    let (tag, rest) = tagged(lab.run(&STOCK_DELTA, &keyed("a"), &delta("3")).await);
    assert_eq!(
        (tag.as_str(), value::map(&rest[0])),
        ("replayed", first),
        "the same key and request: the first outcome, not a second delta"
    );
    assert_eq!(lab.stock(id).await, 8);
    assert_eq!(
        tagged(lab.run(&STOCK_DELTA, &keyed("a"), &delta("2")).await).0,
        "key_reused"
    );
    let (tag, rest) = tagged(lab.run(&STOCK_DELTA, &fresh(), &delta("-9")).await);
    assert_eq!(
        (tag.as_str(), texts(&rest)),
        ("insufficient", vec!["8".to_owned()])
    );
    assert_eq!(lab.stock(id).await, 8);
    let (tag, rest) = tagged(lab.run(&STOCK_DELTA, &fresh(), &delta("3")).await);
    assert_eq!(
        (tag.as_str(), texts(&rest)),
        ("too_large", vec!["8".to_owned()])
    );
    assert_eq!(lab.stock(id).await, 8);
    let (tag, rest) = tagged(lab.run(&STOCK_DELTA, &fresh(), &delta("-8")).await);
    assert_eq!(
        (tag.as_str(), value::map(&rest[0])["stock"].as_str()),
        ("ok", "0")
    );
    assert_eq!(
        tagged(lab.run(&STOCK_DELTA, &fresh(), &delta("-1")).await).0,
        "insufficient"
    );
    assert_eq!(lab.stock(id).await, 0);
    let missing = vec![
        keys.product(Uuid::new_v4()),
        keys.stock_idempotency(admin, "m"),
    ];
    assert_eq!(
        tagged(lab.run(&STOCK_DELTA, &missing, &delta("1")).await).0,
        "missing"
    );
    assert!(
        !lab.exists(&missing[0]).await,
        "no product is created by a delta"
    );
    assert!(
        !lab.exists(&missing[1]).await,
        "a refused delta does not use its key up"
    );
}

/// KEYS and ARGV of `purchase.lua` for one order.
fn purchase_call(
    lab: &Lab,
    user: Uuid,
    key: &str,
    fingerprint: &str,
    now_ms: i64,
    purchase: Uuid,
    lines: &[(Uuid, u32)],
) -> (Vec<String>, Vec<String>) {
    let mut keys = vec![
        lab.keys.idempotency(user, key),
        lab.keys.purchase(purchase),
        lab.keys.purchase_log(),
        lab.keys.user_purchases(user),
        lab.keys.write_bucket(user),
    ];
    keys.extend(lines.iter().map(|(product, _)| lab.keys.product(*product)));
    let mut args = strings(&[
        fingerprint,
        &now_ms.to_string(),
        "10000",
        "86400",
        &purchase.to_string(),
        &user.to_string(),
        "USD",
        "2025-01-05T00:00:00.000Z",
        &keys::created_member(now_ms, purchase),
        // A write bucket no test here empties but the one that means to.
        "100",
        "1",
    ]);
    for (product, quantity) in lines {
        args.push(product.to_string());
        args.push(quantity.to_string());
    }
    (keys, args)
}

#[tokio::test]
async fn purchase_lua_takes_every_line_or_none_and_once_per_key() {
    // Arrange
    let mut lab = Lab::new().await;
    let (tea, cup) = (
        lab.product(100, 10, "tea").await,
        lab.product(250, 1, "tea").await,
    );
    let user = Uuid::new_v4();
    let (refused_id, bought_id, replay_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    // Act: an order the second line cannot serve.
    let (k, a) = purchase_call(
        &lab,
        user,
        "key-1",
        "fp-1",
        1_000,
        refused_id,
        &[(tea, 2), (cup, 2)],
    );
    let refused = lab.run(&PURCHASE, &k, &a).await;

    // Assert: refused, naming the line, and nothing written at all.
    let (tag, rest) = tagged(refused);
    assert_eq!(
        (tag.as_str(), texts(&rest)),
        ("insufficient", vec![cup.to_string(), "1".to_owned()])
    );
    assert_eq!((lab.stock(tea).await, lab.stock(cup).await), (10, 1));
    assert!(!lab.exists(&k[0]).await, "no idempotency record");
    assert!(!lab.exists(&k[1]).await, "no purchase");
    assert!(lab.members(&k[3]).await.is_empty());

    // Act: an order that fits, under a key.
    let (k, a) = purchase_call(
        &lab,
        user,
        "key-1",
        "fp-2",
        2_000,
        bought_id,
        &[(tea, 2), (cup, 1)],
    );
    let created = lab.run(&PURCHASE, &k, &a).await;

    // Assert
    let (tag, rest) = tagged(created);
    assert_eq!(tag, "created");
    let fields = value::map(&rest[0]);
    assert_eq!(
        (fields["total_cents"].as_str(), fields["status"].as_str()),
        ("450", "completed")
    );
    assert_eq!((lab.stock(tea).await, lab.stock(cup).await), (8, 0));
    assert_eq!(
        lab.field_value(&k[0]).await,
        Some(format!("pending|2000|{bought_id}|fp-2")),
        "the idempotency record is one string"
    );
    assert_eq!(lab.log(&k[2]).await, [bought_id.to_string()]);
    let key_ttl: i64 = redis::cmd("TTL")
        .arg(&k[0])
        .query_async(&mut lab.redis)
        .await
        .expect("TTL");
    assert!(
        (86_000..=86_400).contains(&key_ttl),
        "the record lives as long as the TTL passed (86400 s): {key_ttl}"
    );
    assert_eq!(
        lab.members(&k[3]).await,
        [keys::created_member(2_000, bought_id)]
    );

    // Act + Assert: the same key again, inside then after the in-flight window,
    // and with another body.
    let (k, a) = purchase_call(
        &lab,
        user,
        "key-1",
        "fp-2",
        3_000,
        replay_id,
        &[(tea, 2), (cup, 1)],
    );
    assert_eq!(tagged(lab.run(&PURCHASE, &k, &a).await).0, "in_flight");
    let (k, a) = purchase_call(
        &lab,
        user,
        "key-1",
        "fp-2",
        20_000,
        replay_id,
        &[(tea, 2), (cup, 1)],
    );
    let (tag, rest) = tagged(lab.run(&PURCHASE, &k, &a).await);
    assert_eq!(
        (tag.as_str(), value::map(&rest[0])["id"].clone()),
        ("replayed", bought_id.to_string())
    );
    let (k, a) = purchase_call(&lab, user, "key-1", "fp-3", 20_000, replay_id, &[(tea, 1)]);
    assert_eq!(tagged(lab.run(&PURCHASE, &k, &a).await).0, "key_reused");
    assert!(!lab.exists(&lab.keys.purchase(replay_id)).await);
    assert_eq!(
        (lab.stock(tea).await, lab.stock(cup).await),
        (8, 0),
        "one key, one purchase"
    );

    // Unknown and archived products are named.
    let ghost = Uuid::new_v4();
    let (k, a) = purchase_call(
        &lab,
        user,
        "key-2",
        "fp-4",
        30_000,
        Uuid::new_v4(),
        &[(tea, 1), (ghost, 1)],
    );
    let (tag, rest) = tagged(lab.run(&PURCHASE, &k, &a).await);
    assert_eq!(
        (tag.as_str(), texts(&rest)),
        ("not_found", vec![ghost.to_string()])
    );
    let _: () = redis::cmd("HSET")
        .arg(lab.keys.product(tea))
        .arg("archived")
        .arg("1")
        .query_async(&mut lab.redis)
        .await
        .expect("HSET");
    let (k, a) = purchase_call(
        &lab,
        user,
        "key-3",
        "fp-5",
        30_000,
        Uuid::new_v4(),
        &[(tea, 1)],
    );
    let (tag, rest) = tagged(lab.run(&PURCHASE, &k, &a).await);
    assert_eq!(
        (tag.as_str(), texts(&rest)),
        ("archived", vec![tea.to_string()])
    );
    assert_eq!(lab.stock(tea).await, 8);
}

#[tokio::test]
async fn purchase_lua_refuses_an_order_once_the_buyers_write_bucket_is_empty_and_writes_nothing() {
    // Arrange: a bucket of 2 writes, one back an hour.
    let mut lab = Lab::new().await;
    let tea = lab.product(100, 10, "tea").await;
    let user = Uuid::new_v4();
    let call = |key: &str, now_ms: i64, id: Uuid| {
        let (k, mut a) = purchase_call(&lab, user, key, "fp", now_ms, id, &[(tea, 1)]);
        (a[9], a[10]) = ("2".to_owned(), "3600000".to_owned());
        (k, a)
    };
    let (first, second, third) = (
        call("k1", 1_000, Uuid::new_v4()),
        call("k2", 2_000, Uuid::new_v4()),
        call("k3", 3_000, Uuid::new_v4()),
    );

    // Act
    let mut tags = Vec::new();
    for (k, a) in [&first, &second, &third] {
        tags.push(tagged(lab.run(&PURCHASE, k, a).await));
    }

    // Assert: two bought, the third refused with the wait, nothing of it written.
    assert_eq!(
        (tags[0].0.as_str(), tags[1].0.as_str()),
        ("created", "created")
    );
    let (tag, rest) = &tags[2];
    assert_eq!(tag, "limited");
    let wait_ms: u64 = texts(rest)[0].parse().expect("ms");
    assert!((1..=3_600_000).contains(&wait_ms), "{wait_ms}");
    assert_eq!(lab.stock(tea).await, 8);
    assert!(!lab.exists(&third.0[0]).await, "no idempotency record");
    assert!(!lab.exists(&third.0[1]).await, "no purchase");
    assert_eq!(lab.members(&third.0[3]).await.len(), 2);
}

#[tokio::test]
async fn settle_purchase_key_lua_settles_a_pending_record_and_never_creates_one() {
    // Arrange: a purchase whose record is pending, and a key that bought nothing.
    let mut lab = Lab::new().await;
    let tea = lab.product(100, 10, "tea").await;
    let user = Uuid::new_v4();
    let (k, a) = purchase_call(&lab, user, "key", "fp", 1_000, Uuid::new_v4(), &[(tea, 1)]);
    assert_eq!(tagged(lab.run(&PURCHASE, &k, &a).await).0, "created");
    let nothing = lab.keys.idempotency(user, "bought-nothing");
    let completed = strings(&["completed"]);

    // Act
    let settled = lab.run(&SETTLE_PURCHASE_KEY, &k[..1], &completed).await;
    let absent = lab
        .run(
            &SETTLE_PURCHASE_KEY,
            std::slice::from_ref(&nothing),
            &completed,
        )
        .await;

    // Assert: settled, so the same order replays at once inside the window.
    assert_eq!((settled, absent), (Value::Int(1), Value::Int(0)));
    assert!(
        lab.field_value(&k[0])
            .await
            .is_some_and(|record| record.starts_with("completed|1000|")),
        "settled"
    );
    assert!(!lab.exists(&nothing).await, "no record made up");
    let (k, a) = purchase_call(&lab, user, "key", "fp", 2_000, Uuid::new_v4(), &[(tea, 1)]);
    assert_eq!(tagged(lab.run(&PURCHASE, &k, &a).await).0, "replayed");
    assert_eq!(lab.stock(tea).await, 9);
}

#[tokio::test]
async fn purchase_lua_still_honours_an_idempotency_record_in_the_hash_layout_written_before() {
    // Arrange: a purchase made, then its record rewritten as versions before
    // the one-string record kept it (a hash), still pending.
    let mut lab = Lab::new().await;
    let tea = lab.product(100, 10, "tea").await;
    let (user, bought) = (Uuid::new_v4(), Uuid::new_v4());
    let (k, a) = purchase_call(&lab, user, "old", "fp", 1_000, bought, &[(tea, 1)]);
    assert_eq!(tagged(lab.run(&PURCHASE, &k, &a).await).0, "created");
    let _: () = redis::pipe()
        .cmd("DEL")
        .arg(&k[0])
        .cmd("HSET")
        .arg(&k[0])
        .arg("fingerprint")
        .arg("fp")
        .arg("state")
        .arg("pending")
        .arg("created_ms")
        .arg(1_000)
        .arg("purchase_key")
        .arg(lab.keys.purchase(bought))
        .cmd("EXPIRE")
        .arg(&k[0])
        .arg(86_400)
        .query_async(&mut lab.redis)
        .await
        .expect("old record");
    let again = |now_ms: i64, fingerprint: &str| {
        purchase_call(
            &lab,
            user,
            "old",
            fingerprint,
            now_ms,
            Uuid::new_v4(),
            &[(tea, 1)],
        )
    };
    let (pending, other_body, settled_retry) = (
        again(2_000, "fp"),
        again(2_000, "other"),
        again(2_500, "fp"),
    );

    // Act + Assert: in flight inside the window, refused with another body,
    // settled by settle_purchase_key.lua, then replayed with the original.
    let (k2, a2) = pending;
    assert_eq!(tagged(lab.run(&PURCHASE, &k2, &a2).await).0, "in_flight");
    let (k2, a2) = other_body;
    assert_eq!(tagged(lab.run(&PURCHASE, &k2, &a2).await).0, "key_reused");
    let settled = lab
        .run(&SETTLE_PURCHASE_KEY, &k[..1], &strings(&["completed"]))
        .await;
    assert_eq!(settled, Value::Int(1));
    assert_eq!(
        lab.field(&k[0], "state").await.as_deref(),
        Some("completed")
    );
    let (k2, a2) = settled_retry;
    let (tag, rest) = tagged(lab.run(&PURCHASE, &k2, &a2).await);
    assert_eq!(
        (tag.as_str(), value::map(&rest[0])["id"].clone()),
        ("replayed", bought.to_string())
    );
    assert_eq!(lab.stock(tea).await, 9, "one purchase for the key");
    let ttl: i64 = redis::cmd("TTL")
        .arg(&k[0])
        .query_async(&mut lab.redis)
        .await
        .expect("TTL");
    assert!(ttl > 86_000, "the old record keeps its lifetime: {ttl}");
}

#[tokio::test]
async fn cancel_lua_restocks_exactly_once_and_replays_to_the_session_that_cancelled() {
    // Arrange: a purchase of 3 teas and 1 cup made by purchase.lua.
    let mut lab = Lab::new().await;
    let (tea, cup) = (
        lab.product(100, 10, "tea").await,
        lab.product(250, 5, "tea").await,
    );
    let (user, purchase) = (Uuid::new_v4(), Uuid::new_v4());
    let (k, a) = purchase_call(
        &lab,
        user,
        "key",
        "fp",
        1_000,
        purchase,
        &[(tea, 3), (cup, 1)],
    );
    assert_eq!(tagged(lab.run(&PURCHASE, &k, &a).await).0, "created");
    let items: Vec<serde_json::Value> =
        serde_json::from_str(&lab.field(&k[1], "items").await.expect("items")).expect("JSON items");
    let mut keys = vec![lab.keys.purchase(purchase)];
    keys.extend(items.iter().map(|item| {
        lab.keys.product(
            item["product_id"]
                .as_str()
                .expect("id")
                .parse()
                .expect("uuid"),
        )
    }));
    let at = strings(&["2025-01-06T00:00:00.000Z", "session-1"]);
    let elsewhere = strings(&["2025-01-06T00:00:01.000Z", "session-2"]);

    // Act
    let mut wrong = keys.clone();
    wrong.swap(1, 2);
    let mismatch = lab.run(&CANCEL, &wrong, &at).await;
    let first = lab.run(&CANCEL, &keys, &at).await;
    let retried = lab.run(&CANCEL, &keys, &at).await;
    let second = lab.run(&CANCEL, &keys, &elsewhere).await;
    let missing = lab
        .run(
            &CANCEL,
            &[lab.keys.purchase(Uuid::new_v4()), keys[1].clone()],
            &at,
        )
        .await;

    // Assert
    assert_eq!(tagged(mismatch).0, "mismatch");
    let (tag, rest) = tagged(first);
    assert_eq!(tag, "cancelled");
    let cancelled = value::map(&rest[0]);
    assert_eq!(cancelled["status"], "cancelled");
    let (tag, rest) = tagged(retried);
    assert_eq!(
        (tag.as_str(), value::map(&rest[0])),
        ("replayed", cancelled),
        "the session that cancelled gets the cancelled purchase again"
    );
    assert_eq!(tagged(second).0, "already_cancelled");
    assert_eq!(tagged(missing).0, "missing");
    assert_eq!(
        (lab.stock(tea).await, lab.stock(cup).await),
        (10, 5),
        "restocked once"
    );
}
