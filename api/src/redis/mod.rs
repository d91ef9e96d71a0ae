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
    /// A reply we did not expect (a bug or a corrupted key).
    #[error("{0}")]
    Unexpected(String),
}

impl From<redis::RedisError> for RedisError {
    fn from(error: redis::RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        if error.is_timeout() {
            return Self::Unavailable("Redis did not answer in time".to_owned());
        }
        if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
            return Self::Unavailable(format!("Redis connection failed: {}", error.category()));
        }
        match error.kind() {
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::TryAgain,
            ) => Self::Unavailable(format!(
                "Redis is not accepting writes ({})",
                error.category()
            )),
            _ if matches!(error.code(), Some("NOREPLICAS" | "BUSY" | "NOAUTH")) => {
                Self::Unavailable(format!("Redis refused the command ({})", error.category()))
            }
            _ => Self::Unexpected(error.to_string()),
        }
    }
}

/// Whether the connection that produced this error must not be reused.
pub(crate) fn poisons_connection(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    error.is_timeout()
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// `READONLY`: we wrote to a node that is (now) a replica. Nothing was applied,
/// so the write may be retried once on the real master.
pub(crate) fn is_readonly(error: &redis::RedisError) -> bool {
    matches!(
        error.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
    )
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
