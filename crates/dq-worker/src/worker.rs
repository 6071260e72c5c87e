//! The worker: consumers feed one priority work queue; a dispatcher hands each message to a
//! worker thread (sync actors) or a task (async actors) when one of `threads` slots is free.

use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dq_core::{
    now_ms, q_name, Acker, ActorContext, ActorError, ActorResult, App, Consumer, Control, Delivery,
    Hooks, Invocation, Job, Message, Middleware, Outcome, Token,
};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::deadline::Deadlines;
use crate::error::WorkerError;
use crate::options::WorkerOptions;
use crate::queue::{Item, WorkQueue};
use crate::threads::SyncThreads;

/// Middleware lists per hook, computed once so the hot path only calls hooks that exist.
struct HookLists {
    before_process: Vec<Arc<dyn Middleware>>,
    around_process: Vec<Arc<dyn Middleware>>,
    after_process: Vec<Arc<dyn Middleware>>,
    after_skip: Vec<Arc<dyn Middleware>>,
    ack: Vec<Arc<dyn Middleware>>,
    ack_rev: Vec<Arc<dyn Middleware>>,
    nack: Vec<Arc<dyn Middleware>>,
    nack_rev: Vec<Arc<dyn Middleware>>,
    delay: Vec<Arc<dyn Middleware>>,
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

/// A delivery held in memory until its `eta`.
struct Held {
    eta_ms: i64,
    seq: u64,
    message: Message,
    token: Token,
    acker: Arc<dyn Acker>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Held) -> bool {
        self.eta_ms == o.eta_ms && self.seq == o.seq
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    // Earliest eta on top of the max-heap.
    fn cmp(&self, o: &Held) -> std::cmp::Ordering {
        o.eta_ms
            .cmp(&self.eta_ms)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

struct Shared {
    app: App,
    hooks: HookLists,
    work: WorkQueue,
    permits: Arc<Semaphore>,
    seq: AtomicU64,
    /// Messages in the work queue or running.
    pending: AtomicUsize,
    /// Messages running (between dispatch and settlement).
    running: AtomicUsize,
    changed: Notify,
    held_tx: mpsc::UnboundedSender<Held>,
    /// Flipped to true when the worker shuts down, for actors with `notify_shutdown`.
    shutdown: watch::Sender<bool>,
    notify_jobs: Mutex<HashMap<u64, Arc<ActorContext>>>,
    /// Where sync actors run.
    sync_threads: SyncThreads,
    /// Time limits of sync actors running on `sync_threads`, one slot per thread.
    deadlines: Deadlines,
    /// False once the worker stops: threads take no more queued messages.
    dispatching: AtomicBool,
    /// Messages worker threads finished, for the settle task to ack or dead-letter.
    settles: Mutex<Vec<Finished>>,
    settle_ready: Notify,
}

/// A message a worker thread finished, for the settle task.
type Finished = (Job, Token, Arc<dyn Acker>);

struct Running {
    stop_fetch: watch::Sender<bool>,
    stop_dispatch: watch::Sender<bool>,
    stop_delay: watch::Sender<bool>,
    consumers: Vec<JoinHandle<Box<dyn Consumer>>>,
    dispatcher: JoinHandle<()>,
    delay: JoinHandle<Vec<Held>>,
    deadlines: JoinHandle<()>,
    settler: JoinHandle<()>,
}

enum State {
    Idle(mpsc::UnboundedReceiver<Held>),
    Running(Running),
    Stopped,
}

/// Processes messages of an [`App`]'s actors, with Dramatiq's semantics.
///
/// One consumer per queue and per delay queue prefetches deliveries into a shared work queue
/// ordered by (actor priority, arrival). A message with an `eta` is held in memory until then and
/// moved to its queue. Each message runs with a free slot of `threads`: sync actors on blocking
/// threads, async actors on the current Tokio runtime. The worker acks only once every
/// after-process hook succeeded (so a retry is in the broker first), nacks messages marked
/// failed (dead letters), and requeues what it prefetched but did not start when it stops.
///
/// ```no_run
/// # async fn demo(app: dq_core::App) -> Result<(), dq_worker::WorkerError> {
/// use dq_worker::{Worker, WorkerOptions};
///
/// let worker = Worker::new(app, WorkerOptions { threads: 4, ..Default::default() });
/// worker.start().await?;
/// // ... until it is time to stop:
/// worker.stop().await?;
/// # Ok(()) }
/// ```
pub struct Worker {
    shared: Arc<Shared>,
    options: WorkerOptions,
    state: tokio::sync::Mutex<State>,
}

impl Worker {
    /// A worker for `app`'s actors. Nothing happens until [`start`](Worker::start).
    pub fn new(app: App, options: WorkerOptions) -> Worker {
        let (held_tx, held_rx) = mpsc::unbounded_channel();
        let threads = options.threads.max(1);
        let shared = Arc::new(Shared {
            hooks: HookLists::new(&app),
            app,
            work: WorkQueue::default(),
            permits: Arc::new(Semaphore::new(threads)),
            seq: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            changed: Notify::new(),
            held_tx,
            shutdown: watch::Sender::new(false),
            notify_jobs: Mutex::new(HashMap::new()),
            sync_threads: SyncThreads::new(threads),
            deadlines: Deadlines::new(threads),
            dispatching: AtomicBool::new(true),
            settles: Mutex::new(Vec::new()),
            settle_ready: Notify::new(),
        });
        Worker {
            shared,
            options,
            state: tokio::sync::Mutex::new(State::Idle(held_rx)),
        }
    }

    /// The app whose actors this worker runs.
    pub fn app(&self) -> &App {
        &self.shared.app
    }

    /// The canonical queues this worker consumes.
    pub fn queues(&self) -> Vec<String> {
        let known = self.shared.app.registry().queues();
        match &self.options.queues {
            None => known,
            Some(asked) => known
                .into_iter()
                .filter(|q| asked.iter().any(|a| q_name(a) == q))
                .collect(),
        }
    }

    /// Runs boot hooks, declares actors and queues, and starts consuming. Must be called within a
    /// Tokio runtime; async actors run on it.
    pub async fn start(&self) -> Result<(), WorkerError> {
        let mut state = self.state.lock().await;
        let held_rx = match std::mem::replace(&mut *state, State::Stopped) {
            State::Idle(rx) => rx,
            other => {
                *state = other;
                return Err(WorkerError::State("already started"));
            }
        };
        let app = &self.shared.app;
        let queues = self.queues();
        if queues.is_empty() {
            *state = State::Idle(held_rx);
            return Err(WorkerError::NoQueues {
                known: app.registry().queues(),
                asked: self.options.queues.clone().unwrap_or_default(),
            });
        }
        for m in app.middleware_with(Hooks::WORKER) {
            m.before_worker_boot(app).await?;
        }
        let declare = app.middleware_with(Hooks::DECLARE);
        for actor in app.registry().iter() {
            for m in &declare {
                m.before_declare_actor(app, actor).await?;
            }
            for m in &declare {
                m.after_declare_actor(app, actor).await?;
            }
        }
        let (stop_fetch, fetch_rx) = watch::channel(false);
        let mut consumers = Vec::new();
        for q in &queues {
            app.broker().declare_queue(q).await?;
            for m in &declare {
                m.after_declare_queue(app, q).await?;
            }
            let main = app
                .broker()
                .consume(q, self.options.effective_queue_prefetch())
                .await?;
            let delayed = app
                .broker()
                .consume(
                    &dq_core::dq_name(q),
                    self.options.effective_delay_prefetch(),
                )
                .await?;
            for c in [main, delayed] {
                let shared = self.shared.clone();
                let rx = fetch_rx.clone();
                let timeout = self.options.worker_timeout;
                consumers.push(tokio::spawn(consume_loop(shared, c, rx, timeout)));
            }
        }
        let (stop_dispatch, dispatch_rx) = watch::channel(false);
        let dispatcher = tokio::spawn(dispatch_loop(self.shared.clone(), dispatch_rx));
        let (stop_delay, delay_rx) = watch::channel(false);
        let delay = tokio::spawn(delay_loop(self.shared.clone(), held_rx, delay_rx));
        let deadlines = tokio::spawn(deadline_loop(self.shared.clone(), stop_delay.subscribe()));
        let settler = tokio::spawn(settle_loop(self.shared.clone(), stop_delay.subscribe()));
        *state = State::Running(Running {
            stop_fetch,
            stop_dispatch,
            stop_delay,
            consumers,
            dispatcher,
            delay,
            deadlines,
            settler,
        });
        drop(state);
        for m in app.middleware_with(Hooks::WORKER).iter().rev() {
            m.after_worker_boot(app).await?;
        }
        info!(queues = ?queues, threads = self.options.threads, "worker is ready for action");
        Ok(())
    }

    /// Waits until no message is queued in this worker or running. Messages held for a later
    /// `eta` do not count (use the broker's own join for that, as with Dramatiq's StubBroker).
    pub async fn join(&self) {
        loop {
            let changed = self.shared.changed.notified();
            if self.shared.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            changed.await;
        }
    }

    /// How many messages are queued in this worker or running.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Graceful shutdown: consumers stop fetching, actors with `notify_shutdown` are told,
    /// running messages finish (up to `shutdown_timeout`), and everything prefetched but not
    /// started, and every held delayed message, is requeued.
    pub async fn stop(&self) -> Result<(), WorkerError> {
        let mut state = self.state.lock().await;
        let running = match std::mem::replace(&mut *state, State::Stopped) {
            State::Running(r) => r,
            other => {
                *state = other;
                return Err(WorkerError::State("not running"));
            }
        };
        let app = &self.shared.app;
        for m in app.middleware_with(Hooks::WORKER) {
            if let Err(e) = m.before_worker_shutdown(app).await {
                warn!(middleware = m.name(), error = %e, "before_worker_shutdown hook failed");
            }
        }
        // The dispatcher stops first, as Dramatiq's worker threads do: a message not started
        // when the stop began is requeued, never started while the consumers finish their last
        // fetch (up to one `worker_timeout`).
        self.shared.dispatching.store(false, Ordering::Release);
        let _ = running.stop_dispatch.send(true);
        let _ = running.stop_fetch.send(true);
        let _ = running.dispatcher.await;
        let mut consumers = Vec::new();
        for h in running.consumers {
            if let Ok(c) = h.await {
                consumers.push(c);
            }
        }

        // Tell opted-in actors; async ones are cancelled, sync ones see it through check().
        self.shared.shutdown.send_replace(true);
        for ctx in self
            .shared
            .notify_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            ctx.interrupt_shutdown();
        }

        let deadline = tokio::time::Instant::now() + self.options.shutdown_timeout;
        let mut timed_out = 0;
        loop {
            let changed = self.shared.changed.notified();
            let n = self.shared.running.load(Ordering::Acquire);
            if n == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                timed_out = self.shared.running.load(Ordering::Acquire);
                warn!(
                    running = timed_out,
                    "shutdown timeout passed with messages still running"
                );
                break;
            }
        }
        if timed_out == 0 {
            // A sync actor past its time limit has had its message settled already, but its
            // thread still holds a slot; let it return before calling the worker stopped.
            let all = self.options.threads.max(1) as u32;
            match tokio::time::timeout_at(deadline, self.shared.permits.acquire_many(all)).await {
                Ok(Ok(slots)) => drop(slots),
                Ok(Err(_)) => {}
                Err(_) => warn!("shutdown timeout passed with actor threads still running past their time limit"),
            }
        }

        let queued = self.shared.work.drain();
        let requeued = queued.len();
        let mut groups: Vec<(Arc<dyn Acker>, Vec<Token>)> = Vec::new();
        for item in queued {
            push_group(&mut groups, item.acker, item.token);
        }
        self.shared.pending.fetch_sub(requeued, Ordering::AcqRel);
        self.shared.changed.notify_waiters();

        let _ = running.stop_delay.send(true);
        let held = running.delay.await.unwrap_or_default();
        let _ = running.deadlines.await;
        let _ = running.settler.await;
        let held_n = held.len();
        for h in held {
            push_group(&mut groups, h.acker, h.token);
        }
        for (acker, tokens) in groups {
            if let Err(e) = acker.requeue(&tokens).await {
                // Still unacked in the broker: it is redelivered when the consumer closes or the
                // broker notices this worker is gone.
                warn!(error = %e, count = tokens.len(), "could not requeue prefetched messages");
            }
        }
        if requeued + held_n > 0 {
            info!(requeued, delayed = held_n, "requeued prefetched messages");
        }
        for c in consumers {
            if let Err(e) = c.close().await {
                warn!(error = %e, "consumer did not close cleanly");
            }
        }
        for m in app.middleware_with(Hooks::WORKER).iter().rev() {
            if let Err(e) = m.after_worker_shutdown(app).await {
                warn!(middleware = m.name(), error = %e, "after_worker_shutdown hook failed");
            }
        }
        if timed_out > 0 {
            return Err(WorkerError::ShutdownTimeout(timed_out));
        }
        Ok(())
    }
}

fn push_group(groups: &mut Vec<(Arc<dyn Acker>, Vec<Token>)>, acker: Arc<dyn Acker>, token: Token) {
    match groups.iter_mut().find(|(a, _)| Arc::ptr_eq(a, &acker)) {
        Some((_, tokens)) => tokens.push(token),
        None => groups.push((acker, vec![token])),
    }
}

/// Fetches until told to stop. A fetch is never cancelled half-way, so nothing the broker handed
/// out is forgotten; shutdown waits at most one `worker_timeout`.
async fn consume_loop(
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
                for d in deliveries {
                    shared.accept(d, &acker, consumer.queue()).await;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = backoff(failures);
                if e.is_transient() {
                    warn!(queue = consumer.queue(), error = %e, retry_in_ms = pause.as_millis() as u64, "consumer lost the broker; reconnecting");
                } else {
                    error!(queue = consumer.queue(), error = %e, retry_in_ms = pause.as_millis() as u64, "consumer failed; restarting");
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
    consumer
}

/// Reconnect pauses: 100 ms doubling to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(6).saturating_sub(1)).min(5000))
}

impl Shared {
    /// Sorts a fresh delivery: dead-letter what cannot run, hold what is delayed, queue the rest.
    async fn accept(self: &Arc<Self>, d: Delivery, acker: &Arc<dyn Acker>, queue: &str) {
        let limit = self.app.max_message_size();
        if d.body.len() > limit {
            let reason = format!(
                "message is {} bytes, over the limit of {} bytes",
                d.body.len(),
                limit
            );
            self.nack(None, &d.token, acker, &reason).await;
            return;
        }
        let message = match Message::decode(&d.body) {
            Ok(m) => m,
            Err(e) => {
                let reason = format!("undecodable message: {e}");
                self.nack(None, &d.token, acker, &reason).await;
                return;
            }
        };
        if let Some(eta) = message.options.eta() {
            for m in &self.hooks.delay {
                if let Err(e) = m.before_delay_message(&self.app, &message).await {
                    warn!(middleware = m.name(), error = %e, "before_delay_message hook failed");
                }
            }
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let held = Held {
                eta_ms: eta,
                seq,
                message,
                token: d.token,
                acker: acker.clone(),
            };
            if let Err(mpsc::error::SendError(h)) = self.held_tx.send(held) {
                // The delay holder is gone (shutting down): give it back.
                let _ = h.acker.requeue(&[h.token]).await;
            }
            return;
        }
        let Some(actor) = self.app.actor(&message.actor_name).cloned() else {
            let reason = format!(
                "actor {:?} is not registered in this worker (queue {queue})",
                message.actor_name
            );
            self.nack(Some(&message), &d.token, acker, &reason).await;
            return;
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.work.push(Item {
            priority: actor.priority(),
            seq,
            message,
            actor,
            token: d.token,
            acker: acker.clone(),
        });
    }

    /// Dead-letters one delivery, with nack hooks when the message decoded.
    async fn nack(
        &self,
        message: Option<&Message>,
        token: &Token,
        acker: &Arc<dyn Acker>,
        reason: &str,
    ) {
        match message {
            Some(m) => {
                error!(message_id = %m.message_id, actor = %m.actor_name, "dead-lettering message {}: {reason}", m.message_id)
            }
            None => error!(?token, "dead-lettering message: {reason}"),
        }
        if let Some(m) = message {
            for mw in &self.hooks.nack {
                if let Err(e) = mw.before_nack(&self.app, m, reason).await {
                    warn!(middleware = mw.name(), error = %e, "before_nack hook failed");
                }
            }
        }
        let mut attempt = 0;
        loop {
            match acker.nack(token, reason).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && attempt < 20 => {
                    attempt += 1;
                    warn!(error = %e, "nack failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => {
                    // Still unacked: the broker redelivers it later, so it is not lost.
                    error!(error = %e, "nack failed; the message stays in the broker");
                    return;
                }
            }
        }
        if let Some(m) = message {
            for mw in &self.hooks.nack_rev {
                if let Err(e) = mw.after_nack(&self.app, m, reason).await {
                    warn!(middleware = mw.name(), error = %e, "after_nack hook failed");
                }
            }
        }
    }

    /// Acks `tokens` (of `messages`, in the same order) in one call to the acker.
    async fn ack(&self, messages: &[&Message], tokens: &[Token], acker: &Arc<dyn Acker>) {
        for mw in &self.hooks.ack {
            for message in messages {
                if let Err(e) = mw.before_ack(&self.app, message).await {
                    warn!(middleware = mw.name(), error = %e, "before_ack hook failed");
                }
            }
        }
        let first = messages
            .first()
            .map(|m| m.message_id.as_str())
            .unwrap_or_default();
        let mut attempt = 0;
        loop {
            match acker.ack(tokens).await {
                Ok(()) => break,
                Err(e) if e.is_transient() && attempt < 20 => {
                    attempt += 1;
                    warn!(error = %e, message_id = %first, count = tokens.len(), "ack failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => {
                    error!(error = %e, message_id = %first, count = tokens.len(), "ack failed; the message will be redelivered");
                    return;
                }
            }
        }
        for mw in &self.hooks.ack_rev {
            for message in messages {
                if let Err(e) = mw.after_ack(&self.app, message).await {
                    warn!(middleware = mw.name(), error = %e, "after_ack hook failed");
                }
            }
        }
    }

    async fn requeue(&self, message: &Message, token: Token, acker: &Arc<dyn Acker>) {
        if let Err(e) = acker.requeue(&[token]).await {
            error!(error = %e, message_id = %message.message_id, "requeue failed; the message will be redelivered");
        }
    }

    /// Queues a message a worker thread finished for the settle task, waking it when the
    /// queue was empty (otherwise it is awake or woken already).
    fn settle_later(&self, job: Job, token: Token, acker: Arc<dyn Acker>) {
        acker.finished(std::slice::from_ref(&token));
        let mut settles = self.settles.lock().unwrap_or_else(|p| p.into_inner());
        settles.push((job, token, acker));
        let first = settles.len() == 1;
        drop(settles);
        if first {
            self.settle_ready.notify_one();
        }
    }

    /// The context a job's actor runs with, registered for shutdown notifications when the
    /// actor asked for them (then with the key to [`forget`](Shared::forget) it by).
    fn context(&self, job: &Job) -> (Arc<ActorContext>, Option<u64>) {
        let exposed = job.expose_message.then(|| Arc::new(job.message.clone()));
        let ctx = Arc::new(ActorContext::new(exposed, job.deadline));
        let key = job.notify_shutdown.then(|| {
            let key = self.seq.fetch_add(1, Ordering::Relaxed);
            self.notify_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, ctx.clone());
            key
        });
        (ctx, key)
    }

    /// Unregisters a context [`context`](Shared::context) registered.
    fn forget(&self, key: Option<u64>) {
        if let Some(key) = key {
            self.notify_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }

    /// Counts `n` running messages done.
    fn finish(&self, n: usize) {
        self.running.fetch_sub(n, Ordering::AcqRel);
        self.pending.fetch_sub(n, Ordering::AcqRel);
        self.changed.notify_waiters();
    }
}

/// Takes the best queued message whenever a slot is free. An async actor's message becomes a
/// task; a sync actor's goes to a worker thread, which runs its hooks as well and then keeps the
/// slot for the next queued message as long as there is one (see [`run_chain`]).
async fn dispatch_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        // The slot is taken before the message is chosen, so the choice is made as late as possible
        // and a high-priority message that arrives meanwhile still goes first.
        let permit = tokio::select! {
            p = shared.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let item = tokio::select! {
            item = shared.work.pop() => item,
            _ = stop.changed() => return,
        };
        shared.running.fetch_add(1, Ordering::AcqRel);
        if item.actor.is_async {
            tokio::spawn(process(shared.clone(), item, permit));
        } else {
            let s = shared.clone();
            shared
                .sync_threads
                .submit(move |slot| run_chain(s, item, permit, slot));
        }
    }
}

/// What [`prepare`] leaves to do.
enum Prepared {
    /// Settled, given back or dropped already.
    Done,
    /// A before_process hook skipped it.
    Skipped(Job, Token, Arc<dyn Acker>),
    /// Ready to run.
    Run(Job, Invocation, Token, Arc<dyn Acker>),
}

/// Decodes the arguments and runs the before_process and around_process hooks.
async fn prepare(shared: &Arc<Shared>, item: Item) -> Prepared {
    let Item {
        message,
        actor,
        token,
        acker,
        ..
    } = item;
    if acker.is_stale(&token) {
        // Prefetched on a channel that died since: the broker redelivers it, so running it here
        // too would only run it twice.
        debug!(message_id = %message.message_id, "dropping a prefetched message the broker redelivers");
        shared.finish(1);
        return Prepared::Done;
    }
    let invocation = match (actor.handler)(&message) {
        Ok(i) => i,
        Err(e) => {
            let reason = format!("invalid arguments: {e}");
            shared.nack(Some(&message), &token, &acker, &reason).await;
            shared.finish(1);
            return Prepared::Done;
        }
    };
    let mut job = Job::new(message, actor);
    for m in &shared.hooks.before_process {
        match m.before_process(&shared.app, &mut job).await {
            Ok(Control::Continue) => {}
            Ok(Control::Skip) => return Prepared::Skipped(job, token, acker),
            Err(e) => {
                error!(middleware = m.name(), error = %e, message_id = %job.message.message_id, "before_process hook failed; requeueing");
                shared.requeue(&job.message, token, &acker).await;
                shared.finish(1);
                return Prepared::Done;
            }
        }
    }
    let mut call = invocation;
    for m in &shared.hooks.around_process {
        call = m.around_process(&job, call);
    }
    debug!(message_id = %job.message.message_id, "running {}", job.message);
    Prepared::Run(job, call, token, acker)
}

/// Runs the after_skip hooks of a skipped message and settles it.
async fn conclude_skipped(shared: Arc<Shared>, mut job: Job, token: Token, acker: Arc<dyn Acker>) {
    for m in &shared.hooks.after_skip {
        if let Err(e) = m.after_skip(&shared.app, &mut job).await {
            error!(middleware = m.name(), error = %e, message_id = %job.message.message_id, "after_skip hook failed; requeueing");
            shared.requeue(&job.message, token, &acker).await;
            shared.finish(1);
            return;
        }
    }
    settle(shared, job, token, acker).await
}

/// Logs a failure and runs the after_process hooks. False when one failed: the message has been
/// requeued instead (not acking is what keeps it safe) and counted done.
async fn after_process(
    shared: &Arc<Shared>,
    job: &mut Job,
    token: &Token,
    acker: &Arc<dyn Acker>,
    outcome: &Outcome,
) -> bool {
    if let Outcome::Failure(e) = outcome {
        log_failure(job, e);
    }
    for m in &shared.hooks.after_process {
        if let Err(e) = m.after_process(&shared.app, job, outcome).await {
            error!(middleware = m.name(), error = %e, message_id = %job.message.message_id, "after_process hook failed; requeueing instead of acking");
            shared.requeue(&job.message, token.clone(), acker).await;
            shared.finish(1);
            return false;
        }
    }
    true
}

/// Acks the message, or dead-letters it when marked failed, and counts it done.
async fn settle(shared: Arc<Shared>, job: Job, token: Token, acker: Arc<dyn Acker>) {
    acker.finished(std::slice::from_ref(&token));
    match job.failure_reason() {
        Some(reason) => {
            let reason = reason.to_owned();
            shared
                .nack(Some(&job.message), &token, &acker, &reason)
                .await
        }
        None => shared.ack(&[&job.message], &[token], &acker).await,
    }
    shared.finish(1);
}

/// The after_process hooks, then the settle.
async fn conclude(
    shared: Arc<Shared>,
    mut job: Job,
    token: Token,
    acker: Arc<dyn Acker>,
    outcome: Outcome,
) {
    if after_process(&shared, &mut job, &token, &acker, &outcome).await {
        settle(shared, job, token, acker).await
    }
}

/// Runs one message through hooks and actor on a task, then settles it.
async fn process(shared: Arc<Shared>, item: Item, permit: OwnedSemaphorePermit) {
    match prepare(&shared, item).await {
        Prepared::Done => {}
        Prepared::Skipped(job, token, acker) => {
            drop(permit);
            conclude_skipped(shared, job, token, acker).await
        }
        Prepared::Run(job, call, token, acker) => {
            let outcome = run(&shared, &job, call, Some(permit)).await;
            conclude(shared, job, token, acker, outcome).await
        }
    }
}

/// Runs sync actors' messages on this worker thread: `item`, then the best queued message
/// after it as long as there is one and the worker is not stopping, all with the one slot
/// `permit`. A busy worker so hands each message from thread to thread no more than its ack
/// does: no task per message, no wake-up of the dispatcher, no channel back from the thread.
/// The hooks run here too (`block_on`, as they rarely wait); the actor itself runs outside
/// them, so it may start a runtime of its own. The ack goes to a task, and the thread moves on.
fn run_chain(shared: Arc<Shared>, mut item: Item, permit: OwnedSemaphorePermit, slot: usize) {
    let rt = tokio::runtime::Handle::current();
    loop {
        process_here(&shared, &rt, item, slot);
        if !shared.dispatching.load(Ordering::Acquire) {
            break;
        }
        let Some(next) = shared.work.try_pop() else {
            break;
        };
        shared.running.fetch_add(1, Ordering::AcqRel);
        if next.actor.is_async {
            rt.spawn(process(shared, next, permit));
            return;
        }
        item = next;
    }
    drop(permit);
}

/// [`process`] on a worker thread (see [`run_chain`]).
fn process_here(shared: &Arc<Shared>, rt: &tokio::runtime::Handle, item: Item, slot: usize) {
    match rt.block_on(prepare(shared, item)) {
        Prepared::Done => {}
        Prepared::Skipped(job, token, acker) => {
            rt.block_on(conclude_skipped(shared.clone(), job, token, acker))
        }
        Prepared::Run(job, Invocation::Sync(f), token, acker) => {
            let Some((mut job, token, acker, outcome)) =
                run_here(shared, job, f, token, acker, slot)
            else {
                // Its time limit passed: the deadline watcher settled it already.
                return;
            };
            if rt.block_on(after_process(shared, &mut job, &token, &acker, &outcome)) {
                shared.settle_later(job, token, acker);
            }
        }
        Prepared::Run(job, call, token, acker) => {
            // A middleware made the call async: run it as an async actor's.
            rt.block_on(async {
                let outcome = run(shared, &job, call, None).await;
                conclude(shared.clone(), job, token, acker, outcome).await
            })
        }
    }
}

/// Calls a sync actor on this thread, under its time limit (see [`crate::deadline`]). `None`
/// when the limit passed first and the watcher took the message to settle it.
#[allow(clippy::type_complexity)]
fn run_here(
    shared: &Arc<Shared>,
    job: Job,
    f: Box<dyn FnOnce() -> ActorResult + Send + 'static>,
    token: Token,
    acker: Arc<dyn Acker>,
    slot: usize,
) -> Option<(Job, Token, Arc<dyn Acker>, Outcome)> {
    let (ctx, notify_key) = shared.context(&job);
    let call = |ctx: &Arc<ActorContext>| {
        std::panic::catch_unwind(AssertUnwindSafe(|| ctx.scope(f)))
            .unwrap_or_else(|payload| Err(ActorError::panic(&*payload)))
    };
    let (result, back) = match job.deadline {
        Some(deadline) => {
            shared
                .deadlines
                .enter(slot, job, token, acker, ctx.clone(), deadline);
            let result = call(&ctx);
            let back = shared
                .deadlines
                .leave(slot)
                .map(|r| (r.job, r.token, r.acker));
            (result, back)
        }
        None => (call(&ctx), Some((job, token, acker))),
    };
    shared.forget(notify_key);
    let (job, token, acker) = back?;
    let outcome = match result {
        Ok(v) => Outcome::Success(v),
        Err(e) => Outcome::Failure(e),
    };
    Some((job, token, acker, outcome))
}

/// Settles what worker threads finished, a batch at a time: one ack call per acker and batch.
async fn settle_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let batch = std::mem::take(&mut *shared.settles.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            tokio::select! {
                _ = shared.settle_ready.notified() => continue,
                _ = stop.changed() => return,
            }
        }
        tokio::spawn(settle_batch(shared.clone(), batch));
    }
}

/// Dead-letters the failed messages of a batch one by one, and acks the rest together.
async fn settle_batch(shared: Arc<Shared>, batch: Vec<Finished>) {
    let n = batch.len();
    // Per acker: its tokens and their jobs.
    type Group = (Arc<dyn Acker>, Vec<Token>, Vec<Job>);
    let mut groups: Vec<Group> = Vec::new();
    for (job, token, acker) in batch {
        if let Some(reason) = job.failure_reason() {
            let reason = reason.to_owned();
            shared
                .nack(Some(&job.message), &token, &acker, &reason)
                .await;
            continue;
        }
        match groups.iter_mut().find(|(a, ..)| Arc::ptr_eq(a, &acker)) {
            Some((_, tokens, jobs)) => {
                tokens.push(token);
                jobs.push(job);
            }
            None => groups.push((acker, vec![token], vec![job])),
        }
    }
    for (acker, tokens, jobs) in groups {
        let messages: Vec<&Message> = jobs.iter().map(|j| &j.message).collect();
        shared.ack(&messages, &tokens, &acker).await;
    }
    shared.finish(n);
}

/// Settles sync actors' messages whose time limit passed while their threads run on.
async fn deadline_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (due, next) = shared.deadlines.expired();
        for r in due {
            r.ctx.interrupt_time_limit();
            let outcome = Outcome::Failure(ActorError::time_limit_exceeded());
            tokio::spawn(conclude(shared.clone(), r.job, r.token, r.acker, outcome));
        }
        let sleep = async move {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = shared.deadlines.changed() => {}
            _ = stop.changed() => return,
        }
    }
}

fn log_failure(job: &Job, e: &ActorError) {
    use dq_core::FailureKind;
    match e.kind() {
        FailureKind::Retry(_) | FailureKind::RateLimitExceeded => {
            debug!(message_id = %job.message.message_id, "message {} asked to be retried: {e}", job.message)
        }
        FailureKind::TimeLimitExceeded => {
            warn!(message_id = %job.message.message_id, "time limit exceeded while processing message {}", job.message)
        }
        _ => {
            warn!(message_id = %job.message.message_id, error = %e, "failed to process message {} with unhandled error: {e}", job.message)
        }
    }
}

/// Runs the actor call under the job's deadline and shutdown notification, on a task (an async
/// call) or a worker thread (a sync call that came this way). The slot, when given, is freed
/// once the call really returns.
async fn run(
    shared: &Arc<Shared>,
    job: &Job,
    call: Invocation,
    permit: Option<OwnedSemaphorePermit>,
) -> Outcome {
    let (ctx, notify_key) = shared.context(job);
    let deadline = job.deadline.map(tokio::time::Instant::from_std);
    let mut shutdown = shared.shutdown.subscribe();
    let notify_shutdown = job.notify_shutdown;
    let shutdown_signal = async move {
        if !notify_shutdown {
            return std::future::pending::<()>().await;
        }
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let timer = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    let result = match call {
        Invocation::Sync(f) => {
            let thread_ctx = ctx.clone();
            // The slot travels with the thread: a sync actor that ignores its time limit keeps
            // occupying it until it really returns, so `threads` stays a true bound.
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            shared.sync_threads.submit(move |_| {
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| thread_ctx.scope(f)))
                    .unwrap_or_else(|payload| Err(ActorError::panic(&*payload)));
                drop(permit);
                let _ = done_tx.send(r);
            });
            tokio::select! {
                joined = done_rx => match joined {
                    Ok(r) => r,
                    Err(_) => Err(ActorError::shutdown()),
                },
                _ = timer => {
                    ctx.interrupt_time_limit();
                    Err(ActorError::time_limit_exceeded())
                }
            }
        }
        Invocation::Async(fut) => {
            let fut = CatchUnwind(ctx.wrap(fut));
            let r = tokio::select! {
                r = fut => r,
                _ = timer => {
                    ctx.interrupt_time_limit();
                    Err(ActorError::time_limit_exceeded())
                }
                _ = shutdown_signal => Err(ActorError::shutdown()),
            };
            drop(permit);
            r
        }
    };
    shared.forget(notify_key);
    match result {
        Ok(v) => Outcome::Success(v),
        Err(e) => Outcome::Failure(e),
    }
}

/// Turns a panic while polling an async actor into a failed outcome.
struct CatchUnwind(dq_core::Scoped);

impl Future for CatchUnwind {
    type Output = ActorResult;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ActorResult> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *inner).poll(cx))) {
            Ok(p) => p,
            Err(payload) => Poll::Ready(Err(ActorError::panic(&*payload))),
        }
    }
}

/// Holds delayed messages until their eta, then moves each to its queue and acks the original.
async fn delay_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Held>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Held> {
    let mut heap: BinaryHeap<Held> = BinaryHeap::new();
    loop {
        let next = heap.peek().map(|h| h.eta_ms);
        let sleep = async {
            match next {
                Some(eta) => {
                    let wait = (eta - now_ms()).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            h = rx.recv() => match h {
                Some(h) => heap.push(h),
                None => break,
            },
            _ = sleep => {
                let now = now_ms();
                while heap.peek().is_some_and(|h| h.eta_ms <= now) {
                    let h = heap.pop().expect("peeked");
                    if let Err(h) = move_to_queue(&shared, h).await {
                        heap.push(h);
                        break;
                    }
                }
            }
            _ = stop.changed() => break,
        }
    }
    rx.close();
    while let Ok(h) = rx.try_recv() {
        heap.push(h);
    }
    heap.into_vec()
}

/// Enqueues a copy of a due message on its canonical queue, without `eta`, then acks the held
/// delivery. The ack comes second, so a crash in between duplicates rather than loses it.
async fn move_to_queue(shared: &Arc<Shared>, mut h: Held) -> Result<(), Held> {
    if h.acker.is_stale(&h.token) {
        // Its channel died: the broker has delivered (or will deliver) it again, eta and all.
        debug!(message_id = %h.message.message_id, "dropping a held delayed message the broker redelivers");
        return Ok(());
    }
    let mut m = h.message.clone();
    m.queue_name = q_name(&m.queue_name).to_owned();
    m.options.remove_eta();
    match shared.app.enqueue(m, None).await {
        Ok(_) => {
            shared
                .ack(&[&h.message], std::slice::from_ref(&h.token), &h.acker)
                .await;
            Ok(())
        }
        Err(e) => {
            warn!(error = %e, message_id = %h.message.message_id, "could not move delayed message to its queue; retrying in 1s");
            h.eta_ms = now_ms() + 1000;
            Err(h)
        }
    }
}
