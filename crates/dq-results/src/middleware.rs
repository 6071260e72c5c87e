//! The Results middleware: stores what actors return, and how they finally failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dq_core::{
    async_trait, Actor, ActorError, App, FailureKind, Hooks, Job, Message, Middleware,
    MiddlewareError, Outcome,
};
use serde_json::Value;

use crate::backend::{failure_value, ResultBackend, DEFAULT_RESULT_TTL};

/// Stores actor results in a [`ResultBackend`], as Dramatiq's `Results` middleware does, so
/// `get_result` works from Rust and Python alike.
///
/// What is stored, for messages whose actor stores results (`store_results`: the message's
/// option, else the actor's, else this middleware's default, false):
///
/// | the message | stored |
/// |---|---|
/// | succeeded | the actor's return value |
/// | was skipped, not failed | `null` |
/// | was dead-lettered | the error of its last attempt (`ResultFailure` for readers); a message skipped and failed (AgeLimit) stores `SkipMessage` |
/// | failed and will be retried | nothing: the retry will store |
/// | is for an actor this worker does not know | nothing |
///
/// Results live `result_ttl` milliseconds: the message's option, else the actor's, else this
/// middleware's default (10 minutes).
///
/// A result that cannot be stored fails the hook, so the worker requeues the message instead of
/// acking it: the actor may run again, and its result is not lost. Add `Results` after the
/// default stack, as in Dramatiq: its after-hooks then run before Retries'.
///
/// Hooks: `after_process`, `after_skip`, `after_nack`.
///
/// ```
/// use std::time::Duration;
/// use dq_core::Middleware;
/// use dq_results::{MemoryBackend, Results};
///
/// let results = Results::new(MemoryBackend::default())
///     .with_result_ttl(Duration::from_secs(3600));
/// assert_eq!(results.result_ttl(), Duration::from_secs(3600));
/// assert_eq!(results.actor_options(), &["store_results", "result_ttl"]);
/// ```
pub struct Results {
    backend: Arc<dyn ResultBackend>,
    store_results: bool,
    result_ttl: Duration,
    /// The error of each message that failed here and may be dead-lettered next: the nack hook
    /// only gets the reason text, and the stored failure needs the error's type and message.
    failures: Mutex<HashMap<String, (ActorError, Instant)>>,
}

/// Entries older than this are dropped: their message was retried (elsewhere, perhaps) rather
/// than dead-lettered here, which happens within moments of the failure.
const FAILURE_MEMORY: Duration = Duration::from_secs(600);

impl std::fmt::Debug for Results {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Results")
            .field("store_results", &self.store_results)
            .field("result_ttl", &self.result_ttl)
            .finish()
    }
}

impl Results {
    /// Results stored in `backend`, for actors that ask (`store_results` defaults to false),
    /// living 10 minutes.
    pub fn new(backend: impl ResultBackend) -> Results {
        Results::from_arc(Arc::new(backend))
    }

    /// Like [`Results::new`], for a backend that is already shared.
    pub fn from_arc(backend: Arc<dyn ResultBackend>) -> Results {
        Results {
            backend,
            store_results: false,
            result_ttl: DEFAULT_RESULT_TTL,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether actors that do not say store their results (Dramatiq's `store_results`).
    pub fn with_store_results(mut self, yes: bool) -> Results {
        self.store_results = yes;
        self
    }

    /// How long results live unless the message or actor says (Dramatiq's `result_ttl`).
    pub fn with_result_ttl(mut self, ttl: Duration) -> Results {
        self.result_ttl = ttl;
        self
    }

    /// The backend results go to; read them through it.
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.backend
    }

    /// The default for `store_results`.
    pub fn store_results(&self) -> bool {
        self.store_results
    }

    /// The default result TTL.
    pub fn result_ttl(&self) -> Duration {
        self.result_ttl
    }

    /// Whether `message` stores its result, and for how long: message option (key-present),
    /// then the actor's, then this middleware's, as Dramatiq looks them up.
    fn lookup(&self, message: &Message, actor: &Actor) -> (bool, Duration) {
        let store = match message.options.get("store_results") {
            Some(v) => truthy(v),
            None => actor.options.store_results.unwrap_or(self.store_results),
        };
        let ttl = match message.options.get_i64("result_ttl") {
            Some(ms) => Duration::from_millis(ms.max(0) as u64),
            None => actor
                .options
                .result_ttl
                .map(Duration::from_millis)
                .unwrap_or(self.result_ttl),
        };
        (store, ttl)
    }

    async fn put(
        &self,
        message: &Message,
        value: &Value,
        ttl: Duration,
    ) -> Result<(), MiddlewareError> {
        let key = self.backend.message_key(message);
        self.backend
            .store(&key, &value.to_string(), ttl)
            .await
            .map_err(|e| {
                MiddlewareError::caused_by(
                    self.name(),
                    format!("cannot store the result of message {}", message.message_id),
                    e,
                )
            })
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ActorError, Instant)>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember_failure(&self, message_id: &str, error: ActorError) {
        let now = Instant::now();
        let mut failures = self.failures();
        if failures.len() >= 256 {
            failures.retain(|_, (_, at)| now.duration_since(*at) < FAILURE_MEMORY);
        }
        failures.insert(message_id.to_owned(), (error, now));
    }
}

/// Python's `bool(value)`, as Dramatiq reads `store_results`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[async_trait]
impl Middleware for Results {
    fn name(&self) -> &str {
        "Results"
    }

    fn hooks(&self) -> Hooks {
        Hooks::AFTER_PROCESS | Hooks::AFTER_SKIP | Hooks::NACK
    }

    fn actor_options(&self) -> &[&'static str] {
        &["store_results", "result_ttl"]
    }

    async fn after_process(
        &self,
        _app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        let (store, ttl) = self.lookup(&job.message, &job.actor);
        match outcome {
            Outcome::Success(value) => {
                if store {
                    self.failures().remove(&job.message.message_id);
                    return self.put(&job.message, value, ttl).await;
                }
                if !value.is_null() && !job.message.options.contains_key("pipe_target") {
                    tracing::warn!(
                        actor = %job.message.actor_name,
                        "Actor '{}' returned a value that is not None, but you haven't set its \
                         `store_results' option to `True' so the value has been discarded.",
                        job.message.actor_name
                    );
                }
                Ok(())
            }
            Outcome::Failure(error) => {
                if store {
                    self.remember_failure(&job.message.message_id, error.clone());
                }
                Ok(())
            }
        }
    }

    async fn after_skip(&self, _app: &App, job: &mut Job) -> Result<(), MiddlewareError> {
        let (store, ttl) = self.lookup(&job.message, &job.actor);
        if !store {
            return Ok(());
        }
        if job.is_failed() {
            // Dramatiq stores the SkipMessage it raised when the message is dead-lettered.
            let reason = job.failure_reason().unwrap_or_default().to_owned();
            let error = ActorError::new(FailureKind::Error, "SkipMessage", reason);
            self.remember_failure(&job.message.message_id, error);
            return Ok(());
        }
        self.put(&job.message, &Value::Null, ttl).await
    }

    async fn after_nack(
        &self,
        app: &App,
        message: &Message,
        reason: &str,
    ) -> Result<(), MiddlewareError> {
        let remembered = self.failures().remove(&message.message_id);
        let Some(actor) = app.actor(&message.actor_name) else {
            return Ok(());
        };
        let (store, ttl) = self.lookup(message, actor);
        if !store {
            return Ok(());
        }
        // Dead-lettered without an error of its own (its arguments did not decode, a middleware
        // failed it): Dramatiq stores `Exception("unknown")`; the reason says more.
        let error = match remembered {
            Some((error, _)) => error,
            None => ActorError::new(FailureKind::Error, "Exception", reason),
        };
        let value = failure_value(error.type_name(), error.message());
        self.put(message, &value, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;
    use dq_core::{ActorOptions, ArgsError, Invocation};
    use serde_json::json;

    fn handler(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
        Ok(Invocation::Sync(Box::new(|| Ok(Value::Null))))
    }

    fn check(
        message_options: Value,
        actor_store: Option<bool>,
        actor_ttl: Option<u64>,
    ) -> (bool, Duration) {
        let results =
            Results::new(MemoryBackend::default()).with_result_ttl(Duration::from_millis(7));
        let mut m = Message::new("q", "a", &(), &()).unwrap();
        if let Value::Object(o) = message_options {
            m.options = o.into();
        }
        let actor = Actor::new(
            "a",
            ActorOptions {
                store_results: actor_store,
                result_ttl: actor_ttl,
                ..Default::default()
            },
            handler,
        );
        results.lookup(&m, &actor)
    }

    #[test]
    fn options_are_looked_up_message_then_actor_then_default() {
        let ms = Duration::from_millis;
        assert_eq!(check(json!({}), None, None), (false, ms(7)));
        assert_eq!(check(json!({}), Some(true), Some(5)), (true, ms(5)));
        assert_eq!(
            check(
                json!({"store_results": false, "result_ttl": 3}),
                Some(true),
                Some(5)
            ),
            (false, ms(3))
        );
        // Key-present: an explicit null does not fall back to the actor.
        assert!(!check(json!({"store_results": null}), Some(true), None).0);
        assert!(check(json!({"store_results": 1}), None, None).0);
    }
}
