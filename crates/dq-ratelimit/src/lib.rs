//! # dq-ratelimit
//!
//! Rate limiting for dq: [`ConcurrentRateLimiter`] (a distributed mutex at limit 1),
//! [`BucketRateLimiter`], [`WindowRateLimiter`] and [`Barrier`], on Redis ([`RedisBackend`]) or
//! in memory ([`MemoryBackend`]), and the [`GroupCallbacks`] middleware that runs a group's
//! completion callbacks.
//!
//! **Key design decision:** the backends keep Dramatiq's key layout and its optimistic
//! `WATCH`/`MULTI` updates, byte for byte: keys are the limiter's key verbatim (a bucket's is
//! `key@<ms>`, a window second's `key@<s>`), values are decimal integers. So a Python worker and a
//! Rust worker that limit the same key share the same limit, and a group's barrier can be passed
//! by children of either. `acquire` raises [`RateLimitExceeded`], which an actor `?`s into its
//! [`ActorError`](dq_core::ActorError) so Retries backs off, as in Dramatiq.
//!
//! ```
//! use dq_core::ActorError;
//! use dq_ratelimit::{ConcurrentRateLimiter, MemoryBackend, RateLimiter};
//!
//! // Any backend: `RedisBackend` to share the limit between worker processes.
//! let mutex = ConcurrentRateLimiter::new(MemoryBackend::default(), "distributed-mutex", 1);
//!
//! // A sync actor's body: the second concurrent caller fails with RateLimitExceeded and is
//! // retried with backoff.
//! fn one_at_a_time(mutex: &ConcurrentRateLimiter) -> Result<(), ActorError> {
//!     let permit = mutex.acquire_blocking()?;
//!     // ... the work ...
//!     permit.release_blocking()?;
//!     Ok(())
//! }
//! one_at_a_time(&mutex).unwrap();
//!
//! // Or ask instead of failing: Dramatiq's `acquire(raise_on_failure=False)`.
//! let permit = mutex.try_acquire_blocking().unwrap();
//! if permit.acquired() {
//!     println!("Lock was acquired.");
//! } else {
//!     println!("Lock could not be acquired.");
//! }
//! ```
//!
//! | item | Dramatiq |
//! |---|---|
//! | [`ConcurrentRateLimiter`] | `rate_limits.ConcurrentRateLimiter(backend, key, limit, ttl)` |
//! | [`BucketRateLimiter`] | `rate_limits.BucketRateLimiter(backend, key, limit, bucket)` |
//! | [`WindowRateLimiter`] | `rate_limits.WindowRateLimiter(backend, key, limit, window)` |
//! | [`RateLimiter::acquire`] / [`try_acquire`](RateLimiter::try_acquire) | `limiter.acquire()` / `acquire(raise_on_failure=False)` |
//! | [`Barrier`] | `rate_limits.Barrier(backend, key, ttl)` |
//! | [`RedisBackend`], [`MemoryBackend`] | `rate_limits.backends.RedisBackend`, `StubBackend` |
//! | [`GroupCallbacks`] | `middleware.GroupCallbacks(rate_limiter_backend, barrier_ttl)` |
//!
//! Every async call has a `_blocking` twin for sync actors and plain threads.

#![doc(test(attr(deny(warnings))))]

mod backend;
mod barrier;
mod error;
mod group_callbacks;
mod limiter;
mod memory;
mod redis_backend;

pub use backend::RateLimiterBackend;
pub use barrier::Barrier;
pub use error::{Error, RateLimitExceeded, Result};
pub use group_callbacks::GroupCallbacks;
pub use limiter::{
    BucketRateLimiter, ConcurrentRateLimiter, Permit, RateLimiter, WindowRateLimiter,
};
pub use memory::MemoryBackend;
pub use redis_backend::{RedisBackend, RedisBackendBuilder};
