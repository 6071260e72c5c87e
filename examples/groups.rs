//! Groups, from the cookbook: run messages in parallel, wait for all of them, read their results
//! in the order they were added (whatever order they finished in), and enqueue a completion
//! callback once every one succeeded. Needs no services.
//!
//! ```text
//! cargo run -p examples --example groups
//! ```
//!
//! Waiting and reading results need the Results middleware; completion callbacks need
//! GroupCallbacks, whose barrier lives in a rate limiter backend. Across processes, use Redis for
//! both: `dq::results::RedisBackend::from_url(url)?` and `dq::ratelimit::RedisBackend::from_url(url)?`.

use std::time::Duration;

use dq::ratelimit::GroupCallbacks;
use dq::results::{group, GroupResults, MemoryBackend, Results};

/// The first message sleeps longest, so the group finishes in reverse order.
#[dq::actor(store_results = true)]
async fn frobnicate(x: i64, y: i64) -> i64 {
    tokio::time::sleep(Duration::from_millis(100 * (4 - x) as u64)).await;
    println!("frobnicate({x}, {y}) finished");
    x * y
}

#[dq::actor]
fn all_done(label: String) {
    println!("completion callback: group {label} finished");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();

    let results = MemoryBackend::default();
    let barriers = dq::ratelimit::MemoryBackend::default();
    let broker = dq::StubBroker::new();
    let app = dq::app(broker.clone())
        .middleware(Results::new(results.clone()))
        .middleware(GroupCallbacks::new(barriers))
        .build()?;
    app.set_global();
    let worker = dq::Worker::new(app, dq::WorkerOptions::default());
    worker.start().await?;

    let g = group([
        frobnicate::message(1, 2)?,
        frobnicate::message(2, 3)?,
        frobnicate::message(3, 4)?,
    ])
    .with_completion_callback(&all_done::message("frobnicate".into())?)
    .run()
    .await?;

    g.wait(&results, Some(Duration::from_secs(10))).await?;
    println!("all {} messages finished", g.len());
    let products: Vec<i64> = g
        .get_results(&results, true, Some(Duration::from_secs(5)))
        .await?;
    println!("results, in the order added: {products:?}");

    // Let the completion callback run before stopping.
    broker
        .join(all_done::QUEUE, Some(Duration::from_secs(5)))
        .await?;
    worker.stop().await?;
    Ok(())
}
