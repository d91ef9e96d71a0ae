//! End-to-end tests: API instances on loopback over a real Redis HA topology
//! (master, two replicas, three Sentinels), talking HTTP. Tests that break
//! nothing share one topology when scripts/test provides it (each under its
//! own key prefix); tests that break Redis start their own.

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
