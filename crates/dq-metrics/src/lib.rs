//! # dq-metrics
//!
//! Prometheus metrics for dq: the [`Prometheus`] middleware records Python Dramatiq 2.2.1's
//! series (same names, HELP texts, labels, buckets and moments) through the [`metrics`]
//! facade, and the [`Recorder`] turns them into the text a Python worker's exposition server
//! returns, so one Prometheus aggregates a fleet of Python and Rust workers, and dashboards
//! built for Dramatiq (Grafana's 3692) keep working.
//!
//! **Key design decision:** the text is rendered here, not by `metrics-exporter-prometheus`.
//! That exporter writes bucket bounds with Rust's float formatting (`le="5"`, where Python's
//! `prometheus_client` writes `le="5.0"`); Prometheus 2.x keeps both as different series, so a
//! mixed fleet's `histogram_quantile(sum by (le) ...)` would split. It also renders histograms
//! as summaries unless told otherwise, and has no way to add up the snapshots of several worker
//! processes as Python's multiprocess mode does. The recorder here is small (a map of atomics),
//! and recording stays on the `metrics` facade: install another recorder, and the middleware
//! records to it.
//!
//! ```
//! use dq_broker_stub::StubBroker;
//! use dq_core::App;
//! use dq_metrics::{Prometheus, Recorder};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let recorder = Recorder::default();
//! recorder.clone().install()?; // the worker command does this in each worker process
//! let app = App::builder(StubBroker::new())
//!     .middleware_arcs(dq_middleware::default_middleware())
//!     .middleware(Prometheus::default())
//!     .build()?;
//! # let _ = app;
//! // ... run a worker on `app`, then serve this on /metrics:
//! let text: String = recorder.snapshot().render();
//! # let _ = text;
//! # Ok(()) }
//! ```
//!
//! With the `prometheus` feature of the `dq` facade, the worker command does all of it: each
//! worker process installs a [`Recorder`], adds [`Prometheus`] to its app and writes a
//! [`Snapshot`] for the main process, which adds them up and serves them on
//! `dramatiq_prom_host:dramatiq_prom_port` (`0.0.0.0:9191`), with `dq_` gauges for autoscaling
//! (queue depths, busy and total worker threads) next to Dramatiq's series.
//!
//! | item | what it is |
//! |---|---|
//! | [`Prometheus`] | the middleware: Dramatiq's seven series, with Python's bugs fixed |
//! | [`Recorder`] | a `metrics` recorder with Dramatiq's buckets, and its [`Snapshot`] |
//! | [`Snapshot::merge`], [`Snapshot::render`] | several processes' numbers as one, in Python's text format |
//! | [`names`] | the series' names and [`DURATION_BUCKETS`] |

#![doc(test(attr(deny(warnings))))]

mod error;
mod exposition;
mod middleware;
pub mod names;
mod recorder;

pub use error::{Error, Result};
pub use exposition::{Family, HistogramValue, Kind, Snapshot, Value, CONTENT_TYPE};
pub use middleware::Prometheus;
pub use names::DURATION_BUCKETS;
pub use recorder::Recorder;

/// Sets the HELP texts of every series this crate names on the installed global recorder.
/// [`Recorder::install`] calls it; call it yourself after installing another recorder.
///
/// ```
/// dq_metrics::describe();
/// ```
pub fn describe() {
    middleware::describe_all();
}
