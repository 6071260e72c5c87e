//! The Redis result backend, with Dramatiq's commands on Dramatiq's keys.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::Pool;

use crate::backend::{ResultBackend, DEFAULT_NAMESPACE};
use crate::error::{Error, Result};
use dq_redis_conn::{self as conn, Exclusive};

/// Results in Redis, where Python Dramatiq's `RedisBackend` keeps them: each result is a
/// one-element list under its [`message_key`](crate::message_key), so either side reads what
/// the other stored.
///
/// - store: `MULTI; DEL k; LPUSH k json; PEXPIRE k ttl; EXEC`
/// - read: `LINDEX k 0`; blocking, `BRPOPLPUSH k k timeout`, which waits for the value and
///   leaves it in place (a zero timeout is one `RPOPLPUSH k k`)
///
/// Unlike Dramatiq, which rounds a blocking read's timeout down to whole seconds, the timeout is
/// kept to the millisecond (Redis 6 and later accept fractional timeouts).
///
/// ```no_run
/// use dq_results::RedisBackend;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dq_results::Error> {
/// let backend = RedisBackend::builder().url("redis://127.0.0.1:6379").build()?;
/// backend.ping().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    pool: Pool,
    namespace: String,
    prefix_keys: bool,
    describe: String,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("redis", &self.describe)
            .field("namespace", &self.namespace)
            .field("prefix_keys", &self.prefix_keys)
            .finish()
    }
}

/// Settings of a [`RedisBackend`].
#[derive(Clone)]
pub struct RedisBackendBuilder {
    url: String,
    namespace: String,
    prefix_keys: bool,
    pool_size: usize,
    connect_timeout: Duration,
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("redis", &conn::describe(&self.url))
            .field("namespace", &self.namespace)
            .field("prefix_keys", &self.prefix_keys)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl RedisBackend {
    /// Settings with the defaults: URL from `DQ_REDIS_URL` or `redis://127.0.0.1:6379`,
    /// namespace `dramatiq-results`, hashed keys, 16 connections.
    pub fn builder() -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: conn::default_url(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            prefix_keys: false,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// A backend on `url` with the other defaults. Connects lazily: see [`RedisBackend::ping`].
    pub fn from_url(url: &str) -> Result<RedisBackend> {
        RedisBackend::builder().url(url).build()
    }

    /// A backend with the settings of the environment ([`RedisBackendBuilder::from_env`]: the
    /// URL in `DQ_REDIS_URL`, the namespace in `DQ_RESULTS_NAMESPACE`) and the other defaults.
    /// Connects lazily: see [`RedisBackend::ping`].
    ///
    /// ```no_run
    /// use dq_results::{RedisBackend, Results};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let backend = RedisBackend::from_env()?;
    /// let app = dq_core::App::builder(dq_broker_stub::StubBroker::new())
    ///     .middleware(Results::new(backend))
    ///     .build()?;
    /// # drop(app); Ok(()) }
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
}

impl RedisBackendBuilder {
    /// Settings from the environment: the URL in `DQ_REDIS_URL` (default
    /// `redis://127.0.0.1:6379`), the variable the broker and the worker command read too, and
    /// the namespace in `DQ_RESULTS_NAMESPACE` (default `dramatiq-results`, Dramatiq's; Python
    /// and Rust parties sharing results must use the same). A URL the client cannot read is an
    /// [`Error::InvalidConfig`] naming the variable.
    ///
    /// ```no_run
    /// let backend = dq_results::RedisBackendBuilder::from_env()?.pool_size(4).build()?;
    /// # drop(backend); Ok::<(), dq_results::Error>(())
    /// ```
    pub fn from_env() -> Result<RedisBackendBuilder> {
        let env = conn::RedisEnv::read().map_err(|e| match e {
            conn::EnvError::InvalidUrl { .. } => Error::InvalidConfig(e.to_string()),
        })?;
        let builder = RedisBackend::builder().url(env.url());
        Ok(match env.results_namespace() {
            Some(ns) => builder.namespace(ns),
            None => builder,
        })
    }

    /// The Redis URL (`redis://`, `rediss://` for TLS, `redis+unix://`). It never appears in
    /// logs or errors with its password.
    pub fn url(mut self, url: &str) -> RedisBackendBuilder {
        self.url = url.to_owned();
        self
    }

    /// The key namespace (default `dramatiq-results`); it must match the Python side's.
    pub fn namespace(mut self, namespace: &str) -> RedisBackendBuilder {
        self.namespace = namespace.to_owned();
        self
    }

    /// Readable keys instead of MD5 digests (Dramatiq 2.2's `use_namespace_prefix_keys`).
    pub fn namespace_prefix_keys(mut self, yes: bool) -> RedisBackendBuilder {
        self.prefix_keys = yes;
        self
    }

    /// How many connections the backend keeps at most (default 16). A blocking read holds one
    /// for as long as it waits.
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
            namespace: self.namespace,
            prefix_keys: self.prefix_keys,
            describe: conn::describe(&self.url),
        })
    }
}

#[async_trait]
impl ResultBackend for RedisBackend {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn use_namespace_prefix_keys(&self) -> bool {
        self.prefix_keys
    }

    async fn store(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(key)
            .ignore()
            .lpush(key, value)
            .ignore()
            .pexpire(key, ttl.as_millis().min(i64::MAX as u128) as i64)
            .ignore();
        let mut conn = self.conn().await?;
        conn.query_pipe::<()>(&pipe)
            .await
            .map_err(|e| Error::backend("storing a result", e))
    }

    async fn get(&self, key: &str, block: Option<Duration>) -> Result<Option<String>> {
        let cmd = match block {
            None => {
                let mut c = redis::cmd("LINDEX");
                c.arg(key).arg(0);
                c
            }
            // Zero means "forever" to BRPOPLPUSH: a zero wait is one look instead.
            Some(wait) if wait.as_millis() == 0 => {
                let mut c = redis::cmd("RPOPLPUSH");
                c.arg(key).arg(key);
                c
            }
            Some(wait) => {
                let ms = wait.as_millis();
                let mut c = redis::cmd("BRPOPLPUSH");
                c.arg(key)
                    .arg(key)
                    .arg(format!("{}.{:03}", ms / 1000, ms % 1000));
                c
            }
        };
        let mut conn = self.conn().await?;
        conn.query::<Option<String>>(&cmd)
            .await
            .map_err(|e| Error::backend("reading a result", e))
    }
}
