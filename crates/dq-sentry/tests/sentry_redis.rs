//! What reaches Sentry from a worker: failures as Python's integration reports them, nothing
//! for retry-style and `throws` errors, and traces continued from `_sentry_headers`.

use std::sync::Arc;
use std::time::Duration;

use dq_broker_redis::RedisBroker;
use dq_core::{Actor, ActorError, ActorOptions, App, FailureKind, Message};
use dq_sentry::Sentry;
use dq_worker::{Worker, WorkerOptions};
use sentry_core::protocol::{Context, EnvelopeItem, Event, Transaction};
use sentry_core::test::TestTransport;
use sentry_core::{ClientOptions, Hub, TransactionContext};
use serde_json::json;

dq_test::sync_handler!(fails, |why: String| Err(ActorError::new(
    FailureKind::Error,
    "ValueError",
    why
)));
dq_test::sync_handler!(retries_later, || Err(ActorError::new(
    FailureKind::Retry(None),
    "Retry",
    "later"
)));
dq_test::sync_handler!(bad_input, || Err(ActorError::new(
    FailureKind::Error,
    "BadInput",
    "thrown, not reported"
)));
dq_test::sync_handler!(succeeds, || Ok(json!(1)));

struct Setup {
    app: App,
    worker: Worker,
    transport: Arc<TestTransport>,
    hub: Arc<Hub>,
    queue: String,
}

async fn setup() -> Setup {
    let queue = dq_test::unique_name("sentry");
    let transport = TestTransport::new();
    let options = ClientOptions::new()
        .dsn("https://public@sentry.invalid/1")
        .transport(transport.clone())
        .traces_sample_rate(1.0);
    let hub = Arc::new(Hub::new(
        Some(Arc::new(options.into())),
        Arc::new(Default::default()),
    ));
    let broker = RedisBroker::builder()
        .url(dq_test::require_redis())
        .namespace(dq_test::unique_name("sentry-ns"))
        .build()
        .await
        .expect("Redis broker");
    let opts = |throws: &[&str]| ActorOptions {
        queue_name: queue.clone(),
        max_retries: Some(Some(0)),
        throws: throws.iter().map(|s| s.to_string()).collect(),
        ..ActorOptions::default()
    };
    let app = App::builder(broker)
        .without_linked_actors()
        .middleware(Sentry::with_hub(hub.clone()))
        .middleware_arcs(dq_middleware::default_middleware())
        .actor(Actor::new("fails", opts(&[]), fails))
        .actor(Actor::new("retries_later", opts(&[]), retries_later))
        .actor(Actor::new(
            "bad_input",
            opts(&["my_app::BadInput"]),
            bad_input,
        ))
        .actor(Actor::new("succeeds", opts(&[]), succeeds))
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
        transport,
        hub,
        queue,
    }
}

impl Setup {
    /// Sends through the broker alone, as a foreign producer would.
    async fn send_raw(
        &self,
        actor: &str,
        args: serde_json::Value,
        options: serde_json::Value,
    ) -> Message {
        let mut m = Message::new(&self.queue, actor, &args, &json!({})).expect("message");
        if let serde_json::Value::Object(o) = options {
            m.options.extend(o);
        }
        self.app.broker().enqueue(&mut m).await.expect("enqueued");
        m
    }

    /// Waits until `n` transactions were sent, then stops the worker and returns what was
    /// captured: the events and the transactions.
    async fn finish(self, n: usize) -> (Vec<Event<'static>>, Vec<Transaction<'static>>) {
        let mut envelopes = Vec::new();
        let count = |envs: &Vec<sentry_core::Envelope>| {
            envs.iter()
                .flat_map(|e| e.items())
                .filter(|i| matches!(i, EnvelopeItem::Transaction(_)))
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while count(&envelopes) < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            envelopes.extend(self.transport.fetch_and_clear_envelopes());
        }
        self.worker.stop().await.expect("worker stops");
        envelopes.extend(self.transport.fetch_and_clear_envelopes());
        assert_eq!(count(&envelopes), n, "transactions sent");
        let mut events = Vec::new();
        let mut transactions = Vec::new();
        for item in envelopes.iter().flat_map(|e| e.items()) {
            match item {
                EnvelopeItem::Event(e) => events.push((**e).clone()),
                EnvelopeItem::Transaction(t) => transactions.push((**t).clone()),
                _ => {}
            }
        }
        (events, transactions)
    }
}

fn trace_id(event: &Event<'static>) -> String {
    match event.contexts.get("trace") {
        Some(Context::Trace(t)) => t.trace_id.to_string(),
        other => panic!("no trace context: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_as_python_reports_them_and_retry_style_errors_are_not() {
    let s = setup().await;
    let failed = s.send_raw("fails", json!(["boom"]), json!({})).await;
    s.send_raw("retries_later", json!([]), json!({})).await;
    s.send_raw("bad_input", json!([]), json!({})).await;
    s.send_raw("succeeds", json!([]), json!({})).await;
    let (events, transactions) = s.finish(4).await;

    assert_eq!(
        events.len(),
        1,
        "only the plain failure is reported: {events:#?}"
    );
    let event = &events[0];
    assert_eq!(event.transaction.as_deref(), Some("fails"));
    assert_eq!(event.extra["dramatiq_message_id"], json!(failed.message_id));
    let exception = &event.exception.values[0];
    assert_eq!(exception.ty, "ValueError");
    assert_eq!(exception.value.as_deref(), Some("boom"));
    let mechanism = exception.mechanism.as_ref().expect("mechanism");
    assert_eq!(
        (mechanism.ty.as_str(), mechanism.handled),
        ("dramatiq", Some(false))
    );
    match event.contexts.get("dramatiq") {
        Some(Context::Other(c)) => {
            assert_eq!(c["type"], json!("dramatiq"));
            assert_eq!(c["data"]["message_id"], json!(failed.message_id));
            assert_eq!(c["data"]["actor_name"], json!("fails"));
            assert_eq!(c["data"]["args"], json!(["boom"]));
        }
        other => panic!("dramatiq context: {other:?}"),
    }
    let mut names: Vec<&str> = transactions
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["bad_input", "fails", "retries_later", "succeeds"]);
    for t in &transactions {
        match t.contexts.get("trace") {
            Some(Context::Trace(c)) => assert_eq!(c.op.as_deref(), Some("queue.task.dramatiq")),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_trace_headers_continue_across_the_queue_except_for_retries() {
    let s = setup().await;
    let python_trace = "771a43a4192642f0b136d5159a501700";
    let headers = json!({"_sentry_headers": {
        "sentry-trace": format!("{python_trace}-b7ad6b7169203331-1"),
        "baggage": null,
    }});
    s.send_raw("fails", json!(["continued"]), headers.clone())
        .await;
    let mut retried = headers.clone();
    retried["retries"] = json!(1);
    s.send_raw("fails", json!(["retried"]), retried).await;

    // A dq producer inside a transaction writes its trace into the message.
    let producer_tx = s
        .hub
        .start_transaction(TransactionContext::new("POST /orders", "http.server"));
    s.hub
        .configure_scope(|scope| scope.set_span(Some(producer_tx.clone().into())));
    let hub = s.hub.clone();
    let app = s.app.clone();
    let queue = s.queue.clone();
    let sent = tokio::task::spawn_blocking(move || {
        Hub::run(hub, || {
            let m = Message::new(&queue, "succeeds", &json!([]), &json!({})).unwrap();
            tokio::runtime::Handle::current().block_on(app.enqueue(m, None))
        })
    })
    .await
    .expect("producer thread")
    .expect("enqueued");
    let producer_trace = producer_tx.get_trace_context().trace_id.to_string();
    let written = sent.options["_sentry_headers"]["sentry-trace"]
        .as_str()
        .expect("sentry-trace written");
    assert!(
        written.starts_with(&format!("{producer_trace}-")),
        "{written}"
    );
    assert_eq!(sent.options["_sentry_headers"]["baggage"], json!(null));
    producer_tx.finish();

    let (events, transactions) = s.finish(4).await;
    let by_arg = |arg: &str| {
        events
            .iter()
            .find(|e| match e.contexts.get("dramatiq") {
                Some(Context::Other(c)) => c["data"]["args"] == json!([arg]),
                _ => false,
            })
            .unwrap_or_else(|| panic!("an event for {arg}: {events:#?}"))
    };
    assert_eq!(trace_id(by_arg("continued")), python_trace);
    assert_ne!(
        trace_id(by_arg("retried")),
        python_trace,
        "a retry starts a new trace"
    );
    let run = transactions
        .iter()
        .find(|t| t.name.as_deref() == Some("succeeds"))
        .expect("the run of the dq producer's message");
    match run.contexts.get("trace") {
        Some(Context::Trace(c)) => assert_eq!(c.trace_id.to_string(), producer_trace),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_keeps_its_producers_trace() {
    let s = setup().await;
    let python_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut m = Message::new(&s.queue, "fails", &json!(["delayed"]), &json!({})).unwrap();
    m.options.insert(
        "_sentry_headers".into(),
        json!({"sentry-trace": format!("{python_trace}-b7ad6b7169203331-1"), "baggage": null}),
    );
    // Through the app outside any transaction, then moved from the delay queue by the worker:
    // neither enqueue writes its own trace over the message's.
    let sent = s
        .app
        .enqueue(m, Some(Duration::from_millis(50)))
        .await
        .expect("enqueued");
    assert_eq!(
        sent.options["_sentry_headers"]["sentry-trace"],
        json!(format!("{python_trace}-b7ad6b7169203331-1"))
    );
    let (events, _) = s.finish(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(trace_id(&events[0]), python_trace);
}
