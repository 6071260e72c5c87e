//! Typed sends and pipelines against a real worker and real result stores (in memory, and Redis
//! in a namespace of its own): results read back as the actors' return types, a three-stage
//! pipeline checked at compile time, and a failed actor told apart from a missing result.

use std::fmt;
use std::time::Duration;

use dq::{
    pipe, App, ResultError, ResultSource, SendOptions, Sent, StubBroker, Worker, WorkerOptions,
};
use dq_results::{MemoryBackend, RedisBackend, ResultBackend, Results};

/// Long enough for any result of this test to arrive; reads end as soon as it does.
const WAIT: Duration = Duration::from_secs(20);

/// The failure of `scale`.
#[derive(Debug)]
struct Overflow(i64, i64);

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} * {} overflows", self.0, self.1)
    }
}

#[dq::actor(queue_name = "typed", store_results = true, result_ttl = 60_000)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[dq::actor(
    queue_name = "typed",
    store_results = true,
    result_ttl = 60_000,
    throws = [Overflow]
)]
async fn scale(factor: i64, x: i64) -> Result<i64, Overflow> {
    tokio::task::yield_now().await;
    factor.checked_mul(x).ok_or(Overflow(factor, x))
}

#[dq::actor(queue_name = "typed", store_results = true, result_ttl = 60_000)]
fn describe(label: String, x: i64) -> String {
    format!("{label}={x}")
}

#[dq::actor(queue_name = "typed", store_results = true, result_ttl = 60_000)]
fn forget(_key: String) {}

/// An app on a fresh stub broker storing results in `backend`, and its started worker.
async fn start(backend: impl ResultBackend) -> (App, Worker) {
    let app = dq::app(StubBroker::new())
        .middleware(Results::new(backend))
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
    (app, worker)
}

async fn check_typed_results<B: ResultBackend + ResultSource + Clone>(backend: B) {
    let (app, worker) = start(backend.clone()).await;

    // Send, then read the result as the actor's return type.
    let sent: Sent<i64> = add::send_to(&app, 1, 2).await.unwrap();
    assert_eq!(sent.wait_result(&backend, WAIT).await.unwrap(), 3);
    // Once stored, a look without waiting finds it too.
    assert_eq!(sent.result(&backend).await.unwrap(), 3);
    // A unit actor's result is `()`.
    let done: Sent<()> = app.scope(forget::send("k".into())).await.unwrap();
    done.wait_result(&backend, WAIT).await.unwrap();

    // Three stages, each taking the one before's result as its last argument.
    let pipeline = pipe(add::message(1, 2).unwrap())
        .then(scale::piped(10).unwrap())
        .then(describe::piped("total".into()).unwrap());
    let sent = pipeline.run_with(&app, None).await.unwrap();
    let total: String = sent.wait_result(&backend, WAIT).await.unwrap();
    assert_eq!(total, "total=30");
    // Every stage stored its own result.
    let second = Sent::<i64>::from_message(sent.messages()[1].clone());
    assert_eq!(second.result(&backend).await.unwrap(), 30);

    // Through the current app, as `send` goes.
    let sent = app
        .scope(pipe(scale::message(2, 21).unwrap()).run())
        .await
        .unwrap();
    assert_eq!(sent.wait_result(&backend, WAIT).await.unwrap(), 42);

    // A failed actor is `Failed`, with its error's type and text.
    let failed = scale::send_to(&app, i64::MAX, 2).await.unwrap();
    match failed.wait_result(&backend, WAIT).await {
        Err(ResultError::Failed {
            message_id,
            type_name,
            message,
        }) => {
            assert_eq!(message_id, failed.message_id);
            assert_eq!(type_name, "Overflow");
            assert_eq!(message, format!("{} * 2 overflows", i64::MAX));
        }
        other => panic!("expected the actor's failure, got {other:?}"),
    }
    // It converts into `dq::Error` and stays distinguishable there.
    let e: dq::Error = failed.result(&backend).await.unwrap_err().into();
    assert!(matches!(&e, dq::Error::Result(r) if r.is_failed()), "{e}");

    // A pipeline whose middle stage fails: that stage's result is the failure, and the last
    // stage never runs, so its result is missing (not failed).
    let sent = pipe(add::message(i64::MAX, 0).unwrap())
        .then(scale::piped(2).unwrap())
        .then(describe::piped("never".into()).unwrap())
        .run_with(&app, None)
        .await
        .unwrap();
    let middle = Sent::<i64>::from_message(sent.messages()[1].clone());
    let e = middle.wait_result(&backend, WAIT).await.unwrap_err();
    assert!(e.is_failed(), "{e}");
    let e = sent.result(&backend).await.unwrap_err();
    assert!(e.is_missing(), "{e}");

    // A message still delayed has no result yet: missing without waiting, a timeout with.
    let later = app
        .scope(add::send_with_options(
            5,
            5,
            SendOptions::new().delay(Duration::from_secs(3600)),
        ))
        .await
        .unwrap();
    assert!(later.result(&backend).await.unwrap_err().is_missing());
    let e = later
        .wait_result(&backend, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(e, ResultError::Timeout { .. }), "{e}");

    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_results_in_memory() {
    check_typed_results(MemoryBackend::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_results_in_redis() {
    // Dramatiq's hashed keys in a namespace no other run uses; they expire with `result_ttl`.
    let backend = RedisBackend::builder()
        .url(&dq_test::require_redis())
        .namespace(&dq_test::unique_name("dq-typed"))
        .build()
        .unwrap();
    check_typed_results(backend).await;
}

#[test]
fn blocking_sends_are_typed_too() {
    let app = dq::app(StubBroker::new()).build().unwrap();
    let sent: Sent<String> = app
        .enter(|| describe::send_blocking("n".into(), 1))
        .unwrap();
    assert_eq!(sent.args.get(), r#"["n",1]"#);
}
