//! The JSON API and the pages on the stub broker: counts, browsing, a message in full, requeue
//! (and see it run), bulk delete by actor, confirmation pages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use dq_broker_stub::StubBroker;
use dq_core::{Actor, ActorOptions, Broker, Message};
use dq_dashboard::Dashboard;
use serde_json::json;

use crate::{get, post_form, post_json};

/// Enqueues one message per `(actor, n)` on `queue` and dead-letters them with `reason`.
async fn dead_letter(broker: &StubBroker, queue: &str, calls: &[(&str, i64)], reason: &str) {
    for (actor, n) in calls {
        let mut m = Message::new(queue, actor, &(n,), &()).unwrap();
        broker.enqueue(&mut m).await.unwrap();
    }
    let mut c = broker.consume(queue, calls.len()).await.unwrap();
    let got = c.fetch(Duration::from_secs(5)).await.unwrap();
    assert_eq!(got.len(), calls.len());
    for d in got {
        c.acker().nack(&d.token, reason).await.unwrap();
    }
    c.close().await.unwrap();
}

fn dashboard(broker: &StubBroker) -> axum::Router {
    Dashboard::new(Arc::new(broker.clone()))
        .queue("named")
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_api_counts_browses_and_shows_messages() {
    let broker = StubBroker::new();
    dead_letter(
        &broker,
        "emails",
        &[("send", 1), ("send", 2)],
        "boom: SMTP down",
    )
    .await;
    for n in 0..3 {
        broker
            .enqueue(&mut Message::new("emails", "send", &(n,), &()).unwrap())
            .await
            .unwrap();
    }
    let r = dashboard(&broker);

    let o = get(&r, "/api/queues").await;
    assert_eq!(o.status, StatusCode::OK);
    let o = o.json();
    assert_eq!(o["broker"], "stub");
    let names: Vec<&str> = o["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["emails", "named"]);
    assert_eq!(o["queues"][0]["ready"], 3);
    assert_eq!(o["queues"][0]["dead"], 2);
    assert_eq!(o["queues"][0]["workers"], 0);
    assert!(!o["queues"][0]["history"].as_array().unwrap().is_empty());

    let page = get(
        &r,
        "/api/queues/emails/messages?state=ready&offset=1&limit=5",
    )
    .await;
    let page = page.json();
    assert_eq!(page["supported"], true);
    let args: Vec<i64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["args"][0].as_i64().unwrap())
        .collect();
    assert_eq!(args, [1, 2]);

    let dead = get(&r, "/api/queues/emails/messages?state=dead")
        .await
        .json();
    let first = &dead["messages"][0];
    assert_eq!(first["actor"], "send");
    assert_eq!(first["call"], "send(1)");
    assert_eq!(first["reason"], "boom: SMTP down");
    let message_id = first["message_id"].as_str().unwrap();

    // One message, by its message id, with no result store configured.
    let one = get(
        &r,
        &format!("/api/queues/emails/messages/{message_id}?state=dead"),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    let one = one.json();
    assert_eq!(one["message_id"], message_id);
    assert_eq!(one["result"], serde_json::Value::Null);

    assert_eq!(
        get(&r, "/api/queues/emails/messages/nope?state=dead")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&r, "/api/queues/emails/messages?state=lost")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&r, "/api/queues/bad%20name/messages").await.status,
        StatusCode::BAD_REQUEST
    );

    // The pages show the same.
    let html = get(&r, "/").await;
    assert_eq!(html.status, StatusCode::OK);
    assert!(html.text.contains(r#"data-queue="emails""#));
    let html = get(&r, "/queues/emails?state=dead").await.text;
    assert!(
        html.contains("send(1)") && html.contains("boom: SMTP down"),
        "{html}"
    );
    let html = get(
        &r,
        &format!("/queues/emails/messages/{message_id}?state=dead"),
    )
    .await
    .text;
    assert!(html.contains("Requeue") && html.contains("boom: SMTP down"));
    assert!(get(&r, "/assets/live.js")
        .await
        .text
        .contains("/api/queues"));
    assert!(get(&r, "/schedules").await.text.contains("Unique locks"));
    assert!(get(&r, "/workers")
        .await
        .text
        .contains("No worker is running"));
}

static RAN: AtomicUsize = AtomicUsize::new(0);
dq_test::sync_handler!(send, |_n: i64| {
    RAN.fetch_add(1, Ordering::SeqCst);
    Ok(serde_json::Value::Null)
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeued_dead_letter_runs_and_bulk_delete_takes_an_actor() {
    let broker = StubBroker::new();
    dead_letter(
        &broker,
        "jobs",
        &[("send", 1), ("report", 2), ("report", 3)],
        "failed",
    )
    .await;
    let r = dashboard(&broker);
    let token = crate::csrf(&r).await;
    let letters = broker.dead_letters("jobs", 10).await.unwrap();
    let send_id = letters[0].id.clone();

    // Requeue one through the page's form: no confirmation for one message.
    let done = post_form(
        &r,
        "/queues/jobs/requeue",
        &[("csrf", &token), ("ids", &send_id)],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert!(done.headers[header::LOCATION]
        .to_str()
        .unwrap()
        .contains("Requeued%201%20message"));
    let app = dq_test::stack::app(
        &broker,
        vec![],
        vec![Actor::new(
            "send",
            ActorOptions {
                queue_name: "jobs".into(),
                ..ActorOptions::default()
            },
            send,
        )],
    );
    let worker = dq_test::stack::worker(&app, 2).await;
    broker
        .join_with(
            "jobs",
            dq_broker_stub::JoinOptions::default()
                .fail_fast(false)
                .timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    worker.stop().await.unwrap();
    assert_eq!(RAN.load(Ordering::SeqCst), 1);

    // Bulk delete by actor: first the confirmation page, then the deed.
    let ask = post_form(
        &r,
        "/queues/jobs/delete",
        &[("csrf", &token), ("actor", "report")],
    )
    .await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(
        ask.text
            .contains("Delete 2 message(s), the dead letters of actor report"),
        "{}",
        ask.text
    );
    assert!(ask.text.contains(r#"name="confirmed" value="yes""#));
    assert_eq!(broker.stats("jobs").await.unwrap().dead, 2);
    let done = post_form(
        &r,
        "/queues/jobs/delete",
        &[("csrf", &token), ("actor", "report"), ("confirmed", "yes")],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(broker.stats("jobs").await.unwrap().dead, 0);
}

#[tokio::test]
async fn the_api_requeues_and_deletes_by_filter_and_enqueues() {
    let broker = StubBroker::new();
    dead_letter(&broker, "q", &[("a", 1), ("b", 2)], "ValueError: bad").await;
    dead_letter(&broker, "q", &[("a", 3)], "KeyError: gone").await;
    let r = dashboard(&broker);
    let token = crate::csrf(&r).await;

    let nothing = post_json(&r, "/api/queues/q/dead/requeue", Some(&token), json!({})).await;
    assert_eq!(nothing.status, StatusCode::BAD_REQUEST);

    let done = post_json(
        &r,
        "/api/queues/q/dead/requeue",
        Some(&token),
        json!({ "error": "valueerror" }),
    )
    .await
    .json();
    assert_eq!(done["count"], 2);
    assert_eq!(broker.stats("q").await.unwrap().ready, 2);
    let done = post_json(
        &r,
        "/api/queues/q/dead/delete",
        Some(&token),
        json!({ "all": true }),
    )
    .await
    .json();
    assert_eq!(done["count"], 1);

    let sent = post_json(
        &r,
        "/api/enqueue",
        Some(&token),
        json!({ "actor": "later", "queue": "q", "args": [1], "delay_ms": 60000 }),
    )
    .await
    .json();
    assert_eq!(sent["queue_name"], "q.DQ");
    assert_eq!(broker.stats("q").await.unwrap().delayed, 1);
    let bad = post_json(
        &r,
        "/api/enqueue",
        Some(&token),
        json!({ "actor": "x", "queue": "q", "args": {"not": "a list"} }),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Without an abort backend, aborting says how to get one.
    let abort = post_json(
        &r,
        "/api/messages/abc/abort",
        Some(&token),
        json!({ "mode": "cancel" }),
    )
    .await;
    assert_eq!(abort.status, StatusCode::NOT_IMPLEMENTED);
    assert!(abort.text.contains("--abort"));
}

#[tokio::test]
async fn aborts_go_through_dramatiq_aborts_events() {
    let broker = StubBroker::new();
    let backend = dq_abort::MemoryBackend::default();
    let r = Dashboard::new(Arc::new(broker.clone()))
        .abortable(dq_abort::Abortable::new(backend.clone()))
        .build()
        .unwrap();
    let token = crate::csrf(&r).await;
    let ask = post_form(
        &r,
        "/messages/m-1/abort",
        &[("csrf", &token), ("mode", "cancel"), ("queue", "q")],
    )
    .await;
    assert!(ask.text.contains("Cancel message m-1"), "{}", ask.text);
    let done = post_form(
        &r,
        "/messages/m-1/abort",
        &[
            ("csrf", &token),
            ("mode", "cancel"),
            ("queue", "q"),
            ("confirmed", "yes"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text);
    use dq_abort::EventBackend as _;
    let event = backend.poll("cancel:m-1").await.unwrap();
    assert!(event.is_some(), "no cancel event for m-1");
}

#[tokio::test]
async fn a_message_page_shows_its_stored_result() {
    use dq_results::ResultBackendExt as _;
    let broker = StubBroker::new();
    let mut m = Message::new("sums", "add", &(1, 2), &()).unwrap();
    broker.enqueue(&mut m).await.unwrap();
    let results = dq_results::MemoryBackend::default();
    results
        .store_result(&m, &json!(3), Duration::from_secs(60))
        .await
        .unwrap();
    let r = Dashboard::new(Arc::new(broker.clone()))
        .results(Arc::new(results))
        .build()
        .unwrap();
    let one = get(
        &r,
        &format!("/api/queues/sums/messages/{}?state=ready", m.message_id),
    )
    .await
    .json();
    assert_eq!(one["result"], json!({ "value": 3 }));
    let mut other = Message::new("sums", "add", &(5, 5), &()).unwrap();
    broker.enqueue(&mut other).await.unwrap();
    let missing = get(
        &r,
        &format!("/api/queues/sums/messages/{}?state=ready", other.message_id),
    )
    .await
    .json();
    assert!(
        missing["result"]["error"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{missing}"
    );
    let html = get(
        &r,
        &format!("/queues/sums/messages/{}?state=ready", m.message_id),
    )
    .await;
    assert!(
        html.text.contains("&quot;value&quot;: 3") || html.text.contains("\"value\": 3"),
        "{}",
        html.text
    );
}

#[tokio::test]
async fn unique_locks_show_per_queue() {
    use dq_core::{UniqueLock, UniqueMode, UniqueUntil};
    let broker = StubBroker::new();
    let r = dashboard(&broker);
    assert_eq!(
        get(&r, "/api/unique-locks").await.json()["queues"],
        json!([])
    );
    for key in ["report:1", "report:2"] {
        let lock = UniqueLock {
            key: key.to_owned(),
            mode: UniqueMode::Unique,
            until: UniqueUntil::Finished,
            ttl: Duration::from_secs(60),
        };
        let mut m = Message::new("reports", "build", &(1,), &()).unwrap();
        broker.enqueue_unique(&lock, &mut m).await.unwrap();
    }
    let l = get(&r, "/api/unique-locks").await.json();
    assert_eq!(l["supported"], true);
    assert_eq!(l["queues"], json!([{ "queue": "reports", "locks": 2 }]));
    let html = get(&r, "/schedules").await.text;
    assert!(
        html.contains("Locks held") && html.contains("reports"),
        "{html}"
    );
}
