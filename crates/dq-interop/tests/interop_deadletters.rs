//! Dead letters across languages: a message a worker dead-lettered is requeued with dq's admin
//! API (what `dq dead-letters requeue` runs) and then run to success by a Python or a dq
//! worker. On Redis the requeued id must match the body's `redis_message_id`, or the worker's
//! ack misses and the message is left in its ack set; the drained check catches that.

use std::time::Duration;

use dq_interop::{BrokerKind, Lang, Scenario};

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");

fn requeue(kind: BrokerKind, worker_lang: Lang) {
    let sc = Scenario::new(kind, "deadletters");
    let rt = dq_interop::runtime();
    let mut worker = sc.spawn_worker(worker_lang, DQ_WORKER, worker_lang.label(), 2);
    worker.wait_ready(Duration::from_secs(30));
    let file = sc.path_str("gate");
    let gate_file = sc.path_str("gate-open");
    let sent = sc.python_send(
        &serde_json::json!([{"actor": "gate", "args": [file, "g", gate_file]}]).to_string(),
    );
    sc.wait_records("gate", Duration::from_secs(20), &[&worker], |r| {
        !r.is_empty()
    });

    let broker = rt.block_on(sc.dq_broker());
    let letters = rt.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let letters = broker
                .dead_letters(&sc.queue, 10)
                .await
                .expect("dead letters");
            if !letters.is_empty() || std::time::Instant::now() > deadline {
                break letters;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(letters.len(), 1, "log:\n{}", worker.log());
    let dead = dq::Message::decode(&letters[0].body).expect("dead letter decodes");
    assert_eq!(dead.message_id, sent[0].message_id);

    std::fs::write(&gate_file, "").expect("gate file");
    let requeued = rt
        .block_on(broker.requeue_dead_letters(&sc.queue, None, dq::broker::RetryCount::Reset))
        .expect("requeue");
    assert_eq!(requeued, [letters[0].id.clone()]);

    let rec = sc.wait_records("gate", Duration::from_secs(20), &[&worker], |r| {
        r.len() >= 2
    });
    assert_eq!(rec.len(), 2, "{rec:?}");
    assert_eq!(rec[1]["open"], true);
    assert_eq!(rec[1]["message_id"], sent[0].message_id.as_str());
    assert_eq!(rec[1]["queue"], sc.queue.as_str());
    let stats = rt.block_on(broker.stats(&sc.queue)).expect("stats");
    assert_eq!(
        (stats.ready, stats.delayed, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
    sc.assert_redis_drained();
    assert!(
        worker.stop(Duration::from_secs(20)),
        "log:\n{}",
        worker.log()
    );
}

#[test]
fn redis_python_dead_letter_requeued_by_dq() {
    requeue(BrokerKind::Redis, Lang::Python);
}

#[test]
fn redis_dq_dead_letter_requeued_by_dq() {
    requeue(BrokerKind::Redis, Lang::Dq);
}

#[test]
fn amqp_python_dead_letter_requeued_by_dq() {
    requeue(BrokerKind::Amqp, Lang::Python);
}

#[test]
fn amqp_dq_dead_letter_requeued_by_dq() {
    requeue(BrokerKind::Amqp, Lang::Dq);
}
