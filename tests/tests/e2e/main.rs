//! End-to-end tests: each test starts its own Redis HA topology (master, two
//! replicas, three Sentinels) and API instances on loopback, and talks HTTP.

mod auth;
mod concurrency;
mod data_tier;
mod errors;
mod failover;
mod gateway;
mod loadgen;
mod lua_scripts;
mod monitoring;
mod operations;
mod partitions;
mod products;
mod purchases;
mod safe_retries;
mod schemathesis_findings;
mod security;
mod support;
mod users;
