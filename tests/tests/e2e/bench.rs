//! `scripts/bench` end to end, a second per measurement: every figure the
//! README quotes is produced (nothing here judges the numbers; the real run
//! is `scripts/bench`).

use std::process::Command;

use evergreen_tests::gateway::workspace_binary;
use serde_json::Value;

#[test]
fn a_smoke_run_of_the_benchmark_writes_every_figure() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(workspace_binary("bench"))
        .arg("--smoke")
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("bench runs");
    assert!(status.success());

    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("latest.json")).expect("latest.json"),
    )
    .expect("JSON");
    for ceiling in [
        "nginx return 200",
        "nginx proxy to minimal upstream",
        "redis-benchmark GET",
        "redis-benchmark SET",
        "redis-benchmark EVALSHA",
    ] {
        assert!(
            results["ceilings"][ceiling].as_f64().unwrap_or(0.0) > 0.0,
            "{ceiling}: {results}"
        );
    }
    for measurement in [
        "GET /products/{id}",
        "GET /products?limit=20",
        "POST /auth/login",
        "POST /purchases",
    ] {
        let http = &results["http"][measurement];
        assert!(
            http["requests_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
            "{measurement}: {results}"
        );
        assert!(
            http["p99_ms"].as_f64().unwrap_or(0.0) > 0.0,
            "{measurement}: {results}"
        );
        assert!(
            results["ratio_to_proxy_ceiling"][measurement]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0
        );
    }
    assert_eq!(results["http"]["POST /purchases"]["errors"], 0, "{results}");
    assert_eq!(results["purchases"]["stock_consistent"], true, "{results}");
    // Every request planned was sent; the only failure allowed is the
    // documented back-pressure of sign-ins (503 after 3 s waiting for a
    // hashing thread) on a machine busy with other tests.
    let mixed = &results["mixed_scenario"];
    assert_eq!(mixed["requests"], 300, "{results}");
    for (operation, report) in mixed["operations"].as_object().expect("operations") {
        let failed = report["failed"].as_u64().expect("failed");
        if operation == "login" || operation == "register" {
            let refused = report["statuses"]["503"].as_u64().unwrap_or(0);
            assert_eq!(failed, refused, "{operation}: {report}");
        } else {
            assert_eq!(failed, 0, "{operation}: {report}");
        }
    }
    let rss = results["api_peak_rss_mib"].as_array().expect("rss");
    assert_eq!(rss.len(), 2);
    assert!(
        rss.iter().all(|m| m.as_f64().unwrap_or(0.0) > 1.0),
        "{results}"
    );
    assert_eq!(
        results["api_cold_start_ms"]
            .as_array()
            .expect("cold starts")
            .len(),
        5
    );

    let table = std::fs::read_to_string(out.path().join("latest.md")).expect("latest.md");
    assert!(table.contains("| `POST /purchases` |"), "{table}");
    assert!(table.contains("mixed scenario (loadgen"), "{table}");
}
