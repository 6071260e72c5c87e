//! The worker registry: what workers publish, read back, expiring and withdrawn.

use std::time::Duration;

use dq_broker_stub::StubBroker;
use dq_core::{ActorInfo, Broker, WorkerInfo};

fn info(id: &str, host: &str, actor: &str, queue: &str) -> WorkerInfo {
    WorkerInfo {
        worker_id: id.into(),
        hostname: host.into(),
        pid: 7,
        queues: vec![queue.into()],
        actors: vec![ActorInfo {
            actor_name: actor.into(),
            queue_name: queue.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn published_workers_are_listed_until_withdrawn_or_expired() {
    let broker = StubBroker::new();
    assert!(broker.workers().await.unwrap().is_empty());
    let long = Duration::from_secs(600);
    broker
        .publish_worker(&info("b", "host-b", "send_email", "emails"), long)
        .await
        .unwrap();
    broker
        .publish_worker(&info("a", "host-a", "add", "default"), long)
        .await
        .unwrap();
    // A second publish replaces the first.
    let mut again = info("b", "host-b", "send_email", "mail");
    again.last_seen = 42;
    broker.publish_worker(&again, long).await.unwrap();
    let listed = broker.workers().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].worker_id, "a");
    assert_eq!(listed[1], again);

    broker.withdraw_worker("a").await.unwrap();
    broker.withdraw_worker("never-published").await.unwrap();
    let ids: Vec<String> = broker
        .workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.worker_id)
        .collect();
    assert_eq!(ids, ["b"]);

    let short = Duration::from_millis(50);
    broker
        .publish_worker(&info("c", "host-c", "add", "default"), short)
        .await
        .unwrap();
    tokio::time::sleep(short * 2).await;
    let ids: Vec<String> = broker
        .workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.worker_id)
        .collect();
    assert_eq!(ids, ["b"], "c expired");
}
