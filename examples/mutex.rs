//! Rate limiting, from the cookbook: a `ConcurrentRateLimiter` of limit 1 is a distributed mutex.
//! An actor that cannot acquire it fails with `RateLimitExceeded`, and the Retries middleware
//! runs it again later with backoff; `try_acquire` (Dramatiq's `raise_on_failure=False`) reports
//! instead. A `WindowRateLimiter` caps calls per time window. Needs no services.
//!
//! ```text
//! cargo run -p examples --example mutex
//! ```
//!
//! The in-memory backend limits the workers of one process. To share the limit between worker
//! processes (and Python Dramatiq workers on the same keys), use Redis:
//! `dq::ratelimit::RedisBackend::from_url("redis://127.0.0.1:6379")?`.

use std::sync::LazyLock;
use std::time::Duration;

use dq::ratelimit::{ConcurrentRateLimiter, MemoryBackend, RateLimiter, WindowRateLimiter};

static BACKEND: LazyLock<MemoryBackend> = LazyLock::new(MemoryBackend::default);

static DISTRIBUTED_MUTEX: LazyLock<ConcurrentRateLimiter> =
    LazyLock::new(|| ConcurrentRateLimiter::new(BACKEND.clone(), "distributed-mutex", 1));

/// Retried quickly for the example; the defaults back off from 15 s.
#[dq::actor(min_backoff = 50, max_backoff = 500)]
async fn one_at_a_time(n: u32) -> Result<(), dq::ActorError> {
    let permit = DISTRIBUTED_MUTEX.acquire().await?;
    println!("job {n}: has the mutex");
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("job {n}: done");
    permit.release().await?;
    Ok(())
}

#[dq::actor]
async fn maybe() -> Result<(), dq::ActorError> {
    let permit = DISTRIBUTED_MUTEX.try_acquire().await?;
    if permit.acquired() {
        println!("maybe: lock was acquired");
    } else {
        println!("maybe: lock could not be acquired");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let broker = dq::StubBroker::new();
    dq::set_broker(broker.clone())?;
    let worker = dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default());
    worker.start().await?;

    // Three jobs at once on eight threads: they take turns.
    for n in 1..=3 {
        one_at_a_time::send(n).await?;
    }
    broker
        .join(one_at_a_time::QUEUE, Some(Duration::from_secs(30)))
        .await?;

    // Holding the mutex here, the actor is told it is taken; then it is free.
    let held = DISTRIBUTED_MUTEX.acquire().await?;
    maybe::send().await?;
    broker
        .join(maybe::QUEUE, Some(Duration::from_secs(5)))
        .await?;
    held.release().await?;
    maybe::send().await?;
    broker
        .join(maybe::QUEUE, Some(Duration::from_secs(5)))
        .await?;
    worker.stop().await?;

    // At most 5 calls in any 1-second window.
    let window = WindowRateLimiter::new(BACKEND.clone(), "api-calls", 5, 1);
    let mut admitted = 0;
    for _ in 0..20 {
        admitted += u32::from(window.try_acquire().await?.acquired());
    }
    println!("window limit: {admitted} of 20 attempts admitted at once");
    Ok(())
}
