//! The load tool against the real stack (nginx, two API replicas, Redis HA):
//! it sends exactly the requests asked for, every operation of the mix
//! succeeds, its reports are written, and the stock it bought adds up; and
//! through a paused master it draws the fault and measures the same write
//! window as the failover tests' own traffic.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use evergreen_tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD};
use evergreen_tests::client::Api;
use evergreen_tests::gateway::{Gateway, GatewayOptions, loadgen_command};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use evergreen_tests::scenario::{HEAL_DEADLINE, Scenario};

const STOCK: i64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mixed_load_run_sends_exactly_n_requests_without_errors_and_stock_adds_up() {
    // One client address does all the signing in: lift nginx's brake on it.
    let gateway = Gateway::start_with(
        2,
        GatewayOptions {
            auth_rate: "1000r/s".into(),
            auth_burst: 1000,
            ..GatewayOptions::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("scenario.json");
    std::fs::write(
        &scenario,
        format!(
            r#"{{
                "name": "every operation",
                "seed": {{"products": 6, "stock_per_product": {STOCK}, "customers": 4,
                          "categories": ["books", "garden"]}},
                "mix": {{"browse_products": 3, "view_product": 3, "register": 1, "login": 1,
                         "buy": 4, "list_own_purchases": 2, "cancel": 2}}
            }}"#
        ),
    )
    .expect("scenario written");
    let report_dir = dir.path().join("report");

    let output = loadgen_command(&scenario, &gateway.nginx.base_url(), &report_dir)
        .args([
            "--concurrency",
            "8",
            "-n",
            "600",
            "--timeout",
            "90s",
            "--quiet",
        ])
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success());

    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(report_dir.join("summary.json")).expect("summary.json"),
    )
    .expect("summary is JSON");
    assert_eq!(summary["requests"], 600, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["ended_by"], "completed");
    assert!(summary["throughput_rps"].as_f64().expect("rate") > 0.0);
    for operation in [
        "browse_products",
        "view_product",
        "register",
        "login",
        "buy",
        "list_own_purchases",
        "cancel",
    ] {
        let report = &summary["operations"][operation];
        assert!(
            report["requests"].as_u64().unwrap_or(0) > 0,
            "{operation} never ran: {summary}"
        );
        assert!(report["latency_ms"]["p99"].as_f64().expect("p99") > 0.0);
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("all ") && l.contains(" 600 ")),
        "the table has a total row of 600 requests: {stdout}"
    );
    let html = std::fs::read_to_string(report_dir.join("report.html")).expect("report.html");
    assert!(
        html.contains("view_product"),
        "the HTML report names the operations"
    );

    // Stock bought = quantities of the completed purchases of loadgen's customers.
    let api = Api::new(&gateway.nginx.base_url());
    let admin = api.login_ok(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let products: Vec<Value> = api
        .all_pages(&admin.access_token, "/products")
        .await
        .into_iter()
        .filter(|p| p["sku"].as_str().is_some_and(|s| s.starts_with("LOADGEN-")))
        .collect();
    assert_eq!(products.len(), 6);
    let mut sold: HashMap<String, i64> = HashMap::new();
    let customers = api.all_pages(&admin.access_token, "/users").await;
    for customer in customers.iter().filter(|u| {
        u["email"]
            .as_str()
            .is_some_and(|e| e.starts_with("loadgen-"))
    }) {
        let path = format!(
            "/purchases?user_id={}",
            customer["id"].as_str().expect("id")
        );
        for purchase in api.all_pages(&admin.access_token, &path).await {
            if purchase["status"] == "completed" {
                for item in purchase["items"].as_array().expect("items") {
                    *sold
                        .entry(item["product_id"].as_str().expect("id").to_owned())
                        .or_default() += item["quantity"].as_i64().expect("quantity");
                }
            }
        }
    }
    let total_sold: i64 = sold.values().sum();
    println!("units sold and not cancelled: {total_sold}");
    assert!(total_sold > 0);
    for product in &products {
        let id = product["id"].as_str().expect("id");
        assert_eq!(
            product["stock"].as_i64().expect("stock"),
            STOCK - sold.get(id).copied().unwrap_or(0),
            "stock of {id}"
        );
    }
}

/// Appends `label` to a loadgen marks file, stamped with the wall clock.
fn mark(file: &Path, label: &str) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let mut marks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .expect("marks file");
    writeln!(marks, "{now:.3} {label}").expect("mark written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loadgen_marks_a_paused_master_and_measures_the_write_window_the_failover_tests_measure() {
    // Arrange: the shipped gateway; loadgen runs the failover demo's
    // scenario at a steady 100 requests/s beside the failover tests' own
    // buyers and readers.
    let scenario = Scenario::behind_nginx_with(GatewayOptions {
        auth_rate: "1000r/s".into(),
        auth_burst: 1000,
        ..GatewayOptions::default()
    })
    .await;
    let base_url = scenario.gateway().expect("behind nginx").nginx.base_url();
    let dir = tempfile::tempdir().expect("temp dir");
    let (marks, report_dir) = (dir.path().join("marks"), dir.path().join("report"));
    let scenario_file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadgen/scenarios/failover.json");
    let mut loadgen =
        tokio::process::Command::from(loadgen_command(&scenario_file, &base_url, &report_dir))
            .args(["--concurrency", "8", "--rate", "100"])
            .args(["-n", "3000", "--timeout", "90s"])
            .arg("--marks-file")
            .arg(&marks)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("loadgen starts");
    let mut progress = BufReader::new(loadgen.stderr.take().expect("stderr")).lines();
    while let Some(line) = progress.next_line().await.expect("loadgen's stderr") {
        if line.starts_with("seeded") {
            break;
        }
    }
    let old_master = scenario.redis().master_port().await;
    let traffic = scenario.flowing_traffic().await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Act: pause the master, mark it; resume it once writes are back.
    let fault = traffic.now();
    mark(&marks, "pause master");
    scenario.redis().pause(old_master);
    let new_master = scenario.failed_over_from(old_master, &traffic, fault).await;
    scenario.redis().resume(old_master);
    mark(&marks, "resume master");
    // (Not `rejoined`: its stock check counts every purchase as the
    // tests' own, and loadgen buys too.)
    scenario
        .redis()
        .wait_until_replica_of(old_master, new_master, HEAL_DEADLINE)
        .await;
    let report = traffic.finish().await;
    let output = loadgen.wait_with_output().await.expect("loadgen ends");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "{output:?}");

    // Assert: both markers, in order, and a write window within a second of
    // the one the failover tests' traffic measured over the same pause.
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(report_dir.join("summary.json")).expect("summary.json"),
    )
    .expect("summary is JSON");
    let markers = summary["markers"].as_array().expect("markers");
    let labels: Vec<&str> = markers.iter().filter_map(|m| m["label"].as_str()).collect();
    assert_eq!(labels, ["pause master", "resume master"], "{summary}");
    let measured = report.write_gap(fault).as_secs_f64();
    let drawn = markers[0]["write_window_secs"].as_f64().expect("window");
    println!("write window: loadgen {drawn:.2} s, failover tests' traffic {measured:.2} s");
    assert!(
        measured > 1.0 && (drawn - measured).abs() < 1.0,
        "loadgen {drawn:.2} s, tests {measured:.2} s"
    );
    let at = markers[0]["at_secs"].as_f64().expect("at");
    let seconds = summary["timeline"].as_array().expect("timeline");
    let sum = |field: &str| -> u64 {
        seconds
            .iter()
            .map(|s| s[field].as_u64().expect("count"))
            .sum()
    };
    let reads_without_writes = seconds
        .iter()
        .skip(at.ceil() as usize)
        .filter(|s| s["writes"] == 0 && s["reads"].as_u64().unwrap_or(0) > 0)
        .count();
    assert!(
        reads_without_writes >= 1,
        "the chart shows seconds of reads without a successful write: {summary}"
    );
    assert!(sum("failed_503") > 0, "writes were refused with 503");
    assert_eq!(
        sum("failed_other"),
        0,
        "every failure is a retryable 503: {summary}"
    );
    let chart = std::fs::read_to_string(report_dir.join("timeline.svg")).expect("timeline.svg");
    assert!(
        chart.contains(&format!("pause master (writes out {drawn:.1} s)")),
        "the chart labels the marker with its window"
    );
    assert!(chart.contains("503 retry") && chart.contains("writes/s (POST)"));
    let png = std::fs::read(report_dir.join("timeline.png")).expect("timeline.png");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
}
