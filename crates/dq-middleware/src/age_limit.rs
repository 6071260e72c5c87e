//! AgeLimit: dead-letter messages that waited too long.

use std::time::Duration;

use dq_core::{async_trait, App, Control, Hooks, Job, Message, Middleware, MiddlewareError};

/// Dead-letters a message whose age (`now_ms - message_timestamp`) reached its `max_age`,
/// without running it. Dramatiq's `AgeLimit`.
///
/// The limit comes from the message's `max_age` option, else the actor's `max_age`, else this
/// middleware's default, in ms. As in Dramatiq, `0` or `null` in the message falls through to
/// the actor, and no limit at all (the default) lets messages live forever. The timestamp is
/// kept across retries, so a retried message ages from its first send.
///
/// Hooks: `before_process`. A message past its age is marked failed with its reason and skipped
/// ([`Control::Skip`]), so the worker dead-letters it.
///
/// ```
/// use std::time::Duration;
/// use dq_middleware::AgeLimit;
///
/// // Messages older than an hour are dead-lettered, unless they or their actor say otherwise.
/// let age_limit = AgeLimit::default().with_max_age(Duration::from_secs(3600));
/// assert_eq!(age_limit.max_age(), Some(Duration::from_secs(3600)));
/// assert_eq!(AgeLimit::default().max_age(), None);
/// ```
#[derive(Clone, Debug, Default)]
pub struct AgeLimit {
    max_age_ms: Option<u64>,
}

impl AgeLimit {
    /// Sets the default age limit, for messages and actors that set none.
    pub fn with_max_age(mut self, max_age: Duration) -> AgeLimit {
        self.max_age_ms = Some(max_age.as_millis().min(u64::MAX as u128) as u64);
        self
    }

    /// The default age limit, if any.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age_ms.map(Duration::from_millis)
    }

    /// The limit in force for `message`, in ms, or `None` for no limit. Dramatiq's
    /// `message.options.get("max_age") or actor.options.get("max_age", default)`: a `0` on the
    /// actor means no limit, not the default.
    fn limit_for(&self, message: &Message, actor_max_age: Option<u64>) -> Option<i64> {
        let limit = match message.options.max_age() {
            Some(ms) => ms,
            None => match actor_max_age {
                Some(ms) => ms.min(i64::MAX as u64) as i64,
                None => self.max_age_ms?.min(i64::MAX as u64) as i64,
            },
        };
        (limit != 0).then_some(limit)
    }

    /// Why `message` is too old at `now_ms`, or `None` when it may run.
    fn exceeded(
        &self,
        message: &Message,
        actor_max_age: Option<u64>,
        now_ms: i64,
    ) -> Option<String> {
        let max_age = self.limit_for(message, actor_max_age)?;
        let age = now_ms.saturating_sub(message.message_timestamp);
        (age >= max_age)
            .then(|| format!("message age limit exceeded (max_age {max_age} ms, age {age} ms)"))
    }
}

#[async_trait]
impl Middleware for AgeLimit {
    fn name(&self) -> &str {
        "AgeLimit"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_PROCESS
    }

    fn actor_options(&self) -> &[&'static str] {
        &["max_age"]
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        let Some(reason) =
            self.exceeded(&job.message, job.actor.options.max_age, dq_core::now_ms())
        else {
            return Ok(Control::Continue);
        };
        tracing::warn!(
            message_id = %job.message.message_id,
            actor = %job.message.actor_name,
            queue = %job.message.queue_name,
            "Message has exceeded its age limit."
        );
        job.fail(reason);
        Ok(Control::Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(timestamp: i64, max_age: Option<serde_json::Value>) -> Message {
        let mut m = Message::new("default", "a", &(), &()).unwrap();
        m.message_timestamp = timestamp;
        if let Some(v) = max_age {
            m.options.insert("max_age".into(), v);
        }
        m
    }

    fn check(
        mw: &AgeLimit,
        msg_max_age: Option<serde_json::Value>,
        actor: Option<u64>,
        age: i64,
    ) -> bool {
        mw.exceeded(&message(1_000_000, msg_max_age), actor, 1_000_000 + age)
            .is_some()
    }

    #[test]
    fn no_limit_anywhere_never_expires() {
        assert!(!check(&AgeLimit::default(), None, None, i64::MAX / 2));
    }

    #[test]
    fn expires_at_exactly_max_age() {
        let mw = AgeLimit::default().with_max_age(Duration::from_millis(100));
        assert!(!check(&mw, None, None, 99));
        assert!(check(&mw, None, None, 100));
    }

    #[test]
    fn message_option_wins_then_actor_then_default() {
        let mw = AgeLimit::default().with_max_age(Duration::from_millis(100));
        assert!(!check(&mw, Some(json!(1000)), Some(50), 500));
        assert!(check(&mw, None, Some(50), 60));
        assert!(!check(&mw, None, Some(500), 200));
    }

    #[test]
    fn zero_or_null_in_message_falls_through() {
        let mw = AgeLimit::default().with_max_age(Duration::from_millis(100));
        assert!(check(&mw, Some(json!(0)), None, 150));
        assert!(check(&mw, Some(json!(null)), Some(50), 60));
    }

    #[test]
    fn zero_on_actor_means_no_limit() {
        let mw = AgeLimit::default().with_max_age(Duration::from_millis(100));
        assert!(!check(&mw, None, Some(0), 1_000_000));
    }

    #[test]
    fn reason_names_limit_and_age() {
        let mw = AgeLimit::default();
        let reason = mw
            .exceeded(&message(1_000, Some(json!(10))), None, 1_025)
            .unwrap();
        assert_eq!(
            reason,
            "message age limit exceeded (max_age 10 ms, age 25 ms)"
        );
    }
}
