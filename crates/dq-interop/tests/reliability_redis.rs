//! A dq worker on Redis losing nothing when it is SIGKILLed mid-run, or when Redis itself
//! restarts mid-run: every one of 10,000 messages runs at least once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dq::broker::{Broker, QueueStats};
use dq::redis::RedisBroker;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::reliability_util::{
    children_of, kill_twice_and_finish, send_records, wait_drained, KillRun, PrivateRedis,
    Recorder, RedisNamespace, TempDir, Worker, MESSAGES,
};

const QUEUE: &str = "reliability";

/// The killed worker's messages are recovered once its heartbeat is this old: short, so the
/// test does not wait Dramatiq's 60 s.
const HEARTBEAT_MS: &str = "2000";

/// Maintenance (which recovers dead workers' messages) on every script call instead of 0.1 %,
/// so it runs right after the heartbeat timeout even when the worker is idle and polls once a
/// second: the test waits for the recovery, not for a lucky draw.
const MAINTENANCE: &str = "1000000";

fn worker_env(url: &str, namespace: &str) -> HashMap<&'static str, String> {
    HashMap::from([
        ("DQ_RELIABILITY_QUEUE", QUEUE.to_owned()),
        ("DQ_RELIABILITY_RECORD_URL", dq_test::redis_url()),
        ("DQ_RELIABILITY_REDIS_URL", url.to_owned()),
        ("DQ_RELIABILITY_NAMESPACE", namespace.to_owned()),
        ("DQ_RELIABILITY_HEARTBEAT_MS", HEARTBEAT_MS.to_owned()),
        ("DQ_RELIABILITY_MAINTENANCE", MAINTENANCE.to_owned()),
    ])
}

async fn producer(url: &str, namespace: &str) -> RedisBroker {
    RedisBroker::builder()
        .url(url)
        .namespace(namespace)
        .build()
        .await
        .expect("connect the producer")
}

/// The worker process is SIGKILLed twice, mid-run: once alone (its main process starts another),
/// then together with its main process (a new worker command is started). Both times the
/// messages it had fetched and not acked sit in its ack set until its heartbeat expires, and
/// the live worker puts them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_worker_sigkilled_mid_run_loses_nothing() {
    let url = dq_test::require_redis();
    let ns = RedisNamespace::new(&url, "dq-rel-kill");
    let dir = TempDir::new("dq-rel-kill");
    let mut rec = Recorder::new();
    let broker = producer(&url, &ns.name).await;
    let started = Instant::now();
    send_records(&broker, QUEUE, &rec.key, MESSAGES).await;
    let env = worker_env(&url, &ns.name);
    let log = dir.path().join("worker.log");

    let KillRun {
        at_first_kill,
        at_second_kill,
        runs,
    } = kill_twice_and_finish(&broker, QUEUE, &mut rec, MESSAGES, &[], &env, log).await;
    eprintln!(
        "redis SIGKILL: {MESSAGES} messages in {:.1?}; killed at {at_first_kill} and \
         {at_second_kill} done; {runs} runs ({} repeated)",
        started.elapsed(),
        runs - MESSAGES
    );
}

/// Redis goes away twice mid-run, shut down (at 20 %) then killed (at 50 %), and each time is
/// started again on the same port and data directory (an append-only file, fsynced on every
/// write). The worker rides it out, reconnecting with backoff, and no message is lost: acks that
/// failed are retried, messages whose acks never reached Redis run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_loses_nothing() {
    let mut redis = PrivateRedis::start(true);
    let url = redis.url();
    let namespace = "dq-rel-restart";
    let dir = TempDir::new("dq-rel-restart");
    let mut rec = Recorder::new();
    let started = Instant::now();
    {
        let broker = producer(&url, namespace).await;
        send_records(&broker, QUEUE, &rec.key, MESSAGES).await;
    }
    let env = worker_env(&url, namespace);
    let mut worker = Worker::start(&[], &env, dir.path().join("worker.log"));
    rec.wait_for(
        MESSAGES / 5,
        Duration::from_secs(60),
        "before the restart",
        &mut worker,
    )
    .await;
    redis.shutdown();
    let at_shutdown = rec.count();
    // Long enough for the worker to notice and go through a few reconnection attempts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let while_down = rec.count();
    assert!(
        worker.status().is_none(),
        "the worker exited while Redis was down:\n{}",
        worker.log_tail()
    );
    redis.restart();

    rec.wait_for(
        MESSAGES / 2,
        Duration::from_secs(60),
        "after the Redis shutdown",
        &mut worker,
    )
    .await;
    redis.crash();
    let at_crash = rec.count();
    assert!(
        at_crash < MESSAGES,
        "all messages ran before Redis crashed: the test crashed nothing mid-run"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        worker.status().is_none(),
        "the worker exited while Redis was down:\n{}",
        worker.log_tail()
    );
    redis.restart();

    rec.wait_for(
        MESSAGES,
        Duration::from_secs(90),
        "after the Redis crash",
        &mut worker,
    )
    .await;
    let broker = producer(&url, namespace).await;
    let runs = wait_drained(
        &broker,
        QUEUE,
        &mut rec,
        &mut worker,
        Duration::from_secs(60),
    )
    .await;
    worker.stop_cleanly(Duration::from_secs(30));
    let stats = broker.stats(QUEUE).await.expect("stats");
    assert_eq!(stats, QueueStats::default(), "messages left behind");
    worker.assert_outages_logged_once(2);
    eprintln!(
        "redis restart: {MESSAGES} messages in {:.1?}; {at_shutdown} done at shutdown, \
         {while_down} while down, {at_crash} at the crash; {runs} runs ({} repeated)",
        started.elapsed(),
        runs - MESSAGES
    );
}

/// A worker process that dies while Redis is down is restarted by the main process and waits
/// for Redis with backoff, instead of exiting with code 3 and so stopping the whole command:
/// exit code 3 is the rule for the command's own first start only. The same for the processes a
/// reload starts while Redis is still down, by SIGHUP and by a `--watch` build. Redis comes back
/// and every message runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_restarted_while_redis_is_down_waits_for_it() {
    let mut redis = PrivateRedis::start(true);
    let url = redis.url();
    let namespace = "dq-rel-respawn";
    let dir = TempDir::new("dq-rel-respawn");
    let mut rec = Recorder::new();
    {
        let broker = producer(&url, namespace).await;
        send_records(&broker, QUEUE, &rec.key, MESSAGES).await;
    }
    let env = worker_env(&url, namespace);
    let sources = dir.path().join("src");
    std::fs::create_dir_all(&sources).unwrap();
    std::fs::write(sources.join("lib.rs"), "// v1\n").unwrap();
    let watch = sources.to_string_lossy().into_owned();
    let mut worker = Worker::start(
        &["--watch", &watch, "--watch-build-command", "true"],
        &env,
        dir.path().join("worker.log"),
    );
    rec.wait_for(
        MESSAGES / 10,
        Duration::from_secs(60),
        "before the outage",
        &mut worker,
    )
    .await;
    redis.shutdown();
    let first = worker.worker_pid(Duration::from_secs(5));
    let _ = kill(Pid::from_raw(first as i32), Signal::SIGKILL);
    // The main process starts another, which cannot reach Redis.
    let respawned = dq_test::wait_until(Duration::from_secs(10), || {
        children_of(worker.pid())
            .first()
            .is_some_and(|&p| p != first)
    });
    assert!(respawned, "no new worker process:\n{}", worker.log_tail());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        worker.status().is_none(),
        "the command stopped while Redis was down:\n{}",
        worker.log_tail()
    );
    assert!(
        worker.log().contains("so it keeps trying"),
        "the restarted process did not say it waits for the broker:\n{}",
        worker.log_tail()
    );
    // Reloads while Redis is still down: by SIGHUP, then by a change the watcher builds.
    let mut current = children_of(worker.pid()).first().copied().unwrap_or(first);
    for how in ["SIGHUP", "--watch"] {
        if how == "SIGHUP" {
            let _ = kill(Pid::from_raw(worker.pid() as i32), Signal::SIGHUP);
        } else {
            std::fs::write(sources.join("lib.rs"), "// v2\n").unwrap();
        }
        let mut next = None;
        let reloaded = dq_test::wait_until(Duration::from_secs(20), || {
            next = children_of(worker.pid())
                .first()
                .copied()
                .filter(|&p| p != current);
            next.is_some()
        });
        assert!(reloaded, "no reload by {how}:\n{}", worker.log_tail());
        current = next.expect("the new process");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            worker.status().is_none(),
            "the command stopped after a reload by {how} while Redis was down:\n{}",
            worker.log_tail()
        );
        assert!(
            children_of(worker.pid()).contains(&current),
            "the process the reload by {how} started did not keep waiting:\n{}",
            worker.log_tail()
        );
    }
    redis.restart();

    rec.wait_for(
        MESSAGES,
        Duration::from_secs(90),
        "after Redis came back",
        &mut worker,
    )
    .await;
    let broker = producer(&url, namespace).await;
    wait_drained(
        &broker,
        QUEUE,
        &mut rec,
        &mut worker,
        Duration::from_secs(60),
    )
    .await;
    worker.stop_cleanly(Duration::from_secs(30));
    let log = worker.log();
    assert!(log.contains("Reached the broker after"), "{log}");
    assert!(!log.contains("stopping (see its log lines above)"), "{log}");
    assert!(!log.contains("] [ERROR] "), "{log}");
}
