//! Broker priority on Redis (`max_priority`): the priority zset and its pseudo-worker, order
//! (higher first, FIFO within a level), requeue and recovery back into a level, the hand-over to
//! the list when no dq consumer is alive, promotion of prioritized messages found on the list,
//! purge and stats.

use std::time::Duration;

use dq_broker_redis::{RedisBroker, MAINTENANCE_SCALE};
use dq_core::{now_ms, Broker, Message};

use crate::util::{decode, fetch_n, Ns};

/// A message whose argument is its tag, with `broker_priority` `p` when given.
fn tagged(queue: &str, tag: &str, p: Option<i64>) -> Message {
    let mut m = Message::new(queue, "work", &(tag,), &()).expect("message");
    if let Some(p) = p {
        m.options.insert("broker_priority".into(), p.into());
    }
    m
}

async fn send(broker: &RedisBroker, queue: &str, items: &[(&str, Option<i64>)]) {
    for (tag, p) in items {
        broker
            .enqueue(&mut tagged(queue, tag, *p))
            .await
            .expect("enqueue");
    }
}

fn tags(got: &[dq_core::Delivery]) -> Vec<String> {
    got.iter()
        .map(|d| {
            let (tag,): (String,) = serde_json::from_str(decode(d).args.get()).expect("tag");
            tag
        })
        .collect()
}

async fn prioritized(ns: &Ns, max: u8) -> RedisBroker {
    ns.builder().max_priority(Some(max)).build().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_first_fifo_within_a_level() {
    let ns = Ns::new();
    let broker = prioritized(&ns, 10).await;
    assert_eq!(broker.max_priority(), Some(10));
    send(
        &broker,
        "default",
        &[
            ("plain-a", None),
            ("p5-a", Some(5)),
            ("p1-a", Some(1)),
            ("zero", Some(0)),
            ("p5-b", Some(5)),
            ("p10-a", Some(10)),
            // Above max_priority counts as max_priority, after the p10 sent before it.
            ("p10-b", Some(200)),
            ("p1-b", Some(1)),
            ("plain-b", None),
        ],
    )
    .await;
    // Plain messages (no priority, or 0) stay on Dramatiq's list; the others are in the zset
    // and held by the pseudo-worker, whose heartbeat exists.
    assert_eq!(ns.list("default").await.len(), 3);
    assert_eq!(
        ns.set("__acks__.__dq_priority__.default.default")
            .await
            .len(),
        6
    );
    let zcard: usize = ns.cmd(&["ZCARD", &ns.key("__dq_priority__.default")]).await;
    assert_eq!(zcard, 6);
    let beat: Option<f64> = ns
        .cmd(&[
            "ZSCORE",
            &ns.key("__heartbeats__"),
            "__dq_priority__.default",
        ])
        .await;
    assert!(beat.is_some());
    let stats = broker.stats("default").await.unwrap();
    assert_eq!((stats.ready, stats.prioritized, stats.in_flight), (9, 6, 0));
    // Listing queues shows the queue once, not dq's keys.
    assert_eq!(broker.list_queues().await.unwrap(), vec!["default"]);

    let mut consumer = broker.consume("default", 4).await.unwrap();
    let mut order = Vec::new();
    while order.len() < 9 {
        let got = fetch_n(&mut consumer, (9 - order.len()).min(4)).await;
        order.extend(tags(&got));
        let tokens: Vec<_> = got.iter().map(|d| d.token.clone()).collect();
        consumer.acker().ack(&tokens).await.unwrap();
    }
    assert_eq!(
        order,
        ["p10-a", "p10-b", "p5-a", "p5-b", "p1-a", "p1-b", "plain-a", "zero", "plain-b"]
    );
    let stats = broker.stats("default").await.unwrap();
    assert_eq!((stats.ready, stats.prioritized, stats.in_flight), (0, 0, 0));
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_max_priority_the_option_changes_nothing() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    send(&broker, "default", &[("a", None), ("b", Some(9))]).await;
    assert_eq!(ns.list("default").await.len(), 2);
    let mut consumer = broker.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 2).await;
    assert_eq!(tags(&got), ["a", "b"]);
    consumer.close().await.unwrap();
    // The delay queue never uses the zset, even with max_priority.
    let broker = prioritized(&ns, 10).await;
    send(&broker, "default.DQ", &[("d", Some(9))]).await;
    assert_eq!(ns.list("default.DQ").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_messages_go_back_to_the_head_of_their_level() {
    let ns = Ns::new();
    let broker = prioritized(&ns, 10).await;
    send(
        &broker,
        "default",
        &[
            ("p5-a", Some(5)),
            ("p5-b", Some(5)),
            ("p5-c", Some(5)),
            ("plain", None),
        ],
    )
    .await;
    let mut consumer = broker.consume("default", 2).await.unwrap();
    let got = fetch_n(&mut consumer, 2).await;
    assert_eq!(tags(&got), ["p5-a", "p5-b"]);
    let tokens: Vec<_> = got.iter().map(|d| d.token.clone()).collect();
    consumer.acker().requeue(&tokens).await.unwrap();
    assert_eq!(broker.stats("default").await.unwrap().prioritized, 3);
    // Closing gives back what the consumer still holds, into its level too.
    let got = fetch_n(&mut consumer, 2).await;
    assert_eq!(tags(&got), ["p5-a", "p5-b"]);
    consumer.close().await.unwrap();

    let mut consumer = broker.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 4).await;
    let mut order = tags(&got);
    // A closing consumer gives back what it holds in no particular order; both go ahead of
    // p5-c all the same.
    order[..2].sort();
    assert_eq!(order, ["p5-a", "p5-b", "p5-c", "plain"]);
    let tokens: Vec<_> = got.iter().map(|d| d.token.clone()).collect();
    consumer.acker().ack(&tokens).await.unwrap();
    consumer.close().await.unwrap();
    assert_eq!(
        broker.stats("default").await.unwrap(),
        dq_core::QueueStats::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dq_workers_prioritized_messages_return_to_their_level() {
    let ns = Ns::new();
    let producer = prioritized(&ns, 10).await;
    send(
        &producer,
        "default",
        &[("p3", Some(3)), ("plain", None), ("p7", Some(7))],
    )
    .await;
    // A dq worker fetches everything, then dies without settling (its consumer is forgotten,
    // and its heartbeat is made old).
    let doomed = prioritized(&ns, 10).await;
    let mut consumer = doomed.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 3).await;
    assert_eq!(tags(&got), ["p7", "p3", "plain"]);
    std::mem::forget(consumer);
    let old = (now_ms() - 600_000).to_string();
    let _: () = ns
        .cmd(&["ZADD", &ns.key("__heartbeats__"), &old, doomed.broker_id()])
        .await;

    // Another dq worker's maintenance gives them back: prioritized ones into the zset.
    let sweeper = ns
        .builder()
        .max_priority(Some(10))
        .maintenance_chance(MAINTENANCE_SCALE)
        .build()
        .await
        .unwrap();
    let mut consumer = sweeper.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 3).await;
    assert_eq!(tags(&got), ["p7", "p3", "plain"]);
    let tokens: Vec<_> = got.iter().map(|d| d.token.clone()).collect();
    consumer.acker().ack(&tokens).await.unwrap();
    consumer.close().await.unwrap();
    drop(doomed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_dq_consumer_alive_maintenance_hands_them_to_the_list() {
    let ns = Ns::new();
    let producer = prioritized(&ns, 10).await;
    send(
        &producer,
        "default",
        &[("p3", Some(3)), ("plain", None), ("p7", Some(7))],
    )
    .await;
    // A consumer without priority (what a Python worker is to these keys), with a short
    // heartbeat timeout and maintenance on every call: once the pseudo-worker's heartbeat is
    // older than the timeout, it is a dead worker whose ids go onto the list.
    let plain = ns
        .builder()
        .heartbeat_timeout(Duration::from_millis(300))
        .maintenance_chance(MAINTENANCE_SCALE)
        .build()
        .await
        .unwrap();
    let mut consumer = plain.consume("default", 10).await.unwrap();
    let first = fetch_n(&mut consumer, 1).await;
    assert_eq!(tags(&first), ["plain"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = fetch_n(&mut consumer, 2).await;
    let mut rest = tags(&got);
    rest.sort();
    assert_eq!(rest, ["p3", "p7"]);
    let beat: Option<f64> = ns
        .cmd(&[
            "ZSCORE",
            &ns.key("__heartbeats__"),
            "__dq_priority__.default",
        ])
        .await;
    assert_eq!(beat, None, "the empty pseudo-worker is forgotten");
    let tokens: Vec<_> = first.iter().chain(&got).map(|d| d.token.clone()).collect();
    consumer.acker().ack(&tokens).await.unwrap();
    consumer.close().await.unwrap();

    // The zset still names them, stale: a dq consumer with priority drops them and delivers
    // nothing twice.
    let mut consumer = producer.consume("default", 10).await.unwrap();
    assert!(consumer
        .fetch(Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
    let zcard: usize = ns.cmd(&["ZCARD", &ns.key("__dq_priority__.default")]).await;
    assert_eq!(zcard, 0);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_dq_consumer_keeps_the_pseudo_worker_alive() {
    let ns = Ns::new();
    let dq = ns
        .builder()
        .max_priority(Some(10))
        .heartbeat_timeout(Duration::from_millis(400))
        .build()
        .await
        .unwrap();
    let mut consumer = dq.consume("default", 1).await.unwrap();
    send(&dq, "default", &[("busy", None), ("p3", Some(3))]).await;
    // The dq consumer holds its prefetch and fetches no more; its heartbeat task keeps the
    // pseudo-worker fresh all the same, so a plain consumer's maintenance leaves p3 alone.
    let got = fetch_n(&mut consumer, 1).await;
    assert_eq!(tags(&got), ["p3"]);
    send(&dq, "default", &[("p4", Some(4))]).await;
    let plain = ns
        .builder()
        .heartbeat_timeout(Duration::from_millis(400))
        .maintenance_chance(MAINTENANCE_SCALE)
        .build()
        .await
        .unwrap();
    let mut other = plain.consume("default", 10).await.unwrap();
    // Meanwhile the same dq broker consumes and sends to another queue: its calls keep its own
    // heartbeat fresh (so its heartbeat task need not write it), but not the pseudo-worker of
    // "default".
    let elsewhere = dq.consume("elsewhere", 1).await.unwrap();
    let sender = dq.clone();
    let polling = tokio::spawn(async move {
        for _ in 0..45 {
            send(&sender, "elsewhere", &[("x", None)]).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        elsewhere.close().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(900)).await;
    polling.await.unwrap();
    let got_plain = fetch_n(&mut other, 1).await;
    assert_eq!(tags(&got_plain), ["busy"]);
    assert!(other
        .fetch(Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(dq.stats("default").await.unwrap().prioritized, 1);
    other
        .acker()
        .ack(&[got_plain[0].token.clone()])
        .await
        .unwrap();
    other.close().await.unwrap();
    consumer.acker().ack(&[got[0].token.clone()]).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    assert_eq!(tags(&got), ["p4"]);
    consumer.acker().ack(&[got[0].token.clone()]).await.unwrap();
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prioritized_messages_on_the_list_are_promoted() {
    let ns = Ns::new();
    // A producer without max_priority (as Python's) puts everything on the list.
    let plain = ns.broker().await;
    send(
        &plain,
        "default",
        &[
            ("plain-a", None),
            ("p2", Some(2)),
            ("plain-b", None),
            ("p9", Some(9)),
        ],
    )
    .await;
    let broker = prioritized(&ns, 10).await;
    let mut consumer = broker.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 4).await;
    assert_eq!(tags(&got), ["p9", "p2", "plain-a", "plain-b"]);
    let tokens: Vec<_> = got.iter().map(|d| d.token.clone()).collect();
    consumer.acker().ack(&tokens).await.unwrap();
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_deletes_the_priority_keys() {
    let ns = Ns::new();
    let broker = prioritized(&ns, 10).await;
    send(&broker, "default", &[("p1", Some(1)), ("plain", None)]).await;
    broker.flush("default").await.unwrap();
    assert_eq!(
        broker.stats("default").await.unwrap(),
        dq_core::QueueStats::default()
    );
    for key in [
        "__dq_priority__.default",
        "__dq_priority__.default.seq",
        "__dq_priority__.default.front",
        "__acks__.__dq_priority__.default.default",
    ] {
        let exists: i64 = ns.cmd(&["EXISTS", &ns.key(key)]).await;
        assert_eq!(exists, 0, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_priority_zero_is_refused() {
    let ns = Ns::new();
    let e = ns
        .builder()
        .max_priority(Some(0))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(e, dq_broker_redis::RedisBrokerError::InvalidConfig(_)),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_send_keeps_its_priority() {
    use dq_core::{SendOutcome, UniqueLock, UniqueMode, UniqueUntil};
    let ns = Ns::new();
    let broker = prioritized(&ns, 10).await;
    send(&broker, "default", &[("plain", None), ("p3", Some(3))]).await;
    let lock = UniqueLock {
        key: "only-one".into(),
        mode: UniqueMode::Unique,
        until: UniqueUntil::Finished,
        ttl: Duration::from_secs(60),
    };
    let outcome = broker
        .enqueue_unique(&lock, &mut tagged("default", "unique-p9", Some(9)))
        .await
        .unwrap();
    assert_eq!(outcome, SendOutcome::Enqueued);
    // The same key again is refused, and does not land anywhere.
    let again = broker
        .enqueue_unique(&lock, &mut tagged("default", "unique-again", Some(9)))
        .await
        .unwrap();
    assert!(matches!(again, SendOutcome::Duplicate { .. }), "{again:?}");
    let stats = broker.stats("default").await.unwrap();
    assert_eq!((stats.ready, stats.prioritized), (3, 2));
    let mut consumer = broker.consume("default", 3).await.unwrap();
    let got = fetch_n(&mut consumer, 3).await;
    assert_eq!(tags(&got), ["unique-p9", "p3", "plain"]);
    let tokens: Vec<_> = got.iter().map(|d| d.token.clone()).collect();
    consumer.acker().ack(&tokens).await.unwrap();
    consumer.close().await.unwrap();
}
