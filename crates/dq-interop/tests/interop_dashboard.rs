//! The dashboard on Python Dramatiq's messages: a message a Python worker dead-lettered is
//! listed and shown by the dashboard, requeued through its JSON API (as its Requeue button does:
//! retries reset, same message id), and run again by the Python worker.

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{header, Request, StatusCode};
use dq_interop::{BrokerKind, Lang, Scenario};
use serde_json::{json, Value};
use tower::ServiceExt as _;

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");

async fn call(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get_json(router: &axum::Router, uri: &str) -> Value {
    let (status, text) = call(router, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn requeue_through_the_dashboard(kind: BrokerKind) {
    let sc = Scenario::new(kind, "dashboard");
    let rt = dq_interop::runtime();
    let mut worker = sc.spawn_worker(Lang::Python, DQ_WORKER, "python", 2);
    worker.wait_ready(Duration::from_secs(30));
    let file = sc.path_str("gate");
    let gate_file = sc.path_str("gate-open");
    let sent =
        sc.python_send(&json!([{"actor": "gate", "args": [file, "g", gate_file]}]).to_string());
    sc.wait_records("gate", Duration::from_secs(20), &[&worker], |r| {
        !r.is_empty()
    });
    let broker = rt.block_on(sc.dq_broker());
    let router = dq::dashboard::Dashboard::new(broker.clone())
        .queue(sc.queue.clone())
        .build()
        .expect("the dashboard");
    let message_id = sent[0].message_id.clone();
    rt.block_on(async {
        let uri = format!("/api/queues/{}/messages?state=dead", sc.queue);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let page = loop {
            let page = get_json(&router, &uri).await;
            if !page["messages"].as_array().unwrap().is_empty()
                || std::time::Instant::now() > deadline
            {
                break page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let letters = page["messages"].as_array().unwrap();
        assert_eq!(letters.len(), 1, "{page}\nlog:\n{}", worker.log());
        assert_eq!(letters[0]["message_id"], message_id.as_str());
        assert_eq!(letters[0]["actor"], "gate");

        let one = get_json(
            &router,
            &format!("/api/queues/{}/messages/{message_id}?state=dead", sc.queue),
        )
        .await;
        assert_eq!(one["args"][1], "g");

        std::fs::write(&gate_file, "").expect("gate file");
        let token = get_json(&router, "/api/csrf").await["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, text) = call(
            &router,
            Request::post(format!("/api/queues/{}/dead/requeue", sc.queue))
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-csrf-token", token)
                .body(Body::from(json!({ "ids": [message_id] }).to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let done: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(done["count"], 1);
    });

    let rec = sc.wait_records("gate", Duration::from_secs(20), &[&worker], |r| {
        r.len() >= 2
    });
    assert_eq!(rec.len(), 2, "{rec:?}");
    assert_eq!(rec[1]["open"], true);
    assert_eq!(rec[1]["message_id"], sent[0].message_id.as_str());
    let stats = rt.block_on(broker.stats(&sc.queue)).expect("stats");
    assert_eq!(
        (stats.ready, stats.delayed, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
    sc.assert_redis_drained();
    assert!(
        worker.stop(Duration::from_secs(20)),
        "log:\n{}",
        worker.log()
    );
}

#[test]
fn redis_python_dead_letter_requeued_through_the_dashboard() {
    requeue_through_the_dashboard(BrokerKind::Redis);
}

#[test]
fn amqp_python_dead_letter_requeued_through_the_dashboard() {
    requeue_through_the_dashboard(BrokerKind::Amqp);
}
