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
/// waits (the condvar releases it).
///
/// Wake-ups are chained: a new job wakes an idle thread only when no other thread is already on
/// its way, and a woken thread that leaves jobs behind wakes the next one. A burst of quick jobs
/// so wakes as many threads as the jobs need, not one per job: the first thread often runs
/// several of them before a second one would have woken, and each wake-up is a futex call and a
/// context switch, more than a no-op actor costs. Slow jobs still each get a thread, one
/// wake-up (tens of microseconds) after the other.
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
    /// Threads notified and not yet back from their wait.
    waking: usize,
}

impl JobQueue {
    /// Whether to notify one more thread: jobs wait, a thread is idle, and none is on its way.
    fn wake_one(&mut self) -> bool {
        let wake = !self.jobs.is_empty() && self.idle > 0 && self.waking == 0;
        if wake {
            self.waking += 1;
        }
        wake
    }
}

impl Jobs {
    /// The next job, or `None` once closed and drained.
    fn next(&self) -> Option<Job> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(job) = q.jobs.pop_front() {
                let wake = q.wake_one();
                drop(q);
                if wake {
                    self.ready.notify_one();
                }
                return Some(job);
            }
            if q.closed {
                return None;
            }
            q.idle += 1;
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            q.idle -= 1;
            // A spurious wake-up may take the count of the notified thread, which then only
            // lets a later job wake one thread more: never fewer.
            q.waking = q.waking.saturating_sub(1);
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
        let wake = q.wake_one();
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
            tracing::error!(error = %dq_core::ErrorChain(&e), "cannot start a worker thread");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Submits eight jobs that each wait (up to 10 s) for all eight to be running at once, and
    /// returns how many each saw running.
    async fn burst_of_eight(threads: &SyncThreads) -> Vec<usize> {
        let running = Arc::new((Mutex::new(0usize), Condvar::new()));
        let (tx, rx) = mpsc::channel();
        for _ in 0..8 {
            let running = running.clone();
            let tx = tx.clone();
            threads.submit(move |_| {
                let (count, changed) = &*running;
                let mut n = count.lock().unwrap();
                *n += 1;
                changed.notify_all();
                let (n, _) = changed
                    .wait_timeout_while(n, Duration::from_secs(10), |n| *n < 8)
                    .unwrap();
                tx.send(*n).unwrap();
            });
        }
        tokio::task::spawn_blocking(move || {
            (0..8)
                .map(|_| rx.recv_timeout(Duration::from_secs(20)).unwrap())
                .collect()
        })
        .await
        .unwrap()
    }

    /// Chained wake-ups still give every waiting job a thread of its own: once the eight
    /// threads are started and idle, eight jobs that each wait for all eight to be running at
    /// once all see it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_job_in_a_burst_gets_a_thread() {
        let threads = SyncThreads::new(8);
        // The first burst starts the threads (a new thread takes a job without a wake-up).
        assert_eq!(burst_of_eight(&threads).await, vec![8; 8]);
        let idle = || threads.jobs.queue.lock().unwrap().idle;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while idle() < 8 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(idle(), 8, "all threads wait for work");
        // Now every job needs a wake-up.
        assert_eq!(burst_of_eight(&threads).await, vec![8; 8]);
    }

    /// Bursts of quick jobs, submitted while threads come and go idle, all run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bursts_of_quick_jobs_all_run() {
        let threads = SyncThreads::new(4);
        let done = Arc::new(AtomicUsize::new(0));
        for burst in 0..200 {
            for _ in 0..(burst % 7 + 1) {
                let done = done.clone();
                while threads.in_flight.load(Ordering::Acquire) >= 4 {
                    tokio::task::yield_now().await;
                }
                threads.submit(move |_| {
                    done.fetch_add(1, Ordering::AcqRel);
                });
            }
            if burst % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let want: usize = (0..200).map(|b| b % 7 + 1).sum();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while done.load(Ordering::Acquire) < want && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(done.load(Ordering::Acquire), want);
    }
}
