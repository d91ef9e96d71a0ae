//! Connections to one role's nodes (the master, or the replicas), each made
//! to the address the Sentinel [`Watcher`] publishes and tagged with the
//! topology epoch it was made in, so that the pool can refuse it once the
//! topology changed.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use deadpool::managed::{self, Manager, Metrics as PoolMetrics, Pool, RecycleError, RecycleResult};
use redis::Value;
use redis::aio::MultiplexedConnection;

use crate::redis::sentinel::{Connector, NodeAddr, Watcher};
use crate::redis::{RedisError, scripts};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Master,
    Replica,
}

/// A pooled connection and where/when it was made.
pub struct NodeConnection {
    pub(super) connection: MultiplexedConnection,
    pub(super) addr: NodeAddr,
    pub(super) epoch: u64,
}

impl fmt::Debug for NodeConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConnection")
            .field("addr", &self.addr)
            .field("epoch", &self.epoch)
            .finish()
    }
}

pub(super) struct NodeManager {
    pub(super) role: Role,
    pub(super) watcher: Arc<Watcher>,
    pub(super) connector: Connector,
    /// Spreads new replica connections over the healthy replicas.
    pub(super) next_replica: AtomicUsize,
}

impl NodeManager {
    /// The address and epoch a new connection of this role should use now.
    fn target(&self) -> Result<(NodeAddr, u64), RedisError> {
        let topology = self.watcher.topology.borrow();
        match self.role {
            Role::Master => topology
                .master
                .clone()
                .map(|addr| (addr, topology.master_epoch))
                .ok_or_else(|| RedisError::Unavailable("no Redis master is known yet".to_owned())),
            Role::Replica => {
                if topology.replicas.is_empty() {
                    return Err(RedisError::Unavailable("no healthy replica".to_owned()));
                }
                let index =
                    self.next_replica.fetch_add(1, Ordering::Relaxed) % topology.replicas.len();
                Ok((topology.replicas[index].clone(), topology.replicas_epoch))
            }
        }
    }

    fn current_epoch(&self) -> u64 {
        let topology = self.watcher.topology.borrow();
        match self.role {
            Role::Master => topology.master_epoch,
            Role::Replica => topology.replicas_epoch,
        }
    }
}

impl Manager for NodeManager {
    type Type = NodeConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<NodeConnection, RedisError> {
        let (addr, epoch) = self.target()?;
        let mut connection = self.connector.data_node(&addr).await?;
        if self.role == Role::Master {
            // The address may be seconds stale (the old master answers for ~10 s
            // after a switch): check the role, then load the scripts, which a
            // promoted replica does not have in its cache.
            let (role,): (Vec<Value>,) = redis::pipe()
                .cmd("ROLE")
                .query_async(&mut connection)
                .await?;
            if role.first().and_then(crate::redis::value::text).as_deref() != Some("master") {
                self.watcher.poke.notify_one();
                return Err(RedisError::Unavailable(format!(
                    "{addr} is no longer the master"
                )));
            }
            scripts::load_all(&mut connection).await?;
        } else {
            let (info,): (String,) = redis::pipe()
                .cmd("INFO")
                .arg("replication")
                .query_async(&mut connection)
                .await?;
            if !has_synced_since_start(&info) {
                return Err(RedisError::Unavailable(format!(
                    "replica {addr} has not synced with a master since it started"
                )));
            }
        }
        Ok(NodeConnection {
            connection,
            addr,
            epoch,
        })
    }

    async fn recycle(
        &self,
        connection: &mut NodeConnection,
        _: &PoolMetrics,
    ) -> RecycleResult<RedisError> {
        if connection.epoch == self.current_epoch() {
            Ok(())
        } else {
            Err(RecycleError::message(
                "topology changed since this connection was made",
            ))
        }
    }
}

pub(super) type NodePool = Pool<NodeManager>;

/// Whether a replica's data can be read: its link to the master is up, or
/// it was up at some point since the replica started (`repl_down_since` set:
/// its master died or is paused, and it holds every write it acknowledged,
/// which is what reads during a failover need), or it reports role master:
/// a replica just promoted (holding every acknowledged write) or, for the
/// seconds before Sentinel demotes it, a former master resumed; the watcher
/// lists neither as a replica to read from for longer than one poll. A replica that restarted
/// and has not synced yet reports `master_link_down_since_seconds:-1`: it
/// may lack writes acknowledged while it was down (seen in the Docker check:
/// a purchase read right after its 201 answered 404 while the whole tier
/// restarted). Checked when a connection is made: a restart resets them all.
fn has_synced_since_start(info_replication: &str) -> bool {
    let field = |name: &str| {
        info_replication
            .lines()
            .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
    };
    match field("role") {
        Some("master") => true,
        Some("slave") => {
            field("master_link_status") == Some("up")
                || field("master_link_down_since_seconds")
                    .and_then(|s| s.parse::<i64>().ok())
                    .is_some_and(|secs| secs >= 0)
        }
        _ => false,
    }
}

pub(super) fn connection_manager_epoch(pool: &NodePool) -> u64 {
    pool.manager().current_epoch()
}

pub(super) fn pool_error(error: managed::PoolError<RedisError>) -> RedisError {
    match error {
        managed::PoolError::Backend(error) => error,
        managed::PoolError::Timeout(kind) => RedisError::Unavailable(format!(
            "timed out waiting for a Redis connection ({kind:?})"
        )),
        other => RedisError::Unavailable(format!("Redis pool unavailable: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::has_synced_since_start;

    #[test]
    fn a_replica_is_read_from_only_once_it_has_synced_since_it_started() {
        let up =
            "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.11\r\nmaster_link_status:up\r\n";
        let master_lost =
            "role:slave\r\nmaster_link_status:down\r\nmaster_link_down_since_seconds:3\r\n";
        let never_synced =
            "role:slave\r\nmaster_link_status:down\r\nmaster_link_down_since_seconds:-1\r\n";
        let promoted = "role:master\r\nconnected_slaves:1\r\n";
        assert!(has_synced_since_start(up));
        assert!(has_synced_since_start(master_lost));
        assert!(!has_synced_since_start(never_synced));
        assert!(has_synced_since_start(promoted));
        assert!(!has_synced_since_start("loading:1\r\n"));
    }
}
