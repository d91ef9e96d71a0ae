//! One load run: preflight and seeding, then Goose under the request budget
//! and the time limit, then the reports.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use goose::config::GooseConfiguration;
use goose::prelude::GooseAttack;

use crate::chart;
use crate::marks::{Mark, MarksFile};
use crate::report::{Report, RunFacts};
use crate::scenario::{Scenario, ScenarioError};
use crate::seed::{self, Admin, SeedError};
use crate::timeline::Marker;
use crate::traffic::{self, Plan};

/// What the command line asks for.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario_file: PathBuf,
    pub base_url: String,
    pub concurrency: usize,
    pub requests: u64,
    /// The whole run, seeding included.
    pub time_limit: Duration,
    /// Longest wait for one response.
    pub request_timeout: Duration,
    pub report_dir: PathBuf,
    pub admin: Option<Admin>,
    /// No progress line.
    pub quiet: bool,
    /// Markers given up front: seconds after the traffic started, label.
    pub marks: Vec<(Duration, String)>,
    /// A file another process appends marker lines to while the run goes
    /// (`crate::marks`).
    pub marks_file: Option<PathBuf>,
    /// At most this many requests per second in all (`None`: as fast as
    /// the virtual users go).
    pub rate: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error("the time limit ({0}) ran out while seeding")]
    SeedingTimedOut(String),
    #[error("--concurrency and -n must be at least 1")]
    NothingToDo,
    #[error("--rate must be a number of requests per second above 0")]
    BadRate,
    #[error("the load engine failed: {0}")]
    Goose(String),
    #[error("cannot read the marks file {path}: {source}")]
    Marks {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot draw the chart: {0}")]
    Chart(String),
    #[error("cannot write the report to {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

pub async fn run(options: Options) -> Result<Report, RunError> {
    if options.concurrency == 0 || options.requests == 0 {
        return Err(RunError::NothingToDo);
    }
    if options
        .rate
        .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
    {
        return Err(RunError::BadRate);
    }
    let scenario = Scenario::load(&options.scenario_file)?;
    let deadline = Instant::now() + options.time_limit;
    let http = reqwest::Client::new();
    let base_url = options.base_url.trim_end_matches('/').to_owned();
    seed::check_reachable(&http, &base_url).await?;
    let seeding = seed::seed(&http, &base_url, &scenario, options.admin.as_ref());
    let data = tokio::time::timeout_at(deadline.into(), seeding)
        .await
        .map_err(|_| {
            RunError::SeedingTimedOut(humantime::format_duration(options.time_limit).to_string())
        })??;
    if !options.quiet {
        eprintln!(
            "seeded {} products and {} customers; sending {} requests with {} users",
            data.product_ids.len(),
            data.customers.len(),
            options.requests,
            options.concurrency
        );
    }

    let users = options.concurrency.min(options.requests as usize);
    let plan = Arc::new(Plan::new(
        scenario.clone(),
        data,
        options.requests,
        deadline,
        options.rate,
    ));
    std::fs::create_dir_all(&options.report_dir).map_err(|source| RunError::Write {
        path: options.report_dir.display().to_string(),
        source,
    })?;
    let html = options.report_dir.join("report.html");
    let mut config = GooseConfiguration::default();
    config.host = Some(base_url.clone());
    config.users = Some(users);
    // All users within a second: the load is the concurrency, not a ramp.
    config.increase_rate = Some(users.max(1).to_string());
    // Each user's share of the budget, rounded up; the budget stops the rest.
    config.iterations = Some((options.requests as usize).div_ceil(users));
    config.timeout = Some(format!("{:.3}", options.request_timeout.as_secs_f64()));
    config.report_file = vec![html.display().to_string()];
    config.no_print_metrics = true;
    config.quiet = 1;
    config.no_telnet = true;

    let time_limit = tokio::spawn(async move {
        tokio::time::sleep_until(deadline.into()).await;
        goose::trigger_killswitch("time limit");
    });
    let progress =
        (!options.quiet).then(|| tokio::spawn(show_progress(plan.clone(), options.requests)));
    let mut marks_file = options.marks_file.as_deref().map(MarksFile::new);
    let mut marks: Vec<Mark> = options
        .marks
        .iter()
        .map(|(at, label)| Mark {
            at_secs: at.as_secs_f64(),
            label: label.clone(),
        })
        .collect();
    // Read while the run goes, so that a mark without a time of its own is
    // stamped when it was written, not at the end.
    let (stop_reading, mut stopped) = tokio::sync::watch::channel(false);
    let reader = marks_file.take().map(|mut file| {
        let plan = plan.clone();
        tokio::spawn(async move {
            let mut found = Vec::new();
            let mut ticker = tokio::time::interval(Duration::from_millis(200));
            loop {
                let timeline = &plan.timeline;
                found.extend(file.read_new(|wall| timeline.secs_of(wall), timeline.now_secs())?);
                if *stopped.borrow() {
                    return Ok::<_, std::io::Error>(found);
                }
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.changed() => {}
                }
            }
        })
    });
    let started = Instant::now();
    let attack = GooseAttack::initialize_with_config(config)
        .map_err(|e| RunError::Goose(e.to_string()))?
        .register_scenario(traffic::goose_scenario(plan.clone()));
    let metrics = attack
        .execute()
        .await
        .map_err(|e| RunError::Goose(e.to_string()))?;
    let elapsed = started.elapsed();
    time_limit.abort();
    let _ = stop_reading.send(true);
    if let Some(reader) = reader {
        let path = options
            .marks_file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let found = reader
            .await
            .map_err(|e| RunError::Marks {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| RunError::Marks { path, source })?;
        marks.extend(found);
    }
    let end_secs = plan.timeline.now_secs();
    marks.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    let markers: Vec<Marker> = marks
        .into_iter()
        .map(|mark| plan.timeline.marker(mark.at_secs, mark.label, end_secs))
        .collect();
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    let sent = plan.progress.sent.load(Ordering::Relaxed);
    let ended_by = if sent >= options.requests {
        "completed".to_owned()
    } else {
        format!(
            "time limit {} reached after {sent} of {} requests",
            humantime::format_duration(options.time_limit),
            options.requests
        )
    };
    let report = Report::new(
        RunFacts {
            scenario: &scenario.name,
            base_url: &base_url,
            concurrency: users,
            requests_planned: options.requests,
            ended_by,
            elapsed,
            timeline: plan.timeline.seconds(),
            markers,
        },
        &metrics,
    );
    let settings = format!(
        "{} users, {} of {} requests in {:.0} s against {} ({})",
        report.concurrency,
        report.requests,
        report.requests_planned,
        report.duration_secs,
        report.base_url,
        report.ended_by
    );
    let title = format!("loadgen: {}", report.scenario);
    let svg = chart::svg(&title, &settings, &report.timeline, &report.markers)
        .map_err(RunError::Chart)?;
    let chart = options.report_dir.join("timeline.svg");
    std::fs::write(&chart, svg).map_err(|source| RunError::Write {
        path: chart.display().to_string(),
        source,
    })?;
    chart::png(
        &options.report_dir.join("timeline.png"),
        &title,
        &settings,
        &report.timeline,
        &report.markers,
    )
    .map_err(RunError::Chart)?;
    let summary = options.report_dir.join("summary.json");
    let json = serde_json::to_string_pretty(&report).expect("the report serializes");
    std::fs::write(&summary, json).map_err(|source| RunError::Write {
        path: summary.display().to_string(),
        source,
    })?;
    Ok(report)
}

/// One line a second on a terminal (rewritten in place), one every five
/// seconds otherwise (CI logs).
async fn show_progress(plan: Arc<Plan>, total: u64) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal { 1 } else { 5 };
    let started = Instant::now();
    let mut last = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(every));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let sent = plan.progress.sent.load(Ordering::Relaxed);
        let failed = plan.progress.failed.load(Ordering::Relaxed);
        let rate = (sent - last) as f64 / every as f64;
        last = sent;
        let line = format!(
            "[{:>6.1}s] {sent}/{total} requests ({:.0}%), {rate:.0} req/s, {failed} failed",
            started.elapsed().as_secs_f64(),
            100.0 * sent as f64 / total as f64
        );
        if terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }
}
