//! The `ResultBackend` trait, result keys and stored values, as Dramatiq 2.2.1 writes them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dq_core::{base_queue_name, ActorError, Message};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The namespace result keys are made in by default, Dramatiq's.
pub const DEFAULT_NAMESPACE: &str = "dramatiq-results";

/// How long a blocking read waits when no timeout is given: 10 s, Dramatiq's default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long results live when neither the message, the actor nor the middleware says: 10
/// minutes, Dramatiq's default.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(600);

/// The marker Dramatiq stores in `__t` to tell a failure from a returned value.
const FAILURE_CANARY: &str = "dramatiq.results.Result";

/// Where results are kept: raw JSON text under a key, for a while. Implemented by
/// [`RedisBackend`](crate::RedisBackend) and [`MemoryBackend`](crate::MemoryBackend).
///
/// Backends deal in keys and JSON text only; [`ResultBackendExt`] builds the keys from messages
/// and turns the text into typed values and errors.
#[async_trait]
pub trait ResultBackend: Send + Sync + 'static {
    /// The namespace keys are made in (default [`DEFAULT_NAMESPACE`]). Python and Rust parties
    /// must agree on it.
    fn namespace(&self) -> &str {
        DEFAULT_NAMESPACE
    }

    /// Whether keys are the readable `namespace:queue:actor:message_id` rather than its MD5 hex
    /// digest (Dramatiq's `use_namespace_prefix_keys`, default false).
    fn use_namespace_prefix_keys(&self) -> bool {
        false
    }

    /// The key `message`'s result is stored under (see [`message_key`]).
    fn message_key(&self, message: &Message) -> String {
        message_key(self.namespace(), self.use_namespace_prefix_keys(), message)
    }

    /// Stores `value` (JSON text) under `key` for `ttl`, replacing what was there.
    async fn store(&self, key: &str, value: &str, ttl: Duration) -> Result<()>;

    /// The JSON text stored under `key`, if any. With `block`, waits up to that long for one to
    /// be stored; a zero `block` looks once. Reading leaves the value in place, so a result can
    /// be read any number of times until it expires.
    async fn get(&self, key: &str, block: Option<Duration>) -> Result<Option<String>>;
}

#[async_trait]
impl<B: ResultBackend + ?Sized> ResultBackend for Arc<B> {
    fn namespace(&self) -> &str {
        (**self).namespace()
    }

    fn use_namespace_prefix_keys(&self) -> bool {
        (**self).use_namespace_prefix_keys()
    }

    fn message_key(&self, message: &Message) -> String {
        (**self).message_key(message)
    }

    async fn store(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        (**self).store(key, value, ttl).await
    }

    async fn get(&self, key: &str, block: Option<Duration>) -> Result<Option<String>> {
        (**self).get(key, block).await
    }
}

/// The key of a message's result, as Dramatiq builds it: the lowercase hex MD5 of
/// `"<namespace>:<canonical queue>:<actor_name>:<message_id>"`, or that string itself with
/// `prefix_keys`. The queue is the message's own, without `.DQ` / `.XQ`.
///
/// ```
/// use dq_core::Message;
///
/// let mut m = Message::new("default.DQ", "add", &(1, 2), &())?;
/// m.message_id = "faaf41ef-0000-4000-8000-000000000000".into();
/// let readable = dq_results::message_key("dramatiq-results", true, &m);
/// assert_eq!(readable, "dramatiq-results:default:add:faaf41ef-0000-4000-8000-000000000000");
/// let hashed = dq_results::message_key("dramatiq-results", false, &m);
/// assert_eq!(hashed, format!("{:x}", md5::compute(readable.as_bytes())));
/// # Ok::<(), dq_core::Error>(())
/// ```
pub fn message_key(namespace: &str, prefix_keys: bool, message: &Message) -> String {
    let readable = format!(
        "{namespace}:{}:{}:{}",
        base_queue_name(&message.queue_name),
        message.actor_name,
        message.message_id
    );
    if prefix_keys {
        readable
    } else {
        format!("{:x}", md5::compute(readable.as_bytes()))
    }
}

/// The stored form of a failure: Dramatiq's `{"__t": "dramatiq.results.Result", "exn": {...}}`.
///
/// ```
/// let v = dq_results::failure_value("ValueError", "boom");
/// assert_eq!(v["exn"]["type"], "ValueError");
/// assert_eq!(v["__t"], "dramatiq.results.Result");
/// ```
pub fn failure_value(type_name: &str, message: &str) -> Value {
    json!({"__t": FAILURE_CANARY, "exn": {"type": type_name, "msg": message}})
}

/// Reads stored JSON text back: the value, or [`Error::Failure`] when it is a stored failure
/// (any object whose `__t` is Dramatiq's marker, as Dramatiq reads it).
pub fn decode_stored(message_id: &str, text: &str) -> Result<Value> {
    let value: Value = serde_json::from_str(text).map_err(|source| Error::Decode {
        message_id: message_id.to_owned(),
        source,
    })?;
    let is_failure = value
        .as_object()
        .and_then(|o| o.get("__t"))
        .and_then(Value::as_str)
        == Some(FAILURE_CANARY);
    if !is_failure {
        return Ok(value);
    }
    let field = |name: &str| match &value["exn"][name] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Err(Error::Failure {
        message_id: message_id.to_owned(),
        type_name: field("type"),
        message: field("msg"),
    })
}

/// Converts a decoded result into the type asked for.
pub(crate) fn typed<T: DeserializeOwned>(message_id: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|source| Error::Decode {
        message_id: message_id.to_owned(),
        source,
    })
}

/// Reads one message's result as JSON: Dramatiq's `get_result` before the conversion to `T`.
pub(crate) async fn get_value<B: ResultBackend + ?Sized>(
    backend: &B,
    message: &Message,
    block: bool,
    timeout: Option<Duration>,
) -> Result<Value> {
    let key = backend.message_key(message);
    let wait = block.then(|| timeout.unwrap_or(DEFAULT_TIMEOUT));
    match backend.get(&key, wait).await? {
        Some(text) => decode_stored(&message.message_id, &text),
        None if block => Err(Error::Timeout {
            message_id: message.message_id.clone(),
        }),
        None => Err(Error::Missing {
            message_id: message.message_id.clone(),
        }),
    }
}

/// Message-level operations on any [`ResultBackend`]: Dramatiq's `store_result`,
/// `store_exception` and `get_result`.
///
/// ```
/// use std::time::Duration;
/// use dq_core::Message;
/// use dq_results::{MemoryBackend, ResultBackendExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = MemoryBackend::default();
/// let m = Message::new("default", "add", &(1, 2), &())?;
/// assert!(backend.get_result::<i64>(&m, false, None).await.unwrap_err().is_missing());
/// backend.store_result(&m, &serde_json::json!(3), Duration::from_secs(60)).await?;
/// assert_eq!(backend.get_result::<i64>(&m, false, None).await?, 3);
/// # Ok(()) }
/// ```
pub trait ResultBackendExt: ResultBackend {
    /// Stores `message`'s result `value` for `ttl`.
    fn store_result(
        &self,
        message: &Message,
        value: &Value,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            let key = self.message_key(message);
            self.store(&key, &value.to_string(), ttl).await
        }
    }

    /// Stores `error` as `message`'s result for `ttl`: readers get [`Error::Failure`].
    fn store_exception(
        &self,
        message: &Message,
        error: &ActorError,
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            let key = self.message_key(message);
            let value = failure_value(error.type_name(), error.message());
            self.store(&key, &value.to_string(), ttl).await
        }
    }

    /// `message`'s result as a `T`. Without `block`, a result not stored yet is
    /// [`Error::Missing`]; with it, the read waits up to `timeout` (default
    /// [`DEFAULT_TIMEOUT`]) and then fails with [`Error::Timeout`]. A failed message gives
    /// [`Error::Failure`].
    fn get_result<T: DeserializeOwned>(
        &self,
        message: &Message,
        block: bool,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<T>> + Send {
        async move {
            let value = get_value(self, message, block, timeout).await?;
            typed(&message.message_id, value)
        }
    }
}

impl<B: ResultBackend + ?Sized> ResultBackendExt for B {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_matches_dramatiq() {
        // Computed with Python: hashlib.md5(b"dramatiq-results:default:add:faaf41ef-4f3a-4a8f-9d5b-6d8ad1d0c5a4").hexdigest()
        let mut m = Message::new("default", "add", &(), &()).unwrap();
        m.message_id = "faaf41ef-4f3a-4a8f-9d5b-6d8ad1d0c5a4".into();
        assert_eq!(
            message_key(DEFAULT_NAMESPACE, false, &m),
            "572cca73a4ca1e9c4db6280c3dee4475"
        );
        m.queue_name = "default.XQ".into();
        assert_eq!(
            message_key(DEFAULT_NAMESPACE, true, &m),
            "dramatiq-results:default:add:faaf41ef-4f3a-4a8f-9d5b-6d8ad1d0c5a4"
        );
    }

    #[test]
    fn stored_values_decode_like_dramatiq() {
        assert_eq!(decode_stored("m", "[1,2]").unwrap(), json!([1, 2]));
        assert_eq!(decode_stored("m", "null").unwrap(), Value::Null);
        let failure = failure_value("TimeLimitExceeded", "").to_string();
        match decode_stored("m", &failure).unwrap_err() {
            Error::Failure {
                type_name, message, ..
            } => {
                assert_eq!(type_name, "TimeLimitExceeded");
                assert_eq!(message, "");
            }
            other => panic!("{other}"),
        }
        // An object with another `__t` is an ordinary value.
        let other = json!({"__t": "mine", "exn": 1});
        assert_eq!(decode_stored("m", &other.to_string()).unwrap(), other);
        assert!(matches!(
            decode_stored("m", "{nope").unwrap_err(),
            Error::Decode { .. }
        ));
    }

    #[test]
    fn failure_text_is_dramatiqs() {
        let e = decode_stored("m", &failure_value("ValueError", "boom").to_string()).unwrap_err();
        assert_eq!(e.to_string(), "actor raised ValueError: boom");
    }
}
