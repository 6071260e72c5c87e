//! GroupCallbacks: a group's completion callbacks run once, after every child succeeded,
//! whatever order the children finish in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dq_broker_stub::{JoinOptions, StubBroker};
use dq_core::{group, ActorError, FailureKind, GroupChild, Message, Middleware};
use dq_ratelimit::{GroupCallbacks, RateLimiterBackend};
use serde_json::{json, Value};

use crate::support::{actor, app, worker, Keys};

/// Events per tag, in the order they happened.
static EVENTS: Mutex<Option<HashMap<String, Vec<Value>>>> = Mutex::new(None);

fn event(tag: &str, v: Value) {
    EVENTS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(tag.to_owned())
        .or_default()
        .push(v);
}

fn events(tag: &str) -> Vec<Value> {
    EVENTS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|e| e.get(tag).cloned())
        .unwrap_or_default()
}

sync_handler!(child, |tag: String, i: u64, sleep_ms: u64| {
    std::thread::sleep(Duration::from_millis(sleep_ms));
    event(&tag, json!({"child": i}));
    Ok(json!(i))
});

sync_handler!(stage, |tag: String, x: u64| {
    event(&tag, json!({"stage": x}));
    Ok(json!(x + 1))
});

sync_handler!(boom, |tag: String| {
    event(&tag, json!({"boom": true}));
    Err(ActorError::new(FailureKind::Error, "ValueError", "boom"))
});

sync_handler!(done, |tag: String, label: String| {
    event(&tag, json!({"done": label}));
    Ok(Value::Null)
});

fn msg(q: &str, actor: &str, args: Value) -> Message {
    Message::new(q, actor, &args, &()).unwrap()
}

async fn check_callbacks(backend: Arc<dyn RateLimiterBackend>) {
    let q = dq_test::unique_name("rl-groups");
    let broker = StubBroker::new();
    // Barrier keys are bare uuids, as Dramatiq makes them: a short TTL cleans them up.
    let mw: Arc<dyn Middleware> =
        Arc::new(GroupCallbacks::from_arc(backend).with_barrier_ttl(Duration::from_secs(60)));
    let app = app(
        &broker,
        vec![mw],
        vec![
            actor("child", &q, child, |_| {}),
            actor("stage", &q, stage, |_| {}),
            actor("boom", &q, boom, |o| o.max_retries = Some(Some(0))),
            actor("done", &q, done, |_| {}),
        ],
    );
    let w = worker(&app, 6).await;

    // Children finish in shuffled order (the sleeps), one child is a pipeline: the callback
    // runs once, after all of them.
    let tag = dq_test::unique_name("cb");
    let sleeps = [150u64, 30, 250, 0, 90];
    let mut children: Vec<GroupChild> = sleeps
        .iter()
        .enumerate()
        .map(|(i, s)| msg(&q, "child", json!([tag, i, s])).into())
        .collect();
    children.push((msg(&q, "stage", json!([tag, 10])) | msg(&q, "stage", json!([tag]))).into());
    group(children)
        .with_completion_callback(&msg(&q, "done", json!([tag, "first"])))
        .with_completion_callback(&msg(&q, "done", json!([tag, "second"])))
        .run_with(&app, None)
        .await
        .unwrap();
    broker
        .join(&q, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let seen = events(&tag);
    let finished: Vec<u64> = seen
        .iter()
        .filter_map(|e| e.get("child").and_then(Value::as_u64))
        .collect();
    assert_eq!(finished.len(), sleeps.len());
    assert_ne!(finished, [0, 1, 2, 3, 4], "completion was shuffled");
    let done_at: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i].get("done").is_some())
        .collect();
    assert_eq!(done_at.len(), 2, "each callback exactly once: {seen:?}");
    let last_child = seen
        .iter()
        .rposition(|e| e.get("child").is_some() || e.get("stage").is_some())
        .unwrap();
    assert!(
        done_at[0] > last_child,
        "a callback ran before every child was done: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|e| e.get("stage").is_some()).count(),
        2,
        "both pipeline stages ran"
    );

    // A child that fails for good: the barrier never clears, the callback never runs.
    let tag = dq_test::unique_name("cb-fail");
    group([
        msg(&q, "child", json!([tag, 0, 0])),
        msg(&q, "boom", json!([tag])),
        msg(&q, "child", json!([tag, 1, 50])),
    ])
    .with_completion_callback(&msg(&q, "done", json!([tag, "never"])))
    .run_with(&app, None)
    .await
    .unwrap();
    let joined = broker
        .join_with(
            &q,
            JoinOptions::default()
                .fail_fast(false)
                .timeout(Some(Duration::from_secs(30))),
        )
        .await;
    assert!(joined.is_ok(), "{joined:?}");
    let seen = events(&tag);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|e| e.get("done").is_none()), "{seen:?}");
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_group_callbacks_run_once_after_every_child() {
    check_callbacks(Keys::memory("rl-groups").backend()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_group_callbacks_run_once_after_every_child() {
    let keys = Keys::redis("rl-groups");
    check_callbacks(keys.backend()).await;
}
