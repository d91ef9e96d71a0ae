//! `loadgen -f scenario.json --concurrency 10 -n 10000 --timeout 3m`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use evergreen_loadgen::marks::parse_mark;
use evergreen_loadgen::run::{Options, run};
use evergreen_loadgen::seed::Admin;

/// Drive realistic traffic (browse, log in, buy, cancel) at an Evergreen
/// store and report throughput, errors and latency percentiles.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Scenario file (JSON): the traffic mix and the data to seed. See
    /// loadgen/scenarios/.
    #[arg(short = 'f', long = "file", value_name = "SCENARIO")]
    scenario: PathBuf,
    /// The store's base URL (nginx).
    #[arg(long, default_value = "http://localhost:8080", value_name = "URL")]
    host: String,
    /// Virtual users sending requests at the same time.
    #[arg(short, long, default_value_t = 10)]
    concurrency: usize,
    /// Requests to send in all (seeding not counted).
    #[arg(short = 'n', long = "requests", default_value_t = 10_000)]
    requests: u64,
    /// Time limit of the whole run, seeding included (e.g. 90s, 3m).
    #[arg(short, long, default_value = "3m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// At most this many requests per second in all, evenly spaced (a
    /// steady load under the store's rate limits, e.g. for a failover demo).
    /// Without it, every virtual user sends its next request at once.
    #[arg(long, value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Longest wait for one response.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
    /// Where summary.json, report.html (Goose's report, charts drawn with
    /// JavaScript from a CDN) and timeline.svg and timeline.png (the run
    /// second by second, with the markers) are written.
    #[arg(long, default_value = "loadgen-report")]
    report_dir: PathBuf,
    /// Admin account used to create the scenario's products.
    #[arg(long, env = "ADMIN_EMAIL")]
    admin_email: Option<String>,
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// No progress line.
    #[arg(short, long)]
    quiet: bool,
    /// A marker drawn on the timeline at TIME after the traffic started,
    /// e.g. --mark 20s="pause redis-master"; summary.json gives the
    /// write-unavailability window after it. Repeat for more.
    #[arg(long = "mark", value_name = "TIME=LABEL", value_parser = parse_mark)]
    marks: Vec<(Duration, String)>,
    /// A file another process appends markers to while the run goes, one
    /// per line: "<unix time> <label>" (`date +%s.%N`), or just "<label>"
    /// for "now".
    #[arg(long, value_name = "FILE")]
    marks_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let admin = match (cli.admin_email, cli.admin_password) {
        (Some(email), Some(password)) => Some(Admin { email, password }),
        _ => None,
    };
    let options = Options {
        scenario_file: cli.scenario,
        base_url: cli.host,
        concurrency: cli.concurrency,
        requests: cli.requests,
        time_limit: cli.timeout,
        request_timeout: cli.request_timeout,
        report_dir: cli.report_dir.clone(),
        admin,
        quiet: cli.quiet,
        marks: cli.marks,
        marks_file: cli.marks_file,
        rate: cli.rate,
    };
    match run(options).await {
        Ok(report) => {
            print!("{}", report.render());
            println!(
                "reports: {}, {} (charts) and {} (also .png)",
                cli.report_dir.join("summary.json").display(),
                cli.report_dir.join("report.html").display(),
                cli.report_dir.join("timeline.svg").display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
