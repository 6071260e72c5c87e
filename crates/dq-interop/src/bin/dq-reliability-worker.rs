//! The dq worker the reliability tests run, kill and restart: a real worker command
//! (`dq::cli`, Dramatiq's flags and signals) with two actors.
//!
//! - `record(key, n)` adds `n` to the Redis set `key` and counts the run in `key:runs`, on the
//!   Redis at `DQ_RELIABILITY_RECORD_URL`. That Redis is never the one a test restarts, so
//!   what a test reads back is what ran, whatever happened to the broker.
//! - `noop()` does nothing, for the backlog test, which looks at the worker's memory only.
//! - `flaky(key, n)` fails its first run for each `n` and `slow(key, n)` overruns its 200 ms
//!   time limit on its first run; both then record like `record` (the chaos run's retried
//!   actors).
//!
//! Both consume the queue named by `DQ_RELIABILITY_QUEUE`, so that concurrent tests on the shared
//! RabbitMQ never share a queue. The broker is `--broker-url` when given (the RabbitMQ tests),
//! else a Redis broker at `DQ_RELIABILITY_REDIS_URL` in namespace `DQ_RELIABILITY_NAMESPACE`,
//! whose heartbeat timeout is `DQ_RELIABILITY_HEARTBEAT_MS` and whose maintenance runs on
//! `DQ_RELIABILITY_MAINTENANCE` script calls out of a million: a killed worker's messages are
//! recovered after that timeout, not Dramatiq's 60 s, so a test can wait for them.

use std::time::Duration;

use dq::redis::RedisBroker;
use tokio::sync::OnceCell;

/// One connection to the recording Redis per worker process, shared by every actor run (it is
/// multiplexed), made on the first run.
static RECORDER: OnceCell<redis::aio::MultiplexedConnection> = OnceCell::const_new();

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_u64(name: &str) -> Option<u64> {
    env(name).and_then(|v| v.trim().parse().ok())
}

async fn recorder() -> Result<redis::aio::MultiplexedConnection, String> {
    RECORDER
        .get_or_try_init(|| async {
            let url = env("DQ_RELIABILITY_RECORD_URL")
                .ok_or_else(|| "DQ_RELIABILITY_RECORD_URL is not set".to_owned())?;
            let client = redis::Client::open(url).map_err(|e| e.to_string())?;
            client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .cloned()
}

/// Adds `n` to the set `key` and counts the run in `key:runs` (runs minus members = the
/// messages that ran more than once). Failures retry soon and practically forever: a test
/// counts on every message being recorded.
#[dq::actor(max_retries = 1000, min_backoff = 20, max_backoff = 500)]
async fn record(key: String, n: u64) -> Result<(), String> {
    let mut conn = recorder().await?;
    redis::pipe()
        .cmd("SADD")
        .arg(&key)
        .arg(n)
        .ignore()
        .cmd("INCR")
        .arg(format!("{key}:runs"))
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// Whether this is the first run of `n` for `key`'s `what` (a set in the recording Redis).
async fn first_run(key: &str, what: &str, n: u64) -> Result<bool, String> {
    let mut conn = recorder().await?;
    redis::cmd("SADD")
        .arg(format!("{key}:{what}"))
        .arg(n)
        .query_async::<u64>(&mut conn)
        .await
        .map(|added| added == 1)
        .map_err(|e| e.to_string())
}

/// Fails its first run for each `n` (Retries retries it), then records like `record`: the
/// chaos run's actor that fails and is retried.
#[dq::actor(max_retries = 1000, min_backoff = 20, max_backoff = 500)]
async fn flaky(key: String, n: u64) -> Result<(), String> {
    if first_run(&key, "flaky", n).await? {
        return Err(format!("flaky({n}) fails its first run"));
    }
    record(key, n).await
}

/// Runs past its 200 ms time limit on its first run for each `n` (the time limit stops it and
/// Retries retries it), then records like `record`.
#[dq::actor(
    max_retries = 1000,
    min_backoff = 20,
    max_backoff = 500,
    time_limit = 200
)]
async fn slow(key: String, n: u64) -> Result<(), String> {
    if first_run(&key, "slow", n).await? {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    record(key, n).await
}

/// A periodic schedule's run: appends the tick it was sent for (`scheduled_at`) and this
/// process's pid to the list `key`.
#[dq::actor(max_retries = 0)]
async fn tick(key: String) -> Result<(), String> {
    let message = dq::current_message().ok_or("no current message")?;
    let at = message
        .options
        .get_str("scheduled_at")
        .unwrap_or("manual")
        .to_owned();
    let mut conn = recorder().await?;
    redis::cmd("RPUSH")
        .arg(&key)
        .arg(format!(
            "{at} {} {}",
            message.message_id,
            std::process::id()
        ))
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// The schedule `DQ_RELIABILITY_SCHEDULE` (default `tick`) of `DQ_RELIABILITY_CRON` (an
/// expression) for `tick`, recording into `DQ_RELIABILITY_TICKS` (a list key), missed-tick
/// policy `DQ_RELIABILITY_MISSED`.
fn periodic(queue: &str) -> Option<dq::periodic::Periodic> {
    let expr = env("DQ_RELIABILITY_CRON")?;
    let key = env("DQ_RELIABILITY_TICKS").unwrap_or_else(|| "ticks".to_owned());
    let missed = match env("DQ_RELIABILITY_MISSED").as_deref() {
        Some("run_once") => dq::periodic::Missed::RunOnce,
        _ => dq::periodic::Missed::Skip,
    };
    let name = env("DQ_RELIABILITY_SCHEDULE").unwrap_or_else(|| "tick".to_owned());
    let schedule = dq::periodic::Schedule::new(name, &expr)
        .and_then(|s| s.actor("tick").queue(queue).args(&(key,)))
        .expect("DQ_RELIABILITY_CRON is a valid schedule")
        .missed(missed);
    Some(dq::periodic::Periodic::new().schedule(schedule))
}

/// Does nothing: the backlog test measures the worker, not the work.
#[dq::actor]
fn noop() {}

fn main() {
    let queue = env("DQ_RELIABILITY_QUEUE").unwrap_or_else(|| "reliability".to_owned());
    dq::cli::Cli::new()
        .broker(|| {
            let mut builder = RedisBroker::builder()
                .url(env("DQ_RELIABILITY_REDIS_URL").unwrap_or_else(dq_test::redis_url));
            if let Some(ns) = env("DQ_RELIABILITY_NAMESPACE") {
                builder = builder.namespace(ns);
            }
            if let Some(ms) = env_u64("DQ_RELIABILITY_HEARTBEAT_MS") {
                builder = builder.heartbeat_timeout(Duration::from_millis(ms));
            }
            if let Some(chance) = env_u64("DQ_RELIABILITY_MAINTENANCE") {
                builder = builder.maintenance_chance(u32::try_from(chance).unwrap_or(u32::MAX));
            }
            builder.build()
        })
        .configure(move |app| {
            // The linked actors sit on queue "default"; these are the same actors on the test's
            // own queue.
            let mut record = record::actor();
            record.options.queue_name = queue.clone();
            let mut noop = noop::actor();
            noop.options.queue_name = queue.clone();
            let mut flaky = flaky::actor();
            flaky.options.queue_name = queue.clone();
            let mut slow = slow::actor();
            slow.options.queue_name = queue.clone();
            let mut tick = tick::actor();
            tick.options.queue_name = queue.clone();
            let app = match periodic(&queue) {
                Some(p) => app.middleware(p).middleware(dq::middleware::CurrentMessage),
                None => app,
            };
            let app = match env_u64("DQ_RELIABILITY_MAX_MESSAGE_SIZE") {
                Some(bytes) => app.max_message_size(usize::try_from(bytes).unwrap_or(usize::MAX)),
                None => app,
            };
            app.without_linked_actors()
                .actor(record)
                .actor(noop)
                .actor(flaky)
                .actor(slow)
                .actor(tick)
        })
        .main()
}
