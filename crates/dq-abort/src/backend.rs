//! The event backend trait: dramatiq-abort's `EventBackend`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::Result;

/// An event: its key (`cancel:<message_id>` or `abort:<message_id>`, without the backend's
/// namespace) and its parameters (a JSON object: `{}` for a cancel, `{"abort_timeout": ms}` for
/// an abort). dramatiq-abort's `Event`.
///
/// ```
/// use dq_abort::Event;
///
/// let e = Event::new("cancel:some-id");
/// assert_eq!(e.key, "cancel:some-id");
/// assert!(e.params.is_empty());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The key, without the backend's namespace.
    pub key: String,
    /// The parameters.
    pub params: Map<String, Value>,
}

impl Event {
    /// An event without parameters.
    pub fn new(key: impl Into<String>) -> Event {
        Event {
            key: key.into(),
            params: Map::new(),
        }
    }

    /// The event with one more parameter.
    pub fn with_param(mut self, name: &str, value: impl Into<Value>) -> Event {
        self.params.insert(name.to_owned(), value.into());
        self
    }
}

/// Where abort and cancel events are signalled and waited for: dramatiq-abort's
/// `EventBackend`. [`RedisBackend`](crate::RedisBackend) shares them with Python workers;
/// [`MemoryBackend`](crate::MemoryBackend) keeps them in this process.
///
/// Events are consumed: once [`poll`](EventBackend::poll) or
/// [`wait_many`](EventBackend::wait_many) returned one, the next call may not see it.
///
/// ```
/// use std::time::Duration;
/// use dq_abort::{Event, EventBackend, MemoryBackend};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let backend = MemoryBackend::default();
/// backend.notify(&[Event::new("cancel:m1")], Duration::from_secs(90)).await?;
/// assert_eq!(backend.poll("cancel:m1").await?, Some(Event::new("cancel:m1")));
/// assert_eq!(backend.poll("cancel:m1").await?, None);
/// # Ok::<(), dq_abort::Error>(()) }).unwrap();
/// ```
#[async_trait]
pub trait EventBackend: Send + Sync + 'static {
    /// Signals `events`, each kept for `ttl` at most.
    async fn notify(&self, events: &[Event], ttl: Duration) -> Result<()>;

    /// Takes the event of `key`, if one was signalled; does not wait.
    async fn poll(&self, key: &str) -> Result<Option<Event>>;

    /// Waits up to `timeout` (whole seconds on Redis, at least one) for an event on any of
    /// `keys`, and takes it.
    async fn wait_many(&self, keys: &[String], timeout: Duration) -> Result<Option<Event>>;
}
