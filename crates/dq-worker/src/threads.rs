//! The worker threads sync actors run on: long-lived OS threads fed by one channel, as
//! Dramatiq's worker threads are, instead of Tokio's blocking pool (whose shared lock and
//! thread churn cost more per message than a no-op actor does).
//!
//! Threads are started on demand and kept: there are never more than jobs in flight ever
//! needed at once, and never more than the worker's `threads` (the dispatcher's permits bound
//! the jobs in flight). Each thread enters the worker's Tokio runtime, so an actor may use
//! `tokio::runtime::Handle::current()` as it could on a blocking-pool thread. The threads end
//! when the worker is dropped and their current job (if any) returns.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// A job gets the number of the thread running it (below the pool's `max`), so per-thread
/// state such as a deadline slot needs no lock against other threads.
type Job = Box<dyn FnOnce(usize) + Send + 'static>;

/// The jobs waiting for a thread. The lock is held only to push or pop, never while a thread
/// waits (the condvar releases it), so a job wakes exactly one idle thread and nothing else,
/// and none at all (no futex call) when no thread is waiting.
#[derive(Default)]
struct Jobs {
    queue: Mutex<JobQueue>,
    ready: Condvar,
}

#[derive(Default)]
struct JobQueue {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Threads waiting on the condvar.
    idle: usize,
}

impl Jobs {
    /// The next job, or `None` once closed and drained.
    fn next(&self) -> Option<Job> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = q.jobs.pop_front() {
                return Some(job);
            }
            if q.closed {
                return None;
            }
            q.idle += 1;
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            q.idle -= 1;
        }
    }
}

pub(crate) struct SyncThreads {
    jobs: Arc<Jobs>,
    /// Jobs submitted and not yet finished.
    in_flight: Arc<AtomicUsize>,
    spawned: AtomicUsize,
    max: usize,
}

impl SyncThreads {
    pub(crate) fn new(max: usize) -> SyncThreads {
        SyncThreads {
            jobs: Arc::default(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            spawned: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    /// Runs `job` on a worker thread. Must be called from within the worker's Tokio runtime,
    /// with at most `max` jobs in flight.
    pub(crate) fn submit(&self, job: impl FnOnce(usize) + Send + 'static) {
        let wanted = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        // Every job in flight has a thread of its own: start one if none is free.
        let mut spawned = self.spawned.load(Ordering::Acquire);
        while spawned < wanted.min(self.max) {
            match self.spawned.compare_exchange(
                spawned,
                spawned + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.spawn(spawned);
                    spawned += 1;
                }
                Err(now) => spawned = now,
            }
        }
        let mut q = self.jobs.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.jobs.push_back(Box::new(job));
        let wake = q.idle > 0;
        drop(q);
        if wake {
            self.jobs.ready.notify_one();
        }
    }

    fn spawn(&self, n: usize) {
        let jobs = self.jobs.clone();
        let in_flight = self.in_flight.clone();
        let runtime = tokio::runtime::Handle::current();
        let spawned = std::thread::Builder::new()
            .name(format!("dq-worker-{n}"))
            .spawn(move || {
                let _entered = runtime.enter();
                while let Some(job) = jobs.next() {
                    job(n);
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            });
        if let Err(e) = spawned {
            // Out of threads: the job waits for a running one to be free rather than fail.
            tracing::error!(error = %e, "cannot start a worker thread");
            self.spawned.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for SyncThreads {
    /// Idle threads end now; busy ones after their current job (and any still queued).
    fn drop(&mut self) {
        self.jobs
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.jobs.ready.notify_all();
    }
}
