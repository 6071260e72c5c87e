//! Delayed messages: deliveries from a delay queue held in memory, unacked, until their `eta`,
//! then enqueued on their real queue and acked, as Dramatiq's workers do.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use dq_core::{base_queue_name, now_ms, Message};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::settlement::{Ticket, Verdict};
use crate::shared::Shared;

/// A delivery held in memory until its `eta`.
pub(crate) struct Held {
    eta_ms: i64,
    message: Message,
    pub(crate) ticket: Ticket,
}

impl Held {
    pub(crate) fn new(eta_ms: i64, message: Message, ticket: Ticket) -> Held {
        Held {
            eta_ms,
            message,
            ticket,
        }
    }
}

/// Held messages by `eta`, earliest first, in arrival order within one `eta`.
#[derive(Default)]
struct Schedule {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

struct Entry {
    eta_ms: i64,
    seq: u64,
    held: Held,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Entry) -> bool {
        self.eta_ms == o.eta_ms && self.seq == o.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    // Earliest eta on top of the max-heap.
    fn cmp(&self, o: &Entry) -> std::cmp::Ordering {
        o.eta_ms
            .cmp(&self.eta_ms)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

impl Schedule {
    fn push(&mut self, held: Held) {
        self.seq += 1;
        self.heap.push(Entry {
            eta_ms: held.eta_ms,
            seq: self.seq,
            held,
        });
    }

    fn next_eta(&self) -> Option<i64> {
        self.heap.peek().map(|e| e.eta_ms)
    }

    fn pop_due(&mut self, now: i64) -> Option<Held> {
        if self.next_eta()? <= now {
            self.heap.pop().map(|e| e.held)
        } else {
            None
        }
    }
}

/// Holds delayed messages until their eta, then moves each to its queue and acks the original.
/// Returns what it still held when told to stop, for the worker to requeue.
pub(crate) async fn delay_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Held>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Held> {
    let mut schedule = Schedule::default();
    loop {
        let next = schedule.next_eta();
        let sleep = async {
            match next {
                Some(eta) => {
                    let wait = eta.saturating_sub(now_ms()).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            h = rx.recv() => match h {
                Some(h) => schedule.push(h),
                None => break,
            },
            _ = sleep => {
                let now = now_ms();
                while let Some(h) = schedule.pop_due(now) {
                    if let Err(h) = move_to_queue(&shared, h).await {
                        schedule.push(h);
                        break;
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    rx.close();
    while let Ok(h) = rx.try_recv() {
        schedule.push(h);
    }
    schedule.heap.into_iter().map(|e| e.held).collect()
}

/// Enqueues a copy of a due message on its canonical queue, without `eta`, then has the held
/// delivery acked. The ack comes second, so a crash in between duplicates rather than loses it.
async fn move_to_queue(shared: &Shared, mut h: Held) -> Result<(), Held> {
    if h.ticket.acker.is_stale(&h.ticket.token) {
        // Its channel died: the broker has delivered (or will deliver) it again, eta and all.
        debug!(message_id = %h.message.message_id, actor = %h.message.actor_name, "dropping a held delayed message the broker redelivers");
        return Ok(());
    }
    let mut m = h.message.clone();
    m.queue_name = base_queue_name(&m.queue_name).to_owned();
    m.options.remove_eta();
    match shared.app.enqueue(m, None).await {
        Ok(_) => {
            shared
                .settler
                .settle(Some(h.message), h.ticket, Verdict::Ack);
            Ok(())
        }
        Err(dq_core::Error::Broker(e)) if e.is_transient() => {
            shared
                .health
                .failed("moving a delayed message to its queue", &e);
            h.eta_ms = now_ms() + 1000;
            Err(h)
        }
        Err(e) => {
            warn!(error = %dq_core::ErrorChain(&e), message_id = %h.message.message_id, actor = %h.message.actor_name, queue = %h.message.queue_name, "could not move delayed message to its queue; retrying in 1s");
            h.eta_ms = now_ms() + 1000;
            Err(h)
        }
    }
}
