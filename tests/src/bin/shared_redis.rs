//! `shared-redis FILE`: starts the shipped Redis topology (master, two
//! replicas, three Sentinels), writes its description to FILE for the tests
//! that share it (`EVERGREEN_SHARED_REDIS=FILE`, see
//! `RedisHa::shared`), and keeps it running until its standard input closes
//! or it is killed; then every node goes with it. `scripts/test` runs it
//! around the tests.

use std::io::Read as _;

use evergreen_tests::redis_ha::RedisHa;

#[tokio::main]
async fn main() {
    let Some(file) = std::env::args_os().nth(1) else {
        eprintln!("usage: shared-redis FILE");
        std::process::exit(2);
    };
    let redis = RedisHa::start(Default::default()).await;
    // Written beside and renamed: a reader never sees half a description.
    let partial = std::path::PathBuf::from(&file).with_extension("partial");
    std::fs::write(&partial, redis.description().to_string()).expect("the description is written");
    std::fs::rename(&partial, &file).expect("the description is in place");
    // Until the script closes our stdin (or kills us; the nodes then die
    // with their process group's shell, or are found by the next run's ports).
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    drop(redis);
}
