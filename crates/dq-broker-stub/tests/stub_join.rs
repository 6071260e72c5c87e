//! `join`: waiting for a queue's work to be done, fail-fast on dead letters, timeouts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dq_broker_stub::{JoinError, JoinOptions, StubBroker};
use dq_core::Broker;

use crate::{joined, msg, nums, spawn_join, tokens, BRIEF, PATIENCE};

#[tokio::test]
async fn join_returns_at_once_on_an_idle_queue() {
    let broker = StubBroker::new();
    broker.declare_queue("q").await.unwrap();
    broker.join("q", None).await.unwrap();
    broker
        .join("q.DQ", Some(std::time::Duration::ZERO))
        .await
        .unwrap();
}

#[tokio::test]
async fn join_refuses_a_queue_nothing_touched() {
    let broker = StubBroker::new();
    broker.declare_queue("default").await.unwrap();
    let err = broker.join("defualt", None).await.unwrap_err();
    assert!(matches!(&err, JoinError::QueueNotFound { queue } if queue == "defualt"));
}

#[tokio::test]
async fn join_times_out_with_what_is_left() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    broker.enqueue(&mut msg("q", 2)).await.unwrap();
    broker.enqueue(&mut msg("q.DQ", 3)).await.unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    c.fetch(PATIENCE).await.unwrap();
    let err = broker.join("q", Some(BRIEF)).await.unwrap_err();
    match &err {
        JoinError::Timeout {
            queue,
            ready,
            delayed,
            unsettled,
        } => assert_eq!(
            (queue.as_str(), *ready, *delayed, *unsettled),
            ("q", 1, 1, 1)
        ),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn join_waits_for_fetched_work_to_be_settled() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    assert_eq!(broker.stats("q").await.unwrap().ready, 0);

    let joining = spawn_join(&broker, "q");
    tokio::task::yield_now().await;
    // The queue is empty but the delivery is not settled yet.
    assert!(!joining.is_finished());
    c.acker().ack(&tokens(&got)).await.unwrap();
    joining.await.unwrap().unwrap();
}

#[tokio::test]
async fn join_waits_while_a_message_moves_from_the_delay_queue_to_the_queue() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q.DQ", 1)).await.unwrap();
    let processed = Arc::new(AtomicUsize::new(0));
    let joining = spawn_join(&broker, "q");
    tokio::task::yield_now().await;
    assert!(!joining.is_finished());

    // What the worker does: hold the delayed delivery, enqueue it on `q`, only then ack it.
    let worker = {
        let broker = broker.clone();
        let processed = processed.clone();
        tokio::spawn(async move {
            let mut dc = broker.consume("q.DQ", 10).await.unwrap();
            let mut c = broker.consume("q", 10).await.unwrap();
            let held = dc.fetch(PATIENCE).await.unwrap();
            tokio::task::yield_now().await;
            let mut due = dq_core::Message::decode(&held[0].body).unwrap();
            due.queue_name = "q".into();
            broker.enqueue(&mut due).await.unwrap();
            tokio::task::yield_now().await;
            dc.acker().ack(&tokens(&held)).await.unwrap();
            tokio::task::yield_now().await;
            let got = c.fetch(PATIENCE).await.unwrap();
            assert_eq!(nums(&got), [1]);
            tokio::task::yield_now().await;
            processed.fetch_add(1, Ordering::SeqCst);
            c.acker().ack(&tokens(&got)).await.unwrap();
        })
    };
    joining.await.unwrap().unwrap();
    assert_eq!(processed.load(Ordering::SeqCst), 1);
    worker.await.unwrap();
}

#[tokio::test]
async fn fail_fast_join_reports_new_dead_letters_even_with_work_left() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    broker.enqueue(&mut msg("q", 2)).await.unwrap();
    let mut c = broker.consume("q", 2).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();

    let joining = spawn_join(&broker, "q");
    tokio::task::yield_now().await;
    assert!(!joining.is_finished());
    c.acker()
        .nack(&got[0].token, "ZeroDivisionError: division by zero")
        .await
        .unwrap();

    let err = joining.await.unwrap().unwrap_err();
    match &err {
        JoinError::DeadLetters {
            queue,
            dead_letters,
        } => {
            assert_eq!(queue, "q");
            assert_eq!(dead_letters.len(), 1);
            assert_eq!(dead_letters[0].body, got[0].body);
            assert_eq!(
                dead_letters[0].reason.as_deref(),
                Some("ZeroDivisionError: division by zero")
            );
        }
        other => panic!("expected dead letters, got {other:?}"),
    }
    assert!(err.to_string().contains("division by zero"), "{err}");

    // Reported once: the next join waits for the rest of the work and succeeds.
    assert!(matches!(
        broker.join("q", Some(BRIEF)).await,
        Err(JoinError::Timeout { unsettled: 1, .. })
    ));
    c.acker().ack(&tokens(&got[1..])).await.unwrap();
    joined(&broker, "q").await.unwrap();
}

#[tokio::test]
async fn fail_fast_join_reports_dead_letters_made_before_it_started() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    c.acker().nack(&got[0].token, "boom").await.unwrap();
    assert!(matches!(
        broker.join("q", None).await,
        Err(JoinError::DeadLetters { dead_letters, .. }) if dead_letters.len() == 1
    ));
    broker.join("q", None).await.unwrap();
}

#[tokio::test]
async fn join_without_fail_fast_accepts_dead_letters() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    c.acker().nack(&got[0].token, "expected").await.unwrap();

    let lenient = JoinOptions::default().fail_fast(false);
    broker.join_with("q", lenient).await.unwrap();
    // Accepted by that join, so a later fail-fast join does not report it again...
    broker.join("q", None).await.unwrap();
    // ...but it stays in the dead-letter queue.
    assert_eq!(broker.dead_letters("q", 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn join_without_fail_fast_still_times_out() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    broker.enqueue(&mut msg("q", 2)).await.unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    let got = c.fetch(PATIENCE).await.unwrap();
    c.acker().nack(&got[0].token, "x").await.unwrap();
    let opts = JoinOptions::default().fail_fast(false).timeout(BRIEF);
    assert!(matches!(
        broker.join_with("q", opts).await,
        Err(JoinError::Timeout { ready: 1, .. })
    ));
    // A timed-out join reported nothing, so the dead letter is still new.
    assert!(matches!(
        broker.join("q", Some(BRIEF)).await,
        Err(JoinError::DeadLetters { .. })
    ));
}

#[tokio::test]
async fn join_waits_for_work_a_closed_consumer_gave_back() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    c.fetch(PATIENCE).await.unwrap();
    c.close().await.unwrap();
    assert!(matches!(
        broker.join("q", Some(BRIEF)).await,
        Err(JoinError::Timeout {
            ready: 1,
            unsettled: 0,
            ..
        })
    ));
}

#[tokio::test]
async fn flush_ends_a_join() {
    let broker = StubBroker::new();
    broker.enqueue(&mut msg("q", 1)).await.unwrap();
    broker.enqueue(&mut msg("q", 2)).await.unwrap();
    let mut c = broker.consume("q", 1).await.unwrap();
    c.fetch(PATIENCE).await.unwrap();
    let joining = spawn_join(&broker, "q");
    tokio::task::yield_now().await;
    assert!(!joining.is_finished());
    broker.flush("q").await.unwrap();
    joining.await.unwrap().unwrap();
}
