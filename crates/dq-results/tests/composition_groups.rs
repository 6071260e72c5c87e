//! Groups: results in the order sent whatever the order of completion, waiting, nesting.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use dq_broker_stub::StubBroker;
use dq_core::{group, pipeline, ActorError, FailureKind, GroupChild, Message};
use dq_results::{Error, GroupResults, MemoryBackend, ResultBackend};
use serde_json::{json, Value};

use crate::support::{actor, app, results, worker, RedisNamespace};

/// Completion order per tag, and a condition variable to wait on it.
static DONE: Mutex<Option<HashMap<String, Vec<u64>>>> = Mutex::new(None);
static DONE_CHANGED: Condvar = Condvar::new();

fn finished(tag: &str) -> Vec<u64> {
    DONE.lock()
        .unwrap()
        .as_ref()
        .and_then(|d| d.get(tag).cloned())
        .unwrap_or_default()
}

// Child `i` of `n` finishes only after every child after it: completion runs backwards.
sync_handler!(backwards, |tag: String, i: u64, n: u64| {
    let mut done = DONE.lock().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = done
            .get_or_insert_with(HashMap::new)
            .entry(tag.clone())
            .or_default();
        if (i + 1..n).all(|j| list.contains(&j)) {
            list.push(i);
            DONE_CHANGED.notify_all();
            return Ok(json!(i * 10));
        }
        if Instant::now() >= deadline {
            return Err(ActorError::new(
                FailureKind::Error,
                "Stuck",
                "siblings never finished",
            ));
        }
        done = DONE_CHANGED
            .wait_timeout(done, Duration::from_millis(100))
            .unwrap()
            .0;
    }
});

sync_handler!(square, |x: i64| Ok(json!(x * x)));
sync_handler!(fail, |msg: String| Err(ActorError::new(
    FailureKind::Error,
    "ValueError",
    msg
)));

fn msg(q: &str, actor: &str, args: Value) -> Message {
    Message::new(q, actor, &args, &()).unwrap()
}

async fn check_order(backend: Arc<dyn ResultBackend>) {
    let q = dq_test::unique_name("groups");
    let broker = StubBroker::new();
    let app = app(
        &broker,
        vec![results(&backend)],
        vec![actor("backwards", &q, backwards, |_| {})],
    );
    // Every child must run at once for the backwards chain to complete.
    let n = 5u64;
    let w = worker(&app, n as usize + 1).await;
    let tag = dq_test::unique_name("order");
    let g = group((0..n).map(|i| msg(&q, "backwards", json!([tag, i, n]))));
    let e = g
        .get_results::<u64>(&*backend, false, None)
        .await
        .unwrap_err();
    assert!(e.is_missing(), "before running: {e}");
    assert_eq!(g.completed_count(&*backend).await.unwrap(), 0);

    let g = g.run_with(&app, None).await.unwrap();
    let got: Vec<u64> = g
        .get_results(&*backend, true, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(got, [0, 10, 20, 30, 40]);
    assert_eq!(
        finished(&tag),
        [4, 3, 2, 1, 0],
        "completion really ran backwards"
    );
    g.wait(&*backend, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(g.completed_count(&*backend).await.unwrap(), 5);
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_group_results_come_back_in_send_order() {
    check_order(Arc::new(MemoryBackend::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_group_results_come_back_in_send_order() {
    let ns = RedisNamespace::new("groups-order");
    check_order(Arc::new(ns.readable())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_children_failures_and_timeouts() {
    let backend: Arc<dyn ResultBackend> = Arc::new(MemoryBackend::default());
    let q = dq_test::unique_name("groups-nested");
    let broker = StubBroker::new();
    let app = app(
        &broker,
        vec![results(&backend)],
        vec![
            actor("square", &q, square, |_| {}),
            actor("fail", &q, fail, |o| o.max_retries = Some(Some(0))),
            actor("unstored", &q, square, |o| o.store_results = Some(false)),
        ],
    );
    let w = worker(&app, 4).await;
    let wait = Some(Duration::from_secs(20));

    // A message, a pipeline (its last result) and a nested group (the list of its results).
    let g = group([
        GroupChild::from(msg(&q, "square", json!([2]))),
        pipeline([msg(&q, "square", json!([3])), msg(&q, "square", json!([]))]).into(),
        group([msg(&q, "square", json!([4])), msg(&q, "square", json!([5]))]).into(),
    ])
    .run_with(&app, None)
    .await
    .unwrap();
    let got: Vec<Value> = g.get_results(&*backend, true, wait).await.unwrap();
    assert_eq!(got, [json!(4), json!(81), json!([16, 25])]);

    // A failed child fails the read with its error.
    let g = group([
        msg(&q, "square", json!([1])),
        msg(&q, "fail", json!(["no"])),
    ])
    .run_with(&app, None)
    .await
    .unwrap();
    match g
        .get_results::<i64>(&*backend, true, wait)
        .await
        .unwrap_err()
    {
        Error::Failure {
            type_name, message, ..
        } => assert_eq!((type_name.as_str(), message.as_str()), ("ValueError", "no")),
        other => panic!("expected a failure, got {other}"),
    }

    // A child that never stores: waiting times out, not early, within the overall timeout.
    let g = group([
        msg(&q, "square", json!([1])),
        msg(&q, "unstored", json!([1])),
    ])
    .run_with(&app, None)
    .await
    .unwrap();
    let started = Instant::now();
    let e = g
        .wait(&*backend, Some(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(g.completed_count(&*backend).await.unwrap(), 1);
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_group_and_callbacks_without_group_callbacks() {
    let backend: Arc<dyn ResultBackend> = Arc::new(MemoryBackend::default());
    let q = dq_test::unique_name("groups-delay");
    let broker = StubBroker::new();
    let app = app(
        &broker,
        vec![results(&backend)],
        vec![actor("square", &q, square, |_| {})],
    );

    // Completion callbacks need GroupCallbacks: without it nothing is sent.
    let err = group([msg(&q, "square", json!([1]))])
        .with_completion_callback(&msg(&q, "square", json!([2])))
        .run_with(&app, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("GroupCallbacks"), "{err}");
    assert_eq!(dq_core::Broker::stats(&broker, &q).await.unwrap().ready, 0);

    // A delayed group: every child goes through the delay queue and runs no earlier.
    let w = worker(&app, 2).await;
    let sent = Instant::now();
    let g = group([msg(&q, "square", json!([6])), msg(&q, "square", json!([7]))])
        .run_with(&app, Some(Duration::from_millis(400)))
        .await
        .unwrap();
    let got: Vec<i64> = g
        .get_results(&*backend, true, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(got, [36, 49]);
    assert!(sent.elapsed() >= Duration::from_millis(400));
    w.stop().await.unwrap();
}

// Sleeps `ms`, then records that child `i` finished.
sync_handler!(nap, |tag: String, i: u64, ms: u64| {
    std::thread::sleep(Duration::from_millis(ms));
    DONE.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(tag)
        .or_default()
        .push(i);
    Ok(json!(i * i))
});

/// Shuffled sleeps, a pipeline among the children: results still come back in the order the
/// children were added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_group_results_keep_send_order_under_shuffled_sleeps() {
    let ns = RedisNamespace::new("groups-shuffled");
    let backend: Arc<dyn ResultBackend> = Arc::new(ns.readable());
    let q = dq_test::unique_name("groups-shuffled");
    let broker = StubBroker::new();
    let app = app(
        &broker,
        vec![results(&backend)],
        vec![
            actor("nap", &q, nap, |_| {}),
            actor("square", &q, square, |_| {}),
        ],
    );
    let sleeps = [240u64, 0, 160, 40, 320, 80];
    let w = worker(&app, sleeps.len() + 1).await;
    let tag = dq_test::unique_name("shuffled");
    let mut children: Vec<GroupChild> = sleeps
        .iter()
        .enumerate()
        .map(|(i, ms)| msg(&q, "nap", json!([tag, i, ms])).into())
        .collect();
    // Last child: nap(6, 0) then square(36).
    children.push(
        pipeline([
            msg(&q, "nap", json!([tag, 6, 0])),
            msg(&q, "square", json!([])),
        ])
        .into(),
    );
    let g = group(children).run_with(&app, None).await.unwrap();
    let got: Vec<u64> = g
        .get_results(&*backend, true, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(got, [0, 1, 4, 9, 16, 25, 1296]);
    let order = finished(&tag);
    assert_eq!(order.len(), 7);
    assert_ne!(order, [0, 1, 2, 3, 4, 5, 6], "completion was shuffled");
    w.stop().await.unwrap();
}
