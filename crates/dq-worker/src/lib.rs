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
//! The modules follow a message's life:
//!
//! | module | piece | what it does |
//! |---|---|---|
//! | `intake` | consumers | one per queue and per delay queue, each holding at most its prefetch unacked; each delivery is decoded into its actor's call, dead-lettered when it cannot run, or held when delayed |
//! | `queue` | work queue | ordered by actor priority (lower first), then arrival |
//! | `execution` | dispatcher | starts the best queued message whenever one of `threads` slots is free, where its call's kind says: a worker thread or a task |
//! | `threads` | worker threads | run a sync actor's message with its hooks, then the next queued one while any are left |
//! | `deadline` | deadline watcher | concludes a sync actor's message as `TimeLimitExceeded` when its thread overruns |
//! | `delay` | delay holder | keeps messages with an `eta` in memory, moves them to their queue when due |
//! | `settlement` | settle task | acks, dead-letters or requeues every delivery, a batch at a time, retrying transient broker errors |
//! | `inflight` | in-flight guards | count what `join` and `stop` wait on; a message is done when its guard drops |
//! | `presence` | registry record | publishes who the worker is and which actors it runs to the broker's worker registry, refreshes it, withdraws it at stop |
//! | `worker` | [`Worker`] | starts and stops all of the above |
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
mod delay;
mod error;
mod execution;
mod health;
mod inflight;
mod intake;
mod options;
mod presence;
mod queue;
mod settlement;
mod shared;
mod threads;
mod worker;

pub use error::WorkerError;
pub use options::WorkerOptions;
pub use worker::Worker;
