//! A worker's memory does not grow with the backlog: with a million messages waiting on Redis,
//! a worker with a small prefetch holds only what it prefetched, however long the queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dq::broker::Broker;
use dq::redis::RedisBroker;
use dq::Message;

use crate::reliability_util::{rss_kib, PrivateRedis, TempDir, Worker};

const QUEUE: &str = "backlog";
const NAMESPACE: &str = "dq-rel-backlog";
/// The backlog.
const BACKLOG: u64 = 1_000_000;
/// How many the worker processes before the test stops it: a fraction of the backlog (2 cores
/// take minutes for all of it), enough to see whether memory grows while the queue is long.
const PROCESSED: u64 = 60_000;
/// A generous ceiling for the worker process; holding the backlog (about 200 bytes a message)
/// would take far more.
const MAX_RSS_KIB: u64 = 100 * 1024;
/// How much the worker may grow between 20 % and 100 % of `PROCESSED`: allocator warm-up and
/// noise, far below what holding even a tenth of the messages it went through would take.
const MAX_GROWTH_KIB: u64 = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backlog_of_a_million_keeps_worker_memory_bounded() {
    // A Redis of its own: a million messages are a few hundred MB the shared one should not
    // carry, and it goes away with the test.
    let redis = PrivateRedis::start(false);
    let url = redis.url();
    let broker = RedisBroker::builder()
        .url(&url)
        .namespace(NAMESPACE)
        .build()
        .await
        .expect("connect the producer");
    let enqueueing = Instant::now();
    // Batches of 10,000 (each a few script calls), from as many tasks as the runtime has
    // threads: in a debug build encoding the messages costs more than Redis storing them.
    const BATCH: u64 = 10_000;
    const PRODUCERS: u64 = 2;
    let broker = Arc::new(broker);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| {
            let broker = broker.clone();
            tokio::spawn(async move {
                let no_args: [u8; 0] = [];
                for _ in 0..BACKLOG / BATCH / PRODUCERS {
                    let mut batch: Vec<Message> = (0..BATCH)
                        .map(|_| Message::new(QUEUE, "noop", &no_args, &()).expect("message"))
                        .collect();
                    broker.enqueue_many(&mut batch).await.expect("enqueue");
                }
            })
        })
        .collect();
    for p in producers {
        p.await.expect("producer task");
    }
    let enqueued_in = enqueueing.elapsed();
    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connect to the private redis");
    let queue_key = format!("{NAMESPACE}:{QUEUE}");
    let mut waiting = || -> u64 {
        redis::cmd("LLEN")
            .arg(&queue_key)
            .query(&mut conn)
            .expect("LLEN")
    };
    assert_eq!(waiting(), BACKLOG);

    let dir = TempDir::new("dq-rel-backlog");
    let env = HashMap::from([
        ("DQ_RELIABILITY_QUEUE", QUEUE.to_owned()),
        ("DQ_RELIABILITY_REDIS_URL", url.clone()),
        ("DQ_RELIABILITY_NAMESPACE", NAMESPACE.to_owned()),
        // 4 threads, prefetch 8: Dramatiq's 2 × threads, said out loud.
        ("dramatiq_queue_prefetch", "8".to_owned()),
    ]);
    let mut worker = Worker::start(&["--threads", "4"], &env, dir.path().join("worker.log"));
    let pid = worker.worker_pid(Duration::from_secs(10));
    let processing = Instant::now();
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let deadline = processing + Duration::from_secs(80);
    loop {
        let done = BACKLOG - waiting();
        let Some(rss) = rss_kib(pid) else {
            panic!(
                "the worker process {pid} is gone after {done} messages:\n{}",
                worker.log_tail()
            );
        };
        samples.push((done, rss));
        if done >= PROCESSED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {PROCESSED} messages processed in 80 s; RSS samples \
             (processed, KiB): {samples:?}\n{}",
            worker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let processed_in = processing.elapsed();
    worker.stop_cleanly(Duration::from_secs(30));
    let left = waiting();
    assert!(
        left > BACKLOG / 2,
        "the backlog was not long throughout: {left} left"
    );

    let early = samples
        .iter()
        .find(|(done, _)| *done >= PROCESSED / 5)
        .map(|s| s.1)
        .expect("a sample at 20 %");
    let late = samples.last().map(|s| s.1).expect("a last sample");
    let max = samples.iter().map(|s| s.1).max().expect("samples");
    eprintln!(
        "backlog: {BACKLOG} enqueued in {enqueued_in:.1?}; {PROCESSED} processed in \
         {processed_in:.1?} ({:.0}/s); worker RSS {early} KiB at 20 %, {late} KiB at 100 %, \
         max {max} KiB; {left} still waiting",
        PROCESSED as f64 / processed_in.as_secs_f64()
    );
    assert!(
        max < MAX_RSS_KIB,
        "the worker reached {max} KiB (limit {MAX_RSS_KIB}); samples: {samples:?}"
    );
    assert!(
        late <= early + MAX_GROWTH_KIB,
        "the worker grew from {early} KiB to {late} KiB while the backlog stayed long; samples: \
         {samples:?}"
    );
}
