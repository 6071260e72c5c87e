//! `amqps://` against a real TLS listener: a private RabbitMQ node whose certificate a CA made by
//! the test signed. The broker trusts that CA through `tls_root_certificate`, the worker command
//! through `DQ_TLS_CA_FILE`; without it the connection is refused, and the worker command's first
//! start exits with code 3.

use std::collections::HashMap;
use std::time::Duration;

use dq::amqp::{AmqpBroker, AmqpBrokerError};
use dq::broker::{Broker, BrokerErrorKind, QueueStats};
use dq::Message;

use crate::reliability_util::{
    send_records, wait_drained, AmqpQueue, PrivateRabbit, Recorder, TempDir, Worker,
};

const MESSAGES: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_round_trip_through_a_private_ca() {
    let rabbit = PrivateRabbit::start_with_tls().await;
    let (url, ca) = rabbit.tls_url();
    let ca_file = ca.ca_cert();

    // The library: one message over TLS, enqueued, delivered, acked.
    let broker = AmqpBroker::builder()
        .url(&url)
        .tls_root_certificate(ca.ca_pem())
        .build()
        .await
        .expect("connect over TLS, trusting the test's CA");
    let queue = AmqpQueue::new(&rabbit.url(), "dq-tls");
    let mut m = Message::new(&queue.name, "record", &("x", 1), &()).unwrap();
    broker.enqueue(&mut m).await.unwrap();
    let mut consumer = broker.consume(&queue.name, 1).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        got = consumer.fetch(Duration::from_millis(500)).await.unwrap();
        if !got.is_empty() {
            break;
        }
    }
    let got = got.pop().expect("a delivery within 10 s");
    let decoded = dq::Message::decode(&got.body).expect("decode");
    assert_eq!(decoded.message_id, m.message_id);
    consumer
        .acker()
        .ack(std::slice::from_ref(&got.token))
        .await
        .unwrap();
    consumer.close().await.unwrap();
    assert_eq!(
        broker.stats(&queue.name).await.unwrap(),
        QueueStats::default()
    );

    // Without the CA the certificate is untrusted: a connection error, never a hang or panic.
    let err = AmqpBroker::builder()
        .url(&url)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, AmqpBrokerError::Connect { .. }), "{err:?}");
    assert_eq!(err.kind(), BrokerErrorKind::Connection, "{err:?}");

    // A file that is no certificate is a settings error.
    let err = AmqpBroker::builder()
        .url(&url)
        .tls_root_certificate(b"not a certificate".to_vec())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, AmqpBrokerError::InvalidConfig(_)), "{err:?}");

    // The worker command: without DQ_TLS_CA_FILE its first start fails with code 3 ...
    let dir = TempDir::new("dq-rel-tls");
    let mut rec = Recorder::new();
    let mut env = HashMap::from([
        ("DQ_RELIABILITY_QUEUE", queue.name.clone()),
        ("DQ_RELIABILITY_RECORD_URL", dq_test::redis_url()),
    ]);
    let mut refused = Worker::start(
        &["--broker-url", url.as_str()],
        &env,
        dir.path().join("refused.log"),
    );
    let ended = dq_test::wait_until(Duration::from_secs(30), || refused.status().is_some());
    assert!(ended, "still running without the CA:\n{}", refused.log());
    let status = refused.status().expect("ended");
    assert_eq!(status.code(), Some(3), "{}", refused.log());
    assert!(
        !refused.log().contains("guest:guest"),
        "the password was logged: {}",
        refused.log()
    );

    // ... and with it, every message runs over TLS.
    send_records(&broker, &queue.name, &rec.key, MESSAGES).await;
    env.insert("DQ_TLS_CA_FILE", ca_file.to_string_lossy().into_owned());
    let mut worker = Worker::start(
        &["--broker-url", url.as_str()],
        &env,
        dir.path().join("worker.log"),
    );
    rec.wait_for(MESSAGES, Duration::from_secs(60), "over TLS", &mut worker)
        .await;
    wait_drained(
        &broker,
        &queue.name,
        &mut rec,
        &mut worker,
        Duration::from_secs(30),
    )
    .await;
    worker.stop_cleanly(Duration::from_secs(30));

    // A CA file that cannot be read is the settings' fault: code 2, naming the variable.
    env.insert("DQ_TLS_CA_FILE", "/no/such/ca.pem".to_owned());
    let mut unreadable = Worker::start(
        &["--broker-url", url.as_str()],
        &env,
        dir.path().join("unreadable.log"),
    );
    let ended = dq_test::wait_until(Duration::from_secs(30), || unreadable.status().is_some());
    assert!(ended, "still running:\n{}", unreadable.log());
    let status = unreadable.status().expect("ended");
    assert_eq!(status.code(), Some(2), "{}", unreadable.log());
    assert!(
        unreadable.log().contains("DQ_TLS_CA_FILE"),
        "{}",
        unreadable.log()
    );
    drop(broker);
}
