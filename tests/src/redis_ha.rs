//! A real Redis high-availability topology on loopback for end-to-end tests:
//! one master, two replicas and three Sentinels (quorum 2), as child processes.
//!
//! The nodes run the configuration that ships: the templates in `redis/` at the
//! repository root, rendered by `redis/render.sh` itself (every
//! placeholder must be set and non-empty). Only addresses, ports, paths,
//! secrets and the Sentinel timings ([`RedisHaOptions`]) differ from
//! production. Each topology lives in its own temporary directory (configs,
//! data, logs) with fresh ports and passwords, so tests can run in parallel.
//!
//! Data nodes are addressed by port (what Sentinel hands out), Sentinels by
//! index `0..3`. Every wait polls with a deadline ([`crate::wait::until`]).
//!
//! Needs `redis-server` and `redis-sentinel` on `PATH`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue};
use tempfile::TempDir;

use crate::child;
use crate::lab::Lab;
use crate::wait;

/// The name Sentinel monitors the master under (`sentinel monitor NAME ...`).
pub const MASTER_NAME: &str = "evergreen";

const HOST: &str = "127.0.0.1";
const DATA_NODES: usize = 3;
const SENTINELS: usize = 3;

// Short timeouts: a paused node accepts TCP connections (the kernel does) but
// never answers, and a poll must give up on it quickly to try again.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Generous: start-up normally takes ~2.2 s (Sentinels exchange hello messages
/// every 2 s), but a loaded CI machine must not turn that into a failure.
const START_DEADLINE: Duration = Duration::from_secs(20);
const PING_DEADLINE: Duration = Duration::from_secs(10);
/// Sentinels may disagree for a moment during a failover.
const AGREEMENT_DEADLINE: Duration = Duration::from_secs(5);

/// Lines of each log printed when a test panics.
const LOG_TAIL_LINES: usize = 30;

/// The ACL users of the shipped configs (`user ...` lines in
/// `redis/*.conf.template`); their passwords are in [`Credentials`].
pub mod users {
    /// Operators: every command, every key. It is Redis's `default` user,
    /// which must keep every right (see `redis/master.conf.template`).
    pub const ADMIN: &str = "default";
    /// The API: data commands on `evergreen*` keys.
    pub const API: &str = "evergreen-api";
    /// Replicas syncing from the master (data nodes only).
    pub const REPLICATION: &str = "replication";
    /// Sentinels talking to the data nodes and to each other.
    pub const SENTINEL: &str = "sentinel";
    /// The exporters and healthchecks: read-only server state.
    pub const MONITOR: &str = "monitor";
}

/// A fresh password for each ACL user of one topology, all different, so a
/// client that uses the wrong user's password fails.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// [`users::ADMIN`]'s, on data nodes and Sentinels.
    pub admin: String,
    /// [`users::API`]'s, on data nodes and Sentinels.
    pub api: String,
    /// [`users::REPLICATION`]'s.
    pub replication: String,
    /// [`users::SENTINEL`]'s, on data nodes and Sentinels.
    pub sentinel: String,
    /// [`users::MONITOR`]'s, on data nodes and Sentinels.
    pub monitor: String,
}

impl Credentials {
    fn generate() -> Self {
        let fresh = || uuid::Uuid::new_v4().simple().to_string();
        Self {
            admin: fresh(),
            api: fresh(),
            replication: fresh(),
            sentinel: fresh(),
            monitor: fresh(),
        }
    }
}

/// Sentinel timings; everything else is fixed by the shipped templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisHaOptions {
    /// `sentinel down-after-milliseconds`. Production uses 5000; the shorter
    /// default keeps failover tests fast.
    pub down_after_ms: u64,
    /// `sentinel failover-timeout`. Production uses 60000. It is also the
    /// minimum gap between two failovers of the master, so tests that fail
    /// over twice must wait for it.
    pub failover_timeout_ms: u64,
}

impl Default for RedisHaOptions {
    fn default() -> Self {
        Self {
            down_after_ms: 2000,
            failover_timeout_ms: 10_000,
        }
    }
}

/// Names the file describing the topology the tests share ([`RedisHa::shared`]).
pub const SHARED_ENV: &str = "EVERGREEN_SHARED_REDIS";

/// `redis/` at the repository root: the templates that ship.
#[must_use]
pub fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../redis")
}

/// Replaces every `${NAME}` in `template` with `vars[NAME]`, by running the
/// shipped `redis/render.sh` (what the containers and pods run) with only
/// `vars` and `PATH` in its environment: a placeholder that is unset, empty
/// or malformed, or a value with a newline, is an error.
///
/// # Errors
/// What render.sh said.
pub fn render(template: &str, vars: &HashMap<&str, String>) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("a temp dir: {e}"))?;
    let (input, output) = (dir.path().join("template"), dir.path().join("rendered"));
    fs::write(&input, template).map_err(|e| format!("writing the template: {e}"))?;
    let ran = Command::new("sh")
        .arg(templates_dir().join("render.sh"))
        .arg(&input)
        .arg(&output)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(name, value)| (*name, value)))
        .output()
        .map_err(|e| format!("render.sh: {e}"))?;
    if !ran.status.success() {
        let said = String::from_utf8_lossy(&ran.stderr);
        // Without the temp file's path, which names nothing to the reader.
        return Err(said
            .trim()
            .replace(&format!("{}:", input.display()), "template:")
            .replace(&input.display().to_string(), "template"));
    }
    fs::read_to_string(&output).map_err(|e| format!("reading the output: {e}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Data,
    Sentinel,
}

/// One Redis or Sentinel process and its files.
#[derive(Debug)]
struct Node {
    kind: Kind,
    /// The address it binds and announces: 127.0.0.1, or its own in a lab.
    host: String,
    /// Its network namespace, when the topology runs in a [`Lab`].
    namespace: Option<(Arc<Lab>, String)>,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    /// `None` once killed, and for a node of a shared topology.
    child: Option<Child>,
}

impl Node {
    /// Whether the node runs: a child of this process that was not killed,
    /// or a node of a shared topology (another process's).
    fn is_running(&self, shared: bool) -> bool {
        shared || self.child.is_some()
    }

    fn name(&self) -> String {
        match self.kind {
            Kind::Data => format!("redis-server :{}", self.port),
            Kind::Sentinel => format!("redis-sentinel :{}", self.port),
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name());
        // Append: a restarted node's log keeps its previous life, which is
        // usually what explains a failure.
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the log file in the topology's temp dir can be opened");
        writeln!(log, "=== evergreen-tests: starting {} ===", self.name())
            .expect("the log file is writable");
        let program = match self.kind {
            Kind::Data => "redis-server",
            Kind::Sentinel => "redis-sentinel",
        };
        let mut command = match &self.namespace {
            Some((lab, namespace)) => child::command_in(lab, namespace, program),
            None => child::command(program),
        };
        let child = command
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file handle can be cloned"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {program} (apt-get install redis-server redis-sentinel): {e}")
            });
        self.child = Some(child);
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name()))
            .id()
    }

    /// `kill -SIG PID`: std can only send SIGKILL and the workspace forbids the
    /// `unsafe` that `libc::kill` needs.
    fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("the kill command runs");
        assert!(
            status.success(),
            "kill -{signal} {pid} ({}) failed",
            self.name()
        );
    }

    /// SIGKILL and reap. Works on a stopped (SIGSTOP) process too: SIGKILL is
    /// delivered without the process running.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only if the process already exited, which is fine.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as `docker compose down` sends, and wait for the exit: Redis
    /// flushes its AOF and Sentinel rewrites its config on the way out.
    async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{} did not exit within 10 s of SIGTERM", self.name());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read(&self.log).map_or_else(
            |e| format!("(cannot read {}: {e})", self.log.display()),
            |bytes| String::from_utf8_lossy(&bytes).into_owned(),
        );
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// A running master + 2 replicas + 3 Sentinels; everything is killed on drop.
#[derive(Debug)]
pub struct RedisHa {
    /// Removed with the topology; `None` for a shared topology, whose owner
    /// removes it.
    _dir: Option<TempDir>,
    path: PathBuf,
    /// Another process's topology ([`Self::shared`]): no fault may touch it.
    shared: bool,
    credentials: Credentials,
    options: RedisHaOptions,
    /// Index 0 is the initial master.
    data: Vec<Node>,
    sentinels: Vec<Node>,
}

impl RedisHa {
    /// Renders the shipped templates into a fresh temp dir and starts the
    /// topology. Returns once the master has both replicas in sync and every
    /// Sentinel knows the master, both replicas and the two other Sentinels,
    /// i.e. once a failover could happen. Prints how long that took.
    ///
    /// # Panics
    /// When a template cannot be rendered, a binary is missing, or the
    /// topology does not converge within 20 s.
    pub async fn start(options: RedisHaOptions) -> Self {
        Self::start_with(options, None).await
    }

    /// The same topology with every node in a network namespace of its own
    /// in `lab` (data nodes at host numbers 11-13, Sentinels at 21-23), so
    /// that a test can cut any of them off from any other.
    pub async fn start_in(options: RedisHaOptions, lab: Arc<Lab>) -> Self {
        Self::start_with(options, Some(lab)).await
    }

    async fn start_with(options: RedisHaOptions, lab: Option<Arc<Lab>>) -> Self {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("evergreen-redis-ha-")
            .tempdir()
            .expect("a temp dir can be created");
        let credentials = Credentials::generate();
        let data_ports: Vec<u16> = (0..DATA_NODES).map(|_| wait::free_port()).collect();
        let sentinel_ports: Vec<u16> = (0..SENTINELS).map(|_| wait::free_port()).collect();

        // (address, namespace) of each node.
        let place = |host_number: u8| match &lab {
            Some(lab) => (
                lab.address(host_number),
                Some((lab.clone(), lab.node(host_number))),
            ),
            None => (HOST.to_owned(), None),
        };
        let data_places: Vec<_> = (0..DATA_NODES).map(|i| place(11 + i as u8)).collect();
        let sentinel_places: Vec<_> = (0..SENTINELS).map(|i| place(21 + i as u8)).collect();
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("REDIS_ADMIN_PASSWORD", credentials.admin.clone()),
            ("REDIS_API_PASSWORD", credentials.api.clone()),
            (
                "REDIS_REPLICATION_PASSWORD",
                credentials.replication.clone(),
            ),
            ("REDIS_SENTINEL_PASSWORD", credentials.sentinel.clone()),
            ("REDIS_MONITOR_PASSWORD", credentials.monitor.clone()),
            ("MASTER_NAME", MASTER_NAME.to_owned()),
            ("MASTER_IP", data_places[0].0.clone()),
            ("MASTER_PORT", data_ports[0].to_string()),
            ("SENTINEL_DOWN_AFTER_MS", options.down_after_ms.to_string()),
            (
                "SENTINEL_FAILOVER_TIMEOUT_MS",
                options.failover_timeout_ms.to_string(),
            ),
        ]);
        let templates = templates_dir();

        let mut data = Vec::new();
        for (i, (&port, (host, namespace))) in data_ports.iter().zip(data_places).enumerate() {
            let node_dir = dir.path().join(format!("redis-{i}"));
            fs::create_dir(&node_dir).expect("node dir can be created");
            vars.insert("REDIS_BIND", host.clone());
            vars.insert("REDIS_ANNOUNCE_IP", host.clone());
            vars.insert("REDIS_PORT", port.to_string());
            vars.insert("REDIS_DATA_DIR", path_var(&node_dir));
            let template = if i == 0 {
                "master.conf.template"
            } else {
                "replica.conf.template"
            };
            let config = node_dir.join("redis.conf");
            render_file(&templates.join(template), &config, &vars);
            data.push(Node {
                kind: Kind::Data,
                host,
                namespace,
                port,
                config,
                log: node_dir.join("redis.log"),
                child: None,
            });
        }
        let mut sentinels = Vec::new();
        for (i, (&port, (host, namespace))) in
            sentinel_ports.iter().zip(sentinel_places).enumerate()
        {
            let node_dir = dir.path().join(format!("sentinel-{i}"));
            fs::create_dir(&node_dir).expect("node dir can be created");
            vars.insert("REDIS_BIND", host.clone());
            vars.insert("SENTINEL_ANNOUNCE_IP", host.clone());
            vars.insert("SENTINEL_PORT", port.to_string());
            vars.insert("SENTINEL_DATA_DIR", path_var(&node_dir));
            let config = node_dir.join("sentinel.conf");
            render_file(&templates.join("sentinel.conf.template"), &config, &vars);
            sentinels.push(Node {
                kind: Kind::Sentinel,
                host,
                namespace,
                port,
                config,
                log: node_dir.join("sentinel.log"),
                child: None,
            });
        }

        // Built before anything runs, so a panic below still kills every child.
        let mut ha = Self {
            path: dir.path().to_owned(),
            _dir: Some(dir),
            shared: false,
            credentials,
            options,
            data,
            sentinels,
        };
        for node in &mut ha.data {
            node.spawn();
        }
        // Sentinels start only once both replicas are attached: a Sentinel
        // learns replicas from the master's INFO, which it polls every 10 s
        // after the first time, so starting it early can cost 10 s.
        ha.wait_until_in_sync(ha.data[0].port, START_DEADLINE).await;
        for node in &mut ha.sentinels {
            node.spawn();
        }
        wait::until(
            "every Sentinel to know the master, 2 replicas and 2 other Sentinels",
            START_DEADLINE,
            || ha.try_sentinels_agree(),
        )
        .await;
        eprintln!(
            "redis-ha: master :{} replicas {:?} sentinels {:?} ready in {:.2} s ({})",
            data_ports[0],
            &data_ports[1..],
            sentinel_ports,
            started.elapsed().as_secs_f64(),
            ha.path.display(),
        );
        ha
    }

    /// The topology that `scripts/test` shares between the tests that break
    /// nothing (`EVERGREEN_SHARED_REDIS` names its description, written by
    /// the `shared-redis` binary), or `None` when none is shared. Each test
    /// keeps to its own key prefix; faults ([`Self::pause`], [`Self::kill`],
    /// ...) on it panic: a test that breaks Redis starts its own.
    pub fn shared() -> Option<Self> {
        let path = std::env::var_os(SHARED_ENV)?;
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{SHARED_ENV}={}: {e}", path.to_string_lossy()));
        let description: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{SHARED_ENV}: not a topology description: {e}"));
        let text_of = |value: &serde_json::Value| value.as_str().expect("a string").to_owned();
        let nodes = |key: &str, kind: Kind| -> Vec<Node> {
            description[key]
                .as_array()
                .expect("a list of nodes")
                .iter()
                .map(|node| Node {
                    kind,
                    host: text_of(&node["host"]),
                    namespace: None,
                    port: node["port"].as_u64().expect("a port") as u16,
                    config: PathBuf::from(text_of(&node["config"])),
                    log: PathBuf::from(text_of(&node["log"])),
                    child: None,
                })
                .collect()
        };
        let credentials = &description["credentials"];
        Some(Self {
            _dir: None,
            path: PathBuf::from(text_of(&description["dir"])),
            shared: true,
            credentials: Credentials {
                admin: text_of(&credentials["admin"]),
                api: text_of(&credentials["api"]),
                replication: text_of(&credentials["replication"]),
                sentinel: text_of(&credentials["sentinel"]),
                monitor: text_of(&credentials["monitor"]),
            },
            options: RedisHaOptions {
                down_after_ms: description["down_after_ms"]
                    .as_u64()
                    .expect("down_after_ms"),
                failover_timeout_ms: description["failover_timeout_ms"]
                    .as_u64()
                    .expect("failover_timeout_ms"),
            },
            data: nodes("data", Kind::Data),
            sentinels: nodes("sentinels", Kind::Sentinel),
        })
    }

    /// What [`Self::shared`] reads back in another process.
    #[must_use]
    pub fn description(&self) -> serde_json::Value {
        let nodes = |nodes: &[Node]| -> Vec<serde_json::Value> {
            nodes
                .iter()
                .map(|n| {
                    serde_json::json!({
                        "host": n.host, "port": n.port,
                        "config": n.config, "log": n.log,
                    })
                })
                .collect()
        };
        let c = &self.credentials;
        serde_json::json!({
            "dir": self.path,
            "credentials": {
                "admin": c.admin, "api": c.api, "replication": c.replication,
                "sentinel": c.sentinel, "monitor": c.monitor,
            },
            "down_after_ms": self.options.down_after_ms,
            "failover_timeout_ms": self.options.failover_timeout_ms,
            "data": nodes(&self.data),
            "sentinels": nodes(&self.sentinels),
        })
    }

    /// Whether this is the shared topology of [`Self::shared`].
    #[must_use]
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Faults are for a test's own topology.
    fn owned(&self, fault: &str) {
        assert!(
            !self.shared,
            "{fault} on the topology the tests share: this test breaks Redis, so it must \
             start its own (TestStack::start_own, RedisHa::start)"
        );
    }

    /// The password of each ACL user ([`users`]).
    #[must_use]
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A connection to the data node or Sentinel on `port` as `user`, for
    /// tests of what each user may do.
    ///
    /// # Errors
    /// When the node does not answer or refuses the credentials.
    pub async fn connect_as(
        &self,
        port: u16,
        user: &str,
        password: &str,
    ) -> Result<MultiplexedConnection, String> {
        let host = self
            .data
            .iter()
            .chain(&self.sentinels)
            .find(|n| n.port == port)
            .map_or(HOST, |n| n.host.as_str());
        connect(host, port, user, password).await
    }

    /// What the ACLs refused since start, on every running node and
    /// Sentinel (`ACL LOG`), one line per entry: empty when every client
    /// (the API, replicas, Sentinels, exporters) had the rights it needed.
    pub async fn acl_denials(&self) -> Vec<String> {
        self.owned("acl_denials");
        let mut denials = Vec::new();
        for node in self.data.iter().chain(&self.sentinels) {
            if node.child.is_none() {
                continue;
            }
            let entries: Result<Vec<Vec<redis::Value>>, String> = async {
                let mut conn =
                    connect(&node.host, node.port, users::ADMIN, &self.credentials.admin).await?;
                redis::cmd("ACL")
                    .arg("LOG")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            match entries {
                Ok(entries) => denials.extend(
                    entries
                        .iter()
                        .map(|entry| format!("{}: {}", node.name(), describe_acl_entry(entry))),
                ),
                Err(e) => denials.push(format!("{}: cannot read ACL LOG: {e}", node.name())),
            }
        }
        denials
    }

    /// Ports of the Sentinels, in index order.
    #[must_use]
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The name the Sentinels monitor the master under.
    #[must_use]
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// The options the topology was started with.
    #[must_use]
    pub fn options(&self) -> RedisHaOptions {
        self.options
    }

    /// `"HOST:PORT"` of every Sentinel, killed ones included, in index
    /// order.
    #[must_use]
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("{}:{}", s.host, s.port))
            .collect()
    }

    /// The address of data node `port` (127.0.0.1 unless in a lab).
    #[must_use]
    pub fn host_of(&self, port: u16) -> &str {
        &self.node(port).host
    }

    /// The addresses of the Sentinels, in index order.
    #[must_use]
    pub fn sentinel_hosts(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| s.host.clone()).collect()
    }

    /// The network namespace of data node `port`, in a lab.
    #[must_use]
    pub fn namespace_of(&self, port: u16) -> Option<&str> {
        self.node(port).namespace.as_ref().map(|(_, n)| n.as_str())
    }

    /// The network namespace of Sentinel `index`, in a lab.
    #[must_use]
    pub fn sentinel_namespace(&self, index: usize) -> Option<&str> {
        self.sentinels[index]
            .namespace
            .as_ref()
            .map(|(_, n)| n.as_str())
    }

    /// Ports of the data nodes; index 0 is the initial master.
    #[must_use]
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|n| n.port).collect()
    }

    /// Pids of every running child, for leak checks.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.data
            .iter()
            .chain(&self.sentinels)
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Pid of the node (data node or Sentinel) on `port`, while it runs.
    #[must_use]
    pub fn pid_of(&self, port: u16) -> Option<u32> {
        self.data
            .iter()
            .chain(&self.sentinels)
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref().map(Child::id))
    }

    /// The temp dir holding every node's config, data and log.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The master port a majority (2 of 3) of the Sentinels report
    /// (`SENTINEL GET-MASTER-ADDR-BY-NAME`), waiting up to 5 s for them to
    /// agree.
    ///
    /// # Panics
    /// When no majority agrees within 5 s.
    pub async fn master_port(&self) -> u16 {
        wait::until(
            "a majority of the Sentinels to agree on the master",
            AGREEMENT_DEADLINE,
            || self.try_master_port(),
        )
        .await
    }

    /// The master port Sentinel `index` names, if it answers.
    pub async fn master_port_seen_by(&self, index: usize) -> Result<u16, String> {
        let addr: Vec<String> = self
            .sentinel_query(
                self.sentinels[index].port,
                &["GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
            )
            .await?;
        match addr.as_slice() {
            [_, port] => port.parse().map_err(|e| format!("{e}")),
            _ => Err(format!("unexpected answer {addr:?}")),
        }
    }

    /// Script calls (`EVAL*`, `FCALL*`) the node at `port` has run since it
    /// started, from `INFO commandstats`. Only the API runs scripts, and a
    /// replica applies a script's effects, not the script: on a node that is
    /// not the master, the count stays still.
    pub async fn script_calls(&self, port: u16) -> u64 {
        self.owned("script_calls (other tests run scripts there)");
        let mut connection = self.connection(port).await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .expect("INFO commandstats");
        info.lines()
            .filter_map(|line| line.strip_prefix("cmdstat_"))
            .filter(|line| line.starts_with("eval") || line.starts_with("fcall"))
            .filter_map(|line| {
                line.split_once(":calls=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// A new authenticated connection to a data node, with short connect
    /// (500 ms) and response (1 s) timeouts.
    ///
    /// # Panics
    /// When the node does not answer.
    pub async fn connection(&self, port: u16) -> MultiplexedConnection {
        connect(
            self.host_of(port),
            port,
            users::ADMIN,
            &self.credentials.admin,
        )
        .await
        .unwrap_or_else(|e| panic!("cannot connect to redis-server :{port}: {e}"))
    }

    /// `role` from `INFO replication`: `"master"` or `"slave"`.
    ///
    /// # Panics
    /// When the node does not answer within ~1.5 s.
    pub async fn role(&self, port: u16) -> String {
        self.info_replication(port)
            .await
            .get("role")
            .cloned()
            .unwrap_or_else(|| panic!("redis-server :{port}: INFO replication has no role"))
    }

    /// `INFO replication` of a data node as key/value pairs.
    ///
    /// # Panics
    /// When the node does not answer within ~1.5 s.
    pub async fn info_replication(&self, port: u16) -> HashMap<String, String> {
        self.try_info_replication(port)
            .await
            .unwrap_or_else(|e| panic!("INFO replication on redis-server :{port}: {e}"))
    }

    /// Freezes a data node (SIGSTOP): it keeps its sockets open but answers
    /// nothing, like a hung or partitioned host.
    ///
    /// # Panics
    /// When `port` is not a running data node.
    pub fn pause(&self, port: u16) {
        self.owned("pause");
        self.node(port).signal("STOP");
    }

    /// Resumes a node frozen by [`Self::pause`] (SIGCONT).
    ///
    /// # Panics
    /// When `port` is not a running data node.
    pub fn resume(&self, port: u16) {
        self.owned("resume");
        self.node(port).signal("CONT");
    }

    /// Kills a data node (SIGKILL, a crash: no shutdown save, no AOF flush
    /// beyond `everysec`) and reaps it.
    ///
    /// # Panics
    /// When `port` is not a data node.
    pub fn kill(&mut self, port: u16) {
        self.owned("kill");
        self.node_mut(port).kill();
    }

    /// Stops a data node gracefully (SIGTERM: Redis saves, flushes its AOF
    /// and exits), as `docker compose stop` does, and reaps it.
    ///
    /// # Panics
    /// When `port` is not a data node.
    pub async fn stop(&mut self, port: u16) {
        self.owned("stop");
        self.node_mut(port).terminate().await;
    }

    /// Starts a killed or stopped data node again from its own config file and data dir
    /// (as rewritten by Redis and Sentinel while it ran) and waits until it
    /// answers PING, i.e. has loaded its data.
    ///
    /// # Panics
    /// When the node is still running or does not answer within 10 s.
    pub async fn restart(&mut self, port: u16) {
        self.owned("restart");
        self.node_mut(port).spawn();
        let password = self.credentials.admin.clone();
        let host = self.host_of(port).to_owned();
        wait::until(
            &format!("redis-server :{port} to answer PING after a restart"),
            PING_DEADLINE,
            || {
                let (password, host) = (password.clone(), host.clone());
                async move {
                    let mut conn = connect(&host, port, users::ADMIN, &password).await?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        )
        .await;
    }

    /// Stops every node gracefully (SIGTERM; Sentinels first), as
    /// `docker compose down` does, keeping every data and config file.
    pub async fn stop_all(&mut self) {
        self.owned("stop_all");
        for node in self.sentinels.iter_mut().chain(self.data.iter_mut()) {
            node.terminate().await;
        }
    }

    /// Starts every stopped node again from its own (rewritten) files and
    /// waits until a majority of Sentinels names a master that has both
    /// replicas in sync.
    pub async fn start_all(&mut self) {
        self.owned("start_all");
        for node in self.data.iter_mut().chain(self.sentinels.iter_mut()) {
            if node.child.is_none() {
                node.spawn();
            }
        }
        let master = self.master_port().await;
        self.wait_until_in_sync(master, START_DEADLINE).await;
    }

    /// Kills Sentinel `index` (`0..3`) with SIGKILL and reaps it.
    ///
    /// # Panics
    /// When `index` is out of range.
    pub fn kill_sentinel(&mut self, index: usize) {
        self.owned("kill_sentinel");
        self.sentinels[index].kill();
    }

    /// Asks the first running Sentinel for a graceful failover
    /// (`SENTINEL FAILOVER evergreen`); returns once it has accepted.
    ///
    /// # Panics
    /// When no Sentinel runs or the Sentinel refuses (e.g. a failover is in
    /// progress, or the last one was less than `failover_timeout_ms` ago).
    pub async fn sentinel_failover(&self) {
        self.owned("sentinel_failover");
        let sentinel = self
            .sentinels
            .iter()
            .find(|s| s.is_running(self.shared))
            .expect("a Sentinel is running");
        let result: Result<String, String> = async {
            let mut conn = connect(
                &sentinel.host,
                sentinel.port,
                users::ADMIN,
                &self.credentials.admin,
            )
            .await?;
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(MASTER_NAME)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = result {
            panic!("SENTINEL FAILOVER on {}: {e}", sentinel.name());
        }
    }

    /// Waits until a majority of the Sentinels names a master other than
    /// `old_port` and that node reports `role:master`; returns its port.
    ///
    /// # Panics
    /// When that does not happen within `deadline`.
    pub async fn wait_for_master_change(&self, old_port: u16, deadline: Duration) -> u16 {
        wait::until(
            &format!("the Sentinels to promote a master other than :{old_port}"),
            deadline,
            || async {
                let port = self.try_master_port().await?;
                if port == old_port {
                    return Err(format!("the Sentinels still name :{old_port}"));
                }
                let info = self.try_info_replication(port).await?;
                match info.get("role").map(String::as_str) {
                    Some("master") => Ok(port),
                    role => Err(format!(
                        "the Sentinels name :{port}, whose role is {role:?}"
                    )),
                }
            },
        )
        .await
    }

    /// Waits until data node `port` is a replica of `master_port` with its
    /// replication link up.
    ///
    /// # Panics
    /// When that does not happen within `deadline`.
    pub async fn wait_until_replica_of(&self, port: u16, master_port: u16, deadline: Duration) {
        wait::until(
            &format!("redis-server :{port} to replicate from :{master_port}"),
            deadline,
            || self.try_replica_of(port, master_port),
        )
        .await;
    }

    /// Waits until `master_port` is a master and every other running data
    /// node replicates from it with its link up and shows `online` on the
    /// master.
    ///
    /// # Panics
    /// When that does not happen within `deadline`.
    pub async fn wait_until_in_sync(&self, master_port: u16, deadline: Duration) {
        wait::until(
            &format!("every replica to be in sync with :{master_port}"),
            deadline,
            || self.try_in_sync(master_port),
        )
        .await;
    }

    fn node(&self, port: u16) -> &Node {
        self.data
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!(":{port} is not a data node of this topology"))
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.data
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!(":{port} is not a data node of this topology"))
    }

    fn running_sentinels(&self) -> impl Iterator<Item = &Node> {
        self.sentinels.iter().filter(|s| s.is_running(self.shared))
    }

    async fn try_info_replication(&self, port: u16) -> Result<HashMap<String, String>, String> {
        let mut conn = connect(
            self.host_of(port),
            port,
            users::ADMIN,
            &self.credentials.admin,
        )
        .await?;
        let text: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!(":{port}: {e}"))?;
        Ok(parse_info(&text))
    }

    async fn sentinel_query<T: FromRedisValue>(
        &self,
        port: u16,
        args: &[&str],
    ) -> Result<T, String> {
        let host = self
            .sentinels
            .iter()
            .find(|s| s.port == port)
            .map_or(HOST, |s| s.host.as_str());
        let mut conn = connect(host, port, users::ADMIN, &self.credentials.admin).await?;
        redis::cmd("SENTINEL")
            .arg(args)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("sentinel :{port}: {e}"))
    }

    /// The master port named by more than half of all Sentinels (killed ones
    /// count as not answering, as they would for a quorum).
    async fn try_master_port(&self) -> Result<u16, String> {
        let answers = join_all(self.running_sentinels().map(|s| async move {
            let addr: Vec<String> = self
                .sentinel_query(s.port, &["GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
                .await?;
            match addr.as_slice() {
                [_, port] => port.parse::<u16>().map_err(|e| e.to_string()),
                _ => Err(format!("sentinel :{}: unexpected answer {addr:?}", s.port)),
            }
        }))
        .await;
        let mut votes: HashMap<u16, usize> = HashMap::new();
        for port in answers.iter().flatten() {
            *votes.entry(*port).or_default() += 1;
        }
        votes
            .into_iter()
            .find(|&(_, n)| n * 2 > self.sentinels.len())
            .map(|(port, _)| port)
            .ok_or_else(|| format!("no majority among {answers:?}"))
    }

    async fn try_replica_of(&self, port: u16, master_port: u16) -> Result<(), String> {
        let info = self.try_info_replication(port).await?;
        let field = |k: &str| info.get(k).map_or("", String::as_str);
        if field("role") == "slave"
            && field("master_port") == master_port.to_string()
            && field("master_link_status") == "up"
        {
            Ok(())
        } else {
            Err(format!(
                ":{port}: role {:?}, master_port {:?}, master_link_status {:?}",
                field("role"),
                field("master_port"),
                field("master_link_status"),
            ))
        }
    }

    async fn try_in_sync(&self, master_port: u16) -> Result<(), String> {
        let replicas: Vec<u16> = self
            .data
            .iter()
            .filter(|n| n.is_running(self.shared) && n.port != master_port)
            .map(|n| n.port)
            .collect();
        let info = self.try_info_replication(master_port).await?;
        if info.get("role").map(String::as_str) != Some("master") {
            return Err(format!(":{master_port} is not a master: {info:?}"));
        }
        // slaveN:ip=127.0.0.1,port=26402,state=online,offset=833,lag=1
        let mut online: Vec<u16> = info
            .iter()
            .filter(|(k, _)| k.starts_with("slave") && k[5..].parse::<u32>().is_ok())
            .filter_map(|(_, v)| {
                let fields: HashMap<&str, &str> =
                    v.split(',').filter_map(|f| f.split_once('=')).collect();
                (fields.get("state") == Some(&"online"))
                    .then(|| fields.get("port")?.parse().ok())
                    .flatten()
            })
            .collect();
        online.sort_unstable();
        let mut expected = replicas.clone();
        expected.sort_unstable();
        if online != expected {
            return Err(format!(
                "online replicas of :{master_port} are {online:?}, want {expected:?}"
            ));
        }
        for result in join_all(
            replicas
                .iter()
                .map(|&p| self.try_replica_of(p, master_port)),
        )
        .await
        {
            result?;
        }
        Ok(())
    }

    /// Every Sentinel names the initial master and knows both replicas (as
    /// healthy replicas) and the two other Sentinels.
    async fn try_sentinels_agree(&self) -> Result<(), String> {
        let master_port = self.data[0].port.to_string();
        for result in join_all(self.sentinels.iter().map(|s| async {
            let master: Vec<String> = self
                .sentinel_query(s.port, &["MASTER", MASTER_NAME])
                .await?;
            let master = pairs(&master);
            let want = [
                ("port", master_port.as_str()),
                ("flags", "master"),
                ("num-slaves", "2"),
                ("num-other-sentinels", "2"),
            ];
            for (key, value) in want {
                if master.get(key).copied() != Some(value) {
                    return Err(format!("sentinel :{}: SENTINEL MASTER {master:?}", s.port));
                }
            }
            let replicas: Vec<Vec<String>> = self
                .sentinel_query(s.port, &["REPLICAS", MASTER_NAME])
                .await?;
            let healthy = replicas
                .iter()
                .filter(|r| pairs(r).get("flags").copied() == Some("slave"))
                .count();
            if healthy == 2 {
                Ok(())
            } else {
                Err(format!(
                    "sentinel :{}: SENTINEL REPLICAS {replicas:?}",
                    s.port
                ))
            }
        }))
        .await
        {
            result?;
        }
        Ok(())
    }
}

impl Drop for RedisHa {
    fn drop(&mut self) {
        // Sentinels first, so none of them reacts to the data nodes dying.
        for node in self.sentinels.iter_mut().chain(&mut self.data) {
            node.kill();
        }
        if std::thread::panicking() {
            for node in self.data.iter().chain(&self.sentinels) {
                eprintln!(
                    "----- {} (last {LOG_TAIL_LINES} lines of {}) -----\n{}",
                    node.name(),
                    node.log.display(),
                    node.log_tail(),
                );
            }
        }
    }
}

async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(format!("redis://{user}:{password}@{host}:{port}/"))
        .map_err(|e| e.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!(":{port}: {e}"))
}

fn render_file(template: &Path, output: &Path, vars: &HashMap<&str, String>) {
    let text = fs::read_to_string(template)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", template.display()));
    let rendered = render(&text, vars).unwrap_or_else(|e| panic!("{}: {e}", template.display()));
    // Redis and Sentinel rewrite this file (CONFIG REWRITE), so it stays
    // writable.
    let mut file =
        File::create(output).unwrap_or_else(|e| panic!("cannot create {}: {e}", output.display()));
    file.write_all(rendered.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", output.display()));
}

fn path_var(path: &Path) -> String {
    let path = path
        .to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()));
    // Redis config lines split on spaces; temp dirs never contain them, but a
    // TMPDIR that did would fail obscurely.
    assert!(!path.contains(' '), "{path} contains a space");
    path.to_owned()
}

/// One `ACL LOG` entry (flat key/value list) as `reason object by username`.
fn describe_acl_entry(entry: &[redis::Value]) -> String {
    let fields: HashMap<String, String> = entry
        .chunks_exact(2)
        .filter_map(|kv| {
            let key = String::from_redis_value(kv[0].clone()).ok()?;
            let value = String::from_redis_value(kv[1].clone()).unwrap_or_default();
            Some((key, value))
        })
        .collect();
    let field = |name: &str| fields.get(name).map_or("?", String::as_str);
    format!(
        "{} {} by {} ({} times)",
        field("reason"),
        field("object"),
        field("username"),
        fields.get("count").map_or("?", String::as_str)
    )
}

/// `INFO` text (`key:value` lines, `#` section headers) as a map.
fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A flat `[key, value, key, value, ...]` Sentinel reply as a map.
fn pairs(flat: &[String]) -> HashMap<&str, &str> {
    flat.chunks_exact(2)
        .map(|kv| (kv[0].as_str(), kv[1].as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<&'static str, String> {
        HashMap::from([("A", "1".to_owned()), ("EMPTY", String::new())])
    }

    #[test]
    fn render_substitutes_every_placeholder() {
        assert_eq!(
            render("x ${A} y ${A}\n$A", &vars()),
            Ok("x 1 y 1\n$A".to_owned())
        );
    }

    #[test]
    fn render_rejects_unset_empty_and_malformed_placeholders() {
        let refused = |template: &str| render(template, &vars()).expect_err(template);
        assert!(refused("a\n${B}").contains("unset or empty variable(s): B"));
        assert!(refused("${EMPTY}").contains("unset or empty variable(s): EMPTY"));
        assert!(refused("${A").contains("template:1: malformed placeholder"));
        assert!(refused("ok\n${A:-x}").contains("template:2: malformed placeholder"));
        let nested = HashMap::from([("A", "a${B}".to_owned()), ("B", "2".to_owned())]);
        assert!(
            render("${A} ${B}", &nested)
                .expect_err("a placeholder in a value")
                .contains("A contains ${")
        );
        let newline = HashMap::from([("A", "1\nrequirepass x".to_owned())]);
        assert!(
            render("${A}", &newline)
                .expect_err("a newline")
                .contains("A contains a newline")
        );
    }
}
