//! Reads by intent: [`Redis::read`] (replicas first, lag tolerated),
//! [`Redis::read_latest`] (the caller's own data: the master, else a replica
//! that has it) and [`Redis::read_master`].

use std::time::Duration;

use redis::{FromRedisValue, Pipeline};

use super::Redis;
use super::manager::Role;
use crate::redis::RedisError;

/// How long a read of the caller's own data ([`Redis::read_latest`]) waits
/// for the master before it asks a replica. A healthy master answers in
/// milliseconds even under load (p99 ~40 ms in scripts/bench); a paused one
/// never does, and waiting the full command timeout (2 s) would make every
/// such read that slow until Sentinel fails it over.
const LATEST_READ_MASTER_BUDGET: Duration = Duration::from_millis(500);
impl Redis {
    /// Reads that tolerate replication lag (catalog, sessions): a replica if one
    /// is healthy, else the master. Writes are confirmed on every healthy replica
    /// before they succeed, so a replica never misses an acknowledged write.
    pub async fn read<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        // One bound for all attempts together, not one per attempt.
        self.bounded(async {
            let mut round = 0;
            loop {
                round += 1;
                let epochs = self.topology_epochs();
                match self.read_once(op, pipe).await {
                    Ok(value) => return Ok(value),
                    Err(error) if error.is_final() => return Err(error),
                    // A failover switched the topology under this round (e.g.
                    // the replica set emptied, then the master fallback met the
                    // old, paused master): the failure says nothing about the
                    // nodes now published, so try them once.
                    Err(error) if round > 1 || self.topology_epochs() == epochs => {
                        return Err(error);
                    }
                    Err(_) => {}
                }
            }
        })
        .await
    }

    pub(super) fn topology_epochs(&self) -> (u64, u64) {
        let topology = self.watcher.topology.borrow();
        (topology.master_epoch, topology.replicas_epoch)
    }

    /// One round of a read: two replica attempts, then the master.
    pub(super) async fn read_once<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        if self.read_from_replicas {
            match self.read_replicas(op, pipe, |_: &T| true).await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_final() => return Err(error),
                Err(_) => {}
            }
            self.metrics.replica_read_fallbacks.inc();
        }
        self.run(Role::Master, op, pipe, None, &mut None).await
    }

    /// Two tries on the replicas: a failed connection is dropped and the next
    /// one is made to the other replica (one may be resyncing mid-failover,
    /// while the master may be the node that is down). An answer `complete`
    /// rejects is tried once on the other replica too: a write confirmed by
    /// one replica may not have reached the other yet (seen in CI: a purchase
    /// list whose index came from one replica and whose purchases were read
    /// from the other, 503 while the master was down); if neither has it, the
    /// last answer is returned for the caller to judge.
    pub(super) async fn read_replicas<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
        complete: impl Fn(&T) -> bool,
    ) -> Result<T, RedisError> {
        let mut used = None;
        let mut last = Err(RedisError::Unavailable("no healthy replica".to_owned()));
        for _ in 0..2 {
            let avoid = used.take();
            match self
                .run(Role::Replica, op, pipe, avoid.as_ref(), &mut used)
                .await
            {
                Ok(value) if complete(&value) => return Ok(value),
                Ok(value) => last = Ok(value),
                Err(error) if error.is_final() => return Err(error),
                Err(error) => last = Err(error),
            }
        }
        last
    }

    /// Reads of data the caller may just have written (its purchases): the
    /// master, so that a client always sees its own purchase right after its
    /// 201; when the master cannot answer (paused, killed, mid-failover), a
    /// replica. A confirmed write waited for every replica Sentinel could
    /// promote, or, when one did not acknowledge in time, was confirmed with
    /// the Sentinels; such a replica can lag. So what a replica answers is
    /// passed to `absent`: when it says "nothing there", the read fails as
    /// unavailable (retry) instead of denying data that may exist.
    pub async fn read_latest<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
        absent: impl Fn(&T) -> bool,
    ) -> Result<T, RedisError> {
        let from_replica = |value: T| {
            if absent(&value) {
                Err(RedisError::Unavailable(
                    "the master is unreachable and a replica does not have it (yet)".to_owned(),
                ))
            } else {
                Ok(value)
            }
        };
        self.bounded(async {
            if !self.read_from_replicas {
                return self.read_on_master(op, pipe).await;
            }
            let skipped_master = self.master_suspect();
            if !skipped_master {
                let from_master = tokio::time::timeout(
                    LATEST_READ_MASTER_BUDGET,
                    Box::pin(self.read_on_master(op, pipe)),
                )
                .await;
                match from_master {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(error @ (RedisError::Unexpected(_) | RedisError::CutOff))) => {
                        return Err(error);
                    }
                    Ok(Err(_)) | Err(_) => self.note_master_failure(),
                }
            }
            self.metrics.master_read_fallbacks.inc();
            match self
                .read_replicas(op, pipe, |value: &T| !absent(value))
                .await
            {
                Ok(value) => from_replica(value),
                // No replica could answer either (e.g. the only one is
                // resyncing right after a failover): a master skipped on
                // suspicion may well answer by now.
                Err(RedisError::Unavailable(_)) if skipped_master => {
                    self.read_on_master(op, pipe).await
                }
                Err(error) => Err(error),
            }
        })
        .await
    }

    /// Reads that must see the latest write (read-modify-write flows).
    pub async fn read_master<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        self.read_on_master(op, pipe).await
    }

    /// A read on the master, asked again of the new master when the master
    /// changed while it was under way (a read is safe to repeat; a query
    /// stuck on the old master is abandoned at the change).
    pub(super) async fn read_on_master<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        let epoch = self.watcher.topology.borrow().master_epoch;
        // Boxed: two inline copies of `run` made read_latest's future deep
        // enough to overflow an actix worker's stack in debug builds.
        match Box::pin(self.run(Role::Master, op, pipe, None, &mut None)).await {
            Err(RedisError::Unavailable(_))
                if self.watcher.topology.borrow().master_epoch != epoch =>
            {
                Box::pin(self.run(Role::Master, op, pipe, None, &mut None)).await
            }
            other => other,
        }
    }
}
