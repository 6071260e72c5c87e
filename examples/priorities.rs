//! The learner's priority experiment: one worker thread, 100 queued low-priority sleeps, then one
//! high-priority greeting. Priorities are per actor and lower numbers run first; they only order
//! messages the worker has already prefetched, so this worker prefetches the whole backlog
//! (`queue_prefetch`; the default, 2 x threads, would hold only 2 of the 101). The greeting runs
//! as soon as the sleep in progress finishes. Needs no services.
//!
//! ```text
//! cargo run --example priorities
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const PRIO_HI: i32 = 0;
const PRIO_LO: i32 = 100;

static SLEEPS: AtomicUsize = AtomicUsize::new(0);

#[dq::actor(priority = PRIO_LO)]
fn sleep_a_bit() {
    SLEEPS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(10));
}

#[dq::actor(priority = PRIO_HI)]
fn greet(name: String) {
    println!(
        "Hello, {name}! ({} sleeps ran before me)",
        SLEEPS.load(Ordering::SeqCst)
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = dq::StubBroker::new();
    dq::set_broker(broker.clone())?;
    for _ in 0..100 {
        sleep_a_bit::send().await?;
    }
    greet::send("learner".to_owned()).await?;

    let options = dq::WorkerOptions {
        threads: 1,
        queue_prefetch: Some(200),
        ..Default::default()
    };
    dq::Worker::new(dq::App::global()?, options)
        .run_until_drained(std::time::Duration::from_secs(60))
        .await?;
    println!("{} sleeps in all", SLEEPS.load(Ordering::SeqCst));
    Ok(())
}
