//! Delivery semantics: order, prefetch, competing consumers, settling, close, delays, errors.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dq_broker_stub::{Error, StubBroker};
use dq_core::{Broker, BrokerErrorKind, Token};

use crate::{msg, num, nums, tokens, BRIEF, PATIENCE};

#[tokio::test]
async fn fetch_is_fifo_and_bodies_are_the_encoded_message() {
    let broker = StubBroker::new();
    let mut sent = Vec::new();
    for n in 1..=5 {
        let mut m = msg("q", n);
        broker.enqueue(&mut m).await.unwrap();
        sent.push(m.encode());
    }
    let mut c = broker.consume("q", 10).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(nums(&got), [1, 2, 3, 4, 5]);
    let bodies: Vec<Vec<u8>> = got.iter().map(|d| d.body.clone()).collect();
    assert_eq!(bodies, sent);
    assert!(got.iter().all(|d| !d.redelivered));
    let distinct: HashSet<Token> = tokens(&got).into_iter().collect();
    assert_eq!(distinct.len(), 5);
}

#[tokio::test]
async fn fetch_on_an_empty_queue_returns_nothing_after_the_timeout() {
    let broker = StubBroker::new();
    let mut c = broker.consume("q", 1).await.unwrap();
    assert!(c.fetch(BRIEF).await.unwrap().is_empty());
    assert!(c.fetch(std::time::Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn prefetch_bounds_unsettled_deliveries() {
    let broker = StubBroker::new();
    for n in 1..=5 {
        broker.enqueue(&mut msg("q", n)).await.unwrap();
    }
    let mut c = broker.consume("q", 2).await.unwrap();
    let first = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(nums(&first), [1, 2]);
    assert!(c.fetch(BRIEF).await.unwrap().is_empty());

    c.acker().ack(&tokens(&first[..1])).await.unwrap();
    assert_eq!(nums(&c.fetch(PATIENCE).await.unwrap()), [3]);
    assert!(c.fetch(BRIEF).await.unwrap().is_empty());

    let stats = broker.stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (2, 2));
}

#[tokio::test]
async fn a_fetch_held_at_its_bound_resumes_when_a_delivery_is_settled() {
    let broker = StubBroker::new();
    for n in 1..=2 {
        broker.enqueue(&mut msg("q", n)).await.unwrap();
    }
    let mut c = broker.consume("q", 1).await.unwrap();
    let first = c.fetch(PATIENCE).await.unwrap();
    let acker = c.acker();
    let waiting = tokio::spawn(async move { c.fetch(PATIENCE).await.unwrap() });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    acker.ack(&tokens(&first)).await.unwrap();
    assert_eq!(nums(&waiting.await.unwrap()), [2]);
}

#[tokio::test]
async fn fetch_wakes_when_a_message_is_enqueued() {
    let broker = StubBroker::new();
    let mut c = broker.consume("q", 4).await.unwrap();
    let mut dc = broker.consume("q.DQ", 4).await.unwrap();
    let waiting = tokio::spawn(async move { c.fetch(PATIENCE).await.unwrap() });
    let waiting_dq = tokio::spawn(async move { dc.fetch(PATIENCE).await.unwrap() });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished() && !waiting_dq.is_finished());

    broker.enqueue(&mut msg("q", 7)).await.unwrap();
    broker.enqueue(&mut msg("q.DQ", 8)).await.unwrap();
    assert_eq!(nums(&waiting.await.unwrap()), [7]);
    assert_eq!(nums(&waiting_dq.await.unwrap()), [8]);
}

#[tokio::test]
async fn competing_consumers_get_distinct_messages() {
    let broker = StubBroker::new();
    for n in 1..=6 {
        broker.enqueue(&mut msg("q", n)).await.unwrap();
    }
    let mut a = broker.consume("q", 3).await.unwrap();
    let mut b = broker.consume("q", 3).await.unwrap();
    let got_a = nums(&a.fetch(PATIENCE).await.unwrap());
    let got_b = nums(&b.fetch(PATIENCE).await.unwrap());
    assert_eq!(got_a, [1, 2, 3]);
    assert_eq!(got_b, [4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_consumers_on_many_threads_process_each_message_once() {
    const N: i64 = 2000;
    let broker = StubBroker::new();
    broker.declare_queue("q").await.unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut c = broker.consume("q", 7).await.unwrap();
        let (seen, done) = (seen.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let acker = c.acker();
            loop {
                let got = c.fetch(BRIEF).await.unwrap();
                if got.is_empty() && done.load(Ordering::SeqCst) {
                    break;
                }
                seen.lock().unwrap().extend(nums(&got));
                acker.ack(&tokens(&got)).await.unwrap();
            }
            c.close().await.unwrap();
        }));
    }
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let broker = broker.clone();
            tokio::spawn(async move {
                for n in (0..N).filter(|n| n % 2 == p) {
                    broker.enqueue(&mut msg("q", n)).await.unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    crate::joined(&broker, "q").await.unwrap();
    done.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
    assert_eq!(broker.stats("q").await.unwrap(), Default::default());
}

#[tokio::test]
async fn ack_removes_only_deliveries_the_consumer_holds() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    let mut owner = broker.consume("q", 1).await.unwrap();
    let other = broker.consume("q", 1).await.unwrap();
    let got = owner.fetch(PATIENCE).await.unwrap();

    other.acker().ack(&tokens(&got)).await.unwrap();
    assert_eq!(broker.stats("q").await.unwrap().in_flight, 1);

    owner.acker().ack(&tokens(&got)).await.unwrap();
    owner.acker().ack(&tokens(&got)).await.unwrap();
    let stats = broker.stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 0));
}

#[tokio::test]
async fn nack_dead_letters_the_enqueued_body_with_its_reason() {
    let broker = StubBroker::new();
    let mut m = msg("q", 1);
    broker.enqueue(&mut m).await.unwrap();
    let before = dq_core::now_ms();
    let mut c = broker.consume("q", 1).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    c.acker()
        .nack(&got[0].token, "ValueError: bad input")
        .await
        .unwrap();

    let stats = broker.stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 1));
    let dead = broker.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, m.encode());
    assert_eq!(dead[0].reason.as_deref(), Some("ValueError: bad input"));
    assert!(dead[0].dead_lettered_at.unwrap() >= before);
    assert!(broker.dead_letters("q", 0).await.unwrap().is_empty());
    assert!(c.fetch(BRIEF).await.unwrap().is_empty());
}

#[tokio::test]
async fn dead_letters_are_listed_oldest_first_up_to_the_limit() {
    let broker = StubBroker::new();
    for n in 1..=3 {
        broker.enqueue(&mut msg("q", n)).await.unwrap();
    }
    let mut c = broker.consume("q", 3).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    for d in got.iter().rev() {
        c.acker()
            .nack(&d.token, &format!("failed {}", num(d)))
            .await
            .unwrap();
    }
    let dead = broker.dead_letters("q", 2).await.unwrap();
    let reasons: Vec<_> = dead.iter().map(|d| d.reason.clone().unwrap()).collect();
    assert_eq!(reasons, ["failed 3", "failed 2"]);
    assert_ne!(dead[0].id, dead[1].id);
}

#[tokio::test]
async fn requeue_puts_back_at_the_tail_marked_redelivered() {
    let broker = StubBroker::new();
    for n in 1..=3 {
        broker.enqueue(&mut msg("q", n)).await.unwrap();
    }
    let mut c = broker.consume("q", 1).await.unwrap();
    let first = c.fetch(PATIENCE).await.unwrap();
    c.acker().requeue(&tokens(&first)).await.unwrap();
    // The stale token no longer settles anything.
    c.acker().ack(&tokens(&first)).await.unwrap();

    let mut order = Vec::new();
    for _ in 0..3 {
        let got = c.fetch(PATIENCE).await.unwrap();
        order.push((num(&got[0]), got[0].redelivered));
        c.acker().ack(&tokens(&got)).await.unwrap();
    }
    assert_eq!(order, [(2, false), (3, false), (1, true)]);
    assert_eq!(broker.stats("q").await.unwrap(), Default::default());
}

#[tokio::test]
async fn close_requeues_what_the_consumer_still_holds() {
    let broker = StubBroker::new();
    for n in 1..=4 {
        broker.enqueue(&mut msg("q", n)).await.unwrap();
    }
    let mut c = broker.consume("q", 3).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(nums(&got), [1, 2, 3]);
    let acker = c.acker();
    acker.ack(&tokens(&got[1..2])).await.unwrap();
    c.close().await.unwrap();

    // Settling after close does nothing: the messages are back on the queue.
    acker.ack(&tokens(&got)).await.unwrap();
    acker.nack(&got[0].token, "late").await.unwrap();
    let stats = broker.stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (3, 0, 0));

    let mut again = broker.consume("q", 10).await.unwrap();
    let got = again.fetch(PATIENCE).await.unwrap();
    let seen: Vec<_> = got.iter().map(|d| (num(d), d.redelivered)).collect();
    assert_eq!(seen, [(4, false), (1, true), (3, true)]);
}

#[tokio::test]
async fn dropping_a_consumer_requeues_too() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    assert_eq!(c.fetch(PATIENCE).await.unwrap().len(), 1);
    drop(c);
    let stats = broker.stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (1, 0));
}

#[tokio::test]
async fn delayed_messages_wait_on_the_delay_queue_and_dead_letter_to_the_canonical_one() {
    let broker = StubBroker::new();
    let mut m = msg("q.DQ", 1);
    m.options
        .insert("eta".into(), serde_json::json!(dq_core::now_ms() + 60_000));
    broker.enqueue(&mut m).await.unwrap();
    let stats = broker.stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.delayed), (0, 1));

    let mut c = broker.consume("q", 1).await.unwrap();
    assert!(c.fetch(BRIEF).await.unwrap().is_empty());
    let mut dc = broker.consume("q.DQ", 1).await.unwrap();
    assert_eq!(dc.queue(), "q.DQ");
    let got = dc.fetch(PATIENCE).await.unwrap();
    assert_eq!(got[0].body, m.encode());
    dc.acker().nack(&got[0].token, "expired").await.unwrap();

    let stats = broker.stats("q.DQ").await.unwrap();
    assert_eq!((stats.delayed, stats.in_flight, stats.dead), (0, 0, 1));
    assert_eq!(
        broker.dead_letters("q", 1).await.unwrap()[0].body,
        m.encode()
    );
    assert_eq!(broker.queues(), ["q"]);
}

#[tokio::test]
async fn raw_bodies_are_delivered_byte_for_byte() {
    let broker = StubBroker::new();
    broker.enqueue_raw("q", b"{not json".to_vec()).unwrap();
    broker.enqueue_raw("q.DQ", &b"\xff\x00"[..]).unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    assert_eq!(c.fetch(PATIENCE).await.unwrap()[0].body, b"{not json");
    let mut dc = broker.consume("q.DQ", 1).await.unwrap();
    assert_eq!(dc.fetch(PATIENCE).await.unwrap()[0].body, b"\xff\x00");

    assert!(matches!(
        broker.enqueue_raw("q.XQ", b"x".to_vec()),
        Err(Error::DeadLetterQueue(q)) if q == "q.XQ"
    ));
    assert!(matches!(
        broker.enqueue_raw("1q", b"x".to_vec()),
        Err(Error::InvalidQueueName(q)) if q == "1q"
    ));
}

#[tokio::test]
async fn bad_requests_are_rejected() {
    let broker = StubBroker::new();
    let kind = |r: Result<(), dq_core::BrokerError>| r.unwrap_err().kind();

    assert_eq!(
        kind(broker.enqueue(&mut msg("q.XQ", 1)).await),
        BrokerErrorKind::Rejected
    );
    assert_eq!(
        kind(broker.enqueue(&mut msg("no spaces", 1)).await),
        BrokerErrorKind::Rejected
    );
    assert_eq!(
        kind(broker.declare_queue("-q").await),
        BrokerErrorKind::Rejected
    );
    let zero = broker.consume("q", 0).await.map(drop);
    assert_eq!(kind(zero), BrokerErrorKind::Rejected);
    let xq = broker.consume("q.XQ", 1).await.map(drop);
    assert_eq!(kind(xq), BrokerErrorKind::Rejected);

    let c = broker.consume("q", 1).await.unwrap();
    let foreign = Token::Id("abc".into());
    let err = c
        .acker()
        .ack(std::slice::from_ref(&foreign))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BrokerErrorKind::Rejected);
    assert!(
        dq_core::ErrorChain(&err)
            .to_string()
            .contains("not issued by the stub broker"),
        "{err}"
    );
    assert!(c.acker().nack(&foreign, "x").await.is_err());
    assert!(c.acker().requeue(&[foreign]).await.is_err());
    // None of those declared anything but `q`.
    assert_eq!(broker.queues(), ["q"]);
}

#[tokio::test]
async fn queues_lists_declared_canonical_queues() {
    let broker = StubBroker::new();
    assert!(broker.queues().is_empty());
    broker.declare_queue("b").await.unwrap();
    broker.declare_queue("b.DQ").await.unwrap();
    broker.enqueue(&mut msg("a.DQ", 1)).await.unwrap();
    let _c = broker.consume("c", 1).await.unwrap();
    assert_eq!(broker.queues(), ["a", "b", "c"]);
}

#[tokio::test]
async fn flush_drops_messages_dead_letters_and_unsettled_deliveries() {
    let broker = StubBroker::new();
    for n in 1..=3 {
        broker.enqueue(&mut msg("q", n)).await.unwrap();
    }
    broker.enqueue(&mut msg("q.DQ", 4)).await.unwrap();
    broker.enqueue(&mut msg("other", 5)).await.unwrap();
    let mut c = broker.consume("q", 2).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    c.acker().nack(&got[0].token, "x").await.unwrap();
    assert_eq!(
        broker.stats("q").await.unwrap(),
        dq_core::QueueStats {
            ready: 1,
            prioritized: 0,
            delayed: 1,
            dead: 1,
            in_flight: 1
        }
    );

    broker.flush("q").await.unwrap();
    assert_eq!(broker.stats("q").await.unwrap(), Default::default());
    assert_eq!(broker.stats("other").await.unwrap().ready, 1);
    // A delivery dropped by the flush cannot come back through a requeue.
    c.acker().requeue(&tokens(&got[1..])).await.unwrap();
    assert_eq!(broker.stats("q").await.unwrap(), Default::default());

    // The consumer keeps working, with its whole prefetch free again.
    broker.enqueue(&mut msg("q", 6)).await.unwrap();
    broker.enqueue(&mut msg("q", 7)).await.unwrap();
    assert_eq!(nums(&c.fetch(PATIENCE).await.unwrap()), [6, 7]);

    broker.flush_all();
    assert_eq!(broker.stats("other").await.unwrap(), Default::default());
    assert_eq!(broker.stats("q").await.unwrap(), Default::default());
    assert_eq!(broker.queues(), ["other", "q"]);
    broker.flush("never-seen").await.unwrap();
}

#[tokio::test]
async fn enqueue_many_keeps_order_and_is_all_or_nothing() {
    let broker = StubBroker::new();
    let mut batch = vec![msg("q", 1), msg("q.DQ", 2), msg("q", 3)];
    broker.enqueue_many(&mut batch).await.unwrap();
    let stats = broker.stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.delayed), (2, 1));
    let mut c = broker.consume("q", 5).await.unwrap();
    assert_eq!(nums(&c.fetch(PATIENCE).await.unwrap()), [1, 3]);

    let mut bad = vec![msg("r", 1), msg("r.XQ", 2)];
    assert!(broker.enqueue_many(&mut bad).await.is_err());
    assert_eq!(broker.stats("r").await.unwrap(), Default::default());
}

#[tokio::test]
async fn clones_share_one_broker_and_ping_always_succeeds() {
    let broker = StubBroker::default();
    let clone = broker.clone();
    clone.enqueue(&mut msg("q", 1)).await.unwrap();
    assert_eq!(broker.stats("q").await.unwrap().ready, 1);
    broker.ping().await.unwrap();
    assert_eq!(broker.kind(), "stub");
    assert_eq!(format!("{broker:?}"), r#"StubBroker { queues: ["q"] }"#);
}
