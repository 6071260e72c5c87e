//! Limiters inside actors run by a worker: `acquire` fails the message so Retries backs off and
//! runs it again later; `try_acquire` lets the actor decide.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dq_broker_stub::StubBroker;
use dq_core::{ActorError, Message};
use dq_ratelimit::{ConcurrentRateLimiter, Error, RateLimiter};
use serde_json::{json, Value};

use crate::support::{actor, app, worker, Keys};

/// The limiter of each test, by tag: actors are plain fns.
static LIMITERS: Mutex<Option<HashMap<String, ConcurrentRateLimiter>>> = Mutex::new(None);
/// What each test's actors saw, by tag.
static SEEN: Mutex<Option<HashMap<String, Vec<Value>>>> = Mutex::new(None);
/// One clock for every interval.
static EPOCH: Mutex<Option<Instant>> = Mutex::new(None);

fn limiter(tag: &str) -> ConcurrentRateLimiter {
    LIMITERS.lock().unwrap().as_ref().unwrap()[tag].clone()
}

fn set_limiter(tag: &str, l: ConcurrentRateLimiter) {
    LIMITERS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(tag.to_owned(), l);
}

fn see(tag: &str, v: Value) {
    SEEN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(tag.to_owned())
        .or_default()
        .push(v);
}

fn seen(tag: &str) -> Vec<Value> {
    SEEN.lock()
        .unwrap()
        .as_ref()
        .and_then(|s| s.get(tag).cloned())
        .unwrap_or_default()
}

fn micros() -> u64 {
    let epoch = *EPOCH.lock().unwrap().get_or_insert_with(Instant::now);
    epoch.elapsed().as_micros() as u64
}

// Holds the tag's mutex for `hold_ms`; when it is taken, fails so Retries tries again later.
sync_handler!(guarded, |tag: String, hold_ms: u64| {
    let permit = match limiter(&tag).acquire_blocking() {
        Ok(p) => p,
        Err(Error::RateLimitExceeded(e)) => {
            see(&tag, json!({"busy": true}));
            return Err(e.into());
        }
        Err(e) => return Err(ActorError::from(e)),
    };
    let start = micros();
    std::thread::sleep(Duration::from_millis(hold_ms));
    let end = micros();
    permit.release_blocking()?;
    see(&tag, json!({"start": start, "end": end}));
    Ok(Value::Null)
});

// Dramatiq's `acquire(raise_on_failure=False)`: reports whether the mutex was free.
sync_handler!(polite, |tag: String| {
    let permit = limiter(&tag).try_acquire_blocking()?;
    see(&tag, json!({"acquired": permit.acquired()}));
    Ok(Value::Null)
});

async fn check_mutex_in_actors(keys: Keys) {
    let q = dq_test::unique_name("rl-actors");
    let tag = keys.key("mutex");
    set_limiter(&tag, ConcurrentRateLimiter::new(keys.backend(), &tag, 1));
    let broker = StubBroker::new();
    let app = app(&broker, vec![], vec![actor("guarded", &q, guarded, |_| {})]);
    let w = worker(&app, 4).await;
    let n = 6;
    for _ in 0..n {
        let m = Message::new(&q, "guarded", &(&tag, 60), &()).unwrap();
        app.enqueue(m, None).await.unwrap();
    }
    broker
        .join(&q, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    w.stop().await.unwrap();

    let records = seen(&tag);
    let busy = records.iter().filter(|r| r.get("busy").is_some()).count();
    let mut runs: Vec<(u64, u64)> = records
        .iter()
        .filter_map(|r| Some((r.get("start")?.as_u64()?, r.get("end")?.as_u64()?)))
        .collect();
    assert_eq!(runs.len(), n, "every message ran once it got the mutex");
    runs.sort();
    for pair in runs.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlap: {pair:?}");
    }
    // Four threads started together on one mutex: the others were turned away and retried.
    assert!(busy >= 1, "no attempt found the mutex taken");
    let stats = dq_core::Broker::stats(&broker, &q).await.unwrap();
    assert_eq!(
        stats.dead, 0,
        "a rate limit failure is retried, not dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mutex_actors_back_off_and_never_overlap() {
    check_mutex_in_actors(Keys::memory("rl-actors")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mutex_actors_back_off_and_never_overlap() {
    check_mutex_in_actors(Keys::redis("rl-actors")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_reports_instead_of_failing() {
    let keys = Keys::redis("rl-polite");
    let q = dq_test::unique_name("rl-polite");
    let tag = keys.key("mutex");
    let mutex = ConcurrentRateLimiter::new(keys.backend(), &tag, 1);
    set_limiter(&tag, mutex.clone());
    let broker = StubBroker::new();
    let app = app(&broker, vec![], vec![actor("polite", &q, polite, |_| {})]);
    let w = worker(&app, 2).await;
    let send = || {
        let app = app.clone();
        let m = Message::new(&q, "polite", &(&tag,), &()).unwrap();
        async move { app.enqueue(m, None).await.unwrap() }
    };

    let held = mutex.acquire().await.unwrap();
    send().await;
    broker
        .join(&q, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    held.release().await.unwrap();
    send().await;
    broker
        .join(&q, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    // The actor's own permit was given back when it was dropped.
    let mut free = false;
    for _ in 0..100 {
        if mutex.try_acquire().await.unwrap().acquired() {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.stop().await.unwrap();
    assert_eq!(
        seen(&tag),
        [json!({"acquired": false}), json!({"acquired": true})]
    );
    assert!(free, "the actor's dropped permit never came back");
    let stats = dq_core::Broker::stats(&broker, &q).await.unwrap();
    assert_eq!(stats.dead, 0);
}
