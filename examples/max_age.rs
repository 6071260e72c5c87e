//! Message age limits: an actor with `max_age` drops messages older than that many milliseconds
//! (counted from when the message was first sent, retries included) into the dead-letter queue
//! instead of running them. Needs no services.
//!
//! ```text
//! cargo run --example max_age
//! ```

use std::time::Duration;

/// Stale price updates are worthless: anything older than 500 ms is dead-lettered unprocessed.
#[dq::actor(max_age = 500)]
fn update_price(sku: String, cents: u64) {
    println!("price of {sku} is now {cents} cents");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let broker = dq::StubBroker::new();
    dq::set_broker(broker.clone())?;

    update_price::send("old-sku".to_owned(), 100).await?;
    // No worker is running yet: the first message ages past its limit while it waits.
    tokio::time::sleep(Duration::from_millis(700)).await;
    update_price::send("new-sku".to_owned(), 250).await?;

    dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default())
        .run_until_drained(Duration::from_secs(30))
        .await?;
    for dead in broker.dead_letters_by_queue(update_price::QUEUE) {
        let message = dq::Message::decode(&dead.body)?;
        println!(
            "dead letter: {} ({})",
            message.display_call(),
            dead.reason.unwrap_or_default()
        );
    }
    Ok(())
}
