//! The public side of the stack, natively: nginx from the shipped
//! `nginx/templates/default.conf.template`, API replicas as real `api`
//! processes (so they can be SIGKILLed), and a real DNS server (dnsmasq) that
//! answers the API hostname with one address per replica, the way Docker's DNS
//! does for `--scale`. Replicas listen on distinct loopback addresses
//! (127.x.y.N) with one port, as containers do.
//!
//! Debugging: `EVERGREEN_GATEWAY_KEEP=1` keeps the nginx config, access log and
//! every replica's log after the test; `EVERGREEN_GATEWAY_LOG` sets the
//! replicas' `RUST_LOG` (default `warn`).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::app::{ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET};
use crate::child;
use crate::lab::Lab;
use crate::redis_ha::{RedisHa, RedisHaOptions, render};
use crate::wait;

/// The name nginx asks the DNS server for.
pub const API_HOST: &str = "api.evergreen.test";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Polls `url` until it answers 2xx, for at most `seconds`.
async fn until_success(what: &str, url: &str, seconds: u64) {
    let http = reqwest::Client::new();
    wait::until(what, Duration::from_secs(seconds), || async {
        http.get(url)
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
}

/// The oldest nginx that runs the shipped config: `server ... resolve` in an
/// upstream block came to open-source nginx in 1.27.3.
const NGINX_MIN_VERSION: (u32, u32, u32) = (1, 27, 3);

/// The nginx the tests run: `$EVERGREEN_NGINX` (scripts/test sets it), else
/// the Debian forky tree scripts/test builds (`nginx-forky` in its tools
/// directory, `~/.cache/evergreen-tools` by default), else `nginx` on PATH.
/// Checked once to be at least 1.27.3.
///
/// # Panics
/// When that nginx does not run or is older (Debian 12's is 1.22).
pub fn nginx_program() -> PathBuf {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let tools = std::env::var_os("EVERGREEN_TOOLS")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|home| PathBuf::from(home).join(".cache/evergreen-tools"))
                });
            let tree = tools.unwrap_or_default().join("nginx-forky/nginx");
            let program = match std::env::var_os("EVERGREEN_NGINX") {
                Some(path) => PathBuf::from(path),
                None if tree.exists() => tree,
                None => PathBuf::from("nginx"),
            };
            let output = Command::new(&program)
                .arg("-v")
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {}: {e} (scripts/test sets up nginx)",
                        program.display()
                    )
                });
            // `nginx -v` prints "nginx version: nginx/1.30.6" on stderr.
            let text = String::from_utf8_lossy(&output.stderr);
            let version = text
                .trim()
                .rsplit('/')
                .next()
                .map(|v| {
                    v.split('.')
                        .map(|n| n.parse::<u32>().unwrap_or(0))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let version = (
                version.first().copied().unwrap_or(0),
                version.get(1).copied().unwrap_or(0),
                version.get(2).copied().unwrap_or(0),
            );
            assert!(
                version >= NGINX_MIN_VERSION,
                "{} is {}; the shipped config needs nginx >= 1.27.3 (run scripts/test once: it \
                 builds Debian forky's nginx into its tools directory)",
                program.display(),
                text.trim()
            );
            program
        })
        .clone()
}

/// `loadgen -f <scenario> --host <base_url> --report-dir <report_dir>`,
/// seeding as the bootstrapped admin; the caller adds the load settings.
pub fn loadgen_command(scenario: &Path, base_url: &str, report_dir: &Path) -> Command {
    let mut command = Command::new(workspace_binary("loadgen"));
    command
        .arg("-f")
        .arg(scenario)
        .args(["--host", base_url])
        .arg("--report-dir")
        .arg(report_dir)
        .args([
            "--admin-email",
            ADMIN_EMAIL,
            "--admin-password",
            ADMIN_PASSWORD,
        ]);
    command
}

/// `target/<profile>/<name>`, a binary of the workspace built with this one
/// (a test in `target/<profile>/deps/` or a bin in `target/<profile>/`).
/// `cargo build --workspace` and nextest build them all.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("this binary has a path");
    let mut dir = exe.parent().expect("target/<profile>/...");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/<profile>");
    }
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build --workspace` (scripts/test does)",
        binary.display()
    );
    binary
}

fn api_binary() -> PathBuf {
    workspace_binary("api")
}

/// What differs between a test's gateway and a benchmark's.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// nginx `worker_processes` (the official image's config says `auto`).
    pub nginx_workers: String,
    /// `limit_req` on /api/v1/auth/ per client address: rate and burst.
    pub auth_rate: String,
    pub auth_burst: u32,
    /// `limit_req` on GET/HEAD per client address: rate and burst.
    pub read_rate: String,
    pub read_burst: u32,
    /// Actix workers per replica.
    pub api_workers: u32,
    /// More `EVERGREEN_*` settings for every replica.
    pub api_env: Vec<(String, String)>,
    /// Run Redis and every API replica in a namespace of its own in this
    /// lab (replicas at host numbers 31, 32, ...); nginx and the DNS server
    /// stay in the test's namespace and reach them through the lab's leg.
    pub lab: Option<Arc<Lab>>,
}

impl Default for GatewayOptions {
    /// As docker-compose.yml sets it, with one nginx worker and two API
    /// workers to stay light beside other tests.
    fn default() -> Self {
        Self {
            nginx_workers: "1".into(),
            auth_rate: "2r/s".into(),
            auth_burst: 10,
            // Not as shipped (100r/s, burst 200): test traffic reads from one
            // address in loops. security::bounded_resources floods the shipped rate.
            read_rate: "100000r/s".into(),
            read_burst: 100_000,
            api_workers: 2,
            api_env: Vec::new(),
            lab: None,
        }
    }
}

fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status();
}

/// dnsmasq on `listen_address:port`, answering only from `dir/hosts` (made
/// empty here; dnsmasq re-reads it on SIGHUP), logging to `dir/dnsmasq.log`.
/// A name missing from the file is refused (REFUSED), or, under
/// `authoritative_for`, does not exist (NXDOMAIN: what cluster DNS answers
/// for a headless Service without a ready pod; nginx then drops every
/// server of that name, where it keeps them on REFUSED).
/// Returns the process and the hosts file's path.
pub fn dnsmasq(
    dir: &Path,
    listen_address: &str,
    port: u16,
    authoritative_for: Option<&str>,
) -> (Child, PathBuf) {
    let hosts = dir.join("hosts");
    fs::write(&hosts, "").expect("hosts file");
    let log = fs::File::create(dir.join("dnsmasq.log")).expect("log file");
    let child = child::command("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
            "--local-ttl=1",
            "--log-facility=-",
        ])
        .arg(format!("--listen-address={listen_address}"))
        .arg(format!("--port={port}"))
        .arg(format!("--addn-hosts={}", hosts.display()))
        .args(authoritative_for.map(|domain| format!("--local=/{domain}/")))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("dnsmasq starts (Debian package dnsmasq-base)");
    (child, hosts)
}

/// Replaces the hosts file `dnsmasq` answers from, whole: written beside it
/// and renamed over it. dnsmasq may be reading the file for an earlier
/// SIGHUP, and a file truncated in place is then read empty: with no
/// upstream, dnsmasq refuses every name (nginx in the pod check logged
/// `could not be resolved (5: Operation refused)` as a pod was deleted).
pub fn replace_hosts(hosts: &Path, lines: &str) {
    let next = hosts.with_extension("next");
    fs::write(&next, lines).expect("hosts file");
    fs::rename(&next, hosts).expect("hosts file replaced");
}

/// dnsmasq answering `API_HOST` from a hosts file it re-reads on SIGHUP.
#[derive(Debug)]
pub struct Dns {
    pub port: u16,
    hosts: PathBuf,
    child: Child,
}

impl Dns {
    fn start(dir: &Path) -> Self {
        let port = wait::free_port();
        let (child, hosts) = dnsmasq(dir, "127.0.0.1", port, None);
        Self { port, hosts, child }
    }

    /// Makes `API_HOST` resolve to exactly `addresses`.
    pub fn set(&self, addresses: &[Ipv4Addr]) {
        let lines: String = addresses
            .iter()
            .map(|ip| format!("{ip} {API_HOST}\n"))
            .collect();
        replace_hosts(&self.hosts, &lines);
        signal(&self.child, "HUP");
    }
}

/// One API replica process.
#[derive(Debug)]
pub struct ApiProcess {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Its network namespace, in a lab.
    pub namespace: Option<(Arc<Lab>, String)>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl ApiProcess {
    pub fn base_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// The environment the replica runs with (the bench starts copies).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let binary = api_binary();
        let mut command = match &self.namespace {
            Some((lab, namespace)) => child::command_in(lab, namespace, &binary.to_string_lossy()),
            None => child::command(binary),
        };
        let child = command
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the api binary starts");
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let url = format!("{}/health/ready", self.base_url());
        let http = reqwest::Client::new();
        wait::until(
            &format!("API replica {} to be ready", self.ip),
            Duration::from_secs(20),
            || async {
                let response = http.get(&url).send().await.ok()?;
                response.status().is_success().then_some(())
            },
        )
        .await;
    }

    /// SIGKILL, as a crashed container.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same replica again (same address and port) and waits until ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// `api healthcheck` run against this replica's port, as the container healthcheck does.
    pub fn healthcheck(&self) -> bool {
        Command::new(api_binary())
            .arg("healthcheck")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx from the shipped template, in front of the replicas.
#[derive(Debug)]
pub struct Nginx {
    pub port: u16,
    /// `stub_status`, for the nginx exporter.
    pub status_port: u16,
    access_log: PathBuf,
    child: Child,
}

impl Nginx {
    fn start(dir: &Path, dns_port: u16, api_port: u16, options: &GatewayOptions) -> Self {
        let port = wait::free_port();
        let status_port = wait::free_port();
        let vars = HashMap::from([
            ("NGINX_PORT", port.to_string()),
            ("NGINX_STATUS_PORT", status_port.to_string()),
            ("NGINX_RESOLVER", format!("127.0.0.1:{dns_port}")),
            ("API_HOST", API_HOST.to_owned()),
            ("API_PORT", api_port.to_string()),
            ("NGINX_AUTH_RATE", options.auth_rate.clone()),
            ("NGINX_AUTH_BURST", options.auth_burst.to_string()),
            ("NGINX_READ_RATE", options.read_rate.clone()),
            ("NGINX_READ_BURST", options.read_burst.to_string()),
        ]);
        let template =
            fs::read_to_string(repo_root().join("nginx/templates/default.conf.template"))
                .expect("template");
        fs::write(
            dir.join("default.conf"),
            render(&template, &vars).expect("every placeholder has a value"),
        )
        .expect("rendered config");
        for temp in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            fs::create_dir_all(dir.join("tmp").join(temp)).expect("temp dir");
        }
        let d = dir.display();
        let workers = &options.nginx_workers;
        // What the nginx image's own nginx.conf provides around conf.d/*.conf.
        let main = format!(
            "daemon off;\nuser root;\nworker_processes {workers};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  default_type application/octet-stream;\n  client_body_temp_path {d}/tmp/body;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  \
             scgi_temp_path {d}/tmp/scgi;\n  include {d}/default.conf;\n}}\n"
        );
        fs::write(dir.join("nginx.conf"), main).expect("main config");
        let access_log = dir.join("access.log");
        let log = fs::File::create(&access_log).expect("log file");
        let child = child::command(nginx_program())
            .arg("-p")
            .arg(dir)
            // The error log before the config is read (else the build's
            // default, /var/log/nginx, which may not exist here).
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        Self {
            port,
            status_port,
            access_log,
            child,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The master process (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Requests per upstream address, from nginx's JSON access log.
    pub fn requests_by_upstream(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        let text = fs::read_to_string(&self.access_log).unwrap_or_default();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            // A retried request lists every address tried ("a, b"); the last
            // one answered. With no live replica nginx logs the upstream's
            // name instead of an address: that is no replica.
            if let Some(addr) = entry["upstream_addr"]
                .as_str()
                .and_then(|a| a.rsplit(", ").next())
                && addr.parse::<std::net::SocketAddr>().is_ok()
            {
                *counts.entry(addr.to_owned()).or_default() += 1;
            }
        }
        counts
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers and exits. SIGKILL would
        // leave the workers running, orphaned, after every test.
        signal(&self.child, "TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis HA, DNS, API replica processes and nginx.
#[derive(Debug)]
pub struct Gateway {
    pub redis: RedisHa,
    pub replicas: Vec<ApiProcess>,
    pub dns: Dns,
    pub nginx: Nginx,
    pub api_port: u16,
    /// Every replica serves /metrics on this port of its own address (as
    /// containers all use 9100).
    pub metrics_port: u16,
    options: GatewayOptions,
    key_prefix: String,
    subnet: [u8; 2],
    dir: tempfile::TempDir,
}

impl Gateway {
    pub async fn start(replicas: usize) -> Self {
        Self::start_with(replicas, GatewayOptions::default()).await
    }

    pub async fn start_with(replicas: usize, options: GatewayOptions) -> Self {
        let redis = match &options.lab {
            Some(lab) => RedisHa::start_in(RedisHaOptions::default(), lab.clone()).await,
            None => RedisHa::start(RedisHaOptions::default()).await,
        };
        let dir = tempfile::Builder::new()
            .prefix("evergreen-gateway-")
            .disable_cleanup(std::env::var_os("EVERGREEN_GATEWAY_KEEP").is_some())
            .tempdir()
            .expect("temp dir");
        if std::env::var_os("EVERGREEN_GATEWAY_KEEP").is_some() {
            eprintln!("gateway files and logs kept in {}", dir.path().display());
        }
        let id = uuid::Uuid::new_v4();
        // A loopback /24 of its own, so parallel tests never share an address.
        let subnet = [10 + id.as_bytes()[0] % 240, id.as_bytes()[1]];
        let api_port = wait::free_port();
        let metrics_port = wait::free_port();
        let dns = Dns::start(dir.path());
        let nginx = Nginx::start(dir.path(), dns.port, api_port, &options);
        let mut gateway = Self {
            redis,
            replicas: Vec::new(),
            dns,
            nginx,
            api_port,
            metrics_port,
            options,
            key_prefix: format!("evergreen-test:{}:", id.simple()),
            subnet,
            dir,
        };
        for _ in 0..replicas {
            gateway.add_replica().await;
        }
        let nginx = gateway.nginx.base_url();
        until_success("nginx to answer", &format!("{nginx}/nginx-health"), 10).await;
        if replicas > 0 {
            // nginx resolved the API's name when it started, before any
            // replica was published, and asks again within `valid=` (5 s).
            let live = format!("{nginx}/health/live");
            until_success("nginx to resolve the replicas and reach one", &live, 15).await;
        }
        gateway
    }

    /// Starts one more replica and publishes it in DNS (as `--scale` does).
    pub async fn add_replica(&mut self) -> usize {
        let index = self.replicas.len();
        let (ip, namespace) = match &self.options.lab {
            Some(lab) => {
                let host = 31 + index as u8;
                let ip = lab.address(host).parse().expect("an IPv4 address");
                (ip, Some((lab.clone(), lab.node(host))))
            }
            None => {
                let ip = Ipv4Addr::new(127, self.subnet[0], self.subnet[1], index as u8 + 1);
                TcpListener::bind((ip, self.api_port)).expect("the replica's address is free");
                (ip, None)
            }
        };
        let env = vec![
            ("EVERGREEN_SERVER__HOST", ip.to_string()),
            ("EVERGREEN_SERVER__PORT", self.api_port.to_string()),
            (
                "EVERGREEN_SERVER__METRICS_PORT",
                self.metrics_port.to_string(),
            ),
            (
                "EVERGREEN_SERVER__WORKERS",
                self.options.api_workers.to_string(),
            ),
            (
                "EVERGREEN_REDIS__SENTINELS",
                self.redis.sentinel_addrs().join(","),
            ),
            (
                "EVERGREEN_REDIS__PASSWORD",
                self.redis.credentials().api.clone(),
            ),
            (
                "EVERGREEN_REDIS__SENTINEL_PASSWORD",
                self.redis.credentials().api.clone(),
            ),
            ("EVERGREEN_REDIS__KEY_PREFIX", self.key_prefix.clone()),
            // nginx reaches the replicas from loopback (or a lab's range):
            // its X-Real-IP names the client, as in compose.
            (
                "EVERGREEN_SERVER__TRUSTED_PROXIES",
                "127.0.0.0/8,::1/128,198.18.0.0/15".to_owned(),
            ),
            ("EVERGREEN_AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
            // As in TestStack: traffic loops write faster than a shopper.
            (
                "EVERGREEN_LIMITS__WRITES_PER_SECOND_PER_USER",
                "100000".to_owned(),
            ),
            (
                "EVERGREEN_LIMITS__WRITE_BURST_PER_USER",
                "100000".to_owned(),
            ),
            ("EVERGREEN_BOOTSTRAP_ADMIN__EMAIL", ADMIN_EMAIL.to_owned()),
            (
                "EVERGREEN_BOOTSTRAP_ADMIN__PASSWORD",
                ADMIN_PASSWORD.to_owned(),
            ),
            (
                "RUST_LOG",
                std::env::var("EVERGREEN_GATEWAY_LOG").unwrap_or_else(|_| "warn".to_owned()),
            ),
        ];
        let mut replica = ApiProcess {
            ip,
            port: self.api_port,
            namespace,
            env: env
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .chain(self.options.api_env.iter().cloned())
                .collect(),
            log: self.dir.path().join(format!("api-{index}.log")),
            child: None,
        };
        replica.spawn();
        replica.wait_ready().await;
        self.replicas.push(replica);
        self.publish();
        index
    }

    /// DNS lists every replica started (running or killed: as Docker does for
    /// a crashed container until it is removed).
    fn publish(&self) {
        let addresses: Vec<Ipv4Addr> = self.replicas.iter().map(|r| r.ip).collect();
        self.dns.set(&addresses);
    }

    /// `ip:port` of every replica's metrics endpoint.
    pub fn metrics_targets(&self) -> Vec<String> {
        self.replicas
            .iter()
            .map(|r| format!("{}:{}", r.ip, self.metrics_port))
            .collect()
    }

    pub fn upstream(&self, index: usize) -> String {
        format!("{}:{}", self.replicas[index].ip, self.api_port)
    }

    /// The namespace every replica keeps its keys under.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
