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

/// With RabbitMQ's management API (the test command enables the plugin on the local server), the
/// dashboard finds a queue no one named and shows its consumers and rates from the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_management_api_lists_queues_and_shows_consumers() {
    let url = dq_test::require_amqp();
    let management = std::env::var(dq_dashboard::MANAGEMENT_URL_ENV)
        .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".to_owned());
    let q = Queue {
        url: url.clone(),
        name: dq_test::unique_name("dash-mgmt").replace('-', "_"),
    };
    let broker = AmqpBroker::builder().url(&url).build().await.unwrap();
    broker.declare_queue(&q.name).await.unwrap();
    for n in 0..5 {
        let mut m = Message::new(&q.name, "work", &(n,), &()).unwrap();
        broker.enqueue(&mut m).await.unwrap();
    }
    // A consumer on its own connection, so the API counts one; it takes one message and holds it.
    let consuming = AmqpBroker::builder().url(&url).build().await.unwrap();
    let mut c = consuming.consume(&q.name, 1).await.unwrap();
    let mut held = Vec::new();
    while held.is_empty() {
        held.extend(c.fetch(Duration::from_millis(200)).await.unwrap());
    }

    let r = Dashboard::new(Arc::new(broker.clone()))
        .management(&management, "/")
        .build()
        .unwrap();
    let row = |o: &serde_json::Value| {
        o["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["name"] == q.name.as_str())
            .cloned()
    };
    // The API's statistics lag a few seconds behind the broker.
    let shown = dq_test::wait_until_async(Duration::from_secs(30), || async {
        let o = get(&r, "/api/queues").await.json();
        row(&o).is_some_and(|row| row["management"]["consumers"] == 1)
    })
    .await;
    let o = get(&r, "/api/queues").await.json();
    assert!(shown, "{o}");
    let row = row(&o).unwrap();
    assert_eq!(row["ready"], 4, "{row}");
    let m = &row["management"];
    for rate in ["publish_per_s", "deliver_per_s", "ack_per_s"] {
        assert!(m[rate].as_f64().is_some_and(|r| r >= 0.0), "{m}");
    }
    // Named by nobody, found through the API: the page does not say the queues are unlisted.
    assert!(
        !o["limits"].to_string().contains("cannot list its queues"),
        "{o}"
    );
    let html = get(&r, "/").await.text;
    assert!(html.contains(&q.name), "the overview lists {}", q.name);

    let tokens: Vec<_> = held.iter().map(|d| d.token.clone()).collect();
    c.acker().ack(&tokens).await.unwrap();
    c.close().await.unwrap();
    consuming.close().await.unwrap();
    broker.close().await.unwrap();
}
