//! Declarations: exactly Python Dramatiq's, so a mixed fleet never meets PRECONDITION_FAILED.

use std::time::Duration;

use dq_core::{Broker, BrokerErrorKind};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::util::{self, durable, python_queue_args, python_xq_args, Queue};

/// Python's declarations of `q`, `q.DQ` and `q.XQ`, non-passive: RabbitMQ answers 406 and
/// closes the channel if anything differs from the existing queue (arguments, durability).
async fn declare_like_python(url: &str, q: &Queue, max_priority: Option<i32>, ttl_ms: i32) {
    let (_conn, ch) = util::raw(url).await;
    for name in [q.name.clone(), q.dq()] {
        ch.queue_declare(
            name.as_str().into(),
            durable(),
            python_queue_args(&q.name, max_priority),
        )
        .await
        .unwrap_or_else(|e| panic!("python's declaration of {name} was refused: {e}"));
    }
    ch.queue_declare(q.xq().as_str().into(), durable(), python_xq_args(ttl_ms))
        .await
        .unwrap_or_else(|e| panic!("python's declaration of {} was refused: {e}", q.xq()));
}

#[tokio::test]
async fn declarations_are_pythons_without_priority() {
    let url = util::init();
    let q = Queue::new("declare", &url);
    let broker = util::broker(&url).await;
    broker.declare_queue(&q.name).await.unwrap();
    declare_like_python(&url, &q, None, 604_800_000).await;

    // The check has teeth: a declaration with other arguments is refused.
    let (_conn, ch) = util::raw(&url).await;
    let err = ch
        .queue_declare(
            q.name.as_str().into(),
            durable(),
            python_queue_args(&q.name, Some(10)),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
}

#[tokio::test]
async fn declarations_are_pythons_with_priority_and_a_custom_ttl() {
    let url = util::init();
    let q = Queue::new("declare-prio", &url);
    let broker = util::builder(&url)
        .max_priority(Some(10))
        .dead_message_ttl(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    assert_eq!(broker.dead_message_ttl_ms(), 60_000);
    broker
        .declare_queue(&format!("{}.DQ", q.name))
        .await
        .unwrap();
    declare_like_python(&url, &q, Some(10), 60_000).await;
}

#[tokio::test]
async fn python_declared_first_then_dq_declares_fine() {
    let url = util::init();
    let q = Queue::new("declare-py-first", &url);
    declare_like_python(&url, &q, Some(5), 604_800_000).await;
    let broker = util::builder(&url)
        .max_priority(Some(5))
        .build()
        .await
        .unwrap();
    broker.declare_queue(&q.name).await.unwrap();

    // A broker that disagrees with the fleet gets a clear, non-transient error.
    let other = util::builder(&url)
        .max_priority(Some(9))
        .build()
        .await
        .unwrap();
    let err = other.declare_queue(&q.name).await.unwrap_err();
    assert_eq!(err.kind(), BrokerErrorKind::Rejected, "{err}");
    assert!(err.to_string().contains("max_priority"), "{err}");
    // The broker is still usable afterwards: the refused declaration had a channel of its own.
    other.ping().await.unwrap();
}

#[tokio::test]
async fn enqueue_and_consume_declare_lazily() {
    let url = util::init();
    let (a, b) = (
        Queue::new("lazy-enqueue", &url),
        Queue::new("lazy-consume", &url),
    );
    let broker = util::broker(&url).await;
    broker.enqueue(&mut util::msg(&a.name, 1)).await.unwrap();
    let consumer = broker.consume(&format!("{}.DQ", b.name), 5).await.unwrap();
    consumer.close().await.unwrap();
    let (_conn, ch) = util::raw(&url).await;
    for name in [
        a.name.clone(),
        a.dq(),
        a.xq(),
        b.name.clone(),
        b.dq(),
        b.xq(),
    ] {
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        ch.queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("{name} was not declared: {e}"));
    }
    declare_like_python(&url, &a, None, 604_800_000).await;
}

#[tokio::test]
async fn invalid_queue_names_are_refused() {
    let url = util::init();
    let broker = util::broker(&url).await;
    // The last: with its ".XQ" one byte over what an AMQP short string holds.
    let too_long = "q".repeat(253);
    for bad in ["", "9lives", "has space", too_long.as_str()] {
        let err = broker.declare_queue(bad).await.unwrap_err();
        assert_eq!(err.kind(), BrokerErrorKind::Rejected, "{bad:?}: {err}");
        let err = broker.enqueue(&mut util::msg(bad, 1)).await.unwrap_err();
        assert_eq!(err.kind(), BrokerErrorKind::Rejected, "{bad:?}: {err}");
    }
}
