//! A private network for partition tests, without Docker: one network
//! namespace per node (a Redis node, a Sentinel, an API process), each with
//! its own address on a bridge that lives in a namespace of its own, plus one
//! leg into the test's own namespace so that the test, and API instances
//! running inside it, reach every node. A partition is a set of iptables
//! rules inside one node's namespace.
//!
//! Everything is created by the test and removed when the [`Lab`] is dropped;
//! a lab left behind by a test process that was killed (a timeout, Ctrl-C) is
//! removed by the next [`Lab::create`]. In the machine's own namespace a lab
//! adds only the test's leg: one veth end with an address in 198.18.0.0/15
//! (reserved for network tests, RFC 2544) and its route; no iptables rule is
//! ever written there, and traffic stays inside the namespaces the test
//! made. Needs root (`ip netns add`) and Debian's iproute2 and iptables;
//! [`Lab::create`] says why when it cannot.

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Labs made by this process, for unique names.
static LABS: AtomicU32 = AtomicU32::new(0);

/// A /24 of namespaces; addresses are `198.A.B.<host>`.
#[derive(Debug)]
pub struct Lab {
    /// Short and unique: namespace and interface names start with it
    /// (interface names may be 15 characters at most).
    name: String,
    subnet: [u8; 2],
    /// Namespaces made so far, the hub (holding the bridge) first.
    namespaces: Mutex<Vec<String>>,
}

/// iproute2's `ip`, by its full path: commands started with a cleared
/// environment have no PATH, and /usr/sbin is not on every user's PATH.
fn ip() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or("ip")
}

fn iptables() -> &'static str {
    ["/usr/sbin/iptables", "/sbin/iptables"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .unwrap_or("iptables")
}

fn run(args: &[&str]) -> Result<(), String> {
    let program = if args[0] == "ip" { ip() } else { args[0] };
    let output = Command::new(program)
        .args(&args[1..])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Lab {
    /// The hub namespace with its bridge, and the leg from the test's
    /// namespace (address `198.A.B.1`).
    ///
    /// # Errors
    /// When this machine cannot make namespaces (not root, no iproute2):
    /// the reason, for the test to fail with.
    pub fn create() -> Result<Self, String> {
        run(&[iptables(), "--version"]).map_err(|e| format!("no iptables: {e}"))?;
        sweep_abandoned_labs();
        let serial = LABS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("eg{pid}x{serial}");
        if name.len() > 12 {
            return Err(format!("{name}: too long for interface names"));
        }
        let subnet = free_subnet(pid, serial)?;
        let lab = Self {
            name,
            subnet,
            namespaces: Mutex::new(Vec::new()),
        };
        let hub = lab.namespace("hub")?;
        run(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &hub, "link", "set", "br0", "up"])?;
        let (leg, hub_end) = (format!("{}r", lab.name), format!("{}rh", lab.name));
        run(&[
            "ip", "link", "add", &leg, "type", "veth", "peer", "name", &hub_end, "netns", &hub,
        ])?;
        run(&[
            "ip", "-n", &hub, "link", "set", &hub_end, "master", "br0", "up",
        ])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lab.address(1)),
            "dev",
            &leg,
        ])?;
        run(&["ip", "link", "set", &leg, "up"])?;
        Ok(lab)
    }

    /// `198.A.B.host`.
    pub fn address(&self, host: u8) -> String {
        format!("198.{}.{}.{host}", self.subnet[0], self.subnet[1])
    }

    fn namespace(&self, suffix: &str) -> Result<String, String> {
        let namespace = format!("{}-{suffix}", self.name);
        run(&["ip", "netns", "add", &namespace])?;
        self.namespaces
            .lock()
            .expect("lock")
            .push(namespace.clone());
        run(&["ip", "-n", &namespace, "link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.name)
    }

    /// A namespace for one node at `198.A.B.host`, plugged into the bridge.
    /// Returns its name, for [`Self::command`].
    ///
    /// # Panics
    /// When the namespace or its link cannot be made.
    pub fn node(&self, host: u8) -> String {
        let namespace = self
            .namespace(&host.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let (inside, hub_end) = (
            format!("{}n{host}", self.name),
            format!("{}h{host}", self.name),
        );
        let hub = self.hub();
        let steps: [&[&str]; 4] = [
            &[
                "ip", "link", "add", &inside, "netns", &namespace, "type", "veth", "peer", "name",
                &hub_end, "netns", &hub,
            ],
            &[
                "ip", "-n", &hub, "link", "set", &hub_end, "master", "br0", "up",
            ],
            &[
                "ip",
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{}/24", self.address(host)),
                "dev",
                &inside,
            ],
            &["ip", "-n", &namespace, "link", "set", &inside, "up"],
        ];
        for step in steps {
            run(step).unwrap_or_else(|e| panic!("{e}"));
        }
        namespace
    }

    /// `ip netns exec NAMESPACE PROGRAM`: the program runs as this process's
    /// child with the same pid, so signals reach it directly.
    pub fn command(&self, namespace: &str, program: &str) -> Command {
        let mut command = Command::new(ip());
        command.args(["netns", "exec", namespace, program]);
        command
    }

    /// Drops every packet between `namespace` and `peers` (addresses), both
    /// ways; no peers: between it and everyone (loopback stays up).
    ///
    /// # Panics
    /// When iptables fails.
    pub fn cut(&self, namespace: &str, peers: &[String]) {
        let iptables = |rule: &[&str]| {
            let mut args = vec!["ip", "netns", "exec", namespace, iptables(), "-w"];
            args.extend_from_slice(rule);
            run(&args).unwrap_or_else(|e| panic!("{e}"));
        };
        if peers.is_empty() {
            iptables(&["-A", "INPUT", "!", "-i", "lo", "-j", "DROP"]);
            iptables(&["-A", "OUTPUT", "!", "-o", "lo", "-j", "DROP"]);
        }
        for peer in peers {
            iptables(&["-A", "INPUT", "-s", peer, "-j", "DROP"]);
            iptables(&["-A", "OUTPUT", "-d", peer, "-j", "DROP"]);
        }
    }

    /// Lifts every cut of `namespace`.
    ///
    /// # Panics
    /// When iptables fails.
    pub fn heal(&self, namespace: &str) {
        for chain in ["INPUT", "OUTPUT"] {
            run(&[
                "ip",
                "netns",
                "exec",
                namespace,
                iptables(),
                "-w",
                "-F",
                chain,
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// A /24 of 198.18.0.0/15 that no route of this machine covers yet.
fn free_subnet(pid: u32, serial: u32) -> Result<[u8; 2], String> {
    let routes = Command::new(ip())
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map_err(|e| format!("cannot run ip route: {e}"))?;
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    (0..512u32)
        .map(|i| {
            let n = (pid.wrapping_mul(7919).wrapping_add(serial * 131) + i) % 512;
            [18 + (n / 256) as u8, (n % 256) as u8]
        })
        .find(|[a, b]| !routes.contains(&format!("198.{a}.{b}.")))
        .ok_or_else(|| "no free /24 in 198.18.0.0/15".to_owned())
}

/// Removes the labs of test processes that no longer run: their processes,
/// their namespaces and their leg (a lab is named `eg<pid>x<serial>`).
fn sweep_abandoned_labs() {
    let Ok(listing) = Command::new(ip()).args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let namespace = line.split_whitespace().next().unwrap_or_default();
        let Some(lab) = namespace
            .strip_prefix("eg")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        let Some(pid) = lab.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = Command::new(ip())
            .args(["netns", "pids", namespace])
            .output()
        {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = run(&["ip", "link", "del", &format!("eg{lab}r")]);
        let _ = run(&["ip", "netns", "del", namespace]);
    }
}

impl Drop for Lab {
    /// Deleting a namespace deletes its end of every veth, and with it the
    /// other end; processes still inside must have been stopped first (the
    /// owners of the processes are dropped before the lab).
    fn drop(&mut self) {
        let _ = run(&["ip", "link", "del", &format!("{}r", self.name)]);
        for namespace in self.namespaces.lock().expect("lock").drain(..).rev() {
            let _ = run(&["ip", "netns", "del", &namespace]);
        }
    }
}
