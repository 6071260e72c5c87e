//! # dq-worker
//!
//! The runtime that processes messages: consumers, the priority work queue, worker threads for
//! sync actors and Tokio tasks for async ones, delayed-message holding, acks, graceful shutdown.
//!
//! **Key design decision:** the worker alone settles messages, and only after every after-process
//! hook returned `Ok`. Middleware can enqueue a retry, forward a pipeline or store a result, but it
//! cannot ack; an error in any of those steps leaves the message unacked and requeued. That is
//! what makes delivery at-least-once even when the broker fails half-way through a retry, where
//! Python Dramatiq would ack and lose the message.
//!
//! | piece | what it does |
//! |---|---|
//! | consumers | one per queue and per delay queue, each holding at most its prefetch unacked |
//! | work queue | ordered by actor priority (lower first), then arrival |
//! | dispatcher | starts the best queued message whenever one of `threads` slots is free |
//! | worker threads | run a sync actor's message with its hooks, then the next queued one while any are left |
//! | deadline watcher | settles a sync actor's message as `TimeLimitExceeded` when its thread overruns |
//! | delay holder | keeps messages with an `eta` in memory, moves them to their queue when due |
//!
//! ```no_run
//! # async fn demo(app: dq_core::App) -> Result<(), dq_worker::WorkerError> {
//! let worker = dq_worker::Worker::new(app, dq_worker::WorkerOptions::default());
//! worker.start().await?;
//! // ... until it is time to stop:
//! worker.stop().await?;
//! # Ok(()) }
//! ```

mod deadline;
mod error;
mod options;
mod queue;
mod threads;
mod worker;

pub use error::WorkerError;
pub use options::WorkerOptions;
pub use worker::Worker;
