//! End-to-end harness for Evergreen: real Redis, Sentinels and API instances on
//! loopback.
//!
//! - [`redis_ha`]: a master, two replicas and three Sentinels from the shipped `redis/` templates.
//! - [`app`]: API instances on top of it, each built like production (in-process).
//! - [`gateway`]: nginx, a DNS server and API replicas as real processes.
//! - [`kubernetes`]: the Kubernetes manifests as `kubectl kustomize` renders an overlay.
//! - [`lab`]: network namespaces for partition tests without Docker.
//! - [`client`]: one method per endpoint, plus assertion helpers.
//! - [`monitoring`]: Prometheus, Alertmanager and the exporters from the shipped `prometheus/` files.
//! - [`traffic`]: buyers and readers that run through a fault and record what they saw.
//! - [`scenario`]: traffic against two API instances through a fault, and the verdict failure tests share.
//! - [`wait`]: polling with a deadline (never fixed sleeps) and free ports.

pub mod app;
pub mod child;
pub mod client;
pub mod gateway;
pub mod kubernetes;
pub mod lab;
pub mod monitoring;
pub mod redis_ha;
pub mod scenario;
pub mod traffic;
pub mod wait;
