//! The names of the environment variables dq reads, in one place, so that every crate reading
//! one (the brokers, the result and rate-limiter backends, the worker command) uses the same name
//! and a producer and a worker given the same environment choose the same broker.
//!
//! This module only names them: dq-core does no I/O. The Redis variables are read together by
//! `dq_redis_conn::RedisEnv`, `DQ_AMQP_URL` by the RabbitMQ broker, all of them by the worker
//! command when it chooses a broker.
//!
//! | variable | default | read by |
//! |---|---|---|
//! | [`REDIS_URL`] | `redis://127.0.0.1:6379` | the Redis broker, the Redis result and rate-limiter backends, the worker command |
//! | [`REDIS_NAMESPACE`] | `dramatiq` | the Redis broker's `from_env`, the worker command (`--namespace`) |
//! | [`RESULTS_NAMESPACE`] | `dramatiq-results` | the Redis result backend's `from_env` |
//! | [`AMQP_URL`] | `amqp://guest:guest@127.0.0.1:5672/%2f` | the RabbitMQ broker, the worker command |
//! | [`MAX_PRIORITY`] | none (no broker priority) | both brokers' `from_env`, the worker command and the admin tool ([`max_priority`] reads it) |
//! | [`TLS_CA_FILE`] | none (the system's roots) | the worker command and the admin tool, for `rediss://` and `amqps://` brokers |
//!
//! A variable set to an empty value counts as unset.
//!
//! ```
//! assert_eq!(dq_core::env::REDIS_URL, "DQ_REDIS_URL");
//! ```

/// The Redis URL of the broker and of the Redis-backed result and rate-limiter backends.
pub const REDIS_URL: &str = "DQ_REDIS_URL";

/// The Redis broker's key namespace (Dramatiq's default: `dramatiq`).
pub const REDIS_NAMESPACE: &str = "DQ_REDIS_NAMESPACE";

/// The Redis result backend's key namespace (Dramatiq's default: `dramatiq-results`).
pub const RESULTS_NAMESPACE: &str = "DQ_RESULTS_NAMESPACE";

/// The RabbitMQ broker URL.
pub const AMQP_URL: &str = "DQ_AMQP_URL";

/// A PEM file of the CA that signed the broker's certificate, for `rediss://` and `amqps://`
/// URLs: a Redis broker trusts it instead of the system's roots, a RabbitMQ broker in addition
/// to them. Library code passes the certificate to the brokers' builders
/// (`tls_root_certificate`).
pub const TLS_CA_FILE: &str = "DQ_TLS_CA_FILE";

/// The highest `broker_priority` (1..=255): both brokers' `from_env` turn broker priority
/// on with it, and the worker command gives it to either broker (RabbitMQ's `x-max-priority`).
/// Unset, messages are FIFO whatever their `broker_priority`.
pub const MAX_PRIORITY: &str = "DQ_MAX_PRIORITY";

/// A [`MAX_PRIORITY`] value that is not a number from 1 to 255.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{MAX_PRIORITY} must be a number from 1 to 255, not {value:?}")]
pub struct InvalidMaxPriority {
    /// The value as it was set.
    pub value: String,
}

/// Reads a [`MAX_PRIORITY`] value, as every reader of the variable does: unset or empty is no
/// broker priority, 1 to 255 (surrounding spaces allowed) is the maximum, anything else an error.
///
/// ```
/// use dq_core::env::max_priority;
///
/// assert_eq!(max_priority(None), Ok(None));
/// assert_eq!(max_priority(Some(" ")), Ok(None));
/// assert_eq!(max_priority(Some("10")), Ok(Some(10)));
/// assert!(max_priority(Some("0")).is_err());
/// assert!(max_priority(Some("256")).is_err());
/// ```
pub fn max_priority(value: Option<&str>) -> Result<Option<u8>, InvalidMaxPriority> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match v.parse::<u8>() {
        Ok(p) if p >= 1 => Ok(Some(p)),
        _ => Err(InvalidMaxPriority {
            value: v.to_owned(),
        }),
    }
}
