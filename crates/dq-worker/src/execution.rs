//! Execution: one path for every message, from the work queue to the settler.
//!
//! The dispatcher takes a free slot out of `threads`, then the best queued message, and starts
//! it where its call runs, chosen once from the call's kind ([`Invocation`], decoded at intake):
//!
//! - a blocking fn goes, with the slot, to one of the worker's threads, which runs everything
//!   for it (the hooks through `block_on`, the actor outside them) and then, still holding the
//!   slot, takes the next queued message itself while there is one;
//! - a future becomes a task on the worker's Tokio runtime.
//!
//! Either way the steps are the same functions: [`prepare`] (stale check, `before_process` and
//! `around_process` hooks), the call ([`call_here`] for a blocking fn, on a worker thread
//! under the deadline watcher; [`call_future`] for a future, under a timer), and [`conclude`]
//! (`after_process` hooks, then the settler). If an `around_process` hook changes a call's
//! kind, the call still runs the way its kind needs: a future is polled to completion on the
//! thread that holds its slot, and a blocking fn is handed to a worker thread.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use dq_core::{ActorContext, ActorError, ActorResult, Control, Invocation, Job, Outcome};
use tokio::runtime::Handle;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tracing::{debug, error, warn, Instrument};

use crate::intake::Item;
use crate::settlement::{Ticket, Verdict};
use crate::shared::Shared;

/// A blocking actor call.
type SyncCall = Box<dyn FnOnce() -> ActorResult + Send + 'static>;

/// Takes the best queued message whenever a slot is free, and starts it.
pub(crate) async fn dispatch_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        // The slot is taken before the message is chosen, so the choice is made as late as
        // possible and a high-priority message that arrives meanwhile still goes first.
        let permit = tokio::select! {
            p = shared.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let item = tokio::select! {
            item = shared.work.pop() => item,
            _ = stop.changed() => return,
        };
        start(&shared, item, permit);
    }
}

/// Starts a message taken out of the work queue, with its slot, where its call runs.
fn start(shared: &Arc<Shared>, mut item: Item, permit: OwnedSemaphorePermit) {
    item.ticket.start();
    if item.call.is_async() {
        tokio::spawn(on_task(shared.clone(), item, permit));
    } else {
        let s = shared.clone();
        shared
            .sync_threads
            .submit(move |slot| on_thread(s, item, permit, slot));
    }
}

/// Runs messages on this worker thread: `item`, then the best queued message after it as long
/// as there is one and the worker is not stopping, all with the one slot `permit`. A busy
/// worker so hands a message from thread to thread no more than its settle does: no task per
/// message, no wake-up of the dispatcher.
fn on_thread(shared: Arc<Shared>, mut item: Item, permit: OwnedSemaphorePermit, slot: usize) {
    let rt = Handle::current();
    loop {
        execute_here(&shared, &rt, item, slot);
        if !shared.dispatching.load(Ordering::Acquire) {
            break;
        }
        let Some(mut next) = shared.work.try_pop() else {
            break;
        };
        if next.call.is_async() {
            next.ticket.start();
            rt.spawn(on_task(shared, next, permit));
            return;
        }
        next.ticket.start();
        item = next;
    }
    drop(permit);
}

/// One message, every step on this thread. The hooks run through `block_on` (they rarely
/// wait); the actor itself runs outside them, so it may start a runtime of its own.
fn execute_here(shared: &Shared, rt: &Handle, item: Item, slot: usize) {
    let Some(prepared) = rt.block_on(prepare(shared, item)) else {
        return;
    };
    let (job, ticket, outcome) = match prepared {
        Prepared::Skipped(job, ticket) => {
            return rt.block_on(conclude_skipped(shared, job, ticket))
        }
        Prepared::Run(job, Invocation::Sync(f), ticket) => {
            match call_here(shared, job, f, ticket, slot) {
                Some(done) => done,
                // Its time limit passed: the deadline watcher concluded it already.
                None => return,
            }
        }
        Prepared::Run(job, Invocation::Async(fut), ticket) => {
            let outcome = rt.block_on(call_future(shared, &job, fut));
            (job, ticket, outcome)
        }
    };
    rt.block_on(conclude(shared, job, ticket, outcome))
}

/// One message on a task. The slot is freed as soon as the call returns.
async fn on_task(shared: Arc<Shared>, item: Item, permit: OwnedSemaphorePermit) {
    let Some(prepared) = prepare(&shared, item).await else {
        return;
    };
    match prepared {
        Prepared::Skipped(job, ticket) => {
            drop(permit);
            conclude_skipped(&shared, job, ticket).await
        }
        Prepared::Run(job, Invocation::Async(fut), ticket) => {
            let outcome = call_future(&shared, &job, fut).await;
            drop(permit);
            conclude(&shared, job, ticket, outcome).await
        }
        Prepared::Run(job, Invocation::Sync(f), ticket) => {
            // A middleware made the call blocking: it runs on a worker thread, slot and all.
            let s = shared.clone();
            shared.sync_threads.submit(move |slot| {
                if let Some((job, ticket, outcome)) = call_here(&s, job, f, ticket, slot) {
                    Handle::current().block_on(conclude(&s, job, ticket, outcome));
                }
                drop(permit);
            });
        }
    }
}

/// What [`prepare`] leaves to do.
enum Prepared {
    /// A before_process hook skipped it.
    Skipped(Job, Ticket),
    /// Ready to run.
    Run(Job, Invocation, Ticket),
}

/// The stale check and the before_process and around_process hooks. `None` when nothing is
/// left to do here: the message was dropped or handed to the settler.
async fn prepare(shared: &Shared, item: Item) -> Option<Prepared> {
    let Item {
        message,
        actor,
        call,
        ticket,
    } = item;
    if ticket.acker.is_stale(&ticket.token) {
        // Prefetched on a channel that died since: the broker redelivers it, so running it here
        // too would only run it twice.
        debug!(message_id = %message.message_id, actor = %message.actor_name, queue = %message.queue_name, "dropping a prefetched message the broker redelivers");
        return None;
    }
    let mut job = Job::new(message, actor);
    job.span = process_span(&job);
    let span = job.span.clone();
    for m in &shared.hooks.before_process {
        match m
            .before_process(&shared.app, &mut job)
            .instrument(span.clone())
            .await
        {
            Ok(Control::Continue) => {}
            Ok(Control::Skip) => return Some(Prepared::Skipped(job, ticket)),
            Err(e) => {
                job.span.record("dq.outcome", "requeued");
                error!(middleware = m.name(), error = %dq_core::ErrorChain(&e), message_id = %job.message.message_id, actor = %job.message.actor_name, queue = %job.message.queue_name, "before_process hook failed; requeueing");
                shared
                    .settler
                    .settle(Some(job.message), ticket, Verdict::Requeue);
                return None;
            }
        }
    }
    let mut call = call;
    for m in &shared.hooks.around_process {
        call = m.around_process(&job, call);
    }
    debug!(message_id = %job.message.message_id, actor = %job.message.actor_name, queue = %job.message.queue_name, "running {}", job.message);
    Some(Prepared::Run(job, call, ticket))
}

/// Logs a failure, runs the after_process hooks and hands the message to the settler: acked,
/// or dead-lettered when a hook marked it failed. When a hook fails, the message is requeued
/// instead: not acking is what keeps it safe.
async fn conclude(shared: &Shared, mut job: Job, ticket: Ticket, outcome: Outcome) {
    let span = job.span.clone();
    if let Outcome::Failure(e) = &outcome {
        span.record("dq.error", tracing::field::display(dq_core::ErrorChain(e)));
        span.in_scope(|| log_failure(&job, e));
    }
    for m in &shared.hooks.after_process {
        if let Err(e) = m
            .after_process(&shared.app, &mut job, &outcome)
            .instrument(span.clone())
            .await
        {
            span.record("dq.outcome", "requeued");
            error!(middleware = m.name(), error = %dq_core::ErrorChain(&e), message_id = %job.message.message_id, actor = %job.message.actor_name, queue = %job.message.queue_name, "after_process hook failed; requeueing instead of acking");
            shared
                .settler
                .settle(Some(job.message), ticket, Verdict::Requeue);
            return;
        }
    }
    let verdict = if job.is_failed() {
        "dead_lettered"
    } else if outcome.error().is_some() {
        "failure"
    } else {
        "success"
    };
    span.record("dq.outcome", verdict);
    shared.settler.conclude(job, ticket);
}

/// Runs the after_skip hooks of a skipped message and hands it to the settler.
async fn conclude_skipped(shared: &Shared, mut job: Job, ticket: Ticket) {
    let span = job.span.clone();
    for m in &shared.hooks.after_skip {
        if let Err(e) = m
            .after_skip(&shared.app, &mut job)
            .instrument(span.clone())
            .await
        {
            span.record("dq.outcome", "requeued");
            error!(middleware = m.name(), error = %dq_core::ErrorChain(&e), message_id = %job.message.message_id, actor = %job.message.actor_name, queue = %job.message.queue_name, "after_skip hook failed; requeueing");
            shared
                .settler
                .settle(Some(job.message), ticket, Verdict::Requeue);
            return;
        }
    }
    span.record(
        "dq.outcome",
        if job.is_failed() {
            "dead_lettered"
        } else {
            "skipped"
        },
    );
    shared.settler.conclude(job, ticket);
}

/// The `dq.process` span of one message: the hooks and the actor run inside it, and
/// [`conclude`] records how it ended (`dq.outcome`: `success`, `failure` (retried or acked,
/// as the hooks decided), `dead_lettered`, `skipped` or `requeued`). Its `otel.*` and
/// `messaging.*` fields are those a `tracing-opentelemetry` layer turns into a consumer span.
fn process_span(job: &Job) -> tracing::Span {
    let m = &job.message;
    tracing::info_span!(
        "dq.process",
        otel.name = %format_args!("process {}", m.canonical_queue()),
        otel.kind = "consumer",
        messaging.system = "dramatiq",
        messaging.operation.name = "process",
        messaging.destination.name = %m.canonical_queue(),
        messaging.message.id = %m.message_id,
        dq.actor = %m.actor_name,
        dq.retries = m.options.retries(),
        dq.outcome = tracing::field::Empty,
        dq.error = tracing::field::Empty,
    )
}

/// What the deadline watcher needs to conclude a sync call that overran its time limit.
pub(crate) struct Watched {
    job: Job,
    ticket: Ticket,
    ctx: Arc<ActorContext>,
}

/// Calls a blocking fn on this worker thread, under its time limit (see [`crate::deadline`]).
/// `None` when the limit passed first and the watcher took the message to conclude it.
fn call_here(
    shared: &Shared,
    job: Job,
    f: SyncCall,
    ticket: Ticket,
    slot: usize,
) -> Option<(Job, Ticket, Outcome)> {
    let run = shared.actor_context(&job);
    let span = job.span.clone();
    let call = || {
        let _entered = span.enter();
        std::panic::catch_unwind(AssertUnwindSafe(|| run.ctx.scope(f)))
            .unwrap_or_else(|payload| Err(ActorError::panic(&*payload)))
    };
    // A message that may be aborted is watched even without a time limit: its stop request
    // brings its deadline forward.
    let watched_until = match (job.deadline, &job.interrupt) {
        (Some(deadline), _) => Some(deadline),
        (None, Some(_)) => Some(far_future()),
        (None, None) => None,
    };
    let (result, back) = match watched_until {
        Some(deadline) => {
            let ctx = run.ctx.clone();
            let interrupt = job.interrupt.clone();
            shared
                .deadlines
                .enter(slot, Watched { job, ticket, ctx }, deadline);
            if let Some(i) = &interrupt {
                let deadlines = shared.deadlines.clone();
                i.listen(move |at| deadlines.shorten(slot, at));
            }
            let result = call();
            if let Some(i) = &interrupt {
                // Before the slot is left, so a late request never shortens the next message's.
                i.unlisten();
            }
            let back = shared.deadlines.leave(slot).map(|w| (w.job, w.ticket));
            (result, back)
        }
        None => (call(), Some((job, ticket))),
    };
    drop(run);
    let (job, ticket) = back?;
    Some((job, ticket, outcome(result)))
}

/// A deadline no message reaches (a century away), for calls watched only for a stop request.
fn far_future() -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(std::time::Duration::from_secs(100 * 365 * 86_400))
        .unwrap_or(now)
}

/// Concludes sync calls whose time limit passed while their threads run on: one task, asleep
/// until the earliest deadline of all threads.
pub(crate) async fn watch_deadlines(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (due, next) = shared.deadlines.expired();
        for Watched { job, ticket, ctx } in due {
            // A stop request (an abort) past its grace period, else the time limit.
            let error = ctx.interrupted().unwrap_or_else(|| {
                ctx.interrupt_time_limit();
                ActorError::time_limit_exceeded()
            });
            let outcome = Outcome::Failure(error);
            let s = shared.clone();
            tokio::spawn(async move { conclude(&s, job, ticket, outcome).await });
        }
        let sleep = async move {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = shared.deadlines.changed() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Polls an actor's future under the job's time limit and, for actors that asked for it,
/// until the worker shuts down: past either, the future is dropped.
async fn call_future(
    shared: &Shared,
    job: &Job,
    fut: Pin<Box<dyn Future<Output = ActorResult> + Send>>,
) -> Outcome {
    let run = shared.actor_context(job);
    let deadline = job.deadline.map(tokio::time::Instant::from_std);
    let mut shutdown = shared.shutdown.subscribe();
    let notify_shutdown = job.notify_shutdown;
    let shutdown_signal = async move {
        if !notify_shutdown {
            return std::future::pending::<()>().await;
        }
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let timer = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    let interrupt = job.interrupt.clone();
    let stop_request = async move {
        let Some(interrupt) = interrupt else {
            return std::future::pending::<ActorError>().await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        interrupt.listen(move |at| {
            let _ = tx.send(at);
        });
        let Ok(at) = rx.await else {
            return std::future::pending::<ActorError>().await;
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        interrupt
            .error()
            .unwrap_or_else(|| ActorError::new(dq_core::FailureKind::Error, "Interrupt", ""))
    };
    let result = tokio::select! {
        r = CatchUnwind(run.ctx.wrap(fut)).instrument(job.span.clone()) => r,
        _ = timer => {
            run.ctx.interrupt_time_limit();
            Err(ActorError::time_limit_exceeded())
        }
        _ = shutdown_signal => Err(ActorError::shutdown()),
        e = stop_request => Err(e),
    };
    if let Some(i) = &job.interrupt {
        i.unlisten();
    }
    outcome(result)
}

fn outcome(result: ActorResult) -> Outcome {
    match result {
        Ok(v) => Outcome::Success(v),
        Err(e) => Outcome::Failure(e),
    }
}

/// Turns a panic while polling an async actor into a failed outcome.
struct CatchUnwind(dq_core::Scoped);

impl Future for CatchUnwind {
    type Output = ActorResult;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ActorResult> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(p) => p,
            Err(payload) => Poll::Ready(Err(ActorError::panic(&*payload))),
        }
    }
}

fn log_failure(job: &Job, e: &ActorError) {
    use dq_core::FailureKind;
    match e.kind() {
        FailureKind::Retry(_) | FailureKind::RateLimitExceeded => {
            debug!(message_id = %job.message.message_id, actor = %job.message.actor_name, queue = %job.message.queue_name, error = %dq_core::ErrorChain(e), "message {} asked to be retried", job.message)
        }
        FailureKind::TimeLimitExceeded => {
            warn!(message_id = %job.message.message_id, actor = %job.message.actor_name, queue = %job.message.queue_name, "time limit exceeded while processing message {}", job.message)
        }
        _ => {
            warn!(message_id = %job.message.message_id, actor = %job.message.actor_name, queue = %job.message.queue_name, error = %dq_core::ErrorChain(e), "failed to process message {} with unhandled error", job.message)
        }
    }
}
