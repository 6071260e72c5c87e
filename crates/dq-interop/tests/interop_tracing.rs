//! Traces across a mixed fleet: a Python producer's OpenTelemetry context (`trace_ctx`) and
//! Sentry trace (`_sentry_headers`) continue in a dq worker, and a Python worker keeps a dq
//! producer's `trace_ctx` through its retries. On Redis, with Python's opentelemetry-sdk and
//! sentry-sdk from the virtualenv.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dq::middleware::{Actor, ActorOptions};
use dq::otel::OpenTelemetry;
use dq::sentry::Sentry;
use dq::{ActorError, App, FailureKind, Worker, WorkerOptions};
use dq_interop::{BrokerKind, Scenario};
use opentelemetry::trace::{SpanKind, TraceContextExt, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::{json, Value};

/// The trace and span ids the dq actor ran in, by tag.
static RAN_IN: Mutex<Vec<(String, String, String)>> = Mutex::new(Vec::new());

dq_test::sync_handler!(record, |_path: String, tag: String| {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    RAN_IN
        .lock()
        .unwrap()
        .push((tag, sc.trace_id().to_string(), sc.span_id().to_string()));
    Ok(Value::Null)
});

dq_test::sync_handler!(doomed, |_path: String, _tag: String| Err(ActorError::new(
    FailureKind::Error,
    "RuntimeError",
    "always fails"
)));

/// Runs a Python snippet with the scenario's environment (the actors module importable) and
/// returns the JSON object it prints last.
fn python_json(sc: &Scenario, code: &str, args: &[&str]) -> Value {
    let out = sc
        .python_command("py")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python starts");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("a line")).expect("JSON")
}

async fn dq_worker(sc: &Scenario, middleware: Vec<Arc<dyn dq::middleware::Middleware>>) -> Worker {
    let options = ActorOptions {
        queue_name: sc.queue.clone(),
        max_retries: Some(Some(0)),
        ..ActorOptions::default()
    };
    let app = App::builder_shared(sc.dq_broker().await)
        .without_linked_actors()
        .middleware_arcs(middleware)
        .middleware_arcs(dq::middleware::default_middleware())
        .actor(Actor::new("record", options.clone(), record))
        .actor(Actor::new("doomed", options, doomed))
        .build()
        .expect("worker app");
    let worker = Worker::new(
        app,
        WorkerOptions {
            threads: 2,
            worker_timeout: Duration::from_millis(50),
            ..WorkerOptions::default()
        },
    );
    worker.start().await.expect("dq worker starts");
    worker
}

const PY_OTEL_PRODUCER: &str = r#"
import json, sys
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider())
import dq_interop_actors as actors

tracer = trace.get_tracer("py-producer")
token = context.attach(baggage.set_baggage("tenant", "acme"))
with tracer.start_as_current_span("POST /orders") as span:
    carrier = {}
    propagate.inject(carrier)
    message = actors.record_.send_with_options(args=(sys.argv[1], "from-python"), trace_ctx=carrier)
context.detach(token)
sc = span.get_span_context()
print(json.dumps({"trace_id": format(sc.trace_id, "032x"), "span_id": format(sc.span_id, "016x"),
                  "message_id": message.message_id, "carrier": carrier}))
"#;

#[test]
fn a_python_producers_opentelemetry_context_continues_in_a_dq_worker() {
    let sc = Scenario::new(BrokerKind::Redis, "otel-py");
    let rt = dq_interop::runtime();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let otel: Arc<dyn dq::middleware::Middleware> =
        Arc::new(OpenTelemetry::with_tracer(provider.tracer("dq-worker")));
    let worker = rt.block_on(dq_worker(&sc, vec![otel]));

    let sent = python_json(&sc, PY_OTEL_PRODUCER, &[&sc.path_str("records")]);
    assert_eq!(sent["carrier"]["baggage"], json!("tenant=acme"), "{sent}");
    let ran = dq_test::wait_until(Duration::from_secs(20), || {
        RAN_IN
            .lock()
            .unwrap()
            .iter()
            .any(|(t, _, _)| t == "from-python")
    });
    rt.block_on(worker.stop()).expect("worker stops");
    assert!(ran, "the dq worker ran the Python producer's message");

    let python_trace = sent["trace_id"].as_str().expect("trace id");
    let (_, trace, span) = RAN_IN
        .lock()
        .unwrap()
        .iter()
        .find(|(t, _, _)| t == "from-python")
        .cloned()
        .expect("a run");
    assert_eq!(
        trace, python_trace,
        "the actor ran in the Python trace: {sent}"
    );
    let consumer = exporter
        .get_finished_spans()
        .expect("spans")
        .into_iter()
        .find(|s| s.span_kind == SpanKind::Consumer)
        .expect("a consumer span");
    assert_eq!(consumer.span_context.trace_id().to_string(), python_trace);
    assert_eq!(consumer.span_context.span_id().to_string(), span);
    assert_eq!(
        consumer.parent_span_id.to_string(),
        sent["span_id"].as_str().expect("span id"),
        "the consumer span is a child of the Python producer's span"
    );
}

#[test]
fn a_python_worker_keeps_a_dq_producers_trace_ctx_through_its_retries() {
    let sc = Scenario::new(BrokerKind::Redis, "otel-retries");
    let rt = dq_interop::runtime();
    let mut py = sc.spawn_python_worker("py", 2);
    py.wait_ready(Duration::from_secs(30));

    let provider = SdkTracerProvider::builder().build();
    let sent = rt.block_on(async {
        let app = App::builder_shared(sc.dq_broker().await)
            .without_linked_actors()
            .middleware(OpenTelemetry::with_tracer(provider.tracer("dq-producer")))
            .build()
            .expect("producer app");
        let m = dq::Message::new(
            &sc.queue,
            "flaky",
            &json!([sc.path_str("flaky"), "kept", 2]),
            &json!({}),
        )
        .expect("message");
        app.enqueue(m, None).await.expect("enqueued")
    });
    let carrier = sent.options["trace_ctx"].clone();
    assert!(carrier["traceparent"].is_string(), "{carrier}");

    let records = sc.wait_records("flaky", Duration::from_secs(60), &[&py], |r| r.len() >= 3);
    assert!(py.stop(Duration::from_secs(20)), "py log:\n{}", py.log());
    let mut attempts: Vec<i64> = records
        .iter()
        .map(|r| r["attempt"].as_i64().expect("attempt"))
        .collect();
    attempts.sort_unstable();
    assert_eq!(attempts, [0, 1, 2]);
    for r in &records {
        assert_eq!(
            r["options"]["trace_ctx"], carrier,
            "attempt {}",
            r["attempt"]
        );
    }
}

const PY_SENTRY_PRODUCER: &str = r#"
import json, sys
import sentry_sdk
from sentry_sdk.integrations.dramatiq import DramatiqIntegration
from sentry_sdk.transport import Transport

class Nowhere(Transport):
    def capture_envelope(self, envelope):
        pass

# Before the broker exists: the integration patches Broker.__init__.
sentry_sdk.init(dsn="https://public@sentry.invalid/1", transport=Nowhere(),
                integrations=[DramatiqIntegration()], traces_sample_rate=1.0)
import dq_interop_actors as actors

with sentry_sdk.start_transaction(name="POST /orders", op="http.server") as tx:
    message = actors.doomed.send(sys.argv[1], "from-python")
print(json.dumps({"trace_id": tx.trace_id, "message_id": message.message_id,
                  "headers": message.options.get("_sentry_headers")}))
"#;

#[test]
fn a_python_producers_sentry_trace_continues_in_a_dq_worker() {
    let sc = Scenario::new(BrokerKind::Redis, "sentry-py");
    let rt = dq_interop::runtime();
    let transport = sentry_core::test::TestTransport::new();
    let options = sentry_core::ClientOptions::new()
        .dsn("https://public@sentry.invalid/1")
        .transport(transport.clone())
        .traces_sample_rate(1.0);
    let hub = Arc::new(sentry_core::Hub::new(
        Some(Arc::new(options.into())),
        Arc::new(Default::default()),
    ));
    let sentry: Arc<dyn dq::middleware::Middleware> = Arc::new(Sentry::with_hub(hub));
    let worker = rt.block_on(dq_worker(&sc, vec![sentry]));

    let sent = python_json(&sc, PY_SENTRY_PRODUCER, &[&sc.path_str("records")]);
    let python_trace = sent["trace_id"].as_str().expect("trace id").to_owned();
    assert!(
        sent["headers"]["sentry-trace"]
            .as_str()
            .is_some_and(|h| h.starts_with(&python_trace)),
        "{sent}"
    );
    let mut events = Vec::new();
    let got = dq_test::wait_until(Duration::from_secs(20), || {
        events.extend(transport.fetch_and_clear_events());
        !events.is_empty()
    });
    rt.block_on(worker.stop()).expect("worker stops");
    assert!(got, "the dq worker reported the failure");
    let event = &events[0];
    assert_eq!(event.transaction.as_deref(), Some("doomed"));
    assert_eq!(event.extra["dramatiq_message_id"], sent["message_id"]);
    match event.contexts.get("trace") {
        Some(sentry_core::protocol::Context::Trace(t)) => {
            assert_eq!(t.trace_id.to_string(), python_trace)
        }
        other => panic!("no trace context: {other:?}"),
    }
}
