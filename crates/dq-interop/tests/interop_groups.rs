//! Group completion callbacks across languages: a group whose children are run half by a
//! Python worker and half by a dq worker, sharing Dramatiq's barrier in Redis, enqueues its
//! callback exactly once, after the last child.

use std::time::Duration;

use dq_interop::{BrokerKind, Scenario};

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");
/// Children per worker: each worker runs (and prefetches) exactly this many at once.
const EACH: usize = 2;

fn group(kind: BrokerKind) {
    let mut sc = Scenario::new(kind, "groups");
    sc.groups = true;
    sc.extra_env
        .push(("dramatiq_queue_prefetch".to_owned(), EACH.to_string()));
    let file = sc.path_str("group");
    let release = sc.path_str("release");
    // Python first: it takes EACH children and can hold no more; dq takes the rest.
    let mut py = sc.spawn_python_worker("py", EACH as u32);
    py.wait_ready(Duration::from_secs(30));
    sc.python_run(&["send-group", &file, &(2 * EACH).to_string(), &release]);
    sc.wait_records("group", Duration::from_secs(20), &[&py], |r| {
        r.len() >= EACH
    });
    let mut dq = sc.spawn_dq_worker(DQ_WORKER, "dq", EACH as u32);
    dq.wait_ready(Duration::from_secs(30));
    let started = sc.wait_records("group", Duration::from_secs(20), &[&py, &dq], |r| {
        r.len() >= 2 * EACH
    });
    for who in ["py", "dq"] {
        let n = started.iter().filter(|r| r["who"] == who).count();
        assert_eq!(n, EACH, "{who} started {n} children: {started:?}");
    }
    std::fs::write(&release, "").expect("release file");

    let records = sc.wait_records("group", Duration::from_secs(30), &[&py, &dq], |r| {
        r.iter().any(|r| r["tag"] == "callback")
    });
    std::thread::sleep(Duration::from_millis(500));
    let records = {
        let again = sc.records("group");
        assert!(again.len() >= records.len());
        again
    };
    let done: Vec<_> = records.iter().filter(|r| r["phase"] == "done").collect();
    assert_eq!(done.len(), 2 * EACH, "{records:?}");
    let callbacks: Vec<_> = records.iter().filter(|r| r["tag"] == "callback").collect();
    assert_eq!(callbacks.len(), 1, "{records:?}");
    let last_child = done
        .iter()
        .map(|r| r["at_ms"].as_i64().unwrap())
        .max()
        .unwrap();
    assert!(callbacks[0]["at_ms"].as_i64().unwrap() >= last_child);
    sc.assert_redis_drained();
    assert!(py.stop(Duration::from_secs(20)), "log:\n{}", py.log());
    assert!(dq.stop(Duration::from_secs(20)), "log:\n{}", dq.log());
}

#[test]
fn redis_group_split_between_python_and_dq() {
    group(BrokerKind::Redis);
}

#[test]
fn amqp_group_split_between_python_and_dq() {
    group(BrokerKind::Amqp);
}
