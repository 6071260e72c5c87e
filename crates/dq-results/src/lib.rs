//! # dq-results
//!
//! Actor results for dq: the [`Results`] middleware that stores what actors return, the Redis
//! and in-memory backends it stores them in, and the reading side, `get_result` on messages and
//! pipelines and `get_results` / `wait` on groups, with Dramatiq's errors: [`Error::Missing`]
//! (`ResultMissing`), [`Error::Timeout`] (`ResultTimeout`) and [`Error::Failure`]
//! (`ResultFailure`, with the actor's error type and message).
//!
//! **Key design decision:** results are stored exactly where and how Python Dramatiq 2.2.1
//! stores them: under the MD5 of `dramatiq-results:<queue>:<actor>:<message_id>`, as JSON, in a
//! one-element Redis list, failures as Dramatiq's `{"__t": "dramatiq.results.Result", ...}`
//! marker. A result a Rust worker stored is read by Python's `message.get_result()` and the
//! reverse, so one result store serves mixed workflows. Reading is typed: ask for the `T` the
//! actor returns and get it decoded, or [`Error::Decode`].
//!
//! The backends are dq-core's [`ResultSource`](dq_core::ResultSource), so the handle a send of a
//! `#[dq::actor]` returns reads its own result, typed, with no import and no turbofish:
//! `add::send(1, 2).await?.wait_result(&backend, timeout).await?` is an `i64` for an `add`
//! returning one (errors: [`dq_core::ResultError`], whose `Missing`, `Timeout` and `Failed`
//! are this crate's three below). [`MessageResult`] and the group and pipeline readers are
//! Dramatiq's API, for untyped messages.
//!
//! ```
//! use std::time::Duration;
//! use dq_broker_stub::StubBroker;
//! use dq_core::{Actor, ActorOptions, App, Invocation, Message, Sent};
//! use dq_results::{MemoryBackend, MessageResult, Results};
//! use dq_worker::{Worker, WorkerOptions};
//!
//! fn add(m: &Message, _: &dq_core::States) -> Result<Invocation, dq_core::ArgsError> {
//!     let (x, y): (i64, i64) = serde_json::from_str(m.args.get()).unwrap();
//!     Ok(Invocation::Sync(Box::new(move || Ok((x + y).into()))))
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = MemoryBackend::default();
//! let broker = StubBroker::new();
//! let app = App::builder(broker.clone())
//!     .middleware_arcs(dq_middleware::default_middleware())
//!     .middleware(Results::new(backend.clone()))
//!     .actor(Actor::new("add", ActorOptions { store_results: Some(true), ..Default::default() }, add))
//!     .build()?;
//! let worker = Worker::new(app.clone(), WorkerOptions::default());
//! worker.start().await?;
//!
//! // `#[dq::actor]`'s `add::send(1, 2)` makes this typed handle itself.
//! let message = app.enqueue(Message::new("default", "add", &(1, 2), &())?, None).await?;
//! let sent: Sent<i64> = Sent::from_message(message);
//! assert_eq!(sent.wait_result(&backend, Duration::from_secs(5)).await?, 3);
//!
//! // Dramatiq's way, for any message.
//! let sum: i64 = sent.get_result(&backend, true, Some(Duration::from_secs(5))).await?;
//! assert_eq!(sum, 3);
//! worker.stop().await?;
//! # Ok(()) }
//! ```
//!
//! | item | Dramatiq |
//! |---|---|
//! | [`Results`] | `dramatiq.results.Results(backend, store_results, result_ttl)` |
//! | [`RedisBackend`], [`MemoryBackend`] | `results.backends.RedisBackend`, `StubBackend` |
//! | `Sent::result`, `Sent::wait_result` (dq-core) | `message.get_result(backend, block=False)`, `(block=True, timeout)` |
//! | [`MessageResult::get_result`] | `message.get_result(backend, block, timeout)` |
//! | [`PipelineResults`] | `pipeline.get_result`, `get_results`, `completed_count` |
//! | [`GroupResults`] | `group.get_results`, `wait`, `completed_count` |
//! | [`ResultBackendExt`] | `backend.get_result`, `store_result`, `store_exception` |
//!
//! Build groups and pipelines with [`group`] and [`pipeline`] (or `a | b`): `dq-core`'s, re-exported
//! here beside their readers, so `dq::results` has all of composition in one place.

#![doc(test(attr(deny(warnings))))]

mod backend;
mod error;
mod memory;
mod middleware;
mod read;
mod redis_backend;
mod source;

pub use backend::{
    decode_stored, failure_value, message_key, ResultBackend, ResultBackendExt, DEFAULT_NAMESPACE,
    DEFAULT_RESULT_TTL, DEFAULT_TIMEOUT,
};
pub use dq_core::{group, pipeline, Group, GroupChild, Pipeline, PipelineStep};
pub use error::{Error, Result};
pub use memory::MemoryBackend;
pub use middleware::Results;
pub use read::{GroupResults, MessageResult, PipelineResults};
pub use redis_backend::{RedisBackend, RedisBackendBuilder};
