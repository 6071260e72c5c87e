//! A worker stopped gracefully while it holds delayed messages (fetched from `q.DQ`, waiting
//! for their eta in memory: a delayed message, and the retry of one that failed) gives them
//! back, and a worker of the other language runs them at their eta, the retry with the retry
//! count the first worker wrote:
//! on Redis the held id goes back from the ack set to `ns:q.DQ`, on RabbitMQ the delivery is
//! returned unacked.

use std::time::Duration;

use dq_interop::{BrokerKind, Lang, Scenario};

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");
const DELAY_MS: u64 = 6_000;
/// Dramatiq 2's backoff over the cap is drawn from [max/2, max): 3-6 s.
const RETRY_BACKOFF_MS: u64 = 6_000;

fn handoff(kind: BrokerKind, first: Lang) {
    let sc = Scenario::new(kind, "handoff");
    let rt = dq_interop::runtime();
    let first_who = format!("first-{}", first.label());
    let second_who = format!("second-{}", first.other().label());
    let mut w1 = sc.spawn_worker(first, DQ_WORKER, &first_who, 2);
    w1.wait_ready(Duration::from_secs(30));
    let file = sc.path_str("delayed");
    let flaky_file = sc.path_str("flaky");
    // A delayed message, and one that fails once and whose retry waits 3-6 s (the backoff is
    // given per message, which both sides' Retries read before the actor's).
    let sent = sc.python_send(
        &serde_json::json!([
            {"actor": "record", "args": [file, "late"], "delay": DELAY_MS},
            {"actor": "flaky", "args": [flaky_file, "retry", 1],
             "options": {"min_backoff": RETRY_BACKOFF_MS, "max_backoff": RETRY_BACKOFF_MS}},
        ])
        .to_string(),
    );
    let eta = sent[0].options.eta().expect("eta");
    let first_try = sc.wait_records("flaky", Duration::from_secs(20), &[&w1], |r| !r.is_empty());
    assert_eq!(first_try[0]["attempt"], 0);
    assert_eq!(first_try[0]["who"], first_who.as_str());

    // Wait until the first worker holds both: on Redis their ids are in an ack set of `q.DQ`;
    // on RabbitMQ they are no longer ready on `q.DQ` (AMQP does not count unacked deliveries;
    // the pause lets the retry be published first).
    let held = match kind {
        BrokerKind::Redis => {
            let mut con = sc.redis();
            let pattern = format!("{}:__acks__.*.{}.DQ", sc.namespace, sc.queue);
            dq_test::wait_until(Duration::from_secs(10), || {
                let sets: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap();
                let held: usize = sets
                    .iter()
                    .map(|k| redis::cmd("SCARD").arg(k).query::<usize>(&mut con).unwrap())
                    .sum();
                held == 2
            })
        }
        BrokerKind::Amqp => rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let broker = sc.dq_broker().await;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let stats = broker.stats(&sc.queue).await.expect("stats");
                if stats.delayed == 0 {
                    break true;
                }
                if std::time::Instant::now() > deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }),
    };
    assert!(
        held,
        "the first worker never fetched it; log:\n{}",
        w1.log()
    );
    assert!(
        w1.stop(Duration::from_secs(20)),
        "no graceful stop; log:\n{}",
        w1.log()
    );
    assert!(
        sc.records("delayed").is_empty(),
        "ran before its eta, or by the stopping worker: {:?}",
        sc.records("delayed")
    );
    assert!(
        dq::broker::now_ms() < eta,
        "the test was too slow to stop the worker before the eta: raise DELAY_MS"
    );

    assert_eq!(
        sc.records("flaky").len(),
        1,
        "the retry ran before the first worker stopped"
    );
    let mut w2 = sc.spawn_worker(first.other(), DQ_WORKER, &second_who, 2);
    w2.wait_ready(Duration::from_secs(30));
    sc.wait_records("delayed", Duration::from_secs(30), &[&w1, &w2], |r| {
        !r.is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let rec = sc.records("delayed");
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0]["who"], second_who.as_str());
    assert_eq!(rec[0]["message_id"], sent[0].message_id.as_str());
    assert_eq!(rec[0]["queue"], sc.queue.as_str());
    let at = rec[0]["at_ms"].as_i64().expect("at_ms");
    assert!(at >= eta, "ran at {at}, before its eta {eta}");
    // The retry, run by the other language with the retry count the first one wrote.
    let tries = sc.wait_records("flaky", Duration::from_secs(30), &[&w1, &w2], |r| {
        r.len() >= 2
    });
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[1]["who"], second_who.as_str());
    assert_eq!(tries[1]["attempt"], 1);
    assert_eq!(tries[1]["retries"], 1);
    assert_eq!(tries[1]["message_id"], sent[1].message_id.as_str());
    sc.assert_redis_drained();
    assert!(w2.stop(Duration::from_secs(20)), "log:\n{}", w2.log());
}

#[test]
fn redis_dq_stops_python_runs_the_delayed_message() {
    handoff(BrokerKind::Redis, Lang::Dq);
}

#[test]
fn redis_python_stops_dq_runs_the_delayed_message() {
    handoff(BrokerKind::Redis, Lang::Python);
}

#[test]
fn amqp_dq_stops_python_runs_the_delayed_message() {
    handoff(BrokerKind::Amqp, Lang::Dq);
}

#[test]
fn amqp_python_stops_dq_runs_the_delayed_message() {
    handoff(BrokerKind::Amqp, Lang::Python);
}
