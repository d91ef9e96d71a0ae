//! Waiting on conditions and reserving loopback ports.
//!
//! Every wait in the harness polls a condition with a deadline instead of
//! sleeping a fixed time: fixed sleeps are either too short on a loaded machine
//! (flaky) or too long everywhere else (slow). On timeout the panic names what
//! was awaited, how long it took and the last reason the condition gave.

use std::fmt::Debug;
use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How often [`until`] retries. Short enough that measured durations (failover
/// times) are accurate to ~0.1 s, long enough not to load the nodes polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The outcome of one attempt of a condition polled by [`until`].
///
/// `None` / `Err` mean "not yet"; an `Err` also says why, which ends up in the
/// timeout message.
pub trait Attempt<T> {
    /// `Ok` once the condition holds.
    ///
    /// # Errors
    /// Why the condition does not hold (yet).
    fn into_attempt(self) -> Result<T, String>;
}

impl<T> Attempt<T> for Option<T> {
    fn into_attempt(self) -> Result<T, String> {
        self.ok_or_else(|| "condition not met".to_owned())
    }
}

impl<T, E: Debug> Attempt<T> for Result<T, E> {
    fn into_attempt(self) -> Result<T, String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Polls `f` every [`POLL_INTERVAL`] until it yields a value, and returns it.
///
/// `f` returns an `Option<T>` or a `Result<T, E>`. An attempt still running at
/// the deadline is abandoned, so a hung connection cannot stretch the wait.
///
/// # Panics
/// When `deadline` passes, with a message naming `what`, the elapsed time and
/// the last attempt's reason.
pub async fn until<F, Fut, R, T>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
    R: Attempt<T>,
{
    let start = Instant::now();
    let mut last = "no attempt finished".to_owned();
    loop {
        let remaining = deadline.saturating_sub(start.elapsed());
        if remaining.is_zero() {
            break;
        }
        let Ok(attempt) = tokio::time::timeout(remaining, f()).await else {
            last = format!("{last}; then an attempt was still running at the deadline");
            break;
        };
        match attempt.into_attempt() {
            Ok(value) => return value,
            Err(why) => last = why,
        }
        let remaining = deadline.saturating_sub(start.elapsed());
        tokio::time::sleep(POLL_INTERVAL.min(remaining)).await;
    }
    panic!(
        "timed out after {:.2} s (deadline {:.2} s) waiting for {what}; last: {last}",
        start.elapsed().as_secs_f64(),
        deadline.as_secs_f64(),
    );
}

/// Ports handed out by [`free_port`] come from this range: below Linux's
/// ephemeral range (32768+), so outgoing connections (Sentinel to Redis, the
/// API to Redis) never take a port a test is about to listen on.
const PORT_RANGE: std::ops::Range<u32> = 20_000..32_000;

/// Offset of the next port to try, or `u32::MAX` before first use.
static NEXT_PORT: AtomicU32 = AtomicU32::new(u32::MAX);

/// Returns a loopback port that nothing listened on just now.
///
/// Within one process, ports are handed out in sequence, so parallel tests
/// never get the same port (until 12 000 ports have been used). Each process
/// starts at an offset derived from its pid, so test binaries run in parallel
/// (nextest) rarely collide; the bind check skips ports already in use. The
/// port is released before returning, so another process could still take it:
/// an acceptable race.
///
/// # Panics
/// When no port in the range can be bound.
#[must_use]
pub fn free_port() -> u16 {
    let span = PORT_RANGE.end - PORT_RANGE.start;
    // Spread processes over the range: consecutive pids land far apart.
    let start = (std::process::id().wrapping_mul(1_543)) % span;
    let _ = NEXT_PORT.compare_exchange(u32::MAX, start, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..span {
        let offset = NEXT_PORT.fetch_add(1, Ordering::SeqCst) % span;
        let port = u16::try_from(PORT_RANGE.start + offset).expect("the range fits in u16");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORT_RANGE:?}");
}
