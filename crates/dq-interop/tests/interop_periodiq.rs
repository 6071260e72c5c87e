//! Periodic messages meet periodiq: a dq scheduler's messages carry `scheduled_at` as periodiq
//! writes it, so a Python worker with periodiq's middleware runs fresh ones and skips stale
//! ones; and a dq worker with `Periodic` skips stale messages a periodiq scheduler (pendulum's
//! `str`, `2026-12-05 03:00:00+00:00`) sent.

use std::time::Duration;

use dq::periodic::{Periodic, Schedule};
use dq_interop::{BrokerKind, Scenario};
use serde_json::Value;

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");

/// An actor of the scheduling app, on a queue of its own, so that its worker consumes nothing
/// the Python worker should run.
#[dq::actor(queue_name = "dq-periodiq-idle")]
fn idle() {}

fn tags(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["tag"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn scheduled_at(offset_s: i64, periodiq_style: bool) -> String {
    let t = chrono::Utc::now() + chrono::Duration::seconds(offset_s);
    if periodiq_style {
        t.format("%Y-%m-%d %H:%M:%S+00:00").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    }
}

#[test]
fn dq_schedules_run_under_periodiq_and_periodiq_messages_under_dq() {
    let mut sc = Scenario::new(BrokerKind::Redis, "periodiq");
    sc.extra_env
        .push(("DQ_INTEROP_PERIODIQ_SKIP_DELAY".into(), "10".into()));
    sc.extra_env
        .push(("DQ_INTEROP_PERIODIC".into(), "1".into()));
    let rt = dq_interop::runtime();
    let ticks = sc.path_str("ticks");

    // A dq scheduler (a worker of an app with a schedule for the Python actor), a Python
    // worker with periodiq's middleware running its messages.
    let mut py = sc.spawn_python_worker("py", 2);
    py.wait_ready(Duration::from_secs(30));
    let app = rt.block_on(async {
        let periodic = Periodic::new().schedule(
            Schedule::new("py-tick", "@every 2s")
                .unwrap()
                .actor("periodic_record")
                .queue(&sc.queue)
                .args(&(&ticks, "tick"))
                .unwrap(),
        );
        let app = dq::App::builder_shared(sc.dq_broker().await)
            .without_linked_actors()
            .actor(idle::actor())
            .middleware(periodic)
            .build()
            .unwrap();
        let worker = dq::Worker::new(app.clone(), dq::WorkerOptions::default());
        worker.start().await.unwrap();
        // And two messages sent by hand: one 60 s late, one fresh.
        for (tag, offset) in [("stale", -60), ("fresh", 0)] {
            let mut m =
                dq::Message::new(&sc.queue, "periodic_record", &(&ticks, tag), &()).unwrap();
            m.options
                .insert("scheduled_at".into(), scheduled_at(offset, false).into());
            app.enqueue(m, None).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(4500)).await;
        worker.stop().await.unwrap();
        app
    });
    let records = sc.wait_records("ticks", Duration::from_secs(20), &[&py], |r| {
        let t = tags(r);
        t.iter().filter(|t| *t == "tick").count() >= 2 && t.contains(&"fresh".to_owned())
    });
    std::thread::sleep(Duration::from_secs(1));
    let records = sc
        .records("ticks")
        .into_iter()
        .chain(records)
        .collect::<Vec<_>>();
    assert!(
        !tags(&records).contains(&"stale".to_owned()),
        "periodiq ran a stale message: {records:?}"
    );
    for r in records.iter().filter(|r| r["tag"] == "tick") {
        let at = r["options"]["scheduled_at"].as_str().expect("scheduled_at");
        let t = chrono::DateTime::parse_from_rfc3339(at).expect("ISO 8601");
        assert_eq!(t.timestamp() % 2, 0, "not on a tick of @every 2s: {at}");
        assert_eq!(r["options"]["dq_schedule"], "py-tick");
    }
    assert!(py.log().contains("Skipping"), "{}", py.log());
    assert!(py.stop(Duration::from_secs(20)));
    drop(app);

    // The other way: messages a periodiq scheduler sent, run by a dq worker with Periodic.
    let mut dq = sc.spawn_dq_worker(DQ_WORKER, "dq", 2);
    dq.wait_ready(Duration::from_secs(30));
    let file = sc.path_str("from-periodiq");
    sc.python_send(
        &serde_json::json!([
            {"actor": "record", "args": [file, "stale"],
             "options": {"scheduled_at": scheduled_at(-60, true)}},
            {"actor": "record", "args": [file, "fresh"],
             "options": {"scheduled_at": scheduled_at(0, true)}},
        ])
        .to_string(),
    );
    sc.wait_records("from-periodiq", Duration::from_secs(20), &[&dq], |r| {
        tags(r).contains(&"fresh".to_owned())
    });
    std::thread::sleep(Duration::from_secs(1));
    let records = sc.records("from-periodiq");
    assert_eq!(tags(&records), ["fresh"], "{records:?}");
    assert!(dq.log().contains("Skipping record"), "{}", dq.log());
    assert!(dq.stop(Duration::from_secs(20)));
}
