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
use std::sync::{Arc, Mutex};

use dq_core::{Acker, ActorContext, Job, Token};
use tokio::sync::Notify;
use tokio::time::Instant;

/// No deadline (an empty slot), or the watcher is scanning.
const NONE: u64 = u64::MAX;

/// What settling a running message takes.
pub(crate) struct Running {
    pub(crate) job: Job,
    pub(crate) token: Token,
    pub(crate) acker: Arc<dyn Acker>,
    pub(crate) ctx: Arc<ActorContext>,
    /// Milliseconds since `Deadlines::base`.
    deadline: u64,
}

struct Slot {
    /// The running message's deadline, in milliseconds since `base`, or `NONE`.
    deadline: AtomicU64,
    running: Mutex<Option<Running>>,
}

/// One slot per worker thread, and the watcher's wake-up time.
pub(crate) struct Deadlines {
    base: Instant,
    slots: Box<[Slot]>,
    /// When the watcher wakes next (milliseconds since `base`); `NONE` while it scans.
    wake_at: AtomicU64,
    changed: Notify,
}

impl Deadlines {
    pub(crate) fn new(threads: usize) -> Deadlines {
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
    pub(crate) fn enter(
        &self,
        slot: usize,
        job: Job,
        token: Token,
        acker: Arc<dyn Acker>,
        ctx: Arc<ActorContext>,
        deadline: std::time::Instant,
    ) {
        let deadline = self.ms(Instant::from_std(deadline)).min(NONE - 1);
        let s = &self.slots[slot];
        *s.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running {
            job,
            token,
            acker,
            ctx,
            deadline,
        });
        // Paired with the watcher's store of NONE before it scans: either it sees this slot,
        // or this sees it scanning (or sleeping past our deadline) and wakes it.
        s.deadline.store(deadline, Ordering::SeqCst);
        if deadline < self.wake_at.load(Ordering::SeqCst) {
            self.changed.notify_one();
        }
    }

    /// Takes the message back from thread `slot`'s slot once its actor returned: `None` when
    /// the watcher settled it already because its time limit passed.
    pub(crate) fn leave(&self, slot: usize) -> Option<Running> {
        let s = &self.slots[slot];
        s.deadline.store(NONE, Ordering::SeqCst);
        s.running.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Takes every message whose deadline has passed, and says when to look again.
    pub(crate) fn expired(&self) -> (Vec<Running>, Option<Instant>) {
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
                    due.extend(running.take());
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
