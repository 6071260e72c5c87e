//! # dq-sentry
//!
//! Sentry for dq: what Python's sentry-sdk Dramatiq integration does, on the same wire.
//!
//! The [`Sentry`] middleware reports an actor's failure as an event whose transaction is the
//! actor's name, with `extra.dramatiq_message_id`, the message as the `dramatiq` context, and
//! the mechanism `{"type": "dramatiq", "handled": false}`. It does not report errors that ask
//! for a retry ([`Retry`](dq_core::Retry), a rate limit not acquired) nor errors whose type the
//! actor or message `throws`. Each run is a `queue.task.dramatiq` transaction named after the
//! actor.
//!
//! **Key design decision:** trace headers travel in the message option `_sentry_headers`
//! (`{"sentry-trace": "<trace id>-<span id>[-<sampled>]", "baggage": ...}`), the key and shape
//! Python's integration writes at enqueue and reads before processing. So a Python producer's
//! trace continues in a dq worker and a dq producer's in a Python worker. Like Python, a
//! message that carries `retries` starts a new trace instead of continuing the producer's.
//!
//! ```
//! // The application initialises Sentry with `sentry::init(...)`; dq reports through its
//! // main hub.
//! let app = dq_core::App::builder(dq_broker_stub::StubBroker::new())
//!     .middleware(dq_sentry::Sentry::new())
//!     .build()
//!     .unwrap();
//! # drop(app);
//! ```

mod middleware;

pub use middleware::{Sentry, SENTRY_HEADERS};
