//! The admin operations: listing queues, deleting and requeueing dead letters.

use dq_broker_stub::{JoinError, StubBroker};
use dq_core::{Broker, Message, RetryCount};

use crate::{joined, msg, nums, tokens, PATIENCE};

/// Enqueues `ns` on physical queue `queue` and dead-letters all of them; returns their ids as
/// dead letters, oldest first.
async fn dead_letter(broker: &StubBroker, queue: &str, ns: &[i64]) -> Vec<String> {
    for &n in ns {
        broker.enqueue(&mut msg(queue, n)).await.unwrap();
    }
    let mut c = broker.consume(queue, ns.len()).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(nums(&got), ns);
    for t in tokens(&got) {
        c.acker().nack(&t, "boom").await.unwrap();
    }
    c.close().await.unwrap();
    let letters = broker.dead_letters(queue, usize::MAX).await.unwrap();
    letters.into_iter().map(|l| l.id).collect()
}

fn letter_nums(letters: &[dq_core::DeadLetter]) -> Vec<i64> {
    letters
        .iter()
        .map(|l| {
            Message::decode(&l.body).unwrap().args_value().unwrap()[0]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn list_queues_names_every_declared_queue_once_sorted() {
    let broker = StubBroker::new();
    assert!(broker.list_queues().await.unwrap().is_empty());
    broker.enqueue(&mut msg("b", 1)).await.unwrap();
    broker.enqueue(&mut msg("a.DQ", 1)).await.unwrap();
    broker.declare_queue("c").await.unwrap();
    assert_eq!(broker.list_queues().await.unwrap(), ["a", "b", "c"]);
}

#[tokio::test]
async fn delete_dead_letters_by_id_or_all() {
    let broker = StubBroker::new();
    let ids = dead_letter(&broker, "q", &[1, 2, 3]).await;
    assert_eq!(ids.len(), 3);

    let unknown = ["no-such-id".to_owned()];
    assert_eq!(
        broker
            .delete_dead_letters("q", Some(&unknown))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        broker
            .delete_dead_letters("q", Some(&ids[1..2]))
            .await
            .unwrap(),
        1
    );
    let left = broker.dead_letters("q", 10).await.unwrap();
    assert_eq!(letter_nums(&left), [1, 3]);

    assert_eq!(broker.delete_dead_letters("q", None).await.unwrap(), 2);
    assert_eq!(broker.stats("q").await.unwrap().dead, 0);
    assert_eq!(
        broker
            .delete_dead_letters("never-declared", None)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn requeued_dead_letters_go_back_to_their_queue_without_eta() {
    let broker = StubBroker::new();
    let ready_ids = dead_letter(&broker, "q", &[1, 2]).await;
    // One dead-lettered from the delay queue, with an eta far in the future.
    let mut delayed = msg("q.DQ", 3);
    delayed.options.set_eta(dq_core::now_ms() + 3_600_000);
    broker.enqueue(&mut delayed).await.unwrap();
    let mut dc = broker.consume("q.DQ", 1).await.unwrap();
    let got = dc.fetch(PATIENCE).await.unwrap();
    dc.acker().nack(&got[0].token, "expired").await.unwrap();
    let all: Vec<String> = broker
        .dead_letters("q", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(all.len(), 3);

    let picked = vec![
        ready_ids[1].clone(),
        all[2].clone(),
        "no-such-id".to_owned(),
    ];
    let requeued = broker
        .requeue_dead_letters("q", Some(&picked), RetryCount::Reset)
        .await
        .unwrap();
    assert_eq!(requeued, picked[..2]);
    assert_eq!(
        letter_nums(&broker.dead_letters("q", 10).await.unwrap()),
        [1]
    );

    let stats = broker.stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.dead), (2, 0, 1));
    let mut c = broker.consume("q", 10).await.unwrap();
    let back = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(nums(&back), [2, 3]);
    let third = Message::decode(&back[1].body).unwrap();
    assert_eq!(third.queue_name, "q");
    assert_eq!(third.options.eta(), None);
    assert_eq!(third.message_id, delayed.message_id);
    c.acker().ack(&tokens(&back)).await.unwrap();

    let rest = broker
        .requeue_dead_letters("q", None, RetryCount::Keep)
        .await
        .unwrap();
    assert_eq!(rest, ready_ids[..1]);
    assert_eq!(broker.stats("q").await.unwrap().dead, 0);
}

#[tokio::test]
async fn requeueing_resets_retries_unless_asked_to_keep_them() {
    let broker = StubBroker::new();
    for n in [1, 2] {
        let mut m = msg("q", n);
        m.options.set_retries(3);
        broker.enqueue(&mut m).await.unwrap();
    }
    let mut c = broker.consume("q", 2).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    for d in &got {
        c.acker().nack(&d.token, "retries exceeded").await.unwrap();
    }
    let letters = broker.dead_letters("q", 10).await.unwrap();
    let ids = |i: usize| Some(vec![letters[i].id.clone()]);
    let reset = broker
        .requeue_dead_letters("q", ids(0).as_deref(), RetryCount::Reset)
        .await
        .unwrap();
    let kept = broker
        .requeue_dead_letters("q", ids(1).as_deref(), RetryCount::Keep)
        .await
        .unwrap();
    assert_eq!((reset.len(), kept.len()), (1, 1));
    let back = c.fetch(PATIENCE).await.unwrap();
    let retries: Vec<(i64, u32)> = back
        .iter()
        .map(|d| Message::decode(&d.body).unwrap())
        .map(|m| {
            (
                m.args_value().unwrap()[0].as_i64().unwrap(),
                m.options.retries(),
            )
        })
        .collect();
    assert_eq!(retries, [(1, 0), (2, 3)]);
    c.acker().ack(&tokens(&back)).await.unwrap();
}

#[tokio::test]
async fn a_letter_that_is_not_a_message_stays_dead() {
    let broker = StubBroker::new();
    broker.enqueue_raw("q", b"{not json".to_vec()).unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    c.acker().nack(&got[0].token, "undecodable").await.unwrap();
    assert!(broker
        .requeue_dead_letters("q", None, RetryCount::Reset)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(broker.stats("q").await.unwrap().dead, 1);
}

#[tokio::test]
async fn deleting_reported_letters_does_not_make_a_join_report_others_again() {
    let broker = StubBroker::new();
    dead_letter(&broker, "q", &[1, 2]).await;
    match joined(&broker, "q").await {
        Err(JoinError::DeadLetters { dead_letters, .. }) => assert_eq!(dead_letters.len(), 2),
        other => panic!("expected the two dead letters, got {other:?}"),
    }
    let first = broker.dead_letters("q", 1).await.unwrap();
    broker
        .delete_dead_letters("q", Some(&[first[0].id.clone()]))
        .await
        .unwrap();
    // The one left was reported already; a new one is reported alone.
    dead_letter(&broker, "q", &[3]).await;
    match joined(&broker, "q").await {
        Err(JoinError::DeadLetters { dead_letters, .. }) => {
            assert_eq!(letter_nums(&dead_letters), [3])
        }
        other => panic!("expected only the new dead letter, got {other:?}"),
    }
}

/// A broker that implements only what the `Broker` trait requires: no deleting of dead
/// letters, so the trait's default `requeue_dead_letters` must refuse before enqueueing.
struct NoDelete(StubBroker);

#[dq_core::async_trait]
impl Broker for NoDelete {
    fn kind(&self) -> &'static str {
        "no-delete"
    }
    async fn declare_queue(&self, queue: &str) -> Result<(), dq_core::BrokerError> {
        self.0.declare_queue(queue).await
    }
    async fn enqueue(&self, message: &mut Message) -> Result<(), dq_core::BrokerError> {
        self.0.enqueue(message).await
    }
    async fn consume(
        &self,
        queue: &str,
        prefetch: usize,
    ) -> Result<Box<dyn dq_core::Consumer>, dq_core::BrokerError> {
        self.0.consume(queue, prefetch).await
    }
    async fn stats(&self, queue: &str) -> Result<dq_core::QueueStats, dq_core::BrokerError> {
        self.0.stats(queue).await
    }
    async fn flush(&self, queue: &str) -> Result<(), dq_core::BrokerError> {
        self.0.flush(queue).await
    }
    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<dq_core::DeadLetter>, dq_core::BrokerError> {
        self.0.dead_letters(queue, limit).await
    }
    async fn ping(&self) -> Result<(), dq_core::BrokerError> {
        self.0.ping().await
    }
}

#[tokio::test]
async fn requeueing_without_deleting_refuses_rather_than_duplicates() {
    let stub = StubBroker::new();
    dead_letter(&stub, "nd", &[1, 2]).await;
    let broker = NoDelete(stub.clone());
    let e = broker
        .requeue_dead_letters("nd", None, RetryCount::Reset)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), dq_core::BrokerErrorKind::Unsupported, "{e}");
    let stats = stub.stats("nd").await.unwrap();
    assert_eq!(
        (stats.ready, stats.dead),
        (0, 2),
        "nothing enqueued, nothing lost"
    );
}

#[tokio::test]
async fn browse_pages_through_ready_delayed_and_dead_messages() {
    use dq_core::MessageState::{DeadLettered, Delayed, Ready};
    let broker = StubBroker::new();
    dead_letter(&broker, "q", &[1, 2, 3]).await;
    for n in 10..13 {
        broker.enqueue(&mut msg("q", n)).await.unwrap();
    }
    broker.enqueue(&mut msg("q.DQ", 20)).await.unwrap();
    let nums_of = |ms: Vec<dq_core::BrowsedMessage>| {
        ms.iter()
            .map(|m| {
                Message::decode(&m.body).unwrap().args_value().unwrap()[0]
                    .as_i64()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        nums_of(broker.browse("q", Ready, 1, 5).await.unwrap()),
        [11, 12]
    );
    assert_eq!(
        nums_of(broker.browse("q", Delayed, 0, 5).await.unwrap()),
        [20]
    );
    let dead = broker.browse("q", DeadLettered, 0, 2).await.unwrap();
    assert_eq!(dead[0].reason.as_deref(), Some("boom"));
    assert_eq!(nums_of(dead), [1, 2]);
    assert!(broker.browse("nope", Ready, 0, 5).await.unwrap().is_empty());
}
