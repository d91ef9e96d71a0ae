//! The monitoring tier, natively, around a [`Gateway`]: Debian's
//! `prometheus`, `prometheus-alertmanager`, `prometheus-redis-exporter` and
//! `prometheus-nginx-exporter`, run from the shipped `prometheus/` files with
//! only the targets rewritten to loopback addresses, plus a webhook listener
//! standing in for the Alertmanager receiver.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::child;
use crate::gateway::Gateway;
use crate::redis_ha::users;
use crate::wait;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Replaces `from` with `to` in `text`, panicking when `from` is absent: a
/// shipped file that no longer has the expected shape must fail loudly, not
/// silently run the tests against the wrong targets.
fn replace_target(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the shipped file no longer contains {from:?}"
    );
    text.replace(from, to)
}

/// A child process killed (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
struct Daemon {
    name: &'static str,
    child: Child,
}

impl Daemon {
    fn spawn(name: &'static str, command: &mut Command, log: &Path) -> Self {
        let log = fs::File::create(log).expect("log file");
        let child = command
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts (Debian package): {e}"));
        Self { name, child }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects the JSON bodies Alertmanager posts to its webhook receiver.
#[derive(Debug, Clone, Default)]
pub struct Webhook {
    pub port: u16,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("webhook listener");
        let webhook = Self {
            port: listener.local_addr().expect("address").port(),
            received: Arc::default(),
        };
        let received = webhook.received.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let received = received.clone();
                tokio::spawn(async move {
                    if let Some(body) = read_http_body(&mut stream).await
                        && let Ok(json) = serde_json::from_slice(&body)
                    {
                        received.lock().expect("lock").push(json);
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        webhook
    }

    /// Every notification received so far.
    pub fn notifications(&self) -> Vec<Value> {
        self.received.lock().expect("lock").clone()
    }
}

/// The body of one HTTP/1.1 request with a Content-Length.
async fn read_http_body(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())?;
        while buffer.len() < end + 4 + length {
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        return Some(buffer[end + 4..end + 4 + length].to_vec());
    }
}

/// Prometheus, Alertmanager and the exporters, watching a [`Gateway`].
#[derive(Debug)]
pub struct Monitoring {
    pub api: MonitoringApi,
    pub webhook: Webhook,
    _daemons: Vec<Daemon>,
    dir: tempfile::TempDir,
}

/// The HTTP APIs of one Prometheus and one Alertmanager (native or compose).
#[derive(Debug, Clone)]
pub struct MonitoringApi {
    prometheus: String,
    alertmanager: String,
    http: reqwest::Client,
}

impl Monitoring {
    pub async fn start(gateway: &Gateway) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("evergreen-monitoring-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let webhook = Webhook::start().await;
        let [
            prometheus_port,
            alertmanager_port,
            redis_exporter_port,
            sentinel_exporter_port,
            nginx_exporter_port,
        ] = [(); 5].map(|()| wait::free_port());
        let mut daemons = Vec::new();

        // Two redis_exporters, as in compose (one per tier), each signed in as
        // the read-only `monitor` user (REDIS_USER / REDIS_PASSWORD, as the
        // official image reads them).
        let redis = &gateway.redis;
        let data_targets: Vec<String> = redis
            .data_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        let sentinel_targets: Vec<String> = redis
            .sentinel_addrs()
            .iter()
            .map(|a| format!("redis://{a}"))
            .collect();
        for (name, port, first) in [
            ("redis-exporter", redis_exporter_port, &data_targets[0]),
            (
                "sentinel-exporter",
                sentinel_exporter_port,
                &sentinel_targets[0],
            ),
        ] {
            daemons.push(Daemon::spawn(
                "prometheus-redis-exporter",
                child::command("prometheus-redis-exporter")
                    .env("REDIS_USER", users::MONITOR)
                    .env("REDIS_PASSWORD", &redis.credentials().monitor)
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .arg(format!("--redis.addr={first}"))
                    // Below Prometheus's scrape timeout (5 s): a paused node
                    // must come back as redis_up 0, not as a failed scrape.
                    .arg("--connection-timeout=3s"),
                &d.join(format!("{name}.log")),
            ));
        }
        daemons.push(Daemon::spawn(
            "prometheus-nginx-exporter",
            child::command("prometheus-nginx-exporter")
                .arg(format!(
                    "-web.listen-address=127.0.0.1:{nginx_exporter_port}"
                ))
                .arg(format!(
                    "-nginx.scrape-uri=http://127.0.0.1:{}/stub_status",
                    gateway.nginx.status_port
                )),
            &d.join("nginx-exporter.log"),
        ));

        let alertmanager = replace_target(
            &repo_file("prometheus/alertmanager.yml"),
            "http://alert-webhook:9095/alerts",
            &format!("http://127.0.0.1:{}/alerts", webhook.port),
        );
        fs::write(d.join("alertmanager.yml"), alertmanager).expect("alertmanager.yml");
        fs::create_dir_all(d.join("alertmanager-data")).expect("dir");
        daemons.push(Daemon::spawn(
            "prometheus-alertmanager",
            child::command("prometheus-alertmanager")
                .arg(format!(
                    "--config.file={}",
                    d.join("alertmanager.yml").display()
                ))
                .arg(format!(
                    "--storage.path={}",
                    d.join("alertmanager-data").display()
                ))
                .arg(format!(
                    "--web.listen-address=127.0.0.1:{alertmanager_port}"
                ))
                // A single instance: no gossip port.
                .arg("--cluster.listen-address="),
            &d.join("alertmanager.log"),
        ));

        let mut config = repo_file("prometheus/prometheus.yml");
        let api_targets = gateway.metrics_targets();
        config = replace_target(
            &config,
            "    dns_sd_configs:\n      - names: [\"api\"]\n        type: A\n        port: 9100\n        refresh_interval: 10s\n",
            &format!("    static_configs:\n      - targets: {api_targets:?}\n"),
        );
        let mut targets = vec![
            (
                "localhost:9090".to_owned(),
                format!("127.0.0.1:{prometheus_port}"),
            ),
            (
                "alertmanager:9093".to_owned(),
                format!("127.0.0.1:{alertmanager_port}"),
            ),
            (
                "redis-exporter:9121".to_owned(),
                format!("127.0.0.1:{redis_exporter_port}"),
            ),
            (
                "sentinel-exporter:9121".to_owned(),
                format!("127.0.0.1:{sentinel_exporter_port}"),
            ),
            (
                "nginx-exporter:9113".to_owned(),
                format!("127.0.0.1:{nginx_exporter_port}"),
            ),
        ];
        for (name, target) in ["redis-master", "redis-replica-1", "redis-replica-2"]
            .iter()
            .zip(&data_targets)
        {
            targets.push((format!("redis://{name}:6379"), target.clone()));
        }
        for (name, target) in ["sentinel-1", "sentinel-2", "sentinel-3"]
            .iter()
            .zip(&sentinel_targets)
        {
            targets.push((format!("redis://{name}:26379"), target.clone()));
        }
        for (from, to) in &targets {
            config = replace_target(&config, from, to);
        }
        // A target added to the shipped file must be added here too.
        for line in config.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                ![
                    "exporter:",
                    "alertmanager:",
                    "redis://redis-",
                    "sentinel-",
                    "localhost:"
                ]
                .iter()
                .any(|name| line.contains(name)),
                "prometheus.yml has a target the test does not map: {line}"
            );
        }
        fs::create_dir_all(d.join("rules")).expect("dir");
        fs::write(
            d.join("rules/evergreen.yml"),
            repo_file("prometheus/rules/evergreen.yml"),
        )
        .expect("rules");
        fs::write(d.join("prometheus.yml"), config).expect("prometheus.yml");
        daemons.push(Daemon::spawn(
            "prometheus",
            child::command("prometheus")
                .arg(format!(
                    "--config.file={}",
                    d.join("prometheus.yml").display()
                ))
                .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}")),
            &d.join("prometheus.log"),
        ));

        let monitoring = Self {
            api: MonitoringApi::new(
                &format!("http://127.0.0.1:{prometheus_port}"),
                &format!("http://127.0.0.1:{alertmanager_port}"),
            ),
            webhook,
            _daemons: daemons,
            dir,
        };
        monitoring.api.wait_ready(Duration::from_secs(30)).await;
        monitoring
    }

    /// Where the shipped configuration lives once rendered (for debugging).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl MonitoringApi {
    pub fn new(prometheus: &str, alertmanager: &str) -> Self {
        Self {
            prometheus: prometheus.to_owned(),
            alertmanager: alertmanager.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
        }
    }

    /// Waits until Prometheus and Alertmanager answer `/-/ready`.
    pub async fn wait_ready(&self, deadline: Duration) {
        for base in [&self.prometheus, &self.alertmanager] {
            wait::until(&format!("{base} to be ready"), deadline, || async {
                let response = self.http.get(format!("{base}/-/ready")).send().await.ok()?;
                response.status().is_success().then_some(())
            })
            .await;
        }
    }

    async fn get(&self, url: String) -> Result<Value, String> {
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        response.json().await.map_err(|e| e.to_string())
    }

    /// An instant PromQL query: the `data.result` vector.
    pub async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.prometheus,
            urlencode(promql)
        );
        let body = self.get(url).await?;
        body["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("unexpected answer: {body}"))
    }

    /// Every active scrape target: (job, instance, health).
    pub async fn targets(&self) -> Result<Vec<(String, String, String)>, String> {
        let body = self
            .get(format!("{}/api/v1/targets?state=active", self.prometheus))
            .await?;
        Ok(array_at(&body, "/data/activeTargets")
            .iter()
            .map(|t| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    text(&t["labels"]["job"]),
                    text(&t["labels"]["instance"]),
                    text(&t["health"]),
                )
            })
            .collect())
    }

    /// Alerts as Prometheus sees them: (alertname, state).
    pub async fn alerts(&self) -> Result<Vec<(String, String)>, String> {
        let body = self
            .get(format!("{}/api/v1/alerts", self.prometheus))
            .await?;
        Ok(array_at(&body, "/data/alerts")
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    a["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    /// Waits until Prometheus reports `alertname` firing.
    pub async fn wait_for_firing(&self, alertname: &str, deadline: Duration) {
        wait::until(
            &format!("{alertname} to fire in Prometheus"),
            deadline,
            || async {
                let alerts = self.alerts().await?;
                alerts
                    .iter()
                    .any(|(name, state)| name == alertname && state == "firing")
                    .then_some(())
                    .ok_or(format!("{alerts:?}"))
            },
        )
        .await;
    }

    pub fn alertmanager_url(&self) -> &str {
        &self.alertmanager
    }

    /// Names of the alerts Alertmanager holds back because another inhibits them.
    pub async fn inhibited_alerts(&self) -> Result<Vec<String>, String> {
        let body = self
            .get(format!(
                "{}/api/v2/alerts?inhibited=true&active=false&silenced=false",
                self.alertmanager
            ))
            .await?;
        Ok(array_at(&body, "")
            .iter()
            .filter(|a| {
                a["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|by| !by.is_empty())
            })
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect())
    }

    /// Alert names Alertmanager currently holds.
    pub async fn alertmanager_alerts(&self) -> Result<Vec<String>, String> {
        let body = self
            .get(format!("{}/api/v2/alerts", self.alertmanager))
            .await?;
        Ok(array_at(&body, "")
            .iter()
            .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
            .collect())
    }
}

/// Metric names a PromQL text reads: every identifier right before a label
/// matcher `{` or a range `[`. Recording-rule names (they contain `:`) are
/// skipped; so are Go templates (`{{ ... }}`) of annotations and legends.
pub fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in promql.lines().filter(|line| !line.contains("{{")) {
        for (at, _) in line.match_indices(['{', '[']) {
            let name: String = line[..at]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if !name.is_empty() && !name.contains(':') {
                names.insert(name);
            }
        }
    }
    names
}

/// The text of a file of the repository (`prometheus/...`, `grafana/...`).
pub fn shipped_file(path: &str) -> String {
    repo_file(path)
}

/// The JSON array at `pointer` (RFC 6901; "" is the whole body), or none.
fn array_at<'a>(body: &'a Value, pointer: &str) -> &'a [Value] {
    body.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    #[test]
    fn metric_names_are_found_before_matchers_and_ranges_only() {
        let names = metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(a_bucket[5m])))\n\
             b{job=\"x\"} / job:recorded:rate5m{job=\"x\"} and absent(c{d=\"e\"})\n\
             summary: \"{{ $labels.instance }} f{g}\"",
        );
        let expected: Vec<&str> = vec!["a_bucket", "b", "c"];
        assert_eq!(
            names.iter().map(String::as_str).collect::<Vec<_>>(),
            expected
        );
    }
}
