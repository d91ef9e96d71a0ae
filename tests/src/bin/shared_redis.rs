//! `shared-redis FILE`: starts the shipped Redis topology (master, two
//! replicas, three Sentinels), writes its description to FILE for the tests
//! that share it (`EVERGREEN_SHARED_REDIS=FILE`, see
//! `RedisHa::shared`), and keeps it running until its standard input closes
//! or it is killed; then every node goes with it. `scripts/test` runs it
//! around the tests.

use std::io::Read as _;

use evergreen_tests::redis_ha::{RedisHa, RedisHaOptions};

#[tokio::main]
async fn main() {
    let Some(file) = std::env::args_os().nth(1) else {
        eprintln!("usage: shared-redis FILE");
        std::process::exit(2);
    };
    // Nothing may fail it over: a 2 s down-after (the failover tests') could
    // trip on a stall of the busy two-core machine and move the master
    // under every test that shares it.
    let redis = RedisHa::start(RedisHaOptions {
        down_after_ms: 60_000,
        ..RedisHaOptions::default()
    })
    .await;
    // Written beside and renamed: a reader never sees half a description.
    let partial = std::path::PathBuf::from(&file).with_extension("partial");
    std::fs::write(&partial, redis.description().to_string()).expect("the description is written");
    std::fs::rename(&partial, &file).expect("the description is in place");
    // Until the script closes our stdin. Killed instead, the nodes still
    // go: each is started to die with its parent (tests/src/child.rs).
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    drop(redis);
}
