//! Broker priority in the stub (`with_max_priority`), as the Redis broker orders it.

use dq_broker_stub::StubBroker;
use dq_core::{Broker, Message, SendOptions};

use crate::{msg, nums, tokens, PATIENCE};

fn prioritized(queue: &str, n: i64, p: u8) -> Message {
    let mut m = msg(queue, n);
    SendOptions::default()
        .broker_priority(p)
        .apply_to_message(&mut m);
    m
}

#[tokio::test]
async fn higher_first_fifo_within_a_level_plain_last() {
    let broker = StubBroker::with_max_priority(5);
    assert_eq!(broker.max_priority(), Some(5));
    let sends = [
        prioritized("q", 1, 2),
        msg("q", 2),
        prioritized("q", 3, 5),
        prioritized("q", 4, 2),
        // Above the maximum: counts as 5, after the 5 sent before it.
        prioritized("q", 5, 9),
        prioritized("q", 6, 0),
    ];
    for mut m in sends {
        broker.enqueue(&mut m).await.unwrap();
    }
    let stats = broker.stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.prioritized), (6, 4));
    let mut c = broker.consume("q", 100).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(nums(&got), [3, 5, 1, 4, 2, 6]);
    c.acker().ack(&tokens(&got)).await.unwrap();
}

#[tokio::test]
async fn without_max_priority_order_is_fifo() {
    let broker = StubBroker::new();
    for mut m in [msg("q", 1), prioritized("q", 2, 9)] {
        broker.enqueue(&mut m).await.unwrap();
    }
    assert_eq!(broker.stats("q").await.unwrap().prioritized, 0);
    let mut c = broker.consume("q", 100).await.unwrap();
    assert_eq!(nums(&c.fetch(PATIENCE).await.unwrap()), [1, 2]);
}

#[tokio::test]
async fn given_back_messages_return_to_the_head_of_their_level() {
    let broker = StubBroker::with_max_priority(5);
    for n in 1..=3 {
        broker.enqueue(&mut prioritized("q", n, 3)).await.unwrap();
    }
    broker.enqueue(&mut msg("q", 4)).await.unwrap();
    let mut c = broker.consume("q", 2).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(nums(&got), [1, 2]);
    c.acker().requeue(&tokens(&got)).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(nums(&got), [1, 2]);
    // Closing gives them back too, still ahead of 3.
    c.close().await.unwrap();
    let mut c = broker.consume("q", 10).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(nums(&got), [1, 2, 3, 4]);
    assert!(got[0].redelivered);
    c.acker().ack(&tokens(&got)).await.unwrap();
    broker.join("q", Some(PATIENCE)).await.unwrap();
}

#[tokio::test]
async fn flush_drops_prioritized_messages() {
    let broker = StubBroker::with_max_priority(5);
    broker.enqueue(&mut prioritized("q", 1, 3)).await.unwrap();
    broker.flush("q").await.unwrap();
    assert_eq!(
        broker.stats("q").await.unwrap(),
        dq_core::QueueStats::default()
    );
    // An idle queue joins at once.
    broker.join("q", Some(PATIENCE)).await.unwrap();
}
