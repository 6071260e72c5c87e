//! Error reporting to Sentry: the `Sentry` middleware reports a failed actor as Python's
//! sentry-sdk Dramatiq integration does (the actor as transaction, the message id, the message
//! as context), not an error that asks for a retry or one the actor `throws`, and carries
//! Sentry trace headers across the queue in the message option `_sentry_headers`, so a Python
//! producer's trace continues in a dq worker. Needs no services: the in-memory broker, and a
//! transport that prints what a real one would send to Sentry.
//!
//! ```text
//! cargo run -p examples --example sentry
//! ```

use std::sync::Arc;
use std::time::Duration;

use dq::sentry::Sentry;
use sentry_core::protocol::{Context, EnvelopeItem};
use sentry_core::{ClientOptions, Envelope, Hub, Transport};

/// Prints each envelope instead of sending it to sentry.io.
struct Print;

impl Transport for Print {
    fn send_envelope(&self, envelope: Envelope) {
        for item in envelope.items() {
            match item {
                EnvelopeItem::Event(e) => {
                    let error = e
                        .exception
                        .values
                        .first()
                        .map(|x| format!("{}: {}", x.ty, x.value.as_deref().unwrap_or("")))
                        .unwrap_or_default();
                    let trace = match e.contexts.get("trace") {
                        Some(Context::Trace(t)) => t.trace_id.to_string(),
                        _ => String::new(),
                    };
                    println!(
                        "sentry event: {error} in transaction {:?}, trace {trace}, extra {:?}",
                        e.transaction.as_deref().unwrap_or(""),
                        e.extra
                    )
                }
                EnvelopeItem::Transaction(t) => {
                    println!("sentry transaction: {}", t.name.as_deref().unwrap_or(""))
                }
                _ => {}
            }
        }
    }
}

#[derive(Debug)]
struct BadInput;

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the card number has 15 digits")
    }
}

/// Reported: an ordinary failure.
#[dq::actor(queue_name = "dq-example-sentry", max_retries = 0)]
fn charge(order: u64) -> Result<(), std::io::Error> {
    Err(std::io::Error::other(format!(
        "the bank refused order {order}"
    )))
}

/// Not reported: the actor `throws` this error type.
#[dq::actor(queue_name = "dq-example-sentry", max_retries = 0, throws = ["BadInput"])]
fn validate(_order: u64) -> Result<(), BadInput> {
    Err(BadInput)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The application's Sentry set-up. In production:
    //    let _guard = sentry::init(("https://key@o0.ingest.sentry.io/0", sentry::ClientOptions {
    //        traces_sample_rate: 1.0, ..Default::default() }));
    let options = ClientOptions::new()
        .dsn("https://public@sentry.invalid/1")
        .traces_sample_rate(1.0)
        .transport(|_: &ClientOptions| Arc::new(Print) as Arc<dyn Transport>);
    Hub::main().bind_client(Some(Arc::new(options.into())));

    // 2. The middleware, first, on the producer's and the worker's app.
    let app = dq::App::builder(dq::StubBroker::new())
        .middleware(Sentry::new())
        .middleware_arcs(dq::middleware::default_middleware())
        .build()?;
    app.set_global();

    // 3. A Python producer's message: its `_sentry_headers` continue its trace here (the
    //    event below is in trace 771a43a4...).
    let mut from_python = charge::message(7)?.into_message();
    from_python.options.insert(
        "_sentry_headers".into(),
        serde_json::json!({
            "sentry-trace": "771a43a4192642f0b136d5159a501700-b7ad6b7169203331-1",
            "baggage": null
        }),
    );
    // Straight to the broker, as a Python producer's message arrives.
    app.broker().enqueue(&mut from_python).await?;
    validate::send(8).await?;

    dq::Worker::new(app, dq::WorkerOptions::default())
        .run_until_drained(Duration::from_secs(30))
        .await?;
    if let Some(client) = Hub::main().client() {
        client.flush(Some(Duration::from_secs(5)));
    }
    println!("done: one event (charge), two transactions");
    Ok(())
}
