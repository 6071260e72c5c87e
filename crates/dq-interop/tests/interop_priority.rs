//! Broker priorities across languages.
//!
//! RabbitMQ: queues declared with `x-max-priority` by one side are accepted by the other (a
//! mismatch is a 406 that closes the channel), and the `broker_priority` option one side writes
//! is the AMQP priority the other side's worker gets messages in (higher first).
//!
//! Redis (dq's `max_priority`; Python's Redis broker has no priority): a Python producer's
//! `broker_priority` is honoured by a dq worker, a dq producer's by a dq worker, and a Python
//! worker gets every prioritized message once no dq process heartbeats for the queue; a
//! 10,000-message backlog at three levels runs in priority order through a worker with a
//! prefetch of 16.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dq::broker::Broker;
use dq_interop::{BrokerKind, Lang, Scenario};
use serde_json::json;

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");
const EACH: usize = 5;

fn priority(kind: BrokerKind, producer: Lang, worker_lang: Lang) {
    let mut sc = Scenario::new(kind, "priority");
    sc.max_priority = Some(10);
    // One message at a time, so the broker, not the worker's prefetch, decides the order.
    sc.extra_env
        .push(("dramatiq_queue_prefetch".to_owned(), "1".to_owned()));
    let rt = dq_interop::runtime();
    let file = sc.path_str("prio");
    // Low ones first: without priorities they would also run first.
    let sends: Vec<(String, Option<u8>)> = (0..EACH)
        .map(|i| (format!("low{i}"), None))
        .chain((0..EACH).map(|i| (format!("high{i}"), Some(9))))
        .collect();
    match producer {
        Lang::Python => {
            let spec: Vec<String> = sends
                .iter()
                .map(|(tag, p)| {
                    let options = match p {
                        Some(p) => json!({"broker_priority": p}),
                        None => json!({}),
                    };
                    json!({"actor": "record", "args": [file, tag], "options": options}).to_string()
                })
                .collect();
            sc.python_send(&format!("[{}]", spec.join(",")));
        }
        Lang::Dq => rt.block_on(async {
            let app = sc.dq_app().await;
            for (tag, p) in &sends {
                let mut m = dq::Message::new(&sc.queue, "record", &json!([file, tag]), &json!({}))
                    .expect("message");
                if let Some(p) = p {
                    m.options.0.insert("broker_priority".to_owned(), json!(p));
                }
                app.enqueue(m, None).await.expect("dq enqueues");
            }
        }),
    }
    let mut worker = sc.spawn_worker(worker_lang, DQ_WORKER, worker_lang.label(), 1);
    worker.wait_ready(Duration::from_secs(30));
    sc.wait_records("prio", Duration::from_secs(30), &[&worker], |r| {
        r.len() >= 2 * EACH
    });
    let order: Vec<String> = sc
        .records("prio")
        .iter()
        .map(|r| r["tag"].as_str().expect("tag").to_owned())
        .collect();
    assert_eq!(order.len(), 2 * EACH, "{order:?}");
    assert!(
        order[..EACH].iter().all(|t| t.starts_with("high")),
        "high-priority messages did not run first: {order:?}"
    );
    assert!(
        worker.stop(Duration::from_secs(20)),
        "log:\n{}",
        worker.log()
    );
}

#[test]
fn amqp_python_priorities_dq_worker() {
    priority(BrokerKind::Amqp, Lang::Python, Lang::Dq);
}

#[test]
fn amqp_dq_priorities_python_worker() {
    priority(BrokerKind::Amqp, Lang::Dq, Lang::Python);
}

/// Python's producer puts every message on the list; the dq worker moves those with a
/// `broker_priority` into its priority set when it first looks, so they run first.
#[test]
fn redis_python_priorities_dq_worker() {
    priority(BrokerKind::Redis, Lang::Python, Lang::Dq);
}

#[test]
fn redis_dq_priorities_dq_worker() {
    priority(BrokerKind::Redis, Lang::Dq, Lang::Dq);
}

/// A dq producer with `max_priority` puts prioritized messages where Python workers do not
/// look. With no dq consumer alive, their pseudo-worker's heartbeat goes stale and Python's own
/// maintenance moves them onto the list: the Python worker runs every message, once.
#[test]
fn redis_python_worker_gets_prioritized_messages_once_no_dq_process_heartbeats() {
    let mut sc = Scenario::new(BrokerKind::Redis, "priority").with_heartbeat(1_000, 1_000_000);
    sc.max_priority = Some(10);
    let rt = dq_interop::runtime();
    let file = sc.path_str("prio");
    let sends: Vec<(String, Option<u8>)> = (0..EACH)
        .map(|i| (format!("low{i}"), None))
        .chain((0..EACH).map(|i| (format!("high{i}"), Some(9))))
        .collect();
    rt.block_on(async {
        let app = sc.dq_app().await;
        for (tag, p) in &sends {
            let mut m = dq::Message::new(&sc.queue, "record", &json!([file, tag]), &json!({}))
                .expect("message");
            if let Some(p) = p {
                m.options.0.insert("broker_priority".to_owned(), json!(p));
            }
            app.enqueue(m, None).await.expect("dq enqueues");
        }
        let stats = app.broker().stats(&sc.queue).await.expect("stats");
        assert_eq!(
            (stats.ready, stats.prioritized),
            (2 * EACH as u64, EACH as u64)
        );
    });
    let mut worker = sc.spawn_worker(Lang::Python, DQ_WORKER, "py", 1);
    worker.wait_ready(Duration::from_secs(30));
    sc.wait_records("prio", Duration::from_secs(60), &[&worker], |r| {
        r.len() >= 2 * EACH
    });
    // A little longer: nothing runs twice.
    std::thread::sleep(Duration::from_millis(1_500));
    let mut tags: Vec<String> = sc
        .records("prio")
        .iter()
        .map(|r| r["tag"].as_str().expect("tag").to_owned())
        .collect();
    tags.sort();
    let mut expected: Vec<String> = sends.into_iter().map(|(t, _)| t).collect();
    expected.sort();
    assert_eq!(tags, expected);
    assert!(
        worker.stop(Duration::from_secs(20)),
        "log:\n{}",
        worker.log()
    );
    rt.block_on(async {
        let stats = sc.dq_broker().await.stats(&sc.queue).await.expect("stats");
        assert_eq!((stats.ready, stats.prioritized, stats.in_flight), (0, 0, 0));
    });
}

static BACKLOG_ORDER: Mutex<Vec<(u8, u64)>> = Mutex::new(Vec::new());

/// Records the level and sequence number of a message of the backlog as it runs.
fn record_level(
    m: &dq::Message,
    _: &dq::States,
) -> Result<dq::middleware::Invocation, dq::ArgsError> {
    let (seq,): (u64,) =
        serde_json::from_str(m.args.get()).map_err(|e| dq::ArgsError::Malformed(e.to_string()))?;
    let level = m.options.broker_priority().unwrap_or(0);
    Ok(dq::middleware::Invocation::Sync(Box::new(move || {
        BACKLOG_ORDER.lock().expect("order").push((level, seq));
        Ok(serde_json::Value::Null)
    })))
}

/// 10,000 messages at three levels (none, 5, 9), sent interleaved before the worker starts, run
/// level by level and FIFO within each, through a dq worker (one thread) with a prefetch of 16:
/// nothing runs more than a prefetch's worth of places out of order.
#[test]
fn redis_backlog_of_10000_at_three_levels_with_prefetch_16() {
    const BACKLOG: u64 = 10_000;
    const PREFETCH: usize = 16;
    let sc = Scenario::new(BrokerKind::Redis, "priority-backlog");
    let rt = dq_interop::runtime();
    let order = &BACKLOG_ORDER;
    rt.block_on(async {
        let broker = dq::redis::RedisBroker::builder()
            .url(sc.redis_url.clone())
            .namespace(sc.namespace.clone())
            .max_priority(Some(10))
            .build()
            .await
            .expect("Redis broker");
        let options = dq::middleware::ActorOptions {
            queue_name: sc.queue.clone(),
            ..Default::default()
        };
        let app = dq::App::builder(broker.clone())
            .without_linked_actors()
            .middleware_arcs(dq::middleware::default_middleware())
            .actor(dq::middleware::Actor::new(
                "record_level",
                options,
                record_level,
            ))
            .build()
            .expect("app");
        let levels = [0u8, 5, 9];
        let messages: Vec<dq::Message> = (0..BACKLOG)
            .map(|i| {
                let mut m = dq::Message::new(&sc.queue, "record_level", &json!([i]), &json!({}))
                    .expect("message");
                let level = levels[(i % 3) as usize];
                if level > 0 {
                    m.options
                        .0
                        .insert("broker_priority".to_owned(), json!(level));
                }
                m
            })
            .collect();
        app.enqueue_many(messages).await.expect("enqueue");
        let stats = broker.stats(&sc.queue).await.expect("stats");
        assert_eq!((stats.ready, stats.prioritized), (BACKLOG, 6_666));
        let worker = dq::Worker::new(
            app,
            dq::WorkerOptions {
                threads: 1,
                queue_prefetch: Some(PREFETCH),
                worker_timeout: Duration::from_millis(100),
                ..Default::default()
            },
        );
        worker.start().await.expect("worker starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        while order.lock().expect("order").len() < BACKLOG as usize {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {BACKLOG} ran",
                order.lock().expect("order").len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        worker.stop().await.expect("worker stops");
        let stats = broker.stats(&sc.queue).await.expect("stats");
        assert_eq!((stats.ready, stats.in_flight), (0, 0));
    });
    let order = order.lock().expect("order").clone();
    check_priority_order(&order, BACKLOG as usize, PREFETCH);
}

/// Every message ran once, and whatever ran `slack` or more places before a message is of a
/// level at least as high and, of the same level, was sent before it.
fn check_priority_order(order: &[(u8, u64)], total: usize, slack: usize) {
    assert_eq!(order.len(), total);
    let mut seen: Vec<u64> = order.iter().map(|(_, s)| *s).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), total, "a message ran twice or never");
    let mut lowest = u8::MAX;
    let mut last_seq: HashMap<u8, u64> = HashMap::new();
    for (i, &(level, seq)) in order.iter().enumerate() {
        if i >= slack {
            let (l, s) = order[i - slack];
            lowest = lowest.min(l);
            let e = last_seq.entry(l).or_insert(s);
            *e = (*e).max(s);
        }
        assert!(
            lowest >= level,
            "message {seq} of level {level} ran at {i}, more than {slack} places after one of level {lowest}"
        );
        if let Some(&before) = last_seq.get(&level) {
            assert!(
                before < seq,
                "message {seq} of level {level} ran at {i}, more than {slack} places after {before}"
            );
        }
    }
}
