//! `scripts/bench` end to end, a second per measurement: every figure the
//! bench/README.md quotes is produced (nothing here judges the numbers; the real run
//! is `scripts/bench`).

use std::process::Command;

use serde_json::Value;

#[test]
fn a_smoke_run_of_the_benchmark_writes_every_figure() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_bench"))
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
    let row = |name: &str| -> &Value {
        results["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {results}"))
    };
    for name in [
        "ceiling: nginx return 200",
        "ceiling: nginx proxy to minimal upstream",
        "one replica: GET /products/{id}",
        "direct: GET /products/{id}",
        "GET /products/{id}",
        "direct: GET /products?limit=20",
        "GET /products?limit=20",
        "POST /auth/login",
        "POST /purchases",
    ] {
        let row = row(name);
        assert!(
            row["requests_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
            "{name}: {row}"
        );
        assert!(row["p99_ms"].as_f64().unwrap_or(0.0) > 0.0, "{name}: {row}");
        // Every row charges CPU to the tier that served it.
        let tier = if name.starts_with("ceiling") {
            "nginx_us"
        } else {
            "api_us"
        };
        assert!(
            row["cpu_us_per_request"][tier].as_f64().unwrap_or(0.0) > 0.0,
            "{name}: {row}"
        );
    }
    // Direct rows bypass nginx: it spends nothing on them.
    assert_eq!(
        row("direct: GET /products/{id}")["cpu_us_per_request"]["nginx_us"],
        0.0
    );
    // A purchase costs the master CPU; a product read (from a replica) does not.
    assert!(
        row("POST /purchases")["cpu_us_per_request"]["redis_master_us"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    );
    let redis: Vec<&str> = results["redis_benchmark"]
        .as_array()
        .expect("redis-benchmark")
        .iter()
        .filter(|pair| pair[1].as_f64().unwrap_or(0.0) > 0.0)
        .filter_map(|pair| pair[0].as_str())
        .collect();
    assert_eq!(redis, ["EVALSHA", "GET", "SET"], "{results}");
    assert_eq!(row("POST /purchases")["errors"], 0, "{results}");
    assert_eq!(results["purchases"]["stock_consistent"], true, "{results}");
    let memory = &results["memory"];
    for figure in [
        "bytes_per_purchase",
        "bytes_per_purchase_after_key_lifetime",
        "purchase_hash_bytes",
        "idempotency_record_bytes",
    ] {
        assert!(
            memory[figure].as_f64().unwrap_or(0.0) > 0.0,
            "{figure}: {results}"
        );
    }
    assert!(
        memory["bytes_per_purchase_after_key_lifetime"].as_f64()
            < memory["bytes_per_purchase"].as_f64(),
        "expired idempotency records free memory: {results}"
    );
    assert_eq!(results["targets"].as_array().expect("targets").len(), 8);
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
    assert!(
        table.contains("| target | measured | goal | met |"),
        "{table}"
    );
    assert!(table.contains("per one-line purchase"), "{table}");
}
