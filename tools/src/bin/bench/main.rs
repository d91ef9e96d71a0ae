//! The benchmark (`scripts/bench`): starts the native stack (nginx from the
//! shipped template, two API replicas, Redis master + 2 replicas + 3
//! Sentinels) and, in the same run on the same machine, measures
//!
//! - ceilings: nginx answering `return 200` itself, the shipped nginx config
//!   proxying (with keepalive) to a minimal upstream that returns a
//!   product's JSON, and `redis-benchmark` GET/SET/EVALSHA on the master;
//! - the API directly (one replica, no nginx) and through nginx with `wrk`,
//!   in interleaved rounds: a product, a catalog page; through nginx:
//!   sign-in, purchases (stock checked afterwards), a product while
//!   sign-ins run;
//! - a mixed scenario with the load tool (`loadgen/scenarios/shopping.json`);
//! - for every row, the CPU each tier spent per request ([`cpu`]);
//! - Redis memory per purchase and per user, peak RSS of each API process,
//!   and the API's cold start to ready.
//!
//! It checks its targets (bench/README.md) on ratios from this one run ([`report`]).
//! Results go to `<out>/latest.json` and `<out>/latest.md`.
//!
//! `bench --smoke` runs everything for a second each: the suite uses it to
//! check the pipeline works, not to measure.

mod cpu;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evergreen_api::redis::Keys;
use evergreen_tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD};
use evergreen_tests::client::{Api, Session, expect};
use evergreen_tests::gateway::{
    Gateway, GatewayOptions, loadgen_command, nginx_program, workspace_binary,
};
use evergreen_tests::redis_ha::{render, users};
use evergreen_tests::wait;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use report::{Memory, Results, Row};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

/// Connections of the HTTP measurements (the target is at 64).
const CONNECTIONS: u32 = 64;
/// Sign-ins queue for the API's few hashing threads (~30 ms a hash): fewer
/// connections.
pub const LOGIN_CONNECTIONS: u32 = 8;
const STOCK: i64 = 1_000_000_000;
/// Customers buying in the purchase row, in turn.
const BUYERS: usize = 200;
/// The memory per purchase is measured over this many purchases by
/// `MEMORY_BUYERS` new customers, 100 each: a customer's index of purchases
/// stays in Redis's compact encoding up to 128 entries
/// (`zset-max-listpack-entries`), as nearly every real customer's does (the
/// purchase row's buyers make hundreds each, at whatever rate the machine
/// allows).
const MEMORY_PURCHASES: usize = 10_000;
const MEMORY_BUYERS: usize = 100;

#[derive(Debug)]
struct Args {
    smoke: bool,
    out: PathBuf,
    seconds: u32,
}

fn args() -> Args {
    let mut args = Args {
        smoke: false,
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/results"),
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => {
                args.smoke = true;
                args.seconds = 1;
            }
            "--out" => args.out = it.next().expect("--out DIR").into(),
            "--seconds" => {
                args.seconds = it.next().and_then(|s| s.parse().ok()).expect("--seconds N")
            }
            other => panic!("unknown argument {other}; use --smoke, --out DIR, --seconds N"),
        }
    }
    args
}

/// One `wrk` run.
#[derive(Debug, Clone, Serialize)]
pub struct Http {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

fn wrk(url: &str, connections: u32, seconds: u32, script: Option<&Path>) -> Http {
    let mut command = Command::new("wrk");
    command
        .arg("--latency")
        .args(["-t", "2", "-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s"), "--timeout", "5s"]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(url)
        .output()
        .expect("wrk runs (Debian package wrk)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "wrk failed: {text}");
    parse_wrk(&text).unwrap_or_else(|| panic!("unexpected wrk output:\n{text}"))
}

/// `wrk` against every one of `urls` at once, the connections shared among
/// them: requests and rates add up; p50 and p99 are the worst of the runs.
fn wrk_each(urls: &[String], connections: u32, seconds: u32) -> Http {
    let runs: Vec<Http> = std::thread::scope(|scope| {
        let share = (connections / urls.len() as u32).max(1);
        let handles: Vec<_> = urls
            .iter()
            .map(|url| scope.spawn(move || wrk(url, share, seconds, None)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("wrk thread"))
            .collect()
    });
    Http {
        requests_per_sec: runs.iter().map(|h| h.requests_per_sec).sum(),
        p50_ms: runs.iter().map(|h| h.p50_ms).fold(0.0, f64::max),
        p99_ms: runs.iter().map(|h| h.p99_ms).fold(0.0, f64::max),
        requests: runs.iter().map(|h| h.requests).sum(),
        errors: runs.iter().map(|h| h.errors).sum(),
    }
}

fn parse_wrk(text: &str) -> Option<Http> {
    let millis = |value: &str| -> Option<f64> {
        let split = value.find(|c: char| c.is_ascii_alphabetic())?;
        let (number, unit) = value.split_at(split);
        let number: f64 = number.parse().ok()?;
        Some(match unit {
            "us" => number / 1000.0,
            "ms" => number,
            "s" => number * 1000.0,
            "m" => number * 60_000.0,
            _ => return None,
        })
    };
    let mut http = Http {
        requests_per_sec: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        requests: 0,
        errors: 0,
    };
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => http.p50_ms = millis(value)?,
            ["99%", value] => http.p99_ms = millis(value)?,
            ["Requests/sec:", value] => http.requests_per_sec = value.parse().ok()?,
            [count, "requests", "in", ..] => http.requests = count.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", count] => {
                http.errors += count.parse::<u64>().ok()?
            }
            ["Socket", "errors:", rest @ ..] => {
                http.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    (http.requests_per_sec > 0.0).then_some(http)
}

/// A wrk Lua script that POSTs `body` with a unique `Idempotency-Key` per
/// request, signed in as each of `tokens` in turn (as many buyers).
fn purchase_script(dir: &Path, body: &Value, tokens: &[String]) -> PathBuf {
    let mut lua = String::from(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    );
    let _ = writeln!(lua, "wrk.body = [[{body}]]");
    lua.push_str("local tokens = {\n");
    for token in tokens {
        let _ = writeln!(lua, "  \"Bearer {token}\",");
    }
    // Each wrk thread has its own Lua state: number the threads so keys
    // never collide.
    let run = uuid::Uuid::new_v4().simple();
    let _ = write!(
        lua,
        "}}\nlocal threads = 0\nfunction setup(thread)\n  threads = threads + 1\n  thread:set(\"tid\", threads)\nend\n\
         local n = 0\nfunction request()\n  n = n + 1\n  \
         wrk.headers[\"Authorization\"] = tokens[(n % #tokens) + 1]\n  \
         wrk.headers[\"Idempotency-Key\"] = \"bench-{run}-\" .. tid .. \"-\" .. n\n  return wrk.format()\nend\n"
    );
    let path = dir.join("purchase.lua");
    std::fs::write(&path, lua).expect("lua script");
    path
}

/// An nginx of its own for the ceilings: `return 200` on one port, and the
/// shipped template (same proxy path as the real stack) in front of a
/// minimal upstream that returns `product_json`.
struct CeilingNginx {
    static_url: String,
    proxy_url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl CeilingNginx {
    fn start(workers: &str, product_json: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let (static_port, proxy_port, upstream_port, status_port) = (
            wait::free_port(),
            wait::free_port(),
            wait::free_port(),
            wait::free_port(),
        );
        let vars = HashMap::from([
            ("NGINX_PORT", proxy_port.to_string()),
            ("NGINX_STATUS_PORT", status_port.to_string()),
            // Unused: an IP address in proxy_pass needs no resolving.
            ("NGINX_RESOLVER", "127.0.0.1".to_owned()),
            ("API_HOST", "127.0.0.1".to_owned()),
            ("API_PORT", upstream_port.to_string()),
            ("NGINX_AUTH_RATE", "2r/s".to_owned()),
            ("NGINX_AUTH_BURST", "10".to_owned()),
            // All load comes from one address.
            ("NGINX_READ_RATE", "100000r/s".to_owned()),
            ("NGINX_READ_BURST", "100000".to_owned()),
        ]);
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../nginx/templates/default.conf.template"),
        )
        .expect("template");
        std::fs::write(
            dir.path().join("shipped.conf"),
            render(&template, &vars).expect("every placeholder has a value"),
        )
        .expect("config");
        let body = product_json.replace('\'', "\\'");
        let config = format!(
            "daemon off;\nworker_processes {workers};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             server {{ listen 127.0.0.1:{static_port}; location / {{ default_type application/json; return 200 '{{\"ok\":true}}'; }} }}\n  \
             server {{ listen 127.0.0.1:{upstream_port}; access_log off; location / {{ default_type application/json; return 200 '{body}'; }} }}\n  \
             include {d}/shipped.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), config).expect("config");
        let child = Command::new(nginx_program())
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let ceiling = Self {
            static_url: format!("http://127.0.0.1:{static_port}/"),
            proxy_url: format!("http://127.0.0.1:{proxy_port}/api/v1/products/minimal"),
            child,
            _dir: dir,
        };
        for port in [static_port, proxy_port] {
            until_listening(port);
        }
        ceiling
    }
}

fn until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for CeilingNginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// `redis-benchmark` requests/s per test, on the master.
fn redis_benchmark(
    port: u16,
    password: &str,
    requests: u32,
    extra: &[&str],
) -> BTreeMap<String, f64> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", users::ADMIN, "-a", password])
        .args([
            "-c",
            &CONNECTIONS.to_string(),
            "-n",
            &requests.to_string(),
            "--csv",
        ])
        .args(extra)
        .output()
        .expect("redis-benchmark runs (Debian package redis-tools)");
    let text = String::from_utf8_lossy(&output.stdout);
    // "test","rps","avg_latency_ms",...
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
            Some((fields.first()?.to_string(), fields.get(1)?.parse().ok()?))
        })
        .collect()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Spawns one more API process with a replica's environment and times it
/// from spawn to the first 200 of /health/ready.
fn cold_start(env: &[(String, String)]) -> Duration {
    let (port, metrics_port) = (wait::free_port(), wait::free_port());
    let started = Instant::now();
    let mut child = Command::new(workspace_binary("api"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("EVERGREEN_SERVER__HOST", "127.0.0.1")
        .env("EVERGREEN_SERVER__PORT", port.to_string())
        .env("EVERGREEN_SERVER__METRICS_PORT", metrics_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("api starts");
    let ready = loop {
        if health_ready(port) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the API never got ready"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = child.kill();
    let _ = child.wait();
    ready
}

/// `GET /health/ready` answered 200, by hand: spawning curl per poll would
/// cost more than the resolution we want.
fn health_ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health/ready HTTP/1.0\r\nHost: bench\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// Sum of a counter over every replica's /metrics.
async fn replica_counter(gateway: &Gateway, name: &str) -> f64 {
    let mut total = 0.0;
    for target in gateway.metrics_targets() {
        let text = reqwest::get(format!("http://{target}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        total += text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores ({cpu}), {memory_gib:.0} GiB RAM")
}

/// Runs `measure` (a wrk run) and charges each tier's CPU to its requests.
fn row(name: &str, tiers: &cpu::Tiers, measure: impl FnOnce() -> Http) -> Row {
    let before = tiers.sample();
    let http = measure();
    let cpu_us_per_request = before.per_request(&tiers.sample(), http.requests);
    Row {
        name: name.to_owned(),
        http,
        cpu_us_per_request,
    }
}

/// Two rows whose ratio is a target, measured in 3 interleaved rounds
/// (a b, b a, a b) of a third of the time each, so that a spell of noise
/// from other tenants of the machine weighs on both alike. Rates and CPU
/// are totals over the rounds; p50 and p99 are the median round's.
fn paired_rows(
    a: (&str, &cpu::Tiers, &dyn Fn() -> Http),
    b: (&str, &cpu::Tiers, &dyn Fn() -> Http),
) -> (Row, Row) {
    let (mut rounds_a, mut rounds_b) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let measure_a = || row(a.0, a.1, a.2);
        let measure_b = || row(b.0, b.1, b.2);
        if round == 1 {
            rounds_b.push(measure_b());
            rounds_a.push(measure_a());
        } else {
            rounds_a.push(measure_a());
            rounds_b.push(measure_b());
        }
    }
    (merge_rounds(rounds_a), merge_rounds(rounds_b))
}

fn merge_rounds(mut rounds: Vec<Row>) -> Row {
    let requests: u64 = rounds.iter().map(|r| r.http.requests).sum();
    // Each round ran the same time: the mean rate is the rate over them all.
    let requests_per_sec =
        rounds.iter().map(|r| r.http.requests_per_sec).sum::<f64>() / rounds.len() as f64;
    let weighted = |f: fn(&cpu::PerRequest) -> f64| {
        rounds
            .iter()
            .map(|r| f(&r.cpu_us_per_request) * r.http.requests as f64)
            .sum::<f64>()
            / requests.max(1) as f64
    };
    let cpu_us_per_request = cpu::PerRequest {
        nginx_us: weighted(|c| c.nginx_us),
        api_us: weighted(|c| c.api_us),
        redis_master_us: weighted(|c| c.redis_master_us),
        redis_others_us: weighted(|c| c.redis_others_us),
        rest_us: weighted(|c| c.rest_us),
    };
    let errors = rounds.iter().map(|r| r.http.errors).sum();
    rounds.sort_by(|x, y| x.http.requests_per_sec.total_cmp(&y.http.requests_per_sec));
    let median = rounds.swap_remove(rounds.len() / 2);
    Row {
        name: median.name,
        http: Http {
            requests_per_sec,
            p50_ms: median.http.p50_ms,
            p99_ms: median.http.p99_ms,
            requests,
            errors,
        },
        cpu_us_per_request,
    }
}

/// `INFO memory` of a node, as numbers.
async fn info_memory(connection: &mut MultiplexedConnection) -> HashMap<String, f64> {
    let text: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(connection)
        .await
        .expect("INFO memory");
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Bytes of data: used memory less what does not grow with the data set
/// (replication backlog, client buffers, the AOF buffer).
async fn data_bytes(connection: &mut MultiplexedConnection) -> f64 {
    let info = info_memory(connection).await;
    let get = |k: &str| info.get(k).copied().unwrap_or(0.0);
    get("used_memory")
        - get("mem_replication_backlog")
        - get("mem_clients_slaves")
        - get("mem_clients_normal")
        - get("mem_aof_buffer")
}

/// `MEMORY USAGE` of `key`, every element counted.
async fn memory_usage(connection: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(connection)
        .await
        .expect("MEMORY USAGE")
}

/// `MEMORY USAGE` of the first key matching `pattern`.
async fn memory_usage_of_one(connection: &mut MultiplexedConnection, pattern: &str) -> u64 {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await
            .expect("SCAN");
        if let Some(key) = keys.first() {
            return memory_usage(connection, key).await;
        }
        if next == 0 {
            return 0;
        }
        cursor = next;
    }
}

/// Redis memory per one-line purchase: `purchases` made by `buyers` new
/// customers in turn (16 at a time), the growth of the master's data over
/// them, and again once their idempotency records are gone. `bytes_per_user`
/// is left for the caller.
async fn memory_per_purchase(
    api: &Api,
    operator: &mut MultiplexedConnection,
    prefix: &str,
    product_id: &str,
    (purchases, buyers): (usize, usize),
) -> Memory {
    let mut customers = Vec::new();
    for _ in 0..buyers {
        customers.push(api.new_customer().await);
    }
    let keys = Keys::new(prefix);
    let records: Vec<String> = (0..purchases)
        .map(|i| keys.idempotency(customers[i % buyers].user_id, &format!("memory-{i}")))
        .collect();
    let body = json!({"items": [{"product_id": product_id, "quantity": 1}]});
    let before = data_bytes(operator).await;
    futures_util::stream::iter(0..purchases)
        .for_each_concurrent(16, |i| {
            let (token, body) = (&customers[i % buyers].access_token, &body);
            async move {
                let key = format!("memory-{i}");
                expect(
                    api.purchase(token, Some(&key), body).await,
                    StatusCode::CREATED,
                )
                .await;
            }
        })
        .await;
    let per_purchase = |bytes: f64| (bytes - before) / purchases as f64;
    let bytes_per_purchase = per_purchase(data_bytes(operator).await);
    let purchase_hash_bytes = memory_usage_of_one(operator, &format!("{prefix}purchase:*")).await;
    let idempotency_record_bytes = memory_usage(operator, &records[0]).await;
    // What stays once the idempotency records expire (24 h): the same
    // growth with them deleted, as their expiry would.
    for batch in records.chunks(1000) {
        let _: () = redis::cmd("DEL")
            .arg(batch)
            .query_async(operator)
            .await
            .expect("DEL");
    }
    Memory {
        bytes_per_purchase,
        bytes_per_purchase_after_key_lifetime: per_purchase(data_bytes(operator).await),
        purchases_measured: purchases as f64,
        purchase_hash_bytes,
        idempotency_record_bytes,
        bytes_per_user: 0.0,
        users_measured: 0,
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let seconds = args.seconds;
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:>5.0}s] {what}", started.elapsed().as_secs_f64());
    let nginx_workers = "auto";
    step("starting Redis HA, nginx and two API replicas");
    let gateway = Gateway::start_with(
        2,
        GatewayOptions {
            nginx_workers: nginx_workers.into(),
            // All load comes from one address: lift the sign-in brake.
            auth_rate: "100000r/s".into(),
            auth_burst: 100_000,
            // As in a container: one actix worker per core.
            api_workers: 0,
            // As shipped: one log line per request.
            api_env: vec![("RUST_LOG".into(), "info".into())],
            ..GatewayOptions::default()
        },
    )
    .await;
    let pids: Vec<u32> = gateway.replicas.iter().filter_map(|r| r.pid()).collect();
    let master = gateway.redis.master_port().await;
    let tiers = cpu::Tiers {
        nginx_master: Some(gateway.nginx.pid()),
        api: pids.clone(),
        redis_master: gateway.redis.pid_of(master),
        redis_others: gateway
            .redis
            .data_ports()
            .into_iter()
            .chain(gateway.redis.sentinel_ports())
            .filter(|&port| port != master)
            .filter_map(|port| gateway.redis.pid_of(port))
            .collect(),
    };
    // Direct rows go to the replicas themselves: nginx is idle.
    let direct_tiers = cpu::Tiers {
        nginx_master: None,
        ..tiers.clone()
    };
    // Peak RSS so far at each step: which load grows it.
    let step = |what: &str| {
        let rss: Vec<String> = pids
            .iter()
            .map(|&p| format!("{:.0}", peak_rss_mib(p)))
            .collect();
        eprintln!(
            "[{:>5.0}s] {what} (API peak RSS so far: {} MiB)",
            started.elapsed().as_secs_f64(),
            rss.join(", ")
        );
    };
    let base = gateway.nginx.base_url();
    let direct = gateway.replicas[0].base_url();
    let api = Api::new(&base);
    let admin = api.login_ok(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let product = expect(
        api.create_product(
            &admin.access_token,
            &json!({"sku": "BENCH-1", "name": "Benchmark product", "description": "A product the benchmark reads and buys.",
                    "price_cents": 1999, "currency": "USD", "stock": STOCK, "category": "bench"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let product_id = product["id"].as_str().expect("id").to_owned();
    let product_json = expect(api.get_product(&product_id).await, StatusCode::OK)
        .await
        .to_string();
    for n in 0..40 {
        let body = json!({"sku": format!("BENCH-LIST-{n}"), "name": format!("Listed {n}"), "description": "",
                          "price_cents": 100 + n, "currency": "USD", "stock": 10, "category": "bench"});
        expect(
            api.create_product(&admin.access_token, &body).await,
            StatusCode::CREATED,
        )
        .await;
    }
    let mut operator = gateway
        .redis
        .connect_as(master, users::ADMIN, &gateway.redis.credentials().admin)
        .await
        .expect("the operator connects to the master");

    step("memory per registered user");
    let users = if args.smoke { 8 } else { BUYERS as u32 };
    let before_users = data_bytes(&mut operator).await;
    let mut customers = Vec::new();
    for _ in 0..users {
        customers.push(api.new_customer().await);
    }
    let bytes_per_user = (data_bytes(&mut operator).await - before_users) / f64::from(users);
    let scripts = tempfile::tempdir().expect("temp dir");
    let mut rows = Vec::new();

    step("ceilings: nginx return 200, nginx proxying to a minimal upstream");
    let ceiling = CeilingNginx::start(nginx_workers, &product_json);
    let ceiling_tiers = cpu::Tiers {
        nginx_master: Some(ceiling.child.id()),
        ..cpu::Tiers::default()
    };
    rows.push(row("ceiling: nginx return 200", &ceiling_tiers, || {
        wrk(&ceiling.static_url, CONNECTIONS, seconds, None)
    }));
    rows.push(row(
        "ceiling: nginx proxy to minimal upstream",
        &ceiling_tiers,
        || wrk(&ceiling.proxy_url, CONNECTIONS, seconds, None),
    ));
    drop(ceiling);

    step("ceilings: redis-benchmark on the master");
    // As the operator: redis-benchmark's GET/SET keys are outside the API's.
    let password = gateway.redis.credentials().admin.clone();
    let requests = if args.smoke { 2_000 } else { 200_000 };
    let mut redis = redis_benchmark(master, &password, requests, &["-t", "get,set"]);
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("redis.call('INCR', KEYS[1]); return redis.call('GET', KEYS[1])")
        .query_async(&mut operator)
        .await
        .expect("SCRIPT LOAD");
    let evalsha = redis_benchmark(
        master,
        &password,
        requests,
        &["EVALSHA", &sha, "1", "bench:evalsha"],
    );
    redis.insert(
        "EVALSHA".into(),
        evalsha.values().next().copied().unwrap_or(0.0),
    );

    for (name, path) in [
        (
            "GET /products/{id}",
            format!("/api/v1/products/{product_id}"),
        ),
        (
            "GET /products?limit=20",
            "/api/v1/products?limit=20".to_owned(),
        ),
    ] {
        step(&format!("{name}: one replica directly"));
        rows.push(row(&format!("one replica: {name}"), &direct_tiers, || {
            wrk(&format!("{direct}{path}"), CONNECTIONS, seconds, None)
        }));
        step(&format!(
            "{name}: both replicas directly and through nginx, interleaved"
        ));
        let round_seconds = seconds.div_ceil(3).max(1);
        let replica_urls: Vec<String> = gateway
            .replicas
            .iter()
            .map(|r| format!("{}{path}", r.base_url()))
            .collect();
        let (alone, proxied) = paired_rows(
            (&format!("direct: {name}"), &direct_tiers, &|| {
                wrk_each(&replica_urls, CONNECTIONS, round_seconds)
            }),
            (name, &tiers, &|| {
                wrk(&format!("{base}{path}"), CONNECTIONS, round_seconds, None)
            }),
        );
        rows.extend([alone, proxied]);
    }

    step("POST /api/v1/auth/login");
    // One account per connection, as sign-ins come from different people:
    // one account signing in on 8 connections at once meets its own
    // password-check throttle (checks in flight count as failures).
    let signers = &customers[..customers.len().min(LOGIN_CONNECTIONS as usize)];
    let login = login_script(scripts.path(), signers);
    let login_url = format!("{base}/api/v1/auth/login");
    rows.push(row("POST /auth/login", &tiers, || {
        wrk(&login_url, LOGIN_CONNECTIONS, seconds, Some(&login))
    }));

    step("GET /api/v1/products/{id} while sign-ins run");
    let background_login = {
        let (login, login_url) = (login.clone(), login_url.clone());
        std::thread::spawn(move || wrk(&login_url, LOGIN_CONNECTIONS, seconds + 1, Some(&login)))
    };
    std::thread::sleep(Duration::from_millis(500));
    let product_url = format!("{base}/api/v1/products/{product_id}");
    rows.push(row("GET /products/{id} while sign-ins run", &tiers, || {
        wrk(&product_url, CONNECTIONS, seconds, None)
    }));
    let logins_meanwhile = background_login.join().expect("wrk thread");

    step("POST /api/v1/purchases");
    // Many buyers, as in a store. The sign-in runs above
    // made far more than 20 sessions of some of them, so their first ones
    // have ended (the least recently used go first): sign in afresh.
    let mut buyers = Vec::new();
    for customer in &customers[..customers.len().min(BUYERS)] {
        buyers.push(
            api.login_ok(&customer.email, &customer.password)
                .await
                .access_token,
        );
    }
    let stock_before = expect(api.get_product(&product_id).await, StatusCode::OK).await["stock"]
        .as_i64()
        .expect("stock");
    let purchases_before = replica_counter(&gateway, "evergreen_purchases_total").await;
    let purchase = purchase_script(
        scripts.path(),
        &json!({"items": [{"product_id": product_id, "quantity": 1}]}),
        &buyers,
    );
    let purchases = row("POST /purchases", &tiers, || {
        wrk(
            &format!("{base}/api/v1/purchases"),
            CONNECTIONS,
            seconds,
            Some(&purchase),
        )
    });
    // wrk stops with requests in flight, which the API still completes (each
    // within its 3 s operation bound), and replicas serve the stock: read
    // until the counts stop moving.
    let (mut sold, mut recorded) = (-1, -1.0);
    let settle_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stock = expect(api.get_product(&product_id).await, StatusCode::OK).await["stock"]
            .as_i64()
            .expect("stock");
        let now_recorded =
            replica_counter(&gateway, "evergreen_purchases_total").await - purchases_before;
        let now_sold = stock_before - stock;
        let still = now_sold == sold && now_recorded == recorded;
        (sold, recorded) = (now_sold, now_recorded);
        if still || Instant::now() > settle_deadline {
            break;
        }
    }
    let memory = memory_per_purchase(
        &api,
        &mut operator,
        gateway.key_prefix(),
        &product_id,
        // Even a smoke run makes enough records that deleting them moves
        // used_memory well beyond its noise (dict resizes, buffers).
        if args.smoke {
            (1_000, 10)
        } else {
            (MEMORY_PURCHASES, MEMORY_BUYERS)
        },
    )
    .await;
    let memory = Memory {
        bytes_per_user,
        users_measured: u64::from(users),
        ..memory
    };
    let purchases_2xx = purchases
        .http
        .requests
        .saturating_sub(purchases.http.errors);
    rows.push(purchases);

    step("mixed scenario with loadgen");
    let report_dir = scripts.path().join("loadgen");
    let total = if args.smoke {
        300
    } else {
        3_000 * u64::from(seconds)
    };
    let mut mixed = Value::Null;
    rows.push(row(
        "mixed scenario (loadgen, shopping.json)",
        &tiers,
        || {
            let scenario =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadgen/scenarios/shopping.json");
            let loadgen = loadgen_command(&scenario, &base, &report_dir)
                .args(["--concurrency", &CONNECTIONS.to_string()])
                .args(["-n", &total.to_string(), "--timeout", "5m", "--quiet"])
                .status()
                .expect("loadgen runs");
            assert!(loadgen.success(), "loadgen failed");
            mixed = serde_json::from_str(
                &std::fs::read_to_string(report_dir.join("summary.json")).expect("summary"),
            )
            .expect("JSON");
            Http {
                requests_per_sec: mixed["throughput_rps"].as_f64().unwrap_or(0.0),
                p50_ms: mixed["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
                p99_ms: mixed["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                requests: mixed["requests"].as_u64().unwrap_or(0),
                errors: mixed["failed"].as_u64().unwrap_or(0),
            }
        },
    ));

    step("peak RSS and cold start");
    let rss: Vec<f64> = gateway
        .replicas
        .iter()
        .filter_map(|r| r.pid())
        .map(peak_rss_mib)
        .collect();
    let env = gateway.replicas[0].env().to_vec();
    let cold: Vec<f64> = (0..5)
        .map(|_| cold_start(&env).as_secs_f64() * 1000.0)
        .collect();

    let mut results = Results {
        machine: machine(),
        when: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        seconds_per_run: seconds,
        connections: CONNECTIONS,
        rows,
        redis_benchmark: redis.into_iter().collect(),
        purchases: json!({
            "stock_sold": sold,
            "purchases_recorded": recorded,
            "wrk_2xx": purchases_2xx,
            "stock_consistent": sold as f64 == recorded,
            "logins_per_sec_during_get_row": logins_meanwhile.requests_per_sec,
        }),
        memory,
        mixed_scenario: mixed,
        api_peak_rss_mib: rss,
        api_cold_start_ms: cold,
        targets: Vec::new(),
    };
    results.check_targets();
    step("done");
    results.write(&args.out);
}

/// A wrk Lua script that signs in as each of `sessions` in turn.
fn login_script(dir: &Path, sessions: &[Session]) -> PathBuf {
    let mut lua = String::from(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nlocal bodies = {\n",
    );
    for s in sessions {
        let _ = writeln!(
            lua,
            "  [[{}]],",
            json!({"email": s.email, "password": s.password})
        );
    }
    lua.push_str(
        "}\nlocal n = 0\nfunction request()\n  n = n + 1\n  \
         return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])\nend\n",
    );
    let path = dir.join("login.lua");
    std::fs::write(&path, lua).expect("lua script");
    path
}
