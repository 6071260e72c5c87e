//! The `RateLimiterBackend` trait: the few atomic counter operations limiters and barriers need.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// Counters with TTLs, and events to wait on: what rate limiters and barriers are built from.
/// Implemented by [`RedisBackend`](crate::RedisBackend) and [`MemoryBackend`](crate::MemoryBackend).
///
/// Keys are used verbatim, with no namespace, and every write refreshes the key's TTL, as in
/// Dramatiq, so Python and Rust limiters on one key share one limit.
#[async_trait]
pub trait RateLimiterBackend: Send + Sync + 'static {
    /// Sets `key` to `value` only if it does not exist. True if it was set.
    async fn add(&self, key: &str, value: i64, ttl: Duration) -> Result<bool>;

    /// Adds `amount` to `key` (missing counts as 0) unless the sum would exceed `maximum`.
    /// True if it was added.
    async fn incr(&self, key: &str, amount: i64, maximum: i64, ttl: Duration) -> Result<bool>;

    /// Takes `amount` from `key` (missing counts as 0) unless the difference would be below
    /// `minimum`. True if it was taken.
    async fn decr(&self, key: &str, amount: i64, minimum: i64, ttl: Duration) -> Result<bool>;

    /// Adds `amount` to `key` unless that would exceed `maximum`, or `amount` plus the sum of
    /// `keys` (which include `key`; missing ones count as 0) would. True if it was added.
    async fn incr_and_sum(
        &self,
        key: &str,
        keys: &[String],
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool>;

    /// Waits up to `timeout` (forever with `None`) for an event on `key`. True if there was
    /// one. Events stay until their TTL, so a late waiter sees an earlier event.
    async fn wait(&self, key: &str, timeout: Option<Duration>) -> Result<bool>;

    /// Posts an event on `key`, kept for `ttl`, waking every waiter.
    async fn wait_notify(&self, key: &str, ttl: Duration) -> Result<()>;
}

#[async_trait]
impl<B: RateLimiterBackend + ?Sized> RateLimiterBackend for Arc<B> {
    async fn add(&self, key: &str, value: i64, ttl: Duration) -> Result<bool> {
        (**self).add(key, value, ttl).await
    }

    async fn incr(&self, key: &str, amount: i64, maximum: i64, ttl: Duration) -> Result<bool> {
        (**self).incr(key, amount, maximum, ttl).await
    }

    async fn decr(&self, key: &str, amount: i64, minimum: i64, ttl: Duration) -> Result<bool> {
        (**self).decr(key, amount, minimum, ttl).await
    }

    async fn incr_and_sum(
        &self,
        key: &str,
        keys: &[String],
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool> {
        (**self).incr_and_sum(key, keys, amount, maximum, ttl).await
    }

    async fn wait(&self, key: &str, timeout: Option<Duration>) -> Result<bool> {
        (**self).wait(key, timeout).await
    }

    async fn wait_notify(&self, key: &str, ttl: Duration) -> Result<()> {
        (**self).wait_notify(key, ttl).await
    }
}

/// A TTL in whole milliseconds, as Redis' `PX` / `PEXPIRE` take it. Redis refuses 0; a
/// sub-millisecond TTL is rounded up so the key still lives (briefly).
pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    ttl.as_millis().clamp(1, i64::MAX as u128) as i64
}
