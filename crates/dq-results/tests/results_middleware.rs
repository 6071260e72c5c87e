//! The Results middleware in a worker: what is stored when, and for how long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dq_broker_stub::{JoinOptions, StubBroker};
use dq_core::{
    async_trait, ActorError, App, Control, FailureKind, Hooks, Job, Message, Middleware,
    MiddlewareError,
};
use dq_results::{Error, MemoryBackend, MessageResult, ResultBackend, Results};
use serde_json::{json, Value};

use crate::support::{actor, app, results, worker, RedisNamespace};

sync_handler!(add, |x: i64, y: i64| Ok(json!(x + y)));

static ATTEMPTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

fn attempt(tag: &str) -> u32 {
    let mut a = ATTEMPTS.lock().unwrap();
    let n = a
        .get_or_insert_with(HashMap::new)
        .entry(tag.to_owned())
        .or_default();
    *n += 1;
    *n
}

fn attempts(tag: &str) -> u32 {
    ATTEMPTS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|a| a.get(tag).copied())
        .unwrap_or(0)
}

// Fails `failures` times, then returns 42.
sync_handler!(flaky, |tag: String, failures: u32| {
    if attempt(&tag) <= failures {
        Err(ActorError::new(
            FailureKind::Error,
            "ValueError",
            format!("attempt of {tag}"),
        ))
    } else {
        Ok(json!(42))
    }
});

sync_handler!(nothing, || Ok(Value::Null));

/// Skips messages for actor `skipped` without failing them.
struct SkipAll;

#[async_trait]
impl Middleware for SkipAll {
    fn name(&self) -> &str {
        "SkipAll"
    }
    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_PROCESS
    }
    async fn before_process(&self, _: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        Ok(if job.message.actor_name == "skipped" {
            Control::Skip
        } else {
            Control::Continue
        })
    }
}

fn retry_fast(m: &mut Message, max_retries: u32, min_backoff_ms: u64) {
    m.options.insert("max_retries".into(), json!(max_retries));
    m.options
        .insert("min_backoff".into(), json!(min_backoff_ms));
    m.options
        .insert("max_backoff".into(), json!(min_backoff_ms * 4));
}

async fn check_what_is_stored(backend: Arc<dyn ResultBackend>) {
    let q = dq_test::unique_name("results-mw");
    let broker = StubBroker::new();
    let app = app(
        &broker,
        vec![Arc::new(SkipAll), results(&backend)],
        vec![
            actor("add", &q, add, |_| {}),
            actor("flaky", &q, flaky, |_| {}),
            actor("skipped", &q, nothing, |_| {}),
            actor("nothing", &q, nothing, |_| {}),
        ],
    );
    let w = worker(&app, 4).await;
    let wait = Some(Duration::from_secs(20));

    // Success: the return value, typed.
    let m = app
        .enqueue(Message::new(&q, "add", &(1, 2), &()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(m.get_result::<i64>(&*backend, true, wait).await.unwrap(), 3);

    // A failure that will be retried stores nothing; the final dead-letter stores the error.
    let tag = dq_test::unique_name("always");
    let mut m = Message::new(&q, "flaky", &(&tag, 100), &()).unwrap();
    retry_fast(&mut m, 2, 300);
    let m = app.enqueue(m, None).await.unwrap();
    assert!(
        dq_test::wait_until_async(Duration::from_secs(10), || async { attempts(&tag) >= 1 }).await
    );
    let e = m
        .get_result::<i64>(&*backend, false, None)
        .await
        .unwrap_err();
    assert!(e.is_missing(), "after the first attempt: {e}");
    match m
        .get_result::<i64>(&*backend, true, wait)
        .await
        .unwrap_err()
    {
        Error::Failure {
            type_name, message, ..
        } => {
            assert_eq!(type_name, "ValueError");
            assert_eq!(message, format!("attempt of {tag}"));
        }
        other => panic!("expected a failure, got {other}"),
    }
    assert_eq!(attempts(&tag), 3, "max_retries 2 means 3 runs");

    // A message that failed, then succeeded on retry, stores its success.
    let tag = dq_test::unique_name("once");
    let mut m = Message::new(&q, "flaky", &(&tag, 1), &()).unwrap();
    retry_fast(&mut m, 3, 20);
    let m = app.enqueue(m, None).await.unwrap();
    assert_eq!(
        m.get_result::<i64>(&*backend, true, wait).await.unwrap(),
        42
    );
    assert_eq!(attempts(&tag), 2);

    // Skipped but not failed: null.
    let m = app
        .enqueue(Message::new(&q, "skipped", &(), &()).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        m.get_result::<Option<i64>>(&*backend, true, wait)
            .await
            .unwrap(),
        None
    );

    // Skipped and failed (AgeLimit): SkipMessage, as Dramatiq stores it.
    let mut m = Message::new(&q, "add", &(1, 1), &()).unwrap();
    m.options.insert("max_age".into(), json!(1000));
    m.message_timestamp -= 60_000;
    let m = app.enqueue(m, None).await.unwrap();
    match m
        .get_result::<i64>(&*backend, true, wait)
        .await
        .unwrap_err()
    {
        Error::Failure { type_name, .. } => assert_eq!(type_name, "SkipMessage"),
        other => panic!("expected a failure, got {other}"),
    }

    // Arguments that do not decode are dead-lettered at once, and say so.
    let m = app
        .enqueue(Message::new(&q, "add", &("one", 2), &()).unwrap(), None)
        .await
        .unwrap();
    match m
        .get_result::<i64>(&*backend, true, wait)
        .await
        .unwrap_err()
    {
        Error::Failure {
            type_name, message, ..
        } => {
            assert_eq!(type_name, "Exception");
            assert!(message.contains("invalid arguments"), "{message}");
        }
        other => panic!("expected a failure, got {other}"),
    }

    // An actor this worker does not know stores nothing, even when the message asks to.
    let mut ghost = Message::new(&q, "ghost", &(), &()).unwrap();
    ghost.options.insert("store_results".into(), json!(true));
    let ghost = app.enqueue(ghost, None).await.unwrap();
    // The per-message option also turns storing off for an actor that stores by default.
    let mut quiet = Message::new(&q, "add", &(2, 2), &()).unwrap();
    quiet.options.insert("store_results".into(), json!(false));
    let quiet = app.enqueue(quiet, None).await.unwrap();
    let joined = broker
        .join_with(&q, JoinOptions::default().fail_fast(false).timeout(wait))
        .await;
    assert!(joined.is_ok(), "{joined:?}");
    let dead = dq_core::Broker::stats(&broker, &q).await.unwrap().dead;
    assert!(
        dead >= 4,
        "ghost, the exhausted, aged and undecodable messages: {dead}"
    );
    for m in [&ghost, &quiet] {
        let e = m
            .get_result::<Value>(&*backend, false, None)
            .await
            .unwrap_err();
        assert!(e.is_missing(), "{}: {e}", m.actor_name);
    }
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_stores_what_dramatiq_stores() {
    check_what_is_stored(Arc::new(MemoryBackend::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_stores_what_dramatiq_stores() {
    let ns = RedisNamespace::new("results-mw");
    check_what_is_stored(Arc::new(ns.readable())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_results_and_result_ttl_defaults_actor_and_message() {
    let ns = RedisNamespace::new("results-ttl");
    let backend: Arc<dyn ResultBackend> = Arc::new(ns.readable());
    let q = dq_test::unique_name("results-ttl");
    let broker = StubBroker::new();
    let mw: Arc<dyn Middleware> = Arc::new(
        Results::from_arc(backend.clone())
            .with_store_results(true)
            .with_result_ttl(Duration::from_secs(50)),
    );
    let app = app(
        &broker,
        vec![mw],
        vec![
            // Stores because the middleware's default says so.
            actor("by_default", &q, add, |o| o.store_results = None),
            actor("short_lived", &q, add, |o| o.result_ttl = Some(20_000)),
        ],
    );
    let w = worker(&app, 2).await;
    let send = |actor: &str, ttl: Option<u64>| {
        let mut m = Message::new(&q, actor, &(1, 1), &()).unwrap();
        if let Some(ttl) = ttl {
            m.options.insert("result_ttl".into(), json!(ttl));
        }
        let app = app.clone();
        async move { app.enqueue(m, None).await.unwrap() }
    };
    let cases = [
        (send("by_default", None).await, 50_000),
        (send("short_lived", None).await, 20_000),
        (send("short_lived", Some(10_000)).await, 10_000),
    ];
    let mut redis = ns.client();
    for (m, ttl) in cases {
        let r: i64 = m
            .get_result(&*backend, true, Some(Duration::from_secs(20)))
            .await
            .unwrap();
        assert_eq!(r, 2);
        let pttl: i64 = redis::cmd("PTTL")
            .arg(backend.message_key(&m))
            .query(&mut redis)
            .unwrap();
        assert!(pttl <= ttl && pttl > ttl - 10_000, "{pttl} for {ttl}");
    }
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_default_ttl_is_ten_minutes_and_storing_is_opt_in() {
    let ns = RedisNamespace::new("results-default");
    let backend: Arc<dyn ResultBackend> = Arc::new(ns.readable());
    let q = dq_test::unique_name("results-default");
    let broker = StubBroker::new();
    let app = app(
        &broker,
        vec![results(&backend)],
        vec![
            actor("add", &q, add, |_| {}),
            actor("unstored", &q, add, |o| o.store_results = None),
        ],
    );
    let w = worker(&app, 2).await;
    let stored = app
        .enqueue(Message::new(&q, "add", &(1, 1), &()).unwrap(), None)
        .await
        .unwrap();
    let unstored = app
        .enqueue(Message::new(&q, "unstored", &(1, 1), &()).unwrap(), None)
        .await
        .unwrap();
    broker
        .join(&q, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(
        stored
            .get_result::<i64>(&*backend, false, None)
            .await
            .unwrap(),
        2
    );
    let e = unstored
        .get_result::<i64>(&*backend, false, None)
        .await
        .unwrap_err();
    assert!(e.is_missing(), "{e}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(backend.message_key(&stored))
        .query(&mut ns.client())
        .unwrap();
    assert!(pttl <= 600_000 && pttl > 590_000, "{pttl}");
    w.stop().await.unwrap();
}

/// A short `result_ttl` (the actor's, then overridden by the message's): the result is there,
/// then reads as missing once it expired, and a blocking read times out.
async fn check_expiry(backend: Arc<dyn ResultBackend>) {
    let q = dq_test::unique_name("results-expiry");
    let broker = StubBroker::new();
    let app = app(
        &broker,
        vec![results(&backend)],
        vec![actor("add", &q, add, |o| o.result_ttl = Some(400))],
    );
    let w = worker(&app, 2).await;
    let by_actor = app
        .enqueue(Message::new(&q, "add", &(2, 3), &()).unwrap(), None)
        .await
        .unwrap();
    let mut by_message = Message::new(&q, "add", &(3, 4), &()).unwrap();
    by_message
        .options
        .insert("result_ttl".into(), json!(60_000));
    let by_message = app.enqueue(by_message, None).await.unwrap();
    let wait = Some(Duration::from_secs(20));
    assert_eq!(
        by_actor
            .get_result::<i64>(&*backend, true, wait)
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        by_message
            .get_result::<i64>(&*backend, true, wait)
            .await
            .unwrap(),
        7
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let e = by_actor
        .get_result::<i64>(&*backend, false, None)
        .await
        .unwrap_err();
    assert!(e.is_missing(), "{e}");
    let e = by_actor
        .get_result::<i64>(&*backend, true, Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(
        by_message
            .get_result::<i64>(&*backend, false, None)
            .await
            .unwrap(),
        7,
        "the message's own result_ttl wins over the actor's"
    );
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_results_expire_after_result_ttl() {
    check_expiry(Arc::new(MemoryBackend::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_results_expire_after_result_ttl() {
    let ns = RedisNamespace::new("results-expiry");
    check_expiry(Arc::new(ns.readable())).await;
}
