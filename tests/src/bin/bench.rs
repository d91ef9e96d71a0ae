//! The benchmark (`scripts/bench`): starts the native stack (nginx from the
//! shipped template, two API replicas, Redis master + 2 replicas + 3
//! Sentinels) and, in the same run on the same machine, measures
//!
//! - ceilings: nginx answering `return 200` itself, the shipped nginx config
//!   proxying to a minimal upstream that returns a product's JSON, and
//!   `redis-benchmark` GET/SET/EVALSHA on the same Redis master;
//! - the API through nginx with `wrk`: a product, a catalog page, sign-in,
//!   purchases (stock checked afterwards), a product while sign-ins run;
//! - a mixed scenario with the load tool (`loadgen/scenarios/shopping.json`);
//! - peak RSS of each API process, and the API's cold start to ready.
//!
//! Every API figure is also given as a ratio to its ceiling. Results go to
//! `<out>/latest.json` and `<out>/latest.md`.
//!
//! `bench --smoke` runs everything for a second each: the suite uses it to
//! check the pipeline works, not to measure.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evergreen_tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD};
use evergreen_tests::client::{Api, expect};
use evergreen_tests::gateway::{Gateway, GatewayOptions, nginx_program, workspace_binary};
use evergreen_tests::redis_ha::{render, users};
use evergreen_tests::wait;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

/// Connections of the HTTP measurements (the target is at 64).
const CONNECTIONS: u32 = 64;
/// Sign-ins queue for the API's few hashing threads (~30 ms a hash): fewer
/// connections.
const LOGIN_CONNECTIONS: u32 = 8;
const STOCK: i64 = 1_000_000_000;

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
struct Http {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    /// Non-2xx/3xx responses plus socket errors.
    errors: u64,
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

/// A wrk Lua script that POSTs `body` (with a bearer token, and a unique
/// `Idempotency-Key` per request when `unique_key`).
fn post_script(
    dir: &Path,
    name: &str,
    body: &Value,
    token: Option<&str>,
    unique_key: bool,
) -> PathBuf {
    let mut lua = String::from(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    );
    let _ = writeln!(lua, "wrk.body = [[{body}]]");
    if let Some(token) = token {
        let _ = writeln!(lua, "wrk.headers[\"Authorization\"] = \"Bearer {token}\"");
    }
    if unique_key {
        // Each wrk thread has its own Lua state: number the threads so keys
        // never collide.
        let run = uuid::Uuid::new_v4().simple();
        let _ = write!(
            lua,
            "local threads = 0\nfunction setup(thread)\n  threads = threads + 1\n  thread:set(\"tid\", threads)\nend\n\
             local n = 0\nfunction request()\n  n = n + 1\n  \
             wrk.headers[\"Idempotency-Key\"] = \"bench-{run}-\" .. tid .. \"-\" .. n\n  return wrk.format()\nend\n"
        );
    }
    let path = dir.join(format!("{name}.lua"));
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

#[derive(Debug, Serialize)]
struct Results {
    machine: String,
    when: String,
    seconds_per_run: u32,
    connections: u32,
    ceilings: BTreeMap<String, f64>,
    http: BTreeMap<String, Http>,
    /// Each API figure over its ceiling (nginx proxying to a minimal upstream).
    ratio_to_proxy_ceiling: BTreeMap<String, f64>,
    purchases: Value,
    login_isolation: Value,
    mixed_scenario: Value,
    api_peak_rss_mib: Vec<f64>,
    api_cold_start_ms: Vec<f64>,
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
            ..GatewayOptions::default()
        },
    )
    .await;
    let pids: Vec<u32> = gateway.replicas.iter().filter_map(|r| r.pid()).collect();
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
    let customer = api.new_customer().await;
    let scripts = tempfile::tempdir().expect("temp dir");

    step("ceilings: nginx return 200, nginx proxying to a minimal upstream");
    let ceiling = CeilingNginx::start(nginx_workers, &product_json);
    let nginx_static = wrk(&ceiling.static_url, CONNECTIONS, seconds, None);
    let nginx_proxy = wrk(&ceiling.proxy_url, CONNECTIONS, seconds, None);
    drop(ceiling);
    let mut http = BTreeMap::new();
    http.insert("ceiling: nginx return 200".to_owned(), nginx_static.clone());
    http.insert(
        "ceiling: nginx proxy to minimal upstream".to_owned(),
        nginx_proxy.clone(),
    );

    step("ceilings: redis-benchmark on the master");
    let master = gateway.redis.master_port().await;
    // As the operator: redis-benchmark's GET/SET keys are outside the API's.
    let password = gateway.redis.credentials().admin.clone();
    let requests = if args.smoke { 2_000 } else { 200_000 };
    let mut redis = redis_benchmark(master, &password, requests, &["-t", "get,set"]);
    let sha = String::from_utf8_lossy(
        &Command::new("redis-cli")
            .args([
                "-p",
                &master.to_string(),
                "--user",
                users::ADMIN,
                "-a",
                &password,
                "--no-auth-warning",
            ])
            .args([
                "SCRIPT",
                "LOAD",
                "redis.call('INCR', KEYS[1]); return redis.call('GET', KEYS[1])",
            ])
            .output()
            .expect("redis-cli")
            .stdout,
    )
    .trim()
    .to_owned();
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

    step("GET /api/v1/products/{id}");
    let product_url = format!("{base}/api/v1/products/{product_id}");
    http.insert(
        "GET /products/{id}".to_owned(),
        wrk(&product_url, CONNECTIONS, seconds, None),
    );
    step("GET /api/v1/products?limit=20");
    http.insert(
        "GET /products?limit=20".to_owned(),
        wrk(
            &format!("{base}/api/v1/products?limit=20"),
            CONNECTIONS,
            seconds,
            None,
        ),
    );

    step("POST /api/v1/auth/login");
    let login = post_script(
        scripts.path(),
        "login",
        &json!({"email": customer.email, "password": customer.password}),
        None,
        false,
    );
    http.insert(
        "POST /auth/login".to_owned(),
        wrk(
            &format!("{base}/api/v1/auth/login"),
            LOGIN_CONNECTIONS,
            seconds,
            Some(&login),
        ),
    );

    step("GET /api/v1/products/{id} while sign-ins run");
    let login_url = format!("{base}/api/v1/auth/login");
    let background_login = {
        let login = login.clone();
        std::thread::spawn(move || wrk(&login_url, LOGIN_CONNECTIONS, seconds + 1, Some(&login)))
    };
    std::thread::sleep(Duration::from_millis(500));
    let during_logins = wrk(&product_url, CONNECTIONS, seconds, None);
    let logins_meanwhile = background_login.join().expect("wrk thread");

    step("POST /api/v1/purchases");
    // The sign-in runs above made far more than 20 sessions of this
    // customer, so its first one has ended (the least recently used goes
    // first): buy with a fresh one.
    let buyer = api.login_ok(&customer.email, &customer.password).await;
    let stock_before = expect(api.get_product(&product_id).await, StatusCode::OK).await["stock"]
        .as_i64()
        .expect("stock");
    let purchases_before = replica_counter(&gateway, "evergreen_purchases_total").await;
    let purchase = post_script(
        scripts.path(),
        "purchase",
        &json!({"items": [{"product_id": product_id, "quantity": 1}]}),
        Some(&buyer.access_token),
        true,
    );
    let purchases = wrk(
        &format!("{base}/api/v1/purchases"),
        CONNECTIONS,
        seconds,
        Some(&purchase),
    );
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
    http.insert("POST /purchases".to_owned(), purchases.clone());

    step("mixed scenario with loadgen");
    let report_dir = scripts.path().join("loadgen");
    let total = if args.smoke {
        300
    } else {
        3_000 * u64::from(seconds)
    };
    let loadgen = Command::new(workspace_binary("loadgen"))
        .args(["-f"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadgen/scenarios/shopping.json"))
        .args(["--host", &base, "--concurrency", &CONNECTIONS.to_string()])
        .args(["-n", &total.to_string(), "--timeout", "5m", "--quiet"])
        .arg("--report-dir")
        .arg(&report_dir)
        .args([
            "--admin-email",
            ADMIN_EMAIL,
            "--admin-password",
            ADMIN_PASSWORD,
        ])
        .status()
        .expect("loadgen runs");
    assert!(loadgen.success(), "loadgen failed");
    let mixed: Value = serde_json::from_str(
        &std::fs::read_to_string(report_dir.join("summary.json")).expect("summary"),
    )
    .expect("JSON");

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

    let get_product_alone = http["GET /products/{id}"].clone();
    let ceiling_rps = nginx_proxy.requests_per_sec;
    let mut ratio = BTreeMap::new();
    for (name, result) in &http {
        ratio.insert(name.clone(), result.requests_per_sec / ceiling_rps);
    }
    ratio.insert(
        "mixed scenario (loadgen)".into(),
        mixed["throughput_rps"].as_f64().unwrap_or(0.0) / ceiling_rps,
    );
    let mut ceilings = BTreeMap::from([
        ("nginx return 200".to_owned(), nginx_static.requests_per_sec),
        ("nginx proxy to minimal upstream".to_owned(), ceiling_rps),
    ]);
    for (test, rps) in redis {
        ceilings.insert(format!("redis-benchmark {test}"), rps);
    }
    let results = Results {
        machine: machine(),
        when: String::from_utf8_lossy(
            &Command::new("date")
                .args(["-u", "+%Y-%m-%d %H:%M UTC"])
                .output()
                .expect("date")
                .stdout,
        )
        .trim()
        .to_owned(),
        seconds_per_run: seconds,
        connections: CONNECTIONS,
        ceilings,
        http,
        ratio_to_proxy_ceiling: ratio,
        purchases: json!({
            "stock_sold": sold,
            "purchases_recorded": recorded,
            "wrk_2xx": purchases.requests.saturating_sub(purchases.errors),
            "stock_consistent": sold as f64 == recorded,
        }),
        login_isolation: json!({
            "get_product_p99_ms_alone": get_product_alone.p99_ms,
            "get_product_rps_alone": get_product_alone.requests_per_sec,
            "get_product_p99_ms_during_logins": during_logins.p99_ms,
            "get_product_rps_during_logins": during_logins.requests_per_sec,
            "logins_per_sec_meanwhile": logins_meanwhile.requests_per_sec,
        }),
        mixed_scenario: mixed,
        api_peak_rss_mib: rss,
        api_cold_start_ms: cold,
    };
    step("done");
    write_results(&args.out, &results);
}

fn write_results(dir: &Path, results: &Results) {
    std::fs::create_dir_all(dir).expect("results dir");
    let json = serde_json::to_string_pretty(results).expect("serializes");
    std::fs::write(dir.join("latest.json"), json).expect("latest.json");
    let markdown = markdown(results);
    std::fs::write(dir.join("latest.md"), &markdown).expect("latest.md");
    println!("{markdown}");
    println!("written: {}/latest.json and latest.md", dir.display());
}

fn markdown(r: &Results) -> String {
    let mut out = format!(
        "Measured {} on {}; nginx, 2 API replicas, Redis HA and the load generators on the same machine; \
         wrk {}s per row, {} connections (sign-in: {LOGIN_CONNECTIONS}).\n\n\
         | measurement | req/s | p50 ms | p99 ms | errors | of proxy ceiling |\n|---|---:|---:|---:|---:|---:|\n",
        r.when, r.machine, r.seconds_per_run, r.connections
    );
    // Ceilings first, then the API's routes.
    let mut rows: Vec<(&String, &Http)> = r.http.iter().collect();
    rows.sort_by_key(|(name, _)| !name.starts_with("ceiling"));
    for (name, h) in rows {
        let label = if name.starts_with("ceiling") {
            name.replace("nginx return 200", "nginx `return 200`")
        } else {
            format!("`{name}`")
        };
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.2} | {:.2} | {} | {:.0}% |",
            h.requests_per_sec,
            h.p50_ms,
            h.p99_ms,
            h.errors,
            100.0 * r.ratio_to_proxy_ceiling[name]
        );
    }
    let m = &r.mixed_scenario;
    let _ = writeln!(
        out,
        "| mixed scenario (loadgen, `shopping.json`, {} requests) | {:.0} | {:.2} | {:.2} | {} | {:.0}% |",
        m["requests"],
        m["throughput_rps"].as_f64().unwrap_or(0.0),
        m["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
        m["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
        m["failed"],
        100.0 * r.ratio_to_proxy_ceiling["mixed scenario (loadgen)"]
    );
    let redis: Vec<String> = r
        .ceilings
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("redis-benchmark ")
                .map(|t| format!("{t} {v:.0}/s"))
        })
        .collect();
    let _ = writeln!(
        out,
        "\n- Redis master ceiling (redis-benchmark, {} connections): {}.",
        r.connections,
        redis.join(", ")
    );
    let p = &r.purchases;
    let _ = writeln!(
        out,
        "- Purchases: stock sold {} = purchases recorded {} (consistent: {}).",
        p["stock_sold"], p["purchases_recorded"], p["stock_consistent"]
    );
    let l = &r.login_isolation;
    let _ = writeln!(
        out,
        "- `GET /products/{{id}}` alone: {:.0} req/s, p99 {:.2} ms; while {:.0} sign-ins/s run: {:.0} req/s, p99 {:.2} ms.",
        l["get_product_rps_alone"].as_f64().unwrap_or(0.0),
        l["get_product_p99_ms_alone"].as_f64().unwrap_or(0.0),
        l["logins_per_sec_meanwhile"].as_f64().unwrap_or(0.0),
        l["get_product_rps_during_logins"].as_f64().unwrap_or(0.0),
        l["get_product_p99_ms_during_logins"]
            .as_f64()
            .unwrap_or(0.0),
    );
    let rss: Vec<String> = r
        .api_peak_rss_mib
        .iter()
        .map(|m| format!("{m:.1}"))
        .collect();
    let mut cold = r.api_cold_start_ms.clone();
    cold.sort_by(f64::total_cmp);
    let _ = writeln!(
        out,
        "- API peak RSS per replica: {} MiB. Cold start to ready: median {:.0} ms (min {:.0}, max {:.0}).",
        rss.join(" and "),
        cold.get(cold.len() / 2).copied().unwrap_or(0.0),
        cold.first().copied().unwrap_or(0.0),
        cold.last().copied().unwrap_or(0.0),
    );
    out
}
