//! The `tracing` spans of a message's life: `dq.enqueue` around every enqueue, `dq.process`
//! around every run with its message id, actor, queue, retries and outcome, and the retry's
//! enqueue inside the run that failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use dq_broker_stub::{JoinOptions, StubBroker};
use dq_core::__private::ArgReader;
use dq_core::{Actor, ActorError, ActorOptions, App, ArgsError, FailureKind, Invocation, Message};
use dq_worker::{Worker, WorkerOptions};
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A closed span: its name, fields and parent's name.
#[derive(Clone, Debug)]
struct Closed {
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<&'static str>,
}

static CLOSED: Mutex<Vec<Closed>> = Mutex::new(Vec::new());

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            let fields = span
                .extensions()
                .get::<Fields>()
                .map(|f| f.0.clone())
                .unwrap_or_default();
            CLOSED.lock().unwrap().push(Closed {
                name: span.name(),
                fields,
                parent: span.parent().map(|p| p.name()),
            });
        }
    }
}

/// Installs the capturing layer for the whole test binary, once: worker threads and tasks
/// record into the global default.
fn capture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Capture);
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
    });
}

fn closed(queue: &str) -> Vec<Closed> {
    CLOSED
        .lock()
        .unwrap()
        .iter()
        .filter(|c| {
            c.fields
                .get("messaging.destination.name")
                .map(String::as_str)
                == Some(queue)
        })
        .cloned()
        .collect()
}

static FLAKY_RUNS: AtomicUsize = AtomicUsize::new(0);

fn flaky(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    ArgReader::new(m)?.finish(&[])?;
    Ok(Invocation::Sync(Box::new(|| {
        if FLAKY_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(ActorError::new(FailureKind::Error, "Busy", "try later"))
        } else {
            Ok(Value::Null)
        }
    })))
}

fn doomed(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    ArgReader::new(m)?.finish(&[])?;
    Ok(Invocation::Async(Box::pin(async {
        Err(ActorError::new(FailureKind::Error, "Broken", "for good"))
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_and_process_spans_record_the_message_and_its_outcome() {
    capture();
    let queue = "spans-q";
    let broker = StubBroker::new();
    let options = |max_retries| ActorOptions {
        queue_name: queue.to_owned(),
        max_retries: Some(Some(max_retries)),
        min_backoff: Some(10),
        max_backoff: Some(20),
        ..ActorOptions::default()
    };
    let app = App::builder(broker.clone())
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .actor(Actor::new("flaky", options(1), flaky))
        .actor(Actor::new("doomed", options(0), doomed))
        .build()
        .unwrap();
    let worker = Worker::new(
        app.clone(),
        WorkerOptions {
            threads: 2,
            worker_timeout: Duration::from_millis(50),
            ..WorkerOptions::default()
        },
    );
    worker.start().await.unwrap();
    let flaky_msg = app
        .enqueue(
            Message::new(queue, "flaky", &json!([]), &json!({})).unwrap(),
            None,
        )
        .await
        .unwrap();
    let doomed_msg = app
        .enqueue(
            Message::new(queue, "doomed", &json!([]), &json!({})).unwrap(),
            None,
        )
        .await
        .unwrap();
    broker
        .join_with(
            queue,
            JoinOptions::default()
                .fail_fast(false)
                .timeout(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    worker.stop().await.unwrap();

    let spans = closed(queue);
    let of = |name: &str, id: &str| -> Vec<Closed> {
        spans
            .iter()
            .filter(|c| c.name == name && c.fields["messaging.message.id"] == id)
            .cloned()
            .collect()
    };

    // The send from the test, the retry from inside the failed run (to the delay queue), and
    // the delay holder's move of the retry to its queue once due.
    let sends = of("dq.enqueue", &flaky_msg.message_id);
    assert_eq!(sends.len(), 3, "{sends:#?}");
    assert_eq!(sends[0].parent, None);
    assert_eq!(sends[0].fields["dq.actor"], "flaky");
    assert_eq!(sends[0].fields["otel.kind"], "producer");
    assert_eq!(sends[0].fields["messaging.system"], "dramatiq");
    assert_eq!(
        sends[1].parent,
        Some("dq.process"),
        "the retry is enqueued in the run"
    );
    assert!(
        sends[1].fields.contains_key("dq.delay_ms"),
        "{:?}",
        sends[1]
    );
    assert!(
        !sends[2].fields.contains_key("dq.delay_ms"),
        "{:?}",
        sends[2]
    );

    let runs = of("dq.process", &flaky_msg.message_id);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    let by_retries = |n: &str| {
        runs.iter()
            .find(|r| r.fields["dq.retries"] == n)
            .unwrap_or_else(|| panic!("a run with retries {n}: {runs:#?}"))
    };
    let first = by_retries("0");
    assert_eq!(first.fields["dq.outcome"], "failure");
    assert!(first.fields["dq.error"].contains("try later"), "{first:?}");
    assert_eq!(first.fields["otel.kind"], "consumer");
    assert_eq!(first.fields["dq.actor"], "flaky");
    assert_eq!(by_retries("1").fields["dq.outcome"], "success");

    let doomed_runs = of("dq.process", &doomed_msg.message_id);
    assert_eq!(doomed_runs.len(), 1);
    assert_eq!(doomed_runs[0].fields["dq.outcome"], "dead_lettered");
    assert!(doomed_runs[0].fields["dq.error"].contains("for good"));
}
