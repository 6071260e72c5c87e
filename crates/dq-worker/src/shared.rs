//! The state a worker's tasks and threads share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use dq_core::{ActorContext, App, Hooks, Job, Middleware, States};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::deadline::Deadlines;
use crate::delay::Held;
use crate::execution::Watched;
use crate::health::BrokerHealth;
use crate::inflight::Counts;
use crate::intake::Item;
use crate::queue::WorkQueue;
use crate::settlement::Settler;
use crate::threads::SyncThreads;

/// Middleware lists per hook, computed once so the hot path only calls hooks that exist.
pub(crate) struct HookLists {
    pub(crate) before_process: Vec<Arc<dyn Middleware>>,
    pub(crate) around_process: Vec<Arc<dyn Middleware>>,
    pub(crate) after_process: Vec<Arc<dyn Middleware>>,
    pub(crate) after_skip: Vec<Arc<dyn Middleware>>,
    pub(crate) ack: Vec<Arc<dyn Middleware>>,
    pub(crate) ack_rev: Vec<Arc<dyn Middleware>>,
    pub(crate) nack: Vec<Arc<dyn Middleware>>,
    pub(crate) nack_rev: Vec<Arc<dyn Middleware>>,
    pub(crate) delay: Vec<Arc<dyn Middleware>>,
}

impl HookLists {
    fn new(app: &App) -> HookLists {
        let rev = |h| {
            let mut v = app.middleware_with(h);
            v.reverse();
            v
        };
        HookLists {
            before_process: app.middleware_with(Hooks::BEFORE_PROCESS),
            around_process: app.middleware_with(Hooks::AROUND_PROCESS),
            after_process: rev(Hooks::AFTER_PROCESS),
            after_skip: rev(Hooks::AFTER_SKIP),
            ack: app.middleware_with(Hooks::ACK),
            ack_rev: rev(Hooks::ACK),
            nack: app.middleware_with(Hooks::NACK),
            nack_rev: rev(Hooks::NACK),
            delay: app.middleware_with(Hooks::BEFORE_DELAY),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) app: App,
    /// The app's states, with those built at boot; set once by `Worker::start`.
    pub(crate) states: OnceLock<States>,
    pub(crate) hooks: HookLists,
    /// Messages waiting for a slot, best first.
    pub(crate) work: WorkQueue<Item>,
    /// The `threads` slots: one per message running, sync or async.
    pub(crate) permits: Arc<Semaphore>,
    /// What `join` and `stop` wait on, kept by the messages' guards.
    pub(crate) counts: Arc<Counts>,
    /// Where the intake sends messages with an `eta`.
    pub(crate) held_tx: mpsc::UnboundedSender<Held>,
    /// Flipped to true when the worker shuts down, for actors with `notify_shutdown`.
    pub(crate) shutdown: watch::Sender<bool>,
    notify_jobs: Mutex<HashMap<u64, Arc<ActorContext>>>,
    next_key: AtomicU64,
    /// Where sync actors run.
    pub(crate) sync_threads: SyncThreads,
    /// Time limits of sync actors running on `sync_threads`, one slot per thread.
    pub(crate) deadlines: Arc<Deadlines<Watched>>,
    /// False once the worker stops: threads take no more queued messages.
    pub(crate) dispatching: AtomicBool,
    pub(crate) settler: Settler,
    /// Whether the broker answers: an outage is logged once, when it starts and ends.
    pub(crate) health: BrokerHealth,
}

impl Shared {
    pub(crate) fn new(app: App, threads: usize, held_tx: mpsc::UnboundedSender<Held>) -> Shared {
        Shared {
            hooks: HookLists::new(&app),
            app,
            states: OnceLock::new(),
            work: WorkQueue::default(),
            permits: Arc::new(Semaphore::new(threads)),
            counts: Arc::default(),
            held_tx,
            shutdown: watch::Sender::new(false),
            notify_jobs: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(0),
            sync_threads: SyncThreads::new(threads),
            deadlines: Arc::new(Deadlines::new(threads)),
            dispatching: AtomicBool::new(true),
            settler: Settler::default(),
            health: BrokerHealth::default(),
        }
    }

    /// The context a job's actor runs with, registered for shutdown notifications while the
    /// returned guard lives when the actor asked for them.
    pub(crate) fn actor_context(&self, job: &Job) -> ActorRun<'_> {
        let exposed = job.expose_message.then(|| Arc::new(job.message.clone()));
        let ctx = Arc::new(
            ActorContext::new(exposed, job.deadline)
                .with_app(self.app.clone())
                .with_interrupt(job.interrupt.clone()),
        );
        let key = job.notify_shutdown.then(|| {
            let key = self.next_key.fetch_add(1, Ordering::Relaxed);
            self.notify_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, ctx.clone());
            key
        });
        ActorRun {
            ctx,
            key,
            shared: self,
        }
    }

    /// Tells every running actor that asked for `notify_shutdown` (sync ones see it in `check()`).
    pub(crate) fn interrupt_for_shutdown(&self) {
        self.shutdown.send_replace(true);
        for ctx in self
            .notify_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            ctx.interrupt_shutdown();
        }
    }
}

/// A running actor's context; unregistered from shutdown notifications when dropped.
pub(crate) struct ActorRun<'a> {
    pub(crate) ctx: Arc<ActorContext>,
    key: Option<u64>,
    shared: &'a Shared,
}

impl Drop for ActorRun<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.shared
                .notify_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }
}
