//! Scenario 4: a worker of one language SIGKILLed while it holds messages (some running, some
//! prefetched), and those messages finished by a worker of the other language. On RabbitMQ the
//! broker redelivers when the connection drops; on Redis the other worker's maintenance takes
//! them back from the dead worker's ack set once its heartbeat is older than the timeout, which
//! both sides set to the same short value here.

use std::collections::BTreeSet;
use std::time::Duration;

use dq_interop::{BrokerKind, Lang, Scenario};

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");
/// Redis heartbeat timeout of both sides: short, so the recovery is quick.
const HEARTBEAT_MS: u64 = 3_000;
/// Maintenance on every script call, so the recovery does not wait on a 0.1 % draw.
const ALWAYS: u32 = 1_000_000;
const THREADS: u32 = 4;
/// More than the victim runs at once: the rest sit in its prefetch.
const MESSAGES: usize = 6;

fn kill_and_recover(kind: BrokerKind, victim_lang: Lang) {
    let sc = Scenario::new(kind, "kill").with_heartbeat(HEARTBEAT_MS, ALWAYS);
    let rescuer_lang = victim_lang.other();
    let victim_who = format!("victim-{}", victim_lang.label());
    let rescuer_who = format!("rescuer-{}", rescuer_lang.label());
    let mut victim = sc.spawn_worker(victim_lang, DQ_WORKER, &victim_who, THREADS);
    victim.wait_ready(Duration::from_secs(30));

    let file = sc.path_str("hold");
    let release = sc.path_str("release");
    let spec: Vec<String> = (0..MESSAGES)
        .map(|i| {
            serde_json::json!({"actor": "hold", "args": [file, format!("h{i}"), release]})
                .to_string()
        })
        .collect();
    let sent = sc.python_send(&format!("[{}]", spec.join(",")));
    let ids: BTreeSet<String> = sent.iter().map(|m| m.message_id.clone()).collect();

    // The victim is running THREADS of them, and holds the rest.
    sc.wait_records("hold", Duration::from_secs(30), &[&victim], |r| {
        r.iter().filter(|r| r["phase"] == "started").count() >= THREADS as usize
    });
    victim.kill();
    std::fs::write(&release, "").expect("release file");

    let mut rescuer = sc.spawn_worker(rescuer_lang, DQ_WORKER, &rescuer_who, THREADS);
    rescuer.wait_ready(Duration::from_secs(30));
    sc.wait_records("hold", Duration::from_secs(60), &[&victim, &rescuer], |r| {
        r.iter().filter(|r| r["phase"] == "done").count() >= MESSAGES
    });
    std::thread::sleep(Duration::from_millis(300));
    let records = sc.records("hold");
    let done: Vec<&serde_json::Value> = records.iter().filter(|r| r["phase"] == "done").collect();
    assert_eq!(done.len(), MESSAGES, "{records:?}");
    let done_ids: BTreeSet<String> = done
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(done_ids, ids, "every message finished exactly once");
    for r in &done {
        assert_eq!(r["who"], rescuer_who.as_str(), "{r}");
    }
    let victim_started = records
        .iter()
        .filter(|r| r["who"] == victim_who.as_str() && r["phase"] == "started")
        .count();
    assert!(victim_started >= THREADS as usize);

    let rt = dq_interop::runtime();
    let stats = rt.block_on(async { sc.dq_broker().await.stats(&sc.queue).await.expect("stats") });
    assert_eq!(
        (stats.ready, stats.delayed, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
    // The dead worker's ack set was emptied by the recovery, and every id acked.
    sc.assert_redis_drained();
    assert!(
        rescuer.stop(Duration::from_secs(20)),
        "log:\n{}",
        rescuer.log()
    );
}

/// Dramatiq's gotcha: a Redis worker must heartbeat even while every thread is busy and its
/// prefetch is full (so its queue consumer fetches nothing), or another worker's maintenance
/// takes back the messages it is running and they run twice. Here dq holds its whole prefetch
/// for three heartbeat timeouts while a Python worker runs maintenance on every call. (Its
/// delay-queue consumer keeps polling too, so this checks the end result, not which of the two
/// keeps the heartbeat fresh.)
#[test]
fn redis_busy_dq_worker_keeps_its_messages() {
    const HEARTBEAT_MS: u64 = 2_000;
    let mut sc = Scenario::new(BrokerKind::Redis, "busy").with_heartbeat(HEARTBEAT_MS, ALWAYS);
    sc.extra_env
        .push(("dramatiq_queue_prefetch".to_owned(), "2".to_owned()));
    let mut dq = sc.spawn_dq_worker(DQ_WORKER, "dq", 2);
    dq.wait_ready(Duration::from_secs(30));
    let file = sc.path_str("hold");
    let release = sc.path_str("release");
    let spec: Vec<String> = (0..2)
        .map(|i| {
            serde_json::json!({"actor": "hold", "args": [file, format!("h{i}"), release]})
                .to_string()
        })
        .collect();
    sc.python_send(&format!("[{}]", spec.join(",")));
    sc.wait_records("hold", Duration::from_secs(30), &[&dq], |r| r.len() >= 2);

    let mut py = sc.spawn_python_worker("py", 2);
    py.wait_ready(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(3 * HEARTBEAT_MS));
    std::fs::write(&release, "").expect("release file");
    sc.wait_records("hold", Duration::from_secs(30), &[&dq, &py], |r| {
        r.len() >= 4
    });
    std::thread::sleep(Duration::from_millis(300));
    let records = sc.records("hold");
    assert_eq!(records.len(), 4, "a message ran twice: {records:?}");
    for r in &records {
        assert_eq!(r["who"], "dq", "{r}");
    }
    sc.assert_redis_drained();
    assert!(py.stop(Duration::from_secs(20)), "log:\n{}", py.log());
    assert!(dq.stop(Duration::from_secs(20)), "log:\n{}", dq.log());
}

#[test]
fn redis_python_killed_dq_recovers() {
    kill_and_recover(BrokerKind::Redis, Lang::Python);
}

#[test]
fn redis_dq_killed_python_recovers() {
    kill_and_recover(BrokerKind::Redis, Lang::Dq);
}

#[test]
fn amqp_python_killed_dq_recovers() {
    kill_and_recover(BrokerKind::Amqp, Lang::Python);
}

#[test]
fn amqp_dq_killed_python_recovers() {
    kill_and_recover(BrokerKind::Amqp, Lang::Dq);
}
