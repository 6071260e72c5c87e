//! Callbacks, from the cookbook: `on_success` sends an actor `[message, result]` when a message
//! succeeds; `on_failure` sends one `[message, {"type", "message"}]` every time it fails, retries
//! included. Needs no services.
//!
//! ```text
//! cargo run --example callbacks
//! ```

use dq::SendOptions;
use serde_json::Value;

#[dq::actor]
fn identity(x: i64) -> i64 {
    x
}

#[dq::actor(max_retries = 0)]
fn divide(x: i64, y: i64) -> Result<i64, String> {
    if y == 0 {
        return Err("division by zero".to_owned());
    }
    Ok(x / y)
}

#[dq::actor]
fn print_result(message_data: Value, result: Value) {
    println!(
        "The result of message {} was {result}.",
        message_data["message_id"]
    );
}

#[dq::actor]
fn print_error(message_data: Value, exception_data: Value) {
    println!("Message {} failed:", message_data["message_id"]);
    println!("  * type: {}", exception_data["type"]);
    println!("  * message: {}", exception_data["message"]);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let broker = dq::StubBroker::new();
    dq::set_broker(broker.clone())?;
    let callbacks = SendOptions::new()
        .on_success(print_result::NAME)
        .on_failure(print_error::NAME);
    identity::send_with_options(42, callbacks.clone()).await?;
    divide::send_with_options(1, 0, callbacks).await?;

    dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default())
        .run_until_drained(std::time::Duration::from_secs(30))
        .await?;
    Ok(())
}
