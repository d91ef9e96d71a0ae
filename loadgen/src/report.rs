//! The final report, from Goose's per-request metrics: throughput, counts per
//! operation, errors by status and latency percentiles. Written as JSON
//! (`summary.json`, a stable shape for scripts) and printed as a table; Goose
//! itself writes `report.html` with the charts over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use goose::metrics::{GooseMetrics, GooseRequestMetricTimingData};
use serde::Serialize;

use crate::scenario::Operation;
use crate::timeline::{Marker, Second};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(times: &GooseRequestMetricTimingData) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if times.counter == 0 {
            return Self::default();
        }
        Self {
            p50: ms(times.percentile_us(0.50)),
            p90: ms(times.percentile_us(0.90)),
            p99: ms(times.percentile_us(0.99)),
            max: ms(times.maximum_time_us),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationReport {
    pub requests: usize,
    pub failed: usize,
    /// Responses by HTTP status; "no response" counts connection errors and timeouts.
    pub statuses: BTreeMap<String, usize>,
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub base_url: String,
    pub concurrency: usize,
    pub requests_planned: u64,
    /// "completed", or why the run stopped early.
    pub ended_by: String,
    pub duration_secs: f64,
    pub requests: usize,
    pub failed: usize,
    pub throughput_rps: f64,
    /// Failed responses by status, over every operation.
    pub errors_by_status: BTreeMap<String, usize>,
    pub latency_ms: Latency,
    pub operations: BTreeMap<String, OperationReport>,
    /// Second by second (also drawn in timeline.svg).
    pub timeline: Vec<Second>,
    /// The run's markers, each with the write-unavailability window after it.
    pub markers: Vec<Marker>,
}

/// Goose keys a request's metrics by `METHOD name`; status 0 means none came.
fn status_label(status: u16) -> String {
    if status == 0 {
        "no response".to_owned()
    } else {
        status.to_string()
    }
}

#[derive(Debug)]
pub struct RunFacts<'a> {
    pub scenario: &'a str,
    pub base_url: &'a str,
    pub concurrency: usize,
    pub requests_planned: u64,
    pub ended_by: String,
    pub elapsed: Duration,
    pub timeline: Vec<Second>,
    pub markers: Vec<Marker>,
}

impl Report {
    pub fn new(facts: RunFacts<'_>, metrics: &GooseMetrics) -> Self {
        let mut operations = BTreeMap::new();
        let mut all = GooseRequestMetricTimingData::default();
        let mut errors_by_status = BTreeMap::new();
        for (key, aggregate) in &metrics.requests {
            let name = key.split_once(' ').map_or(key.as_str(), |(_, name)| name);
            let mut statuses = BTreeMap::new();
            for (&status, &count) in &aggregate.status_code_counts {
                statuses.insert(status_label(status), count);
                if !(200..300).contains(&status) {
                    *errors_by_status.entry(status_label(status)).or_insert(0) += count;
                }
            }
            merge_into(&mut all, &aggregate.raw_data);
            operations.insert(
                name.to_owned(),
                OperationReport {
                    requests: aggregate.success_count + aggregate.fail_count,
                    failed: aggregate.fail_count,
                    statuses,
                    latency_ms: Latency::of(&aggregate.raw_data),
                },
            );
        }
        let requests = operations.values().map(|o| o.requests).sum();
        let failed = operations.values().map(|o| o.failed).sum();
        let duration_secs = facts.elapsed.as_secs_f64();
        Self {
            scenario: facts.scenario.to_owned(),
            base_url: facts.base_url.to_owned(),
            concurrency: facts.concurrency,
            requests_planned: facts.requests_planned,
            ended_by: facts.ended_by,
            duration_secs,
            requests,
            failed,
            throughput_rps: if duration_secs > 0.0 {
                requests as f64 / duration_secs
            } else {
                0.0
            },
            errors_by_status,
            latency_ms: Latency::of(&all),
            operations,
            timeline: facts.timeline,
            markers: facts.markers,
        }
    }

    /// The table printed at the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} requests in {:.1} s, {:.0} req/s, {} failed ({})",
            self.scenario,
            self.requests,
            self.duration_secs,
            self.throughput_rps,
            self.failed,
            self.ended_by
        );
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "operation", "requests", "failed", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let mut row = |name: &str, requests: usize, failed: usize, l: &Latency| {
            let _ = writeln!(
                out,
                "{name:<20} {requests:>9} {failed:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                l.p50, l.p90, l.p99, l.max
            );
        };
        // The scenario file's order, then anything unexpected.
        let known = Operation::ALL.map(Operation::name);
        for name in known {
            if let Some(o) = self.operations.get(name) {
                row(name, o.requests, o.failed, &o.latency_ms);
            }
        }
        for (name, o) in self
            .operations
            .iter()
            .filter(|(n, _)| !known.contains(&n.as_str()))
        {
            row(name, o.requests, o.failed, &o.latency_ms);
        }
        row("all", self.requests, self.failed, &self.latency_ms);
        if !self.errors_by_status.is_empty() {
            let errors: Vec<String> = self
                .errors_by_status
                .iter()
                .map(|(status, count)| format!("{status}: {count}"))
                .collect();
            let _ = writeln!(out, "failed by status: {}", errors.join(", "));
        }
        for marker in &self.markers {
            let _ = writeln!(
                out,
                "at {:.1} s: {}; longest stretch without a successful write after it: {:.1} s",
                marker.at_secs, marker.label, marker.write_window_secs
            );
        }
        out
    }
}

/// Adds `other`'s times to `into` (Goose's own merge is crate-private).
fn merge_into(into: &mut GooseRequestMetricTimingData, other: &GooseRequestMetricTimingData) {
    if other.counter == 0 {
        return;
    }
    for (&bucket, &count) in other.times_us.iter() {
        let before = into.times_us.get(&bucket).copied().unwrap_or(0);
        into.times_us.insert(bucket, before + count);
    }
    if into.counter == 0 || other.minimum_time_us < into.minimum_time_us {
        into.minimum_time_us = other.minimum_time_us;
    }
    into.maximum_time_us = into.maximum_time_us.max(other.maximum_time_us);
    into.total_time_us += other.total_time_us;
    into.counter += other.counter;
}
