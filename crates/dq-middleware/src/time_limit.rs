//! TimeLimit: give every message a deadline the worker enforces.

use std::time::{Duration, Instant};

use dq_core::{
    async_trait, App, Control, FailureKind, Hooks, Job, Message, Middleware, MiddlewareError,
    Outcome,
};

/// Dramatiq's default time limit: 10 minutes, in ms.
pub const DEFAULT_TIME_LIMIT_MS: u64 = 600_000;

/// Sets each message's deadline: Dramatiq's `TimeLimit`.
///
/// The limit comes from the message's `time_limit` option, else the actor's `time_limit`, else
/// this middleware's default (10 minutes), in ms; `0` or `null` in the message falls through to
/// the actor. A limit of `i64::MAX` ms or more means no deadline: that is what Python's
/// `float("inf")` decodes to (as the largest float, saturated), and `Duration::MAX` here.
///
/// This middleware only computes the deadline ([`Job::deadline`]); the worker enforces it. An
/// async actor past its deadline is cancelled (its future is dropped). A sync actor cannot be
/// interrupted from outside in Rust: it sees the limit through the cooperative
/// [`dq_core::check`], and its message fails with `TimeLimitExceeded` at the deadline either
/// way. Either failure is an ordinary one, so [`Retries`](crate::Retries) retries it.
///
/// Hooks: `before_process` (sets the deadline), `after_process` (logs a warning when the
/// message failed with `TimeLimitExceeded`, as Dramatiq does).
///
/// ```
/// use std::time::Duration;
/// use dq_middleware::TimeLimit;
///
/// assert_eq!(TimeLimit::default().time_limit(), Duration::from_secs(600));
/// let strict = TimeLimit::default().with_time_limit(Duration::from_secs(30));
/// assert_eq!(strict.time_limit(), Duration::from_secs(30));
/// ```
#[derive(Clone, Debug)]
pub struct TimeLimit {
    time_limit_ms: u64,
}

impl Default for TimeLimit {
    fn default() -> TimeLimit {
        TimeLimit {
            time_limit_ms: DEFAULT_TIME_LIMIT_MS,
        }
    }
}

impl TimeLimit {
    /// Sets the default limit, for messages and actors that set none. `Duration::MAX` means no
    /// limit.
    pub fn with_time_limit(mut self, time_limit: Duration) -> TimeLimit {
        self.time_limit_ms = time_limit.as_millis().min(u64::MAX as u128) as u64;
        self
    }

    /// The default limit.
    pub fn time_limit(&self) -> Duration {
        Duration::from_millis(self.time_limit_ms)
    }

    /// The limit in force for `message`, in ms. Dramatiq's `message.options.get("time_limit") or
    /// actor.options.get("time_limit", default)`.
    fn limit_for(&self, message: &Message, actor_time_limit: Option<u64>) -> u64 {
        match message.options.time_limit() {
            Some(ms) => ms.max(0) as u64,
            None => actor_time_limit.unwrap_or(self.time_limit_ms),
        }
    }

    /// The deadline of `message` when it starts at `start`, or `None` for no limit.
    fn deadline_for(
        &self,
        message: &Message,
        actor_time_limit: Option<u64>,
        start: Instant,
    ) -> Option<Instant> {
        let ms = self.limit_for(message, actor_time_limit);
        if ms >= i64::MAX as u64 {
            return None;
        }
        start.checked_add(Duration::from_millis(ms))
    }
}

#[async_trait]
impl Middleware for TimeLimit {
    fn name(&self) -> &str {
        "TimeLimit"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_PROCESS.union(Hooks::AFTER_PROCESS)
    }

    fn actor_options(&self) -> &[&'static str] {
        &["time_limit"]
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        job.deadline =
            self.deadline_for(&job.message, job.actor.options.time_limit, Instant::now());
        Ok(Control::Continue)
    }

    async fn after_process(
        &self,
        _app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        if outcome
            .error()
            .is_some_and(|e| *e.kind() == FailureKind::TimeLimitExceeded)
        {
            tracing::warn!(
                message_id = %job.message.message_id,
                actor = %job.message.actor_name,
                queue = %job.message.queue_name,
                "Time limit exceeded after {} ms.",
                job.elapsed().as_millis()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(time_limit: Option<serde_json::Value>) -> Message {
        let mut m = Message::new("default", "a", &(), &()).unwrap();
        if let Some(v) = time_limit {
            m.options.insert("time_limit".into(), v);
        }
        m
    }

    fn check(
        mw: &TimeLimit,
        msg: Option<serde_json::Value>,
        actor: Option<u64>,
    ) -> Option<Duration> {
        let start = Instant::now();
        mw.deadline_for(&message(msg), actor, start)
            .map(|d| d.duration_since(start))
    }

    #[test]
    fn default_is_ten_minutes() {
        assert_eq!(
            check(&TimeLimit::default(), None, None),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn message_option_wins_then_actor_then_default() {
        let mw = TimeLimit::default();
        assert_eq!(
            check(&mw, Some(json!(1500)), Some(2000)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            check(&mw, None, Some(2000)),
            Some(Duration::from_millis(2000))
        );
        let mw = TimeLimit::default().with_time_limit(Duration::from_secs(3));
        assert_eq!(check(&mw, None, None), Some(Duration::from_secs(3)));
    }

    #[test]
    fn zero_or_null_in_message_falls_through() {
        let mw = TimeLimit::default();
        assert_eq!(
            check(&mw, Some(json!(0)), Some(2000)),
            Some(Duration::from_millis(2000))
        );
        assert_eq!(
            check(&mw, Some(json!(null)), None),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn python_infinity_means_no_deadline() {
        // Message::decode turns Python's bare `Infinity` into the largest finite float.
        let mw = TimeLimit::default();
        assert_eq!(check(&mw, Some(json!(f64::MAX)), None), None);
        let unlimited = TimeLimit::default().with_time_limit(Duration::MAX);
        assert_eq!(check(&unlimited, None, None), None);
    }
}
