//! Errors of the Redis broker, and how Redis client errors map onto [`BrokerError`].

use dq_core::{BrokerError, BrokerErrorKind};
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Why a [`RedisBroker`](crate::RedisBroker) could not be built.
///
/// URLs in these errors are always redacted: a password never appears in their text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBrokerError {
    /// The URL is not a `redis://`, `rediss://` or `redis+unix://` URL the client understands.
    #[error("invalid redis url {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid redis broker setting: {0}")]
    InvalidConfig(String),
    /// Redis could not be reached, or refused us, when the broker was built.
    #[error("cannot connect to redis at {url}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// The failure.
        #[source]
        source: BrokerError,
    },
}

impl RedisBrokerError {
    /// The broker error kind this maps to: `Connection` when Redis could not be reached at
    /// start (the CLI turns that into exit code 3), `Rejected` for bad settings.
    pub fn kind(&self) -> BrokerErrorKind {
        match self {
            RedisBrokerError::InvalidUrl { .. } | RedisBrokerError::InvalidConfig(_) => {
                BrokerErrorKind::Rejected
            }
            RedisBrokerError::Connect { .. } => BrokerErrorKind::Connection,
        }
    }
}

impl From<RedisBrokerError> for BrokerError {
    /// The same text, with the failure underneath (for `Connect`) as the source, so the chain
    /// says each part once.
    fn from(e: RedisBrokerError) -> BrokerError {
        let kind = e.kind();
        match e {
            RedisBrokerError::Connect { url, source } => {
                BrokerError::new(kind, format!("cannot connect to redis at {url}"))
                    .with_source(source)
            }
            other => BrokerError::new(kind, other.to_string()),
        }
    }
}

/// How a Redis client error should be treated.
pub(crate) fn classify(e: &RedisError) -> BrokerErrorKind {
    if e.is_timeout() {
        return BrokerErrorKind::Timeout;
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        return BrokerErrorKind::Connection;
    }
    match e.kind() {
        // A restarting or failing-over server: it will answer again shortly.
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        )
        | ErrorKind::Io => BrokerErrorKind::Connection,
        ErrorKind::AuthenticationFailed
        | ErrorKind::InvalidClientConfig
        | ErrorKind::UnexpectedReturnType
        | ErrorKind::RESP3NotSupported
        | ErrorKind::Server(
            ServerErrorKind::ResponseError
            | ServerErrorKind::ExecAbort
            | ServerErrorKind::NoScript
            | ServerErrorKind::CrossSlot
            | ServerErrorKind::NoSub,
        ) => BrokerErrorKind::Rejected,
        // NOPERM had no kind of its own before redis 1.0 (an extension error): still `Other`.
        ErrorKind::Parse
        | ErrorKind::Client
        | ErrorKind::Extension
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel
        | ErrorKind::EmptySentinelList
        | ErrorKind::ClusterConnectionNotFound
        | ErrorKind::Server(
            ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::NotBusy
            | ServerErrorKind::NoPerm,
        ) => BrokerErrorKind::Other,
        // redis' ErrorKind and ServerErrorKind are non-exhaustive.
        _ => BrokerErrorKind::Other,
    }
}

/// Wraps a client error, saying what we were doing. The client error never carries the URL.
pub(crate) fn broker_error(e: RedisError, context: impl Into<String>) -> BrokerError {
    BrokerError::new(classify(&e), context).with_source(e)
}

/// A reply that is not what our script returns.
pub(crate) fn unexpected_reply(context: &str) -> BrokerError {
    BrokerError::new(
        BrokerErrorKind::Other,
        format!("{context}: unexpected reply from redis"),
    )
}
