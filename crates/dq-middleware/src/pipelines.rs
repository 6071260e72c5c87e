//! Pipelines: forward each stage's result to the next stage.

use dq_core::{async_trait, Actor, App, Hooks, Job, Message, Middleware, MiddlewareError, Outcome};
use serde_json::Value;

use crate::error::{Error, FollowUp};
use crate::support::{actor_extra_flag, flag, millis};

/// Enqueues the next stage of a pipeline when a stage succeeds: Dramatiq's `Pipelines`, the
/// message-forwarding half (group completion lives elsewhere).
///
/// A message built by `pipeline()` carries the next message, whole, in its `pipe_target`
/// option. When the actor succeeds and no middleware marked the message failed, that message
/// is enqueued, with the result appended to its positional arguments unless `pipe_ignore` is
/// set, and after its `delay` option if it has one (through the delay queue, as Dramatiq does).
/// It keeps its own `message_id` and timestamp.
///
/// `pipe_ignore` is read from the next message's options, then, as in Dramatiq, from the
/// options of the actor that just ran, and also from the options of the next message's actor
/// when that actor is registered in this process (declaring `pipe_ignore` on the actor that
/// ignores its input is the natural reading, and Dramatiq's check on the current actor is
/// kept for compatibility).
///
/// A `pipe_target` that is not a valid message cannot be repaired by running the stage again,
/// so the message is marked failed with that reason and dead-lettered, the target inside it:
/// Dramatiq would drop the rest of the pipeline instead. A next stage the broker refuses makes
/// the hook fail, so the worker requeues the message instead of acking it: the stage may run
/// twice, and the next one is never lost.
///
/// Hooks: `after_process`.
///
/// ```
/// use dq_core::{Message, Middleware};
/// use dq_middleware::Pipelines;
///
/// // A two-stage pipeline by hand: `add(1, 2)` then `double(<result>)`.
/// let next = Message::new("default", "double", &(), &()).unwrap();
/// let mut first = Message::new("default", "add", &(1, 2), &()).unwrap();
/// first.options.set_pipe_target(&next);
/// assert_eq!(first.options.pipe_target().unwrap()["actor_name"], "double");
/// assert_eq!(Pipelines.actor_options(), &["pipe_ignore", "pipe_target"]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Pipelines;

impl Pipelines {
    /// The next stage to enqueue after `job` succeeded with `result`, and its delay in ms, or
    /// `None` when the message has no `pipe_target`.
    fn next_stage(
        app: &App,
        job: &Job,
        result: &Value,
    ) -> Option<Result<(Message, Option<i64>), Error>> {
        let target = match job.message.options.get("pipe_target") {
            None | Some(Value::Null) => return None,
            Some(t) => t,
        };
        Some(Pipelines::build_next(
            target,
            &job.message,
            &job.actor,
            result,
            |name| app.actor(name).map(|a| &**a),
        ))
    }

    /// Builds the next message from its `pipe_target` object. `lookup` finds an actor by name
    /// in this process.
    fn build_next<'a>(
        target: &Value,
        current: &Message,
        current_actor: &Actor,
        result: &Value,
        lookup: impl Fn(&str) -> Option<&'a Actor>,
    ) -> Result<(Message, Option<i64>), Error> {
        let invalid = |source| Error::InvalidPipeTarget {
            message_id: current.message_id.clone(),
            source,
        };
        let mut next = Message::from_value(target).map_err(invalid)?;
        let ignore = flag(&next.options, "pipe_ignore").unwrap_or(false)
            || actor_extra_flag(current_actor, "pipe_ignore")
            || lookup(&next.actor_name).is_some_and(|a| actor_extra_flag(a, "pipe_ignore"));
        if !ignore {
            next.push_arg(result).map_err(invalid)?;
        }
        let delay = next.options.delay();
        Ok((next, delay))
    }
}

#[async_trait]
impl Middleware for Pipelines {
    fn name(&self) -> &str {
        "Pipelines"
    }

    fn hooks(&self) -> Hooks {
        Hooks::AFTER_PROCESS
    }

    fn actor_options(&self) -> &[&'static str] {
        &["pipe_ignore", "pipe_target"]
    }

    async fn after_process(
        &self,
        app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        let Outcome::Success(result) = outcome else {
            return Ok(());
        };
        if job.is_failed() {
            return Ok(());
        }
        let (next, delay) = match Pipelines::next_stage(app, job, result) {
            None => return Ok(()),
            Some(Ok(next)) => next,
            Some(Err(e)) => {
                tracing::error!(
                    message_id = %job.message.message_id,
                    actor = %job.message.actor_name,
                    queue = %job.message.queue_name,
                    error = %dq_core::ErrorChain(&e),
                    "Cannot enqueue the next pipeline stage; dead-lettering the message."
                );
                let reason = dq_core::ErrorChain(&e).to_string();
                job.fail(reason);
                return Ok(());
            }
        };
        app.enqueue(next, delay.map(millis))
            .await
            .map_err(|source| {
                Error::Enqueue {
                    follow_up: FollowUp::PipelineStage,
                    message_id: job.message.message_id.clone(),
                    source,
                }
                .into_middleware_error(self.name())
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dq_core::{ActorOptions, ArgsError, Invocation};
    use serde_json::json;

    fn handler(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
        Ok(Invocation::Sync(Box::new(|| Ok(Value::Null))))
    }

    fn actor(name: &str, pipe_ignore: bool) -> Actor {
        let mut options = ActorOptions::default();
        if pipe_ignore {
            options.extra.insert("pipe_ignore".into(), json!(true));
        }
        Actor::new(name, options, handler)
    }

    fn check(
        target_options: Value,
        current_ignores: bool,
        target_actor_ignores: bool,
    ) -> Result<(Message, Option<i64>), Error> {
        let mut next = Message::new("other", "next", &(1,), &()).unwrap();
        if let Value::Object(o) = target_options {
            next.options = o.into();
        }
        let current = Message::new("default", "first", &(), &()).unwrap();
        let current_actor = actor("first", current_ignores);
        let target_actor = actor("next", target_actor_ignores);
        Pipelines::build_next(
            &next.to_value(),
            &current,
            &current_actor,
            &json!({"r": 7}),
            |name| (name == "next").then_some(&target_actor),
        )
    }

    #[test]
    fn appends_the_result_and_keeps_identity() {
        let mut next = Message::new("other", "next", &(1,), &()).unwrap();
        next.message_timestamp = 42;
        let current = Message::new("default", "first", &(), &()).unwrap();
        let (built, delay) = Pipelines::build_next(
            &next.to_value(),
            &current,
            &actor("first", false),
            &json!(5),
            |_| None,
        )
        .unwrap();
        assert_eq!(built.args_value().unwrap(), json!([1, 5]));
        assert_eq!(built.message_id, next.message_id);
        assert_eq!(built.message_timestamp, 42);
        assert_eq!(built.queue_name, "other");
        assert_eq!(delay, None);
    }

    #[test]
    fn pipe_ignore_on_target_message_or_either_actor() {
        let args = |r: Result<(Message, Option<i64>), Error>| r.unwrap().0.args_value().unwrap();
        assert_eq!(args(check(json!({}), false, false)), json!([1, {"r": 7}]));
        assert_eq!(
            args(check(json!({"pipe_ignore": true}), false, false)),
            json!([1])
        );
        assert_eq!(args(check(json!({}), true, false)), json!([1]));
        assert_eq!(args(check(json!({}), false, true)), json!([1]));
        assert_eq!(
            args(check(json!({"pipe_ignore": false}), false, false)),
            json!([1, {"r": 7}])
        );
    }

    #[test]
    fn delay_comes_from_the_target() {
        let (_, delay) = check(json!({"delay": 1500}), false, false).unwrap();
        assert_eq!(delay, Some(1500));
    }

    #[test]
    fn invalid_target_is_an_error() {
        let current = Message::new("default", "first", &(), &()).unwrap();
        let err = Pipelines::build_next(
            &json!({"actor_name": "x"}),
            &current,
            &actor("first", false),
            &Value::Null,
            |_| None,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidPipeTarget { .. }), "{err}");
    }
}
