//! Time limits of sync actors running on the worker's own threads.
//!
//! A sync actor cannot be interrupted, so when its time limit passes the worker settles its
//! message as failed (`TimeLimitExceeded`: retried or dead-lettered by the middleware) while the
//! thread runs on, and the actor sees the interruption through `check()`. The thread that runs
//! a message also runs its hooks, so no task waits beside it with a timer. Instead each thread
//! has a slot here holding the running message's deadline and what settling it takes, and one
//! watcher task sleeps until the earliest deadline of all slots. Whoever takes the slot's
//! contents first, the thread returning or the watcher at the deadline, settles the message.
//!
//! With one time limit for every actor (Dramatiq's default is ten minutes) a new message's
//! deadline is never earlier than the one the watcher sleeps until, so the hot path writes its
//! slot and reads one atomic, and the watcher wakes about once per time limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

/// No deadline (an empty slot), or the watcher is scanning.
const NONE: u64 = u64::MAX;

/// What settling a running message takes (`T`), with its deadline.
struct Running<T> {
    value: T,
    /// Milliseconds since `Deadlines::base`.
    deadline: u64,
}

struct Slot<T> {
    /// The running message's deadline, in milliseconds since `base`, or `NONE`.
    deadline: AtomicU64,
    running: Mutex<Option<Running<T>>>,
}

/// One slot per worker thread, and the watcher's wake-up time. `T` is what settling the
/// running message takes.
pub(crate) struct Deadlines<T> {
    base: Instant,
    slots: Box<[Slot<T>]>,
    /// When the watcher wakes next (milliseconds since `base`); `NONE` while it scans.
    wake_at: AtomicU64,
    changed: Notify,
}

impl<T> Deadlines<T> {
    pub(crate) fn new(threads: usize) -> Deadlines<T> {
        Deadlines {
            base: Instant::now(),
            slots: (0..threads)
                .map(|_| Slot {
                    deadline: AtomicU64::new(NONE),
                    running: Mutex::new(None),
                })
                .collect(),
            wake_at: AtomicU64::new(NONE),
            changed: Notify::new(),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }

    /// Puts a message that is about to run with a deadline in thread `slot`'s slot.
    pub(crate) fn enter(&self, slot: usize, value: T, deadline: std::time::Instant) {
        let deadline = self.ms(Instant::from_std(deadline)).min(NONE - 1);
        let s = &self.slots[slot];
        *s.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running { value, deadline });
        // Paired with the watcher's store of NONE before it scans: either it sees this slot,
        // or this sees it scanning (or sleeping past our deadline) and wakes it.
        s.deadline.store(deadline, Ordering::SeqCst);
        if deadline < self.wake_at.load(Ordering::SeqCst) {
            self.changed.notify_one();
        }
    }

    /// Brings the deadline of the message in thread `slot`'s slot forward to `at` (a stop
    /// request: an abort); a later `at` changes nothing.
    pub(crate) fn shorten(&self, slot: usize, at: std::time::Instant) {
        let at = self.ms(Instant::from_std(at)).min(NONE - 1);
        let s = &self.slots[slot];
        let mut running = s.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = running.as_mut() else {
            return;
        };
        if at >= r.deadline {
            return;
        }
        r.deadline = at;
        s.deadline.store(at, Ordering::SeqCst);
        drop(running);
        if at < self.wake_at.load(Ordering::SeqCst) {
            self.changed.notify_one();
        }
    }

    /// Takes the message back from thread `slot`'s slot once its actor returned: `None` when
    /// the watcher settled it already because its time limit passed.
    pub(crate) fn leave(&self, slot: usize) -> Option<T> {
        let s = &self.slots[slot];
        s.deadline.store(NONE, Ordering::SeqCst);
        s.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|r| r.value)
    }

    /// Takes every message whose deadline has passed, and says when to look again.
    pub(crate) fn expired(&self) -> (Vec<T>, Option<Instant>) {
        self.wake_at.store(NONE, Ordering::SeqCst);
        let now = self.ms(Instant::now());
        let mut due = Vec::new();
        let mut next = NONE;
        for s in self.slots.iter() {
            let d = s.deadline.load(Ordering::SeqCst);
            if d == NONE {
                continue;
            }
            if d > now {
                next = next.min(d);
                continue;
            }
            let mut running = s.running.lock().unwrap_or_else(|p| p.into_inner());
            // The thread may have moved on to another message since we read the deadline.
            match running.as_ref() {
                Some(r) if r.deadline <= now => {
                    s.deadline.store(NONE, Ordering::SeqCst);
                    due.extend(running.take().map(|r| r.value));
                }
                Some(r) => next = next.min(r.deadline),
                None => {}
            }
        }
        self.wake_at.store(next, Ordering::SeqCst);
        let at = (next != NONE).then(|| self.base + std::time::Duration::from_millis(next));
        (due, at)
    }

    /// Resolves when a message with an earlier deadline than the watcher's next wake-up entered.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn after(ms: u64) -> std::time::Instant {
        std::time::Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn a_message_that_returns_in_time_is_its_threads_to_settle() {
        let d = Deadlines::new(2);
        d.enter(0, "quick", after(60_000));
        let (due, next) = d.expired();
        assert!(due.is_empty());
        assert!(next.is_some(), "the watcher sleeps until the deadline");
        assert_eq!(d.leave(0), Some("quick"));
        // Nothing left to watch.
        assert_eq!(d.expired(), (Vec::new(), None));
    }

    #[test]
    fn the_watcher_takes_an_overrunning_message_and_the_thread_gets_none() {
        let d = Deadlines::new(2);
        d.enter(1, "slow", after(0));
        d.enter(0, "fine", after(60_000));
        std::thread::sleep(Duration::from_millis(5));
        let (due, next) = d.expired();
        assert_eq!(due, ["slow"]);
        assert!(next.is_some(), "slot 0 still has a deadline ahead");
        assert_eq!(d.leave(1), None, "settled by the watcher already");
        assert_eq!(d.leave(0), Some("fine"));
    }

    #[test]
    fn the_next_wake_up_is_the_earliest_deadline() {
        let d = Deadlines::new(3);
        let (early, late) = (after(10_000), after(50_000));
        d.enter(0, "late", late);
        d.enter(2, "early", early);
        let (_, next) = d.expired();
        let next = next.expect("deadlines ahead").into_std();
        // Milliseconds since `base`, so within a millisecond of the deadline.
        assert!(next <= early && early - next < Duration::from_millis(2));
    }

    #[test]
    fn a_slot_reused_by_a_later_message_keeps_the_later_deadline() {
        let d = Deadlines::new(1);
        d.enter(0, "first", after(0));
        assert_eq!(d.leave(0), Some("first"));
        d.enter(0, "second", after(60_000));
        std::thread::sleep(Duration::from_millis(5));
        let (due, next) = d.expired();
        assert!(
            due.is_empty(),
            "the first left in time; the second is not due"
        );
        assert!(next.is_some());
    }

    #[tokio::test]
    async fn a_shortened_deadline_wakes_the_watcher_and_expires() {
        let d = Deadlines::new(2);
        d.enter(0, "aborted", after(60_000));
        let _ = d.expired();
        d.shorten(0, after(0));
        tokio::time::timeout(Duration::from_secs(5), d.changed())
            .await
            .expect("woken");
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(d.expired().0, ["aborted"]);
        // A later deadline, or an empty slot, changes nothing.
        d.enter(1, "kept", after(0));
        d.shorten(1, after(60_000));
        d.shorten(0, after(0));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(d.expired().0, ["kept"]);
    }

    #[tokio::test]
    async fn an_earlier_deadline_wakes_the_watcher() {
        let d = std::sync::Arc::new(Deadlines::new(2));
        d.enter(0, "late", after(60_000));
        // The first deadline is earlier than "never": the watcher is told even if not yet asleep.
        tokio::time::timeout(Duration::from_secs(5), d.changed())
            .await
            .expect("a stored wake-up");
        let (_, next) = d.expired();
        assert!(next.is_some());
        let watcher = {
            let d = d.clone();
            tokio::spawn(async move { d.changed().await })
        };
        tokio::task::yield_now().await;
        // Later than what the watcher sleeps until: no wake-up needed.
        d.enter(1, "later", after(120_000));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!watcher.is_finished());
        d.leave(1);
        d.enter(1, "sooner", after(1_000));
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("the watcher is told")
            .unwrap();
    }
}
