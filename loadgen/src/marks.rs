//! Events to draw on the timeline: `--mark 20s="pause redis-master"` given
//! up front, and lines that another process appends to a marks file while
//! the run goes (what `scripts/demo` does as it breaks the stack).
//!
//! A line of the marks file is `<unix time in seconds> <label>` (the time may
//! have a fraction: `date +%s.%N`), or just `<label>`, stamped when loadgen
//! reads it (within a fifth of a second). Only complete lines count.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A mark as it arrives: when (seconds since the traffic started) and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub at_secs: f64,
    pub label: String,
}

/// `20s=pause redis-master`, `1m30s=heal` or `12.5=x` (seconds): the time
/// after the traffic started, and the label.
pub fn parse_mark(text: &str) -> Result<(Duration, String), String> {
    let (at, label) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected TIME=LABEL, e.g. 20s=\"pause redis-master\""))?;
    let label = label.trim();
    if label.is_empty() {
        return Err(format!("`{text}`: the label is empty"));
    }
    let at = at.trim();
    let at = match at.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Ok(_) => return Err(format!("`{text}`: the time must be 0 or more seconds")),
        Err(_) => humantime::parse_duration(at).map_err(|e| format!("`{text}`: {e}"))?,
    };
    Ok((at, label.to_owned()))
}

/// Reads the lines appended to a marks file since the last read.
#[derive(Debug)]
pub struct MarksFile {
    path: PathBuf,
    read_up_to: u64,
}

impl MarksFile {
    /// Lines already in the file when the traffic starts count too: a mark
    /// written during seeding lands at its own time (before second 0) or,
    /// without one, at 0.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            read_up_to: 0,
        }
    }

    /// The complete lines appended since the last call; `secs_of` turns a
    /// wall-clock instant into seconds since the traffic started, `now`
    /// stamps a line without a time. A file that does not exist (yet) has
    /// no lines.
    pub fn read_new(
        &mut self,
        secs_of: impl Fn(SystemTime) -> f64,
        now_secs: f64,
    ) -> std::io::Result<Vec<Mark>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.read_up_to))?;
        let mut text = String::new();
        file.read_to_string(&mut text)?;
        let Some(complete) = text.rfind('\n') else {
            return Ok(Vec::new());
        };
        self.read_up_to += complete as u64 + 1;
        Ok(text[..complete]
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| parse_line(line.trim(), &secs_of, now_secs))
            .collect())
    }
}

fn parse_line(line: &str, secs_of: &impl Fn(SystemTime) -> f64, now_secs: f64) -> Mark {
    if let Some((first, rest)) = line.split_once(char::is_whitespace)
        && let Ok(unix) = first.parse::<f64>()
        && unix.is_finite()
        && unix > 0.0
        && !rest.trim().is_empty()
    {
        return Mark {
            at_secs: secs_of(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(unix)),
            label: rest.trim().to_owned(),
        };
    }
    Mark {
        at_secs: now_secs,
        label: line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_a_time_and_a_label() {
        assert_eq!(
            parse_mark("20s=pause redis-master"),
            Ok((Duration::from_secs(20), "pause redis-master".to_owned()))
        );
        assert_eq!(
            parse_mark("1m30s=heal"),
            Ok((Duration::from_secs(90), "heal".to_owned()))
        );
        assert_eq!(
            parse_mark("2.5=x"),
            Ok((Duration::from_millis(2500), "x".to_owned()))
        );
        for bad in ["20s", "20s=", "soon=x", "-1=x"] {
            assert!(parse_mark(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_marks_file_yields_each_complete_line_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("marks");
        let mut marks = MarksFile::new(&path);
        let secs_of = |wall: SystemTime| {
            wall.duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs_f64()
                - 1_000.0
        };
        assert_eq!(marks.read_new(secs_of, 0.0).expect("read"), []);
        std::fs::write(&path, "1012.5 pause redis-master\nhe").expect("write");
        assert_eq!(
            marks.read_new(secs_of, 3.0).expect("read"),
            [Mark {
                at_secs: 12.5,
                label: "pause redis-master".into()
            }]
        );
        std::fs::write(&path, "1012.5 pause redis-master\nheal it\n").expect("write");
        assert_eq!(
            marks.read_new(secs_of, 30.0).expect("read"),
            [Mark {
                at_secs: 30.0,
                label: "heal it".into()
            }],
            "a line without a time is stamped when read"
        );
        assert_eq!(marks.read_new(secs_of, 31.0).expect("read"), []);
    }
}
