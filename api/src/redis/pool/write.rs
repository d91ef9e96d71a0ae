//! Writes by intent: [`Redis::write`] (confirmed by `WAIT` on every healthy
//! replica, else by the Sentinels), script calls, and unconfirmed writes
//! whose loss in a failover is harmless.

use std::time::{Duration, Instant};

use redis::{FromRedisValue, Pipeline, Value};

use super::manager::Role;
use super::{Redis, outcome};
use crate::redis::{RedisError, is_noscript, is_readonly, poisons_connection, scripts};

impl Redis {
    /// A write whose loss in a failover is harmless (counters, markers): no `WAIT`.
    pub async fn write_unconfirmed<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        self.run(Role::Master, op, pipe, None, &mut None).await
    }

    /// Runs one script call as a confirmed [`Self::write`] and splits its
    /// `{'tag', ...}` reply.
    pub async fn run_script(
        &self,
        op: &'static str,
        call: redis::Cmd,
    ) -> Result<scripts::Tagged, RedisError> {
        self.run_script_then(op, call, None).await
    }

    /// [`Self::run_script`], and then, in the same round trip right after
    /// its `WAIT` (whatever the count), `after_wait`, whose reply is
    /// dropped: a follow-up that must not run before the write is
    /// confirmed or given up, and whose own loss is harmless.
    pub async fn run_script_then(
        &self,
        op: &'static str,
        call: redis::Cmd,
        after_wait: Option<redis::Cmd>,
    ) -> Result<scripts::Tagged, RedisError> {
        let mut pipe = redis::pipe();
        pipe.add_command(call);
        let (reply,): (Vec<Value>,) = self
            .attempt(Role::Master, op, self.write_inner(&pipe, after_wait))
            .await?;
        scripts::Tagged::from_reply(op, reply)
    }

    /// Runs one script call as an unconfirmed write (counters whose loss in a
    /// failover is harmless) and splits its `{'tag', ...}` reply.
    pub async fn run_script_unconfirmed(
        &self,
        op: &'static str,
        call: redis::Cmd,
    ) -> Result<scripts::Tagged, RedisError> {
        let mut pipe = redis::pipe();
        pipe.add_command(call);
        let (reply,): (Vec<Value>,) = self.write_unconfirmed(op, &pipe).await?;
        scripts::Tagged::from_reply(op, reply)
    }

    /// A write that must survive a failover: runs `pipe` on the master, then
    /// `WAIT`s for every healthy replica. Returns the pipeline's replies only
    /// when the write is confirmed; otherwise [`RedisError::Unconfirmed`] (the
    /// write may or may not survive, so the caller reports a retryable error).
    pub async fn write<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, RedisError> {
        self.attempt(Role::Master, op, self.write_inner(pipe, None))
            .await
    }

    /// One operation on a node of `role`: admitted (or refused at once when
    /// this instance is cut off), bounded, its outcome noted for the
    /// master's health, and measured.
    pub(super) async fn attempt<T>(
        &self,
        role: Role,
        op: &'static str,
        operation: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        let started = Instant::now();
        let result = match self.admit(role) {
            Ok(_probe) => {
                let result = self.bounded(operation).await;
                if role == Role::Master {
                    self.note_master_outcome(&result);
                }
                result
            }
            Err(refused) => Err(refused),
        };
        self.metrics
            .observe_redis(op, started.elapsed(), outcome(&result));
        result
    }

    pub(super) async fn write_inner<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
        after_wait: Option<redis::Cmd>,
    ) -> Result<T, RedisError> {
        let required = self.watcher.topology.borrow().required_acks();
        let mut with_wait = pipe.clone();
        with_wait
            .cmd("WAIT")
            .arg(required)
            .arg(self.ack_timeout.as_millis() as u64);
        if let Some(command) = after_wait {
            // Redis holds a client's later commands while it is blocked in
            // WAIT, so this runs once WAIT has answered. Ignored: the
            // replies end with WAIT's count, as without it.
            with_wait.add_command(command).ignore();
        }
        let mut attempt = 0;
        let (mut replies, addr) = loop {
            attempt += 1;
            let mut connection = self.checkout(Role::Master, None).await?;
            let epoch = connection.epoch;
            let query = with_wait.query_async::<Vec<Value>>(&mut connection.connection);
            let Some(answer) = self.unless_master_moves_on(epoch, query).await else {
                // Sent to a master that is being replaced: it may or may not
                // be applied (and survive). The idempotency key makes the
                // client's retry safe.
                return Err(RedisError::Unconfirmed);
            };
            match answer {
                Ok(replies) => break (replies, connection.addr.clone()),
                Err(error) => {
                    let retry = attempt == 1 && (is_readonly(&error) || is_noscript(&error));
                    if is_noscript(&error) {
                        // The script cache was flushed or this node just got promoted.
                        scripts::load_all(&mut connection.connection).await?;
                    }
                    let epoch = connection.epoch;
                    if poisons_connection(&error) {
                        self.discard(Role::Master, connection);
                    }
                    if !retry {
                        return Err(error.into());
                    }
                    if is_readonly(&error) {
                        // The node was demoted: retrying before the watcher has
                        // found the new master would only hit it again.
                        self.wait_for_master_change(epoch).await;
                    }
                }
            }
        };
        let acked = replies.pop().and_then(|v| match v {
            Value::Int(n) => usize::try_from(n).ok(),
            _ => None,
        });
        let acked =
            acked.ok_or_else(|| RedisError::Unexpected("WAIT returned no count".to_owned()))?;
        self.metrics.replica_acks.observe(acked as f64);
        if acked < required {
            // Fewer acks than healthy replicas: a replica may just have died, or
            // the one being promoted stopped listening to this master. Only the
            // Sentinels can tell which.
            if acked == 0 || !self.watcher.sentinels.confirm_master(&addr).await {
                tracing::warn!(acked, required, master = %addr, "write not confirmed by replicas");
                self.watcher.poke.notify_one();
                return Err(RedisError::Unconfirmed);
            }
            tracing::info!(acked, required, master = %addr, "write confirmed by the Sentinels after fewer acks than replicas");
        }
        T::from_redis_value(Value::Array(replies))
            .map_err(|e| RedisError::Unexpected(e.to_string()))
    }

    /// Waits (briefly) until the watcher publishes a master newer than `epoch`.
    pub(super) async fn wait_for_master_change(&self, epoch: u64) {
        let mut topology = self.watcher.topology.subscribe();
        let changed = topology.wait_for(|t| t.master_epoch != epoch);
        let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
    }

    /// Waits for a query sent on a master connection of `epoch`, unless the
    /// watcher publishes a newer master first (`None`). A query stuck on a
    /// paused or vanished master would otherwise hold its client for the
    /// whole command timeout after the failover ended (measured: writes came
    /// back 2 s after the switch). Like a timeout, giving up never says the
    /// command was not applied. An answer that is ready wins (`biased`).
    pub(super) async fn unless_master_moves_on<T>(
        &self,
        epoch: u64,
        query: impl Future<Output = T>,
    ) -> Option<T> {
        let mut topology = self.watcher.topology.subscribe();
        // On the heap: inline, the debug build's futures overflow a worker's stack.
        let query = Box::pin(query);
        tokio::select! {
            biased;
            answer = query => Some(answer),
            // The sender lives in `self.watcher`: this never ends with an error.
            _ = topology.wait_for(|t| t.master_epoch != epoch) => None,
        }
    }
}
