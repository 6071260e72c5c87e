//! # dq-abort
//!
//! Abort and cancel messages, queued, delayed or running, interchangeably with Python's
//! [dramatiq-abort](https://github.com/Flared/dramatiq-abort) 1.2: the [`Abortable`]
//! middleware, [`abort`] / [`abort_with`] ([`AbortMode::Cancel`] for messages that have not
//! started, [`AbortMode::Abort`], the default, for running ones too), and event backends on
//! Redis ([`RedisBackend`]) and in memory ([`MemoryBackend`]).
//!
//! **Key design decision:** dq writes and reads exactly dramatiq-abort's two primitives, the
//! lists `dramatiq:aborts:cancel:<message_id>` (value `{}`) and
//! `dramatiq:aborts:abort:<message_id>` (value `{"abort_timeout": ms}`), both expiring after
//! `abort_ttl` (90 s). A Python `abort(message_id)` so cancels or aborts a message a dq worker
//! holds, and `dq abort` one a Python worker holds. Stopping a running actor is the worker's
//! job, through a stop request ([`dq_core::Interrupt`]) it enforces like a time limit: an async
//! actor's future is dropped at the end of the grace period; a sync actor cannot be interrupted
//! from outside in Rust, so its message fails at that moment while its thread runs on and sees
//! the abort in `dq::check()` (call it between steps of long work). One watcher task per
//! worker process blocks on the abort events of the messages running there, so an abort is
//! noticed within about a second without polling per message.
//!
//! ```no_run
//! use std::time::Duration;
//! use dq_abort::{Abortable, AbortOptions, RedisBackend};
//!
//! # #[allow(dead_code)]
//! # async fn demo(broker: impl dq_core::Broker) -> Result<(), Box<dyn std::error::Error>> {
//! let app = dq_core::App::builder(broker)
//!     .middleware(Abortable::new(RedisBackend::from_env()?))
//!     .build()?;
//! # let message_id = "";
//! app.scope(async {
//!     // Stop it now, whether it waits in a queue or runs.
//!     dq_abort::abort(message_id).await?;
//!     // Or give it 5 s to wind down (it reads `dq_abort::abort_requested()`).
//!     let graceful = AbortOptions::default().abort_timeout(Duration::from_secs(5));
//!     dq_abort::abort_with(message_id, &graceful).await
//! }).await?;
//! # Ok(()) }
//! ```
//!
//! | item | dramatiq-abort |
//! |---|---|
//! | [`Abortable`] | `Abortable(backend=..., abortable=True, abort_ttl=90_000)` |
//! | [`abort`], [`abort_with`], [`Abortable::abort_with`] | `abort(message_id, middleware, abort_ttl, mode, abort_timeout)` |
//! | [`AbortMode`] | `AbortMode.ABORT`, `AbortMode.CANCEL` |
//! | [`abort_requested`] | `abort_requested()` (a `Duration`, not float ms) |
//! | [`abort_error`] (type name `Abort`) | `dramatiq_abort.Abort` |
//! | [`RedisBackend`], [`MemoryBackend`] | `backends.RedisBackend`, `backends.StubBackend` |
//!
//! What is guaranteed and what is not:
//!
//! - A cancel reaches a message only if it starts within `abort_ttl` of the abort: raise the
//!   ttl for messages delayed longer. The cancel event is consumed by the first worker that
//!   takes the message.
//! - An abort of a running message is noticed within about a second (one `BLPOP` of 1 s at a
//!   time), then stopped after its grace period: an async actor at its next `.await`, a sync
//!   actor only where it calls `dq::check()` (its message is failed either way).
//! - An aborted message fails with `Abort`, an ordinary failure: Retries retries it unless
//!   `max_retries = 0`; its retry is usually skipped by the cancel event the abort left, as in
//!   Python. A pipeline stops at an aborted or cancelled stage.
//! - An abort of a message that finished, or that no worker holds within `abort_ttl`, does
//!   nothing.

#![doc(test(attr(deny(warnings))))]

mod backend;
mod batch;
mod error;
mod memory;
mod middleware;
mod redis_backend;

pub use backend::{Event, EventBackend};
pub use error::{Error, Result};
pub use memory::MemoryBackend;
pub use middleware::{
    abort, abort_error, abort_requested, abort_with, AbortMode, AbortOptions, Abortable,
    DEFAULT_ABORT_TTL_MS,
};
pub use redis_backend::{RedisBackend, RedisBackendBuilder, DEFAULT_NAMESPACE};
