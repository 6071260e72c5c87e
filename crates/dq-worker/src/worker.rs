//! `Worker`: starting and stopping the pieces a message passes through (see the crate docs
//! for the map): consumers ([`crate::intake`]), the dispatcher and the deadline watcher
//! ([`crate::execution`]), the delay holder ([`crate::delay`]) and the settle task
//! ([`crate::settlement`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dq_core::{base_queue_name, new_message_id, App, Consumer, Hooks};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::delay::{delay_loop, Held};
use crate::error::WorkerError;
use crate::execution::{dispatch_loop, watch_deadlines};
use crate::intake::consume_loop;
use crate::options::WorkerOptions;
use crate::presence;
use crate::settlement::{requeue_all, settle_loop};
use crate::shared::Shared;

struct Running {
    stop_fetch: watch::Sender<bool>,
    stop_dispatch: watch::Sender<bool>,
    stop_delay: watch::Sender<bool>,
    stop_settle: watch::Sender<bool>,
    consumers: Vec<JoinHandle<Box<dyn Consumer>>>,
    dispatcher: JoinHandle<()>,
    delay: JoinHandle<Vec<Held>>,
    deadlines: JoinHandle<()>,
    settler: JoinHandle<()>,
    stop_presence: watch::Sender<bool>,
    presence: JoinHandle<()>,
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
    id: String,
    state: tokio::sync::Mutex<State>,
}

impl Worker {
    /// A worker for `app`'s actors. Nothing happens until [`start`](Worker::start).
    pub fn new(app: App, options: WorkerOptions) -> Worker {
        let (held_tx, held_rx) = mpsc::unbounded_channel();
        let threads = options.threads.max(1);
        let shared = Arc::new(Shared::new(app, threads, held_tx));
        Worker {
            shared,
            options,
            id: new_message_id(),
            state: tokio::sync::Mutex::new(State::Idle(held_rx)),
        }
    }

    /// The app whose actors this worker runs.
    pub fn app(&self) -> &App {
        &self.shared.app
    }

    /// This worker's id in its broker's worker registry (a UUID4, new for each `Worker`): the
    /// [`WorkerInfo::worker_id`](dq_core::WorkerInfo::worker_id) it publishes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The canonical queues this worker consumes.
    pub fn queues(&self) -> Vec<String> {
        let known = self.shared.app.registry().queues();
        match &self.options.queues {
            None => known,
            Some(asked) => known
                .into_iter()
                .filter(|q| asked.iter().any(|a| base_queue_name(a) == q))
                .collect(),
        }
    }

    /// Runs boot hooks, declares actors and queues, starts consuming, and publishes the worker
    /// and its actors to the broker's worker registry ([`Broker::publish_worker`], refreshed every
    /// `registry_interval` until [`stop`](Worker::stop)). Must be called within a Tokio runtime;
    /// async actors run on it.
    ///
    /// [`Broker::publish_worker`]: dq_core::Broker::publish_worker
    pub async fn start(&self) -> Result<(), WorkerError> {
        let mut state = self.state.lock().await;
        let held_rx = match std::mem::replace(&mut *state, State::Stopped) {
            State::Idle(rx) => rx,
            other => {
                *state = other;
                return Err(WorkerError::Lifecycle("already started"));
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
        // Everything that can fail comes before anything runs: a worker that does not start
        // leaves no consumer fetching, and can be started again.
        let opened = match self.prepare(&queues).await {
            Ok(opened) => opened,
            Err(e) => {
                *state = State::Idle(held_rx);
                return Err(e);
            }
        };
        let (stop_fetch, fetch_rx) = watch::channel(false);
        let consumers = opened
            .into_iter()
            .map(|c| {
                let shared = self.shared.clone();
                let rx = fetch_rx.clone();
                let timeout = self.options.worker_timeout;
                tokio::spawn(consume_loop(shared, c, rx, timeout))
            })
            .collect();
        let (stop_dispatch, dispatch_rx) = watch::channel(false);
        let dispatcher = tokio::spawn(dispatch_loop(self.shared.clone(), dispatch_rx));
        let (stop_delay, delay_rx) = watch::channel(false);
        let delay = tokio::spawn(delay_loop(self.shared.clone(), held_rx, delay_rx));
        let deadlines = tokio::spawn(watch_deadlines(self.shared.clone(), stop_delay.subscribe()));
        let (stop_settle, settle_rx) = watch::channel(false);
        let settler = tokio::spawn(settle_loop(self.shared.clone(), settle_rx));
        // Published only now that its queues are declared and consumed: a sender that finds an
        // actor in the registry finds a queue that exists.
        let mut info = presence::worker_info(app, &self.id, &queues, self.options.threads);
        let ttl = self.options.registry_ttl;
        presence::publish(&**app.broker(), &mut info, ttl).await;
        let (stop_presence, presence_rx) = watch::channel(false);
        let presence = tokio::spawn(presence::refresh_loop(
            app.broker().clone(),
            info,
            self.options.registry_interval,
            ttl,
            presence_rx,
        ));
        *state = State::Running(Running {
            stop_fetch,
            stop_dispatch,
            stop_delay,
            stop_settle,
            consumers,
            dispatcher,
            delay,
            deadlines,
            settler,
            stop_presence,
            presence,
        });
        drop(state);
        for m in app.middleware_with(Hooks::WORKER).iter().rev() {
            if let Err(e) = m.after_worker_boot(app).await {
                warn!(middleware = m.name(), error = %dq_core::ErrorChain(&e), "after_worker_boot hook failed; stopping the worker");
                if let Err(stop) = self.stop().await {
                    warn!(error = %dq_core::ErrorChain(&stop), "worker did not stop cleanly");
                }
                return Err(e.into());
            }
        }
        info!(queues = ?queues, threads = self.options.threads, "worker is ready for action");
        Ok(())
    }

    /// Builds the states, runs the before-boot and declare hooks, declares the queues and opens
    /// a consumer per queue and delay queue. On an error, closes what it opened.
    async fn prepare(&self, queues: &[String]) -> Result<Vec<Box<dyn Consumer>>, WorkerError> {
        let app = &self.shared.app;
        let states = app.build_states(queues).await?;
        // Kept from the first start when a failed start is retried: the same app built them.
        let _ = self.shared.states.set(states);
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
        let mut opened: Vec<Box<dyn Consumer>> = Vec::new();
        let result = async {
            for q in queues {
                app.broker().declare_queue(q).await?;
                for m in &declare {
                    m.after_declare_queue(app, q).await?;
                }
                opened.push(
                    app.broker()
                        .consume(q, self.options.effective_queue_prefetch())
                        .await?,
                );
                opened.push(
                    app.broker()
                        .consume(
                            &dq_core::delay_queue_name(q),
                            self.options.effective_delay_prefetch(),
                        )
                        .await?,
                );
            }
            Ok::<(), WorkerError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(opened),
            Err(e) => {
                for c in opened {
                    if let Err(close) = c.close().await {
                        warn!(error = %dq_core::ErrorChain(&close), "consumer did not close cleanly");
                    }
                }
                Err(e)
            }
        }
    }

    /// Waits until no message is queued in this worker or running. Messages held for a later
    /// `eta` do not count (use the broker's own join for that, as with Dramatiq's StubBroker).
    pub async fn join(&self) {
        self.shared.counts.wait_until(|c| c.pending() == 0).await
    }

    /// Starts the worker, runs until the process gets SIGINT (Ctrl-C) or SIGTERM, then stops
    /// gracefully ([`stop`](Worker::stop)): the one line a worker binary needs.
    ///
    /// ```no_run
    /// # async fn demo(app: dq_core::App) -> Result<(), dq_worker::WorkerError> {
    /// dq_worker::Worker::new(app, Default::default()).run_until_signal().await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_until_signal(&self) -> Result<(), WorkerError> {
        self.start().await?;
        let signal = shutdown_signal().await;
        info!(signal, "stopping the worker");
        self.stop().await
    }

    /// Starts the worker, waits until its queues are drained ([`drained`](Worker::drained)),
    /// then stops it: for tests, examples and batch jobs. The worker is stopped also when the
    /// wait times out.
    ///
    /// ```no_run
    /// # async fn demo(app: dq_core::App) -> Result<(), dq_worker::WorkerError> {
    /// use std::time::Duration;
    ///
    /// // ... messages were sent through `app` ...
    /// let worker = dq_worker::Worker::new(app, Default::default());
    /// worker.run_until_drained(Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_until_drained(&self, timeout: Duration) -> Result<(), WorkerError> {
        self.start().await?;
        let drained = self.drained(timeout).await;
        let stopped = self.stop().await;
        drained.and(stopped)
    }

    /// Waits until every queue this worker consumes, and its delay queue, holds no message in
    /// the broker, none is handed out unacked, and none is queued or running here: what was
    /// sent has been processed, with its retries and the messages it sent in turn. Delayed
    /// messages are waited for. [`WorkerError::DrainTimeout`] when `timeout` passes first.
    pub async fn drained(&self, timeout: Duration) -> Result<(), WorkerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let queues = self.queues();
        let broker = self.shared.app.broker();
        // Two clean looks in a row: a message between the broker and this worker (fetched,
        // not yet counted) shows on one side or the other at each look.
        let mut clean = 0;
        loop {
            let mut busy = self.pending() as u64;
            for q in &queues {
                let s = broker.stats(q).await?;
                busy += s.ready + s.delayed + s.in_flight;
            }
            clean = if busy == 0 { clean + 1 } else { 0 };
            if clean >= 2 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(WorkerError::DrainTimeout {
                    timeout,
                    remaining: busy,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// How many messages are queued in this worker or running.
    pub fn pending(&self) -> usize {
        self.shared.counts.pending()
    }

    /// Graceful shutdown: consumers stop fetching, actors with `notify_shutdown` are told,
    /// running messages finish (up to `shutdown_timeout`), and everything prefetched but not
    /// started, and every held delayed message, is requeued. Last, the worker withdraws its
    /// record from the broker's worker registry.
    pub async fn stop(&self) -> Result<(), WorkerError> {
        let mut state = self.state.lock().await;
        let running = match std::mem::replace(&mut *state, State::Stopped) {
            State::Running(r) => r,
            other => {
                *state = other;
                return Err(WorkerError::Lifecycle("not running"));
            }
        };
        let app = &self.shared.app;
        for m in app.middleware_with(Hooks::WORKER) {
            if let Err(e) = m.before_worker_shutdown(app).await {
                warn!(middleware = m.name(), error = %dq_core::ErrorChain(&e), "before_worker_shutdown hook failed");
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
        self.shared.interrupt_for_shutdown();

        let deadline = tokio::time::Instant::now() + self.options.shutdown_timeout;
        let counts = &self.shared.counts;
        let settled = counts.wait_until(|c| c.running() == 0);
        let timed_out = match tokio::time::timeout_at(deadline, settled).await {
            Ok(()) => 0,
            Err(_) => {
                let n = counts.running();
                warn!(
                    running = n,
                    "shutdown timeout passed with messages still running"
                );
                n
            }
        };
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

        // Not started: back to the broker (their guards drop once it has them).
        let queued = self.shared.work.drain();
        let requeued = requeue_all(queued.into_iter().map(|item| item.ticket)).await;
        let _ = running.stop_delay.send(true);
        let held = running.delay.await.unwrap_or_default();
        let _ = running.deadlines.await;
        let held_n = requeue_all(held.into_iter().map(|h| h.ticket)).await;
        // Settles still queued (the delay holder's last acks) go out before the consumers close.
        let _ = running.stop_settle.send(true);
        let _ = running.settler.await;
        if requeued + held_n > 0 {
            info!(requeued, delayed = held_n, "requeued prefetched messages");
        }
        for c in consumers {
            if let Err(e) = c.close().await {
                warn!(error = %dq_core::ErrorChain(&e), "consumer did not close cleanly");
            }
        }
        let _ = running.stop_presence.send(true);
        let _ = running.presence.await;
        presence::withdraw(&**app.broker(), &self.id).await;
        for m in app.middleware_with(Hooks::WORKER).iter().rev() {
            if let Err(e) = m.after_worker_shutdown(app).await {
                warn!(middleware = m.name(), error = %dq_core::ErrorChain(&e), "after_worker_shutdown hook failed");
            }
        }
        if timed_out > 0 {
            return Err(WorkerError::ShutdownTimeout(timed_out));
        }
        Ok(())
    }
}

/// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere) and names it.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                warn!(error = %dq_core::ErrorChain(&e), "cannot listen for SIGTERM; stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
