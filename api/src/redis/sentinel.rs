//! Sentinel discovery: who the master is, which replicas are healthy, and
//! whether a master change is under way.
//!
//! The stock clients resolve the master once (with `SENTINEL MASTERS`, which lags
//! `GET-MASTER-ADDR-BY-NAME` by 1-5 s during a failover) and keep a connection
//! pinned to that address forever (redis-rs 1.8 `sentinel.rs`; nothing listens
//! to `+switch-master`). Here a watcher asks every Sentinel
//! `SENTINEL GET-MASTER-ADDR-BY-NAME` several times a second, follows the
//! newest configuration once a majority answers, and publishes a
//! [`Topology`] whose epochs let the pools drop every connection made before
//! a change.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Value,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, Notify, watch};

use super::value;
use crate::config::RedisSettings;
use crate::metrics::Metrics;

/// Address of one Redis data node, as the Sentinels announce it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl NodeAddr {
    fn parse(text: &str) -> Option<Self> {
        let (host, port) = text.rsplit_once(':')?;
        Some(Self {
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    }
}

/// What the Sentinels currently agree on.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// The master a majority of Sentinels names; `None` until one does.
    pub master: Option<NodeAddr>,
    /// Bumped whenever `master` changes: connections tagged with an older epoch
    /// are never handed out again.
    pub master_epoch: u64,
    /// Replicas that the Sentinels see connected and in sync with `master`:
    /// safe to read from.
    pub replicas: Vec<NodeAddr>,
    /// Bumped whenever `replicas` changes.
    pub replicas_epoch: u64,
    /// Replicas Sentinel could promote: every replica not flagged down, in
    /// sync or not, the one being promoted right now included.
    pub promotable_replicas: usize,
}

impl Topology {
    /// Replica acknowledgements a write needs: every replica Sentinel could
    /// promote, so that whichever one it picks holds the write (at least one,
    /// which the servers' `min-replicas-to-write 1` demands anyway).
    ///
    /// Counting only in-sync replicas is not enough: when a graceful failover
    /// starts, the replica being promoted stops being "in sync" first, and a
    /// write acknowledged by the other replica alone is thrown away when that
    /// replica resyncs from the new master (measured: ~50 of ~3000 lost).
    pub fn required_acks(&self) -> usize {
        self.promotable_replicas.max(1)
    }
}

/// What `SENTINEL REPLICAS` says about the replicas of one master.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReplicaView {
    in_sync: Vec<NodeAddr>,
    /// Replicas Sentinel flags down (`s_down`/`o_down`): never read from.
    down: Vec<NodeAddr>,
    promotable: usize,
}

/// Connects to Redis nodes and Sentinels with the configured timeouts and
/// credentials (one ACL user, a password for each tier).
#[derive(Clone)]
pub struct Connector {
    config: AsyncConnectionConfig,
    username: String,
    data_password: SecretString,
    sentinel_password: SecretString,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(settings: &RedisSettings) -> Self {
        Self {
            // A paused node completes the TCP handshake but never answers: without
            // both bounds a request would hang for as long as the node is paused.
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout()))
                .set_response_timeout(Some(settings.command_timeout())),
            username: settings.username.clone(),
            data_password: settings.password.clone(),
            sentinel_password: settings.sentinel_password.clone(),
        }
    }

    pub async fn data_node(&self, addr: &NodeAddr) -> redis::RedisResult<MultiplexedConnection> {
        self.connect(&addr.host, addr.port, &self.data_password)
            .await
    }

    async fn sentinel(&self, host: &str, port: u16) -> redis::RedisResult<MultiplexedConnection> {
        self.connect(host, port, &self.sentinel_password).await
    }

    async fn connect(
        &self,
        host: &str,
        port: u16,
        password: &SecretString,
    ) -> redis::RedisResult<MultiplexedConnection> {
        // Redis 7.0 does not know CLIENT SETINFO; skipping it saves a round trip.
        let mut redis = RedisConnectionInfo::default().set_skip_set_lib_name();
        if !self.username.is_empty() {
            redis = redis.set_username(&self.username);
        }
        if !password.expose_secret().is_empty() {
            redis = redis.set_password(password.expose_secret());
        }
        let info = ConnectionAddr::Tcp(host.to_owned(), port)
            .into_connection_info()?
            .set_redis_settings(redis);
        Client::open(info)?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
    }
}

/// One Sentinel with a lazily (re)opened connection.
struct SentinelNode {
    host: String,
    port: u16,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl SentinelNode {
    async fn connection(&self, connector: &Connector) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = connector.sentinel(&self.host, self.port).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Reconnect next time: the Sentinel may have restarted or be paused.
    async fn forget_connection_after<T>(&self, reply: &redis::RedisResult<T>) {
        if reply.is_err() {
            *self.connection.lock().await = None;
        }
    }

    async fn query(
        &self,
        connector: &Connector,
        command: &redis::Cmd,
    ) -> redis::RedisResult<Value> {
        let mut connection = self.connection(connector).await?;
        let reply = command.query_async(&mut connection).await;
        self.forget_connection_after(&reply).await;
        reply
    }

    async fn query_pipeline(
        &self,
        connector: &Connector,
        pipeline: &redis::Pipeline,
    ) -> redis::RedisResult<Value> {
        let mut connection = self.connection(connector).await?;
        let reply = pipeline.query_async(&mut connection).await;
        self.forget_connection_after(&reply).await;
        reply
    }
}

/// All configured Sentinels of one master name.
pub struct Sentinels {
    nodes: Vec<SentinelNode>,
    master_name: String,
    connector: Connector,
}

impl fmt::Debug for Sentinels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sentinels")
            .field("count", &self.nodes.len())
            .finish()
    }
}

impl Sentinels {
    pub fn new(settings: &RedisSettings, connector: Connector) -> Self {
        let nodes = settings
            .sentinels
            .iter()
            .filter_map(|addr| NodeAddr::parse(addr))
            .map(|addr| SentinelNode {
                host: addr.host,
                port: addr.port,
                connection: Mutex::new(None),
            })
            .collect();
        Self {
            nodes,
            master_name: settings.master_name.clone(),
            connector,
        }
    }

    fn majority(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// The current master, once a majority of all configured Sentinels
    /// answered: the one named with the highest configuration epoch, or else
    /// the one a majority names.
    ///
    /// A configuration epoch is only ever raised by a failover that a
    /// majority of Sentinels authorised, and only once the promoted replica
    /// reported itself master, so the Sentinel that led the failover is
    /// believed at once. The others learn the new configuration from its
    /// hello messages a second or two later; with one Sentinel of three down,
    /// a plain majority vote would wait for them (measured: +3 s of refused
    /// writes).
    /// Returns the master with the index of a Sentinel that named it with
    /// the newest epoch (the one to ask about its replicas), and how many
    /// Sentinels answered.
    async fn current_master(&self) -> (Option<(NodeAddr, usize)>, usize) {
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.master_name)
            .cmd("SENTINEL")
            .arg("MASTER")
            .arg(&self.master_name);
        let answers = join_all(
            self.nodes
                .iter()
                .map(|node| node.query_pipeline(&self.connector, &pipeline)),
        )
        .await;
        let mut views: Vec<(NodeAddr, u64)> = Vec::new();
        let mut sources: Vec<usize> = Vec::new();
        let mut answered = 0;
        for (index, answer) in answers.into_iter().enumerate() {
            let Ok(answer) = answer else { continue };
            answered += 1;
            let replies = value::array(answer);
            let [addr, master] = replies.as_slice() else {
                continue;
            };
            let epoch = value::map(master)
                .get("config-epoch")
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            if let [host, port] = value::array(addr.clone()).as_slice()
                && let (Some(host), Some(port)) = (value::text(host), value::text(port))
                && let Ok(port) = port.parse()
            {
                views.push((NodeAddr { host, port }, epoch));
                sources.push(index);
            }
        }
        if answered < self.majority() {
            return (None, answered);
        }
        let master = pick_master(&views, self.majority()).map(|master| {
            let source = views
                .iter()
                .zip(&sources)
                .filter(|((addr, _), _)| *addr == master)
                .max_by_key(|((_, epoch), _)| *epoch)
                .map_or(0, |(_, index)| *index);
            (master, source)
        });
        (master, answered)
    }

    /// The replicas of `master` as Sentinel `first` sees them (the one that
    /// named `master` with the newest epoch: one that has not heard of a
    /// failover yet would list the new master as a replica), else the next
    /// that answers. `former_masters` still reporting role master are being
    /// demoted, not promoted, so they do not count as promotable; nor does a
    /// former master Sentinel has had no INFO from since the switch.
    async fn replicas(
        &self,
        master: &NodeAddr,
        former_masters: &[NodeAddr],
        first: usize,
    ) -> Option<ReplicaView> {
        let mut command = redis::cmd("SENTINEL");
        command.arg("REPLICAS").arg(&self.master_name);
        let count = self.nodes.len();
        for node in (0..count).map(|i| &self.nodes[(first + i) % count]) {
            let Ok(reply) = node.query(&self.connector, &command).await else {
                continue;
            };
            let entries: Vec<(NodeAddr, HashMap<String, String>)> = value::array(reply)
                .iter()
                .map(value::map)
                .filter_map(|fields| {
                    let addr = NodeAddr {
                        host: fields.get("ip")?.clone(),
                        port: fields.get("port")?.parse().ok()?,
                    };
                    Some((addr, fields))
                })
                .collect();
            let promotable = count_promotable(&entries, master, former_masters);
            let down = entries
                .iter()
                .filter(|(_, fields)| is_down(fields))
                .map(|(addr, _)| addr.clone())
                .collect();
            let mut in_sync: Vec<NodeAddr> = entries
                .into_iter()
                .filter(|(_, fields)| is_in_sync_replica(fields, master))
                .map(|(addr, _)| addr)
                .collect();
            in_sync.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
            return Some(ReplicaView {
                in_sync,
                down,
                promotable,
            });
        }
        None
    }

    /// Whether every configured Sentinel still names `master` and none is
    /// failing it over. Used when fewer replicas than expected acknowledged a
    /// write: during a graceful failover the old master keeps accepting writes
    /// for ~10 s while the promoted replica no longer receives them.
    pub async fn confirm_master(&self, master: &NodeAddr) -> bool {
        let mut command = redis::cmd("SENTINEL");
        command.arg("MASTER").arg(&self.master_name);
        let answers = join_all(
            self.nodes
                .iter()
                .map(|node| node.query(&self.connector, &command)),
        )
        .await;
        answers.into_iter().all(|answer| {
            let Ok(reply) = answer else { return false };
            let fields = value::map(&reply);
            let same_address = fields.get("ip") == Some(&master.host)
                && fields.get("port").and_then(|p| p.parse().ok()) == Some(master.port);
            let flags = fields.get("flags").map(String::as_str).unwrap_or("");
            same_address && flags.split(',').all(|flag| flag == "master")
        })
    }
}

/// Replicas in one Sentinel's `SENTINEL REPLICAS` list that a write must
/// reach: every one Sentinel could promote.
fn count_promotable(
    entries: &[(NodeAddr, HashMap<String, String>)],
    master: &NodeAddr,
    former_masters: &[NodeAddr],
) -> usize {
    entries
        .iter()
        .filter(|(addr, fields)| {
            // The failover's leader names the promoted replica as master
            // before its own replica list changes (until `failover-end`, ~1 s):
            // that replica is the master, not one more to wait for (counting
            // it made every write in that second wait out `WAIT`, measured).
            if addr == master {
                return false;
            }
            let former = former_masters.contains(addr);
            let demoting =
                former && fields.get("role-reported").map(String::as_str) == Some("master");
            let unheard = former && never_reported(fields);
            !(is_down(fields) || demoting || unheard)
        })
        .count()
}

/// The master among the Sentinels' `(address, configuration epoch)` views:
/// the address named with the highest epoch when every view with that epoch
/// agrees, else the address named by `majority` views, else none.
fn pick_master(views: &[(NodeAddr, u64)], majority: usize) -> Option<NodeAddr> {
    let newest = views.iter().map(|(_, epoch)| *epoch).max()?;
    let mut newest_views = views.iter().filter(|(_, epoch)| *epoch == newest);
    let (first, _) = newest_views.next()?;
    if newest_views.all(|(addr, _)| addr == first) {
        return Some(first.clone());
    }
    let mut votes: HashMap<&NodeAddr, usize> = HashMap::new();
    for (addr, _) in views {
        *votes.entry(addr).or_default() += 1;
    }
    votes
        .into_iter()
        .find(|(_, count)| *count >= majority)
        .map(|(addr, _)| addr.clone())
}

/// Down in Sentinel's judgement: such a replica is never promoted.
///
/// `disconnected` is deliberately not enough: Sentinel's promotion of a
/// replica ends with `CLIENT KILL TYPE normal`, which drops Sentinel's own link
/// to the replica being promoted, so for a moment exactly the replica that
/// must hold every write looks "disconnected" (measured: writes acknowledged
/// in that 250 ms window were lost).
fn is_down(fields: &HashMap<String, String>) -> bool {
    let flags = fields.get("flags").map(String::as_str).unwrap_or("");
    flags
        .split(',')
        .any(|flag| matches!(flag, "s_down" | "o_down"))
}

/// A replica this Sentinel has never had an INFO reply from. Applied to
/// former masters only: the old master right after a switch, listed as a
/// replica of the new one while it is still paused or dead. Sentinel never
/// promotes a replica without fresh INFO (`sentinelSelectSlave`), so a write
/// need not wait for it; counting it made every write after a failover wait
/// the whole `WAIT` timeout (1 s) until Sentinel flagged it down (measured).
/// (Any replica looks like this to a Sentinel that just restarted, which is
/// why other replicas are never judged by it.) Sentinel reports a missing
/// refresh as `info-refresh 0`; with a replication link that is not up.
fn never_reported(fields: &HashMap<String, String>) -> bool {
    fields.get("info-refresh").map(String::as_str) == Some("0")
        && fields.get("master-link-status").map(String::as_str) != Some("ok")
}

fn is_disconnected(fields: &HashMap<String, String>) -> bool {
    let flags = fields.get("flags").map(String::as_str).unwrap_or("");
    flags.split(',').any(|flag| flag == "disconnected")
}

fn is_in_sync_replica(fields: &HashMap<String, String>, master: &NodeAddr) -> bool {
    !is_down(fields)
        && !is_disconnected(fields)
        && fields.get("role-reported").map(String::as_str) == Some("slave")
        && fields.get("master-link-status").map(String::as_str) == Some("ok")
        && fields.get("master-host") == Some(&master.host)
        && fields.get("master-port").and_then(|p| p.parse().ok()) == Some(master.port)
}

/// Publishes the topology; the pools read it at every checkout.
pub struct Watcher {
    pub sentinels: Arc<Sentinels>,
    pub topology: watch::Sender<Topology>,
    /// Wakes the watcher early (after a `READONLY` reply, for instance).
    pub poke: Notify,
    interval: Duration,
    metrics: Metrics,
    /// Masters this process followed before the current one.
    former_masters: std::sync::Mutex<Vec<NodeAddr>>,
    /// When a majority of Sentinels last answered (`None`: never).
    last_heard: std::sync::Mutex<Option<Instant>>,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("topology", &*self.topology.borrow())
            .finish()
    }
}

impl Watcher {
    pub fn new(sentinels: Arc<Sentinels>, interval: Duration, metrics: Metrics) -> Self {
        Self {
            sentinels,
            topology: watch::Sender::new(Topology::default()),
            poke: Notify::new(),
            interval,
            former_masters: std::sync::Mutex::default(),
            last_heard: std::sync::Mutex::default(),
            metrics,
        }
    }

    /// How long ago a majority of the Sentinels last answered; `None` if
    /// they never have.
    pub fn sentinels_silent_for(&self) -> Option<Duration> {
        self.last_heard
            .lock()
            .ok()
            .and_then(|heard| heard.map(|at| at.elapsed()))
    }

    /// Polls until the process ends. Spawned once per `Redis` handle;
    /// `on_change` sees every new topology.
    pub async fn run(self: Arc<Self>, mut on_change: impl FnMut(&Topology) + Send + 'static) {
        loop {
            if self.poll_once().await {
                on_change(&self.topology.borrow());
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = self.poke.notified() => {}
            }
        }
    }

    /// One round; returns whether the topology changed.
    pub async fn poll_once(&self) -> bool {
        let (master, answered) = self.sentinels.current_master().await;
        self.metrics.sentinels_reachable.set(answered as i64);
        if answered >= self.sentinels.majority()
            && let Ok(mut heard) = self.last_heard.lock()
        {
            *heard = Some(Instant::now());
        }
        let Some((master, source)) = master else {
            if answered < self.sentinels.majority() {
                tracing::warn!(
                    answered,
                    "fewer than a majority of Sentinels answered; keeping the last known master"
                );
            }
            return false;
        };
        let mut former_masters = self
            .former_masters
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default();
        // The master being replaced in this very round is a former one too.
        let followed = self.topology.borrow().master.clone();
        if let Some(followed) = followed
            && followed != master
        {
            former_masters.push(followed);
        }
        let view = self
            .sentinels
            .replicas(&master, &former_masters, source)
            .await;
        self.topology.send_if_modified(|topology| {
            let mut modified = false;
            let master_changed = topology.master.as_ref() != Some(&master);
            if master_changed {
                tracing::warn!(previous = ?topology.master.as_ref().map(ToString::to_string), current = %master, "Redis master changed");
                if let Some(previous) = topology.master.clone() {
                    self.metrics.failovers_followed.inc();
                    if let Ok(mut former) = self.former_masters.lock() {
                        former.retain(|addr| *addr != master && *addr != previous);
                        former.push(previous);
                    }
                }
                self.metrics.set_master(&master.to_string());
                topology.master = Some(master.clone());
                topology.master_epoch += 1;
                modified = true;
            }
            let Some(view) = view else { return modified };
            if view.promotable != topology.promotable_replicas {
                tracing::info!(promotable = view.promotable, "replicas a write must reach changed");
                topology.promotable_replicas = view.promotable;
                modified = true;
            }
            // Mid-failover, before the switch, Sentinel reports no in-sync
            // replica (one is being promoted, the other reconfigured) while the
            // master may be paused. Both still hold every confirmed write, so
            // keep reading from them rather than from the dead master; but
            // never from one Sentinel flags down (both replicas frozen while
            // the master is fine: then the master serves the reads).
            let replicas = if view.in_sync.is_empty() && !master_changed {
                topology
                    .replicas
                    .iter()
                    .filter(|replica| !view.down.contains(replica))
                    .cloned()
                    .collect()
            } else {
                view.in_sync
            };
            if replicas != topology.replicas {
                tracing::info!(replicas = ?replicas.iter().map(ToString::to_string).collect::<Vec<_>>(), "replicas to read from changed");
                self.metrics.healthy_replicas.set(replicas.len() as i64);
                topology.replicas = replicas;
                topology.replicas_epoch += 1;
                modified = true;
            }
            modified
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(port: u16) -> NodeAddr {
        NodeAddr {
            host: "10.0.0.1".to_owned(),
            port,
        }
    }

    #[test]
    fn the_sentinel_with_the_newest_configuration_is_believed_at_once() {
        // The leader of a failover (epoch 8) against two that have not heard yet.
        let views = [(at(2), 8), (at(1), 7), (at(1), 7)];
        assert_eq!(pick_master(&views, 2), Some(at(2)));
        // One Sentinel down: the leader and one that has not heard yet.
        assert_eq!(pick_master(&[(at(1), 7), (at(2), 8)], 2), Some(at(2)));
    }

    fn replica(port: u16, flags: &str, role: &str) -> (NodeAddr, HashMap<String, String>) {
        let fields = [
            ("flags", flags),
            ("role-reported", role),
            ("info-refresh", "120"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        (at(port), fields)
    }

    #[test]
    fn a_write_waits_for_every_replica_sentinel_could_promote_and_no_other() {
        let healthy = [replica(2, "slave", "slave"), replica(3, "slave", "slave")];
        assert_eq!(count_promotable(&healthy, &at(1), &[]), 2);
        let one_down = [
            replica(2, "slave", "slave"),
            replica(3, "s_down,slave", "slave"),
        ];
        assert_eq!(count_promotable(&one_down, &at(1), &[]), 1);
        // Mid-failover the leader already names :2 as master but still lists
        // it among the replicas of the old master :1.
        let promoting = [replica(2, "slave", "master"), replica(3, "slave", "slave")];
        assert_eq!(count_promotable(&promoting, &at(2), &[at(1)]), 1);
        // The old master, still answering as a master, is being demoted.
        let demoting = [replica(1, "slave", "master"), replica(3, "slave", "slave")];
        assert_eq!(count_promotable(&demoting, &at(2), &[at(1)]), 1);
    }

    #[test]
    fn without_a_newest_agreement_the_majority_decides() {
        let split = [(at(2), 8), (at(3), 8), (at(2), 7)];
        assert_eq!(pick_master(&split, 2), Some(at(2)));
        assert_eq!(pick_master(&[(at(2), 8), (at(3), 8)], 2), None);
        assert_eq!(pick_master(&[], 2), None);
    }
}
