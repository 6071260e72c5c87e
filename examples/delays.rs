//! Scheduling messages: `send_with_options` with a delay puts the message on the queue's delay
//! queue (`default.DQ`) with an `eta`; the worker holds it until then and runs it. Needs no
//! services.
//!
//! ```text
//! cargo run --example delays
//! ```

use std::time::{Duration, Instant};

use dq::SendOptions;

#[dq::actor]
fn remind(who: String, sent_at_ms: i64) {
    let waited = dq::broker::now_ms() - sent_at_ms;
    println!("reminding {who} after {waited} ms");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = dq::StubBroker::new();
    dq::set_broker(broker.clone())?;
    let start = Instant::now();
    for (who, ms) in [("carol", 900), ("alice", 300), ("bob", 600)] {
        let m = remind::send_with_options(
            who.to_owned(),
            dq::broker::now_ms(),
            SendOptions::new().delay(Duration::from_millis(ms)),
        )
        .await?;
        println!(
            "scheduled {} on {} with eta {:?}",
            m.display_call(),
            m.queue_name,
            m.options.eta()
        );
    }
    // The worker holds each message until its eta, then runs it.
    dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default())
        .run_until_drained(Duration::from_secs(30))
        .await?;
    println!("all reminders done after {:?}", start.elapsed());
    Ok(())
}
