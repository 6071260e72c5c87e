//! `broker_priority`: AMQP priority, higher first, effective with `max_priority`.

use std::time::Duration;

use dq_core::Broker;

use crate::util::{self, fetch_n, Queue};

#[tokio::test]
async fn higher_broker_priority_is_delivered_first() {
    let url = util::init();
    let q = Queue::new("priority", &url);
    let broker = util::builder(&url)
        .max_priority(Some(10))
        .build()
        .await
        .unwrap();
    // Arg = priority; 0 stands for "no broker_priority", which RabbitMQ treats as 0.
    for p in [1u64, 0, 9, 5, 10] {
        let mut m = util::msg(&q.name, p);
        if p > 0 {
            m.options.insert("broker_priority".into(), p.into());
        }
        broker.enqueue(&mut m).await.unwrap();
    }
    // All five are confirmed before consuming starts, and prefetch 1 lets RabbitMQ pick the
    // most urgent ready message each time.
    let mut consumer = broker.consume(&q.name, 1).await.unwrap();
    let acker = consumer.acker();
    let mut order = Vec::new();
    for _ in 0..5 {
        let d = fetch_n(&mut consumer, 1, Duration::from_secs(10))
            .await
            .remove(0);
        order.push(util::arg_of(&d.body));
        acker.ack(&[d.token]).await.unwrap();
    }
    assert_eq!(order, [10, 9, 5, 1, 0]);
    consumer.close().await.unwrap();
}
