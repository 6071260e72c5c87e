//! Periodic messages across worker commands: three worker processes (two worker commands, their
//! clocks 500 ms apart), a schedule every second, ~20 s: exactly one message per tick, no gap,
//! also while one process is SIGKILLed and restarted. And the missed-tick policies: all workers
//! down across ticks, then one starts, late for the latest tick.
//!
//! The `tick` actor of `dq-reliability-worker` appends `<scheduled_at> <message_id> <pid>` to a
//! list in the recording Redis for each run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::DateTime;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use redis::Commands;

use crate::reliability_util::{children_of, AmqpQueue, RedisNamespace, TempDir, Worker};

/// Every second.
const EVERY_SECOND: &str = "* * * * * *";

enum On {
    Redis(RedisNamespace),
    /// RabbitMQ, ticks claimed in the shared Redis under a namespace of the test's.
    /// (The queue is held for its deletion on drop.)
    Amqp {
        _queue: AmqpQueue,
        claims: String,
    },
    /// RabbitMQ alone: a leader per schedule, elected through an exclusive queue.
    AmqpLeader(AmqpQueue),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Redis,
    AmqpClaims,
    AmqpLeader,
}

fn setup(prefix: &str, kind: Kind) -> (On, String) {
    let queue = dq_test::unique_name(prefix);
    match kind {
        Kind::Redis => {
            let redis = dq_test::require_redis();
            (On::Redis(RedisNamespace::new(&redis, prefix)), queue)
        }
        Kind::AmqpClaims | Kind::AmqpLeader => {
            let url = dq_test::require_amqp();
            let q = AmqpQueue::new(&url, prefix);
            let name = q.name.clone();
            if kind == Kind::AmqpLeader {
                (On::AmqpLeader(q), name)
            } else {
                (
                    On::Amqp {
                        _queue: q,
                        claims: dq_test::unique_name("dq-periodic-claims"),
                    },
                    name,
                )
            }
        }
    }
}

fn env_for(
    on: &On,
    queue: &str,
    ticks: &str,
    cron: &str,
    extra: &[(&'static str, String)],
) -> HashMap<&'static str, String> {
    let mut env = HashMap::from([
        ("DQ_RELIABILITY_QUEUE", queue.to_owned()),
        ("DQ_RELIABILITY_RECORD_URL", dq_test::redis_url()),
        ("DQ_RELIABILITY_CRON", cron.to_owned()),
        ("DQ_RELIABILITY_TICKS", ticks.to_owned()),
        ("DQ_RELIABILITY_HEARTBEAT_MS", "3000".to_owned()),
        ("DQ_RELIABILITY_MAINTENANCE", "100000".to_owned()),
    ]);
    match on {
        On::Redis(ns) => {
            env.insert("DQ_RELIABILITY_REDIS_URL", dq_test::redis_url());
            env.insert("DQ_RELIABILITY_NAMESPACE", ns.name.clone());
        }
        On::Amqp { claims, .. } => {
            env.insert("DQ_PERIODIC_REDIS_URL", dq_test::redis_url());
            env.insert("DQ_PERIODIC_REDIS_NAMESPACE", claims.clone());
        }
        // The schedule's name is the test's: its leader queue and record are its own.
        On::AmqpLeader(q) => {
            env.insert("DQ_RELIABILITY_SCHEDULE", q.name.clone());
        }
    }
    env.extend(extra.iter().cloned());
    env
}

fn args(on: &On) -> Vec<String> {
    match on {
        On::Redis(_) => Vec::new(),
        On::Amqp { .. } | On::AmqpLeader(_) => {
            vec!["--broker-url".to_owned(), dq_test::amqp_url()]
        }
    }
}

/// The recorded runs: scheduled_at (ms) -> the message ids run for it (with repeats).
fn runs(key: &str) -> BTreeMap<i64, Vec<String>> {
    let client = redis::Client::open(dq_test::redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let entries: Vec<String> = conn.lrange(key, 0, -1).unwrap();
    let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for e in entries {
        let mut parts = e.split(' ');
        let at = parts.next().unwrap_or_default();
        let id = parts.next().unwrap_or_default().to_owned();
        let t = DateTime::parse_from_rfc3339(at)
            .unwrap_or_else(|err| panic!("bad scheduled_at {at:?}: {err}"))
            .timestamp_millis();
        out.entry(t).or_default().push(id);
    }
    out
}

fn delete(key: &str) {
    let client = redis::Client::open(dq_test::redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = conn.del(key).unwrap();
}

/// Deletes the leader mode's record and index queues of schedule `name` on the shared RabbitMQ.
async fn delete_schedule_queues(name: &str) {
    let Ok(conn) =
        lapin::Connection::connect(&dq_test::amqp_url(), lapin::ConnectionProperties::default())
            .await
    else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        let q = format!("dq:schedule.{name}");
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    let _ = conn.close(200, "done".into()).await;
}

async fn every_tick_once(kind: Kind) {
    let (on, queue) = setup("dq-periodic", kind);
    let ticks = dq_test::unique_name("dq-periodic-ticks");
    let dir = TempDir::new("dq-periodic");
    let a_args = args(&on);
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    // Two worker commands, three processes, clocks 500 ms apart.
    let mut a = Worker::start_processes(
        2,
        &a_args,
        &env_for(
            &on,
            &queue,
            &ticks,
            EVERY_SECOND,
            &[("DQ_PERIODIC_CLOCK_OFFSET_MS", "250".into())],
        ),
        dir.path().join("a.log"),
    );
    let mut b = Worker::start_processes(
        1,
        &a_args,
        &env_for(
            &on,
            &queue,
            &ticks,
            EVERY_SECOND,
            &[("DQ_PERIODIC_CLOCK_OFFSET_MS", "-250".into())],
        ),
        dir.path().join("b.log"),
    );
    let started = dq::broker::now_ms();
    tokio::time::sleep(Duration::from_secs(8)).await;
    // SIGKILL one of a's processes; its main process starts another.
    let victim = *children_of(a.pid()).first().expect("a worker process of a");
    let killed_at = dq::broker::now_ms();
    let _ = kill(Pid::from_raw(victim as i32), Signal::SIGKILL);
    let respawned = dq_test::wait_until(Duration::from_secs(10), || {
        let now = children_of(a.pid());
        now.len() == 2 && !now.contains(&victim)
    });
    assert!(respawned, "no new process:\n{}", a.log_tail());
    tokio::time::sleep(Duration::from_secs(12)).await;
    let stopped = dq::broker::now_ms();
    a.stop_cleanly(Duration::from_secs(30));
    b.stop_cleanly(Duration::from_secs(30));

    let runs = runs(&ticks);
    delete(&ticks);
    if let On::AmqpLeader(q) = &on {
        delete_schedule_queues(&q.name).await;
    }
    // Every tick of the window, once: one message id each (a run repeated after the kill has
    // the same id).
    let first = (started / 1000 + 3) * 1000;
    let last = (stopped / 1000 - 3) * 1000;
    let mut missing = Vec::new();
    let mut t = first;
    while t <= last {
        if !runs.contains_key(&t) {
            missing.push(t);
        }
        t += 1000;
    }
    // With a leader, the tick the killed process was claiming when it died may be lost (see
    // dq-broker-amqp's schedules module): at most one, next to the kill.
    if kind == Kind::AmqpLeader && missing.len() == 1 && (missing[0] - killed_at).abs() <= 2000 {
        eprintln!("periodic leader: tick {} lost to the kill", missing[0]);
        missing.clear();
    }
    assert!(
        missing.is_empty(),
        "ticks without a message: {missing:?}\nruns: {runs:?}\na:\n{}\nb:\n{}",
        a.log_tail(),
        b.log_tail()
    );
    let mut repeated = 0;
    for (t, ids) in &runs {
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "tick {t} was enqueued {} times: {ids:?}",
            distinct.len()
        );
        repeated += ids.len() - 1;
        assert_eq!(t % 1000, 0, "tick {t} is not on a second");
    }
    // Only the killed process's run may repeat (recovered from its ack set).
    assert!(repeated <= 1, "{repeated} runs repeated: {runs:?}");
    let log = format!("{}{}", a.log(), b.log());
    assert!(!log.contains("] [ERROR] "), "{log}");
    eprintln!(
        "periodic on {kind:?}: {} ticks in {:.1} s, {repeated} repeated runs",
        runs.len(),
        (stopped - started) as f64 / 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_redis_one_message_per_tick_across_processes() {
    every_tick_once(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_amqp_one_message_per_tick_across_processes() {
    every_tick_once(Kind::AmqpClaims).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_amqp_leader_one_message_per_tick_across_processes() {
    every_tick_once(Kind::AmqpLeader).await;
}

/// All workers down across two ticks of a 6 s schedule, then one starts 3 s after the latest:
/// past its 1 s grace. `skip` runs nothing for the missed ticks; `run_once` runs the latest
/// missed tick once, and not the ones before it.
async fn missed_ticks(policy: &str) {
    let (on, queue) = setup("dq-periodic-missed", Kind::Redis);
    let ticks = dq_test::unique_name("dq-periodic-missed-ticks");
    let dir = TempDir::new("dq-periodic-missed");
    let cron = "@every 6s";
    let env = env_for(
        &on,
        &queue,
        &ticks,
        cron,
        &[("DQ_RELIABILITY_MISSED", policy.into())],
    );
    let mut first = Worker::start(&[], &env, dir.path().join("first.log"));
    // Run until one tick ran, then stop.
    let ok = dq_test::wait_until(Duration::from_secs(20), || !runs(&ticks).is_empty());
    assert!(ok, "no tick ran:\n{}", first.log_tail());
    first.stop_cleanly(Duration::from_secs(30));
    let before: Vec<i64> = runs(&ticks).keys().copied().collect();
    let down_from = dq::broker::now_ms();
    // Down across two ticks, then start 3 s after one (the worker takes well under a second to
    // claim).
    tokio::time::sleep(Duration::from_secs(12)).await;
    loop {
        let phase = dq::broker::now_ms() % 6000;
        if (3000..3300).contains(&phase) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restart = dq::broker::now_ms();
    let latest_missed = restart / 6000 * 6000;
    let mut second = Worker::start(&[], &env, dir.path().join("second.log"));
    let deadline = Instant::now() + Duration::from_secs(15);
    // Until the first tick after the restart has run.
    let next = latest_missed + 6000;
    while Instant::now() < deadline && !runs(&ticks).contains_key(&next) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    second.stop_cleanly(Duration::from_secs(30));
    let after = runs(&ticks);
    delete(&ticks);
    assert!(
        after.contains_key(&next),
        "the tick after the restart did not run: {after:?}\n{}",
        second.log_tail()
    );
    let in_gap: Vec<i64> = after
        .keys()
        .copied()
        .filter(|t| *t > *before.last().unwrap_or(&0) && *t < next && *t > down_from - 6000)
        .collect();
    match policy {
        "skip" => assert!(in_gap.is_empty(), "skip ran missed ticks {in_gap:?}"),
        _ => assert_eq!(
            in_gap,
            vec![latest_missed],
            "run_once ran {in_gap:?}, not only the latest missed tick"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_missed_ticks_are_skipped() {
    missed_ticks("skip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_missed_ticks_run_once() {
    missed_ticks("run_once").await;
}
