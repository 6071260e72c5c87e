//! Time limits, and handling them. The default limit is 10 minutes; `time_limit` (ms) sets one per
//! actor. An async actor past its limit is cancelled: its future is dropped at the deadline. A
//! sync actor cannot be interrupted from outside in Rust, so it checks cooperatively with
//! `dq::check()` and cleans up; its message fails with `TimeLimitExceeded` at the deadline
//! either way (and is retried like any failure). Needs no services.
//!
//! ```text
//! cargo run --example time_limits
//! ```

use std::time::Duration;

fn setup_missiles() {
    println!("long_running: missiles set up");
}
fn launch_missiles() {
    println!("long_running: missiles launched (this must not print)");
}
fn teardown_missiles() {
    println!("long_running: time is up, missiles torn down");
}

/// The user guide's example: catch the time limit and clean up.
#[dq::actor(time_limit = 1000, max_retries = 0)]
fn long_running() -> Result<(), dq::ActorError> {
    setup_missiles();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        if let Err(e) = dq::check() {
            teardown_missiles();
            return Err(e);
        }
    }
    launch_missiles();
    Ok(())
}

/// Dropped at the deadline: the line after the sleep never runs.
#[dq::actor(time_limit = 500, max_retries = 0)]
async fn slow_download(url: String) {
    println!("slow_download: fetching {url}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    println!("slow_download: done (this must not print)");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let broker = dq::StubBroker::new();
    dq::set_broker(broker.clone())?;
    long_running::send().await?;
    slow_download::send("http://example.invalid/big.iso".to_owned()).await?;

    dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default())
        .run_until_drained(std::time::Duration::from_secs(60))
        .await?;
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
