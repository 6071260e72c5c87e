//! The dq side of the benchmark's worker: a `dq::cli` worker whose actors only note what they
//! did (see the crate docs). Every actor is moved to the queue in `DQ_BENCH_QUEUE`, so each
//! benchmark case has a queue of its own.
//!
//! `DQ_BENCH_BROKER_URL=redis://127.0.0.1:6379 DQ_BENCH_QUEUE=q cargo run -p dq-bench --bin
//! dq-bench-worker -- --processes 1 --threads 8`

use std::time::Duration;

/// Does nothing: the per-message cost of the framework.
#[dq::actor]
fn noop() {
    dq_bench::started();
    dq_bench::finished();
}

/// Blocks its thread for `ms` milliseconds: I/O-bound work in a sync actor.
#[dq::actor]
fn sleep_sync(ms: u64) {
    dq_bench::started();
    std::thread::sleep(Duration::from_millis(ms));
    dq_bench::finished();
}

/// Waits `ms` milliseconds without holding a thread: I/O-bound work in an async actor.
#[dq::actor]
async fn sleep_async(ms: u64) {
    dq_bench::started();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    dq_bench::finished();
}

/// Notes the time from `sent_ns` (when the producer sent it) to now.
#[dq::actor]
fn latency(sent_ns: u64) {
    dq_bench::latency(sent_ns);
    dq_bench::finished();
}

fn main() {
    dq_bench::start_writer();
    let queue = std::env::var(dq_bench::QUEUE_ENV).unwrap_or_else(|_| "dq-bench".to_owned());
    dq::cli::Cli::new()
        .configure(move |mut app| {
            app = app.without_linked_actors();
            let linked = dq::middleware::Registry::linked()
                .expect("the benchmark's actors have unique names");
            for actor in linked.iter() {
                let mut actor = (**actor).clone();
                actor.options.queue_name = queue.clone();
                app = app.actor(actor);
            }
            if std::env::var("DQ_BENCH_ABORTABLE").as_deref() == Ok("1") {
                // The events on the broker's Redis, as the Python side keeps them.
                let url = std::env::var("DQ_BENCH_BROKER_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
                let backend = dq::abort::RedisBackend::builder()
                    .url(&url)
                    .build()
                    .expect("a valid Redis URL for the abort events");
                app = app.middleware(dq::abort::Abortable::new(backend));
            }
            app
        })
        .main()
}
