//! The Prometheus middleware in a real worker (on the in-memory broker): every series, at the
//! moments Python Dramatiq counts them, with Python's bugs fixed.

use std::sync::OnceLock;
use std::time::Duration;

use dq_broker_stub::{JoinOptions, StubBroker};
use dq_core::{
    Actor, ActorError, ActorOptions, App, ArgsError, FailureKind, Invocation, Message, States,
};
use dq_metrics::{names, Prometheus, Recorder, Snapshot};
use dq_worker::{Worker, WorkerOptions};
use serde_json::{json, Value};

/// One global recorder for the whole test binary: each test uses its own queue names.
fn recorder() -> &'static Recorder {
    static R: OnceLock<Recorder> = OnceLock::new();
    R.get_or_init(|| {
        let r = Recorder::default();
        r.clone().install().expect("first install");
        r
    })
}

fn ok(_: &Message, _: &States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        std::thread::sleep(Duration::from_millis(20));
        Ok(Value::Null)
    })))
}

fn fail(_: &Message, _: &States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        Err(ActorError::new(FailureKind::Error, "ValueError", "boom"))
    })))
}

fn actor(name: &str, queue: &str, handler: dq_core::Handler, retries: u32) -> Actor {
    Actor::new(
        name.to_owned(),
        ActorOptions {
            queue_name: queue.to_owned(),
            max_retries: Some(Some(retries)),
            min_backoff: Some(10),
            max_backoff: Some(20),
            ..Default::default()
        },
        handler,
    )
}

/// Waits for the queue to drain; dead letters are expected.
async fn join(broker: &StubBroker, queue: &str) {
    broker
        .join_with(
            queue,
            JoinOptions::default()
                .fail_fast(false)
                .timeout(Duration::from_secs(20)),
        )
        .await
        .unwrap();
}

fn labels<'a>(queue: &'a str, actor: &'a str) -> [(&'a str, &'a str); 2] {
    [("queue_name", queue), ("actor_name", actor)]
}

fn scalar(s: &Snapshot, name: &str, queue: &str, actor: &str) -> f64 {
    s.scalar(name, &labels(queue, actor)).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_records_dramatiqs_series_at_dramatiqs_moments() {
    let recorder = recorder();
    let q = "prom_worker_series";
    let dq = format!("{q}.DQ");
    let broker = StubBroker::new();
    let app = App::builder(broker.clone())
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .middleware(Prometheus::default())
        .actor(actor("prom_ok", q, ok, 0))
        .actor(actor("prom_fail", q, fail, 1))
        .build()
        .unwrap();
    let worker = Worker::new(
        app.clone(),
        WorkerOptions {
            threads: 2,
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    worker.start().await.unwrap();
    for _ in 0..3 {
        app.enqueue(
            Message::new(q, "prom_ok", &json!([]), &json!({})).unwrap(),
            None,
        )
        .await
        .unwrap();
    }
    // Delayed: held by the worker, then moved to its queue and run.
    let delayed = Message::new(q, "prom_ok", &json!([]), &json!({})).unwrap();
    app.enqueue(delayed, Some(Duration::from_millis(200)))
        .await
        .unwrap();
    // Fails, is retried once (through the delay queue), fails again, is dead-lettered.
    app.enqueue(
        Message::new(q, "prom_fail", &json!([]), &json!({})).unwrap(),
        None,
    )
    .await
    .unwrap();
    join(&broker, q).await;
    worker.stop().await.unwrap();

    let s = recorder.snapshot();
    assert_eq!(scalar(&s, names::MESSAGES_TOTAL, q, "prom_ok"), 4.0);
    assert_eq!(scalar(&s, names::MESSAGES_TOTAL, q, "prom_fail"), 2.0);
    assert_eq!(scalar(&s, names::MESSAGE_ERRORS_TOTAL, q, "prom_ok"), 0.0);
    assert_eq!(scalar(&s, names::MESSAGE_ERRORS_TOTAL, q, "prom_fail"), 2.0);
    // Once, under the delay queue's name, as Python's first count; not again when the due
    // retry is moved to its queue (Python's second count).
    assert_eq!(
        scalar(&s, names::MESSAGE_RETRIES_TOTAL, &dq, "prom_fail"),
        1.0
    );
    assert_eq!(
        s.scalar(names::MESSAGE_RETRIES_TOTAL, &labels(q, "prom_fail")),
        None
    );
    assert_eq!(
        scalar(&s, names::MESSAGE_REJECTS_TOTAL, q, "prom_fail"),
        1.0
    );
    assert_eq!(scalar(&s, names::MESSAGE_REJECTS_TOTAL, q, "prom_ok"), 0.0);
    // Gauges back to zero, each under the labels it went up under.
    assert_eq!(scalar(&s, names::MESSAGES_INPROGRESS, q, "prom_ok"), 0.0);
    assert_eq!(
        scalar(&s, names::DELAYED_MESSAGES_INPROGRESS, &dq, "prom_ok"),
        0.0
    );
    assert_eq!(
        scalar(&s, names::DELAYED_MESSAGES_INPROGRESS, &dq, "prom_fail"),
        0.0
    );
    assert_eq!(
        s.scalar(names::DELAYED_MESSAGES_INPROGRESS, &labels(q, "prom_ok")),
        None,
        "never under the base queue's name"
    );
    let h = s
        .histogram(names::MESSAGE_DURATION_MILLISECONDS, &labels(q, "prom_ok"))
        .unwrap();
    assert_eq!(h.count(), 4);
    assert!(h.sum >= 80.0, "4 runs of 20 ms: {}", h.sum);
    assert_eq!(h.counts[0], 0, "none under 5 ms");
    assert_eq!(h.bounds, names::DURATION_BUCKETS);

    let text = s.render();
    for line in [
        "# HELP dramatiq_messages_total The total number of messages processed.",
        "# TYPE dramatiq_messages_total counter",
        "# TYPE dramatiq_message_duration_milliseconds histogram",
        &format!(r#"dramatiq_messages_total{{actor_name="prom_ok",queue_name="{q}"}} 4.0"#),
        &format!(
            r#"dramatiq_message_duration_milliseconds_bucket{{actor_name="prom_ok",le="+Inf",queue_name="{q}"}} 4.0"#
        ),
        &format!(
            r#"dramatiq_message_duration_milliseconds_count{{actor_name="prom_ok",queue_name="{q}"}} 4.0"#
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\nnot in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_skipped_before_the_middleware_saw_it_counts_without_a_negative_gauge() {
    let recorder = recorder();
    let q = "prom_worker_skip";
    let broker = StubBroker::new();
    let app = App::builder(broker.clone())
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .middleware(Prometheus::default())
        .actor(actor("prom_old", q, ok, 0))
        .build()
        .unwrap();
    let worker = Worker::new(app.clone(), WorkerOptions::default());
    worker.start().await.unwrap();
    // AgeLimit (before Prometheus in the stack) skips it and dead-letters it.
    let mut m = Message::new(q, "prom_old", &json!([]), &json!({})).unwrap();
    m.options.insert("max_age".into(), json!(1));
    m.message_timestamp -= 60_000;
    app.enqueue(m, None).await.unwrap();
    join(&broker, q).await;
    worker.stop().await.unwrap();

    let s = recorder.snapshot();
    assert_eq!(scalar(&s, names::MESSAGES_TOTAL, q, "prom_old"), 1.0);
    assert_eq!(scalar(&s, names::MESSAGE_ERRORS_TOTAL, q, "prom_old"), 0.0);
    assert_eq!(scalar(&s, names::MESSAGE_REJECTS_TOTAL, q, "prom_old"), 1.0);
    assert_eq!(
        s.scalar(names::MESSAGES_INPROGRESS, &labels(q, "prom_old")),
        None,
        "Python would show -1"
    );
    let h = s
        .histogram(names::MESSAGE_DURATION_MILLISECONDS, &labels(q, "prom_old"))
        .unwrap();
    assert_eq!((h.count(), h.sum), (1, 0.0));
}
