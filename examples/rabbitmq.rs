//! The user guide's RabbitMQ setup: a broker pointing at RabbitMQ, set before any actor is used,
//! and a worker in the same process. The URL's path is the vhost, so one vhost per application
//! keeps applications apart on one RabbitMQ (`rabbitmqctl add_vhost app1`, then
//! `amqp://user:password@host:5672/app1`).
//!
//! ```text
//! cargo run -p examples --example rabbitmq     # DQ_AMQP_URL=amqp://user:pw@host:5672/app1 to go elsewhere
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dq::amqp::AmqpBroker;
use dq::broker::Broker;

static COUNTED: AtomicUsize = AtomicUsize::new(0);

/// The user guide's actor, counting the words of a text instead of a web page.
#[dq::actor(queue_name = "dq-example-words")]
fn count_words(text: String) {
    println!(
        "There are {} words in {text:?}.",
        text.split_whitespace().count()
    );
    COUNTED.fetch_add(1, Ordering::SeqCst);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();

    // Dramatiq: `dramatiq.set_broker(RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:5672"))`.
    // Without a URL, DQ_AMQP_URL or the local default is used; `%2f` is the vhost "/".
    let url = std::env::var("DQ_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let broker = AmqpBroker::builder().url(&url).build().await?;
    println!("connected to {}", broker.redacted_url());
    dq::set_broker(broker.clone())?;

    // Each send returns once RabbitMQ has confirmed the (persistent) message.
    for text in ["the quick brown fox", "jumps over", "the lazy dog"] {
        count_words::send(text.to_owned()).await?;
    }
    println!(
        "queued: {} ready on {}",
        broker.stats(count_words::QUEUE).await?.ready,
        count_words::QUEUE
    );

    let worker = dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default());
    worker.start().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while COUNTED.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the worker did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.stop().await?;
    // Close the connections cleanly before the runtime goes away.
    broker.close().await?;
    Ok(())
}
