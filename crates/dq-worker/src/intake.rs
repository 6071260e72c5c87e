//! Intake: consumers fetch deliveries, and each is sorted as it arrives.
//!
//! A delivery that cannot run (oversized, undecodable, for an actor this worker does not have,
//! with arguments that do not fit the actor's parameters) is dead-lettered at once with its
//! reason: retrying cannot fix it. One with an `eta` goes to the delay holder. The rest has its
//! arguments decoded into the actor's call here, once, and goes into the work queue; the kind of
//! that call ([`Invocation`]: a blocking fn or a future) is what decides later where it runs.

use std::sync::Arc;
use std::time::Duration;

use dq_core::{Acker, Actor, Consumer, Delivery, Invocation, Message};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

use crate::delay::Held;
use crate::settlement::{Ticket, Verdict};
use crate::shared::Shared;

/// A message waiting in the work queue for a free slot.
pub(crate) struct Item {
    pub(crate) message: Message,
    pub(crate) actor: Arc<Actor>,
    /// The actor's call with the message's arguments decoded.
    pub(crate) call: Invocation,
    pub(crate) ticket: Ticket,
}

/// Fetches until told to stop. A fetch is never cancelled half-way, so nothing the broker handed
/// out is forgotten; shutdown waits at most one `worker_timeout`.
pub(crate) async fn consume_loop(
    shared: Arc<Shared>,
    mut consumer: Box<dyn Consumer>,
    stop: watch::Receiver<bool>,
    timeout: Duration,
) -> Box<dyn Consumer> {
    let acker = consumer.acker();
    let mut failures: u32 = 0;
    while !*stop.borrow() {
        match consumer.fetch(timeout).await {
            Ok(deliveries) => {
                failures = 0;
                shared.health.ok();
                for d in deliveries {
                    accept(&shared, d, &acker, consumer.queue()).await;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = backoff(failures);
                if e.is_transient() {
                    shared
                        .health
                        .failed(&format!("fetching from {}", consumer.queue()), &e);
                } else {
                    error!(queue = consumer.queue(), error = %dq_core::ErrorChain(&e), retry_in_ms = pause.as_millis() as u64, "consumer failed; restarting");
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
    consumer
}

/// Pauses between retries of a broker call: 100 ms doubling to 5 s.
pub(crate) fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(6).saturating_sub(1)).min(5000))
}

/// Sorts a fresh delivery: dead-letter what cannot run, hold what is delayed, queue the rest.
async fn accept(shared: &Shared, d: Delivery, acker: &Arc<dyn Acker>, queue: &str) {
    // Counted from here, so `join` also waits for a delivery that is being dead-lettered.
    let counted = |token| Ticket::counted(token, acker.clone(), &shared.counts);
    let dead_letter = |message, token, reason| {
        shared
            .settler
            .settle(message, counted(token), Verdict::DeadLetter(reason))
    };
    let limit = shared.app.max_message_size();
    if d.body.len() > limit {
        let reason = format!(
            "message is {} bytes, over the limit of {} bytes",
            d.body.len(),
            limit
        );
        return dead_letter(None, d.token, reason);
    }
    let message = match Message::decode(&d.body) {
        Ok(m) => m,
        Err(e) => {
            return dead_letter(
                None,
                d.token,
                format!("undecodable message: {}", dq_core::ErrorChain(&e)),
            )
        }
    };
    if let Some(eta) = message.options.eta() {
        for m in &shared.hooks.delay {
            if let Err(e) = m.before_delay_message(&shared.app, &message).await {
                warn!(middleware = m.name(), error = %dq_core::ErrorChain(&e), "before_delay_message hook failed");
            }
        }
        let held = Held::new(eta, message, Ticket::uncounted(d.token, acker.clone()));
        if let Err(mpsc::error::SendError(h)) = shared.held_tx.send(held) {
            // The delay holder is gone (shutting down): give it back.
            crate::settlement::requeue_all([h.ticket]).await;
        }
        return;
    }
    let Some(actor) = shared.app.actor(&message.actor_name).cloned() else {
        let reason = format!(
            "actor {:?} is not registered in this worker (queue {queue})",
            message.actor_name
        );
        return dead_letter(Some(message), d.token, reason);
    };
    let states = shared.states.get_or_init(|| shared.app.states().clone());
    let call = match (actor.handler)(&message, states) {
        Ok(call) => call,
        Err(e) => {
            return dead_letter(
                Some(message),
                d.token,
                format!("invalid arguments: {}", dq_core::ErrorChain(&e)),
            )
        }
    };
    shared.work.push(
        actor.priority(),
        Item {
            message,
            actor,
            call,
            ticket: counted(d.token),
        },
    );
}
