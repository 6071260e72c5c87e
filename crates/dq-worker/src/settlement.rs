//! Settlement: the one way every delivery leaves the worker, whatever happened to it.
//!
//! Whoever finishes with a delivery (the intake for one that cannot run, a worker thread or a
//! task after the hooks, the deadline watcher, the delay holder) hands it to the [`Settler`]
//! with a [`Verdict`]: ack, dead-letter with a reason, or requeue. One task takes what queued
//! up and settles it a batch at a time: the acks of a batch in one call per acker, dead letters
//! one by one (each has its reason and hooks), requeues in one call per acker. Transient broker
//! errors are retried with backoff; a delivery whose settle call finally fails stays unacked in
//! the broker, which delivers it again: never lost. A counted delivery's [`InFlight`] guard is
//! dropped only once its settle call returned, so `join` means "settled", not "handed over".

use std::sync::{Arc, Mutex};

use dq_core::{Acker, BrokerError, BrokerErrorKind, Job, Message, Token};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tracing::{error, warn};

use crate::inflight::{Counts, InFlight};
use crate::intake::backoff;
use crate::shared::Shared;

/// What settling one delivery takes: its broker token, the acker that settles it, and, for a
/// message the worker counts in `join`/`stop`, its in-flight guard.
pub(crate) struct Ticket {
    pub(crate) token: Token,
    pub(crate) acker: Arc<dyn Acker>,
    guard: Option<InFlight>,
}

impl Ticket {
    /// A delivery counted pending from now until settled.
    pub(crate) fn counted(token: Token, acker: Arc<dyn Acker>, counts: &Arc<Counts>) -> Ticket {
        Ticket {
            token,
            acker,
            guard: Some(InFlight::new(counts)),
        }
    }

    /// A delivery `join` does not wait for: one held for a later `eta`.
    pub(crate) fn uncounted(token: Token, acker: Arc<dyn Acker>) -> Ticket {
        Ticket {
            token,
            acker,
            guard: None,
        }
    }

    /// Counts the delivery as running (taken out of the work queue).
    pub(crate) fn start(&mut self) {
        if let Some(g) = &mut self.guard {
            g.start();
        }
    }
}

/// How a delivery is settled.
pub(crate) enum Verdict {
    /// Done (or its retry is safely enqueued): remove it from the broker.
    Ack,
    /// Failed for good: into the dead-letter queue, with the reason.
    DeadLetter(String),
    /// Not processed (a hook failed, or the worker is stopping): give it back to its queue.
    Requeue,
}

struct Settlement {
    /// The message, when it decoded (hooks see it).
    message: Option<Message>,
    ticket: Ticket,
    verdict: Verdict,
}

/// The queue of deliveries waiting to be settled, and the settle task's wake-up.
#[derive(Default)]
pub(crate) struct Settler {
    queue: Mutex<Vec<Settlement>>,
    ready: Notify,
}

impl Settler {
    /// Queues a delivery for the settle task, waking it when the queue was empty (otherwise
    /// it is awake or woken already). An ack or dead letter is reported finished to the broker
    /// at once, so a broker that counts unsettled deliveries against the prefetch can fetch
    /// more while the settle call is on its way.
    pub(crate) fn settle(&self, message: Option<Message>, ticket: Ticket, verdict: Verdict) {
        if !matches!(verdict, Verdict::Requeue) {
            ticket.acker.finished(std::slice::from_ref(&ticket.token));
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push(Settlement {
            message,
            ticket,
            verdict,
        });
        let first = queue.len() == 1;
        drop(queue);
        if first {
            self.ready.notify_one();
        }
    }

    /// Settles a processed job: dead-lettered when a hook marked it failed, acked otherwise.
    pub(crate) fn conclude(&self, job: Job, ticket: Ticket) {
        let verdict = match job.failure_reason() {
            Some(reason) => Verdict::DeadLetter(reason.to_owned()),
            None => Verdict::Ack,
        };
        self.settle(Some(job.message), ticket, verdict);
    }

    fn take(&self) -> Vec<Settlement> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The settle task: settles what queued up, a batch at a time, until told to stop; then
/// settles what is left and waits for every batch still in flight.
pub(crate) async fn settle_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.try_join_next().is_some() {}
        let batch = shared.settler.take();
        if batch.is_empty() {
            tokio::select! {
                _ = shared.settler.ready.notified() => continue,
                _ = stop.changed() => break,
            }
        }
        // Batches run side by side: one waiting for the broker does not hold up the next.
        let s = shared.clone();
        in_flight.spawn(async move { settle_batch(&s, batch).await });
    }
    loop {
        let batch = shared.settler.take();
        if batch.is_empty() {
            break;
        }
        settle_batch(&shared, batch).await;
    }
    while in_flight.join_next().await.is_some() {}
}

/// Per acker: its tokens, and the messages that go with them (for the hooks and logs).
struct Group {
    acker: Arc<dyn Acker>,
    tokens: Vec<Token>,
    messages: Vec<Message>,
}

fn group_of<'a>(groups: &'a mut Vec<Group>, acker: &Arc<dyn Acker>) -> &'a mut Group {
    let i = match groups.iter().position(|g| Arc::ptr_eq(&g.acker, acker)) {
        Some(i) => i,
        None => {
            groups.push(Group {
                acker: acker.clone(),
                tokens: Vec::new(),
                messages: Vec::new(),
            });
            groups.len() - 1
        }
    };
    &mut groups[i]
}

/// Dead-letters a batch's failed deliveries one by one, and acks and requeues the rest in one
/// call per acker each. The guards drop at the end, once every call returned.
async fn settle_batch(shared: &Shared, batch: Vec<Settlement>) {
    let mut acks: Vec<Group> = Vec::new();
    let mut requeues: Vec<Group> = Vec::new();
    let mut guards = Vec::with_capacity(batch.len());
    for Settlement {
        message,
        ticket,
        verdict,
    } in batch
    {
        let Ticket {
            token,
            acker,
            guard,
        } = ticket;
        guards.push(guard);
        match verdict {
            Verdict::DeadLetter(reason) => {
                dead_letter(shared, message.as_ref(), &token, &acker, &reason).await
            }
            Verdict::Ack => {
                let g = group_of(&mut acks, &acker);
                g.tokens.push(token);
                g.messages.extend(message);
            }
            Verdict::Requeue => {
                let g = group_of(&mut requeues, &acker);
                g.tokens.push(token);
                g.messages.extend(message);
            }
        }
    }
    for g in acks {
        ack(shared, &g.messages, &g.tokens, &g.acker).await;
    }
    for g in requeues {
        match g.acker.requeue(&g.tokens).await {
            Ok(()) => shared.health.ok(),
            // Still unacked in the broker, which delivers it again: nothing is lost.
            Err(e) if recoverable(&e) => shared.health.failed("requeueing", &e),
            Err(e) => {
                let first = g.messages.first();
                let message_id = first.map_or("", |m| m.message_id.as_str());
                let actor = first.map_or("", |m| m.actor_name.as_str());
                error!(error = %dq_core::ErrorChain(&e), message_id, actor, count = g.tokens.len(), "requeue failed; the message will be redelivered");
            }
        }
    }
    drop(guards);
}

/// Gives deliveries the worker will not run back to their queues, one call per acker: what it
/// prefetched but did not start and the delayed messages it held, when it stops. Returns how
/// many it gave back.
pub(crate) async fn requeue_all(tickets: impl IntoIterator<Item = Ticket>) -> usize {
    let mut groups: Vec<Group> = Vec::new();
    let mut guards = Vec::new();
    let mut n = 0;
    for t in tickets {
        group_of(&mut groups, &t.acker).tokens.push(t.token);
        guards.push(t.guard);
        n += 1;
    }
    for g in groups {
        if let Err(e) = g.acker.requeue(&g.tokens).await {
            // Still unacked in the broker: it is redelivered when the consumer closes or the
            // broker notices this worker is gone.
            warn!(error = %dq_core::ErrorChain(&e), count = g.tokens.len(), "could not requeue prefetched messages");
        }
    }
    drop(guards);
    n
}

/// Dead-letters one delivery, with the nack hooks when its message decoded.
async fn dead_letter(
    shared: &Shared,
    message: Option<&Message>,
    token: &Token,
    acker: &Arc<dyn Acker>,
    reason: &str,
) {
    match message {
        Some(m) => {
            error!(message_id = %m.message_id, actor = %m.actor_name, queue = %m.queue_name, retries = m.options.retries(), "dead-lettering message: {reason}")
        }
        None => error!(?token, "dead-lettering message: {reason}"),
    }
    if let Some(m) = message {
        for mw in &shared.hooks.nack {
            if let Err(e) = mw.before_nack(&shared.app, m, reason).await {
                warn!(middleware = mw.name(), error = %dq_core::ErrorChain(&e), message_id = %m.message_id, actor = %m.actor_name, queue = %m.queue_name, "before_nack hook failed");
            }
        }
    }
    let mut attempt = 0;
    loop {
        match acker.nack(token, reason).await {
            Ok(()) => {
                shared.health.ok();
                break;
            }
            Err(e) if e.is_transient() && attempt < 20 => {
                attempt += 1;
                shared.health.failed("dead-lettering", &e);
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) if recoverable(&e) => {
                // The broker delivers it again, and it is dead-lettered then.
                shared.health.failed("dead-lettering", &e);
                return;
            }
            Err(e) => {
                // Still unacked: the broker redelivers it later, so it is not lost.
                error!(error = %dq_core::ErrorChain(&e), "nack failed; the message stays in the broker");
                return;
            }
        }
    }
    if let Some(m) = message {
        for mw in &shared.hooks.nack_rev {
            if let Err(e) = mw.after_nack(&shared.app, m, reason).await {
                warn!(middleware = mw.name(), error = %dq_core::ErrorChain(&e), message_id = %m.message_id, actor = %m.actor_name, queue = %m.queue_name, "after_nack hook failed");
            }
        }
    }
}

/// Acks `tokens` (of `messages`, in the same order) in one call to the acker.
async fn ack(shared: &Shared, messages: &[Message], tokens: &[Token], acker: &Arc<dyn Acker>) {
    for mw in &shared.hooks.ack {
        for message in messages {
            if let Err(e) = mw.before_ack(&shared.app, message).await {
                warn!(middleware = mw.name(), error = %dq_core::ErrorChain(&e), message_id = %message.message_id, actor = %message.actor_name, queue = %message.queue_name, "before_ack hook failed");
            }
        }
    }
    let first = messages.first();
    let message_id = first.map_or("", |m| m.message_id.as_str());
    let actor = first.map_or("", |m| m.actor_name.as_str());
    let mut attempt = 0;
    loop {
        match acker.ack(tokens).await {
            Ok(()) => {
                shared.health.ok();
                break;
            }
            Err(e) if e.is_transient() && attempt < 20 => {
                attempt += 1;
                shared.health.failed("acking", &e);
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) if recoverable(&e) => {
                // A delivery of a connection that died: the broker delivers it again.
                shared.health.failed("acking", &e);
                return;
            }
            Err(e) => {
                error!(error = %dq_core::ErrorChain(&e), message_id, actor, count = tokens.len(), "ack failed; the message will be redelivered");
                return;
            }
        }
    }
    for mw in &shared.hooks.ack_rev {
        for message in messages {
            if let Err(e) = mw.after_ack(&shared.app, message).await {
                warn!(middleware = mw.name(), error = %dq_core::ErrorChain(&e), message_id = %message.message_id, actor = %message.actor_name, queue = %message.queue_name, "after_ack hook failed");
            }
        }
    }
}

/// Whether a failed settle leaves the message safe in the broker, to be delivered again, for a
/// reason the worker recovers from by itself: the broker is away, or the delivery's channel
/// died with a lost connection (`Closed`).
fn recoverable(e: &BrokerError) -> bool {
    e.is_transient() || e.kind() == BrokerErrorKind::Closed
}
