//! The count of messages a worker holds, which [`Worker::join`](crate::Worker::join) and
//! [`Worker::stop`](crate::Worker::stop) wait on, kept by guards instead of by hand.
//!
//! A message gets an [`InFlight`] guard as the worker takes it in; the guard travels with the
//! message through the work queue, execution and settlement, and dropping it, wherever that
//! happens, counts the message done. A path that forgets to count would leave `join` and `stop`
//! waiting forever; with the guard there is nothing to forget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// How many messages are queued in the worker or running, and how many are running.
#[derive(Default)]
pub(crate) struct Counts {
    /// Queued in the work queue, running, or being settled.
    pending: AtomicUsize,
    /// Taken out of the work queue (started) and not yet settled.
    running: AtomicUsize,
    changed: Notify,
}

impl Counts {
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Waits until `done` holds for the counts, checking again whenever a guard drops.
    pub(crate) async fn wait_until(&self, done: impl Fn(&Counts) -> bool) {
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return;
            }
            changed.await;
        }
    }
}

/// One message the worker holds: counted pending from creation, running from
/// [`start`](InFlight::start), and done when dropped.
pub(crate) struct InFlight {
    counts: Arc<Counts>,
    running: bool,
}

impl InFlight {
    /// Counts a message the worker just took in.
    pub(crate) fn new(counts: &Arc<Counts>) -> InFlight {
        counts.pending.fetch_add(1, Ordering::AcqRel);
        InFlight {
            counts: counts.clone(),
            running: false,
        }
    }

    /// Counts the message as running: taken out of the work queue to be executed.
    pub(crate) fn start(&mut self) {
        if !self.running {
            self.running = true;
            self.counts.running.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.running {
            self.counts.running.fetch_sub(1, Ordering::AcqRel);
        }
        self.counts.pending.fetch_sub(1, Ordering::AcqRel);
        self.counts.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dropping_a_guard_counts_it_done_wherever_it_is() {
        let counts = Arc::new(Counts::default());
        let queued = InFlight::new(&counts);
        let mut started = InFlight::new(&counts);
        started.start();
        started.start();
        assert_eq!((counts.pending(), counts.running()), (2, 1));
        drop(started);
        assert_eq!((counts.pending(), counts.running()), (1, 0));
        drop(queued);
        assert_eq!((counts.pending(), counts.running()), (0, 0));
    }

    #[tokio::test]
    async fn waiters_wake_when_the_last_guard_drops() {
        let counts = Arc::new(Counts::default());
        let mut guard = InFlight::new(&counts);
        guard.start();
        let waiter = {
            let counts = counts.clone();
            tokio::spawn(async move { counts.wait_until(|c| c.pending() == 0).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        // Dropped on another thread, as a worker thread drops the guard of what it settles.
        std::thread::spawn(move || drop(guard)).join().unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    }
}
