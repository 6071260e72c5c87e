//! On a real Redis: a dead letter Python Dramatiq 2.2.1 wrote (a golden message of dq-core's
//! fixtures, dead-lettered as Python's nack leaves it) is shown with its traceback and requeued
//! the way Python's dashboard does, retries reset.

use std::sync::Arc;

use axum::http::StatusCode;
use dq_broker_redis::RedisBroker;
use dq_core::{Broker, Message, MessageState};
use dq_dashboard::Dashboard;
use serde_json::{json, Value};

use crate::{get, post_json};

/// The `retried` golden message: made by Python Dramatiq 2.2.1's Retries after a
/// ZeroDivisionError (crates/dq-core/tests/fixtures/python_messages.json).
fn python_retried() -> String {
    let fixtures: Value = serde_json::from_str(include_str!(
        "../../dq-core/tests/fixtures/python_messages.json"
    ))
    .unwrap();
    fixtures
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "retried")
        .expect("the retried fixture")["encoded"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_dead_letter_is_shown_and_requeued_as_python_does() {
    let url = dq_test::require_redis();
    let ns = format!("dqtest-dash-{}", uuid::Uuid::new_v4());
    let broker = RedisBroker::builder()
        .url(&url)
        .namespace(&ns)
        .build()
        .await
        .unwrap();
    let body = python_retried();
    let redis_id = "feaf9c67-5508-4e12-88d5-f18731e515ad";
    // What Python's nack leaves: the body as enqueued in `q.XQ.msgs`, the id in the `q.XQ` zset.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(format!("{ns}:default.XQ.msgs"))
        .arg(redis_id)
        .arg(&body)
        .cmd("ZADD")
        .arg(format!("{ns}:default.XQ"))
        .arg(dq_core::now_ms())
        .arg(redis_id)
        .query_async(&mut conn)
        .await
        .unwrap();

    let r = Dashboard::new(Arc::new(broker.clone())).build().unwrap();
    // Found by scanning the namespace, with no worker and no name given.
    let o = get(&r, "/api/queues").await.json();
    assert_eq!(o["queues"][0]["name"], "default");
    assert_eq!(o["queues"][0]["dead"], 1);

    let html = get(&r, "/queues/default?state=dead").await.text;
    assert!(html.contains("add(1,0)"), "{html}");
    assert!(html.contains("ZeroDivisionError: division by zero"));
    let page = get(
        &r,
        &format!("/queues/default/messages/{redis_id}?state=dead"),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("return x / y"), "{}", page.text);
    let one = get(
        &r,
        "/api/queues/default/messages/fe17c557-e956-4114-8796-99af26a4228a?state=dead",
    )
    .await
    .json();
    assert_eq!(one["retries"], 3);
    assert_eq!(one["actor"], "add");

    let token = crate::csrf(&r).await;
    let done = post_json(
        &r,
        "/api/queues/default/dead/requeue",
        Some(&token),
        json!({ "ids": ["fe17c557-e956-4114-8796-99af26a4228a"] }),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(done.json()["count"], 1);
    let ready = broker
        .browse("default", MessageState::Ready, 0, 10)
        .await
        .unwrap();
    assert_eq!(ready.len(), 1);
    let m = Message::decode(&ready[0].body).unwrap();
    assert_eq!(m.message_id, "fe17c557-e956-4114-8796-99af26a4228a");
    assert_eq!(m.queue_name, "default");
    assert_eq!(m.options.retries(), 0);
    assert_eq!(m.options.eta(), None);
    assert_eq!(broker.stats("default").await.unwrap().dead, 0);
    broker.flush("default").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_pages_are_empty_not_errors() {
    let url = dq_test::require_redis();
    let ns = format!("dqtest-dash-{}", uuid::Uuid::new_v4());
    let broker = RedisBroker::builder()
        .url(&url)
        .namespace(&ns)
        .build()
        .await
        .unwrap();
    let mut m = Message::new("q", "a", &(1,), &()).unwrap();
    broker.enqueue(&mut m).await.unwrap();
    let r = Dashboard::new(Arc::new(broker.clone())).build().unwrap();
    for state in ["ready", "delayed", "dead"] {
        let page = get(
            &r,
            &format!("/api/queues/q/messages?state={state}&offset=18446744073709551615&limit=18446744073709551615"),
        )
        .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert_eq!(page.json()["messages"], json!([]));
        let html = get(
            &r,
            &format!("/queues/q?state={state}&page=18446744073709551615"),
        )
        .await;
        assert_eq!(html.status, StatusCode::OK);
    }
    broker.flush("q").await.unwrap();
}
