//! The producer side of the benchmark, and its housekeeping.
//!
//! ```text
//! dq-bench-producer send N ACTOR [ARG]     one message at a time, as a plain `send` loop does
//! dq-bench-producer batch N ACTOR [ARG]    `enqueue_many` in batches of 1,000 (pre-fill, pipelined enqueue)
//! dq-bench-producer batch-unconfirmed N ACTOR [ARG]
//!                                          `batch` without RabbitMQ publisher confirms (Python's default)
//! dq-bench-producer latency N MAX_GAP_MS   N `latency` messages, random gaps of 0..MAX_GAP_MS
//! dq-bench-producer cleanup                delete the queue, its delay and dead-letter queues
//! ```
//!
//! The broker, queue and namespace come from `DQ_BENCH_BROKER_URL`, `DQ_BENCH_QUEUE` and
//! `DQ_BENCH_NAMESPACE`. `send` and `batch` print `{"count": N, "secs": S}` on stdout.

use std::error::Error;
use std::time::{Duration, Instant};

use dq::{App, Message};
use rand::Rng as _;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const BATCH: usize = 1000;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(&args)) {
        eprintln!("dq-bench-producer: {e}");
        std::process::exit(1);
    }
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn app(url: &str) -> Res<App> {
    app_with(url, true).await
}

async fn app_with(url: &str, confirm: bool) -> Res<App> {
    let builder = if url.starts_with("amqp") {
        dq::app(
            dq::amqp::AmqpBroker::builder()
                .url(url)
                .confirm_delivery(confirm)
                .build()
                .await?,
        )
    } else {
        let ns = env(dq_bench::NAMESPACE_ENV, "dramatiq");
        dq::app(
            dq::redis::RedisBroker::builder()
                .url(url)
                .namespace(ns)
                .build()
                .await?,
        )
    };
    Ok(builder.linked_actors(false).build()?)
}

fn message(queue: &str, actor: &str, arg: Option<u64>) -> Res<Message> {
    Ok(match arg {
        Some(a) => Message::new(queue, actor, &(a,), &())?,
        None => Message::new(queue, actor, &(), &())?,
    })
}

fn count_arg(args: &[String]) -> Res<(usize, String, Option<u64>)> {
    let n = args.get(1).ok_or("missing N")?.parse()?;
    let actor = args.get(2).ok_or("missing ACTOR")?.clone();
    let arg = args.get(3).map(|a| a.parse()).transpose()?;
    Ok((n, actor, arg))
}

async fn run(args: &[String]) -> Res<()> {
    let url = env(dq_bench::URL_ENV, "redis://127.0.0.1:6379");
    let queue = env(dq_bench::QUEUE_ENV, "dq-bench");
    match args.first().map(String::as_str) {
        Some("send") => {
            let (n, actor, arg) = count_arg(args)?;
            let app = app(&url).await?;
            app.broker().declare_queue(&queue).await?;
            let start = Instant::now();
            for _ in 0..n {
                app.enqueue(message(&queue, &actor, arg)?, None).await?;
            }
            report(n, start.elapsed());
            app.close().await?;
        }
        Some(mode @ ("batch" | "batch-unconfirmed")) => {
            let (n, actor, arg) = count_arg(args)?;
            let app = app_with(&url, mode == "batch").await?;
            app.broker().declare_queue(&queue).await?;
            let start = Instant::now();
            let mut left = n;
            while left > 0 {
                let k = left.min(BATCH);
                let batch = (0..k)
                    .map(|_| message(&queue, &actor, arg))
                    .collect::<Res<Vec<_>>>()?;
                app.enqueue_many(batch).await?;
                left -= k;
            }
            report(n, start.elapsed());
            // Unconfirmed publishes may still be on their way: the rate above is what a
            // producer sees, and the close makes sure every message arrives.
            app.close().await?;
        }
        Some("latency") => {
            let n: usize = args.get(1).ok_or("missing N")?.parse()?;
            let gap: u64 = args.get(2).ok_or("missing MAX_GAP_MS")?.parse()?;
            let app = app(&url).await?;
            app.broker().declare_queue(&queue).await?;
            for _ in 0..n {
                let pause = rand::thread_rng().gen_range(0..=gap);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                // The send time goes in the message, read as late as possible before the send.
                let m = message(&queue, "latency", Some(dq_bench::now_ns()))?;
                app.enqueue(m, None).await?;
            }
            app.close().await?;
        }
        Some("cleanup") => cleanup(&url, &queue).await?,
        _ => return Err("usage: dq-bench-producer send|batch|latency|cleanup ...".into()),
    }
    Ok(())
}

fn report(n: usize, elapsed: Duration) {
    println!(
        "{}",
        serde_json::json!({"count": n, "secs": elapsed.as_secs_f64()})
    );
}

/// Deletes what the bench made on the broker. On Redis the bench owns the whole server, which
/// it stops afterwards, so flushing the queue is enough; RabbitMQ's queues are durable and
/// shared with everyone else's, so they are deleted.
async fn cleanup(url: &str, queue: &str) -> Res<()> {
    if !url.starts_with("amqp") {
        let app = app(url).await?;
        app.broker().flush(queue).await?;
        return Ok(());
    }
    let props = lapin::ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    let conn = lapin::Connection::connect(url, props).await?;
    let channel = conn.create_channel().await?;
    for q in [queue.to_owned(), dq::dq_name(queue), dq::xq_name(queue)] {
        channel
            .queue_delete(&q, lapin::options::QueueDeleteOptions::default())
            .await?;
    }
    conn.close(200, "bench done").await?;
    Ok(())
}
