//! Throughput and latency second by second, kept by the load tool itself and
//! drawn as `timeline.svg`: Goose's HTML report has richer charts, but they
//! load their JavaScript from a CDN; this one opens anywhere.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Second {
    pub requests: u64,
    pub failed: u64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug)]
pub struct Timeline {
    started: Instant,
    seconds: Mutex<Vec<Second>>,
}

impl Timeline {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            seconds: Mutex::new(Vec::new()),
        }
    }

    /// A request that ended now, after `took`.
    pub fn record(&self, took: Duration, failed: bool) {
        let index = self.started.elapsed().as_secs() as usize;
        let ms = took.as_secs_f64() * 1000.0;
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        if seconds.len() <= index {
            seconds.resize(index + 1, Second::default());
        }
        let second = &mut seconds[index];
        second.mean_ms =
            (second.mean_ms * second.requests as f64 + ms) / (second.requests + 1) as f64;
        second.requests += 1;
        second.failed += u64::from(failed);
        second.max_ms = second.max_ms.max(ms);
    }

    pub fn seconds(&self) -> Vec<Second> {
        self.seconds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

/// Two stacked charts: requests/s (failed in red), then mean and max
/// latency in ms.
pub fn svg(title: &str, seconds: &[Second]) -> String {
    const WIDTH: f64 = 800.0;
    const HEIGHT: f64 = 180.0;
    const LEFT: f64 = 60.0;
    let n = seconds.len().max(2) as f64;
    let x = |i: usize| LEFT + (WIDTH - LEFT - 10.0) * i as f64 / (n - 1.0);
    let line = |top: f64, max: f64, value: &dyn Fn(&Second) -> f64| -> String {
        seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{:.1},{:.1}",
                    x(i),
                    top + HEIGHT - HEIGHT * value(s) / max.max(1e-9)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let max_rate = seconds
        .iter()
        .map(|s| s.requests as f64)
        .fold(1.0, f64::max);
    let max_latency = seconds.iter().map(|s| s.max_ms).fold(1.0, f64::max);
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="16" font-size="14">{}</text>
"##,
        2.0 * HEIGHT + 100.0,
        escape(title)
    );
    for (top, label, max) in [
        (30.0, "requests/s", max_rate),
        (HEIGHT + 70.0, "latency ms (mean, max)", max_latency),
    ] {
        let _ = write!(
            out,
            r##"<text x="{LEFT}" y="{}">{label}</text>
<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{}" stroke="black"/>
<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="end">{max:.0}</text>
<text x="{}" y="{}" text-anchor="end">0</text>
"##,
            top - 4.0,
            top + HEIGHT,
            top + HEIGHT,
            WIDTH - 10.0,
            top + HEIGHT,
            LEFT - 4.0,
            top + 10.0,
            LEFT - 4.0,
            top + HEIGHT,
        );
    }
    let rate_top = 30.0;
    let latency_top = HEIGHT + 70.0;
    let _ = writeln!(
        out,
        r##"<polyline fill="none" stroke="#2b7bb9" stroke-width="2" points="{}"/>"##,
        line(rate_top, max_rate, &|s| s.requests as f64)
    );
    let _ = writeln!(
        out,
        r##"<polyline fill="none" stroke="#d62728" stroke-width="2" points="{}"/>"##,
        line(rate_top, max_rate, &|s| s.failed as f64)
    );
    let _ = writeln!(
        out,
        r##"<polyline fill="none" stroke="#2ca02c" stroke-width="2" points="{}"/>"##,
        line(latency_top, max_latency, &|s| s.mean_ms)
    );
    let _ = writeln!(
        out,
        r##"<polyline fill="none" stroke="#ff7f0e" stroke-width="1" points="{}"/>"##,
        line(latency_top, max_latency, &|s| s.max_ms)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{}">seconds 0..{} · blue: requests/s · red: failed/s · green: mean ms · orange: max ms</text>
</svg>"##,
        2.0 * HEIGHT + 90.0,
        seconds.len()
    );
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_land_in_their_second_with_mean_and_max() {
        let timeline = Timeline::new();
        timeline.record(Duration::from_millis(10), false);
        timeline.record(Duration::from_millis(30), true);
        let seconds = timeline.seconds();
        assert_eq!(seconds.len(), 1);
        assert_eq!(seconds[0].requests, 2);
        assert_eq!(seconds[0].failed, 1);
        assert!((seconds[0].mean_ms - 20.0).abs() < 0.5, "{:?}", seconds[0]);
        assert!((seconds[0].max_ms - 30.0).abs() < 0.5, "{:?}", seconds[0]);
    }

    #[test]
    fn the_chart_has_a_line_per_series_and_escapes_the_title() {
        let seconds = vec![
            Second {
                requests: 10,
                failed: 0,
                mean_ms: 2.0,
                max_ms: 5.0,
            },
            Second {
                requests: 20,
                failed: 1,
                mean_ms: 3.0,
                max_ms: 9.0,
            },
        ];
        let chart = svg("a <b> & c", &seconds);
        assert_eq!(chart.matches("<polyline").count(), 4);
        assert!(chart.contains("a &lt;b&gt; &amp; c"));
        assert!(chart.starts_with("<svg"));
    }
}
