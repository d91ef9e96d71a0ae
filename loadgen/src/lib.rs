//! The Evergreen load tool: a scenario file in, realistic store traffic out,
//! a report at the end.
//!
//! - `scenario`: the file format and its validation (errors name the field).
//! - `seed`: checks the store answers, then creates products and customers.
//! - `traffic`: the Goose scenario; one weighted operation per request.
//! - `report`: throughput, per-operation counts, errors, latency percentiles.
//! - `timeline`: requests/s and latency second by second, as an SVG chart.
//! - `run`: ties them together under the request count and the time limit.

pub mod report;
pub mod run;
pub mod scenario;
pub mod seed;
pub mod timeline;
pub mod traffic;
