//! Error handling and retries: a failing actor is retried with exponential backoff and jitter
//! (Dramatiq 2.x: retry `n` waits `min_backoff * 2^n * U[1,2)` ms), per-actor `max_retries`,
//! `throws` for errors that must not be retried, `dq::Retry` for a chosen delay, and the
//! dead-letter queue at the end. Needs no services.
//!
//! ```text
//! cargo run --example retries
//! ```

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// Fails twice, then works: the worker retries it after ~100 ms and ~200 ms.
#[dq::actor(max_retries = 5, min_backoff = 100)]
fn flaky_report(id: u32) -> Result<String, std::io::Error> {
    let n = ATTEMPTS.fetch_add(1, Ordering::SeqCst);
    let retries = dq::current_message()
        .map(|m| m.options.retries())
        .unwrap_or(0);
    if n < 2 {
        println!(
            "flaky_report({id}): attempt {} failed (retries so far: {retries})",
            n + 1
        );
        return Err(std::io::Error::other("database is busy"));
    }
    println!("flaky_report({id}): attempt {} worked", n + 1);
    Ok(format!("report {id}"))
}

/// A validation error that retrying cannot fix.
#[derive(Debug)]
struct BadInput(String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad input: {}", self.0)
    }
}

/// `throws` names error types that fail the message at once, without retries.
#[dq::actor(throws = ["BadInput"])]
fn validate(value: String) -> Result<(), BadInput> {
    println!("validate({value:?}): rejecting");
    Err(BadInput(value))
}

/// Returning `dq::Retry` picks the delay instead of the backoff.
#[dq::actor(max_retries = 1)]
fn polite(n: u32) -> Result<(), dq::Retry> {
    let retries = dq::current_message()
        .map(|m| m.options.retries())
        .unwrap_or(0);
    if retries == 0 {
        println!("polite({n}): not yet, try again in 300 ms");
        return Err(dq::Retry::after(Duration::from_millis(300)));
    }
    println!("polite({n}): done on retry {retries}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let broker = dq::StubBroker::new();
    let app = dq::app(broker.clone())
        .middleware(dq::middleware::CurrentMessage)
        .build()?;
    app.set_global();

    let started = Instant::now();
    flaky_report::send(7).await?;
    validate::send("-1".to_owned()).await?;
    polite::send(1).await?;

    dq::Worker::new(app, dq::WorkerOptions::default())
        .run_until_drained(std::time::Duration::from_secs(60))
        .await?;
    println!("all done after {:?}", started.elapsed());
    for dead in broker.dead_letters_by_queue("default") {
        let message = dq::Message::decode(&dead.body)?;
        println!(
            "dead letter: {} ({})",
            message.display_call(),
            dead.reason.unwrap_or_default()
        );
    }
    Ok(())
}
