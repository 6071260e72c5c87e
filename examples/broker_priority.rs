//! Broker priority: `broker_priority` (higher runs sooner, from 1 up to the broker's
//! `max_priority`) orders a whole queue, not only what a worker prefetched. A backlog of 30
//! reports is waiting when an urgent alert and two invoices arrive; with a worker that prefetches
//! two messages at a time, the alert runs first, then the invoices in the order they were sent,
//! then the reports. The same option means the same on RabbitMQ (`max_priority`) and on Redis
//! (`RedisBroker::builder().max_priority(Some(10))`); here the stub broker, which orders
//! messages as the Redis broker does. Needs no services.
//!
//! ```text
//! cargo run -p examples --example broker_priority
//! ```

use std::sync::Mutex;

static ORDER: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[dq::actor]
fn report(n: u32) {
    ORDER.lock().unwrap().push(format!("report {n}"));
}

/// Every invoice message carries `broker_priority` 5 unless its send says otherwise.
#[dq::actor(broker_priority = 5)]
fn invoice(n: u32) {
    ORDER.lock().unwrap().push(format!("invoice {n}"));
}

#[dq::actor]
fn alert(text: String) {
    ORDER.lock().unwrap().push(format!("alert: {text}"));
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = dq::StubBroker::with_max_priority(10);
    dq::set_broker(broker.clone())?;
    for n in 1..=30 {
        report::send(n).await?;
    }
    invoice::send(1).await?;
    invoice::send(2).await?;
    // A per-message priority, above the invoices' default.
    let urgent = dq::SendOptions::default().broker_priority(9);
    alert::send_with_options("disk almost full".to_owned(), urgent).await?;

    let options = dq::WorkerOptions {
        threads: 1,
        queue_prefetch: Some(2),
        ..Default::default()
    };
    dq::Worker::new(dq::App::global()?, options)
        .run_until_drained(std::time::Duration::from_secs(60))
        .await?;
    let order = ORDER.lock().unwrap().clone();
    for (i, what) in order.iter().take(5).enumerate() {
        println!("{:>2}. {what}", i + 1);
    }
    println!("    ... and {} more reports", order.len() - 5);
    assert_eq!(
        order[..3],
        ["alert: disk almost full", "invoice 1", "invoice 2"]
    );
    assert_eq!(order.len(), 33);
    Ok(())
}
