//! ShutdownNotifications: let opted-in actors know the worker is stopping.

use dq_core::{async_trait, App, Control, Hooks, Job, Message, Middleware, MiddlewareError};

use crate::support::flag;

/// Marks messages whose actor should be interrupted at worker shutdown: Dramatiq's
/// `ShutdownNotifications`.
///
/// Whether to notify comes from the message's `notify_shutdown` option, else the actor's, else
/// this middleware's default (`false`); `null` falls through. This middleware only sets
/// [`Job::notify_shutdown`]; at shutdown the worker interrupts those jobs. An async actor is
/// cancelled; a sync one sees `Shutdown` from [`dq_core::check`]. Their message fails with
/// `Shutdown`, an ordinary failure that [`Retries`](crate::Retries) retries, so the work is
/// picked up again by another worker. Actors that are not notified are left to finish, up to
/// the worker's shutdown timeout.
///
/// Hooks: `before_process`.
///
/// ```
/// use dq_middleware::ShutdownNotifications;
///
/// assert!(!ShutdownNotifications::default().notify_shutdown());
/// let eager = ShutdownNotifications::default().with_notify_shutdown(true);
/// assert!(eager.notify_shutdown());
/// ```
#[derive(Clone, Debug, Default)]
pub struct ShutdownNotifications {
    notify_shutdown: bool,
}

impl ShutdownNotifications {
    /// Sets the default, for messages and actors that do not say.
    pub fn with_notify_shutdown(mut self, notify_shutdown: bool) -> ShutdownNotifications {
        self.notify_shutdown = notify_shutdown;
        self
    }

    /// The default.
    pub fn notify_shutdown(&self) -> bool {
        self.notify_shutdown
    }

    /// Whether `message` is to be interrupted at shutdown: message, then actor, then default.
    fn should_notify(&self, message: &Message, actor_notify: Option<bool>) -> bool {
        flag(&message.options, "notify_shutdown")
            .or(actor_notify)
            .unwrap_or(self.notify_shutdown)
    }
}

#[async_trait]
impl Middleware for ShutdownNotifications {
    fn name(&self) -> &str {
        "ShutdownNotifications"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_PROCESS
    }

    fn actor_options(&self) -> &[&'static str] {
        &["notify_shutdown"]
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        job.notify_shutdown = self.should_notify(&job.message, job.actor.options.notify_shutdown);
        Ok(Control::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn check(default: bool, msg: Option<Value>, actor: Option<bool>) -> bool {
        let mut m = Message::new("default", "a", &(), &()).unwrap();
        if let Some(v) = msg {
            m.options.insert("notify_shutdown".into(), v);
        }
        ShutdownNotifications::default()
            .with_notify_shutdown(default)
            .should_notify(&m, actor)
    }

    #[test]
    fn message_then_actor_then_default() {
        assert!(!check(false, None, None));
        assert!(check(true, None, None));
        assert!(check(false, None, Some(true)));
        assert!(!check(true, None, Some(false)));
        assert!(check(false, Some(json!(true)), Some(false)));
        assert!(!check(true, Some(json!(false)), Some(true)));
    }

    #[test]
    fn null_in_message_falls_through() {
        assert!(check(false, Some(Value::Null), Some(true)));
        assert!(check(true, Some(Value::Null), None));
    }
}
