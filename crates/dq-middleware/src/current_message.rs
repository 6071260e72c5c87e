//! CurrentMessage: let an actor read the message it is processing.

use dq_core::{async_trait, App, Control, Hooks, Job, Middleware, MiddlewareError};

/// Makes [`dq_core::current_message`] return the message being processed, inside the actor:
/// Dramatiq's `CurrentMessage`. It is not in the default stack, since exposing the message
/// costs a copy of it per run.
///
/// Hooks: `before_process` (sets [`Job::expose_message`]; the worker makes the message current
/// while the actor runs, on its thread or in its task).
///
/// ```
/// use dq_broker_stub::StubBroker;
/// use dq_core::App;
/// use dq_middleware::{default_middleware, CurrentMessage};
///
/// // An actor that reports which attempt it is on.
/// fn attempt() -> u32 {
///     match dq_core::current_message() {
///         Some(message) => message.options.retries() + 1,
///         None => 0, // not running inside a worker
///     }
/// }
///
/// # fn main() -> Result<(), dq_core::Error> {
/// let app = App::builder(StubBroker::new())
///     .middleware_arcs(default_middleware())
///     .middleware(CurrentMessage)
///     .build()?;
/// # let _ = app;
/// assert_eq!(attempt(), 0);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CurrentMessage;

#[async_trait]
impl Middleware for CurrentMessage {
    fn name(&self) -> &str {
        "CurrentMessage"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_PROCESS
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        job.expose_message = true;
        Ok(Control::Continue)
    }
}
