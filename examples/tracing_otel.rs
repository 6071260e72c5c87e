//! Traces across the queue with OpenTelemetry: a web request's span, the enqueue of a message
//! (a PRODUCER span) and the actor's run in the worker (a CONSUMER span, continued from the
//! message's `trace_ctx` option) form one trace, and the actor's own spans join it. The same
//! `trace_ctx` is what Python producers and workers instrumented with OpenTelemetry read and
//! write. Needs no services: the in-memory broker, and the SDK's in-memory exporter standing in
//! for an OTLP one, so the example can print the trace.
//!
//! ```text
//! cargo run -p examples --example tracing_otel
//! ```

use std::time::Duration;

use dq::otel::OpenTelemetry;
use opentelemetry::trace::{FutureExt, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{global, Context};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

/// The actor: its own span is a child of the consumer span dq opens for the run.
#[dq::actor(queue_name = "dq-example-otel")]
async fn charge(order: u64) {
    let tracer = global::tracer("shop");
    tracer.in_span("talk to the bank", |_cx| {
        println!("charging order {order}");
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The application's OpenTelemetry set-up. In production: an OTLP exporter
    //    (opentelemetry-otlp) with a batch processor, pointed at your collector.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    global::set_tracer_provider(provider.clone());

    // 2. The OpenTelemetry middleware, on the producer's and the worker's app (one app here).
    let app = dq::app(dq::StubBroker::new())
        .middleware(OpenTelemetry::new())
        .build()?;
    app.set_global();
    let worker = dq::Worker::new(app.clone(), dq::WorkerOptions::default());
    worker.start().await?;

    // 3. A request handler sends a message inside its span: the context travels with it.
    let tracer = provider.tracer("web");
    let request = tracer.start("POST /orders");
    let cx = Context::current_with_span(request);
    let sent = charge::send(42).with_context(cx.clone()).await?;
    cx.span().end();
    println!(
        "sent {} with trace_ctx {}",
        sent.message_id, sent.options["trace_ctx"]
    );

    // 4. Wait for the run, then print the trace as the exporter got it.
    for _ in 0..500 {
        let done = exporter.get_finished_spans()?.len() >= 4;
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.stop().await?;
    provider.force_flush()?;
    let mut spans = exporter.get_finished_spans()?;
    spans.sort_by_key(|s| s.start_time);
    for span in &spans {
        println!(
            "trace {} span {} parent {} {:?} {:?}",
            span.span_context.trace_id(),
            span.span_context.span_id(),
            span.parent_span_id,
            span.span_kind,
            span.name
        );
    }
    let trace = spans.first().map(|s| s.span_context.trace_id());
    assert!(
        spans.len() == 4
            && spans
                .iter()
                .all(|s| Some(s.span_context.trace_id()) == trace),
        "one trace: the request, the send, the run and the actor's span"
    );
    println!("one trace, {} spans", spans.len());
    Ok(())
}
