//! A request, made by a middleware, that a running actor stop: what `Abortable` uses.
//!
//! The worker enforces it the way it enforces time limits: an async actor's future is dropped
//! at the interrupt's deadline, and a sync actor's message is concluded with the interrupt's
//! error at the deadline while its thread runs on and sees the error in [`check`](crate::check).
//! Until the deadline (the grace period) the actor can read the time it has left with
//! [`stop_requested`].

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::actor::ActorError;

/// What the worker is told when the request is made: the deadline.
type Listener = Box<dyn FnOnce(Instant) + Send>;

#[derive(Default)]
struct State {
    requested: Option<(Instant, ActorError)>,
    listener: Option<Listener>,
}

/// A stop request for one running message. A middleware sets [`Job::interrupt`](crate::Job)
/// in `before_process` and later calls [`request`](Interrupt::request) from anywhere; the
/// worker stops the actor at the given deadline and fails the message with the given error.
///
/// ```
/// use std::time::{Duration, Instant};
/// use dq_core::{ActorError, FailureKind, Interrupt};
///
/// let interrupt = Interrupt::default();
/// assert_eq!(interrupt.remaining(), None);
/// let stop = ActorError::new(FailureKind::Error, "Abort", "");
/// assert!(interrupt.request(Instant::now() + Duration::from_secs(5), stop.clone()));
/// assert!(interrupt.remaining().is_some());
/// // The first request wins.
/// assert!(!interrupt.request(Instant::now(), stop));
/// assert!(interrupt.due().is_none(), "still in its grace period");
/// ```
#[derive(Default)]
pub struct Interrupt {
    state: Mutex<State>,
}

impl fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Interrupt")
            .field("requested", &state.requested)
            .finish()
    }
}

impl Interrupt {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the actor to stop at `at`, failing its message with `error`. `false` when a stop
    /// was requested already (that request stands).
    pub fn request(&self, at: Instant, error: ActorError) -> bool {
        let mut state = self.lock();
        if state.requested.is_some() {
            return false;
        }
        state.requested = Some((at, error));
        // Called under the lock, so a listener the worker withdrew is never called late.
        if let Some(listener) = state.listener.take() {
            listener(at);
        }
        true
    }

    /// The deadline, once a stop was requested.
    pub fn deadline(&self) -> Option<Instant> {
        self.lock().requested.as_ref().map(|(at, _)| *at)
    }

    /// The time left before the actor is stopped (zero once the deadline passed), once a stop
    /// was requested.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The error to fail the message with, once the deadline passed.
    pub fn due(&self) -> Option<ActorError> {
        match &self.lock().requested {
            Some((at, e)) if Instant::now() >= *at => Some(e.clone()),
            _ => None,
        }
    }

    /// The error the message fails with, once a stop was requested (due or not).
    pub fn error(&self) -> Option<ActorError> {
        self.lock().requested.as_ref().map(|(_, e)| e.clone())
    }

    /// For the worker: `f` is called with the deadline when a stop is requested, at once if it
    /// was already. Replaces an earlier listener.
    pub fn listen(&self, f: impl FnOnce(Instant) + Send + 'static) {
        let mut state = self.lock();
        match &state.requested {
            Some((at, _)) => {
                let at = *at;
                drop(state);
                f(at);
            }
            None => state.listener = Some(Box::new(f)),
        }
    }

    /// For the worker: withdraws the listener once the call returned. After this returns, the
    /// listener is not called any more.
    pub fn unlisten(&self) {
        self.lock().listener = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::FailureKind;
    use std::sync::mpsc;

    fn abort() -> ActorError {
        ActorError::new(FailureKind::Error, "Abort", "")
    }

    #[test]
    fn a_listener_hears_a_later_request_and_an_earlier_one() {
        let i = Interrupt::default();
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        i.listen(move |at| t.send(at).unwrap());
        let at = Instant::now();
        i.request(at, abort());
        assert_eq!(rx.try_recv(), Ok(at));
        i.listen(move |at| tx.send(at).unwrap());
        assert_eq!(rx.try_recv(), Ok(at), "already requested: called at once");
        assert_eq!(
            i.due().map(|e| e.type_name().to_owned()),
            Some("Abort".into())
        );
    }

    #[test]
    fn a_withdrawn_listener_is_not_called() {
        let i = Interrupt::default();
        let (tx, rx) = mpsc::channel::<Instant>();
        i.listen(move |at| tx.send(at).unwrap());
        i.unlisten();
        i.request(Instant::now(), abort());
        assert!(rx.try_recv().is_err());
    }
}
