//! Everything that talks to Redis: Sentinel discovery ([`sentinel`]), the pools
//! that follow it ([`pool`]), every key name ([`keys`]) and every Lua script
//! ([`scripts`]). Handlers never build clients or keys themselves.

pub mod keys;
mod pool;
pub mod scripts;
mod sentinel;
pub mod value;

pub use keys::Keys;
pub use pool::Redis;
pub use sentinel::{NodeAddr, Topology};

/// What went wrong talking to Redis, reduced to what a caller can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    /// No master known, a timeout, a refused or dropped connection, `READONLY`,
    /// `NOREPLICAS`, `LOADING`: retry later. A timed-out write may still be applied.
    #[error("{0}")]
    Unavailable(String),
    /// The write reached the master but no replica confirmed it in time, or the
    /// master changed meanwhile: it may be lost, so it is not reported as a success.
    #[error("write not confirmed by a replica")]
    Unconfirmed,
    /// `OOM`: the master reached `maxmemory` (policy `noeviction`) and refuses
    /// writes. Nothing was applied (Redis checks before a script's first write
    /// and before queueing a transaction's commands); reads still work.
    #[error("Redis is out of memory (maxmemory reached)")]
    OutOfMemory,
    /// This instance hears no majority of Sentinels and its master fails:
    /// it is cut off from Redis, and answers without trying (one operation a
    /// second still probes the master). Nothing was sent.
    #[error("this instance cannot reach Redis or the Sentinels")]
    CutOff,
    /// A reply we did not expect (a bug or a corrupted key).
    #[error("{0}")]
    Unexpected(String),
}

impl RedisError {
    /// Whether another node could not do better: a bug, a full Redis, or an
    /// instance cut off from all of them. A read stops trying at once.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Unexpected(_) | Self::OutOfMemory | Self::CutOff)
    }

    /// Its `kind` label in `evergreen_redis_errors_total`
    /// ([`crate::metrics::REDIS_ERROR_KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) | Self::CutOff => "unavailable",
            Self::Unconfirmed => "unconfirmed",
            Self::OutOfMemory => "out_of_memory",
            Self::Unexpected(_) => "unexpected",
        }
    }
}

/// Server error codes carried by `error`, including those of commands inside a
/// pipeline or an aborted transaction (redis-rs wraps them: the outer error has
/// no code of its own).
fn server_codes(error: &redis::RedisError) -> Vec<String> {
    error
        .clone()
        .into_server_errors()
        .map(|errors| errors.iter().map(|(_, e)| e.code().to_owned()).collect())
        .unwrap_or_default()
}

fn has_code(error: &redis::RedisError, codes: &[&str]) -> bool {
    server_codes(error)
        .iter()
        .any(|code| codes.contains(&code.as_str()))
}

/// Replies that mean "this node cannot take the command now", not "bug":
/// a demoted master, a master without in-sync replicas, a replica loading.
const RETRYABLE_CODES: &[&str] = &[
    "READONLY",
    "NOREPLICAS",
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
    "BUSY",
    "NOAUTH",
];

impl From<redis::RedisError> for RedisError {
    fn from(error: redis::RedisError) -> Self {
        if error.is_timeout() {
            return Self::Unavailable("Redis did not answer in time".to_owned());
        }
        if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
            return Self::Unavailable(format!("Redis connection failed: {}", error.category()));
        }
        let codes = server_codes(&error);
        if codes.iter().any(|code| code == "OOM") {
            return Self::OutOfMemory;
        }
        if let Some(code) = codes
            .iter()
            .find(|code| RETRYABLE_CODES.contains(&code.as_str()))
        {
            return Self::Unavailable(format!("Redis refused the command ({code})"));
        }
        Self::Unexpected(error.to_string())
    }
}

/// Whether the connection that produced this error must not be reused.
pub(crate) fn poisons_connection(error: &redis::RedisError) -> bool {
    error.is_timeout()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        // LOADING: a replica resyncing after a failover; the next connection
        // goes to another replica.
        || has_code(error, &["READONLY", "MASTERDOWN", "LOADING"])
}

/// `READONLY`: we wrote to a node that is (now) a replica. Nothing was applied,
/// so the write may be retried once on the real master.
pub(crate) fn is_readonly(error: &redis::RedisError) -> bool {
    has_code(error, &["READONLY"])
}

/// `NOSCRIPT`: the node's script cache is empty (restarted, flushed, or just
/// promoted). Nothing was applied; load the scripts and retry.
pub(crate) fn is_noscript(error: &redis::RedisError) -> bool {
    has_code(error, &["NOSCRIPT"])
}

/// A pipeline whose commands run as one MULTI/EXEC transaction. Unlike
/// `Pipeline::atomic`, it leaves room for [`Redis::write`] to append `WAIT`
/// after `EXEC` (inside a transaction `WAIT` cannot block and reports 0).
pub fn transaction(build: impl FnOnce(&mut redis::Pipeline)) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("MULTI").ignore();
    build(&mut pipe);
    pipe.cmd("EXEC").ignore();
    pipe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_is_a_label_of_the_metric() {
        for error in [
            RedisError::Unavailable(String::new()),
            RedisError::CutOff,
            RedisError::Unconfirmed,
            RedisError::OutOfMemory,
            RedisError::Unexpected(String::new()),
        ] {
            assert!(crate::metrics::REDIS_ERROR_KINDS.contains(&error.kind()));
        }
    }

    #[test]
    fn every_retryable_reply_is_unavailable_and_an_unknown_one_is_a_bug() {
        for code in RETRYABLE_CODES {
            let error = redis::make_extension_error((*code).to_owned(), None);
            assert!(
                matches!(RedisError::from(error), RedisError::Unavailable(_)),
                "{code}"
            );
        }
        let oom = redis::make_extension_error(
            "OOM".to_owned(),
            Some("command not allowed when used memory > 'maxmemory'".to_owned()),
        );
        assert!(matches!(RedisError::from(oom), RedisError::OutOfMemory));
        let wrongtype = redis::make_extension_error("WRONGTYPE".to_owned(), None);
        assert!(matches!(
            RedisError::from(wrongtype),
            RedisError::Unexpected(_)
        ));
    }

    #[test]
    fn a_demoted_master_poisons_the_connection_and_allows_one_retry() {
        let readonly = redis::make_extension_error("READONLY".to_owned(), None);
        assert!(is_readonly(&readonly));
        assert!(poisons_connection(&readonly));
        let noscript = redis::make_extension_error("NOSCRIPT".to_owned(), None);
        assert!(is_noscript(&noscript) && !poisons_connection(&noscript));
    }
}
