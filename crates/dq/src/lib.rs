//! # dq
//!
//! Dramatiq, the Python background-task library, rebuilt in Rust: actors, at-least-once delivery,
//! retries with backoff, delays, priorities, dead letters, time limits, callbacks and pipelines,
//! speaking Python Dramatiq 2.2.1's wire format so both can share one broker.
//!
//! **Key design decision:** actors are typed Rust fns. `#[dq::actor]` keeps the fn callable as
//! written and adds a module of the same name whose `send` takes the same typed arguments; the
//! worker decodes a message's JSON arguments straight into those types, and a message whose
//! arguments do not fit is dead-lettered at once (retrying cannot fix it).
//!
//! ```
//! #[dq::actor(max_retries = 3)]
//! fn add(x: i64, y: i64) -> i64 {
//!     x + y
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = dq::StubBroker::new();
//! dq::set_broker(broker.clone())?;           // the app `send` uses: default middleware, every actor
//! add::send(1, 2).await?;                    // enqueue; `add(1, 2)` still runs it right here
//!
//! let worker = dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default());
//! worker.start().await?;
//! broker.join(add::QUEUE, None).await?;      // until the queue is drained and processed
//! worker.stop().await?;
//! # Ok(()) }
//! ```
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `macros` | yes | `#[dq::actor]` |
//! | `stub` | yes | [`StubBroker`], the in-memory broker for tests and embedded use |
//! | `redis` | no | `dq::redis`: the Redis broker (dq-broker-redis) |
//! | `amqp` | no | `dq::amqp`: the RabbitMQ broker (dq-broker-amqp) |
//! | `cli` | no | `dq::cli`: the worker command line, `dq::cli::main()` (dq-cli), for the brokers of `redis` / `amqp` |
//! | `results` | no | `dq::results`: the Results middleware and its backends (dq-results) |
//! | `ratelimit` | no | `dq::ratelimit`: rate limiters and barriers (dq-ratelimit) |
//! | `periodic` | no | `dq::periodic`: cron schedules, one message per tick across every worker (dq-periodic) |
//! | `otel` | no | `dq::otel`: OpenTelemetry context across the queue in `trace_ctx`, producer and consumer spans (dq-otel) |
//! | `sentry` | no | `dq::sentry`: Sentry error reporting and `_sentry_headers` trace propagation (dq-sentry) |
//! | `prometheus` | no | `dq::metrics`: Dramatiq's Prometheus middleware and a Python-compatible exposition (dq-metrics); with `cli`, the worker command serves it on `dramatiq_prom_host:dramatiq_prom_port` |
//! | `abort` | no | `dq::abort(id)` and `dq::abort`: cancel and abort messages, with Python's dramatiq-abort (dq-abort) |
//! | `dashboard` | no | `dq::dashboard`: the web dashboard, a router for your axum app (dq-dashboard); with `cli`, `dq dashboard` |
//! | `full` | no | all of the above |

// What application code names: actors, apps, sending, workers, state, errors.
pub use dq_core::{
    check, current_message, ActorError, App, AppBuilder, AppScope, ArgsError, BrokerError,
    DecodeError, Error, ErrorChain, FailureKind, Message, Result, Retry, SendOptions, Shutdown,
    State, StateBuildError, StateBuilder, StateError, States, TimeLimitExceeded,
};
pub use dq_core::{group, pipeline, Group, GroupChild, Pipeline, PipelineStep};

// Typed sends and pipelines: what `my_actor::send` / `message` / `piped` return, and reading
// results as the actor's return type through any result store (`dq::results`' backends).
pub use dq_core::{
    pipe, ResultError, ResultSource, Sent, SentPipeline, Stage, TypedMessage, TypedPipeline,
};

// Unique, debounced and throttled sends: `SendOptions::unique_for` / `debounce` / `throttle`,
// what a send's `Sent::outcome` says, and the release points.
pub use dq_core::{SendOutcome, UniqueMode, UniqueUntil};

#[cfg(feature = "macros")]
pub use dq_macros::actor;

pub use dq_worker::{Worker, WorkerError, WorkerOptions};

/// What broker authors (and tools that read brokers directly) need: the [`Broker`](broker::Broker)
/// trait, consumers, deliveries and acks, the names Dramatiq gives a queue's delay and
/// dead-letter queues, and the records of the worker registry ([`broker::WorkerInfo`]).
///
/// Application code rarely names these; bring [`broker::Broker`] into scope to call a broker's
/// own methods (`close`, `queue_stats`, `purge`) on a broker you built.
///
/// ```
/// use dq::broker::{delay_queue_name, dead_letter_queue_name};
///
/// assert_eq!(delay_queue_name("emails"), "emails.DQ");
/// assert_eq!(dead_letter_queue_name("emails"), "emails.XQ");
/// ```
pub mod broker {
    pub use dq_core::{
        base_queue_name, dead_letter_queue_name, delay_queue_name, is_valid_queue_name, now_ms,
        redact_url, Acker, ActorInfo, Broker, BrokerError, BrokerErrorKind, BrowsedMessage,
        Consumer, DeadLetter, Delivery, MessageState, QueueStats, ReleaseOutcome, RetryCount,
        Token, UniqueLock, WorkerInfo,
    };
}

/// Dramatiq's middleware (the default stack and the optional ones) and what middleware authors
/// need: the [`Middleware`](middleware::Middleware) trait and its hooks, the jobs and outcomes
/// it sees, actors and their options, and the registry.
///
/// ```
/// use dq::middleware::{async_trait, Control, Hooks, Job, Middleware, MiddlewareError};
/// use dq::App;
///
/// /// Prints every message before it runs.
/// struct Audit;
///
/// #[async_trait]
/// impl Middleware for Audit {
///     fn name(&self) -> &str { "Audit" }
///     fn hooks(&self) -> Hooks { Hooks::BEFORE_PROCESS }
///     async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
///         println!("running {}", job.message);
///         Ok(Control::Continue)
///     }
/// }
///
/// let app = dq::app(dq::StubBroker::new()).middleware(Audit).build().unwrap();
/// # drop(app);
/// ```
pub mod middleware {
    pub use dq_core::{
        async_trait, compute_backoff, compute_backoff_with, short_type_name, Actor, ActorContext,
        ActorOptions, ActorResult, BoxActorFuture, Control, Extensions, GroupBarrier, Handler,
        Hooks, Interrupt, Invocation, Job, Middleware, MiddlewareError, Options, Outcome, Registry,
        Scoped, BUILTIN_ACTOR_OPTIONS, MAX_BACKOFF_MS,
    };
    pub use dq_middleware::*;
}

/// The Redis broker: [`redis::RedisBroker`].
#[cfg(feature = "redis")]
pub mod redis {
    pub use dq_broker_redis::*;
}

/// The RabbitMQ broker: [`amqp::AmqpBroker`].
#[cfg(feature = "amqp")]
pub mod amqp {
    pub use dq_broker_amqp::*;
}

/// The worker command line for your own worker binary: [`cli::main`].
#[cfg(feature = "cli")]
pub mod cli {
    pub use dq_cli::*;
}

/// Results: the [`results::Results`] middleware, its backends and the readers of groups and
/// pipelines.
#[cfg(feature = "results")]
pub mod results {
    pub use dq_results::*;
}

/// Rate limiters, barriers and the distributed mutex.
#[cfg(feature = "ratelimit")]
pub mod ratelimit {
    pub use dq_ratelimit::*;
}

/// Periodic messages: the [`periodic::Periodic`] middleware and [`periodic::Schedule`].
#[cfg(feature = "periodic")]
pub mod periodic {
    pub use dq_periodic::*;
}

/// OpenTelemetry: the [`otel::OpenTelemetry`] middleware, trace context across the queue in
/// the `trace_ctx` option.
#[cfg(feature = "otel")]
pub mod otel {
    pub use dq_otel::*;
}

/// Sentry: the [`sentry::Sentry`] middleware, error reporting and `_sentry_headers` trace
/// propagation as Python's sentry-sdk Dramatiq integration does them.
#[cfg(feature = "sentry")]
pub mod sentry {
    pub use dq_sentry::*;
}

/// Prometheus metrics: Python Dramatiq's series on the `metrics` facade, and an exposition a
/// mixed Python/Rust fleet aggregates (dq-metrics).
#[cfg(feature = "prometheus")]
pub mod metrics {
    pub use dq_metrics::*;
}

/// Abort and cancel messages: the [`abort::Abortable`] middleware, [`abort::AbortMode`],
/// [`abort::AbortOptions`], the event backends, and [`abort::abort_requested`] for actors.
/// [`abort()`](fn@abort) itself is at the root too.
#[cfg(feature = "abort")]
pub mod abort {
    pub use dq_abort::*;
}

/// Aborts a message (queued, delayed or running) through the current app's
/// [`Abortable`](abort::Abortable) middleware: dramatiq-abort's `abort(message_id)`. See
/// [`abort::abort_with`] for a mode, a ttl and a grace period.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo(message_id: &str) -> Result<(), dq::abort::Error> {
/// dq::abort(message_id).await?;
/// # Ok(()) }
/// ```
#[cfg(feature = "abort")]
pub use dq_abort::abort;

/// The web dashboard: [`dashboard::Dashboard`] builds an axum router of pages and a JSON API
/// over a broker, to mount in your own app.
///
/// ```no_run
/// # async fn demo(broker: std::sync::Arc<dyn dq::broker::Broker>) -> Result<(), dq::dashboard::Error> {
/// let router = dq::dashboard::Dashboard::new(broker).prefix("/dq").build()?;
/// # let _ = router;
/// # Ok(()) }
/// ```
#[cfg(feature = "dashboard")]
pub mod dashboard {
    pub use dq_dashboard::*;
}

#[cfg(feature = "stub")]
pub use dq_broker_stub::StubBroker;

/// The in-memory broker and its types.
#[cfg(feature = "stub")]
pub mod stub {
    pub use dq_broker_stub::*;
}

/// Starts building an app on `broker` with the default middleware and every linked actor.
///
/// ```
/// let app = dq::app(dq::StubBroker::new())
///     .middleware(dq::middleware::CurrentMessage)
///     .build()
///     .unwrap();
/// app.set_global();
/// ```
pub fn app(broker: impl broker::Broker) -> AppBuilder {
    App::builder(broker).middleware_arcs(middleware::default_middleware())
}

/// Sets `broker`, with the default middleware and every linked actor, as the global app that
/// `my_actor::send(...)` uses, like Dramatiq's `dramatiq.set_broker`. Returns the app.
///
/// ```
/// dq::set_broker(dq::StubBroker::new()).unwrap();
/// assert!(dq::App::global().is_ok());
/// ```
pub fn set_broker(broker: impl broker::Broker) -> Result<App> {
    let app = app(broker).build()?;
    app.set_global();
    Ok(app)
}

/// Items generated code refers to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use dq_core::__private::*;
    pub use dq_core::{
        encode_args, encode_kwargs, Actor, ActorError, ActorOptions, App, ArgsError, Error,
        Invocation, Message, SendOptions,
    };

    use std::future::Future;
    use std::sync::OnceLock;

    /// Runs `fut` to completion from synchronous code, on a small runtime of dq's own, so that
    /// `send_blocking` works from plain threads (and from sync actors on worker threads).
    pub fn block_on<F>(fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        let rt = RT.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("dq-blocking-send")
                .enable_all()
                .build()
                .expect("dq: cannot start the runtime for blocking sends")
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("dq: blocking send task vanished")
    }
}
