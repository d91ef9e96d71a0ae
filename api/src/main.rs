//! `api` serves the store; `api healthcheck` probes a running instance (used by
//! the container healthcheck, where no curl is installed).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use evergreen_api::config::Settings;
use evergreen_api::startup::Application;
use evergreen_api::telemetry;

fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("evergreen api: {error}");
            return ExitCode::from(2);
        }
    };
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck(&settings.server.host, settings.server.port);
    }
    telemetry::init_subscriber();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("evergreen api: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let application = Application::build(settings).await?;
        tracing::info!(
            port = application.port(),
            metrics_port = application.metrics_port(),
            "listening"
        );
        application.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Exit 0 when `/health/ready` of the instance configured here answers 200.
/// An instance bound to every interface (0.0.0.0, as in a container) is
/// probed on loopback.
fn healthcheck(host: &str, port: u16) -> ExitCode {
    let probe = || -> std::io::Result<bool> {
        let ip = match host.parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() => ip,
            _ => IpAddr::from([127, 0, 0, 1]),
        };
        let mut stream = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(b"GET /health/ready HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"))
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("healthcheck: {error}");
            ExitCode::FAILURE
        }
    }
}
