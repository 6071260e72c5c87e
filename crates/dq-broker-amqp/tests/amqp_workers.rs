//! The worker registry on RabbitMQ: records in the queue `dq:workers`, read without being
//! consumed, the newest per worker winning, withdrawn, expiring, and readers taking turns.
//! Each test has a vhost of its own, so it sees no other test's workers.

use std::time::Duration;

use dq_broker_amqp::{AmqpBroker, WORKERS_QUEUE};
use dq_core::{is_valid_queue_name, ActorInfo, Broker, WorkerInfo};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::util::{self, Vhost};

fn info(id: &str, actor: &str, queue: &str) -> WorkerInfo {
    WorkerInfo {
        worker_id: id.into(),
        hostname: "host".into(),
        pid: 1,
        queues: vec![queue.into()],
        actors: vec![ActorInfo {
            actor_name: actor.into(),
            queue_name: queue.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn ids(workers: &[WorkerInfo]) -> Vec<&str> {
    workers.iter().map(|w| w.worker_id.as_str()).collect()
}

/// How many messages `dq:workers` holds ready.
async fn held(url: &str) -> u32 {
    let (conn, ch) = util::raw(url).await;
    let q = ch
        .queue_declare(
            WORKERS_QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_publish_read_back_withdraw_and_expire() {
    let base = util::init();
    let vhost = Vhost::new(&base, false);
    let url = vhost.url();
    let broker = util::broker(&url).await;
    // The registry can never be a Dramatiq queue.
    assert!(!is_valid_queue_name(WORKERS_QUEUE));
    // Nothing published yet: the queue does not even exist.
    assert!(broker.workers().await.unwrap().is_empty());

    let long = Duration::from_secs(600);
    let a = info("a", "add", "default");
    broker.publish_worker(&a, long).await.unwrap();
    broker
        .publish_worker(&info("b", "send_email", "emails"), long)
        .await
        .unwrap();
    let mut b = info("b", "send_email", "mail");
    b.last_seen = 3;
    broker.publish_worker(&b, long).await.unwrap();
    // The newest record per worker, and reading consumed nothing.
    assert_eq!(broker.workers().await.unwrap(), [a.clone(), b.clone()]);
    assert_eq!(broker.workers().await.unwrap(), [a.clone(), b.clone()]);
    assert_eq!(held(&url).await, 3);

    // Another process (another connection) reads the same.
    let other = util::broker(&url).await;
    assert_eq!(other.workers().await.unwrap(), [a.clone(), b.clone()]);
    other.withdraw_worker("a").await.unwrap();
    assert_eq!(ids(&broker.workers().await.unwrap()), ["b"]);

    let short = Duration::from_millis(200);
    broker
        .publish_worker(&info("c", "add", "default"), short)
        .await
        .unwrap();
    assert_eq!(ids(&broker.workers().await.unwrap()), ["b", "c"]);
    tokio::time::sleep(short * 2).await;
    assert_eq!(ids(&broker.workers().await.unwrap()), ["b"]);
    broker.close().await.unwrap();
    other.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_take_turns_so_none_misses_a_worker() {
    let base = util::init();
    let vhost = Vhost::new(&base, false);
    let url = vhost.url();
    let publisher = util::broker(&url).await;
    let long = Duration::from_secs(600);
    for i in 0..20 {
        publisher
            .publish_worker(&info(&format!("w{i:02}"), "add", "default"), long)
            .await
            .unwrap();
    }
    // Readers on connections of their own, and two sharing one broker, all at once.
    let mut readers: Vec<AmqpBroker> = Vec::new();
    for _ in 0..3 {
        readers.push(util::broker(&url).await);
    }
    readers.push(readers[0].clone());
    let reads = readers.iter().map(|r| async move {
        let mut sizes = Vec::new();
        for _ in 0..5 {
            sizes.push(r.workers().await.unwrap().len());
        }
        sizes
    });
    for sizes in futures_util::future::join_all(reads).await {
        assert_eq!(sizes, [20; 5]);
    }
    for r in &readers {
        r.close().await.unwrap();
    }
    publisher.close().await.unwrap();
}
