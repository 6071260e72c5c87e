//! On a real RabbitMQ: counts of a named queue, dead letters browsed and requeued as the admin
//! tool does it, and the page saying what AMQP cannot show.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use dq_broker_amqp::AmqpBroker;
use dq_core::{Broker, Message};
use dq_dashboard::Dashboard;
use serde_json::json;

use crate::{get, post_json};

/// A queue of the test's own with its `.DQ` and `.XQ`, deleted on drop.
struct Queue {
    url: String,
    name: String,
}

impl Drop for Queue {
    fn drop(&mut self) {
        let names = [
            self.name.clone(),
            format!("{}.DQ", self.name),
            format!("{}.XQ", self.name),
        ];
        let url = self.url.clone();
        // A runtime on a thread of its own: drop cannot await.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                    .await?;
                let ch = conn.create_channel().await?;
                for n in &names {
                    ch.queue_delete(n.as_str().into(), Default::default())
                        .await?;
                }
                conn.close(200, "cleanup".into()).await
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("could not delete RabbitMQ queue {}: {e}", self.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_counts_and_dead_letters_and_says_what_it_cannot_show() {
    let url = dq_test::require_amqp();
    let q = Queue {
        url: url.clone(),
        name: dq_test::unique_name("dash-amqp").replace('-', "_"),
    };
    let broker = AmqpBroker::builder().url(&url).build().await.unwrap();
    broker.declare_queue(&q.name).await.unwrap();
    for n in 0..3 {
        let mut m = Message::new(&q.name, "work", &(n,), &()).unwrap();
        broker.enqueue(&mut m).await.unwrap();
    }
    broker.close().await.unwrap();
    // Two of them dead-lettered by a consumer.
    let mut c = broker.consume(&q.name, 2).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(c.fetch(Duration::from_millis(200)).await.unwrap());
    }
    for d in got.iter().take(2) {
        c.acker().nack(&d.token, "failed").await.unwrap();
    }
    c.close().await.unwrap();

    let r = Dashboard::new(Arc::new(broker.clone()))
        .queue(q.name.clone())
        .build()
        .unwrap();
    let counted = dq_test::wait_until_async(Duration::from_secs(30), || async {
        let o = get(&r, "/api/queues").await.json();
        o["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["name"] == q.name.as_str() && row["ready"] == 1 && row["dead"] == 2)
    })
    .await;
    assert!(counted, "{}", get(&r, "/api/queues").await.text);
    let o = get(&r, "/api/queues").await.json();
    let limits = o["limits"].to_string();
    assert!(limits.contains("cannot list its queues"), "{limits}");
    assert!(limits.contains("AMQP has no browse"), "{limits}");

    let ready = get(&r, &format!("/api/queues/{}/messages?state=ready", q.name))
        .await
        .json();
    assert_eq!(ready["supported"], false);
    let html = get(&r, &format!("/queues/{}?state=ready", q.name)).await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(
        html.text.contains("cannot list ready messages"),
        "{}",
        html.text
    );

    let dead = get(&r, &format!("/api/queues/{}/messages?state=dead", q.name))
        .await
        .json();
    let letters = dead["messages"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{dead}");
    assert_eq!(letters[0]["actor"], "work");
    // Reading dead letters leaves them where they were.
    assert_eq!(broker.stats(&q.name).await.unwrap().dead, 2);

    let token = crate::csrf(&r).await;
    let done = post_json(
        &r,
        &format!("/api/queues/{}/dead/requeue", q.name),
        Some(&token),
        json!({ "all": true }),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    assert_eq!(done.json()["count"], 2);
    let s = broker.stats(&q.name).await.unwrap();
    assert_eq!((s.ready, s.dead), (3, 0), "{s:?}");
    broker.close().await.unwrap();
}
