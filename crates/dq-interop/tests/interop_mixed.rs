//! Scenario 3: a Python and a dq worker consuming one queue at once, fed by both producers:
//! every message processed, none lost, none run twice (no worker dies here).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dq_interop::{BrokerKind, Scenario};
use serde_json::json;

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");
/// Messages per producer.
const EACH: u64 = 1_000;
/// Messages that fail twice before they pass.
const FLAKY: usize = 20;

fn mixed(kind: BrokerKind) {
    let sc = Scenario::new(kind, "mixed");
    let rt = dq_interop::runtime();
    let mut py = sc.spawn_python_worker("py", 8);
    let mut dq = sc.spawn_dq_worker(DQ_WORKER, "dq", 8);
    py.wait_ready(Duration::from_secs(30));
    dq.wait_ready(Duration::from_secs(30));

    let file = sc.path_str("count");
    // Both producers at once: Python sends 0..EACH, dq EACH..2*EACH.
    std::thread::scope(|s| {
        s.spawn(|| {
            sc.python_run(&["send-count", &file, "0", &EACH.to_string()]);
        });
        rt.block_on(async {
            let app = sc.dq_app().await;
            let messages: Vec<dq::Message> = (EACH..2 * EACH)
                .map(|i| dq::Message::new(&sc.queue, "count", &json!([file, i]), &json!({})))
                .collect::<Result<_, _>>()
                .expect("messages");
            for chunk in messages.chunks(250) {
                app.enqueue_many(chunk.to_vec()).await.expect("dq enqueues");
            }
        });
    });

    let total = 2 * EACH as usize;
    let records = sc.wait_records("count", Duration::from_secs(90), &[&py, &dq], |r| {
        r.len() >= total
    });
    // A duplicate would show up as extra lines: give late ones a moment to appear.
    std::thread::sleep(Duration::from_millis(500));
    let records = {
        let again = sc.records("count");
        assert!(again.len() >= records.len());
        again
    };
    let mut seen = BTreeSet::new();
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        let i = r["i"].as_u64().expect("i");
        assert!(seen.insert(i), "message {i} ran twice: {r}");
        *by_worker
            .entry(r["who"].as_str().expect("who").to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen, (0..2 * EACH).collect::<BTreeSet<_>>());
    assert_eq!(records.len(), total);
    // The point of the scenario: both kinds of worker took part.
    assert!(
        by_worker.get("py").copied().unwrap_or(0) > 0
            && by_worker.get("dq").copied().unwrap_or(0) > 0,
        "one worker did everything: {by_worker:?}"
    );
    // Retries in a mixed pool: a message failed by one worker is retried (through the delay
    // queue, with the `retries` option the failing side wrote) by whichever takes it next;
    // each attempt runs once. (Which side runs which attempt is up to the polling; the
    // handoff test makes one language's retry run in the other for certain.)
    let flaky_file = sc.path_str("flaky");
    let spec: Vec<String> = (0..FLAKY)
        .map(|i| json!({"actor": "flaky", "args": [flaky_file, format!("f{i}"), 2]}).to_string())
        .collect();
    let sent = sc.python_send(&format!("[{}]", spec.join(",")));
    let flaky = sc.wait_records("flaky", Duration::from_secs(60), &[&py, &dq], |r| {
        r.len() >= 3 * FLAKY
    });
    std::thread::sleep(Duration::from_millis(300));
    let flaky = {
        let again = sc.records("flaky");
        assert!(again.len() >= flaky.len());
        again
    };
    let mut attempts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in &flaky {
        attempts
            .entry(r["message_id"].as_str().expect("id").to_owned())
            .or_default()
            .push(r["attempt"].as_i64().expect("attempt"));
    }
    assert_eq!(attempts.len(), sent.len());
    for m in &sent {
        let mut a = attempts[&m.message_id].clone();
        a.sort_unstable();
        assert_eq!(a, [0, 1, 2], "attempts of {}: {flaky:?}", m.message_id);
    }

    let stats = rt.block_on(async { sc.dq_broker().await.stats(&sc.queue).await.expect("stats") });
    assert_eq!(
        (stats.ready, stats.delayed, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
    sc.assert_redis_drained();
    assert!(py.stop(Duration::from_secs(20)), "py log:\n{}", py.log());
    assert!(dq.stop(Duration::from_secs(20)), "dq log:\n{}", dq.log());
}

#[test]
fn redis_python_and_dq_workers_share_a_queue() {
    mixed(BrokerKind::Redis);
}

#[test]
fn amqp_python_and_dq_workers_share_a_queue() {
    mixed(BrokerKind::Amqp);
}
