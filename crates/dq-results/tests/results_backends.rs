//! The backends on their own: Dramatiq's Redis layout, blocking reads, expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dq_core::{ActorError, FailureKind, Message};
use dq_results::{message_key, Error, MemoryBackend, ResultBackend, ResultBackendExt};
use redis::Commands;
use serde_json::{json, Value};

use crate::support::RedisNamespace;

fn message(actor: &str) -> Message {
    Message::new("default", actor, &(1, 2), &()).unwrap()
}

/// What every backend must do, whatever it is.
async fn check_semantics(backend: Arc<dyn ResultBackend>) {
    let m = message("add");
    let ttl = Duration::from_secs(30);

    // Nothing yet: missing without blocking, a timeout (not early) with.
    let e = backend
        .get_result::<i64>(&m, false, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Missing { message_id } if *message_id == m.message_id),
        "{e}"
    );
    let started = Instant::now();
    let e = backend
        .get_result::<i64>(&m, true, Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    let e = backend
        .get_result::<i64>(&m, true, Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");

    // A blocking read wakes when the result arrives, and the result stays readable.
    let writer = backend.clone();
    let m2 = m.clone();
    let store = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.store_result(&m2, &json!(3), ttl).await
    });
    let got: i64 = backend
        .get_result(&m, true, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(got, 3);
    store.await.unwrap().unwrap();
    for _ in 0..3 {
        assert_eq!(backend.get_result::<i64>(&m, false, None).await.unwrap(), 3);
    }
    // Typed: the wrong type is a decode error, not a panic or a silent default.
    let e = backend
        .get_result::<String>(&m, false, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Decode { .. }), "{e}");

    // A new value replaces the old one.
    backend
        .store_result(&m, &json!([1, "a"]), ttl)
        .await
        .unwrap();
    let v: (i64, String) = backend.get_result(&m, false, None).await.unwrap();
    assert_eq!(v, (1, "a".to_owned()));

    // Failures read as Dramatiq's ResultFailure, with the actor's error type and message.
    let f = message("fail");
    let err = ActorError::new(FailureKind::Error, "ValueError", "boom");
    backend.store_exception(&f, &err, ttl).await.unwrap();
    match backend
        .get_result::<Value>(&f, true, None)
        .await
        .unwrap_err()
    {
        Error::Failure {
            message_id,
            type_name,
            message,
        } => {
            assert_eq!(message_id, f.message_id);
            assert_eq!(type_name, "ValueError");
            assert_eq!(message, "boom");
        }
        other => panic!("expected a failure, got {other}"),
    }

    // Expired results are missing (and not early).
    let short = message("add");
    backend
        .store_result(&short, &json!(1), Duration::from_millis(150))
        .await
        .unwrap();
    assert_eq!(
        backend
            .get_result::<i64>(&short, false, None)
            .await
            .unwrap(),
        1
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let e = backend
        .get_result::<i64>(&short, false, None)
        .await
        .unwrap_err();
    assert!(e.is_missing(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_semantics() {
    check_semantics(Arc::new(MemoryBackend::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_semantics() {
    let ns = RedisNamespace::new("results-semantics");
    check_semantics(Arc::new(ns.readable())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_layout_is_dramatiqs() {
    let ns = RedisNamespace::new("results-layout");
    let backend = ns.hashed();
    let mut m = message("add");
    m.queue_name = "default.DQ".into();
    let key = format!(
        "{:x}",
        md5::compute(format!("{}:default:add:{}", ns.namespace, m.message_id))
    );
    assert_eq!(backend.message_key(&m), key);
    assert_eq!(message_key(&ns.namespace, false, &m), key);
    let mut redis = ns.client();

    // Stored: a one-element list holding the JSON, with the TTL in ms; old values are dropped.
    let _: () = redis.lpush(&key, "\"stale\"").unwrap();
    let _: () = redis.lpush(&key, "\"stale\"").unwrap();
    backend
        .store_result(&m, &json!({"sum": 3}), Duration::from_secs(60))
        .await
        .unwrap();
    let kind: String = redis::cmd("TYPE").arg(&key).query(&mut redis).unwrap();
    assert_eq!(kind, "list");
    let all: Vec<String> = redis.lrange(&key, 0, -1).unwrap();
    assert_eq!(all, [r#"{"sum":3}"#]);
    let pttl: i64 = redis.pttl(&key).unwrap();
    assert!(pttl > 50_000 && pttl <= 60_000, "{pttl}");

    // Failures: Dramatiq's marker object.
    let err = ActorError::new(FailureKind::TimeLimitExceeded, "TimeLimitExceeded", "");
    backend
        .store_exception(&m, &err, Duration::from_secs(60))
        .await
        .unwrap();
    let stored: String = redis.lindex(&key, 0).unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(
        stored,
        json!({"__t": "dramatiq.results.Result", "exn": {"type": "TimeLimitExceeded", "msg": ""}})
    );

    // What a Python worker stores (its encoder writes ASCII-only compact JSON) reads back typed,
    // and a blocking read leaves it in place.
    let _: () = redis.del(&key).unwrap();
    let _: () = redis.lpush(&key, r#"["caf\u00e9",1.5]"#).unwrap();
    let v: (String, f64) = backend
        .get_result(&m, true, Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(v, ("café".to_owned(), 1.5));
    let len: i64 = redis.llen(&key).unwrap();
    assert_eq!(len, 1);
    ns.forget(&[key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_blocking_read_cancelled_does_not_poison_the_pool() {
    let ns = RedisNamespace::new("results-cancel");
    // One connection: a cancelled blocking read must not leave it blocked for the next caller.
    let backend = dq_results::RedisBackend::builder()
        .url(&ns.url)
        .namespace(&ns.namespace)
        .namespace_prefix_keys(true)
        .pool_size(1)
        .build()
        .unwrap();
    let m = message("add");
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        backend.get_result::<i64>(&m, true, Some(Duration::from_secs(30))),
    )
    .await;
    assert!(cancelled.is_err());
    let started = Instant::now();
    backend
        .store_result(&m, &json!(5), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(backend.get_result::<i64>(&m, false, None).await.unwrap(), 5);
    // Well under the 30 s the abandoned read would have blocked the connection for.
    assert!(started.elapsed() < Duration::from_secs(10));
}
