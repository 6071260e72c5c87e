//! Aborts across languages, with the real dramatiq-abort 1.2.1: a Python `abort(message_id)`
//! cancels a queued message a dq worker would run and aborts a running dq actor; a dq abort
//! does the same to messages a Python worker with `Abortable` holds. The events live in Redis
//! whatever the broker is, so the dq worker is also run on RabbitMQ.

use std::time::Duration;

use dq::abort::{AbortMode, AbortOptions, Abortable, RedisBackend};
use dq_interop::{BrokerKind, Lang, Scenario, WorkerProcess};
use serde_json::{json, Value};

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");
const PATIENCE: Duration = Duration::from_secs(30);

fn scenario(kind: BrokerKind) -> Scenario {
    Scenario::new(kind, "abort").with_results().with_aborts()
}

/// Which side aborts.
#[derive(Clone, Copy)]
enum Aborter {
    Python,
    Dq,
}

fn abort(sc: &Scenario, by: Aborter, message: &dq::Message, mode: AbortMode) {
    match by {
        Aborter::Python => {
            sc.python_run(&["abort", &message.message_id, mode.as_str(), "0"]);
        }
        Aborter::Dq => {
            let backend = RedisBackend::builder()
                .url(&sc.redis_url)
                .namespace(sc.aborts_namespace.as_deref().expect("aborts on"))
                .build()
                .expect("backend");
            let options = AbortOptions::default().mode(mode);
            dq_interop::runtime()
                .block_on(Abortable::new(backend).abort_with(&message.message_id, &options))
                .expect("abort");
        }
    }
}

fn phases(records: &[Value], tag: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["tag"] == tag)
        .filter_map(|r| r["phase"].as_str().map(str::to_owned))
        .collect()
}

/// Cancels a queued `add` before the worker of `lang` starts, then aborts its running
/// `sleeper`; reads both outcomes through Python's result reader.
fn check(kind: BrokerKind, worker_lang: Lang, by: Aborter) {
    let sc = scenario(kind);
    let rt = dq_interop::runtime();
    let (cancelled, kept) = rt.block_on(async {
        let app = sc.dq_app().await;
        let m = |a: i64| dq::Message::new(&sc.queue, "add", &json!([a, 1]), &json!({})).unwrap();
        (
            app.enqueue(m(1), None).await.expect("enqueue"),
            app.enqueue(m(2), None).await.expect("enqueue"),
        )
    });
    abort(&sc, by, &cancelled, AbortMode::Cancel);

    let mut worker = sc.spawn_worker(worker_lang, DQ_WORKER, "w", 2);
    worker.wait_ready(PATIENCE);
    let log = |w: &WorkerProcess| format!("worker log:\n{}", w.log());
    assert_eq!(
        sc.python_get_result(&kept, 20_000),
        json!({"ok": 3}),
        "{}",
        log(&worker)
    );
    assert_eq!(
        sc.python_get_result(&cancelled, 20_000),
        json!({"ok": null}),
        "a cancelled message is skipped and stores None; {}",
        log(&worker)
    );

    let path = sc.path_str("sleeper.jsonl");
    let sleeper = rt.block_on(async {
        let app = sc.dq_app().await;
        let m = dq::Message::new(&sc.queue, "sleeper", &json!([path, "s"]), &json!({})).unwrap();
        app.enqueue(m, None).await.expect("enqueue")
    });
    sc.wait_records("sleeper.jsonl", PATIENCE, &[&worker], |r| {
        phases(r, "s").contains(&"started".to_owned())
    });
    abort(&sc, by, &sleeper, AbortMode::Abort);
    let got = sc.python_get_result(&sleeper, 20_000);
    assert_eq!(got["failure"]["type"], "Abort", "{got}; {}", log(&worker));
    // The Python actor caught Abort; the dq actor's future was dropped.
    let stopped = match worker_lang {
        Lang::Python => "aborted",
        Lang::Dq => "dropped",
    };
    let records = sc.wait_records("sleeper.jsonl", PATIENCE, &[&worker], |r| {
        phases(r, "s").contains(&stopped.to_owned())
    });
    assert!(!phases(&records, "s").contains(&"done".to_owned()));
    sc.assert_redis_drained();
    assert!(worker.stop(Duration::from_secs(20)), "{}", log(&worker));
}

#[test]
fn python_abort_cancels_and_aborts_on_a_dq_worker_redis() {
    check(BrokerKind::Redis, Lang::Dq, Aborter::Python);
}

#[test]
fn python_abort_cancels_and_aborts_on_a_dq_worker_amqp() {
    check(BrokerKind::Amqp, Lang::Dq, Aborter::Python);
}

#[test]
fn dq_abort_cancels_and_aborts_on_a_python_worker_redis() {
    check(BrokerKind::Redis, Lang::Python, Aborter::Dq);
}

#[test]
fn dq_and_python_write_the_same_events() {
    let sc = scenario(BrokerKind::Redis);
    let ns = sc.aborts_namespace.clone().unwrap();
    let py = dq::Message::new(&sc.queue, "add", &json!([1, 1]), &json!({})).unwrap();
    let rs = dq::Message::new(&sc.queue, "add", &json!([1, 1]), &json!({})).unwrap();
    abort(&sc, Aborter::Python, &py, AbortMode::Abort);
    abort(&sc, Aborter::Dq, &rs, AbortMode::Abort);
    let mut con = sc.redis();
    for mode in ["cancel", "abort"] {
        let read = |id: &str, con: &mut redis::Connection| -> (Vec<String>, i64) {
            let key = format!("{ns}{mode}:{id}");
            let values: Vec<String> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(con)
                .unwrap();
            let ttl: i64 = redis::cmd("PTTL").arg(&key).query(con).unwrap();
            (values, ttl)
        };
        let (py_values, py_ttl) = read(&py.message_id, &mut con);
        let (rs_values, rs_ttl) = read(&rs.message_id, &mut con);
        assert_eq!(rs_values, py_values, "{mode}");
        assert!(py_ttl > 0 && rs_ttl > 0 && rs_ttl <= 90_000 && py_ttl <= 90_000);
    }
}
