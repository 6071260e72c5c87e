//! Consuming: fetch, ack, nack to dead letters, requeue, close, prefetch.

use std::collections::BTreeSet;
use std::time::Duration;

use dq_core::{now_ms, Broker, BrokerErrorKind, Token};

use crate::util::{self, fetch_n, Queue};

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn fetched_and_acked_messages_are_gone() {
    let url = util::init();
    let q = Queue::new("consume-ack", &url);
    let broker = util::broker(&url).await;
    let mut batch: Vec<_> = (0..5).map(|i| util::msg(&q.name, i)).collect();
    broker.enqueue_many(&mut batch).await.unwrap();

    let mut consumer = broker.consume(&q.name, 10).await.unwrap();
    assert_eq!(consumer.queue(), q.name);
    let got = fetch_n(&mut consumer, 5, WITHIN).await;
    let args: BTreeSet<u64> = got.iter().map(|d| util::arg_of(&d.body)).collect();
    assert_eq!(args, (0..5).collect());
    assert!(got.iter().all(|d| !d.redelivered));
    assert!(got.iter().all(|d| matches!(d.token, Token::Tag(_))));
    let tokens: Vec<Token> = got.into_iter().map(|d| d.token).collect();
    consumer.acker().ack(&tokens).await.unwrap();
    consumer.close().await.unwrap();

    // Closing gives back only what was not acked: nothing.
    let mut again = broker.consume(&q.name, 10).await.unwrap();
    assert!(again
        .fetch(Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
    again.close().await.unwrap();
    assert_eq!(broker.stats(&q.name).await.unwrap().ready, 0);
}

#[tokio::test]
async fn nacked_messages_become_dead_letters() {
    let url = util::init();
    let q = Queue::new("consume-nack", &url);
    let broker = util::broker(&url).await;
    let mut m = util::msg(&q.name, 1);
    broker.enqueue(&mut m).await.unwrap();
    // One from the delay queue too: it dead-letters to the same q.XQ.
    let mut delayed = util::msg(&q.dq(), 2);
    delayed.options.set_eta(now_ms());
    broker.enqueue(&mut delayed).await.unwrap();

    let before = now_ms();
    for queue in [q.name.clone(), q.dq()] {
        let mut consumer = broker.consume(&queue, 1).await.unwrap();
        let d = fetch_n(&mut consumer, 1, WITHIN).await.remove(0);
        consumer.acker().nack(&d.token, "boom").await.unwrap();
        consumer.close().await.unwrap();
    }
    assert!(
        dq_test::wait_until_async(WITHIN, || async {
            broker.stats(&q.name).await.unwrap().dead == 2
        })
        .await
    );
    let stats = broker.stats(&q.name).await.unwrap();
    assert_eq!((stats.ready, stats.delayed), (0, 0));

    let dead = broker.dead_letters(&q.name, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].body, m.encode(), "the body is kept as enqueued");
    assert_eq!(dead[0].id, m.message_id);
    assert_eq!(dead[1].id, delayed.message_id);
    for d in &dead {
        let at = d.dead_lettered_at.expect("x-death time");
        // x-death has whole seconds.
        assert!(at >= before - 1000 && at <= now_ms(), "{at} vs {before}");
        assert_eq!(d.reason, None);
    }
    // Reading dead letters does not remove them, and the limit holds.
    assert_eq!(broker.dead_letters(&q.name, 1).await.unwrap().len(), 1);
    assert!(
        dq_test::wait_until_async(WITHIN, || async {
            broker.stats(&q.name).await.unwrap().dead == 2
        })
        .await
    );
    assert_eq!(broker.dead_letters(&q.name, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn requeued_messages_come_back_redelivered() {
    let url = util::init();
    let q = Queue::new("consume-requeue", &url);
    let broker = util::broker(&url).await;
    broker.enqueue(&mut util::msg(&q.name, 9)).await.unwrap();
    let mut consumer = broker.consume(&q.name, 4).await.unwrap();
    let first = fetch_n(&mut consumer, 1, WITHIN).await.remove(0);
    consumer.acker().requeue(&[first.token]).await.unwrap();
    let second = fetch_n(&mut consumer, 1, WITHIN).await.remove(0);
    assert_eq!(second.body, first.body);
    assert!(second.redelivered);
    consumer.acker().ack(&[second.token]).await.unwrap();
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn closing_gives_back_unsettled_deliveries_and_makes_their_tokens_stale() {
    let url = util::init();
    let q = Queue::new("consume-close", &url);
    let broker = util::broker(&url).await;
    let mut batch: Vec<_> = (0..3).map(|i| util::msg(&q.name, i)).collect();
    broker.enqueue_many(&mut batch).await.unwrap();

    let mut consumer = broker.consume(&q.name, 10).await.unwrap();
    let acker = consumer.acker();
    let got = fetch_n(&mut consumer, 3, WITHIN).await;
    consumer.close().await.unwrap();
    let err = acker.ack(&[got[0].token.clone()]).await.unwrap_err();
    assert_eq!(err.kind(), BrokerErrorKind::Closed, "{err}");
    assert!(!err.is_transient());

    let mut next = broker.consume(&q.name, 10).await.unwrap();
    let again = fetch_n(&mut next, 3, WITHIN).await;
    assert!(again.iter().all(|d| d.redelivered));
    let args: BTreeSet<u64> = again.iter().map(|d| util::arg_of(&d.body)).collect();
    assert_eq!(args, (0..3).collect());
    // Tokens of one consumer mean nothing to another.
    let err = next
        .acker()
        .ack(&[Token::Id("x".into())])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), BrokerErrorKind::Rejected);
    let tokens: Vec<Token> = again.into_iter().map(|d| d.token).collect();
    next.acker().ack(&tokens).await.unwrap();
    next.close().await.unwrap();
}

#[tokio::test]
async fn prefetch_bounds_unacked_deliveries() {
    let url = util::init();
    let q = Queue::new("consume-prefetch", &url);
    let broker = util::broker(&url).await;
    let mut batch: Vec<_> = (0..10).map(|i| util::msg(&q.name, i)).collect();
    broker.enqueue_many(&mut batch).await.unwrap();

    let mut consumer = broker.consume(&q.name, 3).await.unwrap();
    let mut held = fetch_n(&mut consumer, 3, WITHIN).await;
    assert_eq!(
        held.len(),
        3,
        "a fetch never returns more than the prefetch"
    );
    // RabbitMQ sends nothing more until something is settled.
    assert!(consumer
        .fetch(Duration::from_millis(700))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(broker.stats(&q.name).await.unwrap().ready, 7);

    let d = held.remove(0);
    consumer.acker().ack(&[d.token]).await.unwrap();
    let more = fetch_n(&mut consumer, 1, WITHIN).await;
    assert_eq!(more.len(), 1);
    assert!(consumer
        .fetch(Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
    consumer.close().await.unwrap();

    let err = broker
        .consume(&q.name, 0)
        .await
        .err()
        .expect("prefetch 0 is refused");
    assert_eq!(err.kind(), BrokerErrorKind::Rejected);
}

#[tokio::test]
async fn flush_empties_the_queue_its_delay_queue_and_its_dead_letters() {
    let url = util::init();
    let q = Queue::new("consume-flush", &url);
    let broker = util::broker(&url).await;
    let mut batch: Vec<_> = (0..3).map(|i| util::msg(&q.name, i)).collect();
    broker.enqueue_many(&mut batch).await.unwrap();
    let mut delayed = util::msg(&q.dq(), 3);
    delayed.options.set_eta(now_ms() + 60_000);
    broker.enqueue(&mut delayed).await.unwrap();
    let mut consumer = broker.consume(&q.name, 1).await.unwrap();
    let d = fetch_n(&mut consumer, 1, WITHIN).await.remove(0);
    consumer.acker().nack(&d.token, "dead").await.unwrap();
    consumer.close().await.unwrap();
    assert!(
        dq_test::wait_until_async(WITHIN, || async {
            let s = broker.stats(&q.name).await.unwrap();
            (s.ready, s.delayed, s.dead) == (2, 1, 1)
        })
        .await
    );
    broker.flush(&q.name).await.unwrap();
    assert_eq!(broker.stats(&q.name).await.unwrap(), Default::default());
}

#[tokio::test]
async fn bodies_larger_than_a_frame_arrive_whole() {
    // The default frame_max is 16 KiB: a 1 MiB body travels as many frames both ways.
    let url = util::init();
    let q = Queue::new("consume-large", &url);
    let broker = util::broker(&url).await;
    let blob = "x".repeat(1024 * 1024 + 17);
    let mut m = dq_core::Message::new(&q.name, "work", &(9, blob), &()).expect("message");
    broker.enqueue(&mut m).await.unwrap();

    let mut consumer = broker.consume(&q.name, 1).await.unwrap();
    let got = fetch_n(&mut consumer, 1, WITHIN).await;
    assert_eq!(got[0].body, m.encode());
    let tokens: Vec<Token> = got.into_iter().map(|d| d.token).collect();
    consumer.acker().ack(&tokens).await.unwrap();
    consumer.close().await.unwrap();
}
