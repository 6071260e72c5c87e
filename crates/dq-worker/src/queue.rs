//! The work queue shared by every consumer of a worker: ordered by actor priority (lower first),
//! then by arrival, like Dramatiq's `PriorityQueue` of `(priority, monotonic_ns)`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Mutex;

use tokio::sync::Notify;

/// A queued value with its place in line.
struct Entry<T> {
    priority: i32,
    seq: u64,
    value: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Entry<T>) -> bool {
        self.priority == other.priority && self.seq == other.seq
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Entry<T>) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    // BinaryHeap pops the greatest entry; the greatest must be the lowest (priority, seq).
    fn cmp(&self, other: &Entry<T>) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct Heap<T> {
    entries: BinaryHeap<Entry<T>>,
    /// Arrivals so far: the tie-breaker within a priority.
    seq: u64,
}

/// A priority queue with one async taker (the dispatcher), and worker threads taking the next
/// message without waiting when they finish one.
pub(crate) struct WorkQueue<T> {
    heap: Mutex<Heap<T>>,
    ready: Notify,
}

impl<T> Default for WorkQueue<T> {
    fn default() -> WorkQueue<T> {
        WorkQueue {
            heap: Mutex::new(Heap {
                entries: BinaryHeap::new(),
                seq: 0,
            }),
            ready: Notify::new(),
        }
    }
}

impl<T> WorkQueue<T> {
    /// Queues `value` behind everything of the same or a lower `priority` number.
    pub(crate) fn push(&self, priority: i32, value: T) {
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        let seq = heap.seq;
        heap.seq += 1;
        heap.entries.push(Entry {
            priority,
            seq,
            value,
        });
        drop(heap);
        // notify_one stores a permit when the dispatcher is not waiting yet, so no wake-up is lost.
        self.ready.notify_one();
    }

    /// The best queued value, waiting for one if the queue is empty.
    pub(crate) async fn pop(&self) -> T {
        loop {
            let notified = self.ready.notified();
            if let Some(value) = self.try_pop() {
                return value;
            }
            notified.await;
        }
    }

    /// The best queued value, if any, without waiting.
    pub(crate) fn try_pop(&self) -> Option<T> {
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        heap.entries.pop().map(|e| e.value)
    }

    /// Everything queued, in no particular order, leaving the queue empty.
    pub(crate) fn drain(&self) -> Vec<T> {
        let mut heap = self.heap.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut heap.entries)
            .into_iter()
            .map(|e| e.value)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn all(q: &WorkQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.try_pop()).collect()
    }

    #[test]
    fn lower_priority_numbers_first_then_arrival() {
        let q = WorkQueue::default();
        q.push(10, "low-1");
        q.push(0, "high-1");
        q.push(10, "low-2");
        q.push(-5, "urgent");
        q.push(0, "high-2");
        assert_eq!(all(&q), ["urgent", "high-1", "high-2", "low-1", "low-2"]);
        assert_eq!(q.try_pop(), None);
    }

    #[test]
    fn arrival_order_holds_across_many_equal_priorities() {
        let q = WorkQueue::default();
        for i in 0..1000u32 {
            q.push(i32::from(i % 3 == 0), i);
        }
        let popped: Vec<u32> = std::iter::from_fn(|| q.try_pop()).collect();
        let mut want: Vec<u32> = (0..1000).filter(|i| i % 3 != 0).collect();
        want.extend((0..1000).filter(|i| i % 3 == 0));
        assert_eq!(popped, want);
    }

    #[test]
    fn drain_empties_the_queue() {
        let q = WorkQueue::default();
        q.push(1, "a");
        q.push(0, "b");
        let mut drained = q.drain();
        drained.sort();
        assert_eq!(drained, ["a", "b"]);
        assert_eq!(q.try_pop(), None);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push_and_takes_the_best() {
        let q = Arc::new(WorkQueue::default());
        let taker = {
            let q = q.clone();
            tokio::spawn(async move { q.pop().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!taker.is_finished(), "nothing queued yet");
        q.push(3, "only");
        let got = tokio::time::timeout(Duration::from_secs(5), taker)
            .await
            .expect("woken by the push")
            .unwrap();
        assert_eq!(got, "only");
    }

    #[tokio::test]
    async fn a_push_before_the_taker_waits_is_not_lost() {
        let q = WorkQueue::default();
        q.push(0, "early");
        // The push stored a wake-up; taking it must not wait for another.
        assert_eq!(q.try_pop(), Some("early"));
        q.push(0, "next");
        let got = tokio::time::timeout(Duration::from_secs(5), q.pop()).await;
        assert_eq!(got, Ok("next"));
    }
}
