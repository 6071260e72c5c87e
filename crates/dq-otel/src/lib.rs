//! # dq-otel
//!
//! OpenTelemetry for dq: the producer's trace continues in the worker that runs the message,
//! whichever language each side is written in.
//!
//! The [`OpenTelemetry`] middleware, on the producer, starts a `send <queue>` span of kind
//! PRODUCER, a child of the current OpenTelemetry context, and writes that span's context into
//! the message's options under [`TRACE_CTX`] (`"trace_ctx"`): a JSON object with the W3C
//! `traceparent`, and `tracestate` / `baggage` when set. On the worker, it reads the object
//! back and runs the actor in a `process <queue>` span of kind CONSUMER, a child of the
//! producer's, with the messaging semantic-convention attributes (`messaging.system =
//! "dramatiq"`, `messaging.destination.name`, `messaging.message.id`,
//! `messaging.operation.name`, `messaging.operation.type`). The actor runs with that span's
//! context attached, so its own spans, and the messages it sends, belong to the same trace.
//!
//! **Key design decision:** the key and the carrier are those of the OpenTelemetry
//! instrumentations for Dramatiq-style brokers (Remoulade's, the community Dramatiq one), so a
//! Python producer that injects its context into `options["trace_ctx"]` continues in a dq
//! worker and a dq producer's trace continues in such a Python worker. Python's Dramatiq keeps
//! unknown options through retries, and so does dq: every attempt of a message is a child of
//! the one producer span. A worker that has no current context when it re-enqueues a message
//! (a retry, a delayed message moved to its queue) leaves an existing `trace_ctx` alone.
//!
//! Messages the actor sends continue its trace. Those that after-process hooks enqueue once
//! the run is over (the next stage of a pipeline, `on_success` / `on_failure` callbacks) are
//! sent outside the consumer span: without a `trace_ctx` of their own, they start a trace.
//!
//! As fallbacks, a message without `trace_ctx` continues the trace of the Sentry header
//! (`options["_sentry_headers"]["sentry-trace"]`, written by Python's sentry-sdk and by
//! dq-sentry), then that of `options["options"]["trace_context"]` (where the PyPI package
//! `opentelemetry-instrumentor-dramatiq` nests its carrier).
//!
//! ```
//! use dq_otel::OpenTelemetry;
//! use opentelemetry_sdk::trace::SdkTracerProvider;
//!
//! // The application sets up the SDK (an OTLP exporter, say); dq only uses the API.
//! let provider = SdkTracerProvider::builder().build();
//! opentelemetry::global::set_tracer_provider(provider.clone());
//!
//! let broker = dq_broker_stub::StubBroker::new();
//! let app = dq_core::App::builder(broker)
//!     .middleware(OpenTelemetry::new()) // the global tracer provider
//!     .build()
//!     .unwrap();
//! # drop(app);
//! ```
//!
//! Add the middleware to both the producer's and the worker's app. With `tracing` and a
//! `tracing-opentelemetry` layer instead, dq's own `dq.enqueue` / `dq.process` spans carry the
//! same kinds and attributes; this crate is for applications that use the OpenTelemetry API
//! (and its current [`Context`](opentelemetry::Context)) directly, and it is what carries the
//! context across the queue.

mod carrier;
mod middleware;

pub use carrier::{extract_parent, inject, TRACE_CTX};
pub use middleware::OpenTelemetry;

/// The `messaging.system` attribute dq sets: the protocol is Dramatiq's.
pub const MESSAGING_SYSTEM: &str = "dramatiq";
