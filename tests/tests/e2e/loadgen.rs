//! The load tool against the real stack (nginx, two API replicas, Redis HA):
//! it sends exactly the requests asked for, every operation of the mix
//! succeeds, its reports are written, and the stock it bought adds up.

use std::collections::HashMap;
use std::process::Command;

use evergreen_tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD};
use evergreen_tests::client::Api;
use evergreen_tests::gateway::{Gateway, GatewayOptions, workspace_binary};
use serde_json::Value;

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

    let output = Command::new(workspace_binary("loadgen"))
        .args(["-f", scenario.to_str().expect("utf-8")])
        .args(["--host", &gateway.nginx.base_url()])
        .args([
            "--concurrency",
            "8",
            "-n",
            "600",
            "--timeout",
            "90s",
            "--quiet",
        ])
        .args(["--report-dir", report_dir.to_str().expect("utf-8")])
        .args([
            "--admin-email",
            ADMIN_EMAIL,
            "--admin-password",
            ADMIN_PASSWORD,
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
