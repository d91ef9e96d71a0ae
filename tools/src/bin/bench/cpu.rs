//! Where the CPU goes: user + system time of each tier's processes, read
//! from `/proc/<pid>/stat` before and after a measurement, divided by the
//! requests it served. Whatever the machine spent beyond the tiers (`wrk`,
//! loadgen, the kernel's softirqs, other tenants) is "the rest", from
//! `/proc/stat`.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde::Serialize;

/// Clock ticks per second of the `/proc` counters.
static TICKS_PER_SEC: LazyLock<f64> = LazyLock::new(|| {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
});

/// The processes of each tier.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    /// nginx's master; its workers are found as its children at each sample.
    pub nginx_master: Option<u32>,
    pub api: Vec<u32>,
    pub redis_master: Option<u32>,
    /// Redis replicas and Sentinels: what replication and monitoring cost.
    pub redis_others: Vec<u32>,
}

/// Ticks spent so far by each tier and by the whole machine.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    nginx: u64,
    api: u64,
    redis_master: u64,
    redis_others: u64,
    machine: u64,
}

/// µs of CPU (user + system) per request, per tier.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PerRequest {
    pub nginx_us: f64,
    pub api_us: f64,
    pub redis_master_us: f64,
    pub redis_others_us: f64,
    /// The load generator and everything else on the machine.
    pub rest_us: f64,
}

impl Tiers {
    pub fn sample(&self) -> Sample {
        let nginx = self.nginx_master.map_or(0, |master| {
            let mut pids = children(master);
            pids.insert(master);
            pids.into_iter().map(process_ticks).sum()
        });
        Sample {
            nginx,
            api: self.api.iter().copied().map(process_ticks).sum(),
            redis_master: self.redis_master.map_or(0, process_ticks),
            redis_others: self.redis_others.iter().copied().map(process_ticks).sum(),
            machine: machine_busy_ticks(),
        }
    }
}

impl Sample {
    /// CPU per request between `self` (before) and `after`. nginx workers
    /// that exited in between are not counted (none do during a run).
    pub fn per_request(&self, after: &Sample, requests: u64) -> PerRequest {
        let us = |before: u64, after: u64| {
            after.saturating_sub(before) as f64 / *TICKS_PER_SEC * 1e6 / requests.max(1) as f64
        };
        let nginx_us = us(self.nginx, after.nginx);
        let api_us = us(self.api, after.api);
        let redis_master_us = us(self.redis_master, after.redis_master);
        let redis_others_us = us(self.redis_others, after.redis_others);
        let machine_us = us(self.machine, after.machine);
        PerRequest {
            nginx_us,
            api_us,
            redis_master_us,
            redis_others_us,
            rest_us: (machine_us - nginx_us - api_us - redis_master_us - redis_others_us).max(0.0),
        }
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces): the first is field 3 of the file, `state`.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// Field `n` (numbered as in proc(5)) of a process's stat, as a number.
fn stat_field(fields: &[String], n: usize) -> Option<u64> {
    fields.get(n - 3)?.parse().ok()
}

/// utime + stime (fields 14 and 15) of one process, all its threads; 0
/// once it is gone.
fn process_ticks(pid: u32) -> u64 {
    stat_fields(pid).map_or(0, |fields| {
        stat_field(&fields, 14).unwrap_or(0) + stat_field(&fields, 15).unwrap_or(0)
    })
}

/// Pids whose parent (field 4) is `parent`.
fn children(parent: u32) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat_fields(pid).and_then(|fields| stat_field(&fields, 4)) == Some(u64::from(parent))
        })
        .collect()
}

/// Every tick the machine's CPUs spent not idle (user, nice, system, irq,
/// softirq, steal).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| values.get(i))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_spends_cpu_that_the_sample_sees() {
        let tiers = Tiers {
            api: vec![std::process::id()],
            ..Tiers::default()
        };
        let before = tiers.sample();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let per = before.per_request(&tiers.sample(), 1);
        assert!(
            per.api_us > 100_000.0,
            "300 ms of spinning counted as {} µs",
            per.api_us
        );
        assert_eq!(per.nginx_us, 0.0);
    }
}
