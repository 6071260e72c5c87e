//! Errors of dq-core.

use std::fmt;

/// The result type of dq-core's fallible APIs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in dq-core's public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message could not be decoded or encoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// A middleware hook refused or failed.
    #[error(transparent)]
    Middleware(#[from] MiddlewareError),
    /// An actor's arguments did not decode into its parameter types.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// A message was sent with no app to send it through: no app scope was entered
    /// ([`App::scope`](crate::App::scope)), the code is not running in a worker's actor, and no
    /// global app was set.
    #[error(
        "no dq app to send through: enter one with app.scope(...) / app.enter(...), send with \
         my_actor::send_to(&app, ...), or set a global one with dq::set_broker(...) or \
         App::set_global"
    )]
    NoGlobalApp,
    /// An encoded message is larger than the configured limit.
    #[error("message {message_id} is {size} bytes, over the limit of {limit} bytes")]
    MessageTooLarge {
        /// The message's id.
        message_id: String,
        /// Its encoded size.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// Two actors were registered under one name.
    #[error("actor {name:?} is registered twice")]
    DuplicateActor {
        /// The actor name.
        name: String,
    },
    /// An actor was declared with an option no middleware knows.
    #[error("actor {actor:?} has option {option:?}, which no middleware declares")]
    UnknownActorOption {
        /// The actor name.
        actor: String,
        /// The unknown option.
        option: String,
    },
    /// A queue name does not match `[a-zA-Z_][a-zA-Z0-9._-]*`.
    #[error("invalid queue name {0:?}")]
    InvalidQueueName(String),
    /// No actor of that name is registered.
    #[error("actor {0:?} is not registered")]
    UnknownActor(String),
    /// A message's result could not be read (see [`ResultError`]).
    #[error(transparent)]
    Result(#[from] ResultError),
    /// A unique, debounced or throttled send has an option that does not make sense (no TTL,
    /// a release point dq does not know, ...).
    #[error("invalid unique option {option}: {reason}")]
    InvalidUniqueOption {
        /// The option (`dq_unique_ttl`, `unique_until`, ...).
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why reading a message's result gave no value: what [`Sent::result`](crate::Sent::result) and
/// [`Sent::wait_result`](crate::Sent::wait_result) return. The first three are Dramatiq's
/// `ResultMissing`, `ResultTimeout` and `ResultFailure`, so a caller can tell "not yet" from
/// "never" by matching.
///
/// ```
/// use dq_core::ResultError;
///
/// let e = ResultError::Failed {
///     message_id: "m1".into(),
///     type_name: "ValueError".into(),
///     message: "boom".into(),
/// };
/// assert!(e.is_failed());
/// assert_eq!(e.to_string(), "actor raised ValueError: boom");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultError {
    /// No result is stored (yet, or any more: results expire), and the read did not wait.
    #[error("the result of message {message_id} is missing")]
    Missing {
        /// The message whose result was asked for.
        message_id: String,
    },
    /// The read waited its whole timeout and no result was stored.
    #[error("timed out waiting for the result of message {message_id}")]
    Timeout {
        /// The message whose result was asked for.
        message_id: String,
    },
    /// The actor failed for good (the message was dead-lettered): the stored result is its
    /// error. The text is Dramatiq's: `actor raised <type>: <message>`.
    #[error("actor raised {type_name}: {message}")]
    Failed {
        /// The message whose result was asked for.
        message_id: String,
        /// The error's type name, e.g. the actor's error type, `TimeLimitExceeded` or a Python
        /// class name.
        type_name: String,
        /// The error's message.
        message: String,
    },
    /// The stored result is not JSON, or does not fit the type asked for.
    #[error("the result of message {message_id} does not decode")]
    Decode {
        /// The message whose result was asked for.
        message_id: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The result store failed (unreachable, a command refused, ...).
    #[error("result backend failed while {operation}")]
    Backend {
        /// What was being done.
        operation: &'static str,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl ResultError {
    /// Whether this is [`ResultError::Missing`]: nothing stored yet, ask again later.
    pub fn is_missing(&self) -> bool {
        matches!(self, ResultError::Missing { .. })
    }

    /// Whether this is [`ResultError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, ResultError::Timeout { .. })
    }

    /// Whether this is [`ResultError::Failed`]: the actor failed, no result will come.
    pub fn is_failed(&self) -> bool {
        matches!(self, ResultError::Failed { .. })
    }
}

/// A message body that is not a valid Dramatiq message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not JSON of the expected shape.
    #[error("invalid message json")]
    Json {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A field has the wrong JSON type.
    #[error("{field} must be {expected}")]
    Shape {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

/// Arguments that do not fit an actor's parameters. Such a message is dead-lettered at once:
/// retrying cannot fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// `args` or `kwargs` is not valid JSON of the right shape.
    #[error("malformed arguments: {0}")]
    Malformed(String),
    /// One parameter did not decode.
    #[error("argument {name:?} (position {index}) of {actor}")]
    Invalid {
        /// The actor.
        actor: String,
        /// The parameter's name.
        name: &'static str,
        /// Its position.
        index: usize,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// A required parameter was given neither positionally nor by keyword.
    #[error("{actor} is missing argument {name:?}")]
    Missing {
        /// The actor.
        actor: String,
        /// The parameter's name.
        name: &'static str,
    },
    /// More positional arguments than parameters.
    #[error("{actor} takes {expected} arguments but {given} were given")]
    TooMany {
        /// The actor.
        actor: String,
        /// Parameters the actor has.
        expected: usize,
        /// Positional arguments given.
        given: usize,
    },
    /// A keyword argument names no parameter.
    #[error("{actor} got an unexpected keyword argument {name:?}")]
    UnexpectedKeyword {
        /// The actor.
        actor: String,
        /// The keyword.
        name: String,
    },
    /// The actor takes a [`State`](crate::State) the app does not hold. A worker checks this at
    /// start, so a message meets it only when a handler is called by hand.
    #[error("{actor} needs state {type_name}, which the app does not hold")]
    MissingState {
        /// The actor.
        actor: String,
        /// The state's type.
        type_name: &'static str,
    },
    /// A parameter was given both positionally and by keyword.
    #[error("{actor} got multiple values for argument {name:?}")]
    Duplicate {
        /// The actor.
        actor: String,
        /// The parameter's name.
        name: &'static str,
    },
}

/// What kind of broker failure this is, so the worker knows whether to reconnect and retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerErrorKind {
    /// The broker could not be reached (at start or later). Transient.
    Connection,
    /// A timeout talking to the broker. Transient.
    Timeout,
    /// The broker refused a request (bad arguments, precondition failed, permission). Not transient.
    Rejected,
    /// The queue does not exist.
    QueueNotFound,
    /// The broker was closed by this process.
    Closed,
    /// This broker cannot do what was asked (an admin operation its protocol lacks, such as
    /// listing queues over AMQP). Not transient.
    Unsupported,
    /// Anything else.
    Other,
}

/// A broker failure, with its kind and the underlying client error as its source.
#[derive(Debug)]
pub struct BrokerError {
    kind: BrokerErrorKind,
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BrokerError {
    /// A new error of `kind`, saying what was being done.
    pub fn new(kind: BrokerErrorKind, context: impl Into<String>) -> BrokerError {
        BrokerError {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// The error a broker of kind `broker` (`"amqp"`, ...) returns for operation `what` that it
    /// cannot do: kind [`Unsupported`](BrokerErrorKind::Unsupported).
    ///
    /// ```
    /// let e = dq_core::BrokerError::unsupported("amqp", "listing queues");
    /// assert_eq!(e.kind(), dq_core::BrokerErrorKind::Unsupported);
    /// assert_eq!(e.to_string(), "not supported by this broker: listing queues (amqp broker)");
    /// ```
    pub fn unsupported(broker: &str, what: &str) -> BrokerError {
        BrokerError::new(
            BrokerErrorKind::Unsupported,
            format!("{what} ({broker} broker)"),
        )
    }

    /// Attaches the cause.
    pub fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> BrokerError {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> BrokerErrorKind {
        self.kind
    }

    /// Whether retrying later (after reconnecting) may succeed.
    pub fn is_transient(&self) -> bool {
        match self.kind {
            BrokerErrorKind::Connection | BrokerErrorKind::Timeout => true,
            BrokerErrorKind::Rejected
            | BrokerErrorKind::QueueNotFound
            | BrokerErrorKind::Closed
            | BrokerErrorKind::Unsupported
            | BrokerErrorKind::Other => false,
        }
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BrokerErrorKind::Connection => "broker connection failed",
            BrokerErrorKind::Timeout => "broker timed out",
            BrokerErrorKind::Rejected => "broker rejected the request",
            BrokerErrorKind::QueueNotFound => "queue not found",
            BrokerErrorKind::Closed => "broker is closed",
            BrokerErrorKind::Unsupported => "not supported by this broker",
            BrokerErrorKind::Other => "broker error",
        };
        // The cause is `source()`'s, not the text's: print the whole story with `ErrorChain`.
        write!(f, "{kind}: {}", self.context)
    }
}

/// Shows an error and its causes, each said once: `what failed: why: root cause`.
///
/// dq's errors follow the Rust convention that an error's `Display` does not repeat its
/// `source()`; this is how logs and the command line print the whole chain. A part a level
/// repeats from an earlier one (a cause that already prints its own cause, or a kind like
/// "broker connection failed" said at two levels) is left out.
///
/// ```
/// use dq_core::{BrokerError, BrokerErrorKind, ErrorChain};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
/// let ping = BrokerError::new(BrokerErrorKind::Connection, "ping").with_source(io);
/// let start = BrokerError::new(BrokerErrorKind::Connection, "starting the worker").with_source(ping);
/// assert_eq!(start.to_string(), "broker connection failed: starting the worker");
/// assert_eq!(
///     ErrorChain(&start).to_string(),
///     "broker connection failed: starting the worker: ping: Connection refused"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said: Vec<String> = Vec::new();
        let mut level: Option<&(dyn std::error::Error + 'static)> = Some(self.0);
        while let Some(e) = level {
            let text = e.to_string();
            // Levels that print their cause themselves (as many libraries' errors do): keep
            // the part that is their own.
            let own = match e.source().map(|s| s.to_string()) {
                Some(next) if !next.is_empty() => text
                    .strip_suffix(next.as_str())
                    .and_then(|t| t.strip_suffix(": "))
                    .map_or(text.clone(), str::to_owned),
                _ => text.clone(),
            };
            for part in own.split(": ") {
                let part = part.trim();
                if !part.is_empty() && !said.iter().any(|s| s == part) {
                    said.push(part.to_owned());
                }
            }
            level = e.source();
        }
        f.write_str(&said.join(": "))
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

/// A middleware hook failed. Before-hooks abort the enqueue or the run; after-process hooks stop
/// the ack, so the message is requeued rather than lost.
///
/// `Display` is `middleware NAME: MESSAGE` (`middleware NAME` with an empty message, when the
/// source says it all); the cause is `source()`'s, for [`ErrorChain`].
#[derive(Debug, thiserror::Error)]
pub struct MiddlewareError {
    /// The middleware's name.
    pub middleware: String,
    /// What went wrong, in the middleware's words (may be empty when the source says it).
    pub message: String,
    /// The cause, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for MiddlewareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "middleware {}", self.middleware)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl MiddlewareError {
    /// A new error from middleware `middleware`.
    pub fn new(middleware: impl Into<String>, message: impl Into<String>) -> MiddlewareError {
        MiddlewareError {
            middleware: middleware.into(),
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by another error.
    pub fn caused_by(
        middleware: impl Into<String>,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> MiddlewareError {
        MiddlewareError {
            middleware: middleware.into(),
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}
