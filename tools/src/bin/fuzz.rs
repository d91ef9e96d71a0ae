//! The API fuzzing run (`scripts/fuzz`): starts the native stack (nginx from
//! the shipped template, two API replicas, Redis master + 2 replicas + 3
//! Sentinels) and runs schemathesis against `/api/v1/openapi.json` through
//! nginx, every operation, all phases (examples, coverage, fuzzing, stateful
//! with links inferred from `Location` headers) and every check, once signed
//! in as a customer and once as the admin. Exits non-zero when schemathesis
//! reports anything.
//!
//! `fuzz --examples N` sets schemathesis' examples per operation (default
//! 10, what the test suite runs); `--max-time S` gives each run a budget
//! that schemathesis spends fuzzing;
//! `--seed S` repeats a run. Reports (JUnit, and the cassette of every
//! request) go to `target/schemathesis/<identity>/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use evergreen_tests::app::{ADMIN_EMAIL, ADMIN_PASSWORD};
use evergreen_tests::client::{Api, expect};
use evergreen_tests::gateway::{Gateway, GatewayOptions};
use reqwest::StatusCode;
use serde_json::json;

#[derive(Debug)]
struct Args {
    examples: u32,
    max_time: Option<u32>,
    seed: Option<u64>,
}

fn args() -> Args {
    let mut args = Args {
        examples: 10,
        max_time: None,
        seed: None,
    };
    let mut it = std::env::args().skip(1);
    let number = |flag: &str, value: Option<String>| -> u64 {
        value
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--examples" => args.examples = number("--examples", it.next()) as u32,
            "--max-time" => args.max_time = Some(number("--max-time", it.next()) as u32),
            "--seed" => args.seed = Some(number("--seed", it.next())),
            other => panic!("unknown argument {other}; use --examples N, --max-time S, --seed S"),
        }
    }
    args
}

fn schemathesis() -> PathBuf {
    std::env::var_os("EVERGREEN_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "st".into())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

#[tokio::main]
async fn main() {
    let args = args();
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:>5.0}s] {what}", started.elapsed().as_secs_f64());

    step("starting Redis HA, nginx and two API replicas");
    let gateway = Gateway::start_with(
        2,
        GatewayOptions {
            // The fuzzer signs in and registers far faster than a person: lift
            // nginx's sign-in brake here (tests of the brake live in the suite).
            auth_rate: "100000r/s".into(),
            auth_burst: 100_000,
            // The fuzzer reads the admin's email from responses and tries it
            // with random passwords, and signs in again and again: password
            // throttling and the session cap (tested in the suite) would shut
            // out or end the very identities the fuzzer runs as.
            api_env: [
                (
                    "EVERGREEN_AUTH__PASSWORD_FAILURES_PER_ACCOUNT_AND_ADDRESS",
                    "1000",
                ),
                ("EVERGREEN_AUTH__PASSWORD_FAILURES_PER_ADDRESS", "100000"),
                ("EVERGREEN_AUTH__PASSWORD_CHECKS_PER_ACCOUNT_BURST", "1000"),
                ("EVERGREEN_AUTH__SESSIONS_PER_USER", "1000"),
            ]
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .to_vec(),
            ..GatewayOptions::default()
        },
    )
    .await;
    let base = gateway.nginx.base_url();
    let api = Api::new(&base);
    let admin = api.login_ok(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // Something to browse and buy from the first request on; the stateful
    // phase adds its own products through the admin run.
    for n in 0..3 {
        expect(
            api.create_product(
                &admin.access_token,
                &json!({"sku": format!("FUZZ-SEED-{n}"), "name": format!("Seed product {n}"),
                        "description": "Present before the fuzzer starts.", "price_cents": 500 + n,
                        "currency": "USD", "stock": 1_000_000, "category": "seed"}),
            )
            .await,
            StatusCode::CREATED,
        )
        .await;
    }
    let customer = api.new_customer().await;

    let reports = workspace().join("target/schemathesis");
    let mut failed = Vec::new();
    // The customer first: the admin run may disable or demote that customer.
    for (identity, email, password) in [
        (
            "customer",
            customer.email.as_str(),
            customer.password.as_str(),
        ),
        ("admin", ADMIN_EMAIL, ADMIN_PASSWORD),
    ] {
        step(&format!(
            "schemathesis as the {identity}, {} examples per operation",
            args.examples
        ));
        let mut command = Command::new(schemathesis());
        command
            .arg("--config-file")
            .arg(workspace().join("tests/schemathesis/schemathesis.toml"))
            .arg("run")
            .arg(format!("{base}/api/v1/openapi.json"))
            .arg("--url")
            .arg(&base)
            .arg("--max-examples")
            .arg(args.examples.to_string())
            .arg("--report")
            .arg("junit,vcr")
            .arg("--report-dir")
            .arg(reports.join(identity))
            .arg("--no-color")
            .env("EVERGREEN_FUZZ_EMAIL", email)
            .env("EVERGREEN_FUZZ_PASSWORD", password);
        if let Some(seconds) = args.max_time {
            command.arg("--max-time").arg(seconds.to_string());
        }
        if let Some(seed) = args.seed {
            command.arg("--seed").arg(seed.to_string());
        }
        let status = command.status().unwrap_or_else(|e| {
            panic!(
                "could not run {}: {e} (scripts/fuzz installs schemathesis)",
                schemathesis().display()
            )
        });
        if !status.success() {
            failed.push(identity);
        }
    }
    step("done");
    if !failed.is_empty() {
        eprintln!(
            "schemathesis reported failures as: {}; reports in {}",
            failed.join(", "),
            reports.display()
        );
        std::process::exit(1);
    }
}
