//! A dq worker on RabbitMQ losing nothing when it is SIGKILLed mid-run, or when the RabbitMQ
//! node itself restarts mid-run: every one of 10,000 messages runs at least once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dq::amqp::AmqpBroker;
use dq::broker::{Broker, QueueStats};

use crate::reliability_util::{
    kill_twice_and_finish, send_records, wait_drained, AmqpQueue, KillRun, PrivateRabbit, Recorder,
    TempDir, Worker, MESSAGES,
};

fn worker_env(queue: &str) -> HashMap<&'static str, String> {
    HashMap::from([
        ("DQ_RELIABILITY_QUEUE", queue.to_owned()),
        ("DQ_RELIABILITY_RECORD_URL", dq_test::redis_url()),
    ])
}

async fn producer(url: &str) -> AmqpBroker {
    AmqpBroker::builder()
        .url(url)
        .confirm_delivery(true)
        .build()
        .await
        .expect("connect the producer")
}

/// The worker process is SIGKILLed twice, mid-run: once alone (its main process starts another),
/// then together with its main process (a new worker command is started). RabbitMQ gives a dead
/// connection's unacked deliveries to the live consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_worker_sigkilled_mid_run_loses_nothing() {
    let url = dq_test::require_amqp();
    let queue = AmqpQueue::new(&url, "dq-rel-kill");
    let dir = TempDir::new("dq-rel-amqp-kill");
    let mut rec = Recorder::new();
    let broker = producer(&url).await;
    let started = Instant::now();
    send_records(&broker, &queue.name, &rec.key, MESSAGES).await;
    let sent = started.elapsed();
    let env = worker_env(&queue.name);
    let args = ["--broker-url", url.as_str()];
    let log = dir.path().join("worker.log");

    let KillRun {
        at_first_kill,
        at_second_kill: at_kill,
        runs,
    } = kill_twice_and_finish(&broker, &queue.name, &mut rec, MESSAGES, &args, &env, log).await;
    eprintln!(
        "amqp SIGKILL: {MESSAGES} messages (sent in {sent:.1?}) in {:.1?}; killed at \
         {at_first_kill} and {at_kill} done; {runs} runs ({} repeated)",
        started.elapsed(),
        runs - MESSAGES
    );
}

/// A RabbitMQ node of the test's own is stopped mid-run and started again on the same ports and
/// database. The worker reconnects, the durable queue and its persistent messages survive, and
/// deliveries whose acks died with the connection come again.
///
/// Deliveries of the dead channel that the worker still held (prefetched, or delayed until their
/// eta) are dropped, as Dramatiq drops them: RabbitMQ redelivers them (`Acker::is_stale`). Only
/// messages that were running when the connection died can run twice (at-least-once), so the
/// test allows repeats and prints how many (about 800 before stale deliveries were dropped, a
/// handful since).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_node_restarted_mid_run_loses_nothing() {
    let mut rabbit = PrivateRabbit::start().await;
    let url = rabbit.url();
    let queue = "dq-rel-restart";
    let dir = TempDir::new("dq-rel-amqp-restart");
    let mut rec = Recorder::new();
    let started = Instant::now();
    {
        let broker = producer(&url).await;
        send_records(&broker, queue, &rec.key, MESSAGES).await;
    }
    let env = worker_env(queue);
    let mut worker = Worker::start(
        &["--broker-url", url.as_str()],
        &env,
        dir.path().join("worker.log"),
    );
    rec.wait_for(
        MESSAGES / 5,
        Duration::from_secs(60),
        "before the restart",
        &mut worker,
    )
    .await;
    let stopping = Instant::now();
    rabbit.stop();
    let at_stop = rec.count();
    let stopped_in = stopping.elapsed();
    assert!(
        at_stop < MESSAGES,
        "all messages ran before RabbitMQ went away: the test restarted nothing mid-run"
    );
    assert!(
        worker.status().is_none(),
        "the worker exited while RabbitMQ was down:\n{}",
        worker.log_tail()
    );
    let starting = Instant::now();
    rabbit.restart().await;
    let down_for = stopping.elapsed();
    let started_in = starting.elapsed();

    rec.wait_for(
        MESSAGES,
        Duration::from_secs(120),
        "after the RabbitMQ restart",
        &mut worker,
    )
    .await;
    let broker = producer(&url).await;
    let runs = wait_drained(
        &broker,
        queue,
        &mut rec,
        &mut worker,
        Duration::from_secs(60),
    )
    .await;
    worker.stop_cleanly(Duration::from_secs(30));
    let stats = broker.stats(queue).await.expect("stats");
    assert_eq!(stats, QueueStats::default(), "messages left behind");
    worker.assert_outages_logged_once(1);
    eprintln!(
        "amqp restart: {MESSAGES} messages in {:.1?}; {at_stop} done at stop; node stopped in \
         {stopped_in:.1?}, started in {started_in:.1?}, down {down_for:.1?}; {runs} runs ({} \
         repeated)",
        started.elapsed(),
        runs - MESSAGES
    );
}
