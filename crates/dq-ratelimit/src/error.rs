//! Errors of dq-ratelimit.

use dq_core::{ActorError, FailureKind};

/// The result type of dq-ratelimit's fallible APIs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A rate limit that could not be acquired: Dramatiq's `RateLimitExceeded`.
///
/// Returned from an actor (through `?` into an [`ActorError`]), it is retried with backoff by
/// the Retries middleware and logged quietly, as in Dramatiq. Declare the actor's error type as
/// [`ActorError`] for that: an actor returning this crate's [`Error`] itself gets an ordinary
/// failure (still retried, but warned about as an unhandled error), because the worker only
/// recognises `dq-core`'s error types.
///
/// ```
/// use dq_core::{ActorError, FailureKind};
/// use dq_ratelimit::RateLimitExceeded;
///
/// let e = ActorError::from(RateLimitExceeded { key: "distributed-mutex".into() });
/// assert_eq!(e.kind(), &FailureKind::RateLimitExceeded);
/// assert_eq!(e.type_name(), "RateLimitExceeded");
/// assert_eq!(e.message(), "rate limit exceeded for key 'distributed-mutex'");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded for key '{key}'")]
pub struct RateLimitExceeded {
    /// The limiter's key.
    pub key: String,
}

/// What rate limiters, barriers and their backends can run into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The limit was reached (only from `acquire`, which raises, as Dramatiq's does by default).
    #[error(transparent)]
    RateLimitExceeded(#[from] RateLimitExceeded),
    /// The backend failed (Redis unreachable, a command refused, ...).
    #[error("rate limiter backend failed while {operation}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A key holds something that is not a decimal integer: another program wrote it.
    #[error("rate limiter key {key:?} holds {value:?}, not an integer")]
    NotAnInteger {
        /// The key.
        key: String,
        /// What it holds.
        value: String,
    },
    /// A backend was configured with values it cannot use.
    #[error("invalid rate limiter backend configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    pub(crate) fn backend(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Backend {
            operation,
            source: Box::new(source),
        }
    }
}

impl From<RateLimitExceeded> for ActorError {
    fn from(e: RateLimitExceeded) -> ActorError {
        ActorError::new(
            FailureKind::RateLimitExceeded,
            "RateLimitExceeded",
            e.to_string(),
        )
    }
}

/// So an actor can `?` a limiter's error into the [`ActorError`] it returns: a limit not
/// acquired keeps its meaning (a quiet retry), anything else is an ordinary failure.
impl From<Error> for ActorError {
    fn from(e: Error) -> ActorError {
        match e {
            Error::RateLimitExceeded(r) => r.into(),
            other => ActorError::new(FailureKind::Error, "RateLimiterError", other.to_string()),
        }
    }
}
