//! Helpers shared by the middleware: Python-style option lookups and sending to an actor by name.

use std::time::Duration;

use dq_core::{Actor, App, Message, Options};
use serde_json::Value;

use crate::error::{Error, FollowUp};

/// Python's `bool(value)`, for options Dramatiq reads with `or` or `if`.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A message option read the way Dramatiq reads a nullable flag: `None` when absent or `null`,
/// otherwise its truthiness.
pub(crate) fn flag(options: &Options, key: &str) -> Option<bool> {
    match options.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(truthy(v)),
    }
}

/// An actor name held in a message option, when it is a non-empty string (Dramatiq's `or`).
pub(crate) fn actor_name_option<'a>(options: &'a Options, key: &str) -> Option<&'a str> {
    options.get_str(key).filter(|s| !s.is_empty())
}

/// An actor name held in an option a middleware declared on the actor.
pub(crate) fn actor_extra_name<'a>(actor: &'a Actor, key: &str) -> Option<&'a str> {
    actor
        .options
        .extra
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether a flag a middleware declared on the actor is set (truthy).
pub(crate) fn actor_extra_flag(actor: &Actor, key: &str) -> bool {
    actor.options.extra.get(key).is_some_and(truthy)
}

/// Milliseconds as a duration; negative values (which only a hand-made message can carry)
/// count as zero.
pub(crate) fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// Sends `args` to the actor named `target`, as Dramatiq's `target_actor.send(*args)` does: on
/// the target's queue, without kwargs, options or delay.
///
/// An actor unknown to this process is logged and skipped rather than failing the hook:
/// retrying the message being processed cannot make the actor appear, and the message itself
/// must not be lost over its follow-up (Dramatiq likewise logs the error and carries on).
/// A broker failure is an `Err`, so the worker requeues the message and the follow-up is sent
/// on the next attempt.
pub(crate) async fn send_to_actor(
    app: &App,
    middleware: &str,
    follow_up: FollowUp,
    origin: &Message,
    target: &str,
    args: &[Value],
) -> Result<(), Error> {
    let Some(actor) = app.actor(target) else {
        tracing::error!(
            middleware,
            message_id = %origin.message_id,
            actor = %origin.actor_name,
            queue = %origin.queue_name,
            "Cannot send the {follow_up}: actor {target:?} is not registered in this process."
        );
        return Ok(());
    };
    let enqueue_error = |source: dq_core::Error| Error::Enqueue {
        follow_up,
        message_id: origin.message_id.clone(),
        source,
    };
    let message =
        Message::new(actor.queue_name(), target, args, &()).map_err(|e| enqueue_error(e.into()))?;
    app.enqueue(message, None).await.map_err(enqueue_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_follows_python() {
        for v in [
            json!(null),
            json!(false),
            json!(0),
            json!(0.0),
            json!(""),
            json!([]),
            json!({}),
        ] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [
            json!(true),
            json!(1),
            json!(-0.5),
            json!("x"),
            json!([0]),
            json!({"a": 0}),
        ] {
            assert!(truthy(&v), "{v}");
        }
    }

    #[test]
    fn flags_treat_null_as_absent() {
        let mut o = Options::default();
        assert_eq!(flag(&o, "notify_shutdown"), None);
        o.insert("notify_shutdown".into(), Value::Null);
        assert_eq!(flag(&o, "notify_shutdown"), None);
        o.insert("notify_shutdown".into(), json!(0));
        assert_eq!(flag(&o, "notify_shutdown"), Some(false));
        o.insert("notify_shutdown".into(), json!(1));
        assert_eq!(flag(&o, "notify_shutdown"), Some(true));
    }

    #[test]
    fn negative_millis_are_zero() {
        assert_eq!(millis(-5), Duration::ZERO);
        assert_eq!(millis(1500), Duration::from_millis(1500));
    }
}
