//! Recovery of a dead broker's unacked messages by maintenance, heartbeats that keep a busy
//! broker alive, dead-letter expiry, and strays left by a consumer dropped without `close`.

use std::collections::HashSet;
use std::time::Duration;

use dq_broker_redis::MAINTENANCE_SCALE;
use dq_core::{now_ms, Broker, Token};

use crate::util::{decode, enqueue, fetch_n, Ns};

/// A broker that runs maintenance on every call and considers a second of silence death.
async fn sweeper(ns: &Ns, heartbeat_timeout: Duration) -> dq_broker_redis::RedisBroker {
    ns.builder()
        .heartbeat_timeout(heartbeat_timeout)
        .maintenance_chance(MAINTENANCE_SCALE)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_requeues_the_ack_set_of_a_dead_worker() {
    let ns = Ns::new();
    // A worker (of either language) that fetched two ids and died long ago; one of its
    // messages was meanwhile settled elsewhere, so its body is gone.
    let dead = "0b7d3f6e-58a4-4c0c-9d57-d8d6d7a0a001";
    let old = (now_ms() - 600_000).to_string();
    let _: () = ns
        .cmd(&["ZADD", &ns.key("__heartbeats__"), &old, dead])
        .await;
    let body = r#"{"queue_name":"default","actor_name":"work","args":[1],"kwargs":{},"options":{"redis_message_id":"r1"},"message_id":"m1","message_timestamp":1}"#;
    let _: () = ns.cmd(&["HSET", &ns.key("default.msgs"), "r1", body]).await;
    let acks = ns.key(&format!("__acks__.{dead}.default"));
    let _: () = ns.cmd(&["SADD", &acks, "r1", "r2"]).await;

    let broker = sweeper(&ns, Duration::from_secs(60)).await;
    let mut consumer = broker.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    assert_eq!(got[0].token, Token::Id("r1".into()));
    assert_eq!(got[0].body, body.as_bytes());
    // The ghost r2 is not pushed; the dead worker's set and, holding nothing more, its
    // heartbeat are gone.
    assert!(ns.list("default").await.is_empty());
    let exists: i64 = ns.cmd(&["EXISTS", &acks]).await;
    assert_eq!(exists, 0);
    let score: Option<f64> = ns.cmd(&["ZSCORE", &ns.key("__heartbeats__"), dead]).await;
    assert_eq!(score, None);
    consumer.acker().ack(&[got[0].token.clone()]).await.unwrap();
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_heartbeat_stays_while_it_holds_other_queues() {
    let ns = Ns::new();
    let dead = "0b7d3f6e-58a4-4c0c-9d57-d8d6d7a0a002";
    let old = (now_ms() - 600_000).to_string();
    let _: () = ns
        .cmd(&["ZADD", &ns.key("__heartbeats__"), &old, dead])
        .await;
    let _: () = ns.cmd(&["HSET", &ns.key("other.msgs"), "x", "{}"]).await;
    let other_acks = ns.key(&format!("__acks__.{dead}.other"));
    let _: () = ns.cmd(&["SADD", &other_acks, "x"]).await;

    let broker = sweeper(&ns, Duration::from_secs(60)).await;
    let mut consumer = broker.consume("default", 10).await.unwrap();
    assert!(consumer
        .fetch(Duration::from_millis(50))
        .await
        .unwrap()
        .is_empty());
    // Maintenance of "default" leaves "other" alone, so the dead worker stays listed until a
    // consumer of "other" recovers it.
    let score: Option<f64> = ns.cmd(&["ZSCORE", &ns.key("__heartbeats__"), dead]).await;
    assert!(score.is_some());
    assert_eq!(
        ns.set(&format!("__acks__.{dead}.other")).await,
        vec!["x".to_owned()]
    );
    consumer.close().await.unwrap();
}

/// A real broker that stops heartbeating (its process died) has its messages recovered by
/// another broker's maintenance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_a_broker_that_stopped_are_recovered() {
    let ns = Ns::new();
    let timeout = Duration::from_millis(500);
    let doomed = ns
        .builder()
        .heartbeat_timeout(timeout)
        .build()
        .await
        .unwrap();
    let doomed_id = doomed.broker_id().to_owned();
    let sent: HashSet<String> = [
        enqueue(&doomed, "default", 1).await,
        enqueue(&doomed, "default", 2).await,
    ]
    .iter()
    .map(|m| m.message_id.clone())
    .collect();
    let mut consumer = doomed.consume("default", 10).await.unwrap();
    fetch_n(&mut consumer, 2).await;
    // Dropped without close, like a killed process: the ids stay in its ack set.
    drop(consumer);
    drop(doomed);

    let key = ns.key("__heartbeats__");
    let mut waited = 0;
    loop {
        let score: Option<f64> = ns.cmd(&["ZSCORE", &key, &doomed_id]).await;
        if (now_ms() - score.expect("heartbeat") as i64) > 2 * timeout.as_millis() as i64 {
            break;
        }
        waited += 1;
        assert!(waited < 100, "the dropped broker kept heartbeating");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let rescuer = sweeper(&ns, timeout).await;
    let mut consumer = rescuer.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 2).await;
    let recovered: HashSet<String> = got.iter().map(|d| decode(d).message_id).collect();
    assert_eq!(recovered, sent);
    let score: Option<f64> = ns.cmd(&["ZSCORE", &key, &doomed_id]).await;
    assert_eq!(score, None);
    let tokens: Vec<Token> = got.into_iter().map(|d| d.token).collect();
    consumer.acker().ack(&tokens).await.unwrap();
    consumer.close().await.unwrap();
}

/// A broker whose consumers make no calls (every worker thread busy on a long message) keeps
/// heartbeating, so its messages are not taken from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_broker_keeps_its_messages() {
    let ns = Ns::new();
    // Generous against a loaded test machine: the broker heartbeats every quarter of this.
    let timeout = Duration::from_millis(1_000);
    let busy = ns
        .builder()
        .heartbeat_timeout(timeout)
        .build()
        .await
        .unwrap();
    let sent = enqueue(&busy, "default", 1).await;
    let mut consumer = busy.consume("default", 1).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;

    tokio::time::sleep(timeout * 5 / 2).await;
    let rescuer = sweeper(&ns, timeout).await;
    let mut other = rescuer.consume("default", 10).await.unwrap();
    assert!(other
        .fetch(Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ns.acks(&busy, "default").await,
        vec![sent.options.redis_message_id().unwrap().to_owned()]
    );
    consumer.acker().ack(&[got[0].token.clone()]).await.unwrap();
    assert_eq!(ns.hlen("default.msgs").await, 0);
    other.close().await.unwrap();
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_expires_old_dead_letters() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    for i in 0..3 {
        enqueue(&broker, "default", i).await;
    }
    let mut consumer = broker.consume("default", 3).await.unwrap();
    let got = fetch_n(&mut consumer, 3).await;
    for d in &got {
        consumer.acker().nack(&d.token, "dead").await.unwrap();
    }
    // One of them was dead-lettered "yesterday".
    let old = (now_ms() - 86_400_000).to_string();
    let Token::Id(old_id) = &got[0].token else {
        unreachable!()
    };
    let _: () = ns.cmd(&["ZADD", &ns.key("default.XQ"), &old, old_id]).await;

    let sweeper = ns
        .builder()
        .dead_message_ttl(Duration::from_secs(3_600))
        .maintenance_chance(MAINTENANCE_SCALE)
        .build()
        .await
        .unwrap();
    let mut c = sweeper.consume("default", 1).await.unwrap();
    assert!(c.fetch(Duration::from_millis(20)).await.unwrap().is_empty());
    let dead = broker.dead_letters("default", 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| &d.id != old_id));
    assert!(ns.hget("default.XQ.msgs", old_id).await.is_none());
    c.close().await.unwrap();
    consumer.close().await.unwrap();
}

/// A consumer dropped without `close` leaves its ids in the broker's ack set; the next consumer
/// of that queue in the same broker gives them back instead of waiting for the process to die.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_consumer_gives_back_what_a_dropped_one_held() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    for i in 0..2 {
        enqueue(&broker, "default", i).await;
    }
    let mut first = broker.consume("default", 10).await.unwrap();
    let lost = fetch_n(&mut first, 2).await;
    drop(first);
    assert_eq!(ns.acks(&broker, "default").await.len(), 2);

    let mut second = broker.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut second, 2).await;
    let a: HashSet<_> = lost.iter().map(|d| d.token.clone()).collect();
    let b: HashSet<_> = got.iter().map(|d| d.token.clone()).collect();
    assert_eq!(a, b);
    second.close().await.unwrap();
    assert!(ns.acks(&broker, "default").await.is_empty());
}

/// Consumers of one queue in one broker never take each other's deliveries for strays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_sibling_consumer_keeps_its_deliveries() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    enqueue(&broker, "default", 1).await;
    let mut first = broker.consume("default", 10).await.unwrap();
    let held = fetch_n(&mut first, 1).await;
    let mut second = broker.consume("default", 10).await.unwrap();
    assert!(second
        .fetch(Duration::from_millis(50))
        .await
        .unwrap()
        .is_empty());
    assert!(ns.list("default").await.is_empty());
    first.acker().ack(&[held[0].token.clone()]).await.unwrap();
    first.close().await.unwrap();
    second.close().await.unwrap();
}
