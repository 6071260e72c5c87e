//! # dq-middleware
//!
//! Dramatiq's default middleware stack for dq, plus `CurrentMessage`: the hooks that give
//! messages their age and time limits, their callbacks and pipelines, and their retries with
//! exponential backoff. Every option they read or write has Dramatiq 2.2.1's name and meaning
//! (`retries`, `max_retries`, `traceback`, `pipe_target`, ...), so Python and Rust workers can
//! take turns on one message.
//!
//! **Key design decision:** these middleware decide, the worker acts. They mark a job failed
//! ([`Job::fail`](dq_core::Job::fail), with a reason that goes to the dead-letter queue), skip
//! it ([`Control::Skip`](dq_core::Control::Skip)), set its deadline, or enqueue follow-up
//! messages; only the worker acks, nacks, enforces deadlines and interrupts actors at shutdown.
//! Unlike Dramatiq's, their after-hooks return errors: when a retry, callback or next pipeline
//! stage cannot be enqueued, the hook fails and the worker requeues the message instead of
//! acking it, so nothing is lost between a failure and its retry.
//!
//! Before-hooks run in the order of the stack and after-hooks in reverse, as in Dramatiq: with
//! the default stack, Retries' after-hook runs first, so Pipelines and Callbacks see the
//! `retries` and `traceback` it wrote, and Pipelines does not forward a failed message.
//!
//! ```
//! use dq_broker_stub::StubBroker;
//! use dq_core::App;
//! use dq_middleware::{default_middleware, CurrentMessage};
//!
//! # fn main() -> Result<(), dq_core::Error> {
//! // Any broker: Redis, RabbitMQ, or the in-memory stub used here.
//! let app = App::builder(StubBroker::new())
//!     .middleware_arcs(default_middleware())
//!     .middleware(CurrentMessage)
//!     .build()?;
//! assert_eq!(app.middleware().len(), 8);
//! # Ok(()) }
//! ```
//!
//! Or with other settings than Dramatiq's defaults:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use dq_core::Middleware;
//! use dq_middleware::*;
//!
//! let stack: Vec<Arc<dyn Middleware>> = vec![
//!     Arc::new(AgeLimit::default().with_max_age(Duration::from_secs(3600))),
//!     Arc::new(TimeLimit::default().with_time_limit(Duration::from_secs(60))),
//!     Arc::new(ShutdownNotifications::default()),
//!     Arc::new(Callbacks),
//!     Arc::new(Pipelines),
//!     Arc::new(Retries::default().with_max_retries(3)),
//!     Arc::new(Unique),
//! ];
//! assert_eq!(stack.len(), default_middleware().len());
//! ```
//!
//! | middleware | hooks | options read |
//! |---|---|---|
//! | [`AgeLimit`] | `before_process` | `max_age` |
//! | [`TimeLimit`] | `before_process`, `after_process` | `time_limit` |
//! | [`ShutdownNotifications`] | `before_process` | `notify_shutdown` |
//! | [`Callbacks`] | `after_process` | `on_success`, `on_failure` |
//! | [`Pipelines`] | `after_process` | `pipe_target`, `pipe_ignore`, `delay` |
//! | [`Retries`] | `after_process` | `retries`, `max_retries`, `min_backoff`, `max_backoff`, `throws`, `retry_when`, `on_retry_exhausted` |
//! | [`CurrentMessage`] | `before_process` | |
//! | [`Unique`] | `before_process`, `after_process`, `after_skip`, `after_nack` | `dq_unique_key`, `dq_unique_mode`, `dq_unique_until` |

#![doc(test(attr(deny(warnings))))]

mod age_limit;
mod callbacks;
mod current_message;
mod error;
mod pipelines;
mod retries;
mod shutdown;
mod support;
mod time_limit;
mod unique;

use std::sync::Arc;

use dq_core::Middleware;

pub use age_limit::AgeLimit;
pub use callbacks::Callbacks;
pub use current_message::CurrentMessage;
pub use error::{Error, FollowUp, Result};
pub use pipelines::Pipelines;
pub use retries::{
    Retries, RetryWhen, DEFAULT_MAX_BACKOFF_MS, DEFAULT_MAX_RETRIES, DEFAULT_MIN_BACKOFF_MS,
};
pub use shutdown::ShutdownNotifications;
pub use time_limit::{TimeLimit, DEFAULT_TIME_LIMIT_MS};
pub use unique::Unique;

/// Dramatiq's default stack, with Dramatiq's defaults, in Dramatiq's order: [`AgeLimit`],
/// [`TimeLimit`], [`ShutdownNotifications`], [`Callbacks`], [`Pipelines`], [`Retries`]; then
/// dq's [`Unique`] (it does nothing for messages that are not unique, debounced or throttled).
///
/// ```
/// let names: Vec<String> = dq_middleware::default_middleware()
///     .iter()
///     .map(|m| m.name().to_owned())
///     .collect();
/// assert_eq!(
///     names,
///     ["AgeLimit", "TimeLimit", "ShutdownNotifications", "Callbacks", "Pipelines", "Retries", "Unique"]
/// );
/// ```
pub fn default_middleware() -> Vec<Arc<dyn Middleware>> {
    vec![
        Arc::new(AgeLimit::default()),
        Arc::new(TimeLimit::default()),
        Arc::new(ShutdownNotifications::default()),
        Arc::new(Callbacks),
        Arc::new(Pipelines),
        Arc::new(Retries::default()),
        Arc::new(Unique),
    ]
}
