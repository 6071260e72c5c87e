//! The Abortable middleware, its watcher, and `abort`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dq_core::{
    async_trait, ActorError, App, Control, FailureKind, Hooks, Interrupt, Job, Middleware,
    MiddlewareError, Outcome,
};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backend::{Event, EventBackend};
use crate::error::{Error, Result};

/// dramatiq-abort's default `abort_ttl`: how long an event waits for the message, in ms.
pub const DEFAULT_ABORT_TTL_MS: u64 = 90_000;

/// How long the watcher blocks on one `BLPOP` before it looks at the running messages again.
const WAIT_TIMEOUT: Duration = Duration::from_secs(1);

/// What an abort stops: dramatiq-abort's `AbortMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AbortMode {
    /// Only a message that has not started yet: it is skipped when a worker takes it.
    Cancel,
    /// A message that has not started yet, and one that is running (the default).
    #[default]
    Abort,
}

impl AbortMode {
    /// The mode's name in events' keys and in `dq abort --mode`: `cancel` or `abort`.
    ///
    /// ```
    /// assert_eq!(dq_abort::AbortMode::Cancel.as_str(), "cancel");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            AbortMode::Cancel => "cancel",
            AbortMode::Abort => "abort",
        }
    }

    /// The event key of `message_id` in this mode: `cancel:<id>` or `abort:<id>`.
    ///
    /// ```
    /// assert_eq!(dq_abort::AbortMode::Abort.key("m1"), "abort:m1");
    /// ```
    pub fn key(self, message_id: &str) -> String {
        format!("{}:{message_id}", self.as_str())
    }
}

impl std::str::FromStr for AbortMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<AbortMode, String> {
        match s {
            "cancel" => Ok(AbortMode::Cancel),
            "abort" => Ok(AbortMode::Abort),
            other => Err(format!("unknown abort mode {other:?} (cancel or abort)")),
        }
    }
}

/// How to abort: dramatiq-abort's `abort()` arguments other than the message id.
///
/// ```
/// use std::time::Duration;
/// use dq_abort::{AbortMode, AbortOptions};
///
/// let graceful = AbortOptions::default().abort_timeout(Duration::from_secs(5));
/// assert_eq!(graceful.mode_value(), AbortMode::Abort);
/// let cancel_only = AbortOptions::default().mode(AbortMode::Cancel).abort_ttl(Duration::from_secs(3600));
/// assert_eq!(cancel_only.mode_value(), AbortMode::Cancel);
/// ```
#[derive(Clone, Debug, Default)]
pub struct AbortOptions {
    mode: AbortMode,
    abort_ttl: Option<Duration>,
    abort_timeout: Duration,
}

impl AbortOptions {
    /// Cancel only, or abort a running message too (the default).
    pub fn mode(mut self, mode: AbortMode) -> AbortOptions {
        self.mode = mode;
        self
    }

    /// How long the events wait for the message (default: the middleware's `abort_ttl`, 90 s).
    /// A message that starts later than this after the abort runs normally: raise it for
    /// delayed messages.
    pub fn abort_ttl(mut self, ttl: Duration) -> AbortOptions {
        self.abort_ttl = Some(ttl);
        self
    }

    /// The grace period of a running message (default 0): it is stopped this long after the
    /// worker notices the abort, and meanwhile reads the time left with
    /// [`abort_requested`](crate::abort_requested).
    pub fn abort_timeout(mut self, timeout: Duration) -> AbortOptions {
        self.abort_timeout = timeout;
        self
    }

    /// The mode.
    pub fn mode_value(&self) -> AbortMode {
        self.mode
    }

    /// The events these options signal for `message_id`: the cancel event, and in abort mode
    /// the abort event with its `abort_timeout` in ms.
    ///
    /// ```
    /// use dq_abort::AbortOptions;
    ///
    /// let events = AbortOptions::default().events("m1");
    /// assert_eq!(events[0].key, "cancel:m1");
    /// assert_eq!(events[1].key, "abort:m1");
    /// assert_eq!(events[1].params["abort_timeout"], 0);
    /// ```
    pub fn events(&self, message_id: &str) -> Vec<Event> {
        let mut events = vec![Event::new(AbortMode::Cancel.key(message_id))];
        if self.mode == AbortMode::Abort {
            let ms = self.abort_timeout.as_millis().min(i64::MAX as u128) as i64;
            events
                .push(Event::new(AbortMode::Abort.key(message_id)).with_param("abort_timeout", ms));
        }
        events
    }
}

/// The error a running message that was aborted fails with: its type name is `Abort`, as
/// dramatiq-abort's exception, so stored results and `on_failure` callbacks read the same. It is
/// an ordinary failure: Retries retries it unless the actor has `max_retries = 0`, and the
/// retried copy is then usually skipped by the cancel event the abort left (as in Python).
///
/// ```
/// assert_eq!(dq_abort::abort_error().type_name(), "Abort");
/// ```
pub fn abort_error() -> ActorError {
    ActorError::new(FailureKind::Error, "Abort", "")
}

struct Inner {
    backend: Arc<dyn EventBackend>,
    abortable: bool,
    abort_ttl: Duration,
    /// The abortable messages running in this process.
    running: Mutex<HashMap<String, Arc<Interrupt>>>,
    /// Wakes the watcher when the first abortable message starts.
    started: Notify,
    /// The watcher task, and how many workers of this process booted with this middleware.
    watcher: Mutex<(Option<JoinHandle<()>>, usize)>,
}

/// Skips cancelled messages and stops aborted running ones: dramatiq-abort's `Abortable`.
///
/// - Which messages: those whose `abortable` option (message, then actor, then this
///   middleware's default, `true`) holds.
/// - Before one runs, the worker takes its cancel event (`LPOP cancel:<id>`); if there is one, the
///   message is skipped: `after_skip` hooks run (Results stores `null`) and it is acked.
/// - While it runs, one watcher task per worker process waits (`BLPOP`, 1 s at a time) on the
///   abort events of every abortable message running in the process, so an abort is noticed
///   within about a second, with no poll per message. After the event's `abort_timeout` (the
///   grace period), an async actor's future is dropped, and a sync actor's message is
///   concluded while its thread runs on and sees [`abort_error`] in `dq::check()`; either way
///   the message fails with the error type `Abort`.
///
/// Hooks: `before_process`, `after_process`, `after_skip`, worker boot and shutdown (the
/// watcher). Actor option: `abortable`.
///
/// ```
/// use dq_abort::{Abortable, MemoryBackend};
/// use dq_core::Middleware;
///
/// let abortable = Abortable::new(MemoryBackend::default()).with_abortable(false);
/// assert_eq!(abortable.actor_options(), &["abortable"]);
/// assert!(!abortable.abortable());
/// ```
#[derive(Clone)]
pub struct Abortable {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Abortable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Abortable")
            .field("abortable", &self.inner.abortable)
            .field("abort_ttl", &self.inner.abort_ttl)
            .finish_non_exhaustive()
    }
}

impl Abortable {
    /// The middleware on `backend`, with dramatiq-abort's defaults: every actor abortable,
    /// events kept 90 s.
    pub fn new(backend: impl EventBackend) -> Abortable {
        Abortable::from_arc(Arc::new(backend))
    }

    /// The middleware on a shared backend.
    pub fn from_arc(backend: Arc<dyn EventBackend>) -> Abortable {
        Abortable {
            inner: Arc::new(Inner {
                backend,
                abortable: true,
                abort_ttl: Duration::from_millis(DEFAULT_ABORT_TTL_MS),
                running: Mutex::new(HashMap::new()),
                started: Notify::new(),
                watcher: Mutex::new((None, 0)),
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut bool, &mut Duration)) -> Abortable {
        let mut abortable = self.inner.abortable;
        let mut ttl = self.inner.abort_ttl;
        f(&mut abortable, &mut ttl);
        Abortable {
            inner: Arc::new(Inner {
                backend: self.inner.backend.clone(),
                abortable,
                abort_ttl: ttl,
                running: Mutex::new(HashMap::new()),
                started: Notify::new(),
                watcher: Mutex::new((None, 0)),
            }),
        }
    }

    /// Whether actors that do not say are abortable (default `true`).
    pub fn with_abortable(self, yes: bool) -> Abortable {
        self.rebuild(|a, _| *a = yes)
    }

    /// How long events wait for their message when `abort` does not say (default 90 s).
    pub fn with_abort_ttl(self, ttl: Duration) -> Abortable {
        self.rebuild(|_, t| *t = ttl)
    }

    /// The default of the `abortable` option.
    pub fn abortable(&self) -> bool {
        self.inner.abortable
    }

    /// The default `abort_ttl`.
    pub fn abort_ttl(&self) -> Duration {
        self.inner.abort_ttl
    }

    /// The event backend.
    pub fn backend(&self) -> &Arc<dyn EventBackend> {
        &self.inner.backend
    }

    /// Aborts `message_id` (queued, delayed or running) with the default options.
    pub async fn abort(&self, message_id: &str) -> Result<()> {
        self.abort_with(message_id, &AbortOptions::default()).await
    }

    /// Aborts or cancels `message_id` as `options` say: dramatiq-abort's
    /// `Abortable.abort(message_id, abort_ttl, mode, abort_timeout)`.
    pub async fn abort_with(&self, message_id: &str, options: &AbortOptions) -> Result<()> {
        let ttl = options.abort_ttl.unwrap_or(self.inner.abort_ttl);
        self.inner
            .backend
            .notify(&options.events(message_id), ttl)
            .await
    }

    /// Whether `job` may be aborted: the message's `abortable` option, else the actor's, else
    /// the middleware's default. `null` falls through, as Python's `None` does.
    fn is_abortable(&self, job: &Job) -> bool {
        let message = job
            .message
            .options
            .get("abortable")
            .filter(|v| !v.is_null());
        let actor = job
            .actor
            .options
            .extra
            .get("abortable")
            .filter(|v| !v.is_null());
        match message.or(actor) {
            Some(v) => truthy(v),
            None => self.inner.abortable,
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Interrupt>>> {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, message_id: &str) {
        self.running().remove(message_id);
    }
}

/// Python's truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The grace period an abort event asks for (`abort_timeout`, ms; 0 when missing or not a
/// number).
fn grace(event: &Event) -> Duration {
    let ms = event
        .params
        .get("abort_timeout")
        .and_then(Value::as_f64)
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .unwrap_or(0.0);
    Duration::from_millis(ms.min(u64::MAX as f64) as u64)
}

/// One per process: waits on the abort events of the running abortable messages and asks
/// the ones named to stop.
async fn watch(inner: Arc<Inner>) {
    loop {
        let keys: Vec<String> = {
            let mut running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
            // A message whose job is gone without its after-hooks (a later before-hook failed
            // and it was requeued) is held by this map alone: stop watching it.
            running.retain(|_, i| Arc::strong_count(i) > 1);
            running.keys().map(|id| AbortMode::Abort.key(id)).collect()
        };
        if keys.is_empty() {
            // A permit stored by a message that started meanwhile wakes this at once.
            inner.started.notified().await;
            continue;
        }
        match inner.backend.wait_many(&keys, WAIT_TIMEOUT).await {
            Ok(Some(event)) => {
                let Some(id) = event.key.split_once(':').map(|(_, id)| id) else {
                    continue;
                };
                let interrupt = inner
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(id)
                    .cloned();
                // Finished before the abort arrived: nothing to stop.
                let Some(interrupt) = interrupt else { continue };
                let grace = grace(&event);
                if interrupt.request(Instant::now() + grace, abort_error()) {
                    info!(message_id = %id, grace_ms = grace.as_millis() as u64, "Aborting task.");
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %dq_core::ErrorChain(&e), "abort watcher: waiting for abort events failed; trying again in 1 s");
                tokio::time::sleep(WAIT_TIMEOUT).await;
            }
        }
    }
}

#[async_trait]
impl Middleware for Abortable {
    fn name(&self) -> &str {
        "Abortable"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_PROCESS | Hooks::AFTER_PROCESS | Hooks::AFTER_SKIP | Hooks::WORKER
    }

    fn actor_options(&self) -> &[&'static str] {
        &["abortable"]
    }

    fn as_any(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        Some(self)
    }

    async fn before_worker_boot(&self, _app: &App) -> Result<(), MiddlewareError> {
        let mut watcher = self.inner.watcher.lock().unwrap_or_else(|p| p.into_inner());
        watcher.1 += 1;
        if watcher.0.as_ref().is_none_or(|h| h.is_finished()) {
            watcher.0 = Some(tokio::spawn(watch(self.inner.clone())));
        }
        Ok(())
    }

    async fn after_worker_shutdown(&self, _app: &App) -> Result<(), MiddlewareError> {
        let mut watcher = self.inner.watcher.lock().unwrap_or_else(|p| p.into_inner());
        watcher.1 = watcher.1.saturating_sub(1);
        if watcher.1 == 0 {
            if let Some(h) = watcher.0.take() {
                h.abort();
            }
        }
        Ok(())
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        if !self.is_abortable(job) {
            return Ok(Control::Continue);
        }
        let id = &job.message.message_id;
        let cancelled = self
            .inner
            .backend
            .poll(&AbortMode::Cancel.key(id))
            .await
            .map_err(|e| {
                MiddlewareError::caused_by("Abortable", "could not check for a cancel event", e)
            })?;
        if cancelled.is_some() {
            debug!(message_id = %id, actor = %job.message.actor_name, "skipping a cancelled message");
            return Ok(Control::Skip);
        }
        let interrupt = job.interrupt.get_or_insert_with(Default::default).clone();
        self.running().insert(id.clone(), interrupt);
        self.inner.started.notify_one();
        Ok(Control::Continue)
    }

    async fn after_process(
        &self,
        _app: &App,
        job: &mut Job,
        _outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        self.forget(&job.message.message_id);
        Ok(())
    }

    async fn after_skip(&self, _app: &App, job: &mut Job) -> Result<(), MiddlewareError> {
        self.forget(&job.message.message_id);
        Ok(())
    }
}

/// Aborts `message_id` (queued, delayed or running) through the [`Abortable`] middleware of the
/// current app ([`App::current`]: the app entered, the worker's inside an actor, else the
/// global one): dramatiq-abort's `abort(message_id)`.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo(message_id: &str) -> Result<(), dq_abort::Error> {
/// dq_abort::abort(message_id).await?;
/// # Ok(()) }
/// ```
pub async fn abort(message_id: &str) -> Result<()> {
    abort_with(message_id, &AbortOptions::default()).await
}

/// [`abort`] with options: mode, `abort_ttl`, `abort_timeout`.
///
/// ```no_run
/// use std::time::Duration;
/// use dq_abort::{AbortMode, AbortOptions};
///
/// # #[allow(dead_code)]
/// # async fn demo(message_id: &str) -> Result<(), dq_abort::Error> {
/// let graceful = AbortOptions::default().abort_timeout(Duration::from_secs(10));
/// dq_abort::abort_with(message_id, &graceful).await?;
/// dq_abort::abort_with(message_id, &AbortOptions::default().mode(AbortMode::Cancel)).await?;
/// # Ok(()) }
/// ```
pub async fn abort_with(message_id: &str, options: &AbortOptions) -> Result<()> {
    let app = App::current().map_err(|e| Error::NoAbortable(Some(e)))?;
    let abortable = app
        .find_middleware::<Abortable>()
        .cloned()
        .ok_or(Error::NoAbortable(None))?;
    abortable.abort_with(message_id, options).await
}

/// Inside an actor whose abort was requested with a grace period: the time left before it is
/// stopped. `None` when no abort was requested (and outside an actor): dramatiq-abort's
/// `abort_requested()`, as a `Duration` instead of float ms.
///
/// ```
/// fn import(rows: &[u32]) -> Result<(), dq_core::ActorError> {
///     for _row in rows {
///         if dq_abort::abort_requested().is_some() {
///             // Save what was done, then stop before the grace period ends.
///             return Ok(());
///         }
///         dq_core::check()?;
///     }
///     Ok(())
/// }
/// assert!(import(&[1, 2]).is_ok());
/// ```
pub fn abort_requested() -> Option<Duration> {
    dq_core::stop_requested()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_truthiness() {
        for (v, t) in [
            (json!(true), true),
            (json!(false), false),
            (json!(0), false),
            (json!(1), true),
            (json!(""), false),
            (json!("x"), true),
        ] {
            assert_eq!(truthy(&v), t, "{v}");
        }
    }

    #[test]
    fn grace_period_from_the_event() {
        let e = Event::new("abort:m").with_param("abort_timeout", 1500);
        assert_eq!(grace(&e), Duration::from_millis(1500));
        assert_eq!(grace(&Event::new("abort:m")), Duration::ZERO);
        let e = Event::new("abort:m").with_param("abort_timeout", -3);
        assert_eq!(grace(&e), Duration::ZERO);
    }

    #[test]
    fn modes_parse() {
        assert_eq!("cancel".parse(), Ok(AbortMode::Cancel));
        assert_eq!("abort".parse(), Ok(AbortMode::Abort));
        assert!("stop".parse::<AbortMode>().is_err());
    }
}
