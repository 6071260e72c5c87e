//! The Redis rate limiter backend: Dramatiq's optimistic transactions on Dramatiq's keys.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::Pool;

use crate::backend::{ttl_ms, RateLimiterBackend};
use crate::error::{Error, Result};
use dq_redis_conn::{self as conn, Exclusive};

/// Counters and events in Redis, laid out as Python Dramatiq's `RedisBackend` lays them out:
/// each key is the limiter's key verbatim holding a decimal integer, and events are lists
/// holding `"x"`. Limiters in Python and Rust workers that use one key share one limit.
///
/// | operation | commands |
/// |---|---|
/// | `add` | `SET k v PX ttl NX` |
/// | `incr`, `decr` | `WATCH k; GET k`, then `MULTI; SET k v PX ttl; EXEC`, again if another client wrote `k` meanwhile |
/// | `incr_and_sum` | `WATCH k keys…; GET k; MGET keys…`, then the same `MULTI` |
/// | `wait` | `BRPOPLPUSH k k timeout` (the event stays) |
/// | `wait_notify` | `MULTI; RPUSH k "x"; PEXPIRE k ttl; EXEC` |
///
/// ```no_run
/// use dq_ratelimit::{ConcurrentRateLimiter, RedisBackend};
///
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// let mutex = ConcurrentRateLimiter::new(backend, "distributed-mutex", 1);
/// assert_eq!(mutex.limit(), 1);
/// # Ok::<(), dq_ratelimit::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    pool: Pool,
    describe: String,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("redis", &self.describe)
            .finish()
    }
}

/// Settings of a [`RedisBackend`].
#[derive(Clone)]
pub struct RedisBackendBuilder {
    url: String,
    pool_size: usize,
    connect_timeout: Duration,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("redis", &conn::describe(&self.url))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl RedisBackendBuilder {
    /// Settings from the environment: the URL in `DQ_REDIS_URL` (default
    /// `redis://127.0.0.1:6379`), the variable the broker, the result backend and the worker
    /// command read too. Rate-limiter keys have no namespace (as in Dramatiq), so that is all it
    /// reads. A URL the client cannot read is an [`Error::InvalidConfig`] naming the variable.
    ///
    /// ```no_run
    /// let backend = dq_ratelimit::RedisBackendBuilder::from_env()?.pool_size(4).build()?;
    /// # drop(backend); Ok::<(), dq_ratelimit::Error>(())
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

    /// How many connections the backend keeps at most (default 16). A transaction or a
    /// blocking wait holds one while it runs.
    pub fn pool_size(mut self, size: usize) -> RedisBackendBuilder {
        self.pool_size = size;
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> RedisBackendBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// The backend. Nothing is connected yet, so this works outside a runtime (in a `static`,
    /// say); the first command connects.
    pub fn build(self) -> Result<RedisBackend> {
        if self.pool_size == 0 {
            return Err(Error::InvalidConfig("pool_size must be at least 1".into()));
        }
        let pool = conn::pool(&self.url, self.pool_size, self.connect_timeout)
            .map_err(Error::InvalidConfig)?;
        Ok(RedisBackend {
            pool,
            describe: conn::describe(&self.url),
        })
    }
}

impl RedisBackend {
    /// Settings with the defaults: URL from `DQ_REDIS_URL` or `redis://127.0.0.1:6379`, 16
    /// connections.
    pub fn builder() -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: conn::default_url(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// A backend on `url` with the other defaults. Connects lazily: see [`RedisBackend::ping`].
    pub fn from_url(url: &str) -> Result<RedisBackend> {
        RedisBackend::builder().url(url).build()
    }

    /// A backend on the Redis in `DQ_REDIS_URL` ([`RedisBackendBuilder::from_env`]) with the
    /// other defaults. Connects lazily: see [`RedisBackend::ping`].
    ///
    /// ```no_run
    /// use dq_ratelimit::{ConcurrentRateLimiter, RedisBackend};
    ///
    /// let backend = RedisBackend::from_env()?;
    /// let mutex = ConcurrentRateLimiter::new(backend, "distributed-mutex", 1);
    /// # drop(mutex); Ok::<(), dq_ratelimit::Error>(())
    /// ```
    pub fn from_env() -> Result<RedisBackend> {
        RedisBackendBuilder::from_env()?.build()
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        conn.query::<()>(&redis::cmd("PING"))
            .await
            .map_err(|e| Error::backend("pinging redis", e))
    }

    async fn conn(&self) -> Result<Exclusive> {
        Exclusive::get(&self.pool)
            .await
            .map_err(|e| Error::backend("connecting to redis", e))
    }

    /// Sets `key` to `value` in a transaction guarded by the `WATCH` already issued. False when
    /// another client wrote a watched key first.
    async fn commit(conn: &mut Exclusive, key: &str, value: i64, ttl: Duration) -> Result<bool> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .ignore();
        // EXEC answers nil when the transaction was dropped because a watched key changed.
        let done: Option<()> = conn
            .query_pipe(&pipe)
            .await
            .map_err(|e| Error::backend("updating a rate limit", e))?;
        Ok(done.is_some())
    }

    /// `WATCH key; GET key` against `bound`, then the write: Dramatiq's optimistic `incr` and
    /// `decr`, retried while other clients win the race.
    async fn bounded_add(
        &self,
        key: &str,
        delta: i64,
        bound: Bound,
        ttl: Duration,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("WATCH").arg(key).ignore().cmd("GET").arg(key);
            let (current,): (Option<String>,) = conn
                .query_pipe(&pipe)
                .await
                .map_err(|e| Error::backend("reading a rate limit", e))?;
            let value = parse(key, current)? + delta;
            if !bound.admits(value) {
                return Ok(false);
            }
            if Self::commit(&mut conn, key, value, ttl).await? {
                return Ok(true);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Bound {
    AtMost(i64),
    AtLeast(i64),
}

impl Bound {
    fn admits(self, value: i64) -> bool {
        match self {
            Bound::AtMost(max) => value <= max,
            Bound::AtLeast(min) => value >= min,
        }
    }
}

/// A counter as stored: a missing key counts as 0.
fn parse(key: &str, value: Option<String>) -> Result<i64> {
    match value {
        None => Ok(0),
        Some(v) => v.trim().parse().map_err(|_| Error::NotAnInteger {
            key: key.to_owned(),
            value: v,
        }),
    }
}

/// A Redis timeout argument: fractional seconds, kept to the millisecond.
fn seconds(wait: Duration) -> String {
    let ms = wait.as_millis();
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

#[async_trait]
impl RateLimiterBackend for RedisBackend {
    async fn add(&self, key: &str, value: i64, ttl: Duration) -> Result<bool> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ttl_ms(ttl)).arg("NX");
        let mut conn = self.conn().await?;
        let set: Option<String> = conn
            .query(&cmd)
            .await
            .map_err(|e| Error::backend("adding a rate limit key", e))?;
        Ok(set.is_some())
    }

    async fn incr(&self, key: &str, amount: i64, maximum: i64, ttl: Duration) -> Result<bool> {
        self.bounded_add(key, amount, Bound::AtMost(maximum), ttl)
            .await
    }

    async fn decr(&self, key: &str, amount: i64, minimum: i64, ttl: Duration) -> Result<bool> {
        self.bounded_add(key, -amount, Bound::AtLeast(minimum), ttl)
            .await
    }

    async fn incr_and_sum(
        &self,
        key: &str,
        keys: &[String],
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("WATCH")
                .arg(key)
                .arg(keys)
                .ignore()
                .cmd("GET")
                .arg(key);
            if !keys.is_empty() {
                pipe.cmd("MGET").arg(keys);
            }
            let (current, others): (Option<String>, Option<Vec<Option<String>>>) =
                if keys.is_empty() {
                    let (c,): (Option<String>,) = conn
                        .query_pipe(&pipe)
                        .await
                        .map_err(|e| Error::backend("reading a rate limit", e))?;
                    (c, None)
                } else {
                    conn.query_pipe(&pipe)
                        .await
                        .map_err(|e| Error::backend("reading a rate limit", e))?
                };
            let value = parse(key, current)? + amount;
            if value > maximum {
                return Ok(false);
            }
            let mut total = amount;
            for (k, v) in keys.iter().zip(others.unwrap_or_default()) {
                total += parse(k, v)?;
            }
            if total > maximum {
                return Ok(false);
            }
            if Self::commit(&mut conn, key, value, ttl).await? {
                return Ok(true);
            }
        }
    }

    async fn wait(&self, key: &str, timeout: Option<Duration>) -> Result<bool> {
        let cmd = match timeout {
            // Zero means "forever" to BRPOPLPUSH: a zero wait is one look instead.
            Some(t) if t.as_millis() == 0 => {
                let mut c = redis::cmd("RPOPLPUSH");
                c.arg(key).arg(key);
                c
            }
            Some(t) => {
                let mut c = redis::cmd("BRPOPLPUSH");
                c.arg(key).arg(key).arg(seconds(t));
                c
            }
            None => {
                let mut c = redis::cmd("BRPOPLPUSH");
                c.arg(key).arg(key).arg(0);
                c
            }
        };
        let mut conn = self.conn().await?;
        let event: Option<String> = conn
            .query(&cmd)
            .await
            .map_err(|e| Error::backend("waiting on a barrier", e))?;
        Ok(event.as_deref() == Some("x"))
    }

    async fn wait_notify(&self, key: &str, ttl: Duration) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(key, "x")
            .ignore()
            .pexpire(key, ttl_ms(ttl))
            .ignore();
        let mut conn = self.conn().await?;
        // EXEC answers nil only when a watch dropped the transaction: never silently lose an
        // event that waiters are blocked on.
        let done: Option<()> = conn
            .query_pipe(&pipe)
            .await
            .map_err(|e| Error::backend("notifying a barrier", e))?;
        match done {
            Some(()) => Ok(()),
            None => Err(Error::Backend {
                operation: "notifying a barrier",
                source: format!("redis dropped the transaction posting event {key:?}").into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_timeouts() {
        assert_eq!(parse("k", None).unwrap(), 0);
        assert_eq!(parse("k", Some("12".into())).unwrap(), 12);
        assert!(matches!(
            parse("k", Some("x".into())),
            Err(Error::NotAnInteger { .. })
        ));
        assert_eq!(seconds(Duration::from_millis(1500)), "1.500");
        assert_eq!(seconds(Duration::from_millis(7)), "0.007");
    }
}
