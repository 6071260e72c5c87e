//! RabbitMQ priorities across languages: queues declared with `x-max-priority` by one side are
//! accepted by the other (a mismatch is a 406 that closes the channel), and the
//! `broker_priority` option one side writes is the AMQP priority the other side's worker gets
//! messages in (higher first).

use std::time::Duration;

use dq_interop::{BrokerKind, Lang, Scenario};
use serde_json::json;

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");
const EACH: usize = 5;

fn priority(producer: Lang, worker_lang: Lang) {
    let mut sc = Scenario::new(BrokerKind::Amqp, "priority");
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
    priority(Lang::Python, Lang::Dq);
}

#[test]
fn amqp_dq_priorities_python_worker() {
    priority(Lang::Dq, Lang::Python);
}
