//! Errors of dq-worker.

/// Why a worker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The broker could not be reached or refused a declaration at start.
    #[error("worker could not start")]
    Broker(#[from] dq_core::BrokerError),
    /// A boot or shutdown hook failed.
    #[error("worker hook failed")]
    Middleware(#[from] dq_core::MiddlewareError),
    /// An actor takes a state the app does not hold, or a state built at boot failed.
    #[error("worker could not start")]
    State(#[from] dq_core::StateError),
    /// There is nothing to consume: no actors, or `queues` matched none of their queues.
    #[error("no queues to consume (actors' queues: {known:?}, asked for: {asked:?})")]
    NoQueues {
        /// Queues the registered actors use.
        known: Vec<String>,
        /// Queues the options named.
        asked: Vec<String>,
    },
    /// [`Worker::drained`](crate::Worker::drained) waited its whole timeout.
    #[error(
        "queues not drained after {timeout:?}: {remaining} message(s) still waiting or running"
    )]
    DrainTimeout {
        /// How long it waited.
        timeout: std::time::Duration,
        /// Messages still in the broker or in the worker at the last look.
        remaining: u64,
    },
    /// `start` was called twice, or `stop` before `start`.
    #[error("worker is {0}")]
    Lifecycle(&'static str),
    /// In-flight work did not finish within the shutdown timeout; those messages were left
    /// unacked, so the broker gives them to another worker.
    #[error("{0} message(s) still running when the shutdown timeout passed")]
    ShutdownTimeout(usize),
}
