//! Scenario 5: results across languages, in one Redis result store. A result (and a failure)
//! stored by a dq worker is read by Python's `message.get_result(backend, block=True)`, and one
//! stored by a Python worker is read by dq's `get_result`.

use std::time::Duration;

use dq::results::MessageResult;
use dq_interop::{BrokerKind, Lang, Scenario};
use serde_json::json;

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");

/// The scenario, results on; with `prefix_keys`, keys are the namespaced strings
/// (`use_namespace_prefix_keys`, Dramatiq 2.2) instead of their MD5.
fn scenario(kind: BrokerKind, prefix_keys: bool) -> Scenario {
    let mut sc = Scenario::new(kind, "results").with_results();
    sc.results_prefix_keys = prefix_keys;
    sc
}

/// With prefix keys, checks the result of `m` sits under Dramatiq's plain key.
fn assert_plain_key(sc: &Scenario, m: &dq::Message) {
    if !sc.results_prefix_keys {
        return;
    }
    let key = format!(
        "{}:{}:{}:{}",
        sc.results_namespace.as_deref().unwrap(),
        dq::broker::base_queue_name(&m.queue_name),
        m.actor_name,
        m.message_id
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query(&mut sc.redis())
        .unwrap();
    assert!(exists, "no result under {key}");
}

fn dq_worker_python_reader(kind: BrokerKind, prefix_keys: bool) {
    let sc = scenario(kind, prefix_keys);
    let rt = dq_interop::runtime();
    let mut worker = sc.spawn_worker(Lang::Dq, DQ_WORKER, "dq", 2);
    worker.wait_ready(Duration::from_secs(30));
    let (add, boom) = rt.block_on(async {
        let app = sc.dq_app().await;
        let add = dq::Message::new(&sc.queue, "add", &json!([2, 40]), &json!({})).unwrap();
        let boom = dq::Message::new(&sc.queue, "boom", &json!(["kaput ✗"]), &json!({})).unwrap();
        (
            app.enqueue(add, None).await.expect("enqueue"),
            app.enqueue(boom, None).await.expect("enqueue"),
        )
    });
    let got = sc.python_get_result(&add, 20_000);
    assert_eq!(got, json!({"ok": 42}), "worker log:\n{}", worker.log());
    assert_plain_key(&sc, &add);
    // Results are kept until their TTL: reading again gives the same.
    assert_eq!(sc.python_get_result(&add, 20_000), json!({"ok": 42}));
    let got = sc.python_get_result(&boom, 20_000);
    assert_eq!(
        got,
        json!({"failure": {"type": "Boom", "msg": "kaput ✗", "str": "actor raised Boom: kaput ✗"}}),
        "worker log:\n{}",
        worker.log()
    );
    sc.assert_redis_drained();
    assert!(
        worker.stop(Duration::from_secs(20)),
        "log:\n{}",
        worker.log()
    );
}

fn python_worker_dq_reader(kind: BrokerKind, prefix_keys: bool) {
    let sc = scenario(kind, prefix_keys);
    let rt = dq_interop::runtime();
    let mut worker = sc.spawn_worker(Lang::Python, DQ_WORKER, "py", 2);
    worker.wait_ready(Duration::from_secs(30));
    let sent = sc.python_send(
        r#"[{"actor":"add","args":[5,6]},{"actor":"add","args":[[1,"a"],[{"b":null}]]},{"actor":"boom","args":["kaput ✗"]}]"#,
    );
    let backend = sc.dq_results_backend();
    let timeout = Some(Duration::from_secs(20));
    rt.block_on(async {
        let sum: i64 = sent[0]
            .get_result(&backend, true, timeout)
            .await
            .expect("result");
        assert_eq!(sum, 11);
        assert_plain_key(&sc, &sent[0]);
        let again: i64 = sent[0]
            .get_result(&backend, false, None)
            .await
            .expect("result");
        assert_eq!(again, 11);
        let list: serde_json::Value = sent[1]
            .get_result(&backend, true, timeout)
            .await
            .expect("result");
        assert_eq!(list, json!([1, "a", {"b": null}]));
        match sent[2]
            .get_result::<serde_json::Value>(&backend, true, timeout)
            .await
        {
            Err(dq::results::Error::Failure {
                message_id,
                type_name,
                message,
            }) => {
                assert_eq!(message_id, sent[2].message_id);
                assert_eq!(type_name, "Boom");
                assert_eq!(message, "kaput ✗");
            }
            other => panic!(
                "expected the failure, got {other:?}; log:\n{}",
                worker.log()
            ),
        }
    });
    sc.assert_redis_drained();
    assert!(
        worker.stop(Duration::from_secs(20)),
        "log:\n{}",
        worker.log()
    );
}

#[test]
fn redis_dq_worker_result_read_by_python() {
    dq_worker_python_reader(BrokerKind::Redis, false);
}

#[test]
fn redis_python_worker_result_read_by_dq() {
    python_worker_dq_reader(BrokerKind::Redis, false);
}

#[test]
fn amqp_dq_worker_result_read_by_python() {
    dq_worker_python_reader(BrokerKind::Amqp, false);
}

#[test]
fn amqp_python_worker_result_read_by_dq() {
    python_worker_dq_reader(BrokerKind::Amqp, false);
}

#[test]
fn redis_prefix_keys_dq_worker_result_read_by_python() {
    dq_worker_python_reader(BrokerKind::Redis, true);
}

#[test]
fn redis_prefix_keys_python_worker_result_read_by_dq() {
    python_worker_dq_reader(BrokerKind::Redis, true);
}

/// A pipeline built by one language and run by the other's worker: each stage's result is
/// appended to the next stage's args (`pipe_target`), and the last result is read back by the
/// side that built it.
fn pipeline(kind: BrokerKind, builder: Lang) {
    let sc = scenario(kind, false);
    let rt = dq_interop::runtime();
    let worker_lang = builder.other();
    let mut worker = sc.spawn_worker(worker_lang, DQ_WORKER, worker_lang.label(), 2);
    worker.wait_ready(Duration::from_secs(30));
    let timeout = Some(Duration::from_secs(20));
    match builder {
        Lang::Dq => {
            let last = rt.block_on(async {
                let app = sc.dq_app().await;
                let first = dq::Message::new(&sc.queue, "add", &json!([1, 2]), &json!({})).unwrap();
                let second = dq::Message::new(&sc.queue, "add", &json!([10]), &json!({})).unwrap();
                let p = dq_core::pipeline([first, second])
                    .run_with(&app, None)
                    .await
                    .expect("pipeline runs");
                p.last().expect("a last message").clone()
            });
            let got = sc.python_get_result(&last, 20_000);
            assert_eq!(got, json!({"ok": 13}), "worker log:\n{}", worker.log());
        }
        Lang::Python => {
            let out = sc.python_run(&["send-pipeline"]);
            let last = dq::Message::decode(out.trim().as_bytes()).expect("last message");
            let backend = sc.dq_results_backend();
            let sum: i64 = rt
                .block_on(last.get_result(&backend, true, timeout))
                .unwrap_or_else(|e| panic!("{e}; worker log:\n{}", worker.log()));
            assert_eq!(sum, 13);
        }
    }
    sc.assert_redis_drained();
    assert!(
        worker.stop(Duration::from_secs(20)),
        "log:\n{}",
        worker.log()
    );
}

#[test]
fn redis_dq_pipeline_python_worker() {
    pipeline(BrokerKind::Redis, Lang::Dq);
}

#[test]
fn redis_python_pipeline_dq_worker() {
    pipeline(BrokerKind::Redis, Lang::Python);
}

#[test]
fn amqp_dq_pipeline_python_worker() {
    pipeline(BrokerKind::Amqp, Lang::Dq);
}

#[test]
fn amqp_python_pipeline_dq_worker() {
    pipeline(BrokerKind::Amqp, Lang::Python);
}
