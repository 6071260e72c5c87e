//! A vhost per application, as the user guide sets RabbitMQ up, and credentials that never leak.

use std::time::Duration;

use dq_broker_amqp::AmqpBroker;
use dq_core::{Broker, BrokerError, BrokerErrorKind};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::util::{self, fetch_n, Vhost};

#[tokio::test]
async fn an_app_in_its_own_vhost_with_its_own_user() {
    let base = util::init();
    let vhost = Vhost::new(&base, true);
    let (_, password) = vhost.user.clone().expect("a user");
    let broker = util::broker(&vhost.url()).await;
    let queue = dq_test::unique_name("vhost");

    let mut m = util::msg(&queue, 1);
    broker.enqueue(&mut m).await.unwrap();
    let mut consumer = broker.consume(&queue, 2).await.unwrap();
    let d = fetch_n(&mut consumer, 1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(d.body, m.encode());
    consumer.acker().ack(&[d.token]).await.unwrap();
    consumer.close().await.unwrap();
    assert_eq!(broker.stats(&queue).await.unwrap().ready, 0);

    // The queues live in the app's vhost only.
    let (_conn, ch) = util::raw(&base).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let err = ch
        .queue_declare(queue.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");

    // The password shows nowhere: not in Debug, not in errors, not in any log line so far.
    let err = broker.consume(&queue, 0).await.err().unwrap();
    let shown = format!("{broker:?} {err} {err:?} {}", broker.redacted_url());
    assert!(!shown.contains(&password), "{shown}");
    assert!(!util::logs().contains(&password));
}

#[tokio::test]
async fn a_missing_vhost_is_a_connection_error() {
    let base = util::init();
    let vhost = Vhost::new(&base, true);
    let (_, password) = vhost.user.clone().expect("a user");
    let url = vhost.url().replace(&vhost.name, "no-such-vhost");
    let err = AmqpBroker::builder().url(&url).build().await.unwrap_err();
    assert_eq!(err.kind(), BrokerErrorKind::Connection, "{err:?}");
    let shown = format!("{err} {err:?}");
    let text = format!("{shown} {}", BrokerError::from(err));
    assert!(!text.contains(&password), "{text}");
    assert!(text.contains("no-such-vhost"), "{text}");
}
