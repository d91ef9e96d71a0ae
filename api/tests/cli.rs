//! The `api` binary as an operator runs it: configuration refusals and the
//! `healthcheck` subcommand. (These tests also make cargo build the binary
//! that the end-to-end tests start as real processes.)

use std::net::TcpListener;
use std::process::Command;

const API: &str = env!("CARGO_BIN_EXE_api");
const STRONG_SECRET: &str = "kW3p9vQz7Lr2Xy8Nb5Tc1Hd6Jf4Gm0Sa-cli-tests";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn the_service_refuses_to_start_with_a_short_jwt_secret_and_says_why() {
    let output = Command::new(API)
        .env_clear()
        .env("EVERGREEN_AUTH__JWT_SECRET", "too-short")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("jwt_secret must be at least 32 bytes"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("too-short"),
        "the secret must not be echoed: {stderr}"
    );
}

#[test]
fn the_service_lists_every_invalid_setting_at_once() {
    let output = Command::new(API)
        .env_clear()
        .env("EVERGREEN_AUTH__JWT_SECRET", STRONG_SECRET)
        .env("EVERGREEN_REDIS__COMMAND_TIMEOUT_MS", "60000")
        .env("EVERGREEN_STORE__CURRENCY", "dollars")
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("redis.command_timeout_ms"), "{stderr}");
    assert!(stderr.contains("store.currency"), "{stderr}");
}

#[test]
fn healthcheck_fails_when_no_instance_listens() {
    let status = Command::new(API)
        .arg("healthcheck")
        .env_clear()
        .env("EVERGREEN_AUTH__JWT_SECRET", STRONG_SECRET)
        .env("EVERGREEN_SERVER__PORT", free_port().to_string())
        .status()
        .expect("the binary runs");
    assert!(!status.success());
}
