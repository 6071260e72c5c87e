//! Fetch, ack, nack, requeue and close: their effects on the queue, the ack set, the `.msgs`
//! hash and the dead-letter zset.

use std::time::Duration;

use dq_core::{now_ms, Broker, Token};

use crate::util::{decode, enqueue, enqueue_batch, fetch_n, Ns};

fn rid(m: &dq_core::Message) -> String {
    m.options.redis_message_id().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_holds_ids_in_the_ack_set_until_acked() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let sent = [
        enqueue(&broker, "default", 1).await,
        enqueue(&broker, "default", 2).await,
        enqueue(&broker, "default", 3).await,
    ];
    let mut consumer = broker.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 3).await;
    // FIFO, and each token is the list entry.
    for (d, m) in got.iter().zip(&sent) {
        assert_eq!(d.token, Token::Id(rid(m)));
        assert_eq!(decode(d).message_id, m.message_id);
    }
    assert!(ns.list("default").await.is_empty());
    let mut all: Vec<String> = sent.iter().map(rid).collect();
    all.sort();
    assert_eq!(ns.acks(&broker, "default").await, all);
    assert_eq!(ns.hlen("default.msgs").await, 3);
    let stats = broker.stats("default").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 3));

    let acker = consumer.acker();
    acker
        .ack(&[got[0].token.clone(), got[1].token.clone()])
        .await
        .unwrap();
    assert_eq!(ns.acks(&broker, "default").await, vec![rid(&sent[2])]);
    assert_eq!(ns.hlen("default.msgs").await, 1);
    assert!(ns.hget("default.msgs", &rid(&sent[2])).await.is_some());
    // Acking twice changes nothing.
    acker.ack(&[got[0].token.clone()]).await.unwrap();
    assert_eq!(ns.hlen("default.msgs").await, 1);
    acker.ack(&[got[2].token.clone()]).await.unwrap();
    assert_eq!(ns.hlen("default.msgs").await, 0);
    assert!(ns.acks(&broker, "default").await.is_empty());
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_moves_the_enqueued_body_to_the_dead_letters() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let sent = enqueue(&broker, "default", 1).await;
    let original = ns.hget("default.msgs", &rid(&sent)).await.unwrap();
    let mut consumer = broker.consume("default", 1).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    let before = now_ms();
    consumer.acker().nack(&got[0].token, "boom").await.unwrap();

    let score: f64 = ns
        .cmd(&["ZSCORE", &ns.key("default.XQ"), &rid(&sent)])
        .await;
    assert!(score as i64 >= before - 1 && score as i64 <= now_ms());
    assert_eq!(
        ns.hget("default.XQ.msgs", &rid(&sent)).await.as_deref(),
        Some(original.as_str())
    );
    assert_eq!(ns.hlen("default.msgs").await, 0);
    assert!(ns.acks(&broker, "default").await.is_empty());

    let dead = broker.dead_letters("default", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, rid(&sent));
    assert_eq!(dead[0].body, original.as_bytes());
    assert_eq!(dead[0].dead_lettered_at, Some(score as i64));
    assert_eq!(broker.stats("default").await.unwrap().dead, 1);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_from_the_delay_queue_goes_to_the_canonical_dead_letters() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let mut m = crate::util::message("default.DQ", 1);
    m.options.set_eta(now_ms() + 60_000);
    broker.enqueue(&mut m).await.unwrap();
    let mut consumer = broker.consume("default.DQ", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    assert_eq!(ns.acks(&broker, "default.DQ").await, vec![rid(&m)]);
    consumer
        .acker()
        .nack(&got[0].token, "expired")
        .await
        .unwrap();

    let xq: Vec<String> = ns.cmd(&["ZRANGE", &ns.key("default.XQ"), "0", "-1"]).await;
    assert_eq!(xq, vec![rid(&m)]);
    let exists: i64 = ns.cmd(&["EXISTS", &ns.key("default.DQ.XQ")]).await;
    assert_eq!(exists, 0);
    assert_eq!(ns.hlen("default.DQ.msgs").await, 0);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_puts_ids_back_at_the_tail() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let a = enqueue(&broker, "default", 1).await;
    let b = enqueue(&broker, "default", 2).await;
    let mut consumer = broker.consume("default", 1).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    assert_eq!(got[0].token, Token::Id(rid(&a)));
    let c = enqueue(&broker, "default", 3).await;
    consumer
        .acker()
        .requeue(&[got[0].token.clone()])
        .await
        .unwrap();
    assert_eq!(ns.list("default").await, vec![rid(&b), rid(&c), rid(&a)]);
    assert!(ns.acks(&broker, "default").await.is_empty());
    assert_eq!(ns.hlen("default.msgs").await, 3);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_requeues_what_was_not_settled() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    for i in 0..3 {
        enqueue(&broker, "default", i).await;
    }
    let mut consumer = broker.consume("default", 3).await.unwrap();
    let got = fetch_n(&mut consumer, 3).await;
    let acker = consumer.acker();
    acker.ack(&[got[0].token.clone()]).await.unwrap();
    consumer.close().await.unwrap();

    let back: Vec<Token> = ns
        .list("default")
        .await
        .into_iter()
        .map(Token::Id)
        .collect();
    assert_eq!(back.len(), 2);
    assert!(back.contains(&got[1].token) && back.contains(&got[2].token));
    assert!(ns.acks(&broker, "default").await.is_empty());
    // The acker of a closed consumer refuses work instead of pretending.
    let err = acker.ack(&[got[1].token.clone()]).await.unwrap_err();
    assert_eq!(err.kind(), dq_core::BrokerErrorKind::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_never_exceeds_the_prefetch() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    enqueue_batch(&broker, "default", 10).await;
    let mut consumer = broker.consume("default", 3).await.unwrap();
    let first = consumer.fetch(Duration::from_secs(1)).await.unwrap();
    assert_eq!(first.len(), 3);
    assert_no_room(&mut consumer).await;
    assert_eq!(ns.list("default").await.len(), 7);

    // Settling one frees one slot, and a fetch that is waiting for room sees it.
    let acker = consumer.acker();
    let token = first[0].token.clone();
    let ack = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        acker.ack(&[token]).await
    });
    let next = consumer.fetch(Duration::from_secs(10)).await.unwrap();
    ack.await.unwrap().unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(ns.acks(&broker, "default").await.len(), 3);
    consumer.close().await.unwrap();
}

/// A fetch waiting for room goes once acks free enough of it (half the prefetch), and takes
/// exactly the room they freed; each ack returns only once Redis applied it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_takes_the_room_acks_free() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    enqueue_batch(&broker, "default", 10).await;
    // Prefetch 4: a fetch waits for 2 free slots.
    let mut consumer = broker.consume("default", 4).await.unwrap();
    let first = fetch_n(&mut consumer, 4).await;
    let acker = consumer.acker();
    let tokens: Vec<Token> = first.iter().map(|d| d.token.clone()).collect();
    let (one, two) = (tokens[..1].to_vec(), tokens[1..3].to_vec());
    let acks = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        // One slot is not enough for a fetch.
        acker.ack(&one).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Two more make three.
        acker.ack(&two).await.unwrap();
    });
    let next = consumer.fetch(Duration::from_secs(10)).await.unwrap();
    acks.await.unwrap();
    assert_eq!(next.len(), 3, "the fetch takes the room the acks freed");
    // Held now: the fourth of the first fetch and the three new ones.
    let mut held: Vec<String> = std::iter::once(&first[3])
        .chain(&next)
        .map(|d| match &d.token {
            Token::Id(id) => id.clone(),
            t => panic!("unexpected token {t:?}"),
        })
        .collect();
    held.sort();
    assert_eq!(ns.acks(&broker, "default").await, held);
    assert_eq!(ns.hlen("default.msgs").await, 7);
    assert_eq!(ns.list("default").await.len(), 3);
    for t in &tokens[..3] {
        let Token::Id(id) = t else { unreachable!() };
        assert!(
            ns.hget("default.msgs", id).await.is_none(),
            "acked {id} is gone"
        );
    }
    consumer.close().await.unwrap();
}

/// A fetch finds no room: it waits out its timeout and brings nothing.
async fn assert_no_room(consumer: &mut Box<dyn dq_core::Consumer>) {
    let got = consumer.fetch(Duration::from_millis(100)).await.unwrap();
    assert!(got.is_empty(), "fetched {} with no room", got.len());
}

/// Deliveries the worker has finished free their room before their acks are sent, at most a
/// prefetch's worth; they stay in the ack set, recoverable, until acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deliveries_free_their_room_before_the_ack() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    enqueue_batch(&broker, "default", 12).await;
    let mut consumer = broker.consume("default", 4).await.unwrap();
    let acker = consumer.acker();
    let first = fetch_n(&mut consumer, 4).await;
    let tokens =
        |ds: &[dq_core::Delivery]| -> Vec<Token> { ds.iter().map(|d| d.token.clone()).collect() };
    // A fetch with no room waits, even for long.
    assert_no_room(&mut consumer).await;
    acker.finished(&tokens(&first));
    let second = fetch_n(&mut consumer, 4).await;
    // Eight in the ack set: the first four are not acked yet.
    assert_eq!(ns.acks(&broker, "default").await.len(), 8);
    // Four more finished would be more than a prefetch's worth waiting for their acks: they
    // keep their room until the first four are acked.
    acker.finished(&tokens(&second));
    assert_no_room(&mut consumer).await;
    acker.ack(&tokens(&first)).await.unwrap();
    // The ack took the first four out; the second four are still held and unfinished.
    assert_no_room(&mut consumer).await;
    acker.finished(&tokens(&second));
    let third = fetch_n(&mut consumer, 4).await;
    assert_eq!(ns.acks(&broker, "default").await.len(), 8);
    acker.ack(&tokens(&second)).await.unwrap();
    acker.ack(&tokens(&third)).await.unwrap();
    assert!(ns.acks(&broker, "default").await.is_empty());
    assert_eq!(ns.hlen("default.msgs").await, 0);
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_an_id_this_broker_does_not_hold_is_a_no_op() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let other = ns.broker().await;
    let sent = enqueue(&broker, "default", 1).await;
    let mut consumer = other.consume("default", 1).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;

    // `broker` never fetched it: its ack, nack and requeue must not touch `other`'s delivery.
    let mut mine = broker.consume("default", 1).await.unwrap();
    let acker = mine.acker();
    acker.ack(&[got[0].token.clone()]).await.unwrap();
    acker.nack(&got[0].token, "no").await.unwrap();
    acker.requeue(&[got[0].token.clone()]).await.unwrap();
    assert!(ns.hget("default.msgs", &rid(&sent)).await.is_some());
    assert_eq!(ns.acks(&other, "default").await, vec![rid(&sent)]);
    assert!(ns.list("default").await.is_empty());
    assert_eq!(broker.stats("default").await.unwrap().dead, 0);
    assert!(mine
        .fetch(Duration::from_millis(50))
        .await
        .unwrap()
        .is_empty());
    mine.close().await.unwrap();
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_acks_are_all_applied() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    enqueue_batch(&broker, "default", 500).await;
    let mut consumer = broker.consume("default", 500).await.unwrap();
    let got = fetch_n(&mut consumer, 500).await;
    let acker = consumer.acker();
    let tasks: Vec<_> = got
        .into_iter()
        .map(|d| {
            let acker = acker.clone();
            tokio::spawn(async move { acker.ack(&[d.token]).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(ns.acks(&broker, "default").await.is_empty());
    assert_eq!(ns.hlen("default.msgs").await, 0);
    consumer.close().await.unwrap();
}

/// An id on the list whose body is missing is not handed out. Like Dramatiq, the fetch holds it
/// in the ack set; closing the consumer drops it there, since there is nothing to requeue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_without_a_body_is_skipped() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    let _: () = ns.cmd(&["RPUSH", &ns.key("default"), "ghost"]).await;
    let sent = enqueue(&broker, "default", 1).await;
    let mut consumer = broker.consume("default", 5).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    assert_eq!(got[0].token, Token::Id(rid(&sent)));
    let mut held = vec!["ghost".to_owned(), rid(&sent)];
    held.sort();
    assert_eq!(ns.acks(&broker, "default").await, held);
    consumer.acker().ack(&[got[0].token.clone()]).await.unwrap();
    consumer.close().await.unwrap();
    assert!(ns.acks(&broker, "default").await.is_empty());
    assert!(ns.list("default").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_purges_the_queue_its_delay_queue_and_dead_letters() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    enqueue(&broker, "default", 1).await;
    let mut delayed = crate::util::message("default.DQ", 2);
    delayed.options.set_eta(now_ms() + 60_000);
    broker.enqueue(&mut delayed).await.unwrap();
    let mut consumer = broker.consume("default", 1).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    consumer.acker().nack(&got[0].token, "dead").await.unwrap();
    enqueue(&broker, "default", 3).await;
    assert_eq!(
        broker.stats("default").await.unwrap(),
        dq_core::QueueStats {
            ready: 1,
            prioritized: 0,
            delayed: 1,
            dead: 1,
            in_flight: 0
        }
    );

    broker.flush("default").await.unwrap();
    assert_eq!(
        broker.stats("default").await.unwrap(),
        dq_core::QueueStats::default()
    );
    for key in [
        "default",
        "default.msgs",
        "default.DQ",
        "default.DQ.msgs",
        "default.XQ",
        "default.XQ.msgs",
    ] {
        let exists: i64 = ns.cmd(&["EXISTS", &ns.key(key)]).await;
        assert_eq!(exists, 0, "{key}");
    }
    consumer.close().await.unwrap();
}
