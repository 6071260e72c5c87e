//! The learner's setup: Redis at localhost:6379, set as the broker before any actor is used,
//! then a worker in the same process. The second half shows a namespace per application
//! (multi-tenancy on one Redis): what one app enqueues, another app never sees.
//!
//! ```text
//! cargo run -p examples --example redis        # DQ_REDIS_URL=redis://:password@host:6379/2 to go elsewhere
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dq::broker::Broker;
use dq::redis::RedisBroker;
use dq::Message;

static GREETED: AtomicUsize = AtomicUsize::new(0);

/// Say hello; the worker runs it on one of its threads.
#[dq::actor(queue_name = "dq-example-greetings")]
fn greet(name: String) {
    println!("Hello, {name}!");
    GREETED.fetch_add(1, Ordering::SeqCst);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();

    // 1. Connect to Redis (a local instance at localhost:6379 unless DQ_REDIS_URL says
    //    otherwise) and make it the broker *before* any actor is sent: Dramatiq's
    //    `dramatiq.set_broker(RedisBroker(host="localhost", port=6379))`.
    let url = std::env::var("DQ_REDIS_URL").unwrap_or_else(|_| "redis://localhost:6379".into());
    let broker = RedisBroker::builder().url(&url).build().await?;
    println!("connected to {}", broker.redacted_url());
    dq::set_broker(broker.clone())?;

    // 2. Send: the messages wait in Redis, in the keys Python Dramatiq uses
    //    (`dramatiq:dq-example-greetings` and `dramatiq:dq-example-greetings.msgs`).
    for name in ["Ann", "Bob", "Cem"] {
        greet::send(name.to_owned()).await?;
    }
    println!("queued: {} ready", broker.stats(greet::QUEUE).await?.ready);

    // 3. A worker, as `dq::cli::main()` or `dramatiq my_module` would start one.
    let worker = dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default());
    worker.start().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while GREETED.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the worker did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.stop().await?;

    // 4. Multi-tenancy: one Redis, one namespace per application. Their queues may have the
    //    same names and still never mix (Dramatiq: `RedisBroker(namespace="shop")`).
    let shop = RedisBroker::builder()
        .url(&url)
        .namespace("dq-example-shop")
        .build()
        .await?;
    let blog = RedisBroker::builder()
        .url(&url)
        .namespace("dq-example-blog")
        .build()
        .await?;
    let mut order = Message::new("default", "ship_order", &(1234,), &())?;
    shop.enqueue(&mut order).await?;
    println!(
        "after the shop enqueued one message: shop has {} ready on `default`, blog has {}",
        shop.stats("default").await?.ready,
        blog.stats("default").await?.ready
    );
    shop.flush("default").await?;
    Ok(())
}
