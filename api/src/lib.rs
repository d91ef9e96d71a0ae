//! Evergreen: a store backend (users, products, purchases) whose state lives
//! entirely in Redis behind Sentinel, so any number of identical instances can
//! serve behind nginx and ride out a Redis failover.
//!
//! Map of the crate:
//! - [`startup`]: `Application` (listeners, servers), the route table.
//! - [`state`]: `AppState`, shared by every worker, and the stores it hands out.
//! - [`config`]: layered, validated settings.
//! - [`error`]: `ApiError`, the only place statuses are chosen (problem+json).
//! - [`redis`]: Sentinel-following pools, key names, Lua scripts.
//! - [`auth`], [`users`], [`products`], [`purchases`]: one folder per resource:
//!   `configure` (routes), handlers, model, store.
//! - [`idempotency`], [`if_match`]: the `Idempotency-Key` of writes that must
//!   not repeat, the `If-Match` of writes that must not overwrite.
//! - [`write_limits`], [`auth::throttle`], [`client_address`]: per-user write
//!   limits, password-check throttling, and the client address it counts.
//! - [`body`], [`pagination`], [`validation`]: reading and checking requests.
//! - [`telemetry`], [`metrics`], [`health`], [`openapi`].

// The Redis read path nests a few async fns (bounded -> read -> replicas ->
// run); rustc's layout query of a handler's future goes deeper than the
// default 128.
#![recursion_limit = "256"]

pub mod auth;
pub mod body;
pub mod bootstrap;
pub mod client_address;
pub mod config;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod if_match;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod products;
pub mod purchases;
pub mod redis;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod users;
pub mod validation;
pub mod write_limits;
