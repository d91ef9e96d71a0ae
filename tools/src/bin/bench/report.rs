//! What a run found, as `latest.json` and the Markdown table bench/README.md
//! links, with the targets checked against ratios from this one
//! run (never against absolute figures: the machine is shared and noisy).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::cpu::PerRequest;
use crate::{Http, LOGIN_CONNECTIONS};

/// One measured row: what the client saw and what each tier spent.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    #[serde(flatten)]
    pub http: Http,
    pub cpu_us_per_request: PerRequest,
}

#[derive(Debug, Serialize)]
pub struct Memory {
    /// Growth of the master's data (used memory less replication backlog,
    /// client buffers and AOF buffer) over 10,000 one-line purchases by 100
    /// customers.
    pub bytes_per_purchase: f64,
    /// The same once the purchases' idempotency records are gone, as they
    /// are 24 h after each purchase: what a purchase costs for good.
    pub bytes_per_purchase_after_key_lifetime: f64,
    pub purchases_measured: f64,
    /// `MEMORY USAGE` of one purchase's hash and its idempotency record;
    /// the rest of `bytes_per_purchase` is the user's index entry, the
    /// purchase log's entry and the key space's own entries.
    pub purchase_hash_bytes: u64,
    pub idempotency_record_bytes: u64,
    /// The same growth per registered user (user hash, email key, index).
    pub bytes_per_user: f64,
    pub users_measured: u64,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: String,
    pub when: String,
    pub seconds_per_run: u32,
    pub connections: u32,
    pub rows: Vec<Row>,
    pub redis_benchmark: Vec<(String, f64)>,
    pub purchases: Value,
    pub memory: Memory,
    pub mixed_scenario: Value,
    pub api_peak_rss_mib: Vec<f64>,
    pub api_cold_start_ms: Vec<f64>,
    pub targets: Vec<Target>,
}

/// One of the targets, checked.
#[derive(Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub measured: String,
    pub goal: String,
    pub met: bool,
}

impl Results {
    pub fn row(&self, name: &str) -> &Row {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no row {name}"))
    }

    /// The targets (bench/README.md), from this run's figures.
    pub fn check_targets(&mut self) {
        let rps = |name: &str| self.row(name).http.requests_per_sec;
        let p99 = |name: &str| self.row(name).http.p99_ms;
        let mut targets = Vec::new();
        let mut ratio = |what: &str, value: f64, at_least: f64| {
            targets.push(Target {
                what: what.to_owned(),
                measured: format!("{:.0}%", value * 100.0),
                goal: format!("≥ {:.0}%", at_least * 100.0),
                met: value >= at_least,
            });
        };
        ratio(
            "`GET /products/{id}` through nginx / the same replicas directly",
            rps("GET /products/{id}") / rps("direct: GET /products/{id}"),
            0.70,
        );
        ratio(
            "`GET /products?limit=20` through nginx / the same replicas directly",
            rps("GET /products?limit=20") / rps("direct: GET /products?limit=20"),
            0.60,
        );
        ratio(
            "`POST /purchases` / `GET /products/{id}`, both through nginx",
            rps("POST /purchases") / rps("GET /products/{id}"),
            0.45,
        );
        let p99_ratio = p99("GET /products/{id}") / p99("direct: GET /products/{id}");
        targets.push(Target {
            what: "`GET /products/{id}` p99 through nginx / directly".into(),
            measured: format!("{p99_ratio:.2}×"),
            goal: "≤ 2×".into(),
            met: p99_ratio <= 2.0,
        });
        let purchases = self.row("POST /purchases").http.errors;
        let consistent = self.purchases["stock_consistent"] == Value::Bool(true);
        targets.push(Target {
            what: "`POST /purchases` errors; stock sold = purchases recorded".into(),
            measured: format!("{purchases}; {consistent}"),
            goal: "0; true".into(),
            met: purchases == 0 && consistent,
        });
        targets.push(Target {
            what: "Redis memory per one-line purchase".into(),
            measured: format!("{:.0} B", self.memory.bytes_per_purchase),
            goal: "≤ 700 B".into(),
            met: self.memory.bytes_per_purchase <= 700.0,
        });
        let rss = self.api_peak_rss_mib.iter().copied().fold(0.0, f64::max);
        targets.push(Target {
            what: "API peak RSS per replica".into(),
            measured: format!("{rss:.1} MiB"),
            goal: "≤ 40 MiB".into(),
            met: rss <= 40.0,
        });
        let slowest = self.api_cold_start_ms.iter().copied().fold(0.0, f64::max);
        targets.push(Target {
            what: "API cold start to ready (slowest of 5)".into(),
            measured: format!("{slowest:.0} ms"),
            goal: "< 1000 ms".into(),
            met: slowest < 1000.0,
        });
        self.targets = targets;
    }

    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("results dir");
        let json = serde_json::to_string_pretty(self).expect("serializes");
        std::fs::write(dir.join("latest.json"), json).expect("latest.json");
        let markdown = self.markdown();
        std::fs::write(dir.join("latest.md"), &markdown).expect("latest.md");
        println!("{markdown}");
        println!("written: {}/latest.json and latest.md", dir.display());
    }

    fn markdown(&self) -> String {
        let mut out = format!(
            "Measured {} on {}; nginx, 2 API replicas (\"direct\": both, without nginx, the connections shared \
             between them; \"one replica\": the first alone), Redis HA and the \
             load generators on the same machine; wrk {}s per row, {} connections (sign-in: {LOGIN_CONNECTIONS}). \
             CPU columns: µs of user + system time per request spent by each tier (\"replicas\": the two Redis \
             replicas and the three Sentinels; \"rest\": the load generator and the kernel).\n\n\
             | measurement | req/s | p50 ms | p99 ms | errors | nginx µs | API µs | Redis master µs | replicas µs | rest µs |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.when, self.machine, self.seconds_per_run, self.connections
        );
        for row in &self.rows {
            let label = match row.name.split_once(": ") {
                Some((kind, what)) if ["ceiling", "direct", "one replica"].contains(&kind) => {
                    format!("{kind}: `{what}`")
                }
                _ => format!("`{}`", row.name),
            };
            let (h, c) = (&row.http, &row.cpu_us_per_request);
            let _ = writeln!(
                out,
                "| {label} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                h.requests_per_sec,
                h.p50_ms,
                h.p99_ms,
                h.errors,
                c.nginx_us,
                c.api_us,
                c.redis_master_us,
                c.redis_others_us,
                c.rest_us,
            );
        }
        out.push_str("\n| target | measured | goal | met |\n|---|---:|---:|:---:|\n");
        for t in &self.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                t.what,
                t.measured,
                t.goal,
                if t.met { "yes" } else { "**no**" }
            );
        }
        let redis: Vec<String> = self
            .redis_benchmark
            .iter()
            .map(|(test, rps)| format!("{test} {rps:.0}/s"))
            .collect();
        let _ = writeln!(
            out,
            "\n- Redis master ceiling (redis-benchmark, {} connections): {}.",
            self.connections,
            redis.join(", ")
        );
        let p = &self.purchases;
        let _ = writeln!(
            out,
            "- Purchases: stock sold {} = purchases recorded {} (consistent: {}).",
            p["stock_sold"], p["purchases_recorded"], p["stock_consistent"]
        );
        let m = &self.memory;
        let per_gib = |bytes: f64| (1024.0 * 1024.0 * 1024.0 / bytes.max(1.0)) / 1e6;
        let _ = writeln!(
            out,
            "- Redis memory: {:.0} B per one-line purchase over {:.0} purchases (its hash {} B, its idempotency \
             record {} B, the rest the user's index entry, the purchase log's entry and key-space entries); \
             {:.0} B once the idempotency records have expired (24 h): {:.1} million purchases per GiB. \
             {:.0} B per registered user with one session, over {} users: {:.1} million users per GiB.",
            m.bytes_per_purchase,
            m.purchases_measured,
            m.purchase_hash_bytes,
            m.idempotency_record_bytes,
            m.bytes_per_purchase_after_key_lifetime,
            per_gib(m.bytes_per_purchase_after_key_lifetime),
            m.bytes_per_user,
            m.users_measured,
            per_gib(m.bytes_per_user),
        );
        let rss: Vec<String> = self
            .api_peak_rss_mib
            .iter()
            .map(|m| format!("{m:.1}"))
            .collect();
        let mut cold = self.api_cold_start_ms.clone();
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
}
