//! What a worker publishes to its broker's worker registry: itself and the actors of the queues
//! it consumes, once started, refreshed while it runs, withdrawn when it stops.

use std::time::{Duration, Instant};

use dq_broker_stub::StubBroker;
use dq_core::{Actor, ActorOptions, App, ArgsError, Broker, Invocation, Message, States};
use dq_worker::{Worker, WorkerOptions};
use serde_json::Value;

fn noop(_: &Message, _: &States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| Ok(Value::Null))))
}

fn actor(name: &str, queue: &str, f: impl FnOnce(&mut ActorOptions)) -> Actor {
    let mut options = ActorOptions {
        queue_name: queue.to_owned(),
        ..Default::default()
    };
    f(&mut options);
    Actor::new(name, options, noop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_worker_publishes_its_actors_and_a_stopped_one_withdraws() {
    let broker = StubBroker::new();
    let app = App::builder(broker.clone())
        .without_linked_actors()
        .actor(actor("send_email", "emails", |o| {
            o.priority = 5;
            o.max_retries = Some(Some(3));
        }))
        .actor(actor("add", "default", |_| {}))
        .actor(actor("report", "reports", |_| {}))
        .build()
        .unwrap();
    let worker = Worker::new(
        app,
        WorkerOptions {
            threads: 2,
            queues: Some(vec!["emails".into(), "default".into()]),
            worker_timeout: Duration::from_millis(50),
            registry_interval: Duration::from_millis(50),
            registry_ttl: Duration::from_secs(30),
            ..Default::default()
        },
    );
    assert!(broker.workers().await.unwrap().is_empty());
    worker.start().await.unwrap();

    // Published by the time `start` returns.
    let listed = broker.workers().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let me = &listed[0];
    assert_eq!(me.worker_id, worker.id());
    assert_eq!(me.pid, std::process::id());
    assert!(!me.hostname.is_empty());
    assert_eq!(me.threads, 2);
    assert_eq!(me.queues, ["default", "emails"]);
    // Only the actors of the queues it consumes, by name.
    let names: Vec<&str> = me.actors.iter().map(|a| a.actor_name.as_str()).collect();
    assert_eq!(names, ["add", "send_email"]);
    let send_email = me.actor("send_email").unwrap();
    assert_eq!(send_email.queue_name, "emails");
    assert_eq!(send_email.priority, 5);
    assert_eq!(send_email.options["max_retries"], 3);
    assert!(me.actor("add").unwrap().options.is_empty());
    assert!(me.started_at > 0 && me.last_seen >= me.started_at);

    // Refreshed while it runs.
    let first_seen = me.last_seen;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = broker.workers().await.unwrap();
        if now[0].last_seen > first_seen {
            assert_eq!(now[0].started_at, me.started_at);
            break;
        }
        assert!(Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    worker.stop().await.unwrap();
    assert!(broker.workers().await.unwrap().is_empty());
}
