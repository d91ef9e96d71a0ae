//! Tools over the shipped stack, apart from the tests: each binary in
//! `src/bin` is driven by a script in `scripts/`.
//!
//! - `docker-check` (`scripts/docker-check`): the real `docker-compose.yml`, broken under traffic.
//! - `pod-check` (`scripts/docker-check`): the Kubernetes dev overlay as pods on Docker, broken the same way.
//! - `bench` (`scripts/bench`): the native stack under wrk, redis-benchmark and loadgen.
//! - `fuzz` (`scripts/fuzz`): schemathesis against the API through nginx.
//!
//! The library holds what only they need; the harness they build on is
//! `evergreen-tests`.
//!
//! - [`compose`]: the real `docker-compose.yml` as a throw-away project.
//! - [`pods`]: a rendered overlay's pods as Docker containers, with cluster DNS and Service VIPs.

pub mod compose;
pub mod pods;
