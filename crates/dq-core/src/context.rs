//! What a running actor can ask about itself: its message, and whether it should stop.
//!
//! A sync actor cannot be interrupted from outside in Rust, so time limits and shutdown
//! notifications reach it through [`check`]: call it between steps of long work and return its
//! error. The worker fails the message at the deadline either way; `check` lets the thread stop
//! doing work nobody will use. An async actor past its limit is cancelled outright (its future is
//! dropped), and `check` works there too.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::actor::{ActorError, BoxActorFuture};
use crate::app::{App, Entered};
use crate::interrupt::Interrupt;
use crate::message::Message;

const RUNNING: u8 = 0;
const TIMED_OUT: u8 = 1;
const SHUTDOWN: u8 = 2;

/// The state the worker shares with one running actor call.
#[derive(Debug)]
pub struct ActorContext {
    message: Option<Arc<Message>>,
    deadline: Option<Instant>,
    state: AtomicU8,
    app: Option<App>,
    interrupt: Option<Arc<Interrupt>>,
}

impl ActorContext {
    /// A context for one call. `message` is exposed through [`current_message`] when given.
    pub fn new(message: Option<Arc<Message>>, deadline: Option<Instant>) -> ActorContext {
        ActorContext {
            message,
            deadline,
            state: AtomicU8::new(RUNNING),
            app: None,
            interrupt: None,
        }
    }

    /// The stop request a middleware may make of this call ([`Job::interrupt`](crate::Job)):
    /// once its deadline passed, [`check`] returns its error.
    pub fn with_interrupt(mut self, interrupt: Option<Arc<Interrupt>>) -> ActorContext {
        self.interrupt = interrupt;
        self
    }

    /// The error of a stop request whose deadline passed, if any.
    pub fn interrupted(&self) -> Option<ActorError> {
        self.interrupt.as_ref().and_then(|i| i.due())
    }

    /// The app the actor runs in: while the call runs, [`App::current`] is this app, so the
    /// messages an actor sends go through its own worker's app.
    pub fn with_app(mut self, app: App) -> ActorContext {
        self.app = Some(app);
        self
    }

    /// Tells the actor its time limit passed.
    pub fn interrupt_time_limit(&self) {
        let _ =
            self.state
                .compare_exchange(RUNNING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Tells the actor the worker is shutting down.
    pub fn interrupt_shutdown(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, SHUTDOWN, Ordering::AcqRel, Ordering::Acquire);
    }

    /// `Err` once the actor should stop: `TimeLimitExceeded` past the deadline, `Shutdown` when
    /// the worker is stopping and the actor asked to be notified, a middleware's error (`Abort`)
    /// once the grace period of its stop request ([`Interrupt`]) passed.
    pub fn check(&self) -> Result<(), ActorError> {
        match self.state.load(Ordering::Acquire) {
            TIMED_OUT => return Err(ActorError::time_limit_exceeded()),
            SHUTDOWN => return Err(ActorError::shutdown()),
            _ => {}
        }
        if let Some(e) = self.interrupted() {
            return Err(e);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.interrupt_time_limit();
            return Err(ActorError::time_limit_exceeded());
        }
        Ok(())
    }

    /// The deadline, if a time limit applies.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Runs `f` with this context current on this thread.
    pub fn scope<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        let prev = CURRENT.with(|c| c.replace(Some(self.clone())));
        struct Restore(Option<Arc<ActorContext>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let prev = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = prev);
            }
        }
        let _restore = Restore(prev);
        let _entered = self.app.clone().map(Entered::set);
        f()
    }

    /// Wraps an async actor's future so this context is current whenever it is polled.
    pub fn wrap(self: &Arc<Self>, fut: BoxActorFuture) -> Scoped {
        Scoped {
            ctx: self.clone(),
            fut,
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<ActorContext>>> = const { RefCell::new(None) };
}

/// A future run with an [`ActorContext`] current.
pub struct Scoped {
    ctx: Arc<ActorContext>,
    fut: BoxActorFuture,
}

impl Future for Scoped {
    type Output = crate::actor::ActorResult;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let ctx = this.ctx.clone();
        ctx.scope(|| this.fut.as_mut().poll(cx))
    }
}

/// Inside an actor: `Err` once it should stop (time limit passed, or shutdown for actors with
/// `notify_shutdown`). Outside an actor it is always `Ok`.
///
/// ```
/// fn long_job(steps: u32) -> Result<(), dq_core::ActorError> {
///     for _ in 0..steps {
///         dq_core::check()?;
///         // ... one step of work ...
///     }
///     Ok(())
/// }
/// assert!(long_job(3).is_ok());
/// ```
pub fn check() -> Result<(), ActorError> {
    CURRENT.with(|c| match &*c.borrow() {
        Some(ctx) => ctx.check(),
        None => Ok(()),
    })
}

/// Inside an actor: the time left before it is stopped, once a middleware asked it to stop (an
/// abort with a grace period: `dq::abort::abort_requested` reads this). `None` when no stop was
/// requested, and outside an actor. Zero once the grace period is over; [`check`] then fails.
///
/// ```
/// assert!(dq_core::stop_requested().is_none()); // not inside an actor
/// ```
pub fn stop_requested() -> Option<std::time::Duration> {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .and_then(|ctx| ctx.interrupt.as_ref())
            .and_then(|i| i.remaining())
    })
}

/// Inside an actor, with the CurrentMessage middleware installed: the message being processed.
///
/// ```
/// assert!(dq_core::current_message().is_none()); // not inside an actor
/// ```
pub fn current_message() -> Option<Arc<Message>> {
    CURRENT.with(|c| c.borrow().as_ref().and_then(|ctx| ctx.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn check_reports_deadline_and_shutdown() {
        let ctx = Arc::new(ActorContext::new(
            None,
            Some(Instant::now() + Duration::from_millis(20)),
        ));
        assert!(ctx.scope(check).is_ok());
        std::thread::sleep(Duration::from_millis(30));
        let e = ctx.scope(check).unwrap_err();
        assert_eq!(e.type_name(), "TimeLimitExceeded");
        let ctx = Arc::new(ActorContext::new(None, None));
        ctx.interrupt_shutdown();
        assert_eq!(ctx.scope(check).unwrap_err().type_name(), "Shutdown");
        assert!(check().is_ok());
    }
}
