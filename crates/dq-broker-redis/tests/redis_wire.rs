//! Keys and bodies exactly as Dramatiq writes and reads them (WIRE.md section 2).

use std::time::Duration;

use dq_core::{now_ms, Broker, Message, Token};
use futures_util::StreamExt;

use crate::util::{decode, enqueue, fetch_n, message, Ns};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_writes_dramatiq_keys_and_body() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let m = enqueue(&broker, "default", 7).await;

    let rid = m
        .options
        .redis_message_id()
        .expect("redis_message_id set")
        .to_owned();
    assert_eq!(rid.len(), 36);
    assert_eq!(uuid::Uuid::parse_str(&rid).unwrap().get_version_num(), 4);
    // The list entry and the hash field are the body's options.redis_message_id.
    assert_eq!(ns.list("default").await, vec![rid.clone()]);
    let body = ns.hget("default.msgs", &rid).await.expect("body in .msgs");
    let stored = Message::decode(body.as_bytes()).unwrap();
    assert_eq!(stored, m);
    assert_eq!(stored.queue_name, "default");
    assert_eq!(stored.options.redis_message_id(), Some(rid.as_str()));
    assert!(body.starts_with(r#"{"queue_name":"default","actor_name":"work","args":[7],"kwargs":{},"options":{"redis_message_id":""#), "{body}");
    // Every script call heartbeats.
    let score: Option<f64> = ns
        .cmd(&["ZSCORE", &ns.key("__heartbeats__"), broker.broker_id()])
        .await;
    assert!(score.expect("heartbeat") as i64 <= now_ms());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_message_goes_to_the_delay_queue() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let mut m = message("default.DQ", 1);
    let eta = now_ms() + 60_000;
    m.options.set_eta(eta);
    broker.enqueue(&mut m).await.unwrap();
    let rid = m.options.redis_message_id().unwrap().to_owned();

    assert!(ns.list("default").await.is_empty());
    assert_eq!(ns.list("default.DQ").await, vec![rid.clone()]);
    let body = ns.hget("default.DQ.msgs", &rid).await.unwrap();
    let stored = Message::decode(body.as_bytes()).unwrap();
    assert_eq!(stored.queue_name, "default.DQ");
    assert_eq!(stored.options.eta(), Some(eta));
    let stats = broker.stats("default").await.unwrap();
    assert_eq!((stats.ready, stats.delayed), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_enqueue_gets_a_fresh_redis_message_id() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let mut m = message("default", 1);
    broker.enqueue(&mut m).await.unwrap();
    let first = m.options.redis_message_id().unwrap().to_owned();
    broker.enqueue(&mut m).await.unwrap();
    let second = m.options.redis_message_id().unwrap().to_owned();
    assert_ne!(first, second);
    assert_eq!(ns.list("default").await, vec![first, second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_many_keeps_order_per_queue_across_batches() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let mut messages: Vec<Message> = (0..4_500)
        .map(|i| message(if i % 3 == 0 { "b" } else { "a" }, i))
        .collect();
    broker.enqueue_many(&mut messages).await.unwrap();

    let rids = |q: &str| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m.queue_name == q)
            .map(|m| m.options.redis_message_id().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ns.list("a").await, rids("a"));
    assert_eq!(ns.list("b").await, rids("b"));
    assert_eq!(ns.hlen("a.msgs").await, 3_000);
    assert_eq!(ns.hlen("b.msgs").await, 1_500);
    let last = messages.last().unwrap();
    let body = ns
        .hget("a.msgs", last.options.redis_message_id().unwrap())
        .await
        .unwrap();
    assert_eq!(&Message::decode(body.as_bytes()).unwrap(), last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_queue_names_are_rejected() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    for bad in ["9lives", "a b", "default.XQ", ""] {
        let mut m = message(bad, 1);
        let err = broker.enqueue(&mut m).await.unwrap_err();
        assert_eq!(err.kind(), dq_core::BrokerErrorKind::Rejected, "{bad}");
        assert!(broker.consume(bad, 1).await.is_err(), "{bad}");
    }
    broker.declare_queue("reports.high-prio_2").await.unwrap();
}

/// The hand-made message from Dramatiq's docs: `HSET ns:default.msgs rid json`, then
/// `RPUSH ns:default rid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_interop_message_is_consumed() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let rid = uuid::Uuid::new_v4().to_string();
    let body = format!(
        r#"{{"queue_name":"default","actor_name":"add","args":[3,"\u00e9"],"kwargs":{{"x":null}},"options":{{"redis_message_id":"{rid}"}},"message_id":"5029b3a5-3be4-4a04-a9a0-56e2a5e4e8b9","message_timestamp":1795397559159}}"#
    );
    let _: () = ns
        .cmd(&["HSET", &ns.key("default.msgs"), &rid, &body])
        .await;
    let _: () = ns.cmd(&["RPUSH", &ns.key("default"), &rid]).await;

    let mut consumer = broker.consume("default", 4).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    assert_eq!(got[0].token, Token::Id(rid.clone()));
    assert_eq!(got[0].body, body.as_bytes());
    let m = decode(&got[0]);
    assert_eq!(m.actor_name, "add");
    assert_eq!(m.args_value().unwrap(), serde_json::json!([3, "é"]));
    assert_eq!(m.kwargs_value().unwrap(), serde_json::json!({"x": null}));
    assert_eq!(ns.acks(&broker, "default").await, vec![rid.clone()]);
    consumer.acker().ack(&[got[0].token.clone()]).await.unwrap();
    assert!(ns.acks(&broker, "default").await.is_empty());
    assert_eq!(ns.hlen("default.msgs").await, 0);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_isolated() {
    let a = Ns::new();
    let b = Ns::new();
    let broker_a = a.broker().await;
    let broker_b = b.broker().await;
    let sent = enqueue(&broker_a, "default", 1).await;

    let mut other = broker_b.consume("default", 4).await.unwrap();
    assert!(other
        .fetch(Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(broker_b.stats("default").await.unwrap().ready, 0);
    other.close().await.unwrap();

    let mut own = broker_a.consume("default", 4).await.unwrap();
    let got = fetch_n(&mut own, 1).await;
    assert_eq!(decode(&got[0]).message_id, sent.message_id);
    own.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_announces_on_the_notify_channel() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let client = redis::Client::open(crate::util::redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(ns.key("__dq_notify__.default"))
        .await
        .unwrap();
    let mut messages = pubsub.on_message();

    enqueue(&broker, "default", 1).await;
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(msg.get_payload::<i64>().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_consumer_receives_a_message_sent_while_it_waits() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let mut consumer = broker.consume("default", 4).await.unwrap();
    // Warm up: the first fetch returns nothing and leaves the consumer subscribed.
    assert!(consumer
        .fetch(Duration::from_millis(50))
        .await
        .unwrap()
        .is_empty());
    let producer = broker.clone();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        enqueue(&producer, "default", 42).await
    });
    let got = consumer.fetch(Duration::from_secs(10)).await.unwrap();
    let sent = send.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(decode(&got[0]).message_id, sent.message_id);
    consumer.close().await.unwrap();
}
