//! Results, from the cookbook: the Results middleware stores what actors with `store_results`
//! return, and the handle a send returns reads it back as the actor's return type, or says why it
//! cannot: missing (not stored yet, or expired), a timeout (when waiting), or the actor's failure.
//! Needs no services.
//!
//! ```text
//! cargo run -p examples --example results
//! ```
//!
//! With Redis, so that other processes (Python Dramatiq ones too) can read the results, use
//! `dq::results::RedisBackend::from_url("redis://127.0.0.1:6379")?` as the backend; nothing else
//! changes. Dramatiq's own `message.get_result(&backend, block, timeout)`
//! (`dq::results::MessageResult`) reads any message's result, typed ones included.

use std::time::Duration;

use dq::results::{MemoryBackend, Results};
use dq::{ResultError, SendOptions};

#[dq::actor(store_results = true)]
fn add(x: i64, y: i64) -> i64 {
    x + y
}

#[dq::actor(store_results = true, max_retries = 0)]
fn divide(x: i64, y: i64) -> Result<i64, String> {
    if y == 0 {
        return Err("division by zero".to_owned());
    }
    Ok(x / y)
}

/// Results expire: this actor's after half a second (the default is 10 minutes).
#[dq::actor(store_results = true, result_ttl = 500)]
fn short_lived(x: i64) -> i64 {
    x
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();

    let backend = MemoryBackend::default();
    let broker = dq::StubBroker::new();
    // Results for one hour unless an actor or message says otherwise.
    let app = dq::app(broker.clone())
        .middleware(Results::new(backend.clone()).with_result_ttl(Duration::from_secs(3600)))
        .build()?;
    app.set_global();
    let worker = dq::Worker::new(app, dq::WorkerOptions::default());
    worker.start().await?;
    let timeout = Duration::from_secs(5);

    // `add::send` returns a `dq::Sent<i64>`: its result is an `i64`.
    let sent = add::send(1, 2).await?;
    let sum = sent.wait_result(&backend, timeout).await?;
    println!("add(1, 2) = {sum}");

    // A message that has not run has no result: missing, or a timeout when waiting.
    let later =
        add::send_with_options(5, 5, SendOptions::new().delay(Duration::from_secs(3600))).await?;
    match later.result(&backend).await {
        Err(e @ ResultError::Missing { .. }) => println!("not run yet: {e}"),
        other => println!("unexpected: {other:?}"),
    }
    match later
        .wait_result(&backend, Duration::from_millis(100))
        .await
    {
        Err(e @ ResultError::Timeout { .. }) => println!("not run yet, waiting: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    // A message that failed for good stores its error.
    let sent = divide::send(1, 0).await?;
    match sent.wait_result(&backend, timeout).await {
        Err(ResultError::Failed {
            type_name, message, ..
        }) => println!("divide(1, 0) failed: {type_name}: {message}"),
        other => println!("unexpected: {other:?}"),
    }

    let sent = short_lived::send(7).await?;
    let value = sent.wait_result(&backend, timeout).await?;
    println!("short_lived(7) = {value}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    match sent.result(&backend).await {
        Err(e) if e.is_missing() => println!("700 ms later: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    worker.stop().await?;
    Ok(())
}
