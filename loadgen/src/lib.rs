//! The Evergreen load tool: a scenario file in, realistic store traffic out,
//! a report at the end.
//!
//! - `scenario`: the file format and its validation (errors name the field).
//! - `seed`: checks the store answers, then creates products and customers.
//! - `traffic`: the Goose scenario; one weighted operation per request.
//! - `report`: throughput, per-operation counts, errors, latency percentiles.
//! - `timeline`: second by second: reads, writes, failures by status,
//!   latency percentiles; the write window after each marker.
//! - `marks`: the markers (`--mark`, a marks file another process appends to).
//! - `chart`: `timeline.svg` and `timeline.png`, drawn with plotters.
//! - `run`: ties them together under the request count and the time limit.

pub mod chart;
pub mod marks;
pub mod report;
pub mod run;
pub mod scenario;
pub mod seed;
pub mod timeline;
pub mod traffic;
