//! # dq-redis-conn
//!
//! The Redis client plumbing that dq's Redis-backed crates share: the settings from the
//! environment ([`RedisEnv`]: `DQ_REDIS_URL`, `DQ_REDIS_NAMESPACE`, `DQ_RESULTS_NAMESPACE`) and the
//! default URL ([`default_url`]), the redacted description of a URL for messages
//! ([`describe`]: never the password), the client with its TLS roots ([`client`]: `rediss://`
//! URLs over rustls with ring), the pool's connection manager without the client's own timeouts
//! ([`manager`]), a `deadpool-redis` pool of multiplexed connections ([`pool`]), and
//! [`Exclusive`], a pooled connection that goes back to the pool only in a clean state. The Redis
//! broker, the result backend of `dq-results` and the rate-limiter backend of `dq-ratelimit`
//! use it.
//!
//! **Key design decision:** this is the one place that holds Redis client plumbing, so the
//! crates that talk to Redis depend on it instead of on each other: dq-results and dq-ratelimit
//! have no edge to dq-broker-redis (a sibling, in ARCHITECTURE.md's crate graph), and all three
//! read the same variables and build clients and pools the same way. It is not in
//! dq-core because dq-core does no I/O and names no client; it depends on dq-core only for the
//! variables' names (`dq_core::env`, which the worker command reads too, with or without Redis)
//! and for redacting URLs. Its whole purpose is to wrap the
//! `redis` and `deadpool-redis` clients for our other crates, so unlike them it names their types
//! in its public signatures; in exchange it is internal glue: the `dq` facade does not re-export
//! it, and no crate may re-export it or name its types in a public signature (`cargo xtask tidy`
//! checks both).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let url = "redis://:secret@127.0.0.1:6379/0";
//! assert_eq!(dq_redis_conn::describe(url), "redis at 127.0.0.1:6379");
//! // Creating the pool does not connect yet.
//! let pool = dq_redis_conn::pool(url, 4, Duration::from_secs(5))?;
//! let mut conn = dq_redis_conn::Exclusive::get(&pool).await?;
//! conn.query::<()>(&redis::cmd("PING")).await?;
//! # Ok(())
//! # }
//! ```

mod env;
mod pool;

pub use env::{EnvError, RedisEnv};
pub use pool::{
    client, default_url, describe, manager, pool, Exclusive, DEFAULT_URL, NAMESPACE_ENV,
    RESULTS_NAMESPACE_ENV, URL_ENV,
};
