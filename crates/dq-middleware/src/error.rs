//! Errors of dq-middleware.

use std::fmt;

use dq_core::{DecodeError, MiddlewareError};

/// The result type of dq-middleware's fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message a middleware enqueues on behalf of the one being processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FollowUp {
    /// The retry [`Retries`](crate::Retries) puts on the delay queue.
    Retry,
    /// The `on_retry_exhausted` message of [`Retries`](crate::Retries).
    OnRetryExhausted,
    /// The `on_success` message of [`Callbacks`](crate::Callbacks).
    OnSuccess,
    /// The `on_failure` message of [`Callbacks`](crate::Callbacks).
    OnFailure,
    /// The next stage of a pipeline, enqueued by [`Pipelines`](crate::Pipelines).
    PipelineStage,
}

impl fmt::Display for FollowUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FollowUp::Retry => "retry",
            FollowUp::OnRetryExhausted => "on_retry_exhausted callback",
            FollowUp::OnSuccess => "on_success callback",
            FollowUp::OnFailure => "on_failure callback",
            FollowUp::PipelineStage => "next pipeline stage",
        })
    }
}

/// Everything that can go wrong in this crate's middleware.
///
/// A hook hands these to the worker wrapped in a [`MiddlewareError`] (its source), so an
/// `after_process` failure stops the ack and the message is requeued instead of lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A follow-up message could not be built or enqueued.
    #[error("could not enqueue the {follow_up} of message {message_id}")]
    Enqueue {
        /// What was being enqueued.
        follow_up: FollowUp,
        /// The id of the message being processed.
        message_id: String,
        /// Why the enqueue failed.
        #[source]
        source: dq_core::Error,
    },
    /// A message's `pipe_target` option is not a valid Dramatiq message.
    #[error("message {message_id} has an invalid pipe_target")]
    InvalidPipeTarget {
        /// The id of the message being processed.
        message_id: String,
        /// Why the target does not decode.
        #[source]
        source: DecodeError,
    },
}

impl Error {
    /// Wraps this error for the worker, as the source of a [`MiddlewareError`] that adds only
    /// the middleware's name: [`ErrorChain`](dq_core::ErrorChain) prints the rest once.
    pub(crate) fn into_middleware_error(self, middleware: &str) -> MiddlewareError {
        MiddlewareError::caused_by(middleware, "", self)
    }
}
