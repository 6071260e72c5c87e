//! Prometheus: Python Dramatiq's Prometheus middleware, on the `metrics` facade.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use dq_core::{
    async_trait, App, Control, Hooks, Job, Message, Middleware, MiddlewareError, Outcome,
};
use metrics::{counter, gauge, histogram};

use crate::names::*;

/// Records Python Dramatiq 2.2.1's Prometheus series through the [`metrics`] facade: the same
/// names, HELP texts, `queue_name` / `actor_name` labels and moments, so dashboards built for
/// Python workers (Grafana's 3692) show dq workers too.
///
/// | series | kind | counted |
/// |---|---|---|
/// | `dramatiq_messages_total` | counter | after a message was processed or skipped |
/// | `dramatiq_message_errors_total` | counter | after the actor failed |
/// | `dramatiq_message_retries_total` | counter | when a retry is put on the delay queue (label `<queue>.DQ`, as in Python) |
/// | `dramatiq_message_rejects_total` | counter | after a message was dead-lettered |
/// | `dramatiq_messages_inprogress` | gauge | up before the actor runs, down after |
/// | `dramatiq_delayed_messages_inprogress` | gauge | up when the worker holds a delayed message, down when it leaves memory |
/// | `dramatiq_message_duration_milliseconds` | histogram | after a message was processed or skipped, in ms |
///
/// Where Python's middleware is wrong, this one is right (the README's "Monitoring" section
/// has the details):
///
/// - **Retries are counted once.** Python counts a retry when Retries puts it on the delay
///   queue (labelled `<queue>.DQ`) and again when a worker moves it to its queue when it is due
///   (labelled `<queue>`): every `after_enqueue` of a message with a `retries` option counts.
///   dq counts the first moment only, with Python's `<queue>.DQ` label, so
///   `dramatiq_message_retries_total{queue_name="q.DQ"}` means the same in a mixed fleet.
/// - **The delayed gauge goes down under the label it went up under** (`<queue>.DQ`, the
///   queue the worker holds the message from), and when the message leaves this process's
///   memory: when it is moved to its queue (Python waits until this process runs it, which
///   another process may do, so its gauge only grows), and when the worker stops.
/// - **A message skipped before this middleware saw it** (AgeLimit, earlier in the stack)
///   does not take `dramatiq_messages_inprogress` below zero. It is counted in
///   `dramatiq_messages_total` with a 0 ms duration, as in Python.
///
/// Nothing is recorded until a recorder is installed: [`Recorder::install`](crate::Recorder)
/// (what the worker command does), `metrics-exporter-prometheus`, or any other.
///
/// ```
/// use dq_broker_stub::StubBroker;
/// use dq_core::App;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let recorder = dq_metrics::Recorder::default();
/// recorder.clone().install()?;
/// let app = App::builder(StubBroker::new())
///     .middleware_arcs(dq_middleware::default_middleware())
///     // Last, as Python's `broker.add_middleware(Prometheus())` appends it.
///     .middleware(dq_metrics::Prometheus::default())
///     .build()?;
/// # let _ = app;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Prometheus {
    /// Messages between `before_process` and their after-hook, by message id: when they
    /// started, and under which labels the gauge went up.
    running: Mutex<HashMap<String, Instant>>,
    /// Delayed messages held in memory, by message id, with the queue label the gauge went
    /// up under.
    delayed: Mutex<HashMap<String, (String, String)>>,
}

impl Prometheus {
    /// Sets the HELP texts on the installed recorder; the first hook does it too.
    fn describe() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(describe_all);
    }

    fn done(&self, job: &Job, error: bool) {
        let m = &job.message;
        let labels = [
            ("queue_name", m.queue_name.clone()),
            ("actor_name", m.actor_name.clone()),
        ];
        let started = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&m.message_id);
        let took = match started {
            Some(t) => {
                gauge!(MESSAGES_INPROGRESS, &labels).decrement(1.0);
                t.elapsed()
            }
            None => Duration::ZERO,
        };
        histogram!(MESSAGE_DURATION_MILLISECONDS, &labels).record(took.as_secs_f64() * 1000.0);
        counter!(MESSAGES_TOTAL, &labels).increment(1);
        if error {
            counter!(MESSAGE_ERRORS_TOTAL, &labels).increment(1);
        }
    }

    fn undelay(&self, message_id: &str) {
        let held = self
            .delayed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(message_id);
        if let Some((queue, actor)) = held {
            gauge!(DELAYED_MESSAGES_INPROGRESS, "queue_name" => queue, "actor_name" => actor)
                .decrement(1.0);
        }
    }
}

fn labels(m: &Message) -> [(&'static str, String); 2] {
    [
        ("queue_name", m.queue_name.clone()),
        ("actor_name", m.actor_name.clone()),
    ]
}

#[async_trait]
impl Middleware for Prometheus {
    fn name(&self) -> &str {
        "Prometheus"
    }

    fn hooks(&self) -> Hooks {
        Hooks::AFTER_ENQUEUE
            | Hooks::BEFORE_DELAY
            | Hooks::BEFORE_PROCESS
            | Hooks::AFTER_PROCESS
            | Hooks::AFTER_SKIP
            | Hooks::NACK
            | Hooks::WORKER
    }

    async fn before_worker_boot(&self, _app: &App) -> Result<(), MiddlewareError> {
        Prometheus::describe();
        Ok(())
    }

    async fn after_worker_shutdown(&self, _app: &App) -> Result<(), MiddlewareError> {
        // Held delayed messages went back to the broker: none is in memory any more.
        let held: Vec<String> = self
            .delayed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for id in held {
            self.undelay(&id);
        }
        Ok(())
    }

    async fn after_enqueue(
        &self,
        _app: &App,
        message: &Message,
        delay: Option<Duration>,
    ) -> Result<(), MiddlewareError> {
        match delay {
            // Retries always delays a retry: this is the moment it is scheduled.
            Some(_) if message.options.contains_key("retries") => {
                Prometheus::describe();
                counter!(MESSAGE_RETRIES_TOTAL, &labels(message)).increment(1);
            }
            Some(_) => {}
            // A worker moving a due delayed message to its queue: it leaves memory.
            None => self.undelay(&message.message_id),
        }
        Ok(())
    }

    async fn before_delay_message(
        &self,
        _app: &App,
        message: &Message,
    ) -> Result<(), MiddlewareError> {
        Prometheus::describe();
        let held = (message.queue_name.clone(), message.actor_name.clone());
        let fresh = self
            .delayed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(message.message_id.clone(), held)
            .is_none();
        if fresh {
            gauge!(DELAYED_MESSAGES_INPROGRESS, &labels(message)).increment(1.0);
        }
        Ok(())
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        let m = &job.message;
        self.undelay(&m.message_id);
        let fresh = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(m.message_id.clone(), Instant::now())
            .is_none();
        if fresh {
            gauge!(MESSAGES_INPROGRESS, &labels(m)).increment(1.0);
        }
        Ok(Control::Continue)
    }

    async fn after_process(
        &self,
        _app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        self.done(job, outcome.error().is_some());
        Ok(())
    }

    async fn after_skip(&self, _app: &App, job: &mut Job) -> Result<(), MiddlewareError> {
        self.done(job, false);
        Ok(())
    }

    async fn after_nack(
        &self,
        _app: &App,
        message: &Message,
        _reason: &str,
    ) -> Result<(), MiddlewareError> {
        counter!(MESSAGE_REJECTS_TOTAL, &labels(message)).increment(1);
        Ok(())
    }
}

/// Describes every series of this crate (Dramatiq's and dq's) on the installed recorder.
pub(crate) fn describe_all() {
    metrics::describe_counter!(MESSAGES_TOTAL, "The total number of messages processed.");
    metrics::describe_counter!(
        MESSAGE_ERRORS_TOTAL,
        "The total number of errored messages."
    );
    metrics::describe_counter!(
        MESSAGE_RETRIES_TOTAL,
        "The total number of retried messages."
    );
    metrics::describe_counter!(
        MESSAGE_REJECTS_TOTAL,
        "The total number of dead-lettered messages."
    );
    metrics::describe_gauge!(MESSAGES_INPROGRESS, "The number of messages in progress.");
    metrics::describe_gauge!(
        DELAYED_MESSAGES_INPROGRESS,
        "The number of delayed messages in memory."
    );
    metrics::describe_histogram!(
        MESSAGE_DURATION_MILLISECONDS,
        "The time spent processing messages."
    );
    metrics::describe_gauge!(
        WORKER_THREADS,
        "The number of worker threads (message slots)."
    );
    metrics::describe_gauge!(
        WORKER_THREADS_BUSY,
        "The number of worker threads running a message."
    );
    metrics::describe_gauge!(QUEUE_READY, "The number of messages waiting on the queue.");
    metrics::describe_gauge!(
        QUEUE_DELAYED,
        "The number of messages waiting on the queue's delay queue."
    );
    metrics::describe_gauge!(
        QUEUE_DEAD,
        "The number of messages in the queue's dead-letter queue."
    );
}
