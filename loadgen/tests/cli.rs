//! The `loadgen` binary refuses what it cannot run, quickly and by name.
//! (Runs against a real store are in tests/tests/e2e/loadgen.rs.)

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .env_remove("ADMIN_EMAIL")
        .env_remove("ADMIN_PASSWORD")
        .output()
        .expect("loadgen runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn scenario_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("written");
    file
}

/// A browse-only run (nothing to seed) against 127.0.0.1:`port`, timed.
fn browse_against(port: u16) -> (Output, Duration) {
    let file = scenario_file(
        r#"{"name": "x", "mix": {"browse_products": 1}, "seed": {"products": 0, "customers": 0}}"#,
    );
    let started = Instant::now();
    let output = loadgen(&[
        "-f",
        file.path().to_str().expect("utf-8"),
        "--host",
        &format!("http://127.0.0.1:{port}"),
        "-n",
        "100",
    ]);
    (output, started.elapsed())
}

#[test]
fn a_scenario_with_an_unknown_operation_is_refused_naming_the_field() {
    let file = scenario_file(r#"{"name": "typo", "mix": {"browse_products": 1, "chekout": 2}}"#);
    let output = loadgen(&["-f", file.path().to_str().expect("utf-8")]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("mix.chekout"), "{message}");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn a_scenario_with_an_impossible_value_is_refused_naming_the_field() {
    let file = scenario_file(r#"{"name": "x", "mix": {"buy": 1}, "buy": {"max_quantity": 0}}"#);
    let output = loadgen(&["-f", file.path().to_str().expect("utf-8")]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("buy.max_quantity"), "{message}");
}

#[test]
fn a_missing_scenario_file_is_named() {
    let output = loadgen(&["-f", "/nonexistent/scenario.json"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("cannot read scenario file /nonexistent/scenario.json"),
        "{message}"
    );
}

#[test]
fn a_run_against_a_dead_url_ends_at_once_with_a_clear_error() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port();
    let (output, took) = browse_against(port);
    assert!(!output.status.success());
    let message = stderr(&output);
    println!("dead URL refused after {took:?}: {message}");
    assert!(message.contains("cannot reach the store"), "{message}");
    assert!(message.contains("refused"), "{message}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_url_that_never_answers_ends_within_the_preflight_timeout() {
    // Accepts connections (the kernel's backlog) but never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = silent.local_addr().expect("address").port();
    let (output, took) = browse_against(port);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("timed out"), "{message}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn seeding_products_without_admin_credentials_is_refused_before_any_load() {
    // The preflight needs a store that answers: a one-shot HTTP responder.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming().flatten().take(1) {
            let mut stream = stream;
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}",
            );
        }
    });
    let file = scenario_file(r#"{"name": "x", "mix": {"buy": 1}, "seed": {"products": 5}}"#);
    let output = loadgen(&[
        "-f",
        file.path().to_str().expect("utf-8"),
        "--host",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("--admin-email"), "{message}");
}
