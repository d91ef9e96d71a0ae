//! The `Redis` handle: a pool of connections to the master (writes) and one to
//! the replicas (reads that tolerate replication lag), both following the
//! Sentinel [`Watcher`].
//!
//! Guarantees, each needed by a failure measured with a stock Sentinel pool
//! (deadpool-redis: 1,650 of 4,032 acknowledged writes lost when the pool sat
//! idle through a failover, 2,029 of 7,331 in a graceful one):
//! - a connection is tagged with the topology epoch it was made in and is never
//!   handed out after the master (or the replica set) changed, so an idle pool
//!   cannot write to a demoted master;
//! - every command is bounded by the connect and response timeouts;
//! - a confirmed write is followed by `WAIT <healthy replicas>`; fewer acks mean
//!   the write is only reported as a success when every Sentinel still names
//!   the same master with no failover in progress.
//!
//! By concern: [`manager`] makes and tags connections, [`read`] and [`write`]
//! run operations by intent, [`admission`] refuses them at once while this
//! instance is cut off from Redis.

mod admission;
mod manager;
mod read;
mod write;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool::managed::{Object, Pool};
use redis::{FromRedisValue, Pipeline};

use self::manager::{NodeManager, NodePool, Role, connection_manager_epoch, pool_error};
use super::RedisError;
use super::poisons_connection;
use super::sentinel::{Connector, NodeAddr, Sentinels, Watcher};
use crate::config::RedisSettings;
use crate::metrics::Metrics;

/// Cheap to clone; one per process, shared by every worker.
#[derive(Clone)]
pub struct Redis {
    master: NodePool,
    replicas: NodePool,
    watcher: Arc<Watcher>,
    metrics: Metrics,
    ack_timeout: Duration,
    /// Bound on one whole operation: pool wait, connect, retry, WAIT, Sentinel check.
    operation_timeout: Duration,
    read_from_replicas: bool,
    /// When the master last failed an operation, in ms since `started`; 0 when
    /// it has not failed since the last master change.
    master_failed_at_ms: Arc<AtomicU64>,
    /// Set while one operation probes the master for an instance that is
    /// cut off ([`Redis::admit`]).
    probing: Arc<AtomicBool>,
    /// When the last probe started, in ms since `started`.
    last_probe_ms: Arc<AtomicU64>,
    started: Instant,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redis")
            .field("watcher", &self.watcher)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Builds the pools and spawns the Sentinel watcher on the current runtime.
    /// Does not wait for Redis: readiness reports when a master is reachable.
    pub fn start(settings: &RedisSettings, metrics: Metrics) -> Self {
        let connector = Connector::new(settings);
        let sentinels = Arc::new(Sentinels::new(settings, connector.clone()));
        let watcher = Arc::new(Watcher::new(
            sentinels,
            Duration::from_millis(settings.sentinel_poll_interval_ms),
            metrics.clone(),
        ));
        let pool = |role| {
            let manager = NodeManager {
                role,
                watcher: watcher.clone(),
                connector: connector.clone(),
                next_replica: AtomicUsize::new(0),
            };
            Pool::builder(manager)
                .max_size(settings.pool_max_size)
                .wait_timeout(Some(Duration::from_millis(settings.pool_wait_timeout_ms)))
                .create_timeout(Some(
                    settings.connect_timeout() + settings.command_timeout(),
                ))
                .recycle_timeout(Some(Duration::from_millis(100)))
                .runtime(deadpool::Runtime::Tokio1)
                .build()
                .expect("pool settings are validated and a runtime is set")
        };
        let redis = Self {
            master: pool(Role::Master),
            replicas: pool(Role::Replica),
            watcher: watcher.clone(),
            metrics,
            ack_timeout: Duration::from_millis(settings.replica_ack_timeout_ms),
            operation_timeout: Duration::from_millis(settings.operation_timeout_ms),
            read_from_replicas: settings.read_from_replicas,
            master_failed_at_ms: Arc::default(),
            probing: Arc::default(),
            last_probe_ms: Arc::default(),
            started: Instant::now(),
        };
        let (master, replicas) = (redis.master.clone(), redis.replicas.clone());
        let master_failed_at_ms = redis.master_failed_at_ms.clone();
        let (mut master_epoch, mut replicas_epoch) = (0, 0);
        tokio::spawn(watcher.run(move |topology| {
            // Free idle sockets at once; recycle() would refuse them anyway.
            if topology.master_epoch != master_epoch {
                master_epoch = topology.master_epoch;
                master.retain(|_, _| false);
                master_failed_at_ms.store(0, Ordering::Relaxed);
            }
            if topology.replicas_epoch != replicas_epoch {
                replicas_epoch = topology.replicas_epoch;
                replicas.retain(|_, _| false);
            }
        }));
        redis
    }

    /// The topology as last published by the watcher.
    pub fn topology(&self) -> super::Topology {
        self.watcher.topology.borrow().clone()
    }

    /// Runs one watcher round now (tests and startup use it to avoid waiting).
    pub async fn refresh_topology(&self) {
        self.watcher.poll_once().await;
    }

    /// `PING` on the master through the pool; readiness uses it.
    pub async fn ping_master(&self) -> Result<(), RedisError> {
        let _: (String,) = self
            .run(Role::Master, "ping", &single("PING"), None, &mut None)
            .await?;
        Ok(())
    }

    /// Runs `pipe` on a node of `role`, not on `avoid`; `used` names the node
    /// it ran on (the one to avoid next, whether it failed or answered).
    async fn run<T: FromRedisValue>(
        &self,
        role: Role,
        op: &'static str,
        pipe: &Pipeline,
        avoid: Option<&NodeAddr>,
        used: &mut Option<NodeAddr>,
    ) -> Result<T, RedisError> {
        self.attempt(role, op, async {
            let mut connection = self.checkout(role, avoid).await?;
            *used = Some(connection.addr.clone());
            let epoch = connection.epoch;
            let query = pipe.query_async::<T>(&mut connection.connection);
            let answer = if role == Role::Master {
                self.unless_master_moves_on(epoch, query)
                    .await
                    .ok_or_else(|| {
                        RedisError::Unavailable(
                            "the Redis master changed during the operation".to_owned(),
                        )
                    })?
            } else {
                query.await
            };
            match answer {
                Ok(value) => Ok(value),
                Err(error) => {
                    if poisons_connection(&error) {
                        self.discard(role, connection);
                    }
                    Err(error.into())
                }
            }
        })
        .await
    }

    /// Drops a connection that failed in a way that says its node went away
    /// (reset, timed out, demoted, loading), together with every idle
    /// connection to the same node: a node that restarted reset them all,
    /// and retrying on one of them would fail the same way at once (seen in
    /// the Docker check: reads answered 503 in 1 ms after a restart).
    fn discard(&self, role: Role, connection: Object<NodeManager>) {
        let addr = connection.addr.clone();
        let _ = Object::take(connection);
        self.pool(role).retain(|idle, _| idle.addr != addr);
        self.watcher.poke.notify_one();
    }

    fn pool(&self, role: Role) -> &NodePool {
        match role {
            Role::Master => &self.master,
            Role::Replica => &self.replicas,
        }
    }

    /// Cuts an operation off at `operation_timeout`. A write cut off this way
    /// may still be applied later (the command was sent): callers report it as
    /// unavailable, never as done, and idempotency keys make retries safe.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        // Boxed: moving a large operation into `timeout` by value costs its
        // whole size in stack, per level, in debug builds.
        tokio::time::timeout(self.operation_timeout, Box::pin(operation))
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::Unavailable(
                    "Redis operation timed out".to_owned(),
                ))
            })
    }

    /// A pooled connection that belongs to the current topology.
    async fn checkout(
        &self,
        role: Role,
        avoid: Option<&NodeAddr>,
    ) -> Result<Object<NodeManager>, RedisError> {
        let pool = self.pool(role);
        // Skip the node that just failed only if there is another one: when
        // Sentinel reconfigures a node it kills its client connections, and a
        // fresh connection to the same node then works.
        let avoid = avoid.filter(|failed| {
            role == Role::Replica
                && self
                    .watcher
                    .topology
                    .borrow()
                    .replicas
                    .iter()
                    .any(|r| r != *failed)
        });
        for _ in 0..3 {
            let connection = pool.get().await.map_err(pool_error)?;
            // A connection made while the watcher was switching carries the old
            // epoch: never use it, even once. A node that just failed this
            // request is skipped; new connections go round-robin to the others.
            if connection.epoch == connection_manager_epoch(pool) && avoid != Some(&connection.addr)
            {
                return Ok(connection);
            }
            let _ = Object::take(connection);
        }
        Err(RedisError::Unavailable(
            "Redis topology is changing".to_owned(),
        ))
    }
}

/// The `outcome` label of an operation's metrics.
fn outcome<T>(result: &Result<T, RedisError>) -> &'static str {
    result.as_ref().err().map_or("ok", RedisError::kind)
}

fn single(command: &str) -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd(command);
    pipe
}
