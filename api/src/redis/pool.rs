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

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool::managed::{
    self, Manager, Metrics as PoolMetrics, Object, Pool, RecycleError, RecycleResult,
};
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Pipeline, Value};

use super::sentinel::{Connector, NodeAddr, Sentinels, Watcher};
use super::{RedisError, is_noscript, is_readonly, poisons_connection, scripts};
use crate::config::RedisSettings;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Master,
    Replica,
}

/// A pooled connection and where/when it was made.
pub struct NodeConnection {
    connection: MultiplexedConnection,
    addr: NodeAddr,
    epoch: u64,
}

impl fmt::Debug for NodeConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConnection")
            .field("addr", &self.addr)
            .field("epoch", &self.epoch)
            .finish()
    }
}

struct NodeManager {
    role: Role,
    watcher: Arc<Watcher>,
    connector: Connector,
    /// Spreads new replica connections over the healthy replicas.
    next_replica: AtomicUsize,
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
            if role.first().and_then(super::value::text).as_deref() != Some("master") {
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

type NodePool = Pool<NodeManager>;

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

/// How long a read of the caller's own data ([`Redis::read_latest`]) waits
/// for the master before it asks a replica. A healthy master answers in
/// milliseconds even under load (p99 ~40 ms in scripts/bench); a paused one
/// never does, and waiting the full command timeout (2 s) would make every
/// such read that slow until Sentinel fails it over.
const LATEST_READ_MASTER_BUDGET: Duration = Duration::from_millis(500);
/// After the master failed an operation, reads of the caller's own data skip
/// it for this long and go to a replica at once; the first read after that
/// tries the master again.
const MASTER_SUSPECT_FOR: Duration = Duration::from_secs(1);
/// No majority of Sentinels heard for this long (six polls) while the master
/// fails too: this instance is cut off from Redis.
const CUT_OFF_AFTER: Duration = Duration::from_millis(1500);

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

    /// Reads that tolerate replication lag (catalog, sessions): a replica if one
    /// is healthy, else the master. Writes are confirmed on every healthy replica
    /// before they succeed, so a replica never misses an acknowledged write.
    pub async fn read<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        // One bound for all attempts together, not one per attempt.
        self.bounded(async {
            let mut round = 0;
            loop {
                round += 1;
                let epochs = self.topology_epochs();
                match self.read_once(op, pipe).await {
                    Ok(value) => return Ok(value),
                    Err(error) if error.is_final() => return Err(error),
                    // A failover switched the topology under this round (e.g.
                    // the replica set emptied, then the master fallback met the
                    // old, paused master): the failure says nothing about the
                    // nodes now published, so try them once.
                    Err(error) if round > 1 || self.topology_epochs() == epochs => {
                        return Err(error);
                    }
                    Err(_) => {}
                }
            }
        })
        .await
    }

    fn topology_epochs(&self) -> (u64, u64) {
        let topology = self.watcher.topology.borrow();
        (topology.master_epoch, topology.replicas_epoch)
    }

    /// One round of a read: two replica attempts, then the master.
    async fn read_once<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        if self.read_from_replicas {
            match self.read_replicas(op, pipe, |_: &T| true).await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_final() => return Err(error),
                Err(_) => {}
            }
            self.metrics.replica_read_fallbacks.inc();
        }
        self.run(Role::Master, op, pipe, None, &mut None).await
    }

    /// Two tries on the replicas: a failed connection is dropped and the next
    /// one is made to the other replica (one may be resyncing mid-failover,
    /// while the master may be the node that is down). An answer `complete`
    /// rejects is tried once on the other replica too: a write confirmed by
    /// one replica may not have reached the other yet (seen in CI: a purchase
    /// list whose index came from one replica and whose purchases were read
    /// from the other, 503 while the master was down); if neither has it, the
    /// last answer is returned for the caller to judge.
    async fn read_replicas<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
        complete: impl Fn(&T) -> bool,
    ) -> Result<T, RedisError> {
        let mut used = None;
        let mut last = Err(RedisError::Unavailable("no healthy replica".to_owned()));
        for _ in 0..2 {
            let avoid = used.take();
            match self
                .run(Role::Replica, op, pipe, avoid.as_ref(), &mut used)
                .await
            {
                Ok(value) if complete(&value) => return Ok(value),
                Ok(value) => last = Ok(value),
                Err(error) if error.is_final() => return Err(error),
                Err(error) => last = Err(error),
            }
        }
        last
    }

    /// Reads of data the caller may just have written (its purchases): the
    /// master, so that a client always sees its own purchase right after its
    /// 201; when the master cannot answer (paused, killed, mid-failover), a
    /// replica. A confirmed write waited for every replica Sentinel could
    /// promote, or, when one did not acknowledge in time, was confirmed with
    /// the Sentinels; such a replica can lag. So what a replica answers is
    /// passed to `absent`: when it says "nothing there", the read fails as
    /// unavailable (retry) instead of denying data that may exist.
    pub async fn read_latest<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
        absent: impl Fn(&T) -> bool,
    ) -> Result<T, RedisError> {
        let from_replica = |value: T| {
            if absent(&value) {
                Err(RedisError::Unavailable(
                    "the master is unreachable and a replica does not have it (yet)".to_owned(),
                ))
            } else {
                Ok(value)
            }
        };
        self.bounded(async {
            if !self.read_from_replicas {
                return self.read_on_master(op, pipe).await;
            }
            let skipped_master = self.master_suspect();
            if !skipped_master {
                let from_master = tokio::time::timeout(
                    LATEST_READ_MASTER_BUDGET,
                    Box::pin(self.read_on_master(op, pipe)),
                )
                .await;
                match from_master {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(error @ (RedisError::Unexpected(_) | RedisError::CutOff))) => {
                        return Err(error);
                    }
                    Ok(Err(_)) | Err(_) => self.note_master_failure(),
                }
            }
            self.metrics.master_read_fallbacks.inc();
            match self
                .read_replicas(op, pipe, |value: &T| !absent(value))
                .await
            {
                Ok(value) => from_replica(value),
                // No replica could answer either (e.g. the only one is
                // resyncing right after a failover): a master skipped on
                // suspicion may well answer by now.
                Err(RedisError::Unavailable(_)) if skipped_master => {
                    self.read_on_master(op, pipe).await
                }
                Err(error) => Err(error),
            }
        })
        .await
    }

    fn millis_since_start(&self) -> u64 {
        // +1: 0 means "no failure recorded".
        self.started.elapsed().as_millis() as u64 + 1
    }

    fn note_master_failure(&self) {
        self.master_failed_at_ms
            .store(self.millis_since_start(), Ordering::Relaxed);
    }

    /// Whether the master failed an operation within [`MASTER_SUSPECT_FOR`].
    fn master_suspect(&self) -> bool {
        let failed_at = self.master_failed_at_ms.load(Ordering::Relaxed);
        failed_at != 0
            && self.millis_since_start().saturating_sub(failed_at)
                < MASTER_SUSPECT_FOR.as_millis() as u64
    }

    /// Reads that must see the latest write (read-modify-write flows).
    pub async fn read_master<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        self.read_on_master(op, pipe).await
    }

    /// A read on the master, asked again of the new master when the master
    /// changed while it was under way (a read is safe to repeat; a query
    /// stuck on the old master is abandoned at the change).
    async fn read_on_master<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        let epoch = self.watcher.topology.borrow().master_epoch;
        // Boxed: two inline copies of `run` made read_latest's future deep
        // enough to overflow an actix worker's stack in debug builds.
        match Box::pin(self.run(Role::Master, op, pipe, None, &mut None)).await {
            Err(RedisError::Unavailable(_))
                if self.watcher.topology.borrow().master_epoch != epoch =>
            {
                Box::pin(self.run(Role::Master, op, pipe, None, &mut None)).await
            }
            other => other,
        }
    }

    /// A write whose loss in a failover is harmless (counters, markers): no `WAIT`.
    pub async fn write_unconfirmed<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        self.run(Role::Master, op, pipe, None, &mut None).await
    }

    /// Runs one script call as a confirmed [`Self::write`] and splits its
    /// `{'tag', ...}` reply.
    pub async fn run_script(
        &self,
        op: &'static str,
        call: redis::Cmd,
    ) -> Result<scripts::Tagged, RedisError> {
        self.run_script_then(op, call, None).await
    }

    /// [`Self::run_script`], and then, in the same round trip right after
    /// its `WAIT` (whatever the count), `after_wait`, whose reply is
    /// dropped: a follow-up that must not run before the write is
    /// confirmed or given up, and whose own loss is harmless.
    pub async fn run_script_then(
        &self,
        op: &'static str,
        call: redis::Cmd,
        after_wait: Option<redis::Cmd>,
    ) -> Result<scripts::Tagged, RedisError> {
        let mut pipe = redis::pipe();
        pipe.add_command(call);
        let (reply,): (Vec<Value>,) = self
            .attempt(Role::Master, op, self.write_inner(&pipe, after_wait))
            .await?;
        scripts::Tagged::from_reply(op, reply)
    }

    /// Runs one script call as an unconfirmed write (counters whose loss in a
    /// failover is harmless) and splits its `{'tag', ...}` reply.
    pub async fn run_script_unconfirmed(
        &self,
        op: &'static str,
        call: redis::Cmd,
    ) -> Result<scripts::Tagged, RedisError> {
        let mut pipe = redis::pipe();
        pipe.add_command(call);
        let (reply,): (Vec<Value>,) = self.write_unconfirmed(op, &pipe).await?;
        scripts::Tagged::from_reply(op, reply)
    }

    /// A write that must survive a failover: runs `pipe` on the master, then
    /// `WAIT`s for every healthy replica. Returns the pipeline's replies only
    /// when the write is confirmed; otherwise [`RedisError::Unconfirmed`] (the
    /// write may or may not survive, so the caller reports a retryable error).
    pub async fn write<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        self.attempt(Role::Master, op, self.write_inner(pipe, None))
            .await
    }

    /// One operation on a node of `role`: admitted (or refused at once when
    /// this instance is cut off), bounded, its outcome noted for the
    /// master's health, and measured.
    async fn attempt<T>(
        &self,
        role: Role,
        op: &'static str,
        operation: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        let started = Instant::now();
        let result = match self.admit(role) {
            Ok(_probe) => {
                let result = self.bounded(operation).await;
                if role == Role::Master {
                    self.note_master_outcome(&result);
                }
                result
            }
            Err(refused) => Err(refused),
        };
        self.metrics
            .observe_redis(op, started.elapsed(), outcome(&result));
        result
    }

    async fn write_inner<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
        after_wait: Option<redis::Cmd>,
    ) -> Result<T, RedisError> {
        let required = self.watcher.topology.borrow().required_acks();
        let mut with_wait = pipe.clone();
        with_wait
            .cmd("WAIT")
            .arg(required)
            .arg(self.ack_timeout.as_millis() as u64);
        if let Some(command) = after_wait {
            // Redis holds a client's later commands while it is blocked in
            // WAIT, so this runs once WAIT has answered. Ignored: the
            // replies end with WAIT's count, as without it.
            with_wait.add_command(command).ignore();
        }
        let mut attempt = 0;
        let (mut replies, addr) = loop {
            attempt += 1;
            let mut connection = self.checkout(Role::Master, None).await?;
            let epoch = connection.epoch;
            let query = with_wait.query_async::<Vec<Value>>(&mut connection.connection);
            let Some(answer) = self.unless_master_moves_on(epoch, query).await else {
                // Sent to a master that is being replaced: it may or may not
                // be applied (and survive). The idempotency key makes the
                // client's retry safe.
                return Err(RedisError::Unconfirmed);
            };
            match answer {
                Ok(replies) => break (replies, connection.addr.clone()),
                Err(error) => {
                    let retry = attempt == 1 && (is_readonly(&error) || is_noscript(&error));
                    if is_noscript(&error) {
                        // The script cache was flushed or this node just got promoted.
                        scripts::load_all(&mut connection.connection).await?;
                    }
                    let epoch = connection.epoch;
                    if poisons_connection(&error) {
                        self.discard(Role::Master, connection);
                    }
                    if !retry {
                        return Err(error.into());
                    }
                    if is_readonly(&error) {
                        // The node was demoted: retrying before the watcher has
                        // found the new master would only hit it again.
                        self.wait_for_master_change(epoch).await;
                    }
                }
            }
        };
        let acked = replies.pop().and_then(|v| match v {
            Value::Int(n) => usize::try_from(n).ok(),
            _ => None,
        });
        let acked =
            acked.ok_or_else(|| RedisError::Unexpected("WAIT returned no count".to_owned()))?;
        self.metrics.replica_acks.observe(acked as f64);
        if acked < required {
            // Fewer acks than healthy replicas: a replica may just have died, or
            // the one being promoted stopped listening to this master. Only the
            // Sentinels can tell which.
            if acked == 0 || !self.watcher.sentinels.confirm_master(&addr).await {
                tracing::warn!(acked, required, master = %addr, "write not confirmed by replicas");
                self.watcher.poke.notify_one();
                return Err(RedisError::Unconfirmed);
            }
            tracing::info!(acked, required, master = %addr, "write confirmed by the Sentinels after fewer acks than replicas");
        }
        T::from_redis_value(Value::Array(replies))
            .map_err(|e| RedisError::Unexpected(e.to_string()))
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

    /// Waits (briefly) until the watcher publishes a master newer than `epoch`.
    async fn wait_for_master_change(&self, epoch: u64) {
        let mut topology = self.watcher.topology.subscribe();
        let changed = topology.wait_for(|t| t.master_epoch != epoch);
        let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
    }

    /// Whether an operation on a node of `role` may go ahead. An instance
    /// that hears no majority of Sentinels for [`CUT_OFF_AFTER`] while its
    /// master fails (or is being probed) is cut off from Redis: it answers
    /// [`RedisError::CutOff`] at once instead of letting every request wait
    /// for the timeouts, so that nginx sends GETs to another replica without
    /// delay. One master operation at a time, at most one a second, still
    /// goes ahead as a probe (the returned guard marks it): its failure keeps
    /// the instance cut off, its success ends that at once. A refusal is not
    /// a failure of the master, so it never prolongs the state by itself.
    fn admit(&self, role: Role) -> Result<Option<Probe>, RedisError> {
        let silent = self
            .watcher
            .sentinels_silent_for()
            .is_some_and(|silent| silent > CUT_OFF_AFTER);
        let probing = self.probing.load(Ordering::Acquire);
        if !silent || !(probing || self.master_suspect()) {
            return Ok(None);
        }
        let now = self.millis_since_start();
        let due = now.saturating_sub(self.last_probe_ms.load(Ordering::Relaxed))
            >= MASTER_SUSPECT_FOR.as_millis() as u64;
        if role == Role::Master
            && due
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.last_probe_ms.store(now, Ordering::Relaxed);
            return Ok(Some(Probe(self.probing.clone())));
        }
        Err(RedisError::CutOff)
    }

    /// A master operation's outcome: a failure that says the master cannot
    /// be reached makes it suspect; a success clears that.
    fn note_master_outcome<T>(&self, result: &Result<T, RedisError>) {
        match result {
            Ok(_) => self.master_failed_at_ms.store(0, Ordering::Relaxed),
            Err(RedisError::Unavailable(_)) => self.note_master_failure(),
            Err(_) => {}
        }
    }

    /// Waits for a query sent on a master connection of `epoch`, unless the
    /// watcher publishes a newer master first (`None`). A query stuck on a
    /// paused or vanished master would otherwise hold its client for the
    /// whole command timeout after the failover ended (measured: writes came
    /// back 2 s after the switch). Like a timeout, giving up never says the
    /// command was not applied. An answer that is ready wins (`biased`).
    async fn unless_master_moves_on<T>(
        &self,
        epoch: u64,
        query: impl Future<Output = T>,
    ) -> Option<T> {
        let mut topology = self.watcher.topology.subscribe();
        // On the heap: inline, the debug build's futures overflow a worker's stack.
        let query = Box::pin(query);
        tokio::select! {
            biased;
            answer = query => Some(answer),
            // The sender lives in `self.watcher`: this never ends with an error.
            _ = topology.wait_for(|t| t.master_epoch != epoch) => None,
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

/// Marks the probe of a cut-off instance as under way until dropped.
struct Probe(Arc<AtomicBool>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The `outcome` label of an operation's metrics.
fn outcome<T>(result: &Result<T, RedisError>) -> &'static str {
    result.as_ref().err().map_or("ok", RedisError::kind)
}

fn connection_manager_epoch(pool: &NodePool) -> u64 {
    pool.manager().current_epoch()
}

fn single(command: &str) -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd(command);
    pipe
}

fn pool_error(error: managed::PoolError<RedisError>) -> RedisError {
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
