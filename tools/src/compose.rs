//! Drives the real `docker-compose.yml` for the Docker check
//! (`scripts/docker-check`, `src/bin/docker_check.rs`): one throw-away
//! project with its own name, secrets and published port, removed with its
//! volumes when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use evergreen_tests::wait;

/// The admin the stack bootstraps (compose's default `ADMIN_EMAIL`).
pub const ADMIN_EMAIL: &str = "admin@example.com";

/// The Redis data nodes and their fixed host numbers on the stack's /24
/// (docker-compose.yml: `ipv4_address: ${SUBNET_PREFIX}.N`).
pub const DATA_NODES: [(&str, u8); 3] = [
    ("redis-master", 11),
    ("redis-replica-1", 12),
    ("redis-replica-2", 13),
];
pub const SENTINELS: [&str; 3] = ["sentinel-1", "sentinel-2", "sentinel-3"];

/// One compose project built from the repository's `docker-compose.yml`.
#[derive(Debug)]
pub struct ComposeProject {
    /// `docker compose` (v2) or `docker-compose` (v1.29), whichever exists.
    program: Vec<String>,
    pub project: String,
    pub http_port: u16,
    pub prometheus_port: u16,
    pub alertmanager_port: u16,
    pub admin_password: String,
    /// First three octets of the project's /24 (`SUBNET_PREFIX`).
    pub subnet_prefix: String,
    root: PathBuf,
    env_file: tempfile::NamedTempFile,
}

fn secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn output(command: &mut Command) -> Output {
    let rendered = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {rendered}: {e}"));
    assert!(
        output.status.success(),
        "{rendered} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8_lossy(&output(command).stdout)
        .trim()
        .to_owned()
}

impl ComposeProject {
    /// A project named `name` with fresh secrets in a private env file.
    pub fn new(root: &Path, name: &str) -> Self {
        let v2 = Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        let program = if v2 {
            vec!["docker".to_owned(), "compose".to_owned()]
        } else {
            vec!["docker-compose".to_owned()]
        };
        let [http_port, prometheus_port, alertmanager_port] = [(); 3].map(|()| wait::free_port());
        let admin_password = secret();
        let subnet_prefix = free_subnet_prefix();
        let env_file = tempfile::NamedTempFile::new().expect("env file");
        let env = format!(
            "REDIS_ADMIN_PASSWORD={}\nREDIS_API_PASSWORD={}\nREDIS_REPLICATION_PASSWORD={}\n\
             REDIS_SENTINEL_PASSWORD={}\nREDIS_MONITOR_PASSWORD={}\n\
             JWT_SECRET={}{}\nADMIN_PASSWORD={admin_password}\n\
             GRAFANA_ADMIN_PASSWORD={}\n\
             HTTP_PORT={http_port}\nPROMETHEUS_PORT={prometheus_port}\nALERTMANAGER_PORT={alertmanager_port}\n\
             SUBNET_PREFIX={subnet_prefix}\n",
            secret(),
            secret(),
            secret(),
            secret(),
            secret(),
            secret(),
            secret(),
            secret()
        );
        std::fs::write(env_file.path(), env).expect("write env file");
        Self {
            program,
            project: name.to_owned(),
            http_port,
            prometheus_port,
            alertmanager_port,
            admin_password,
            subnet_prefix,
            root: root.to_owned(),
            env_file,
        }
    }

    /// Extra lines for the project's `.env` (e.g. shorter Sentinel timings).
    pub fn set_env(&self, line: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.env_file.path())
            .expect("env file");
        writeln!(file, "{line}").expect("write env file");
    }

    /// The project's env file (what `.env` is to a user's stack).
    pub fn env_file(&self) -> &Path {
        self.env_file.path()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program[0]);
        command
            .args(&self.program[1..])
            .arg("--project-name")
            .arg(&self.project)
            .arg("--env-file")
            .arg(self.env_file.path())
            .args(args)
            .current_dir(&self.root);
        command
    }

    /// Services whose image is not on this machine and cannot be pulled
    /// (Grafana offline: Debian does not package it). They are left out of
    /// `up`; their files are checked by the test suite instead.
    pub fn unavailable_services(&self) -> Vec<String> {
        let compose = std::fs::read_to_string(self.root.join("docker-compose.yml"))
            .expect("docker-compose.yml");
        let image = compose
            .lines()
            .find_map(|line| line.trim().strip_prefix("image: grafana/grafana:"))
            .map(|tag| format!("grafana/grafana:{tag}"));
        match image {
            Some(image)
                if !Command::new("docker")
                    .args(["image", "inspect", &image])
                    .output()
                    .is_ok_and(|o| o.status.success()) =>
            {
                vec!["grafana".to_owned()]
            }
            _ => Vec::new(),
        }
    }

    /// Every service of the compose file but the unavailable ones.
    pub fn services(&self) -> Vec<String> {
        let skipped = self.unavailable_services();
        stdout(&mut self.command(&["config", "--services"]))
            .lines()
            .filter(|s| !skipped.iter().any(|k| k == s))
            .map(str::to_owned)
            .collect()
    }

    /// `up -d ARGS` for every service but the unavailable ones.
    pub fn up(&self, args: &[&str]) {
        let services = self.services();
        let mut command = vec!["up", "-d"];
        command.extend_from_slice(args);
        command.extend(services.iter().map(String::as_str));
        self.run(&command);
    }

    /// Runs `docker compose ARGS`, panicking with its stderr on failure.
    pub fn run(&self, args: &[&str]) {
        output(&mut self.command(args));
    }

    /// Container ids of `service` (running or not).
    pub fn containers(&self, service: &str) -> Vec<String> {
        let listing = stdout(Command::new("docker").args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]));
        listing.lines().map(str::to_owned).collect()
    }

    /// Each container of `service` with the time it last started and its
    /// restart count (`docker inspect`): equal before and after an operation,
    /// it was neither re-created nor restarted meanwhile.
    pub fn starts(&self, service: &str) -> Vec<String> {
        let ids = self.containers(service);
        if ids.is_empty() {
            return Vec::new();
        }
        let listing = stdout(
            Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{.Id}} {{.State.StartedAt}} {{.RestartCount}}",
                ])
                .args(&ids),
        );
        listing.lines().map(str::to_owned).collect()
    }

    /// Every container of the project with its health ("healthy",
    /// "starting", "unhealthy", or its state when it has no healthcheck).
    pub fn health(&self) -> Vec<(String, String)> {
        let ids = stdout(Command::new("docker").args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
        ]));
        if ids.is_empty() {
            return Vec::new();
        }
        let mut inspect = Command::new("docker");
        inspect.args([
            "inspect",
            "--format",
            "{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}",
        ]);
        inspect.args(ids.lines());
        stdout(&mut inspect)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(name, health)| (name.trim_start_matches('/').to_owned(), health.to_owned()))
            .collect()
    }

    /// Waits until `expected` containers exist and every one is healthy, or
    /// running when it has no healthcheck (what `docker compose up --wait`
    /// does on v2).
    pub async fn wait_healthy(&self, expected: usize, deadline: Duration) {
        wait::until("every container healthy", deadline, || async {
            let health = self.health();
            if health.len() == expected
                && health.iter().all(|(_, h)| h == "healthy" || h == "running")
            {
                Ok(())
            } else {
                Err(health)
            }
        })
        .await;
    }

    /// `redis-cli` inside the first container of `service`, signed in as the
    /// operators' `default` user (its password is in every Redis container's
    /// environment).
    ///
    /// # Panics
    /// When the container is not running or redis-cli fails.
    pub fn redis_cli(&self, service: &str, args: &[&str]) -> String {
        self.try_redis_cli(service, args)
            .unwrap_or_else(|e| panic!("redis-cli in {service}: {e}"))
    }

    /// [`Self::redis_cli`] for polling: a container that is paused, stopped
    /// or still starting is an error, not a panic.
    pub fn try_redis_cli(&self, service: &str, args: &[&str]) -> Result<String, String> {
        let id = self
            .containers(service)
            .into_iter()
            .next()
            .ok_or_else(|| format!("no container for {service}"))?;
        let port = if service.starts_with("sentinel") {
            "SENTINEL_PORT"
        } else {
            "REDIS_PORT"
        };
        let script = format!(
            "REDISCLI_AUTH=$REDIS_ADMIN_PASSWORD exec redis-cli --no-auth-warning -p ${port} \"$@\""
        );
        let output = Command::new("docker")
            .args(["exec", &id, "sh", "-c", &script, "redis-cli"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if output.status.success() && !stdout.starts_with("Could not connect") {
            Ok(stdout)
        } else {
            Err(format!(
                "{}{}",
                stdout,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// The master the Sentinel of `sentinel` names, as `host:port`.
    pub fn try_master_seen_by(&self, sentinel: &str) -> Result<String, String> {
        let reply = self.try_redis_cli(
            sentinel,
            &["sentinel", "get-master-addr-by-name", "evergreen"],
        )?;
        let parts: Vec<&str> = reply.lines().collect();
        match parts.as_slice() {
            [host, port] => Ok(format!("{host}:{port}")),
            _ => Err(format!("unexpected reply: {reply}")),
        }
    }

    /// The fixed address of a data node or Sentinel of this project.
    pub fn address_of(&self, service: &str) -> String {
        let host = DATA_NODES
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, host)| *host)
            .or_else(|| {
                SENTINELS
                    .iter()
                    .position(|name| *name == service)
                    .map(|i| 21 + i as u8)
            })
            .unwrap_or_else(|| panic!("{service} has no fixed address"));
        format!("{}.{host}", self.subnet_prefix)
    }

    /// The data node service the Sentinels name as master, asking the
    /// running Sentinels in turn.
    ///
    /// # Panics
    /// When no Sentinel answers, or one names an unknown address.
    pub fn master_service(&self) -> String {
        self.try_master_service()
            .unwrap_or_else(|e| panic!("no master: {e}"))
    }

    pub fn try_master_service(&self) -> Result<String, String> {
        let master = SENTINELS
            .iter()
            .filter(|s| self.is_running(s))
            .find_map(|s| self.try_master_seen_by(s).ok())
            .ok_or("no running Sentinel answers")?;
        let ip = master.split(':').next().unwrap_or_default();
        DATA_NODES
            .iter()
            .map(|(name, _)| *name)
            .find(|name| self.address_of(name) == ip)
            .map(str::to_owned)
            .ok_or_else(|| format!("{master} is not a data node of this project"))
    }

    /// Whether the first container of `service` is running (and not paused).
    pub fn is_running(&self, service: &str) -> bool {
        self.containers(service).first().is_some_and(|id| {
            Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{.State.Running}} {{.State.Paused}}",
                    id,
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "true false")
        })
    }

    /// Everything the containers of `service` wrote to stdout and stderr
    /// (a container that was re-created took its logs with it).
    pub fn logs(&self, service: &str) -> String {
        self.containers(service)
            .iter()
            .map(|id| {
                let logs = output(Command::new("docker").args(["logs", id]));
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                )
            })
            .collect()
    }

    /// The earliest instant, at or after `since`, at which one of the
    /// Sentinels logged `event` (e.g. `+promoted-slave`). Sentinel stamps
    /// its lines with the container's clock (UTC), which is the host's.
    pub fn sentinel_event_after(
        &self,
        event: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        SENTINELS
            .iter()
            .flat_map(|s| {
                self.logs(s)
                    .lines()
                    .filter(|l| l.contains(event))
                    .filter_map(sentinel_log_time)
                    .collect::<Vec<_>>()
            })
            .filter(|at| *at >= since)
            .min()
    }

    /// The stack's one network, as Docker names it.
    pub fn network(&self) -> String {
        format!("{}_evergreen", self.project)
    }

    /// `docker network disconnect`: the container loses its only network
    /// (and its DNS name) but keeps running.
    pub fn disconnect(&self, service: &str) {
        let id = self.first_container(service);
        output(Command::new("docker").args(["network", "disconnect", &self.network(), &id]));
    }

    /// Connects a container cut off by [`Self::disconnect`] again, with its
    /// fixed address and its service name, as compose had made it.
    pub fn reconnect(&self, service: &str) {
        let id = self.first_container(service);
        let address = self.address_of(service);
        output(Command::new("docker").args([
            "network",
            "connect",
            "--ip",
            &address,
            "--alias",
            service,
            &self.network(),
            &id,
        ]));
    }

    /// Drops every packet between container `id` and `peers` (addresses),
    /// both ways, with iptables in the container's own network namespace,
    /// entered from the host (`nsenter`): the shipped images need neither
    /// iptables nor NET_ADMIN for it.
    pub fn cut_off(&self, id: &str, peers: &[String]) {
        for peer in peers {
            self.iptables(id, &["-A", "INPUT", "-s", peer, "-j", "DROP"]);
            self.iptables(id, &["-A", "OUTPUT", "-d", peer, "-j", "DROP"]);
        }
    }

    /// Lifts every cut made by [`Self::cut_off`] in container `id`.
    pub fn restore(&self, id: &str) {
        self.iptables(id, &["-F", "INPUT"]);
        self.iptables(id, &["-F", "OUTPUT"]);
    }

    fn iptables(&self, id: &str, rule: &[&str]) {
        let pid =
            stdout(Command::new("docker").args(["inspect", "--format", "{{.State.Pid}}", id]));
        let mut command = if is_root() {
            Command::new("nsenter")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "nsenter"]);
            sudo
        };
        command
            .args(["--target", &pid, "--net", "iptables", "-w"])
            .args(rule);
        output(&mut command);
    }

    /// The first container of `service`.
    pub fn first_container(&self, service: &str) -> String {
        self.containers(service)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no container for {service}"))
    }

    /// The host addresses the first container of `service` publishes its
    /// ports on (`docker port`), e.g. `["127.0.0.1"]`.
    pub fn published_on(&self, service: &str) -> Vec<String> {
        let id = self.first_container(service);
        stdout(Command::new("docker").args(["port", &id]))
            .lines()
            .filter_map(|line| line.split(" -> ").nth(1))
            .filter_map(|address| address.rsplit_once(':').map(|(host, _)| host.to_owned()))
            .collect()
    }

    /// Lines containing `needle` in the logs of `services`, all together.
    pub fn count_in_logs(&self, services: &[&str], needle: &str) -> usize {
        services
            .iter()
            .map(|s| self.logs(s).lines().filter(|l| l.contains(needle)).count())
            .sum()
    }

    /// The JSON lines a service logged to stdout (nginx's access log, the
    /// alert webhook's notifications).
    pub fn json_log(&self, service: &str) -> Vec<serde_json::Value> {
        let Some(id) = self.containers(service).into_iter().next() else {
            return Vec::new();
        };
        let logs = output(Command::new("docker").args(["logs", &id]));
        String::from_utf8_lossy(&logs.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The time of a Sentinel log line: `1:X 29 Nov 2026 14:15:07.014 # ...`.
fn sentinel_log_time(line: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let stamp: Vec<&str> = line.split_whitespace().skip(1).take(4).collect();
    let text = stamp.join(" ");
    chrono::NaiveDateTime::parse_from_str(&text, "%d %b %Y %H:%M:%S%.3f")
        .ok()
        .map(|naive| naive.and_utc())
}

/// A /24 under 10.151 that overlaps no network of this Docker engine, so
/// that a check never clashes with a stack (or a leftover project) already
/// running here.
pub fn free_subnet_prefix() -> String {
    let networks = stdout(Command::new("docker").args(["network", "ls", "-q"]));
    let used: Vec<(u32, u32)> = if networks.is_empty() {
        Vec::new()
    } else {
        let mut inspect = Command::new("docker");
        inspect.args([
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
        ]);
        inspect.args(networks.lines());
        stdout(&mut inspect)
            .split_whitespace()
            .filter_map(cidr_range)
            .collect()
    };
    let start = std::process::id() % 100;
    (0..100)
        .map(|i| format!("10.151.{}", 100 + (start + i) % 100))
        .find(|prefix| {
            let (low, high) = cidr_range(&format!("{prefix}.0/24")).expect("a /24");
            used.iter().all(|(l, h)| high < *l || low > *h)
        })
        .expect("a free 10.151.x.0/24")
}

/// First and last address of an IPv4 CIDR block (IPv6 ones are skipped).
fn cidr_range(cidr: &str) -> Option<(u32, u32)> {
    let (address, bits) = cidr.split_once('/')?;
    let address: std::net::Ipv4Addr = address.parse().ok()?;
    let bits: u32 = bits.parse().ok().filter(|b| *b <= 32)?;
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    let low = u32::from(address) & mask;
    Some((low, low | !mask))
}

/// Lines of each Redis and Sentinel log printed when the check fails.
const LOG_TAIL_LINES: usize = 60;

impl Drop for ComposeProject {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The project goes away below with its containers: what the
            // Sentinels and nodes said is often the only trace of a failure.
            let services = DATA_NODES.iter().map(|(name, _)| *name).chain(SENTINELS);
            for service in services {
                // Not self.containers(): a second panic here would abort
                // before the project is taken down.
                let Ok(listing) = Command::new("docker")
                    .args(["ps", "-aq", "--filter"])
                    .arg(format!("label=com.docker.compose.project={}", self.project))
                    .arg("--filter")
                    .arg(format!("label=com.docker.compose.service={service}"))
                    .output()
                else {
                    continue;
                };
                for id in String::from_utf8_lossy(&listing.stdout).lines() {
                    let Ok(logs) = Command::new("docker").args(["logs", id]).output() else {
                        continue;
                    };
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&logs.stdout),
                        String::from_utf8_lossy(&logs.stderr)
                    );
                    let lines: Vec<&str> = text.lines().collect();
                    eprintln!(
                        "----- {service} (last {LOG_TAIL_LINES} lines) -----\n{}",
                        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
                    );
                }
            }
        }
        if std::env::var_os("EVERGREEN_DOCKER_KEEP").is_some() {
            eprintln!(
                "EVERGREEN_DOCKER_KEEP set: project {} left running",
                self.project
            );
            return;
        }
        let _ = self
            .command(&["down", "--volumes", "--remove-orphans", "--timeout", "10"])
            .output();
    }
}
