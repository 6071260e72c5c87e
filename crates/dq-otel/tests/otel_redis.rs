//! One trace across the queue: the request span, the PRODUCER span of the enqueue and the
//! CONSUMER span of every attempt of the actor, on Redis.

use std::sync::Mutex;
use std::time::Duration;

use dq_broker_redis::RedisBroker;
use dq_core::{Actor, ActorError, ActorOptions, App, FailureKind, Message};
use dq_otel::OpenTelemetry;
use dq_worker::{Worker, WorkerOptions};
use opentelemetry::trace::{
    FutureExt, SpanId, SpanKind, Status, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;

/// What the actor saw of each attempt: its current trace and span, and its message's
/// `trace_ctx`, by tag.
#[derive(Clone, Debug)]
struct Seen {
    trace_id: String,
    span_id: SpanId,
    trace_ctx: Option<serde_json::Value>,
}

static SEEN: Mutex<Vec<(String, Seen)>> = Mutex::new(Vec::new());

fn seen(tag: &str) -> Vec<Seen> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == tag)
        .map(|(_, s)| s.clone())
        .collect()
}

// Fails its first attempt, so the retry shows what a retry carries.
dq_test::sync_handler!(traced, |tag: String| {
    let cx = Context::current();
    let span = cx.span();
    let message = dq_core::current_message().expect("CurrentMessage exposes the message");
    let attempt = message.options.retries();
    SEEN.lock().unwrap().push((
        tag,
        Seen {
            trace_id: span.span_context().trace_id().to_string(),
            span_id: span.span_context().span_id(),
            trace_ctx: message.options.get("trace_ctx").cloned(),
        },
    ));
    if attempt == 0 {
        Err(ActorError::new(
            FailureKind::Error,
            "Flaky",
            "first attempt fails",
        ))
    } else {
        Ok(json!(attempt))
    }
});

struct Setup {
    app: App,
    worker: Worker,
    provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
    queue: String,
}

async fn setup() -> Setup {
    let url = dq_test::require_redis();
    let queue = dq_test::unique_name("otel");
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let broker = RedisBroker::builder()
        .url(url)
        .namespace(dq_test::unique_name("otel-ns"))
        .build()
        .await
        .expect("Redis broker");
    let options = ActorOptions {
        queue_name: queue.clone(),
        max_retries: Some(Some(3)),
        min_backoff: Some(10),
        max_backoff: Some(50),
        ..ActorOptions::default()
    };
    let app = App::builder(broker)
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .middleware(dq_middleware::CurrentMessage)
        .middleware(OpenTelemetry::with_tracer(provider.tracer("dq-otel-test")))
        .actor(Actor::new("traced", options, traced))
        .build()
        .expect("app");
    let worker = Worker::new(
        app.clone(),
        WorkerOptions {
            threads: 2,
            worker_timeout: Duration::from_millis(50),
            ..WorkerOptions::default()
        },
    );
    worker.start().await.expect("worker starts");
    Setup {
        app,
        worker,
        provider,
        exporter,
        queue,
    }
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn spans_named(exporter: &InMemorySpanExporter, name: &str) -> Vec<SpanData> {
    exporter
        .get_finished_spans()
        .expect("finished spans")
        .into_iter()
        .filter(|s| s.name == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_holds_the_request_the_enqueue_and_every_attempt() {
    let s = setup().await;
    let tracer = s.provider.tracer("the-web-app");
    let request = tracer.start("POST /orders");
    let request_cx = Context::current_with_span(request);
    let message = Message::new(&s.queue, "traced", &json!(["one-trace"]), &json!({})).unwrap();
    let sent = s
        .app
        .enqueue(message, None)
        .with_context(request_cx.clone())
        .await
        .expect("enqueued");
    let request_span = request_cx.span().span_context().clone();
    request_cx.span().end();

    // The broker got the context of the producer span, a child of the request.
    let trace_ctx = sent.options.get("trace_ctx").expect("trace_ctx written");
    let traceparent = trace_ctx["traceparent"].as_str().expect("traceparent");
    assert!(
        traceparent.starts_with(&format!("00-{}-", request_span.trace_id())),
        "{traceparent}"
    );

    let done = dq_test::wait_until_async(Duration::from_secs(20), || async {
        spans_named(&s.exporter, &format!("process {}", s.queue)).len() >= 2
    })
    .await;
    s.worker.stop().await.expect("worker stops");
    assert!(done, "two attempts ran: {:?}", seen("one-trace"));

    let producers = spans_named(&s.exporter, &format!("send {}", s.queue));
    assert_eq!(
        producers.len(),
        1,
        "the retry opens no second producer span"
    );
    let producer = &producers[0];
    assert_eq!(producer.span_kind, SpanKind::Producer);
    assert_eq!(producer.span_context.trace_id(), request_span.trace_id());
    assert_eq!(producer.parent_span_id, request_span.span_id());
    assert_eq!(
        traceparent,
        format!(
            "00-{}-{}-01",
            producer.span_context.trace_id(),
            producer.span_context.span_id()
        )
    );
    assert_eq!(attr(producer, "messaging.system"), Some("dramatiq".into()));
    assert_eq!(
        attr(producer, "messaging.operation.name"),
        Some("send".into())
    );

    let mut consumers = spans_named(&s.exporter, &format!("process {}", s.queue));
    consumers.sort_by_key(|c| match attr(c, "dramatiq.retries") {
        Some(Value::I64(n)) => n,
        other => panic!("dramatiq.retries: {other:?}"),
    });
    assert_eq!(consumers.len(), 2);
    for (attempt, consumer) in consumers.iter().enumerate() {
        assert_eq!(consumer.span_kind, SpanKind::Consumer);
        assert_eq!(consumer.span_context.trace_id(), request_span.trace_id());
        assert_eq!(consumer.parent_span_id, producer.span_context.span_id());
        assert_eq!(attr(consumer, "messaging.system"), Some("dramatiq".into()));
        assert_eq!(
            attr(consumer, "messaging.destination.name"),
            Some(s.queue.clone().into())
        );
        assert_eq!(
            attr(consumer, "messaging.message.id"),
            Some(sent.message_id.clone().into())
        );
        assert_eq!(
            attr(consumer, "messaging.operation.name"),
            Some("process".into())
        );
        assert_eq!(
            attr(consumer, "dramatiq.retries"),
            Some((attempt as i64).into())
        );
    }
    assert!(
        matches!(consumers[0].status, Status::Error { .. }),
        "{:?}",
        consumers[0].status
    );
    assert_eq!(attr(&consumers[0], "error.type"), Some("Flaky".into()));
    assert_eq!(consumers[1].status, Status::Ok);

    // The actor ran inside its consumer span, and the retry carried the same trace_ctx.
    let seen = seen("one-trace");
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (attempt, saw) in seen.iter().enumerate() {
        assert_eq!(saw.trace_id, request_span.trace_id().to_string());
        assert_eq!(saw.span_id, consumers[attempt].span_context.span_id());
        assert_eq!(saw.trace_ctx.as_ref(), Some(trace_ctx));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_outside_any_span_starts_a_trace_and_a_foreign_context_is_continued() {
    let s = setup().await;
    // No current span: the producer span is a root, and its context travels.
    let message = Message::new(&s.queue, "traced", &json!(["root"]), &json!({})).unwrap();
    let sent = s.app.enqueue(message, None).await.expect("enqueued");
    assert!(sent.options.get("trace_ctx").is_some());

    // A message that arrives with a Python producer's context (and baggage) continues it.
    let mut foreign = Message::new(&s.queue, "traced", &json!(["foreign"]), &json!({})).unwrap();
    let python_trace = "5b8aa5a2d2c872e8321cf37308d69df2";
    foreign.options.insert(
        "trace_ctx".into(),
        json!({
            "traceparent": format!("00-{python_trace}-051581bf3cb55c13-01"),
            "baggage": "tenant=acme",
        }),
    );
    s.app
        .broker()
        .enqueue(&mut foreign)
        .await
        .expect("enqueued without the middleware, as Python would");

    let done = dq_test::wait_until_async(Duration::from_secs(20), || async {
        seen("root").len() >= 2 && seen("foreign").len() >= 2
    })
    .await;
    s.worker.stop().await.expect("worker stops");
    assert!(done, "{:?} {:?}", seen("root"), seen("foreign"));

    let producer = &spans_named(&s.exporter, &format!("send {}", s.queue))[0];
    assert_eq!(producer.parent_span_id, SpanId::INVALID);
    assert!(seen("root")
        .iter()
        .all(|saw| saw.trace_id == producer.span_context.trace_id().to_string()));

    let foreign_runs: Vec<SpanData> = spans_named(&s.exporter, &format!("process {}", s.queue))
        .into_iter()
        .filter(|c| attr(c, "messaging.message.id") == Some(foreign.message_id.clone().into()))
        .collect();
    assert_eq!(foreign_runs.len(), 2);
    for run in &foreign_runs {
        assert_eq!(run.span_context.trace_id().to_string(), python_trace);
        assert_eq!(
            run.parent_span_id,
            SpanId::from_hex("051581bf3cb55c13").unwrap()
        );
        assert!(run.parent_span_is_remote);
    }
    // The retry kept the Python producer's carrier as it was, baggage and all.
    for saw in seen("foreign") {
        assert_eq!(saw.trace_id, python_trace);
        assert_eq!(
            saw.trace_ctx.as_ref().and_then(|c| c["baggage"].as_str()),
            Some("tenant=acme")
        );
    }
}
