//! A unique dq message run by a Python Dramatiq worker: Python keeps the lock's options
//! (`dq_unique_*`) and ignores them, runs the message once, and releases nothing; the lock
//! expires after its TTL, after which the key is free for the next send.

use std::time::Duration;

use dq::{SendOptions, SendOutcome};
use dq_interop::{BrokerKind, Scenario};
use serde_json::json;

#[test]
fn redis_dq_unique_message_python_worker() {
    let sc = Scenario::new(BrokerKind::Redis, "unique");
    let rt = dq_interop::runtime();
    let file = sc.path_str("uniq");
    let ttl = Duration::from_secs(5);
    let mut worker = sc.spawn_python_worker("python", 2);
    worker.wait_ready(Duration::from_secs(30));
    let app = rt.block_on(sc.dq_app());
    let send = |tag: &str| {
        let mut m = dq::Message::new(&sc.queue, "record", &json!([file, tag]), &json!({}))
            .expect("message");
        SendOptions::new()
            .unique_for(ttl)
            .unique_key("report")
            .apply_to_message(&mut m);
        rt.block_on(app.send(m, None)).expect("dq sends")
    };
    let (first, outcome) = send("first");
    assert_eq!(outcome, SendOutcome::Enqueued);
    let (_, outcome) = send("second");
    assert_eq!(
        outcome,
        SendOutcome::Duplicate {
            holder: first.message_id.clone()
        }
    );

    sc.wait_records("uniq", Duration::from_secs(30), &[&worker], |r| {
        !r.is_empty()
    });
    let records = sc.records("uniq");
    assert_eq!(records.len(), 1, "{records:?}");
    let options = &records[0]["options"];
    assert_eq!(records[0]["message_id"], first.message_id.as_str());
    assert_eq!(options["dq_unique_key"], "report", "{options}");
    assert_eq!(options["dq_unique_until"], "finished", "{options}");
    assert_eq!(options["dq_unique_mode"], "unique", "{options}");

    // Python released nothing: the lock is there until its TTL runs out.
    let locks = || {
        rt.block_on(app.broker().unique_locks(&sc.queue))
            .expect("locks")
    };
    assert_eq!(locks(), 1, "the lock outlives the Python run until its TTL");
    assert!(
        dq_test::wait_until(ttl + Duration::from_secs(10), || locks() == 0),
        "the lock expired"
    );
    let (third, outcome) = send("third");
    assert_eq!(outcome, SendOutcome::Enqueued);
    sc.wait_records("uniq", Duration::from_secs(30), &[&worker], |r| {
        r.len() >= 2
    });
    assert_eq!(
        sc.records("uniq")[1]["message_id"],
        third.message_id.as_str()
    );
    assert!(
        worker.stop(Duration::from_secs(20)),
        "log:\n{}",
        worker.log()
    );
    sc.assert_redis_drained();
}
