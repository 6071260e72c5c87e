//! The `Middleware` trait: Dramatiq's hook list, with results that protect delivery.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use crate::actor::{Actor, ActorError, Invocation};
use crate::app::App;
use crate::error::MiddlewareError;
use crate::interrupt::Interrupt;
use crate::message::Message;

/// A bit set naming hooks, so the worker only calls (and allocates futures for) the hooks a
/// middleware implements. Return it from [`Middleware::hooks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hooks(u32);

impl Hooks {
    /// No hooks.
    pub const NONE: Hooks = Hooks(0);
    /// `before_enqueue`.
    pub const BEFORE_ENQUEUE: Hooks = Hooks(1);
    /// `after_enqueue`.
    pub const AFTER_ENQUEUE: Hooks = Hooks(1 << 1);
    /// `before_delay_message`.
    pub const BEFORE_DELAY: Hooks = Hooks(1 << 2);
    /// `before_process`.
    pub const BEFORE_PROCESS: Hooks = Hooks(1 << 3);
    /// `after_process`.
    pub const AFTER_PROCESS: Hooks = Hooks(1 << 4);
    /// `after_skip`.
    pub const AFTER_SKIP: Hooks = Hooks(1 << 5);
    /// `before_ack` and `after_ack`.
    pub const ACK: Hooks = Hooks(1 << 6);
    /// `before_nack` and `after_nack`.
    pub const NACK: Hooks = Hooks(1 << 7);
    /// Worker boot and shutdown hooks.
    pub const WORKER: Hooks = Hooks(1 << 8);
    /// `before_declare_actor`, `after_declare_actor`, `after_declare_queue`.
    pub const DECLARE: Hooks = Hooks(1 << 9);
    /// `around_process`.
    pub const AROUND_PROCESS: Hooks = Hooks(1 << 10);
    /// Every hook (the default: correct for any middleware, only slower).
    pub const ALL: Hooks = Hooks(u32::MAX);

    /// Both sets.
    pub const fn union(self, other: Hooks) -> Hooks {
        Hooks(self.0 | other.0)
    }

    /// Whether every hook of `other` is in `self`.
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Hooks {
    type Output = Hooks;
    fn bitor(self, rhs: Hooks) -> Hooks {
        self.union(rhs)
    }
}

/// What a before-process hook decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// Run the actor.
    Continue,
    /// Do not run it: `after_skip` hooks run instead, then the message is acked, or nacked if a
    /// hook marked the job failed (AgeLimit does both).
    Skip,
}

/// How an actor call ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// It returned this value (serialized).
    Success(Value),
    /// It failed.
    Failure(ActorError),
}

impl Outcome {
    /// The error, if it failed.
    pub fn error(&self) -> Option<&ActorError> {
        match self {
            Outcome::Failure(e) => Some(e),
            Outcome::Success(_) => None,
        }
    }
}

/// A message being processed by the worker: Dramatiq's message proxy. Hooks read and change it;
/// the worker reads `failed` to decide between ack and nack once every after-hook returned.
#[derive(Debug)]
pub struct Job {
    /// The message. After-hooks see option changes made by earlier hooks (Retries' `retries`).
    pub message: Message,
    /// The actor it is for.
    pub actor: Arc<Actor>,
    /// When the time limit passes, set by TimeLimit; the worker enforces it.
    pub deadline: Option<Instant>,
    /// Whether the actor is interrupted at worker shutdown, set by ShutdownNotifications.
    pub notify_shutdown: bool,
    /// Whether `dq::current_message()` returns this message while it runs (CurrentMessage).
    pub expose_message: bool,
    /// When processing started.
    pub started: Instant,
    /// The worker's `dq.process` span for this message (disabled outside a worker): its hooks
    /// and the actor run inside it, and it records the outcome. A middleware may add fields to
    /// it, or use it as the parent of its own spans.
    pub span: tracing::Span,
    /// What middleware keep on the job from one hook to the next (an OpenTelemetry span, a
    /// Sentry transaction), one value per type, dropped with the job.
    pub extensions: Extensions,
    /// A stop request a middleware may make while the actor runs (set by Abortable in
    /// `before_process`); the worker enforces it like a deadline. `None`: nothing can stop it.
    pub interrupt: Option<Arc<Interrupt>>,
    failed: Option<String>,
}

/// Values of any type, one per type: what a middleware carries on a [`Job`] from its
/// `before_process` to its `after_process` without a map of its own keyed by message id (which
/// would leak the entries of messages whose after-hooks never run, such as a requeued one).
///
/// Use a type private to your middleware as the key, so no other middleware can touch it.
///
/// ```
/// use dq_core::Extensions;
///
/// struct Started(u64);
///
/// let mut ext = Extensions::default();
/// ext.insert(Started(7));
/// assert_eq!(ext.get::<Started>().map(|s| s.0), Some(7));
/// assert_eq!(ext.remove::<Started>().map(|s| s.0), Some(7));
/// assert!(ext.get::<Started>().is_none());
/// ```
#[derive(Default)]
pub struct Extensions(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl Extensions {
    /// Stores `value`, returning the value of its type stored before, if any.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        self.0
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    /// The value of type `T`, if one is stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<T>())
    }

    /// The value of type `T`, mutably, if one is stored.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        self.0
            .get_mut(&TypeId::of::<T>())
            .and_then(|b| b.downcast_mut::<T>())
    }

    /// Takes the value of type `T` out, if one is stored.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        self.0
            .remove(&TypeId::of::<T>())
            .and_then(|b| b.downcast::<T>().ok().map(|b| *b))
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.0.len())
            .finish()
    }
}

impl Job {
    /// A job for `message` handled by `actor`.
    pub fn new(message: Message, actor: Arc<Actor>) -> Job {
        Job {
            message,
            actor,
            deadline: None,
            notify_shutdown: false,
            expose_message: false,
            started: Instant::now(),
            span: tracing::Span::none(),
            extensions: Extensions::default(),
            interrupt: None,
            failed: None,
        }
    }

    /// Marks the message failed: it will be dead-lettered with `reason` instead of acked.
    pub fn fail(&mut self, reason: impl Into<String>) {
        if self.failed.is_none() {
            self.failed = Some(reason.into());
        }
    }

    /// Whether the message is marked failed.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Why it was marked failed.
    pub fn failure_reason(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Time spent since processing started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A Dramatiq middleware. Every hook has a no-op default; implement the ones you need and list
/// them in [`hooks`](Middleware::hooks).
///
/// Before-hooks run in the order middleware was added, after-hooks in reverse. Errors matter:
/// an `Err` from a before-hook aborts that enqueue or that run (the message is requeued); an
/// `Err` from `after_process` or `after_skip` means the worker does **not** ack and requeues
/// the message, so a retry that failed to enqueue is never lost. An `Err` from a boot or
/// declare hook (`before_worker_boot`, `after_worker_boot`, `before_declare_actor`,
/// `after_declare_actor`, `after_declare_queue`) stops the worker from starting: `Worker::start`
/// returns it (after stopping what had started, for `after_worker_boot`) and the worker command
/// exits. Errors from observer hooks (ack, nack, delay, shutdown) are logged with the
/// middleware's name.
///
/// ```
/// use dq_core::{async_trait, App, Control, Hooks, Job, Middleware, MiddlewareError};
///
/// struct Audit;
///
/// #[async_trait]
/// impl Middleware for Audit {
///     fn name(&self) -> &str { "Audit" }
///     fn hooks(&self) -> Hooks { Hooks::BEFORE_PROCESS }
///     async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
///         println!("running {}", job.message);
///         Ok(Control::Continue)
///     }
/// }
/// ```
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// The name used in logs and errors.
    fn name(&self) -> &str;

    /// The hooks this middleware implements. The default, every hook, is always correct.
    fn hooks(&self) -> Hooks {
        Hooks::ALL
    }

    /// Actor options this middleware reads (so `#[dq::actor(my_option = ...)]` is accepted).
    fn actor_options(&self) -> &[&'static str] {
        &[]
    }

    /// The barrier this middleware provides for groups with completion callbacks (the
    /// `GroupCallbacks` middleware does). [`Group::run_with`](crate::Group::run_with) uses the
    /// first middleware of the app that has one, as Dramatiq looks its `GroupCallbacks` up.
    fn group_barrier(&self) -> Option<&dyn crate::composition::GroupBarrier> {
        None
    }

    /// This middleware as [`Any`](std::any::Any), so code that holds an app can find a
    /// middleware of a known type with [`App::find_middleware`] (as Python's `abort()` looks
    /// up the broker's `Abortable`). The default, `None`, hides it.
    fn as_any(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        None
    }

    /// Before a message is enqueued; may change it. `Err` aborts the send.
    async fn before_enqueue(
        &self,
        _app: &App,
        _message: &mut Message,
        _delay: Option<Duration>,
    ) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// After the broker has the message.
    async fn after_enqueue(
        &self,
        _app: &App,
        _message: &Message,
        _delay: Option<Duration>,
    ) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// When the worker starts holding a message until its `eta`.
    async fn before_delay_message(
        &self,
        _app: &App,
        _message: &Message,
    ) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// Before the actor runs. Return [`Control::Skip`] to not run it.
    async fn before_process(&self, _app: &App, _job: &mut Job) -> Result<Control, MiddlewareError> {
        Ok(Control::Continue)
    }

    /// Wraps the prepared call (for spans, limits, concurrency). The default returns it as is.
    ///
    /// Return the same kind of [`Invocation`] you were given: the worker chose where the message
    /// runs from its kind when it took the message in. A call whose kind a hook changes still
    /// runs correctly, but at a cost: a future made of a blocking call is polled to completion
    /// on the worker thread that holds its slot, and a blocking fn made of a future is handed
    /// from its task to a worker thread.
    fn around_process(&self, _job: &Job, call: Invocation) -> Invocation {
        call
    }

    /// After the actor ran, with its outcome. May mark the job failed, enqueue follow-ups.
    async fn after_process(
        &self,
        _app: &App,
        _job: &mut Job,
        _outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// After a before-hook skipped the message.
    async fn after_skip(&self, _app: &App, _job: &mut Job) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// Before the message is acked.
    async fn before_ack(&self, _app: &App, _message: &Message) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// After the message was acked.
    async fn after_ack(&self, _app: &App, _message: &Message) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// Before the message is dead-lettered.
    async fn before_nack(
        &self,
        _app: &App,
        _message: &Message,
        _reason: &str,
    ) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// After the message was dead-lettered.
    async fn after_nack(
        &self,
        _app: &App,
        _message: &Message,
        _reason: &str,
    ) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// Before a worker starts its consumers. An `Err` stops the worker from starting.
    async fn before_worker_boot(&self, _app: &App) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// After a worker started. An `Err` stops the worker again and `Worker::start` returns it.
    async fn after_worker_boot(&self, _app: &App) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// When a worker begins shutting down.
    async fn before_worker_shutdown(&self, _app: &App) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// When a worker has shut down.
    async fn after_worker_shutdown(&self, _app: &App) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// Before an actor is declared to a worker.
    async fn before_declare_actor(
        &self,
        _app: &App,
        _actor: &Actor,
    ) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// After an actor was declared.
    async fn after_declare_actor(&self, _app: &App, _actor: &Actor) -> Result<(), MiddlewareError> {
        Ok(())
    }

    /// After a queue (and its delay queue) was declared on the broker.
    async fn after_declare_queue(&self, _app: &App, _queue: &str) -> Result<(), MiddlewareError> {
        Ok(())
    }
}
