//! What the admin tool uses: listing queues, deleting and requeueing dead letters.

use dq_core::{now_ms, Broker, RetryCount, Token};

use crate::util::{decode, enqueue, fetch_n, message, Ns};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_queues_finds_ready_delayed_in_flight_and_dead() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    assert!(broker.list_queues().await.unwrap().is_empty());
    enqueue(&broker, "ready", 1).await;
    let mut delayed = message("later.DQ", 1);
    delayed.options.set_eta(now_ms() + 60_000);
    broker.enqueue(&mut delayed).await.unwrap();
    enqueue(&broker, "busy", 1).await;
    let mut busy = broker.consume("busy", 1).await.unwrap();
    let held = fetch_n(&mut busy, 1).await;
    enqueue(&broker, "dead.letters", 1).await;
    let mut dead = broker.consume("dead.letters", 1).await.unwrap();
    let got = fetch_n(&mut dead, 1).await;
    dead.acker().nack(&got[0].token, "no").await.unwrap();

    // Other namespaces are not listed.
    let other = Ns::new();
    enqueue(&other.broker().await, "elsewhere", 1).await;

    assert_eq!(
        broker.list_queues().await.unwrap(),
        vec!["busy", "dead.letters", "later", "ready"]
    );
    busy.acker().ack(&[held[0].token.clone()]).await.unwrap();
    busy.close().await.unwrap();
    dead.close().await.unwrap();
}

async fn dead_lettered(ns: &Ns, count: i64) -> (dq_broker_redis::RedisBroker, Vec<String>) {
    let broker = ns.broker().await;
    let mut ids = Vec::new();
    for i in 0..count {
        enqueue(&broker, "default", i).await;
    }
    let mut consumer = broker.consume("default", count as usize).await.unwrap();
    for d in fetch_n(&mut consumer, count as usize).await {
        consumer.acker().nack(&d.token, "dead").await.unwrap();
        let Token::Id(id) = d.token else {
            unreachable!()
        };
        ids.push(id);
    }
    consumer.close().await.unwrap();
    (broker, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_dead_letters_by_id_or_all() {
    let ns = Ns::new();
    let (broker, ids) = dead_lettered(&ns, 3).await;
    let deleted = broker
        .delete_dead_letters("default", Some(&[ids[0].clone(), "nope".to_owned()]))
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(ns.hget("default.XQ.msgs", &ids[0]).await.is_none());
    assert_eq!(ns.hlen("default.XQ.msgs").await, 2);
    assert_eq!(
        broker.delete_dead_letters("default", None).await.unwrap(),
        2
    );
    assert_eq!(broker.stats("default").await.unwrap().dead, 0);
    assert_eq!(ns.hlen("default.XQ.msgs").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_dead_letters_run_again() {
    let ns = Ns::new();
    let (broker, ids) = dead_lettered(&ns, 2).await;
    let before: Vec<String> = broker
        .dead_letters("default", 10)
        .await
        .unwrap()
        .iter()
        .map(|d| dq_core::Message::decode(&d.body).unwrap().message_id)
        .collect();
    let requeued = broker
        .requeue_dead_letters("default", Some(&ids[1..]), RetryCount::Keep)
        .await
        .unwrap();
    assert_eq!(requeued, ids[1..].to_vec());
    assert_eq!(broker.stats("default").await.unwrap().dead, 1);
    let mut consumer = broker.consume("default", 10).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    let m = decode(&got[0]);
    assert!(before.contains(&m.message_id));
    // A fresh redis_message_id, as for any enqueue.
    assert_ne!(m.options.redis_message_id(), Some(ids[1].as_str()));
    consumer.acker().ack(&[got[0].token.clone()]).await.unwrap();
    consumer.close().await.unwrap();
}

fn arg_of(body: &[u8]) -> i64 {
    dq_core::Message::decode(body)
        .unwrap()
        .args_value()
        .unwrap()[0]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_pages_through_ready_delayed_and_dead_messages() {
    use dq_core::MessageState::{DeadLettered, Delayed, Ready};
    let ns = Ns::new();
    let (broker, dead_ids) = dead_lettered(&ns, 3).await;
    for i in 10..15 {
        enqueue(&broker, "default", i).await;
    }
    // Enqueued latest-eta first: browsing sorts them soonest first.
    for i in (20..23).rev() {
        let mut m = message("default.DQ", i);
        m.options.set_eta(now_ms() + 60_000 + i * 1_000);
        broker.enqueue(&mut m).await.unwrap();
    }
    let page = |state, offset, limit| {
        let broker = &broker;
        async move {
            broker
                .browse("default", state, offset, limit)
                .await
                .unwrap()
                .iter()
                .map(|m| {
                    assert_eq!(m.state, state);
                    arg_of(&m.body)
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(Ready, 0, 2).await, vec![10, 11]);
    assert_eq!(page(Ready, 2, 10).await, vec![12, 13, 14]);
    assert_eq!(page(Ready, 5, 10).await, Vec::<i64>::new());
    assert_eq!(page(Delayed, 0, 2).await, vec![20, 21]);
    assert_eq!(page(Delayed, 2, 2).await, vec![22]);
    // Letters dead-lettered in the same millisecond are in id order, as `dead_letters` lists.
    let all: Vec<i64> = broker
        .dead_letters("default", 10)
        .await
        .unwrap()
        .iter()
        .map(|l| arg_of(&l.body))
        .collect();
    assert_eq!(all.len(), 3);
    assert_eq!(page(DeadLettered, 1, 5).await, all[1..]);
    let dead = broker.browse("default", DeadLettered, 0, 1).await.unwrap();
    assert!(dead_ids.contains(&dead[0].id));
    assert!(dead[0].dead_lettered_at.is_some_and(|t| t > 0));
    // A ready message's id is its redis_message_id, the field of `.msgs`.
    let ready = broker.browse("default", Ready, 0, 1).await.unwrap();
    assert!(ns.hget("default.msgs", &ready[0].id).await.is_some());
}
