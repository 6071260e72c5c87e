//! Aborting messages, with the `abort` feature: the cookbook's "Aborting" section, which sends
//! Python users to dramatiq-abort. `dq::abort(message_id)` cancels a message that has not
//! started (it is skipped, and stores `null` as its result) and stops a running one (it fails
//! with `Abort`): an async actor's future is dropped, a sync actor sees the abort in
//! `dq::check()`. With `abort_timeout` the actor gets a grace period, and reads the time left
//! with `dq::abort::abort_requested()`. Needs no services.
//!
//! ```text
//! cargo run -p examples --example abort
//! ```
//!
//! To abort across processes, and with Python workers running dramatiq-abort's `Abortable`,
//! use `dq::abort::RedisBackend::from_url("redis://127.0.0.1:6379")?` as the backend: it reads
//! and writes dramatiq-abort's keys. From a shell: `dq abort MESSAGE_ID`.

use std::time::Duration;

use dq::abort::{AbortMode, AbortOptions, Abortable, MemoryBackend};
use dq::results::{MemoryBackend as Results, MessageResult, Results as ResultsMiddleware};

/// Would send an e-mail, unless cancelled first.
#[dq::actor(store_results = true)]
fn send_email(to: String) -> String {
    println!("send_email: sent to {to}");
    format!("sent to {to}")
}

/// Async: dropped where it waits when aborted.
#[dq::actor(store_results = true, max_retries = 0)]
async fn crawl(site: String) {
    println!("crawl: crawling {site}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    println!("crawl: done (this must not print)");
}

/// Sync: checks between steps; with a grace period it saves its work and returns early.
#[dq::actor(store_results = true, max_retries = 0)]
fn import_rows(rows: u32) -> Result<u32, dq::ActorError> {
    for row in 0..rows {
        if let Some(left) = dq::abort::abort_requested() {
            println!(
                "import_rows: abort requested ({} ms left), saving {row} rows",
                left.as_millis()
            );
            return Ok(row);
        }
        dq::check()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(rows)
}

/// Never aborted, whatever `abort` is called with.
#[dq::actor(abortable = false)]
fn audit(event: String) {
    println!("audit: {event}");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "error,dq_worker::settlement=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let results = Results::default();
    let app = dq::app(dq::StubBroker::new())
        .middleware(Abortable::new(MemoryBackend::default()))
        .middleware(ResultsMiddleware::new(results.clone()))
        .build()?;
    app.set_global();
    let timeout = Duration::from_secs(10);

    // Cancel before a worker takes them: the first is skipped, the second is not abortable.
    let email = send_email::send("ada@example.com".to_owned()).await?;
    let audited = audit::send("cancel requested".to_owned()).await?;
    let cancel = AbortOptions::default().mode(AbortMode::Cancel);
    dq::abort::abort_with(&email.message().message_id, &cancel).await?;
    dq::abort::abort_with(&audited.message().message_id, &cancel).await?;

    let worker = dq::Worker::new(app.clone(), dq::WorkerOptions::default());
    worker.start().await?;
    // A skipped message stores `null`: read it as an `Option`.
    let skipped: Option<String> = email
        .message()
        .get_result(&results, true, Some(timeout))
        .await?;
    println!("send_email result: {skipped:?} (cancelled, never ran)");

    // Abort a running async actor: its future is dropped, the message fails with Abort.
    let crawling = crawl::send("https://example.com".to_owned()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    dq::abort(&crawling.message().message_id).await?;
    match crawling.wait_result(&results, timeout).await {
        Err(dq::ResultError::Failed { type_name, .. }) => {
            println!("crawl: failed with {type_name}")
        }
        other => println!("crawl: {other:?} (this must not print)"),
    }

    // Abort a sync actor with a 2 s grace period: it notices and returns what it has.
    let importing = import_rows::send(1000).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let graceful = AbortOptions::default().abort_timeout(Duration::from_secs(2));
    dq::abort::abort_with(&importing.message().message_id, &graceful).await?;
    println!(
        "import_rows result: {:?}",
        importing.wait_result(&results, timeout).await?
    );

    worker.stop().await?;
    Ok(())
}
