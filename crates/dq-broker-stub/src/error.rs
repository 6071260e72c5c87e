//! Errors of the stub broker.

use dq_core::{BrokerError, BrokerErrorKind, DeadLetter, Token};

/// The result type of the stub broker's own (non-trait) APIs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request the stub broker refuses. Through the [`Broker`](dq_core::Broker) trait these arrive as
/// a [`BrokerError`] of kind [`Rejected`](BrokerErrorKind::Rejected) with this error as its source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The canonical part of a queue name does not match `[a-zA-Z_][a-zA-Z0-9._-]*`.
    #[error("invalid queue name {0:?}")]
    InvalidQueueName(String),
    /// Dead-letter queues (`q.XQ`) are filled by nacks only: nothing enqueues to or consumes them.
    #[error("{0:?} is a dead-letter queue: it cannot be enqueued to or consumed")]
    DeadLetterQueue(String),
    /// A consumer must be allowed at least one unsettled delivery.
    #[error("prefetch of a consumer of {0:?} must be at least 1")]
    ZeroPrefetch(String),
    /// A token this broker never hands out (the stub only issues [`Token::Tag`]).
    #[error("delivery token {0:?} was not issued by the stub broker")]
    ForeignToken(Token),
}

impl Error {
    /// Wraps the error for the [`Broker`](dq_core::Broker) trait, saying what was being done.
    pub(crate) fn into_broker(self, doing: impl Into<String>) -> BrokerError {
        match self {
            Error::InvalidQueueName(_)
            | Error::DeadLetterQueue(_)
            | Error::ZeroPrefetch(_)
            | Error::ForeignToken(_) => {
                BrokerError::new(BrokerErrorKind::Rejected, doing).with_source(self)
            }
        }
    }
}

/// Why [`StubBroker::join`](crate::StubBroker::join) returned before the queue was done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// Nothing ever declared, enqueued to or consumed this queue: most likely a misspelt name,
    /// which would otherwise make `join` succeed at once (Dramatiq raises `QueueNotFound` too).
    #[error("queue {queue:?} was never declared, enqueued to or consumed")]
    QueueNotFound {
        /// The canonical queue name.
        queue: String,
    },
    /// The timeout passed while work remained.
    #[error(
        "join of queue {queue:?} timed out with {ready} ready, {delayed} delayed and {unsettled} unsettled messages"
    )]
    Timeout {
        /// The canonical queue name.
        queue: String,
        /// Messages still waiting on the queue.
        ready: usize,
        /// Messages still waiting on its delay queue.
        delayed: usize,
        /// Messages fetched by consumers and not yet acked, nacked or requeued.
        unsettled: usize,
    },
    /// With `fail_fast`, messages of the queue were dead-lettered that no earlier join reported.
    #[error(
        "queue {queue:?} dead-lettered {} message(s); the first because: {}",
        .dead_letters.len(),
        first_reason(.dead_letters)
    )]
    DeadLetters {
        /// The canonical queue name.
        queue: String,
        /// The newly dead-lettered messages, oldest first, each with its reason.
        dead_letters: Vec<DeadLetter>,
    },
}

fn first_reason(dead: &[DeadLetter]) -> &str {
    dead.first()
        .and_then(|d| d.reason.as_deref())
        .unwrap_or("unknown")
}
