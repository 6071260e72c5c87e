//! Periodic messages: a schedule declared on the actor (`cron = "..."`) and one registered in
//! code, run by the `Periodic` middleware in every worker process. However many processes run
//! (on Redis, or RabbitMQ with a Redis for the claims), each tick enqueues one message. Needs no
//! services: the in-memory broker claims ticks too.
//!
//! ```text
//! cargo run --example periodic
//! ```

use std::time::Duration;

use dq::periodic::{Periodic, Schedule};

/// Every two seconds, on the second (six fields: seconds first).
#[dq::actor(cron = "*/2 * * * * *")]
fn heartbeat() {
    let at = dq::current_message()
        .and_then(|m| m.options.get_str("scheduled_at").map(str::to_owned))
        .unwrap_or_default();
    println!("heartbeat for the tick at {at}");
}

#[dq::actor]
fn report(kind: String, days: u32) {
    println!("building the {kind} report of the last {days} days");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let periodic = Periodic::new().schedule(
        Schedule::new("weekly-report", "@every 3s")?
            .actor("report")
            .args(&("pdf", 7))?,
    );
    let app = dq::App::builder(dq::StubBroker::new())
        .middleware(periodic)
        .middleware(dq::middleware::CurrentMessage)
        .build()?;
    let worker = dq::Worker::new(app.clone(), dq::WorkerOptions::default());
    worker.start().await?;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    worker.stop().await?;
    for s in app.broker().schedules().await? {
        println!(
            "schedule {} ({}): last tick {}, message {}",
            s.name, s.expression, s.last_tick_ms, s.last_message_id
        );
    }
    Ok(())
}
