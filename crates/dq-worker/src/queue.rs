//! The work queue shared by every consumer of a worker: ordered by actor priority (lower first),
//! then by arrival, like Dramatiq's `PriorityQueue` of `(priority, monotonic_ns)`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use dq_core::{Acker, Actor, Message, Token};
use tokio::sync::Notify;

/// One delivery waiting for a free slot.
pub(crate) struct Item {
    pub(crate) priority: i32,
    pub(crate) seq: u64,
    pub(crate) message: Message,
    pub(crate) actor: Arc<Actor>,
    pub(crate) token: Token,
    pub(crate) acker: Arc<dyn Acker>,
}

impl PartialEq for Item {
    fn eq(&self, other: &Item) -> bool {
        self.priority == other.priority && self.seq == other.seq
    }
}

impl Eq for Item {}

impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Item) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Item {
    // BinaryHeap pops the greatest item; the greatest must be the lowest (priority, seq).
    fn cmp(&self, other: &Item) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A priority queue with one async taker (the dispatcher), and worker threads taking the next
/// message without waiting when they finish one.
#[derive(Default)]
pub(crate) struct WorkQueue {
    heap: Mutex<BinaryHeap<Item>>,
    ready: Notify,
}

impl WorkQueue {
    pub(crate) fn push(&self, item: Item) {
        self.heap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(item);
        // notify_one stores a permit when the dispatcher is not waiting yet, so no wake-up is lost.
        self.ready.notify_one();
    }

    pub(crate) async fn pop(&self) -> Item {
        loop {
            let notified = self.ready.notified();
            if let Some(item) = self.heap.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                return item;
            }
            notified.await;
        }
    }

    /// The best queued item, if any, without waiting.
    pub(crate) fn try_pop(&self) -> Option<Item> {
        self.heap.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    pub(crate) fn drain(&self) -> Vec<Item> {
        std::mem::take(&mut *self.heap.lock().unwrap_or_else(|p| p.into_inner())).into_vec()
    }
}
