//! Errors of dq-abort.

/// The result type of dq-abort's fallible APIs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What aborting a message, or an event backend, can run into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event backend failed (Redis unreachable, a command refused, ...).
    #[error("abort event backend failed while {operation}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// [`abort`](crate::abort) found no app, or an app without the [`Abortable`](crate::Abortable)
    /// middleware: Python's "The default broker doesn't have an abortable backend."
    #[error("the current dq app has no Abortable middleware to send the abort through")]
    NoAbortable(#[source] Option<dq_core::Error>),
    /// A backend was configured with values it cannot use.
    #[error("invalid abort backend configuration: {0}")]
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
