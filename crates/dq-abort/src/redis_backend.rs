//! Events in Redis, where dramatiq-abort's `RedisBackend` keeps them.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::Pool;
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value};

use crate::backend::{Event, EventBackend};
use crate::batch::Batcher;
use crate::error::{Error, Result};
use dq_redis_conn::{self as conn, Exclusive};

/// dramatiq-abort's default namespace: keys are `dramatiq:aborts:cancel:<message_id>` and
/// `dramatiq:aborts:abort:<message_id>`.
pub const DEFAULT_NAMESPACE: &str = "dramatiq:aborts:";

/// Events in Redis, laid out as dramatiq-abort 1.2's `RedisBackend` lays them out, so a Python
/// `abort(message_id)` reaches dq workers and a dq abort reaches Python workers:
///
/// | operation | commands |
/// |---|---|
/// | `notify` | `MULTI; RPUSH <ns><key> <json>; PEXPIRE <ns><key> ttl; …; EXEC` |
/// | `poll` | `LPOP <ns><key>`; for checks made at the same time, `EXISTS <ns><key>…`, then `LPOP`s only if one exists |
/// | `wait_many` | `BLPOP <ns><key>… <seconds>` |
///
/// `poll` and `notify`, one per message run and per abort, share one multiplexed connection, so
/// none pays for a pool checkout (deadpool-redis pings a connection each time it hands one
/// out); polls made while another is out wait for it and then go together, one `EXISTS` for
/// all of them; the watcher's blocking `BLPOP` takes a pooled connection of its own.
///
/// Values are JSON objects written as Python's `json.dumps` writes them (`{}`,
/// `{"abort_timeout": 0}`); a value that is not a JSON object counts as no event.
///
/// ```no_run
/// use dq_abort::{Abortable, RedisBackend};
///
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// let abortable = Abortable::new(backend);
/// # drop(abortable); Ok::<(), dq_abort::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    pool: Pool,
    client: redis::Client,
    /// The shared connection of `poll` and `notify`; `None` until the first, and after a
    /// failure that may have broken it.
    shared: Arc<Mutex<Option<MultiplexedConnection>>>,
    polls: Arc<Batcher<String, PollAnswer>>,
    connect_timeout: Duration,
    namespace: String,
    describe: String,
}

/// What one cancel check found: the event's value, if any.
type PollAnswer = std::result::Result<Option<Vec<u8>>, Arc<Error>>;

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("redis", &self.describe)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// Settings of a [`RedisBackend`].
#[derive(Clone)]
pub struct RedisBackendBuilder {
    url: String,
    namespace: String,
    pool_size: usize,
    connect_timeout: Duration,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("redis", &conn::describe(&self.url))
            .field("namespace", &self.namespace)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl RedisBackendBuilder {
    /// Settings from the environment: the URL in `DQ_REDIS_URL` (default
    /// `redis://127.0.0.1:6379`), the variable the broker and the other backends read. The
    /// namespace is dramatiq-abort's own (`dramatiq:aborts:`), not the broker's.
    ///
    /// ```no_run
    /// let backend = dq_abort::RedisBackendBuilder::from_env()?.build()?;
    /// # drop(backend); Ok::<(), dq_abort::Error>(())
    /// ```
    pub fn from_env() -> Result<RedisBackendBuilder> {
        let env = conn::RedisEnv::read().map_err(|e| match e {
            conn::EnvError::InvalidUrl { .. } => Error::InvalidConfig(e.to_string()),
        })?;
        Ok(RedisBackend::builder().url(env.url()))
    }

    /// The Redis URL (`redis://`, `rediss://` for TLS, `redis+unix://`). It never appears in
    /// logs or errors with its password.
    pub fn url(mut self, url: &str) -> RedisBackendBuilder {
        self.url = url.to_owned();
        self
    }

    /// The prefix of every key (default [`DEFAULT_NAMESPACE`]), as dramatiq-abort's
    /// `RedisBackend(namespace=...)`: the same on every worker and producer.
    pub fn namespace(mut self, namespace: &str) -> RedisBackendBuilder {
        self.namespace = namespace.to_owned();
        self
    }

    /// How many connections the backend keeps at most (default 8). The watcher's blocking
    /// `BLPOP` holds one while it waits.
    pub fn pool_size(mut self, size: usize) -> RedisBackendBuilder {
        self.pool_size = size;
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisBackendBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// The backend. Nothing is connected yet; the first command connects.
    pub fn build(self) -> Result<RedisBackend> {
        if self.pool_size < 2 {
            // One for the watcher's BLPOP, one for the cancel checks beside it.
            return Err(Error::InvalidConfig("pool_size must be at least 2".into()));
        }
        let pool = conn::pool(&self.url, self.pool_size, self.connect_timeout)
            .map_err(Error::InvalidConfig)?;
        let client = conn::client(&self.url, None)
            .map_err(|e| Error::InvalidConfig(format!("{}: {e}", conn::describe(&self.url))))?;
        Ok(RedisBackend {
            pool,
            client,
            shared: Arc::new(Mutex::new(None)),
            polls: Arc::default(),
            connect_timeout: self.connect_timeout,
            namespace: self.namespace,
            describe: conn::describe(&self.url),
        })
    }
}

impl RedisBackend {
    /// Settings with the defaults: URL from `DQ_REDIS_URL` or `redis://127.0.0.1:6379`,
    /// namespace `dramatiq:aborts:`, 8 connections.
    pub fn builder() -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: conn::default_url(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// A backend on `url` with the other defaults. Connects lazily.
    pub fn from_url(url: &str) -> Result<RedisBackend> {
        RedisBackend::builder().url(url).build()
    }

    /// A backend on the Redis in `DQ_REDIS_URL` with the other defaults. Connects lazily.
    ///
    /// ```no_run
    /// let backend = dq_abort::RedisBackend::from_env()?;
    /// # drop(backend); Ok::<(), dq_abort::Error>(())
    /// ```
    pub fn from_env() -> Result<RedisBackend> {
        RedisBackendBuilder::from_env()?.build()
    }

    /// The key prefix.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn conn(&self) -> Result<Exclusive> {
        Exclusive::get(&self.pool)
            .await
            .map_err(|e| Error::backend("connecting to Redis", e))
    }

    /// The shared connection, connected on first use.
    async fn shared(&self) -> Result<MultiplexedConnection> {
        if let Some(c) = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(c.clone());
        }
        // No response timeout of the client's own (500 ms in redis 1.x): a busy Redis answers
        // late, not never, and a reply that comes late must not be read by the next command.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| Error::backend("connecting to Redis", e))?;
        // Two first callers may both connect: the later one's connection wins, both work.
        *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on the shared connection; drops the connection when the failure may have
    /// broken it, so the next call connects again.
    async fn on_shared<T, F, Fut>(&self, operation: &'static str, f: F) -> Result<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let c = self.shared().await?;
        f(c).await.map_err(|e| {
            if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            Error::backend(operation, e)
        })
    }

    /// Pops the events of `keys` (full keys) in one request: `LPOP` for a single key;
    /// otherwise `EXISTS` over all of them first, so the usual answer (no event for any) costs
    /// one command, and `LPOP`s pipelined only when some event exists.
    async fn pop_events(&self, keys: Vec<String>) -> Vec<PollAnswer> {
        let count = keys.len();
        let found = self
            .on_shared("polling an abort event", |mut c| async move {
                if let [key] = keys.as_slice() {
                    let value: Option<Vec<u8>> =
                        redis::cmd("LPOP").arg(key).query_async(&mut c).await?;
                    return Ok(vec![value]);
                }
                let existing: usize = redis::cmd("EXISTS").arg(&keys).query_async(&mut c).await?;
                if existing == 0 {
                    return Ok(vec![None; keys.len()]);
                }
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("LPOP").arg(key);
                }
                pipe.query_async(&mut c).await
            })
            .await;
        match found {
            Ok(values) => values.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(Arc::new(e)); count],
        }
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Option<Event> {
        let key = std::str::from_utf8(key).ok()?;
        let key = key.strip_prefix(&self.namespace).unwrap_or(key).to_owned();
        Some(Event {
            key,
            params: decode_value(value)?,
        })
    }
}

/// A JSON object, or nothing: dramatiq-abort ignores any other value.
fn decode_value(value: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// Python's `json.dumps` separators (`", "` and `": "`), so dq writes the bytes Python does.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// `params` as Python's `json.dumps` writes it.
pub(crate) fn encode_value(params: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    // Serializing a map of JSON values into a Vec cannot fail.
    let _ = serde::Serialize::serialize(params, &mut ser);
    out
}

#[async_trait]
impl EventBackend for RedisBackend {
    async fn notify(&self, events: &[Event], ttl: Duration) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let ttl_ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for event in events {
            let key = format!("{}{}", self.namespace, event.key);
            pipe.cmd("RPUSH")
                .arg(&key)
                .arg(encode_value(&event.params))
                .ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
        }
        self.on_shared("signalling abort events", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    async fn poll(&self, key: &str) -> Result<Option<Event>> {
        let full = format!("{}{key}", self.namespace);
        let value = self
            .polls
            .run(
                full,
                |keys| self.pop_events(keys),
                || {
                    Err(Arc::new(Error::InvalidConfig(
                        "a batched poll went unanswered".into(),
                    )))
                },
            )
            .await
            .map_err(|e| Error::backend("polling an abort event", e))?;
        Ok(value.and_then(|v| {
            decode_value(&v).map(|params| Event {
                key: key.to_owned(),
                params,
            })
        }))
    }

    async fn wait_many(&self, keys: &[String], timeout: Duration) -> Result<Option<Event>> {
        if keys.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(None);
        }
        // Whole seconds, at least one: what dramatiq-abort sends, and what Redis before 6.0
        // accepts.
        let seconds = timeout.as_secs().max(1);
        let mut cmd = redis::cmd("BLPOP");
        for key in keys {
            cmd.arg(format!("{}{key}", self.namespace));
        }
        cmd.arg(seconds);
        let mut conn = self.conn().await?;
        let popped: Option<(Vec<u8>, Vec<u8>)> = conn
            .query(&cmd)
            .await
            .map_err(|e| Error::backend("waiting for abort events", e))?;
        Ok(popped.and_then(|(k, v)| self.decode(&k, &v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(params: Value, expected: &str) {
        let Value::Object(map) = params else {
            panic!("an object")
        };
        assert_eq!(String::from_utf8(encode_value(&map)).unwrap(), expected);
    }

    #[test]
    fn values_are_written_as_python_json_dumps_writes_them() {
        check(json!({}), "{}");
        check(json!({"abort_timeout": 0}), r#"{"abort_timeout": 0}"#);
        check(json!({"a": 1, "b": [1, 2]}), r#"{"a": 1, "b": [1, 2]}"#);
    }

    #[test]
    fn only_json_objects_are_events() {
        assert_eq!(decode_value(b"{}"), Some(Map::new()));
        assert!(decode_value(br#"{"abort_timeout": 250}"#).is_some());
        assert_eq!(decode_value(b"[]"), None);
        assert_eq!(decode_value(b"1"), None);
        assert_eq!(decode_value(b"not json"), None);
        assert_eq!(decode_value(b""), None);
    }
}
