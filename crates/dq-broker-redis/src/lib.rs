//! # dq-broker-redis
//!
//! The Redis broker of dq: queues that dq and Python Dramatiq 2.2.1 workers and producers
//! share. It uses Dramatiq's keys (`dramatiq:default`, `dramatiq:default.msgs`, the `.DQ`
//! delay queue, the `.XQ` dead letters kept 7 days, `__acks__` sets and `__heartbeats__`) and
//! the same per-message effects, so a message sent from Python runs on a dq worker and the
//! other way round, both kinds of worker can consume one queue, and the messages of a worker
//! that died, of either language, are recovered by the others after the heartbeat timeout.
//!
//! **Key design decision:** all queue operations go through one Lua script of our own, written
//! from Dramatiq's documented semantics (WIRE.md) rather than copied, with the same effect on
//! every key per message id. Being our own lets it batch what Dramatiq does one id at a time:
//! an `enqueue_many` is one call, a fetch moves up to the prefetch in one call, and acks from
//! many worker threads are settled together in one call, while every call still heartbeats and
//! Python workers running their script see nothing different. It also PUBLISHes on an extra
//! channel when a queue gains messages, so idle dq consumers wake at once instead of polling;
//! they still poll with Dramatiq's backoff, for Python producers that do not publish.
//!
//! Delivery guarantees:
//! - A fetched id sits in this broker's ack set until an ack, nack or requeue is applied in
//!   Redis; `Acker::ack` returns only then. If the process dies, another worker's maintenance
//!   puts the id back on the queue once this broker's heartbeat is older than the timeout.
//! - A background task heartbeats every few seconds even while every worker thread is busy,
//!   so a live worker's messages are never recovered from under it.
//! - When Redis goes away, calls fail with a transient `BrokerErrorKind::Connection` error,
//!   connections are redrawn from the `deadpool-redis` pool, and pending acks are retried until
//!   Redis has them. Every settle only touches ids still in our ack set, so a retried ack is
//!   never applied twice.
//! - Redis unreachable when the broker is built is a [`RedisBrokerError::Connect`], whose kind
//!   is `Connection` (the CLI exits with code 3).
//! - Passwords in URLs are redacted in logs, `Debug` output and errors.
//!
//! Broker priority ([`max_priority`](RedisBrokerBuilder::max_priority)): a message whose
//! `broker_priority` option is 1 or more waits in a sorted set of dq's own,
//! `<ns>:__dq_priority__.<q>` (higher first, FIFO within a level), instead of the list. Python
//! workers never read it, so its ids are also held by a pseudo-worker whose heartbeat dq
//! consumers keep fresh: once none has run for the heartbeat timeout, any worker's maintenance
//! (Python's included) moves them onto the list, and Python workers get them without their
//! priority. Plain messages stay on the list, exactly as Python keeps them.
//!
//! The worker registry ([`Broker::publish_worker`](dq_core::Broker::publish_worker), what
//! `dq actors` reads) lives in keys of dq's own that Dramatiq never touches: a JSON record per
//! worker at `<ns>:__dq_workers__:<worker_id>`, expiring with its TTL (`PX`), indexed in the
//! sorted set `<ns>:__dq_workers__` (worker id scored by expiry time).
//!
//! ```no_run
//! use dq_broker_redis::RedisBroker;
//! use dq_core::{Broker, Message};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // Redis at localhost:6379 unless DQ_REDIS_URL says otherwise, in namespace `dramatiq` unless
//! // DQ_REDIS_NAMESPACE does.
//! let broker = RedisBroker::from_env().await?;
//!
//! // A namespace per tenant keeps their queues apart on one Redis.
//! let tenant = RedisBroker::builder()
//!     .url("redis://:secret@127.0.0.1:6379/0")
//!     .namespace("tenant-a")
//!     .build()
//!     .await?;
//!
//! let mut msg = Message::new("default", "add", &(1, 2), &())?;
//! broker.enqueue(&mut msg).await?;
//! assert!(msg.options.redis_message_id().is_some());
//! # drop(tenant);
//! # Ok(())
//! # }
//! ```
//!
//! | setting | default | builder method |
//! |---|---|---|
//! | URL | `DQ_REDIS_URL` or `redis://127.0.0.1:6379` | [`url`](RedisBrokerBuilder::url) |
//! | namespace | `dramatiq` (`DQ_REDIS_NAMESPACE` with [`from_env`](RedisBrokerBuilder::from_env)) | [`namespace`](RedisBrokerBuilder::namespace) |
//! | heartbeat timeout | 60 s | [`heartbeat_timeout`](RedisBrokerBuilder::heartbeat_timeout) |
//! | dead letters kept | 7 days | [`dead_message_ttl`](RedisBrokerBuilder::dead_message_ttl) |
//! | maintenance | 1000 in 1,000,000 calls | [`maintenance_chance`](RedisBrokerBuilder::maintenance_chance) |
//! | connections | 8 | [`pool_size`](RedisBrokerBuilder::pool_size) |
//! | reply timeout | 30 s | [`response_timeout`](RedisBrokerBuilder::response_timeout) |
//! | consumer close budget | 15 s | [`close_timeout`](RedisBrokerBuilder::close_timeout) |
//! | TLS root | system roots | [`tls_root_certificate`](RedisBrokerBuilder::tls_root_certificate) |
//! | broker priority | off (`DQ_MAX_PRIORITY` with [`from_env`](RedisBrokerBuilder::from_env)) | [`max_priority`](RedisBrokerBuilder::max_priority) |
//!
//! `rediss://` URLs use TLS (rustls, with the system's root certificates, or the CA given to
//! [`tls_root_certificate`](RedisBrokerBuilder::tls_root_certificate)). The environment
//! variable `dramatiq_lua_max_stack` overrides the probed Lua stack size, as in Dramatiq.

mod broker;
mod conn;
mod consumer;
mod error;
mod notify;
mod schedules;
mod unique;
mod workers;

pub use broker::{
    RedisBroker, RedisBrokerBuilder, DEFAULT_NAMESPACE, DEFAULT_URL, MAINTENANCE_SCALE,
    NAMESPACE_ENV, URL_ENV,
};
pub use error::RedisBrokerError;

/// Entry points for the fuzz targets (`fuzz/`, `dq-fuzz`): not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    /// Parses `resp` (RESP bytes, as Redis sends them) and reads it as the dispatch script's
    /// `fetch` reply, as a consumer does: `Some((deliveries, orphans))`, or `None` when the
    /// bytes are not a reply or the reply is not the shape the script returns.
    pub fn fetch_reply(resp: &[u8]) -> Option<(usize, usize)> {
        let value = redis::parse_redis_value(resp).ok()?;
        let fetched = crate::consumer::read_fetch_reply(value)?;
        Some((fetched.entries.len(), fetched.orphans.len()))
    }
}
