//! Errors of dq-results.

/// The result type of dq-results' fallible APIs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What reading or storing a result can run into. The first three are Dramatiq's
/// `ResultMissing`, `ResultTimeout` and `ResultFailure`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No result is stored (yet, or any more: results expire), and the read did not block.
    #[error("the result of message {message_id} is missing")]
    Missing {
        /// The message whose result was asked for.
        message_id: String,
    },
    /// A blocking read waited its whole timeout and no result was stored.
    #[error("timed out waiting for the result of message {message_id}")]
    Timeout {
        /// The message whose result was asked for.
        message_id: String,
    },
    /// The message failed for good (it was dead-lettered): the stored result is the actor's
    /// error. The text is Dramatiq's: `actor raised <type>: <message>`.
    #[error("actor raised {type_name}: {message}")]
    Failure {
        /// The message whose result was asked for.
        message_id: String,
        /// The error's type name (`exn.type`), e.g. `TimeLimitExceeded` or a Python class name.
        type_name: String,
        /// The error's message (`exn.msg`).
        message: String,
    },
    /// The stored result is not JSON, or does not fit the type asked for.
    #[error("the result of message {message_id} does not decode")]
    Decode {
        /// The message whose result was asked for.
        message_id: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The backend failed (Redis unreachable, a command refused, ...).
    #[error("result backend failed while {operation}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A backend was configured with values it cannot use.
    #[error("invalid result backend configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// Whether this is [`Error::Missing`].
    pub fn is_missing(&self) -> bool {
        matches!(self, Error::Missing { .. })
    }

    /// Whether this is [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// Whether this is [`Error::Failure`].
    pub fn is_failure(&self) -> bool {
        matches!(self, Error::Failure { .. })
    }

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
