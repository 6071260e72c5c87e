//! A small error-reporting middleware for any reporter (Rollbar, Bugsnag, a chat webhook, your
//! own table): the cookbook's pattern. It reports an actor's failure with the actor, the
//! message id and the queue, skips the errors Dramatiq's integrations skip (a `dq::Retry`, a
//! rate limit not acquired, the types the actor `throws`) and says whether the message will be
//! retried or dead-lettered. Needs no services.
//!
//! ```text
//! cargo run -p examples --example error_reporting
//! ```

use std::time::Duration;

use dq::middleware::{async_trait, Hooks, Job, Middleware, MiddlewareError, Outcome};
use dq::{App, FailureKind};

/// Reports failures through `report` (here: a line on stdout).
struct ReportErrors<F> {
    report: F,
}

/// What a reporter gets.
#[derive(Debug)]
#[allow(dead_code)] // Read through Debug below.
struct Report<'a> {
    actor: &'a str,
    queue: &'a str,
    message_id: &'a str,
    retries: u32,
    error_type: &'a str,
    error: &'a str,
    dead_lettered: bool,
}

#[async_trait]
impl<F> Middleware for ReportErrors<F>
where
    F: Fn(Report<'_>) + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        "ReportErrors"
    }

    // Only the hook it implements: the worker calls no other.
    fn hooks(&self) -> Hooks {
        Hooks::AFTER_PROCESS
    }

    async fn after_process(
        &self,
        _app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        let Some(error) = outcome.error() else {
            return Ok(());
        };
        let asked_for_retry = matches!(
            error.kind(),
            FailureKind::Retry(_) | FailureKind::RateLimitExceeded
        );
        let thrown = job
            .actor
            .options
            .throws_type(&job.message.options, error.type_name());
        if asked_for_retry || thrown {
            return Ok(());
        }
        // Added last, this hook runs first of the after-hooks (they run in reverse order), so
        // Retries has not decided yet: read its limit as it will.
        let retries = job.message.options.retries();
        let max_retries = job
            .message
            .options
            .max_retries()
            .unwrap_or(
                job.actor
                    .options
                    .max_retries
                    .unwrap_or(Some(20))
                    .map(i64::from),
            )
            .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(0));
        (self.report)(Report {
            actor: &job.message.actor_name,
            queue: job.message.canonical_queue(),
            message_id: &job.message.message_id,
            retries,
            error_type: error.type_name(),
            error: error.message(),
            dead_lettered: retries >= max_retries,
        });
        // A reporter's own failure must not requeue the message: report and return Ok.
        Ok(())
    }
}

/// Fails every time: reported on each attempt, the last one as dead-lettered.
#[dq::actor(queue_name = "dq-example-reporting", max_retries = 1, min_backoff = 50)]
fn sync_inventory(store: u32) -> Result<(), std::io::Error> {
    Err(std::io::Error::other(format!("store {store} is offline")))
}

/// Asks for a retry once: never reported.
#[dq::actor(queue_name = "dq-example-reporting", max_retries = 1)]
fn poll_feed(_feed: u32) -> Result<(), dq::Retry> {
    let retries = dq::current_message().map_or(0, |m| m.options.retries());
    if retries == 0 {
        return Err(dq::Retry::after(Duration::from_millis(50)));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = dq::app(dq::StubBroker::new())
        .middleware(dq::middleware::CurrentMessage)
        .middleware(ReportErrors {
            report: |r: Report<'_>| println!("reported: {r:?}"),
        })
        .build()?;
    app.set_global();
    sync_inventory::send(3).await?;
    poll_feed::send(9).await?;
    dq::Worker::new(app, dq::WorkerOptions::default())
        .run_until_drained(Duration::from_secs(30))
        .await?;
    println!("done");
    Ok(())
}
