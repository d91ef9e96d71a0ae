//! What happened second by second, kept by the load tool itself (Goose's
//! own charts load their JavaScript from a CDN): successful reads and writes
//! apart, failures by status class, latency percentiles, and the instants
//! of successful writes, from which the write-unavailability window after
//! each marker is measured. `chart` draws it.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// A request as the timeline sorts it: reads (`GET`) and writes (anything
/// else) fail differently during a Redis failover, so they are drawn apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// One second of the run, as reported in `summary.json` and drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Second {
    /// Successful (2xx) reads and writes completed in this second.
    pub reads: u64,
    pub writes: u64,
    /// Failed requests by class: 429 (rate limited), 503 (told to retry),
    /// anything else (other statuses, no response at all).
    pub failed_429: u64,
    pub failed_503: u64,
    pub failed_other: u64,
    /// Latency of every request completed in this second, failed ones too.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Second {
    pub fn failed(&self) -> u64 {
        self.failed_429 + self.failed_503 + self.failed_other
    }
}

/// A labelled instant of the run (`--mark`, or a line of the marks file),
/// with the write-unavailability window measured after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Marker {
    /// Seconds since the traffic started.
    pub at_secs: f64,
    pub label: String,
    /// The longest stretch after the marker without a successful write:
    /// from the marker to the first success, between two successes, or from
    /// the last success to the end of the run. The failover tests measure
    /// the same (`Report::write_gap` in tests/src/traffic.rs).
    pub write_window_secs: f64,
}

#[derive(Debug, Default)]
struct Bucket {
    second: Second,
    latencies_us: Vec<u32>,
}

#[derive(Debug, Default)]
struct Recorded {
    buckets: Vec<Bucket>,
    /// Seconds since the start at which successful writes completed.
    write_successes: Vec<f64>,
}

#[derive(Debug)]
pub struct Timeline {
    started: Instant,
    started_wall: SystemTime,
    recorded: Mutex<Recorded>,
}

impl Timeline {
    /// A timeline whose second 0 starts now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            recorded: Mutex::new(Recorded::default()),
        }
    }

    /// Second 0.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Seconds since the start.
    pub fn now_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Seconds since the start of a wall-clock instant (negative before it).
    pub fn secs_of(&self, wall: SystemTime) -> f64 {
        match wall.duration_since(self.started_wall) {
            Ok(after) => after.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        }
    }

    /// A request that ended now, after `took`; `status` is `None` when no
    /// response came.
    pub fn record(&self, kind: Kind, took: Duration, status: Option<u16>) {
        let now = self.now_secs();
        let index = now as usize;
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if recorded.buckets.len() <= index {
            recorded.buckets.resize_with(index + 1, Bucket::default);
        }
        let bucket = &mut recorded.buckets[index];
        bucket
            .latencies_us
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        let second = &mut bucket.second;
        match (status, kind) {
            (Some(200..=299), Kind::Read) => second.reads += 1,
            (Some(200..=299), Kind::Write) => second.writes += 1,
            (Some(429), _) => second.failed_429 += 1,
            (Some(503), _) => second.failed_503 += 1,
            _ => second.failed_other += 1,
        }
        if kind == Kind::Write && matches!(status, Some(200..=299)) {
            recorded.write_successes.push(now);
        }
    }

    /// Every second so far, with its percentiles.
    pub fn seconds(&self) -> Vec<Second> {
        let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded
            .buckets
            .iter()
            .map(|bucket| {
                let mut latencies = bucket.latencies_us.clone();
                latencies.sort_unstable();
                let at = |quantile: f64| {
                    latencies.get(
                        ((latencies.len() as f64 * quantile).ceil() as usize)
                            .saturating_sub(1)
                            .min(latencies.len().saturating_sub(1)),
                    )
                };
                let ms = |us: Option<&u32>| us.map_or(0.0, |&us| f64::from(us) / 1000.0);
                Second {
                    p50_ms: ms(at(0.50)),
                    p99_ms: ms(at(0.99)),
                    max_ms: ms(latencies.last()),
                    ..bucket.second
                }
            })
            .collect()
    }

    /// `label` at `at_secs`, with its write window up to `end_secs`.
    pub fn marker(&self, at_secs: f64, label: String, end_secs: f64) -> Marker {
        let recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        Marker {
            at_secs,
            label,
            write_window_secs: longest_gap_without_success(
                &recorded.write_successes,
                at_secs,
                end_secs,
            ),
        }
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

/// The write-unavailability window: the longest stretch in `from..end`
/// without an instant of `successes`, from `from` to the first one, between
/// two, or from the last one to `end`; with none after `from`, all of it.
/// loadgen's markers and the failure tests (`evergreen-tests`) both measure
/// with it.
pub fn longest_gap_without_success(successes: &[f64], from: f64, end: f64) -> f64 {
    let mut after: Vec<f64> = successes
        .iter()
        .copied()
        .filter(|&t| t >= from && t <= end)
        .collect();
    after.sort_by(f64::total_cmp);
    let mut previous = from;
    let mut longest: f64 = 0.0;
    for t in after.into_iter().chain(std::iter::once(end)) {
        longest = longest.max(t - previous);
        previous = t;
    }
    longest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_second_by_kind_and_status_class() {
        let timeline = Timeline::new();
        timeline.record(Kind::Read, Duration::from_millis(10), Some(200));
        timeline.record(Kind::Write, Duration::from_millis(20), Some(201));
        timeline.record(Kind::Write, Duration::from_millis(30), Some(503));
        timeline.record(Kind::Write, Duration::from_millis(40), Some(429));
        timeline.record(Kind::Read, Duration::from_millis(50), None);
        timeline.record(Kind::Write, Duration::from_millis(60), Some(409));
        let seconds = timeline.seconds();
        assert_eq!(seconds.len(), 1);
        let s = seconds[0];
        assert_eq!(
            (
                s.reads,
                s.writes,
                s.failed_429,
                s.failed_503,
                s.failed_other
            ),
            (1, 1, 1, 1, 2)
        );
        assert!((s.p50_ms - 30.0).abs() < 0.5, "{s:?}");
        assert!((s.p99_ms - 60.0).abs() < 0.5, "{s:?}");
        assert!((s.max_ms - 60.0).abs() < 0.5, "{s:?}");
    }

    #[test]
    fn the_write_window_is_the_longest_stretch_after_the_marker_without_a_successful_write() {
        let successes = [0.5, 1.2, 1.3, 6.3, 6.4];
        assert!((longest_gap_without_success(&successes, 1.0, 7.0) - 5.0).abs() < 1e-9);
        // From the marker to the first success.
        assert!((longest_gap_without_success(&[4.0, 4.1], 1.0, 4.2) - 3.0).abs() < 1e-9);
        // No success after the marker: the whole rest of the run.
        assert!((longest_gap_without_success(&[0.5], 1.0, 9.0) - 8.0).abs() < 1e-9);
        assert!((longest_gap_without_success(&[], 1.0, 9.0) - 8.0).abs() < 1e-9);
        // Writes that stopped succeeding: the trailing stretch counts.
        assert!((longest_gap_without_success(&[1.5, 2.0], 1.0, 12.0) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_marker_carries_the_window_of_the_writes_recorded() {
        let timeline = Timeline::new();
        timeline.record(Kind::Write, Duration::from_millis(1), Some(201));
        timeline.record(Kind::Read, Duration::from_millis(1), Some(200));
        let marker = timeline.marker(0.0, "pause".into(), 2.0);
        assert_eq!(marker.label, "pause");
        assert!(
            marker.write_window_secs > 1.9 && marker.write_window_secs <= 2.0,
            "reads do not end a write window: {marker:?}"
        );
    }
}
