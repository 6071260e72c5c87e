//! Barrier: wait until a number of parties have arrived.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::RateLimiterBackend;
use crate::error::Result;
use crate::limiter::block_on;

/// A distributed barrier: Dramatiq's `Barrier`. [`create`](Barrier::create) it for `n`
/// parties; each calls [`wait`](Barrier::wait), and the barrier clears when the last arrives.
///
/// The key holds how many parties are still expected; clearing posts an event under
/// `"<key>@events"` that blocked waiters wake on. A barrier whose key is missing (never created,
/// or expired) counts as cleared. Use a fresh key (a UUID) per barrier: reusing one is undefined,
/// as in Dramatiq.
///
/// ```
/// use dq_ratelimit::{Barrier, MemoryBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dq_ratelimit::Error> {
/// let barrier = Barrier::new(MemoryBackend::default(), "some-barrier");
/// assert!(barrier.create(3).await?);
/// assert!(!barrier.wait(false, None).await?);
/// assert!(!barrier.wait(false, None).await?);
/// assert!(barrier.wait(false, None).await?);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Barrier {
    backend: Arc<dyn RateLimiterBackend>,
    key: String,
    key_events: String,
    ttl: Duration,
}

impl Barrier {
    /// The barrier named `key`, with a TTL of 15 minutes.
    pub fn new(backend: impl RateLimiterBackend, key: &str) -> Barrier {
        Barrier::from_arc(Arc::new(backend), key)
    }

    /// Like [`Barrier::new`], for a backend that is already shared.
    pub fn from_arc(backend: Arc<dyn RateLimiterBackend>, key: &str) -> Barrier {
        Barrier {
            backend,
            key: key.to_owned(),
            key_events: format!("{key}@events"),
            ttl: Duration::from_millis(900_000),
        }
    }

    /// How long the barrier's keys live after their last change (default 15 minutes).
    pub fn with_ttl(mut self, ttl: Duration) -> Barrier {
        self.ttl = ttl;
        self
    }

    /// The barrier's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Creates the barrier for `parties` parties. False if it already existed.
    ///
    /// # Panics
    ///
    /// If `parties` is 0.
    pub async fn create(&self, parties: usize) -> Result<bool> {
        assert!(parties > 0, "parties must be a positive integer");
        let parties = i64::try_from(parties).unwrap_or(i64::MAX);
        self.backend.add(&self.key, parties, self.ttl).await
    }

    /// Arrives at the barrier. True when every party has arrived: this one was the last, or,
    /// with `block`, the others arrived within `timeout` (forever with `None`).
    pub async fn wait(&self, block: bool, timeout: Option<Duration>) -> Result<bool> {
        // The count never drops below 1: the party that finds 1 (or no key) is the last.
        let cleared = !self.backend.decr(&self.key, 1, 1, self.ttl).await?;
        if cleared {
            self.backend.wait_notify(&self.key_events, self.ttl).await?;
            return Ok(true);
        }
        if block {
            return self.backend.wait(&self.key_events, timeout).await;
        }
        Ok(false)
    }

    /// [`create`](Barrier::create) for synchronous code.
    pub fn create_blocking(&self, parties: usize) -> Result<bool> {
        block_on(self.create(parties))
    }

    /// [`wait`](Barrier::wait) for synchronous code.
    pub fn wait_blocking(&self, block: bool, timeout: Option<Duration>) -> Result<bool> {
        block_on(self.wait(block, timeout))
    }
}
