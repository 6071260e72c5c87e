//! The worker registry on Redis: records under `<ns>:__dq_workers__:<id>`, indexed in the
//! sorted set `<ns>:__dq_workers__`, expiring with their TTL, withdrawn on request, and never
//! taken for queues.

use std::time::Duration;

use dq_core::{ActorInfo, Broker, WorkerInfo};

use crate::util::{enqueue, Ns};

fn info(id: &str, actor: &str, queue: &str) -> WorkerInfo {
    WorkerInfo {
        worker_id: id.into(),
        hostname: "host".into(),
        pid: 1,
        started_at: 1,
        last_seen: 2,
        version: "0.1.0".into(),
        threads: 8,
        queues: vec![queue.into()],
        actors: vec![ActorInfo {
            actor_name: actor.into(),
            queue_name: queue.into(),
            priority: 5,
            options: serde_json::json!({"max_retries": 3})
                .as_object()
                .unwrap()
                .clone(),
        }],
    }
}

fn ids(workers: &[WorkerInfo]) -> Vec<&str> {
    workers.iter().map(|w| w.worker_id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_publish_read_back_and_withdraw() {
    let ns = Ns::new();
    let broker = ns.broker().await;
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
    assert_eq!(broker.workers().await.unwrap(), [a.clone(), b.clone()]);

    // The layout: a JSON record with a TTL per worker, and the index.
    let record: String = ns.cmd(&["GET", &ns.key("__dq_workers__:a")]).await;
    assert_eq!(WorkerInfo::decode(record.as_bytes()).unwrap(), a);
    let ttl: i64 = ns.cmd(&["PTTL", &ns.key("__dq_workers__:a")]).await;
    assert!(ttl > 0 && ttl <= 600_000, "{ttl}");
    let members: Vec<String> = ns
        .cmd(&["ZRANGE", &ns.key("__dq_workers__"), "0", "-1"])
        .await;
    assert_eq!(members, ["a", "b"]);
    let index_ttl: i64 = ns.cmd(&["PTTL", &ns.key("__dq_workers__")]).await;
    assert!(index_ttl > 0, "{index_ttl}");

    // The registry is not a queue, and other namespaces do not see it.
    enqueue(&broker, "jobs", 1).await;
    assert_eq!(broker.list_queues().await.unwrap(), ["jobs"]);
    let other = Ns::new();
    assert!(other.broker().await.workers().await.unwrap().is_empty());

    broker.withdraw_worker("a").await.unwrap();
    broker.withdraw_worker("never-published").await.unwrap();
    assert_eq!(ids(&broker.workers().await.unwrap()), ["b"]);
    let exists: i64 = ns.cmd(&["EXISTS", &ns.key("__dq_workers__:a")]).await;
    assert_eq!(exists, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_expires_after_its_ttl_and_leaves_the_index() {
    let ns = Ns::new();
    let broker = ns.broker().await;
    broker
        .publish_worker(&info("stays", "add", "default"), Duration::from_secs(600))
        .await
        .unwrap();
    let short = Duration::from_millis(200);
    broker
        .publish_worker(&info("dies", "add", "default"), short)
        .await
        .unwrap();
    tokio::time::sleep(short * 2).await;
    assert_eq!(ids(&broker.workers().await.unwrap()), ["stays"]);
    // The reader pruned the expired member.
    let members: Vec<String> = ns
        .cmd(&["ZRANGE", &ns.key("__dq_workers__"), "0", "-1"])
        .await;
    assert_eq!(members, ["stays"]);

    // With no live worker left, the index expires too.
    broker.withdraw_worker("stays").await.unwrap();
    broker
        .publish_worker(&info("last", "add", "default"), short)
        .await
        .unwrap();
    tokio::time::sleep(short * 2).await;
    let exists: i64 = ns.cmd(&["EXISTS", &ns.key("__dq_workers__")]).await;
    assert_eq!(exists, 0);
    assert!(broker.workers().await.unwrap().is_empty());
}
