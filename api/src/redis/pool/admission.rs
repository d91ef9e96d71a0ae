//! Admission: whether an operation may go ahead while this instance hears
//! no majority of Sentinels and its master fails (cut off from Redis), and
//! the master's recent health that reads of the caller's own data consult.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Redis;
use super::manager::Role;
use crate::redis::RedisError;

/// After the master failed an operation, reads of the caller's own data skip
/// it for this long and go to a replica at once; the first read after that
/// tries the master again.
const MASTER_SUSPECT_FOR: Duration = Duration::from_secs(1);
/// No majority of Sentinels heard for this long (six polls) while the master
/// fails too: this instance is cut off from Redis.
const CUT_OFF_AFTER: Duration = Duration::from_millis(1500);
impl Redis {
    pub(super) fn millis_since_start(&self) -> u64 {
        // +1: 0 means "no failure recorded".
        self.started.elapsed().as_millis() as u64 + 1
    }

    pub(super) fn note_master_failure(&self) {
        self.master_failed_at_ms
            .store(self.millis_since_start(), Ordering::Relaxed);
    }

    /// Whether the master failed an operation within [`MASTER_SUSPECT_FOR`].
    pub(super) fn master_suspect(&self) -> bool {
        let failed_at = self.master_failed_at_ms.load(Ordering::Relaxed);
        failed_at != 0
            && self.millis_since_start().saturating_sub(failed_at)
                < MASTER_SUSPECT_FOR.as_millis() as u64
    }

    /// Whether an operation on a node of `role` may go ahead. An instance
    /// that hears no majority of Sentinels for [`CUT_OFF_AFTER`] while its
    /// master fails (or is being probed) is cut off from Redis: it answers
    /// [`RedisError::CutOff`] at once instead of letting every request wait
    /// for the timeouts, so that nginx sends GETs to another replica without
    /// delay. One master operation at a time, at most one a second, still
    /// goes ahead as a probe (the returned guard marks it): its failure keeps
    /// the instance cut off, its success ends that at once. A refusal is not
    /// a failure of the master, so it never prolongs the state by itself.
    pub(super) fn admit(&self, role: Role) -> Result<Option<Probe>, RedisError> {
        let silent = self
            .watcher
            .sentinels_silent_for()
            .is_some_and(|silent| silent > CUT_OFF_AFTER);
        let probing = self.probing.load(Ordering::Acquire);
        if !silent || !(probing || self.master_suspect()) {
            return Ok(None);
        }
        let now = self.millis_since_start();
        let due = now.saturating_sub(self.last_probe_ms.load(Ordering::Relaxed))
            >= MASTER_SUSPECT_FOR.as_millis() as u64;
        if role == Role::Master
            && due
            && self
                .probing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.last_probe_ms.store(now, Ordering::Relaxed);
            return Ok(Some(Probe(self.probing.clone())));
        }
        Err(RedisError::CutOff)
    }

    /// A master operation's outcome: a failure that says the master cannot
    /// be reached makes it suspect; a success clears that.
    pub(super) fn note_master_outcome<T>(&self, result: &Result<T, RedisError>) {
        match result {
            Ok(_) => self.master_failed_at_ms.store(0, Ordering::Relaxed),
            Err(RedisError::Unavailable(_)) => self.note_master_failure(),
            Err(_) => {}
        }
    }
}

/// Marks the probe of a cut-off instance as under way until dropped.
pub(super) struct Probe(Arc<AtomicBool>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
