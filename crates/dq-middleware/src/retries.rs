//! Retries: retry failed messages with exponential backoff, dead-letter them past the limit.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dq_core::{
    async_trait, compute_backoff, ActorError, ActorOptions, App, FailureKind, Hooks, Job, Message,
    Middleware, MiddlewareError, Options, Outcome, MAX_BACKOFF_MS,
};
use serde_json::{json, Value};

use crate::error::{Error, FollowUp};
use crate::support::{actor_name_option, send_to_actor};

/// Dramatiq's default `max_retries`.
pub const DEFAULT_MAX_RETRIES: u32 = 20;
/// Dramatiq's default `min_backoff`: 15 seconds, in ms.
pub const DEFAULT_MIN_BACKOFF_MS: u64 = 15_000;
/// Dramatiq's default `max_backoff`: 7 days, in ms (also the hard cap on any backoff).
pub const DEFAULT_MAX_BACKOFF_MS: u64 = MAX_BACKOFF_MS;

/// A predicate deciding whether to retry: `(retries so far, error) -> retry?`. When set, it
/// replaces the `max_retries` check.
pub type RetryWhen = Arc<dyn Fn(u32, &ActorError) -> bool + Send + Sync + 'static>;

/// Retries failed messages with exponential backoff and jitter, and dead-letters them once the
/// retries run out: Dramatiq's `Retries`, with the same options on the wire.
///
/// After a failed attempt (any error, panic, time limit, shutdown, `Retry` or rate limit):
/// 1. If the error's type name is in `throws` (the message's `throws` option, a list of type
///    names, else the actor's `throws`), the message is failed at once; no retry is counted.
/// 2. Otherwise, with `r` the message's `retries` option (0 when absent), the options get
///    `retries = r + 1`, `traceback` (the error's text: there is no Python traceback) and
///    `requeue_timestamp` (now, ms).
/// 3. The message is exhausted when the actor's `retry_when` (else this middleware's) returns
///    false for `(r, error)`; or, without `retry_when`, when `max_retries` is not null and
///    `r >= max_retries`. So `max_retries = N` allows N retries, N + 1 runs. `max_retries` is
///    looked up key-present, message, then actor, then this middleware (20); an explicit
///    `null` means unlimited. An exhausted message is failed with its reason, and if
///    `on_retry_exhausted` names an actor (message option, then actor option), that actor is
///    sent `[message, {"retries": r, "max_retries": N}]`.
/// 4. Otherwise the delay is the one a [`Retry`](dq_core::Retry) asked for, else
///    [`compute_backoff`]`(r, min_backoff, min(max_backoff, 7 days))`, both looked up message,
///    then actor, then this middleware. The first retry lands in [15 s, 30 s).
/// 5. The same message (same `message_id` and timestamp, accumulated options) is enqueued with
///    that delay, so it waits on the delay queue with its `eta`.
///
/// Unlike Dramatiq, whose after-hooks swallow errors, a retry the broker refuses makes this
/// hook fail: the worker then does not ack, and the delivery itself is requeued, so the message
/// is never lost between its failure and its retry. A `null` `min_backoff` or `max_backoff`
/// (which makes Dramatiq's hook raise) falls through to the actor's or the default value.
///
/// Ordinary failures are logged as warnings; `Retry` and rate-limit failures only at debug
/// level.
///
/// Hooks: `after_process`.
///
/// ```
/// use std::time::Duration;
/// use dq_middleware::Retries;
///
/// let retries = Retries::default()
///     .with_max_retries(5)
///     .with_min_backoff(Duration::from_secs(1))
///     .with_retry_when(|retries, error| retries < 3 || error.type_name() != "Timeout");
/// assert_eq!(retries.max_retries(), Some(5));
/// assert_eq!(retries.min_backoff(), Duration::from_secs(1));
/// assert_eq!(Retries::default().max_backoff(), Duration::from_secs(7 * 24 * 3600));
/// ```
#[derive(Clone)]
pub struct Retries {
    max_retries: Option<u32>,
    min_backoff_ms: u64,
    max_backoff_ms: u64,
    retry_when: Option<RetryWhen>,
}

impl Default for Retries {
    fn default() -> Retries {
        Retries {
            max_retries: Some(DEFAULT_MAX_RETRIES),
            min_backoff_ms: DEFAULT_MIN_BACKOFF_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            retry_when: None,
        }
    }
}

impl fmt::Debug for Retries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retries")
            .field("max_retries", &self.max_retries)
            .field("min_backoff_ms", &self.min_backoff_ms)
            .field("max_backoff_ms", &self.max_backoff_ms)
            .field("retry_when", &self.retry_when.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Retries {
    /// Sets the default number of retries, for messages and actors that set none.
    pub fn with_max_retries(mut self, max_retries: u32) -> Retries {
        self.max_retries = Some(max_retries);
        self
    }

    /// Retries forever by default (Dramatiq's `max_retries=None`).
    pub fn with_unlimited_retries(mut self) -> Retries {
        self.max_retries = None;
        self
    }

    /// Sets the default minimum backoff (the backoff's factor).
    pub fn with_min_backoff(mut self, min_backoff: Duration) -> Retries {
        self.min_backoff_ms = duration_ms(min_backoff);
        self
    }

    /// Sets the default maximum backoff. Any backoff stays capped at 7 days regardless.
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Retries {
        self.max_backoff_ms = duration_ms(max_backoff);
        self
    }

    /// Sets the default retry predicate, for actors that have none. It replaces the
    /// `max_retries` check.
    pub fn with_retry_when(
        mut self,
        retry_when: impl Fn(u32, &ActorError) -> bool + Send + Sync + 'static,
    ) -> Retries {
        self.retry_when = Some(Arc::new(retry_when));
        self
    }

    /// The default number of retries; `None` is unlimited.
    pub fn max_retries(&self) -> Option<u32> {
        self.max_retries
    }

    /// The default minimum backoff.
    pub fn min_backoff(&self) -> Duration {
        Duration::from_millis(self.min_backoff_ms)
    }

    /// The default maximum backoff.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }

    /// What to do with `message` after it failed with `error`. Pure: it reads the options and
    /// changes nothing.
    fn decide(&self, message: &Message, actor: &ActorOptions, error: &ActorError) -> Decision {
        if actor.throws_type(&message.options, error.type_name()) {
            return Decision::Throws;
        }
        let retries = message.options.retries();
        let max_retries = self.max_retries_for(&message.options, actor);
        // Dramatiq: `actor.options.get("retry_when", self.retry_when)`, which replaces the
        // max_retries check when set.
        let retry_when = match (actor.retry_when, &self.retry_when) {
            (Some(f), _) => Some(f(retries, error)),
            (None, Some(f)) => Some(f(retries, error)),
            (None, None) => None,
        };
        let exhausted = match retry_when {
            Some(retry) => !retry,
            None => max_retries.is_some_and(|max| i64::from(retries) >= max),
        };
        if exhausted {
            let reason = match (retry_when, max_retries) {
                (None, Some(max)) => format!("retries exceeded ({max}): {error}"),
                _ => format!(
                    "retries exceeded (retry_when declined after {retries} retries): {error}"
                ),
            };
            return Decision::Exhausted {
                retries,
                max_retries,
                reason,
            };
        }
        let delay = match error.kind() {
            FailureKind::Retry(Some(d)) => Delay::Fixed(duration_ms(*d)),
            _ => Delay::Backoff {
                factor: backoff_option(&message.options, "min_backoff", actor.min_backoff)
                    .unwrap_or(self.min_backoff_ms),
                max: backoff_option(&message.options, "max_backoff", actor.max_backoff)
                    .unwrap_or(self.max_backoff_ms)
                    .min(MAX_BACKOFF_MS),
            },
        };
        Decision::Retry { retries, delay }
    }

    /// `max_retries`, key-present: message, then actor, then default. `None` is unlimited.
    fn max_retries_for(&self, options: &Options, actor: &ActorOptions) -> Option<i64> {
        match options.max_retries() {
            Some(from_message) => from_message,
            None => match actor.max_retries {
                Some(from_actor) => from_actor.map(i64::from),
                None => self.max_retries.map(i64::from),
            },
        }
    }
}

/// What Retries does with a failed message.
#[derive(Debug, PartialEq)]
enum Decision {
    /// The error's type is in `throws`: fail it now, counting no retry.
    Throws,
    /// No retries left: fail it. `retries` is the count before this failure.
    Exhausted {
        retries: u32,
        max_retries: Option<i64>,
        reason: String,
    },
    /// Retry it after `delay`. `retries` is the count before this failure.
    Retry { retries: u32, delay: Delay },
}

/// How long a retry waits.
#[derive(Debug, PartialEq)]
enum Delay {
    /// Exactly this many ms (a `Retry` with a delay).
    Fixed(u64),
    /// `compute_backoff(retries, factor, max)` ms.
    Backoff { factor: u64, max: u64 },
}

impl Delay {
    fn millis(&self, retries: u32) -> u64 {
        match *self {
            Delay::Fixed(ms) => ms,
            Delay::Backoff { factor, max } => compute_backoff(retries, factor, max),
        }
    }
}

/// A backoff bound, key-present: the message's option, then the actor's. A `null` or negative
/// value in the message falls through.
fn backoff_option(options: &Options, key: &str, from_actor: Option<u64>) -> Option<u64> {
    match options.get_nullable_i64(key) {
        Some(Some(ms)) if ms >= 0 => Some(ms as u64),
        _ => from_actor,
    }
}

/// Keeps the `traceback` option short: the error's text, cut at a char boundary.
fn traceback_text(error: &ActorError) -> String {
    const MAX: usize = 4096;
    let mut text = error.to_string();
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[async_trait]
impl Middleware for Retries {
    fn name(&self) -> &str {
        "Retries"
    }

    fn hooks(&self) -> Hooks {
        Hooks::AFTER_PROCESS
    }

    fn actor_options(&self) -> &[&'static str] {
        &[
            "max_retries",
            "min_backoff",
            "max_backoff",
            "retry_when",
            "throws",
            "on_retry_exhausted",
        ]
    }

    async fn after_process(
        &self,
        app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        let Outcome::Failure(error) = outcome else {
            return Ok(());
        };
        let id = &job.message.message_id;
        // The worker has logged the failure itself; here only the retry decision is logged.
        let decision = self.decide(&job.message, &job.actor.options, error);
        if decision == Decision::Throws {
            tracing::info!(
                message_id = %id,
                actor = %job.message.actor_name,
                queue = %job.message.queue_name,
                "Aborting message: its error's type is in throws."
            );
            job.fail(format!("not retried: {error} (its type is in throws)"));
            return Ok(());
        }

        let options = &mut job.message.options;
        options.set_retries(options.retries().saturating_add(1));
        options.insert("traceback".into(), Value::String(traceback_text(error)));
        options.insert("requeue_timestamp".into(), Value::from(dq_core::now_ms()));

        match decision {
            Decision::Throws => Ok(()),
            Decision::Exhausted {
                retries,
                max_retries,
                reason,
            } => {
                tracing::warn!(
                    message_id = %job.message.message_id,
                    actor = %job.message.actor_name,
                    queue = %job.message.queue_name,
                    retries,
                    "Retries exceeded."
                );
                job.fail(reason);
                let target = actor_name_option(&job.message.options, "on_retry_exhausted")
                    .or(job.actor.options.on_retry_exhausted.as_deref())
                    .filter(|t| !t.is_empty());
                let Some(target) = target else {
                    return Ok(());
                };
                let args = [
                    job.message.to_value(),
                    json!({"retries": retries, "max_retries": max_retries}),
                ];
                send_to_actor(
                    app,
                    self.name(),
                    FollowUp::OnRetryExhausted,
                    &job.message,
                    target,
                    &args,
                )
                .await
                .map_err(|e| e.into_middleware_error(self.name()))
            }
            Decision::Retry { retries, delay } => {
                let delay_ms = delay.millis(retries);
                tracing::info!(
                    message_id = %job.message.message_id,
                    actor = %job.message.actor_name,
                    queue = %job.message.queue_name,
                    retries,
                    "Retrying message in {delay_ms} milliseconds."
                );
                // Delivery guarantee: the retry must be in the broker before the worker acks
                // this delivery, so a refused enqueue is an error that blocks the ack.
                app.enqueue(job.message.clone(), Some(Duration::from_millis(delay_ms)))
                    .await
                    .map_err(|source| {
                        Error::Enqueue {
                            follow_up: FollowUp::Retry,
                            message_id: job.message.message_id.clone(),
                            source,
                        }
                        .into_middleware_error(self.name())
                    })?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: FailureKind, type_name: &'static str) -> ActorError {
        ActorError::new(kind, type_name, "boom")
    }

    fn message(options: Value) -> Message {
        let mut m = Message::new("default", "a", &(), &()).unwrap();
        if let Value::Object(o) = options {
            m.options = o.into();
        }
        m
    }

    fn check(mw: &Retries, options: Value, actor: &ActorOptions, e: &ActorError) -> Decision {
        mw.decide(&message(options), actor, e)
    }

    fn plain() -> ActorError {
        error(FailureKind::Error, "ValueError")
    }

    fn default_backoff() -> Delay {
        Delay::Backoff {
            factor: 15_000,
            max: MAX_BACKOFF_MS,
        }
    }

    #[test]
    fn first_failure_is_retried_with_default_backoff() {
        let d = check(
            &Retries::default(),
            json!({}),
            &ActorOptions::default(),
            &plain(),
        );
        assert_eq!(
            d,
            Decision::Retry {
                retries: 0,
                delay: default_backoff()
            }
        );
    }

    #[test]
    fn first_retry_waits_between_15_and_30_seconds() {
        for _ in 0..1000 {
            let ms = default_backoff().millis(0);
            assert!((15_000..30_000).contains(&ms), "{ms}");
        }
    }

    #[test]
    fn n_retries_allow_n_plus_one_runs() {
        let mw = Retries::default().with_max_retries(2);
        let actor = ActorOptions::default();
        for r in 0..2 {
            assert!(matches!(
                check(&mw, json!({"retries": r}), &actor, &plain()),
                Decision::Retry { retries, .. } if retries == r
            ));
        }
        assert_eq!(
            check(&mw, json!({"retries": 2}), &actor, &plain()),
            Decision::Exhausted {
                retries: 2,
                max_retries: Some(2),
                reason: "retries exceeded (2): ValueError: boom".into()
            }
        );
    }

    #[test]
    fn default_is_twenty_retries() {
        let actor = ActorOptions::default();
        let mw = Retries::default();
        assert!(matches!(
            check(&mw, json!({"retries": 19}), &actor, &plain()),
            Decision::Retry { .. }
        ));
        assert!(matches!(
            check(&mw, json!({"retries": 20}), &actor, &plain()),
            Decision::Exhausted {
                max_retries: Some(20),
                ..
            }
        ));
    }

    #[test]
    fn max_retries_lookup_is_key_present_message_then_actor_then_default() {
        let mw = Retries::default().with_max_retries(1);
        let actor = ActorOptions {
            max_retries: Some(Some(5)),
            ..ActorOptions::default()
        };
        let exhausted = |d: Decision| matches!(d, Decision::Exhausted { .. });
        // The actor's 5 beats the default 1.
        assert!(!exhausted(check(
            &mw,
            json!({"retries": 3}),
            &actor,
            &plain()
        )));
        // The message's 0 beats the actor: 0 is a value here, not "unset".
        assert!(exhausted(check(
            &mw,
            json!({"max_retries": 0}),
            &actor,
            &plain()
        )));
        // An explicit null in the message is unlimited.
        assert!(!exhausted(check(
            &mw,
            json!({"retries": 1000, "max_retries": null}),
            &actor,
            &plain()
        )));
        // An explicit unlimited on the actor beats the default.
        let unlimited = ActorOptions {
            max_retries: Some(None),
            ..ActorOptions::default()
        };
        assert!(!exhausted(check(
            &mw,
            json!({"retries": 1000}),
            &unlimited,
            &plain()
        )));
        // An unlimited default.
        let mw = Retries::default().with_unlimited_retries();
        assert!(!exhausted(check(
            &mw,
            json!({"retries": 1000}),
            &ActorOptions::default(),
            &plain()
        )));
    }

    #[test]
    fn throws_fails_without_counting() {
        let actor = ActorOptions {
            throws: vec!["my_app::errors::BadInput".into()],
            ..ActorOptions::default()
        };
        let mw = Retries::default();
        let bad = error(FailureKind::Error, "BadInput");
        assert_eq!(check(&mw, json!({}), &actor, &bad), Decision::Throws);
        assert!(matches!(
            check(&mw, json!({}), &actor, &plain()),
            Decision::Retry { .. }
        ));
        // The message's list replaces the actor's.
        assert_eq!(
            check(&mw, json!({"throws": ["ValueError"]}), &actor, &plain()),
            Decision::Throws
        );
        assert!(matches!(
            check(&mw, json!({"throws": ["ValueError"]}), &actor, &bad),
            Decision::Retry { .. }
        ));
        assert_eq!(
            check(
                &mw,
                json!({"throws": "ValueError"}),
                &ActorOptions::default(),
                &plain()
            ),
            Decision::Throws
        );
        // An empty message list is falsy: the actor's list applies.
        assert_eq!(
            check(&mw, json!({"throws": []}), &actor, &bad),
            Decision::Throws
        );
    }

    fn only_timeouts(retries: u32, e: &ActorError) -> bool {
        retries < 3 && e.type_name() == "Timeout"
    }

    #[test]
    fn retry_when_replaces_max_retries() {
        let actor = ActorOptions {
            retry_when: Some(only_timeouts),
            max_retries: Some(Some(0)),
            ..ActorOptions::default()
        };
        let mw = Retries::default();
        let timeout = error(FailureKind::Error, "Timeout");
        assert!(matches!(
            check(&mw, json!({"retries": 2}), &actor, &timeout),
            Decision::Retry { .. }
        ));
        let d = check(&mw, json!({"retries": 3}), &actor, &timeout);
        assert!(
            matches!(
                d,
                Decision::Exhausted {
                    retries: 3,
                    max_retries: Some(0),
                    ..
                }
            ),
            "{d:?}"
        );
        assert!(matches!(
            check(&mw, json!({}), &actor, &plain()),
            Decision::Exhausted { .. }
        ));
    }

    #[test]
    fn actor_retry_when_beats_the_middleware_one() {
        let mw = Retries::default().with_retry_when(|_, _| false);
        let timeout = error(FailureKind::Error, "Timeout");
        assert!(matches!(
            check(&mw, json!({}), &ActorOptions::default(), &timeout),
            Decision::Exhausted { .. }
        ));
        let actor = ActorOptions {
            retry_when: Some(only_timeouts),
            ..ActorOptions::default()
        };
        assert!(matches!(
            check(&mw, json!({}), &actor, &timeout),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn retry_with_delay_uses_it() {
        let e = error(
            FailureKind::Retry(Some(Duration::from_millis(1234))),
            "Retry",
        );
        assert_eq!(
            check(
                &Retries::default(),
                json!({"retries": 4}),
                &ActorOptions::default(),
                &e
            ),
            Decision::Retry {
                retries: 4,
                delay: Delay::Fixed(1234)
            }
        );
        let e = error(FailureKind::Retry(None), "Retry");
        assert_eq!(
            check(&Retries::default(), json!({}), &ActorOptions::default(), &e),
            Decision::Retry {
                retries: 0,
                delay: default_backoff()
            }
        );
    }

    #[test]
    fn backoff_lookups_and_cap() {
        let actor = ActorOptions {
            min_backoff: Some(100),
            max_backoff: Some(1000),
            ..ActorOptions::default()
        };
        let mw = Retries::default();
        let backoff =
            |options: Value, actor: &ActorOptions| match check(&mw, options, actor, &plain()) {
                Decision::Retry { delay, .. } => delay,
                other => panic!("not a retry: {other:?}"),
            };
        assert_eq!(
            backoff(json!({}), &actor),
            Delay::Backoff {
                factor: 100,
                max: 1000
            }
        );
        assert_eq!(
            backoff(json!({"min_backoff": 5, "max_backoff": 50}), &actor),
            Delay::Backoff { factor: 5, max: 50 }
        );
        assert_eq!(
            backoff(json!({"min_backoff": null}), &actor),
            Delay::Backoff {
                factor: 100,
                max: 1000
            }
        );
        assert_eq!(
            backoff(
                json!({"max_backoff": MAX_BACKOFF_MS * 2}),
                &ActorOptions::default()
            ),
            default_backoff()
        );
        let mw = Retries::default()
            .with_min_backoff(Duration::from_millis(7))
            .with_max_backoff(Duration::from_millis(70));
        assert_eq!(
            mw.decide(&message(json!({})), &ActorOptions::default(), &plain()),
            Decision::Retry {
                retries: 0,
                delay: Delay::Backoff { factor: 7, max: 70 }
            }
        );
    }

    #[test]
    fn traceback_is_kept_short() {
        let long = ActorError::new(FailureKind::Error, "E", "é".repeat(5000));
        let t = traceback_text(&long);
        assert!(t.len() <= 4096);
        assert!(t.starts_with("E: é"));
    }
}
