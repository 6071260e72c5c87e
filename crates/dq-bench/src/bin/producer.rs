//! The producer side of the benchmark, and its housekeeping.
//!
//! ```text
//! dq-bench-producer send N ACTOR [ARG]     one message at a time, as a plain `send` loop does
//! dq-bench-producer send-unique N ACTOR [ARG]
//!                                          `send` loop of unique messages, a key each (Redis)
//! dq-bench-producer send-unique-duplicate N ACTOR [ARG]
//!                                          the same on one key: one enqueued, the rest refused
//! dq-bench-producer batch N ACTOR [ARG]    `enqueue_many` in batches of 1,000 (pre-fill, pipelined enqueue)
//! dq-bench-producer batch-unconfirmed N ACTOR [ARG]
//!                                          `batch` without RabbitMQ publisher confirms (Python's default)
//! dq-bench-producer send-prioritized N ACTOR [ARG]
//! dq-bench-producer batch-prioritized N ACTOR [ARG]
//!                                          `send` / `batch` on a Redis broker with `max_priority`
//!                                          10, messages with `broker_priority` 1 to 10 in turn
//! dq-bench-producer latency N MAX_GAP_MS   N `latency` messages, random gaps of 0..MAX_GAP_MS
//! dq-bench-producer cleanup                delete the queue, its delay and dead-letter queues
//! dq-bench-producer ceiling N              RabbitMQ only: what a bare lapin client gets out of
//!                                          the server (see `ceiling`)
//! ```
//!
//! The broker, queue and namespace come from `DQ_BENCH_BROKER_URL`, `DQ_BENCH_QUEUE` and
//! `DQ_BENCH_NAMESPACE`. `send` and `batch` print `{"count": N, "secs": S}` on stdout, `ceiling`
//! prints `{"count": N, "publish": R1, "publish_written": R2, "publish_confirmed": R3,
//! "drain": R4, "drain_narrow": R5}` (messages per second).

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dq::{App, Message};
use futures_util::StreamExt as _;
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
    app_with(url, true, None).await
}

/// The broker's `max_priority` in the `-prioritized` modes.
const MAX_PRIORITY: u8 = 10;

async fn app_with(url: &str, confirm: bool, max_priority: Option<u8>) -> Res<App> {
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
                .max_priority(max_priority)
                .build()
                .await?,
        )
    };
    Ok(builder.without_linked_actors().build()?)
}

fn message(queue: &str, actor: &str, arg: Option<u64>) -> Res<Message> {
    Ok(match arg {
        Some(a) => Message::new(queue, actor, &(a,), &())?,
        None => Message::new(queue, actor, &(), &())?,
    })
}

/// `broker_priority` 1 to [`MAX_PRIORITY`] in turn.
fn prioritize(m: &mut Message, i: usize) {
    let p = (i % usize::from(MAX_PRIORITY)) as u8 + 1;
    dq::SendOptions::default()
        .broker_priority(p)
        .apply_to_message(m);
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
        Some(mode @ ("send" | "send-prioritized")) => {
            let (n, actor, arg) = count_arg(args)?;
            let prioritized = mode == "send-prioritized";
            let app = app_with(&url, true, prioritized.then_some(MAX_PRIORITY)).await?;
            app.broker().declare_queue(&queue).await?;
            let start = Instant::now();
            for i in 0..n {
                let mut m = message(&queue, &actor, arg)?;
                if prioritized {
                    prioritize(&mut m, i);
                }
                app.enqueue(m, None).await?;
            }
            report(n, start.elapsed());
            app.close().await?;
        }
        Some(mode @ ("send-unique" | "send-unique-duplicate")) => {
            let (n, actor, arg) = count_arg(args)?;
            let app = app(&url).await?;
            app.broker().declare_queue(&queue).await?;
            let one_key = mode == "send-unique-duplicate";
            // Keys of their own per run: a run's locks outlive it (TTL 600 s).
            let run = dq::broker::now_ms();
            let start = Instant::now();
            let mut enqueued = 0;
            for i in 0..n {
                let key = if one_key { 0 } else { i };
                let mut m = message(&queue, &actor, arg)?;
                dq::SendOptions::new()
                    .unique_for(Duration::from_secs(600))
                    .unique_key(format!("bench:{run}:{key}"))
                    .apply_to_message(&mut m);
                let (_, outcome) = app.send(m, None).await?;
                enqueued += usize::from(outcome.is_enqueued());
            }
            report(n, start.elapsed());
            let want = if one_key { 1 } else { n };
            if enqueued != want {
                return Err(format!("{enqueued} unique messages enqueued, not {want}").into());
            }
            app.close().await?;
        }
        Some(mode @ ("batch" | "batch-unconfirmed" | "batch-prioritized")) => {
            let (n, actor, arg) = count_arg(args)?;
            let prioritized = mode == "batch-prioritized";
            let app = app_with(
                &url,
                mode != "batch-unconfirmed",
                prioritized.then_some(MAX_PRIORITY),
            )
            .await?;
            app.broker().declare_queue(&queue).await?;
            let start = Instant::now();
            let mut left = n;
            while left > 0 {
                let k = left.min(BATCH);
                let batch = (0..k)
                    .map(|i| {
                        let mut m = message(&queue, &actor, arg)?;
                        if prioritized {
                            prioritize(&mut m, i);
                        }
                        Ok(m)
                    })
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
        Some("ceiling") => {
            let n: usize = args.get(1).ok_or("missing N")?.parse()?;
            if !url.starts_with("amqp") {
                return Err(format!(
                    "ceiling measures RabbitMQ only: {} must be an amqp:// URL, not {url:?}",
                    dq_bench::URL_ENV
                )
                .into());
            }
            ceiling(&url, &format!("{queue}.ceiling"), n).await?;
        }
        _ => {
            return Err(
                "usage: dq-bench-producer send|batch|batch-unconfirmed|send-prioritized|batch-prioritized|latency|cleanup|ceiling ..."
                    .into(),
            )
        }
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
    let conn = connect(url).await?;
    let channel = conn.create_channel().await?;
    for q in [
        queue.to_owned(),
        dq::broker::delay_queue_name(queue),
        dq::broker::dead_letter_queue_name(queue),
    ] {
        channel
            .queue_delete(q.into(), lapin::options::QueueDeleteOptions::default())
            .await?;
    }
    conn.close(200, "bench done".into()).await?;
    Ok(())
}

async fn connect(url: &str) -> Res<lapin::Connection> {
    // lapin's `tokio` feature runs the connection on the current Tokio runtime, as dq's does.
    let props = lapin::ConnectionProperties::default();
    Ok(lapin::Connection::connect(url, props).await?)
}

/// Publishes in flight at once, at most, in the ceiling's publish phases.
const CEILING_WINDOW: usize = 1000;
/// The ceiling's wide drain: its prefetch, and how many deliveries each `multiple` ack covers.
const WIDE_DRAIN: Drain = Drain {
    prefetch: 1000,
    ack_every: 100,
};
/// The ceiling's narrow drain: Dramatiq's default prefetch for a worker of 8 threads (2 x
/// threads), acking with `multiple` once half of it has arrived.
const NARROW_DRAIN: Drain = Drain {
    prefetch: 16,
    ack_every: 8,
};

/// How a ceiling drain consumes.
#[derive(Clone, Copy)]
struct Drain {
    prefetch: u16,
    ack_every: usize,
}

/// What the RabbitMQ server gives a bare lapin client, no dq code in the loop, so that dq's
/// RabbitMQ figures can be read as a fraction of it: N persistent publishes without confirms
/// (timed until the queue holds them all), N more with confirms, pipelined, then two drains of N
/// each: one at Dramatiq's default prefetch for 8 threads (16) and one with a prefetch of 1,000,
/// both acking with `multiple`. The queue, `queue` (fresh, deleted at the
/// end), is declared as dq declares its own, and the messages are a real dq noop message.
async fn ceiling(url: &str, queue: &str, n: usize) -> Res<()> {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};

    let conn = connect(url).await?;
    let admin = conn.create_channel().await?;
    // Fresh: whatever an earlier, interrupted run left goes first.
    admin
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    // The arguments dq declares every queue with (no priority, as in the bench), so RabbitMQ
    // does the same work per message.
    let args = field_table(&dq::amqp::queue_arguments(queue, None));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    admin.queue_declare(queue.into(), durable, args).await?;
    let rates = ceiling_rates(&conn, &admin, queue, n).await;
    let deleted = admin
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "ceiling done".into()).await;
    let r = rates?;
    deleted?;
    println!(
        "{}",
        serde_json::json!({
            "count": n,
            "publish": r.publish,
            "publish_written": r.publish_written,
            "publish_confirmed": r.publish_confirmed,
            "drain": r.drain,
            "drain_narrow": r.drain_narrow,
        })
    );
    Ok(())
}

/// dq's queue arguments as lapin's field table, each value with the same AMQP field type.
fn field_table(args: &dq::amqp::QueueArguments) -> lapin::types::FieldTable {
    use dq::amqp::ArgumentValue;
    use lapin::types::{AMQPValue, FieldTable};

    let mut table = FieldTable::default();
    for (name, value) in args.iter() {
        let value = match value {
            ArgumentValue::LongString(s) => AMQPValue::LongString(s.as_str().into()),
            ArgumentValue::LongInt(i) => AMQPValue::LongInt(*i),
            ArgumentValue::LongLongInt(i) => AMQPValue::LongLongInt(*i),
        };
        table.insert(name.into(), value);
    }
    table
}

/// The ceiling's figures, in messages per second.
struct Rates {
    /// Unconfirmed, until the queue holds all N.
    publish: f64,
    /// Unconfirmed, until the last publish is written to the socket.
    publish_written: f64,
    /// Confirmed and pipelined, until the last confirm.
    publish_confirmed: f64,
    /// [`WIDE_DRAIN`], from the first delivery to the last ack.
    drain: f64,
    /// [`NARROW_DRAIN`], likewise.
    drain_narrow: f64,
}

async fn ceiling_rates(
    conn: &lapin::Connection,
    admin: &lapin::Channel,
    queue: &str,
    n: usize,
) -> Res<Rates> {
    // Generous: RabbitMQ on a busy two-core machine still moves thousands a second.
    let within = Duration::from_secs(60) + Duration::from_millis(n as u64);
    let body: Arc<[u8]> = message(queue, "noop", None)?.encode().into();

    let channel = conn.create_channel().await?;
    let start = Instant::now();
    publish(&channel, queue, &body, n, false).await?;
    // The clock dq's own unconfirmed enqueue stops: the last publish written to the socket.
    let written_rate = n as f64 / start.elapsed().as_secs_f64();
    // Nothing says when unconfirmed messages have arrived but the queue's count.
    wait_queued(admin, queue, n, within).await?;
    let publish_rate = n as f64 / start.elapsed().as_secs_f64();

    let channel = conn.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    let start = Instant::now();
    publish(&channel, queue, &body, n, true).await?;
    let confirmed_rate = n as f64 / start.elapsed().as_secs_f64();
    wait_queued(admin, queue, 2 * n, within).await?;

    let narrow_rate = drain(conn, queue, n, within, NARROW_DRAIN).await?;
    // What the narrow drain's channel held beyond its N is back in the queue now.
    let wide_rate = drain(conn, queue, n, within, WIDE_DRAIN).await?;
    Ok(Rates {
        publish: publish_rate,
        publish_written: written_rate,
        publish_confirmed: confirmed_rate,
        drain: wide_rate,
        drain_narrow: narrow_rate,
    })
}

/// Publishes `n` persistent copies of `body` back to back, at most [`CEILING_WINDOW`] in flight
/// (written to the socket and, on a channel in confirm mode, confirmed; mandatory then, as dq).
async fn publish(
    channel: &lapin::Channel,
    queue: &str,
    body: &Arc<[u8]>,
    n: usize,
    confirmed: bool,
) -> Res<()> {
    let options = lapin::options::BasicPublishOptions {
        mandatory: confirmed,
        immediate: false,
    };
    let props = lapin::BasicProperties::default().with_delivery_mode(2);
    // A task per publish, so the frames of many reach lapin's I/O thread together: awaiting
    // each `basic_publish` in turn (as dq does) costs this client a thread wake-up per message,
    // and a bare client should take as little of the machine from the server as it can.
    let queue: Arc<str> = queue.into();
    let mut in_flight = tokio::task::JoinSet::new();
    for _ in 0..n {
        if in_flight.len() >= CEILING_WINDOW {
            in_flight
                .join_next()
                .await
                .ok_or("no publish in flight")???;
        }
        let (channel, queue, body, props) =
            (channel.clone(), queue.clone(), body.clone(), props.clone());
        in_flight.spawn(async move {
            let confirm = channel
                .basic_publish("".into(), queue.as_ref().into(), options, &body, props)
                .await?;
            confirmed_ok(confirm.await?)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        done??;
    }
    Ok(())
}

fn confirmed_ok(c: lapin::Confirmation) -> Res<()> {
    use lapin::Confirmation;
    match c {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err("rabbitmq returned a message as unroutable".into()),
        Confirmation::Nack(_) => Err("rabbitmq nacked a message".into()),
    }
}

/// Waits until `queue` holds at least `n` messages.
async fn wait_queued(channel: &lapin::Channel, queue: &str, n: usize, within: Duration) -> Res<()> {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        durable: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    let deadline = Instant::now() + within;
    loop {
        let q = channel
            .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
            .await?;
        let count = q.message_count() as usize;
        if count >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{queue} held {count} of {n} messages after {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Consumes `total` messages as `how` says on a channel of its own, closed at the end (which
/// gives back what it holds beyond `total`); returns messages per second from the first
/// delivery to the last ack.
async fn drain(
    conn: &lapin::Connection,
    queue: &str,
    total: usize,
    within: Duration,
    how: Drain,
) -> Res<f64> {
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};

    let channel = conn.create_channel().await?;
    channel
        .basic_qos(how.prefetch, BasicQosOptions { global: false })
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "dq-bench-ceiling".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    // The consumer's stream, as dq reads it. Not `set_delegate`: in lapin 4.12 a delivery that
    // completes while the delegate is being installed can be parked where nobody reads it, and
    // the drain then waits for a message it was already given.
    let deadline = tokio::time::Instant::now() + within;
    let (mut got, mut max_tag, mut acked, mut since_ack) = (0, 0, 0, 0);
    let mut first = None;
    while got < total {
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .map_err(|_| format!("drained {got} of {total} messages within {within:?}"))?;
        let tag = next.ok_or("rabbitmq cancelled the consumer")??.delivery_tag;
        first.get_or_insert_with(Instant::now);
        got += 1;
        since_ack += 1;
        max_tag = max_tag.max(tag);
        // A multiple ack covers every tag below it, and acking a tag twice is a channel error.
        if (since_ack >= how.ack_every || got == total) && max_tag > acked {
            channel
                .basic_ack(max_tag, BasicAckOptions { multiple: true })
                .await?;
            acked = max_tag;
            since_ack = 0;
        }
    }
    let secs = first.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
    channel
        .basic_cancel(
            "dq-bench-ceiling".into(),
            lapin::options::BasicCancelOptions::default(),
        )
        .await?;
    channel.close(200, "drained".into()).await?;
    Ok(total as f64 / secs)
}
