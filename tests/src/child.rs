//! Commands for the long-lived processes the harness starts (Redis,
//! Sentinel, dnsmasq, nginx, API replicas, Prometheus, exporters): each ends
//! with the test process that started it, even when that process dies
//! without running its destructors (an abort such as a stack overflow, or
//! nextest's SIGKILL after a timeout). `setpriv --pdeathsig` (util-linux, in
//! every Debian) sets Linux's parent-death signal, then execs the program.
//! The destructors still stop everything in order; this is the net under
//! them (before it, every aborted test left its Redis topology running).

use std::ffi::OsStr;
use std::process::Command;

use crate::lab::Lab;

/// What runs before the program: SIGTERM it when its parent goes.
const ENDS_WITH_PARENT: [&str; 4] = ["setpriv", "--pdeathsig", "TERM", "--"];

/// `program`, ended with this process.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(ENDS_WITH_PARENT[0]);
    command.args(&ENDS_WITH_PARENT[1..]).arg(program);
    command
}

/// `program` in `namespace` of `lab`, ended with this process.
pub fn command_in(lab: &Lab, namespace: &str, program: &str) -> Command {
    let mut command = lab.command(namespace, ENDS_WITH_PARENT[0]);
    command.args(&ENDS_WITH_PARENT[1..]).arg(program);
    command
}
