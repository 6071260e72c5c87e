//! Actors: how a typed Rust fn becomes something the worker can call, and the registry of them.

use std::any::Any;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::{ArgsError, Error};
use crate::message::Message;
use crate::options::ActorOptions;
use crate::state::{StateKey, States};

/// What an actor's call produced, ready for the result store, pipelines and callbacks.
pub type ActorResult = Result<Value, ActorError>;

/// A boxed future that yields an [`ActorResult`].
pub type BoxActorFuture = Pin<Box<dyn Future<Output = ActorResult> + Send + 'static>>;

/// A call, prepared with decoded arguments, that the worker runs.
pub enum Invocation {
    /// A blocking fn, run on a worker thread.
    Sync(Box<dyn FnOnce() -> ActorResult + Send + 'static>),
    /// An async fn, run on the worker's Tokio runtime.
    Async(BoxActorFuture),
}

impl Invocation {
    /// Whether the call is a future for the worker's Tokio runtime rather than a blocking fn for
    /// a worker thread. The worker chooses where a message runs from this, once, as it takes the
    /// message in: an actor's kind is its handler's, not a flag beside it.
    ///
    /// ```
    /// let call = dq_core::Invocation::Sync(Box::new(|| Ok(serde_json::Value::Null)));
    /// assert!(!call.is_async());
    /// ```
    pub fn is_async(&self) -> bool {
        matches!(self, Invocation::Async(_))
    }
}

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invocation::Sync(_) => f.write_str("Invocation::Sync"),
            Invocation::Async(_) => f.write_str("Invocation::Async"),
        }
    }
}

/// Turns a message into a prepared call, or says why its arguments do not fit. The [`States`]
/// are the app's, for actors that take a [`State`](crate::State).
pub type Handler = fn(&Message, &States) -> Result<Invocation, ArgsError>;

/// How a failed attempt should be treated.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FailureKind {
    /// An ordinary error: retried with backoff.
    Error,
    /// The actor panicked: retried like an error.
    Panic,
    /// The time limit passed.
    TimeLimitExceeded,
    /// The worker shut down while an actor that asked to be notified was running.
    Shutdown,
    /// The actor asked to be retried, optionally after a given delay (logged quietly).
    Retry(Option<Duration>),
    /// A rate limit was not acquired (retried, logged quietly).
    RateLimitExceeded,
}

/// A failed actor call: a kind, the error's type name (Dramatiq's `exn.type`) and its message.
///
/// An actor returns `Result<T, E>` with any `E: Display`; the worker turns the `E` into an
/// `ActorError` with [`ActorError::from_error`]. Return a [`Retry`] to ask for a retry after a
/// chosen delay.
#[derive(Clone, Debug, PartialEq)]
pub struct ActorError {
    kind: FailureKind,
    type_name: Cow<'static, str>,
    message: String,
}

impl ActorError {
    /// An error of `kind` with the given type name and message.
    pub fn new(
        kind: FailureKind,
        type_name: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> ActorError {
        ActorError {
            kind,
            type_name: type_name.into(),
            message: message.into(),
        }
    }

    /// Converts whatever an actor returned as its error. `ActorError`, [`Retry`],
    /// [`TimeLimitExceeded`] and [`Shutdown`] keep their meaning; anything else becomes
    /// [`FailureKind::Error`] named after the last path segment of its type.
    pub fn from_error<E: fmt::Display + 'static>(e: E) -> ActorError {
        let any = &e as &dyn Any;
        if let Some(a) = any.downcast_ref::<ActorError>() {
            return a.clone();
        }
        if let Some(r) = any.downcast_ref::<Retry>() {
            return ActorError::new(FailureKind::Retry(r.delay), "Retry", r.to_string());
        }
        if any.downcast_ref::<TimeLimitExceeded>().is_some() {
            return ActorError::time_limit_exceeded();
        }
        if any.downcast_ref::<Shutdown>().is_some() {
            return ActorError::shutdown();
        }
        ActorError::new(FailureKind::Error, short_type_name::<E>(), e.to_string())
    }

    /// The failure of a message whose time limit passed.
    pub fn time_limit_exceeded() -> ActorError {
        ActorError::new(FailureKind::TimeLimitExceeded, "TimeLimitExceeded", "")
    }

    /// The failure of a message interrupted by worker shutdown.
    pub fn shutdown() -> ActorError {
        ActorError::new(FailureKind::Shutdown, "Shutdown", "")
    }

    /// The failure of an actor that panicked, with the panic's message.
    pub fn panic(payload: &(dyn Any + Send)) -> ActorError {
        let msg = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_owned()
        };
        ActorError::new(FailureKind::Panic, "Panic", msg)
    }

    /// How the failure is treated.
    pub fn kind(&self) -> &FailureKind {
        &self.kind
    }

    /// The error's type name, as stored in results and passed to `on_failure` callbacks.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ActorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.type_name)
        } else {
            write!(f, "{}: {}", self.type_name, self.message)
        }
    }
}

impl std::error::Error for ActorError {}

/// The last segment of a type's path, without generics: `my_app::Oops<u8>` → `Oops`.
pub fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// Returned (as the error of an actor) to ask for a retry, optionally after a fixed delay instead of
/// the exponential backoff. It counts against `max_retries` and is logged quietly.
///
/// ```
/// fn flaky() -> Result<(), dq_core::Retry> {
///     Err(dq_core::Retry::after(std::time::Duration::from_secs(5)))
/// }
/// assert!(flaky().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, thiserror::Error)]
#[error("retry requested")]
pub struct Retry {
    /// The delay before the retry; `None` uses the backoff.
    pub delay: Option<Duration>,
}

impl Retry {
    /// Retry after exactly `delay`.
    pub fn after(delay: Duration) -> Retry {
        Retry { delay: Some(delay) }
    }
}

/// The error a sync actor sees from [`check`](crate::context::check) once its time limit passed,
/// and the failure its message gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("time limit exceeded")]
pub struct TimeLimitExceeded;

/// The error an actor with `notify_shutdown` sees when the worker shuts down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("worker is shutting down")]
pub struct Shutdown;

/// One actor: its name, options, handler and the states it takes. `#[dq::actor]` builds these
/// at compile time and registers them at link time; [`Registry`] collects them.
///
/// By hand (an actor without the macro, e.g. in a test of a middleware):
///
/// ```
/// use dq_core::{Actor, ActorOptions, ArgsError, Invocation, Message, States};
///
/// fn handler(_m: &Message, states: &States) -> Result<Invocation, ArgsError> {
///     let greeting = states.get::<String>().ok_or(ArgsError::MissingState {
///         actor: "greet".into(),
///         type_name: "String",
///     })?;
///     Ok(Invocation::Sync(Box::new(move || Ok(serde_json::json!(*greeting)))))
/// }
///
/// let actor = Actor::new("greet", ActorOptions::default(), handler).needs_state::<String>();
/// assert_eq!(actor.states.len(), 1);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Actor {
    /// The actor name (the fn's name unless `actor_name` is given).
    pub name: String,
    /// Options, with the queue name and priority.
    pub options: ActorOptions,
    /// Decodes arguments and prepares the call; whether the actor is sync or async is the
    /// variant of [`Invocation`] it returns.
    pub handler: Handler,
    /// The states the handler takes from the app: a worker does not start without them.
    pub states: Vec<StateKey>,
}

impl fmt::Debug for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actor")
            .field("name", &self.name)
            .field("queue_name", &self.options.queue_name)
            .field("priority", &self.options.priority)
            .field("states", &self.states)
            .finish()
    }
}

impl Actor {
    /// An actor named `name` that takes no state.
    pub fn new(name: impl Into<String>, options: ActorOptions, handler: Handler) -> Actor {
        Actor {
            name: name.into(),
            options,
            handler,
            states: Vec::new(),
        }
    }

    /// Records that the handler takes the state of type `T`.
    pub fn needs_state<T: Send + Sync + 'static>(mut self) -> Actor {
        let key = StateKey::of::<T>();
        if !self.states.contains(&key) {
            self.states.push(key);
        }
        self
    }

    /// The actor's queue.
    pub fn queue_name(&self) -> &str {
        &self.options.queue_name
    }
    /// The actor's worker-local priority (lower runs sooner).
    pub fn priority(&self) -> i32 {
        self.options.priority
    }
}

/// A link-time registration emitted by `#[dq::actor]`.
#[doc(hidden)]
pub struct ActorRegistration {
    pub build: fn() -> Actor,
}

inventory::collect!(ActorRegistration);

/// The actors known to this process: every `#[dq::actor]` linked into the binary, plus any
/// registered by hand.
///
/// ```
/// let registry = dq_core::Registry::from_linked().unwrap();
/// assert!(registry.get("no_such_actor").is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Registry {
    actors: HashMap<String, Arc<Actor>>,
}

impl Registry {
    /// A registry of every actor registered at link time. Errors on two actors with one name.
    pub fn from_linked() -> Result<Registry, Error> {
        let mut r = Registry::default();
        for reg in inventory::iter::<ActorRegistration> {
            r.register((reg.build)())?;
        }
        Ok(r)
    }

    /// The registry of linked actors, built once per process.
    pub fn linked() -> Result<&'static Registry, &'static Error> {
        static LINKED: OnceLock<Result<Registry, Error>> = OnceLock::new();
        LINKED.get_or_init(Registry::from_linked).as_ref()
    }

    /// Adds an actor. Errors when the name is taken or the queue name is invalid.
    pub fn register(&mut self, actor: Actor) -> Result<(), Error> {
        if !crate::message::is_valid_queue_name(&actor.options.queue_name) {
            return Err(Error::InvalidQueueName(actor.options.queue_name.clone()));
        }
        if self.actors.contains_key(&actor.name) {
            return Err(Error::DuplicateActor { name: actor.name });
        }
        self.actors.insert(actor.name.clone(), Arc::new(actor));
        Ok(())
    }

    /// Looks an actor up by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Actor>> {
        self.actors.get(name)
    }

    /// Every actor, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Actor>> {
        self.actors.values()
    }

    /// The distinct queues the actors use, sorted.
    pub fn queues(&self) -> Vec<String> {
        let mut qs: Vec<String> = self
            .actors
            .values()
            .map(|a| a.options.queue_name.clone())
            .collect();
        qs.sort();
        qs.dedup();
        qs
    }

    /// How many actors there are.
    pub fn len(&self) -> usize {
        self.actors.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.actors.is_empty()
    }
}

/// Reads an actor's parameters out of a message's `args` and `kwargs`, Python style: positional
/// first, then by keyword name. Generated code calls [`ArgReader::take`] once per parameter, in
/// order, then [`ArgReader::finish`].
#[doc(hidden)]
pub struct ArgReader<'a> {
    actor: &'a str,
    args: Vec<&'a RawValue>,
    kwargs: Vec<(Cow<'a, str>, &'a RawValue)>,
    used_kwargs: usize,
    taken: usize,
}

impl<'a> ArgReader<'a> {
    /// Parses the argument containers of `message`.
    pub fn new(message: &'a Message) -> Result<ArgReader<'a>, ArgsError> {
        let args: Vec<&'a RawValue> = serde_json::from_str(message.args.get())
            .map_err(|e| ArgsError::Malformed(format!("args: {e}")))?;
        let kwargs: Vec<(Cow<'a, str>, &'a RawValue)> = if message.kwargs.get() == "{}" {
            Vec::new()
        } else {
            let map: HashMap<Cow<'a, str>, &'a RawValue> =
                serde_json::from_str(message.kwargs.get())
                    .map_err(|e| ArgsError::Malformed(format!("kwargs: {e}")))?;
            map.into_iter().collect()
        };
        Ok(ArgReader {
            actor: &message.actor_name,
            args,
            kwargs,
            used_kwargs: 0,
            taken: 0,
        })
    }

    /// Decodes the next parameter, `name`, from its position or its keyword. A parameter given in
    /// neither place decodes from `null`, so `Option<T>` parameters are optional.
    pub fn take<T: DeserializeOwned>(&mut self, name: &'static str) -> Result<T, ArgsError> {
        let index = self.taken;
        self.taken += 1;
        let by_kw = self.kwargs.iter().position(|(k, _)| k == name);
        let raw = match (self.args.get(index), by_kw) {
            (Some(_), Some(_)) => {
                return Err(ArgsError::Duplicate {
                    actor: self.actor.to_owned(),
                    name,
                });
            }
            (Some(raw), None) => Some(*raw),
            (None, Some(i)) => {
                self.used_kwargs += 1;
                Some(self.kwargs[i].1)
            }
            (None, None) => None,
        };
        let invalid = |source| ArgsError::Invalid {
            actor: self.actor.to_owned(),
            name,
            index,
            source,
        };
        match raw {
            Some(raw) => serde_json::from_str(raw.get()).map_err(invalid),
            None => serde_json::from_value(Value::Null).map_err(|_| ArgsError::Missing {
                actor: self.actor.to_owned(),
                name,
            }),
        }
    }

    /// Checks nothing was left over: no extra positional arguments, no unknown keywords.
    pub fn finish(self, names: &[&'static str]) -> Result<(), ArgsError> {
        if self.args.len() > self.taken {
            return Err(ArgsError::TooMany {
                actor: self.actor.to_owned(),
                expected: self.taken,
                given: self.args.len(),
            });
        }
        if self.used_kwargs < self.kwargs.len() {
            if let Some((k, _)) = self
                .kwargs
                .iter()
                .find(|(k, _)| !names.contains(&k.as_ref()))
            {
                return Err(ArgsError::UnexpectedKeyword {
                    actor: self.actor.to_owned(),
                    name: k.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Serializes an actor's return value for the result store, pipelines and callbacks.
#[doc(hidden)]
pub fn to_result_value<T: serde::Serialize>(v: &T) -> ActorResult {
    serde_json::to_value(v)
        .map_err(|e| ActorError::new(FailureKind::Error, "SerializationError", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reader_check(args: Value, kwargs: Value) -> Result<(i64, String, Option<u8>), ArgsError> {
        let m = Message::new("q", "f", &args, &kwargs).unwrap();
        let mut r = ArgReader::new(&m)?;
        let a = r.take::<i64>("a")?;
        let b = r.take::<String>("b")?;
        let c = r.take::<Option<u8>>("c")?;
        r.finish(&["a", "b", "c"])?;
        Ok((a, b, c))
    }

    #[test]
    fn positional_and_keyword_arguments() {
        assert_eq!(
            reader_check(json!([1, "x"]), json!({})).unwrap(),
            (1, "x".into(), None)
        );
        assert_eq!(
            reader_check(json!([1]), json!({"b": "y", "c": 3})).unwrap(),
            (1, "y".into(), Some(3))
        );
    }

    #[test]
    fn argument_errors_name_the_parameter() {
        let e = reader_check(json!(["one", "x"]), json!({})).unwrap_err();
        assert!(matches!(e, ArgsError::Invalid { name: "a", .. }), "{e}");
        let e = reader_check(json!([1]), json!({})).unwrap_err();
        assert!(matches!(e, ArgsError::Missing { name: "b", .. }), "{e}");
        let e = reader_check(json!([1, "x", 2, 4]), json!({})).unwrap_err();
        assert!(matches!(e, ArgsError::TooMany { given: 4, .. }), "{e}");
        let e = reader_check(json!([1, "x"]), json!({"zzz": 1})).unwrap_err();
        assert!(matches!(e, ArgsError::UnexpectedKeyword { .. }), "{e}");
        let e = reader_check(json!([1, "x"]), json!({"a": 1})).unwrap_err();
        assert!(matches!(e, ArgsError::Duplicate { name: "a", .. }), "{e}");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("bad url {0}")]
    struct BadUrl(String);

    #[test]
    fn actor_errors_keep_type_and_kind() {
        let e = ActorError::from_error(BadUrl("foo".into()));
        assert_eq!(e.type_name(), "BadUrl");
        assert_eq!(e.message(), "bad url foo");
        assert_eq!(e.kind(), &FailureKind::Error);
        let r = ActorError::from_error(Retry::after(Duration::from_millis(5)));
        assert_eq!(
            r.kind(),
            &FailureKind::Retry(Some(Duration::from_millis(5)))
        );
        assert_eq!(
            ActorError::from_error(TimeLimitExceeded).type_name(),
            "TimeLimitExceeded"
        );
        assert_eq!(
            ActorError::from_error(String::from("x")).type_name(),
            "String"
        );
    }
}
