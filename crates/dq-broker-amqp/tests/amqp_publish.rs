//! Publishing: persistent, default exchange, only the properties Python sets, with confirms.

use dq_core::{now_ms, Broker, BrokerErrorKind};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::BasicProperties;

use crate::util::{self, Queue};

async fn get_raw(url: &str, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let (_conn, ch) = util::raw(url).await;
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
}

#[tokio::test]
async fn messages_carry_only_delivery_mode_and_priority() {
    let url = util::init();
    let q = Queue::new("publish-props", &url);
    let broker = util::builder(&url)
        .max_priority(Some(10))
        .build()
        .await
        .unwrap();

    let mut with_priority = util::msg(&q.name, 1);
    with_priority
        .options
        .insert("broker_priority".into(), 3.into());
    broker.enqueue(&mut with_priority).await.unwrap();
    let got = get_raw(&url, &q.name).await.expect("a message on q");
    assert_eq!(
        got.delivery.properties,
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_priority(3)
    );
    assert_eq!(got.delivery.data, with_priority.encode());
    assert_eq!(got.delivery.exchange.as_str(), "");
    assert_eq!(got.delivery.routing_key.as_str(), q.name);

    let mut plain = util::msg(&q.name, 2);
    broker.enqueue(&mut plain).await.unwrap();
    let got = get_raw(&url, &q.name).await.expect("a message on q");
    assert_eq!(
        got.delivery.properties,
        BasicProperties::default().with_delivery_mode(2)
    );
    assert_eq!(got.delivery.data, plain.encode());
}

#[tokio::test]
async fn delayed_messages_go_to_the_delay_queue() {
    let url = util::init();
    let q = Queue::new("publish-delay", &url);
    let broker = util::broker(&url).await;
    let mut m = util::msg(&q.dq(), 7);
    m.options.set_eta(now_ms() + 60_000);
    broker.enqueue(&mut m).await.unwrap();

    let stats = broker.stats(&q.name).await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.dead), (0, 1, 0));
    assert!(get_raw(&url, &q.name).await.is_none(), "nothing on q");
    let got = get_raw(&url, &q.dq()).await.expect("the message on q.DQ");
    assert_eq!(got.delivery.data, m.encode());
}

#[tokio::test]
async fn enqueue_many_publishes_everything_in_order() {
    let url = util::init();
    let q = Queue::new("publish-many", &url);
    let broker = util::broker(&url).await;
    let mut batch: Vec<_> = (0..200).map(|i| util::msg(&q.name, i)).collect();
    broker.enqueue_many(&mut batch).await.unwrap();
    // Confirmed means counted: no waiting needed.
    assert_eq!(broker.stats(&q.name).await.unwrap().ready, 200);
    let (_conn, ch) = util::raw(&url).await;
    for i in 0..200 {
        let got = ch
            .basic_get(q.name.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .expect("a message");
        assert_eq!(util::arg_of(&got.delivery.data), i);
    }
}

#[tokio::test]
async fn a_deleted_queue_is_declared_again_on_enqueue() {
    let url = util::init();
    let q = Queue::new("publish-redeclare", &url);
    let broker = util::broker(&url).await;
    broker.enqueue(&mut util::msg(&q.name, 1)).await.unwrap();
    let (_conn, ch) = util::raw(&url).await;
    ch.queue_delete(q.name.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();

    // The broker still thinks q is declared; RabbitMQ returns the mandatory publish as
    // unroutable, and the broker declares q again and publishes once more.
    let mut m = util::msg(&q.name, 2);
    broker.enqueue(&mut m).await.unwrap();
    let got = get_raw(&url, &q.name).await.expect("the message landed");
    assert_eq!(got.delivery.data, m.encode());
}

#[tokio::test]
async fn without_confirms_messages_still_arrive() {
    let url = util::init();
    let q = Queue::new("publish-noconfirm", &url);
    let broker = util::builder(&url)
        .confirm_delivery(false)
        .build()
        .await
        .unwrap();
    let mut batch: Vec<_> = (0..20).map(|i| util::msg(&q.name, i)).collect();
    broker.enqueue_many(&mut batch).await.unwrap();
    assert!(
        dq_test::wait_until_async(std::time::Duration::from_secs(10), || async {
            broker.stats(&q.name).await.unwrap().ready == 20
        })
        .await
    );
}

#[tokio::test]
async fn a_nonexistent_queue_is_not_an_error_for_admin_calls() {
    let url = util::init();
    let q = Queue::new("publish-missing", &url);
    let broker = util::broker(&url).await;
    assert_eq!(broker.stats(&q.name).await.unwrap(), Default::default());
    broker.flush(&q.name).await.unwrap();
    assert!(broker.dead_letters(&q.name, 10).await.unwrap().is_empty());
    let err = broker.stats("not valid").await.unwrap_err();
    assert_eq!(err.kind(), BrokerErrorKind::Rejected);
}

/// RabbitMQ cannot take a lock and publish as one step: unique sends are refused, with a typed
/// error, and nothing is published.
#[tokio::test]
async fn unique_sends_are_refused() {
    let url = util::init();
    let q = Queue::new("publish-unique", &url);
    let broker = util::broker(&url).await;
    broker.declare_queue(&q.name).await.unwrap();
    let lock = dq_core::UniqueLock {
        key: "k".into(),
        mode: dq_core::UniqueMode::Unique,
        until: dq_core::UniqueUntil::Finished,
        ttl: std::time::Duration::from_secs(60),
    };
    let mut m = util::msg(&q.name, 1);
    let e = broker.enqueue_unique(&lock, &mut m).await.unwrap_err();
    assert_eq!(e.kind(), BrokerErrorKind::Unsupported, "{e}");
    assert!(get_raw(&url, &q.name).await.is_none());
    let e = broker
        .release_unique(&q.name, "k", &m.message_id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), BrokerErrorKind::Unsupported);
}
