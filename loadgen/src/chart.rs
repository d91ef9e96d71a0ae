//! `timeline.svg` and `timeline.png`: the run second by second in three
//! panels over one time axis (successful reads and writes, failures by
//! status class, latency p50 and p99), markers as labelled vertical lines,
//! the run's settings in the caption. Drawn with plotters, once per backend:
//! SVG (text stays text, opens in any browser) and a bitmap encoded as PNG
//! (for issue trackers and chat). Text is laid out and rasterized with
//! ab_glyph (pure Rust) from a font built into the binary, so neither needs
//! a font library or an installed font.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::timeline::{Marker, Second};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 780;
const HEADER: u32 = 58;

const READS: RGBColor = RGBColor(31, 119, 180);
const WRITES: RGBColor = RGBColor(44, 160, 44);
const LIMITED: RGBColor = RGBColor(255, 127, 14);
const UNAVAILABLE: RGBColor = RGBColor(214, 39, 40);
const OTHER: RGBColor = RGBColor(148, 103, 189);
const MARKER: RGBColor = RGBColor(80, 80, 80);

/// DejaVu Sans cut down to Latin-1, dashes, quotes, "…", "→", "≤" and "≥"
/// (22 KB instead of 760; `fonts/README.md` says how). Other characters of
/// a marker's label are drawn as empty boxes in the PNG.
const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");

/// Makes [`FONT`] the "sans-serif" every text of the chart asks for.
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
                .map_err(|_| "the font built into loadgen is not a font".to_owned())
        })
        .clone()
}

/// One line of a panel: its legend name, colour and value per second.
struct Series {
    name: &'static str,
    color: RGBColor,
    value: fn(&Second) -> f64,
}

/// One panel: its caption, the unit of its y axis and its lines.
struct Panel {
    caption: &'static str,
    unit: &'static str,
    series: &'static [Series],
}

const PANELS: [Panel; 3] = [
    Panel {
        caption: "successful requests per second",
        unit: "requests/s",
        series: &[
            Series {
                name: "reads/s (GET)",
                color: READS,
                value: |s| s.reads as f64,
            },
            Series {
                name: "writes/s (POST)",
                color: WRITES,
                value: |s| s.writes as f64,
            },
        ],
    },
    Panel {
        caption: "failed requests per second, by status",
        unit: "failed/s",
        series: &[
            Series {
                name: "429 rate limited",
                color: LIMITED,
                value: |s| s.failed_429 as f64,
            },
            Series {
                name: "503 retry",
                color: UNAVAILABLE,
                value: |s| s.failed_503 as f64,
            },
            Series {
                name: "other / no response",
                color: OTHER,
                value: |s| s.failed_other as f64,
            },
        ],
    },
    Panel {
        caption: "latency of the requests completed in each second",
        unit: "ms",
        series: &[
            Series {
                name: "p50",
                color: READS,
                value: |s| s.p50_ms,
            },
            Series {
                name: "p99",
                color: UNAVAILABLE,
                value: |s| s.p99_ms,
            },
        ],
    },
];

/// The chart as an SVG document. `title` and `settings` make the caption.
pub fn svg(
    title: &str,
    settings: &str,
    seconds: &[Second],
    markers: &[Marker],
) -> Result<String, String> {
    register_font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, title, settings, seconds, markers)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The same chart as a PNG file at `path`.
pub fn png(
    path: &Path,
    title: &str,
    settings: &str,
    seconds: &[Second],
    markers: &[Marker],
) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    draw(&root, title, settings, seconds, markers)?;
    root.present().map_err(|e| e.to_string())
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    settings: &str,
    seconds: &[Second],
    markers: &[Marker],
) -> Result<(), String> {
    let error = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| error(&e))?;
    let (header, body) = root.split_vertically(HEADER);
    header
        .draw_text(
            title,
            &("sans-serif", 20).into_font().color(&BLACK),
            (12, 8),
        )
        .map_err(|e| error(&e))?;
    header
        .draw_text(
            settings,
            &("sans-serif", 13).into_font().color(&MARKER),
            (12, 34),
        )
        .map_err(|e| error(&e))?;
    // Markers may fall after the last full second: the axis covers them.
    let end = markers
        .iter()
        .map(|m| m.at_secs.ceil())
        .fold(seconds.len().max(1) as f64, f64::max);
    for (i, (area, panel)) in body
        .split_evenly((PANELS.len(), 1))
        .iter()
        .zip(&PANELS)
        .enumerate()
    {
        // The marker labels go on the first panel only.
        draw_panel(area, panel, end, seconds, markers, i == 0).map_err(|e| error(&e))?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    end: f64,
    seconds: &[Second],
    markers: &[Marker],
    label_markers: bool,
) -> DrawResult<DB> {
    let top = panel
        .series
        .iter()
        .flat_map(|line| seconds.iter().map(line.value))
        .fold(0.0, f64::max);
    // Headroom for the legend and the marker labels; never a flat 0..0 axis.
    let top = (top * 1.25).max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.caption, ("sans-serif", 14))
        .margin(6)
        .margin_right(18)
        .x_label_area_size(34)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the traffic started")
        .y_desc(panel.unit)
        .x_labels(12)
        .y_labels(6)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .label_style(("sans-serif", 12))
        .draw()?;
    for line in panel.series {
        // Each second's value sits at the middle of its second.
        let points = seconds
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64 + 0.5, (line.value)(s)));
        let color = line.color;
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(line.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    for (i, marker) in markers.iter().enumerate() {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(marker.at_secs, 0.0), (marker.at_secs, top)],
            MARKER.stroke_width(1),
        )))?;
        if label_markers {
            // One row lower per marker, so that close markers do not print
            // over each other; right of the line, or left of it in the
            // right part of the chart, where the legend is.
            let row = (i % 4) as f64;
            let (x, anchor) = if marker.at_secs < end * 0.55 {
                (marker.at_secs + end * 0.004, HPos::Left)
            } else {
                (marker.at_secs - end * 0.004, HPos::Right)
            };
            chart.draw_series(std::iter::once(Text::new(
                format!(
                    "{} (writes out {:.1} s)",
                    marker.label, marker.write_window_secs
                ),
                (x, top * (0.96 - 0.07 * row)),
                ("sans-serif", 12)
                    .into_font()
                    .color(&MARKER)
                    .pos(Pos::new(anchor, VPos::Top)),
            )))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(MARKER)
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(reads: u64, writes: u64, failed_503: u64) -> Second {
        Second {
            reads,
            writes,
            failed_503,
            p50_ms: 3.0,
            p99_ms: 9.0,
            max_ms: 12.0,
            ..Second::default()
        }
    }

    #[test]
    fn the_chart_draws_every_series_with_a_legend_the_caption_and_labelled_markers() {
        let seconds = [second(90, 30, 0), second(95, 0, 12), second(92, 31, 0)];
        let markers = [Marker {
            at_secs: 1.2,
            label: "pause <redis-master>".into(),
            write_window_secs: 1.4,
        }];
        let chart = svg("shopping", "16 users via http://x", &seconds, &markers).expect("drawn");
        assert!(chart.starts_with("<svg"), "{chart}");
        for text in [
            "shopping",
            "16 users via http://x",
            "reads/s (GET)",
            "writes/s (POST)",
            "429 rate limited",
            "503 retry",
            "other / no response",
            "p50",
            "p99",
            "seconds since the traffic started",
            "pause &lt;redis-master&gt; (writes out 1.4 s)",
        ] {
            assert!(chart.contains(text), "missing `{text}`");
        }
        // 7 series, each a polyline, and one per legend sample.
        assert!(chart.matches("<polyline").count() >= 7, "{chart}");
    }

    #[test]
    fn the_png_is_the_chart_with_its_text_rasterized() {
        let seconds = [second(90, 30, 0), second(95, 0, 12)];
        let dir = tempfile::tempdir().expect("temp dir");
        let [one, other] = ["one title", "another title"].map(|title| {
            let path = dir.path().join(format!("{title}.png"));
            png(&path, title, "16 users", &seconds, &[]).expect("drawn");
            std::fs::read(path).expect("written")
        });
        assert_eq!(&one[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, after the signature and the
        // chunk's length and type.
        assert_eq!(one[16..20], WIDTH.to_be_bytes());
        assert_eq!(one[20..24], HEIGHT.to_be_bytes());
        // Only the titles differ: text is drawn, not left out.
        assert_ne!(one, other);
    }

    #[test]
    fn an_empty_run_still_draws_axes() {
        let chart = svg("empty", "", &[], &[]).expect("drawn");
        assert!(chart.contains("seconds since the traffic started"));
    }
}
