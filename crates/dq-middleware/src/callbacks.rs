//! Callbacks: send `on_success` / `on_failure` actors a message about each run.

use dq_core::{async_trait, Actor, App, Hooks, Job, Message, Middleware, MiddlewareError, Outcome};
use serde_json::{json, Value};

use crate::error::FollowUp;
use crate::support::{actor_extra_name, actor_name_option, send_to_actor};

/// Sends a message to the `on_success` actor after each success, and to the `on_failure` actor
/// after each failed attempt (also those that will be retried): Dramatiq's `Callbacks`.
///
/// The callback actor is named by the message's option, else the actor's option of the same
/// name. It receives:
/// - `on_success`: `[message, result]`;
/// - `on_failure`: `[message, {"type": <error type name>, "message": <error message>}]`;
///
/// where `message` is the full seven-key message object, with the options as they are after
/// the other middleware's after-hooks (Retries' `retries` and `traceback` included). The
/// callback is a plain send: the callback actor's queue, no options, no delay.
///
/// A callback actor that is not registered in this process is logged as an error and skipped:
/// the message's own outcome stands (Dramatiq, which needs the actor declared on its broker,
/// does the same). A callback that the broker refuses makes the hook fail, so the worker
/// requeues the message instead of acking it: the callback may then be sent twice, never
/// zero times.
///
/// Hooks: `after_process`.
///
/// ```
/// use dq_broker_stub::StubBroker;
/// use dq_core::{App, Message, SendOptions};
/// use dq_middleware::default_middleware;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dq_core::Error> {
/// let app = App::builder(StubBroker::new())
///     .middleware_arcs(default_middleware())
///     .build()?;
/// let mut message = Message::new("default", "count_words", &("https://example.com",), &())?;
/// SendOptions::new()
///     .on_success("print_result")
///     .on_failure("print_error")
///     .apply_to_message(&mut message);
/// let sent = app.enqueue(message, None).await?;
/// assert_eq!(sent.options.on_success(), Some("print_result"));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Callbacks;

impl Callbacks {
    /// The callback to send after `outcome`, with its arguments, if the message or its actor
    /// asks for one.
    fn callback<'a>(
        message: &'a Message,
        actor: &'a Actor,
        outcome: &Outcome,
    ) -> Option<(FollowUp, &'a str, [Value; 2])> {
        let (follow_up, key) = match outcome {
            Outcome::Success(_) => (FollowUp::OnSuccess, "on_success"),
            Outcome::Failure(_) => (FollowUp::OnFailure, "on_failure"),
        };
        let target =
            actor_name_option(&message.options, key).or_else(|| actor_extra_name(actor, key))?;
        let detail = match outcome {
            Outcome::Success(result) => result.clone(),
            Outcome::Failure(e) => json!({"type": e.type_name(), "message": e.message()}),
        };
        Some((follow_up, target, [message.to_value(), detail]))
    }
}

#[async_trait]
impl Middleware for Callbacks {
    fn name(&self) -> &str {
        "Callbacks"
    }

    fn hooks(&self) -> Hooks {
        Hooks::AFTER_PROCESS
    }

    fn actor_options(&self) -> &[&'static str] {
        &["on_success", "on_failure"]
    }

    async fn after_process(
        &self,
        app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        let Some((follow_up, target, args)) =
            Callbacks::callback(&job.message, &job.actor, outcome)
        else {
            return Ok(());
        };
        send_to_actor(app, self.name(), follow_up, &job.message, target, &args)
            .await
            .map_err(|e| e.into_middleware_error(self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dq_core::{ActorError, ActorOptions, ArgsError, FailureKind, Invocation};

    fn handler(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
        Ok(Invocation::Sync(Box::new(|| Ok(Value::Null))))
    }

    fn actor(extra: Value) -> Actor {
        let mut options = ActorOptions::default();
        if let Value::Object(m) = extra {
            options.extra = m;
        }
        Actor::new("a", options, handler)
    }

    fn message(options: Value) -> Message {
        let mut m = Message::new("default", "a", &(1,), &()).unwrap();
        if let Value::Object(o) = options {
            m.options = o.into();
        }
        m
    }

    fn failure() -> Outcome {
        Outcome::Failure(ActorError::new(FailureKind::Error, "ValueError", "boom"))
    }

    fn check(
        msg: Value,
        actor_opts: Value,
        outcome: &Outcome,
    ) -> Option<(FollowUp, String, [Value; 2])> {
        let m = message(msg);
        let a = actor(actor_opts);
        Callbacks::callback(&m, &a, outcome).map(|(f, t, args)| (f, t.to_owned(), args))
    }

    #[test]
    fn nothing_without_a_callback() {
        assert!(check(json!({}), json!({}), &Outcome::Success(json!(3))).is_none());
        assert!(check(json!({"on_success": "s"}), json!({}), &failure()).is_none());
        assert!(check(
            json!({"on_failure": "f"}),
            json!({}),
            &Outcome::Success(json!(3))
        )
        .is_none());
    }

    #[test]
    fn success_sends_message_and_result() {
        let (f, target, args) = check(
            json!({"on_success": "s"}),
            json!({}),
            &Outcome::Success(json!([1, 2])),
        )
        .unwrap();
        assert_eq!(f, FollowUp::OnSuccess);
        assert_eq!(target, "s");
        assert_eq!(args[0]["actor_name"], "a");
        assert_eq!(args[0]["options"]["on_success"], "s");
        assert_eq!(args[1], json!([1, 2]));
    }

    #[test]
    fn failure_sends_type_and_message() {
        let (f, target, args) = check(json!({}), json!({"on_failure": "f"}), &failure()).unwrap();
        assert_eq!(f, FollowUp::OnFailure);
        assert_eq!(target, "f");
        assert_eq!(args[1], json!({"type": "ValueError", "message": "boom"}));
    }

    #[test]
    fn message_option_wins_over_actor_option() {
        let (_, target, _) = check(
            json!({"on_success": "m"}),
            json!({"on_success": "a"}),
            &Outcome::Success(Value::Null),
        )
        .unwrap();
        assert_eq!(target, "m");
        // An empty name is falsy in Dramatiq's `or`, so the actor's option applies.
        let (_, target, _) = check(
            json!({"on_success": ""}),
            json!({"on_success": "a"}),
            &Outcome::Success(Value::Null),
        )
        .unwrap();
        assert_eq!(target, "a");
    }
}
