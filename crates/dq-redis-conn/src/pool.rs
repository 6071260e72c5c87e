//! Redis connections from a `deadpool-redis` pool, returned to it only when left in a clean
//! state: the connection handling that dq's other Redis clients (the result backend of
//! `dq-results`, the rate-limiter backend of `dq-ratelimit`) share. The broker itself uses its own
//! lanes of multiplexed connections.

use std::time::Duration;

use deadpool_redis::{Connection, Manager, Pool, PoolConfig, Runtime, Timeouts};

/// The URL used when none is given and [`URL_ENV`] is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The environment variable every Redis-using part of dq reads its URL from
/// ([`dq_core::env::REDIS_URL`]).
pub const URL_ENV: &str = dq_core::env::REDIS_URL;

/// The environment variable of the Redis broker's key namespace
/// ([`dq_core::env::REDIS_NAMESPACE`]).
pub const NAMESPACE_ENV: &str = dq_core::env::REDIS_NAMESPACE;

/// The environment variable of the Redis result backend's key namespace
/// ([`dq_core::env::RESULTS_NAMESPACE`]).
pub const RESULTS_NAMESPACE_ENV: &str = dq_core::env::RESULTS_NAMESPACE;

/// The Redis URL used when none is given: env [`URL_ENV`] when set and not empty, else
/// [`DEFAULT_URL`]. Unlike [`RedisEnv::read`](crate::RedisEnv::read) it does not check the URL:
/// a builder's default, checked when the builder builds.
pub fn default_url() -> String {
    // Not UTF-8: kept lossily, to fail as a URL rather than be ignored for the default.
    match std::env::var_os(URL_ENV).map(|v| v.to_string_lossy().into_owned()) {
        Some(url) if !url.trim().is_empty() => url,
        _ => DEFAULT_URL.to_owned(),
    }
}

/// A client for `url` (`redis://`, `rediss://` over rustls with ring, `redis+unix://`),
/// trusting `tls_root_certificate` (PEM) instead of the system's roots when given: for a
/// Redis whose certificate a private CA signed. Does not connect.
pub fn client(url: &str, tls_root_certificate: Option<&[u8]>) -> redis::RedisResult<redis::Client> {
    match tls_root_certificate {
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.to_vec()),
            },
        ),
        None => redis::Client::open(url),
    }
}

/// The host part of a Redis URL, for messages: never the user-info, which may hold a password.
pub fn describe(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split(['/', '?', '#']).next().unwrap_or_default();
    format!("redis at {host}")
}

/// A pool of multiplexed connections, each used by one caller at a time. The error is a message
/// that names the server without its credentials.
///
/// ```
/// use std::time::Duration;
///
/// // Creating the pool does not connect yet; a bad URL fails at once.
/// let pool = dq_redis_conn::pool("redis://127.0.0.1:6379", 4, Duration::from_secs(5)).unwrap();
/// assert_eq!(pool.status().max_size, 4);
/// assert!(dq_redis_conn::pool("http://x", 4, Duration::from_secs(5)).is_err());
/// ```
pub fn pool(url: &str, size: usize, connect_timeout: Duration) -> Result<Pool, String> {
    let manager = client(url, None)
        .and_then(|c| manager(&c))
        .map_err(|e| format!("{}: {e}", describe(url)))?;
    let mut config = PoolConfig::new(size);
    config.timeouts = Timeouts {
        wait: Some(Duration::from_secs(60)),
        create: Some(connect_timeout),
        recycle: Some(connect_timeout),
    };
    Pool::builder(manager)
        .config(config)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| format!("{}: {e}", describe(url)))
}

/// A pool's connection manager for `client`'s settings (TLS roots included): its connections
/// have no timeouts of their own.
///
/// redis 1.x gives every async connection a 1 s connect and a 500 ms response timeout by
/// default. dq times its calls itself (the pool's create timeout, the broker's response timeout,
/// the callers' own), and a `BRPOPLPUSH` waiting for a result or a lock blocks far longer than
/// 500 ms by design, so the client's defaults are turned off, as they were before redis 1.0.
pub fn manager(client: &redis::Client) -> redis::RedisResult<Manager> {
    let untimed = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None);
    Manager::new_with_config(client.get_connection_info().clone(), untimed)
}

/// A pooled connection that goes back to the pool only once its command has answered.
///
/// A caller dropped while Redis still blocks on its `BRPOPLPUSH`, or between `WATCH` and `EXEC`,
/// would hand the next user a connection that answers late or not in the state it expects:
/// such a connection is detached from the pool and closed instead.
pub struct Exclusive {
    conn: Option<Connection>,
    settled: bool,
}

impl Exclusive {
    /// Takes a connection from `pool`, waiting for one to be free.
    pub async fn get(pool: &Pool) -> Result<Exclusive, deadpool_redis::PoolError> {
        Ok(Exclusive {
            conn: Some(pool.get().await?),
            settled: false,
        })
    }

    /// Runs `cmd` and marks the connection reusable once Redis has answered, whatever it said.
    pub async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        self.settled = false;
        let conn = self.conn.as_mut().expect("connection present until drop");
        let out = cmd.query_async(conn).await;
        self.settled = true;
        out
    }

    /// Runs `pipe` the same way.
    pub async fn query_pipe<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        self.settled = false;
        let conn = self.conn.as_mut().expect("connection present until drop");
        let out = pipe.query_async(conn).await;
        self.settled = true;
        out
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        if !self.settled {
            if let Some(conn) = self.conn.take() {
                drop(Connection::take(conn));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_hide_credentials() {
        assert_eq!(
            describe("redis://:secret@host:6380/2"),
            "redis at host:6380"
        );
        assert_eq!(describe("rediss://u:p@w@h:1?x=1"), "redis at h:1");
        assert_eq!(
            describe("redis://127.0.0.1:6379"),
            "redis at 127.0.0.1:6379"
        );
    }
}
