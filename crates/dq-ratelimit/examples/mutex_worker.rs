//! A worker process whose actor holds a distributed mutex (a `ConcurrentRateLimiter` of limit 1
//! on Redis) while it works: the test `ratelimit_processes` starts two of these and checks that
//! their runs never overlap. Needs Redis.
//!
//! The test decides everything through the environment: `DQ_RL_REDIS` (URL), `DQ_RL_NAMESPACE`
//! (the broker's namespace), `DQ_RL_QUEUE`, `DQ_RL_KEY` (the mutex's key) and `DQ_RL_THREADS`.
//! The process prints `ready` once its worker consumes, and stops its worker when its stdin
//! closes.
//!
//! ```text
//! DQ_RL_QUEUE=q DQ_RL_KEY=mutex cargo run -p dq-ratelimit --example mutex_worker
//! ```

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dq_broker_redis::RedisBroker;
use dq_core::{Actor, ActorError, ActorOptions, App, ArgsError, FailureKind, Invocation, Message};
use dq_ratelimit::{ConcurrentRateLimiter, Error, RateLimiter, RedisBackend};
use dq_worker::{Worker, WorkerOptions};
use serde_json::{json, Value};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn mutex() -> &'static ConcurrentRateLimiter {
    static MUTEX: OnceLock<ConcurrentRateLimiter> = OnceLock::new();
    MUTEX.get_or_init(|| {
        let backend = RedisBackend::from_url(&env("DQ_RL_REDIS", "redis://127.0.0.1:6379"))
            .expect("a valid Redis URL");
        // A short TTL: a process killed while holding the mutex frees it soon.
        ConcurrentRateLimiter::new(backend, &env("DQ_RL_KEY", "distributed-mutex"), 1)
            .with_ttl(Duration::from_secs(30))
    })
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// Appends one JSON line with a single write, so lines of both processes never interleave.
fn record(path: &str, line: Value) -> Result<(), ActorError> {
    let mut text = line.to_string();
    text.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| {
            ActorError::new(
                FailureKind::Error,
                "IOError",
                format!("cannot write {path}: {e}"),
            )
        })
}

/// `one_at_a_time(path, label, hold_ms)`: under the mutex, records when it started and ended.
fn one_at_a_time(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    let (path, label, hold_ms): (String, String, u64) =
        serde_json::from_str(m.args.get()).map_err(|e| ArgsError::Malformed(e.to_string()))?;
    Ok(Invocation::Sync(Box::new(move || {
        let permit = match mutex().acquire_blocking() {
            Ok(p) => p,
            Err(Error::RateLimitExceeded(e)) => {
                record(&path, json!({"kind": "busy", "pid": std::process::id()}))?;
                // Retries backs off and tries again, as with Dramatiq.
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let start = now_us();
        std::thread::sleep(Duration::from_millis(hold_ms));
        let end = now_us();
        permit.release_blocking()?;
        record(
            &path,
            json!({"kind": "ran", "pid": std::process::id(), "label": label,
                   "start_us": start.to_string(), "end_us": end.to_string()}),
        )?;
        Ok(Value::Null)
    })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = RedisBroker::builder()
        .url(env("DQ_RL_REDIS", "redis://127.0.0.1:6379"))
        .namespace(env("DQ_RL_NAMESPACE", "dramatiq"))
        .build()
        .await?;
    let app = App::builder(broker)
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .actor(Actor::new(
            "one_at_a_time",
            ActorOptions {
                queue_name: env("DQ_RL_QUEUE", "default"),
                // Never give up: every message must run once the mutex is free.
                max_retries: Some(None),
                min_backoff: Some(20),
                max_backoff: Some(200),
                ..Default::default()
            },
            one_at_a_time,
        ))
        .build()?;
    let threads = env("DQ_RL_THREADS", "3").parse()?;
    let worker = Worker::new(
        app,
        WorkerOptions {
            threads,
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    worker.start().await?;
    println!("ready");
    std::io::stdout().flush()?;
    // Runs until the parent closes stdin (or dies).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    worker.stop().await?;
    Ok(())
}
