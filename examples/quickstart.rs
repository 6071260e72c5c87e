//! Quickstart: define actors, send them messages, and let a worker process them, all in one
//! process on the in-memory broker. Needs no services.
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::time::Duration;

use dq::SendOptions;

/// A sync actor: runs on a worker thread.
#[dq::actor]
fn add(x: i64, y: i64) -> i64 {
    let sum = x + y;
    println!("add({x}, {y}) = {sum}");
    sum
}

/// An async actor on its own queue, retried at most 3 times, 100 ms apart at first.
#[dq::actor(queue_name = "emails", max_retries = 3, min_backoff = 100)]
async fn send_welcome(address: String) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    if !address.contains('@') {
        return Err(format!("{address:?} is not an e-mail address"));
    }
    println!("sent a welcome e-mail to {address}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();

    // The broker every `send` goes through, with Dramatiq's default middleware.
    let broker = dq::StubBroker::new();
    dq::set_broker(broker.clone())?;

    // Calling an actor runs it right here, like any fn.
    println!("called directly: add(2, 3) = {}", add(2, 3));

    // Sending enqueues a message for a worker.
    for i in 1..=3 {
        let message = add::send(i, i * 10).await?;
        println!(
            "enqueued {} as {}",
            message.display_call(),
            message.message_id
        );
    }
    send_welcome::send("ann@example.com".to_owned()).await?;
    // This one fails, is retried once, then goes to the dead-letter queue.
    send_welcome::send_with_options(
        "not-an-address".to_owned(),
        SendOptions::new().max_retries(1),
    )
    .await?;

    // A worker in the same process: 8 slots, every queue with an actor. It stops once every
    // queue is drained; a worker binary runs `worker.run_until_signal()` (or `dq::cli`).
    let worker = dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default());
    worker.run_until_drained(Duration::from_secs(30)).await?;

    // The e-mail queue ends with one dead letter.
    for dead in broker.dead_letters_by_queue(send_welcome::QUEUE) {
        let message = dq::Message::decode(&dead.body)?;
        let reason = dead.reason.as_deref().unwrap_or("no reason recorded");
        println!("dead letter: {} ({reason})", message.display_call());
    }
    Ok(())
}
