//! End-to-end tests: each test starts its own Redis HA topology (master, two
//! replicas, three Sentinels) and API instances on loopback, and talks HTTP.

mod smoke;
