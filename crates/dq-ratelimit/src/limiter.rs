//! Rate limiters: Concurrent, Bucket and Window, and the permit `acquire` hands out.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::backend::RateLimiterBackend;
use crate::error::{RateLimitExceeded, Result};

/// Something that hands out a limited number of slots: Dramatiq's `RateLimiter`.
///
/// [`acquire`](RateLimiter::acquire) raises [`RateLimitExceeded`] when no slot is free, so an
/// actor that `?`s it is retried with backoff by the Retries middleware, as in Dramatiq;
/// [`try_acquire`](RateLimiter::try_acquire) instead reports it
/// ([`Permit::acquired`]), Dramatiq's `acquire(raise_on_failure=False)`.
///
/// The slot is given back when the [`Permit`] is released or dropped (for limiters that give
/// slots back: [`ConcurrentRateLimiter`]).
///
/// ```
/// use dq_core::ActorError;
/// use dq_ratelimit::{ConcurrentRateLimiter, MemoryBackend, RateLimiter};
///
/// async fn one_at_a_time(mutex: &ConcurrentRateLimiter) -> Result<(), ActorError> {
///     let permit = mutex.acquire().await?; // RateLimitExceeded: retried with backoff
///     // ... the work only one worker may do at a time ...
///     permit.release().await?;
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mutex = ConcurrentRateLimiter::new(MemoryBackend::default(), "distributed-mutex", 1);
/// one_at_a_time(&mutex).await?;
///
/// let first = mutex.try_acquire().await?;
/// let second = mutex.try_acquire().await?;
/// assert!(first.acquired() && !second.acquired());
/// # Ok(()) }
/// ```
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// The key the limit is kept under.
    fn key(&self) -> &str;

    /// Takes a slot if one is free (Dramatiq's `_acquire`): `Some` permit holding it, or
    /// `None`.
    async fn take(&self) -> Result<Option<Permit>>;

    /// A slot, or [`RateLimitExceeded`](crate::Error::RateLimitExceeded) when none is free.
    async fn acquire(&self) -> Result<Permit> {
        match self.take().await? {
            Some(permit) => Ok(permit),
            None => Err(RateLimitExceeded {
                key: self.key().to_owned(),
            }
            .into()),
        }
    }

    /// A permit that says whether a slot was free ([`Permit::acquired`]); only backend
    /// failures are errors.
    async fn try_acquire(&self) -> Result<Permit> {
        Ok(self.take().await?.unwrap_or(Permit {
            acquired: false,
            release: None,
        }))
    }

    /// [`acquire`](RateLimiter::acquire) for synchronous code: a sync actor, a plain thread.
    /// It blocks the thread, so never call it from async code.
    fn acquire_blocking(&self) -> Result<Permit> {
        block_on(self.acquire())
    }

    /// [`try_acquire`](RateLimiter::try_acquire) for synchronous code.
    fn try_acquire_blocking(&self) -> Result<Permit> {
        block_on(self.try_acquire())
    }
}

/// A slot taken from a limiter, or the news that none was free. Given back by
/// [`release`](Permit::release), or when dropped.
#[must_use = "a permit gives its slot back when dropped"]
#[derive(Debug)]
pub struct Permit {
    acquired: bool,
    release: Option<Release>,
}

/// How to give a concurrency slot back.
#[derive(Debug)]
struct Release {
    backend: Arc<dyn RateLimiterBackend>,
    key: Arc<str>,
    ttl: Duration,
}

impl std::fmt::Debug for dyn RateLimiterBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimiterBackend")
    }
}

impl Release {
    async fn run(self) -> Result<()> {
        self.backend
            .decr(&self.key, 1, 0, self.ttl)
            .await
            .map(|_| ())
    }
}

impl Permit {
    /// Whether a slot was taken.
    pub fn acquired(&self) -> bool {
        self.acquired
    }

    /// Gives the slot back now and says whether that worked. Dropping the permit gives it back
    /// too, in a background task, reporting failures only in the log.
    pub async fn release(mut self) -> Result<()> {
        match self.release.take() {
            Some(r) => r.run().await,
            None => Ok(()),
        }
    }

    /// [`release`](Permit::release) for synchronous code.
    pub fn release_blocking(self) -> Result<()> {
        block_on(self.release())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(release) = self.release.take() else {
            return;
        };
        let key = release.key.clone();
        let task = async move {
            if let Err(e) = release.run().await {
                // The slot comes back when the key's TTL passes.
                tracing::warn!(key = %key, error = %dq_core::ErrorChain(&e), "cannot give a rate limit slot back");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn(task)),
            Err(_) => drop(runtime().spawn(task)),
        }
    }
}

/// The runtime for blocking calls made outside any Tokio runtime.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dq-ratelimit")
            .enable_all()
            .build()
            .expect("cannot start dq-ratelimit's runtime")
    })
}

/// Runs `fut` to completion from synchronous code: on the runtime of the current thread when
/// there is one (a sync actor runs on one of the worker runtime's blocking threads), else on a
/// small runtime of this crate's own.
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(fut),
        Err(_) => runtime().block_on(fut),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn taken() -> Option<Permit> {
    Some(Permit {
        acquired: true,
        release: None,
    })
}

/// At most `limit` holders at once, across every worker sharing the backend: Dramatiq's
/// `ConcurrentRateLimiter`. With a limit of 1 it is a distributed mutex.
///
/// The key holds the number of holders, and lives `ttl` (default 15 minutes) after its last
/// change, so slots of a worker that died come back then.
#[derive(Clone, Debug)]
pub struct ConcurrentRateLimiter {
    backend: Arc<dyn RateLimiterBackend>,
    key: Arc<str>,
    limit: i64,
    ttl: Duration,
}

impl ConcurrentRateLimiter {
    /// At most `limit` holders of `key`.
    ///
    /// # Panics
    ///
    /// If `limit` is 0.
    pub fn new(backend: impl RateLimiterBackend, key: &str, limit: u32) -> ConcurrentRateLimiter {
        assert!(limit >= 1, "limit must be positive");
        ConcurrentRateLimiter {
            backend: Arc::new(backend),
            key: Arc::from(key),
            limit: i64::from(limit),
            ttl: Duration::from_millis(900_000),
        }
    }

    /// How long the key lives after its last change (default 15 minutes).
    pub fn with_ttl(mut self, ttl: Duration) -> ConcurrentRateLimiter {
        self.ttl = ttl;
        self
    }

    /// The limit.
    pub fn limit(&self) -> u32 {
        self.limit as u32
    }
}

#[async_trait]
impl RateLimiter for ConcurrentRateLimiter {
    fn key(&self) -> &str {
        &self.key
    }

    async fn take(&self) -> Result<Option<Permit>> {
        let added = self.backend.add(&self.key, 1, self.ttl).await?;
        if !added
            && !self
                .backend
                .incr(&self.key, 1, self.limit, self.ttl)
                .await?
        {
            return Ok(None);
        }
        Ok(Some(Permit {
            acquired: true,
            release: Some(Release {
                backend: self.backend.clone(),
                key: self.key.clone(),
                ttl: self.ttl,
            }),
        }))
    }
}

/// At most `limit` acquisitions per bucket of time (default 1 s), buckets aligned on the epoch:
/// Dramatiq's `BucketRateLimiter`. Cheap, but a burst at the end of one bucket and the start of
/// the next can admit twice the limit within a bucket's length; [`WindowRateLimiter`] cannot.
///
/// The key of the bucket starting at `t` ms is `"<key>@<t>"`. Slots are not given back.
#[derive(Clone, Debug)]
pub struct BucketRateLimiter {
    backend: Arc<dyn RateLimiterBackend>,
    key: Arc<str>,
    limit: i64,
    bucket: Duration,
}

impl BucketRateLimiter {
    /// At most `limit` acquisitions of `key` per `bucket`.
    ///
    /// # Panics
    ///
    /// If `limit` is 0 or `bucket` is shorter than a millisecond.
    pub fn new(
        backend: impl RateLimiterBackend,
        key: &str,
        limit: u32,
        bucket: Duration,
    ) -> BucketRateLimiter {
        assert!(limit >= 1, "limit must be positive");
        assert!(bucket.as_millis() >= 1, "bucket must be at least 1 ms");
        BucketRateLimiter {
            backend: Arc::new(backend),
            key: Arc::from(key),
            limit: i64::from(limit),
            bucket,
        }
    }

    /// The limiter key's bucket at `now_ms`.
    fn bucket_key(&self, now_ms: i64) -> String {
        let bucket = self.bucket.as_millis() as i64;
        format!("{}@{}", self.key, now_ms - now_ms.rem_euclid(bucket))
    }
}

#[async_trait]
impl RateLimiter for BucketRateLimiter {
    fn key(&self) -> &str {
        &self.key
    }

    async fn take(&self) -> Result<Option<Permit>> {
        let key = self.bucket_key(now_ms());
        if self.backend.add(&key, 1, self.bucket).await?
            || self.backend.incr(&key, 1, self.limit, self.bucket).await?
        {
            return Ok(taken());
        }
        Ok(None)
    }
}

/// At most `limit` acquisitions in any `window` whole seconds: Dramatiq's
/// `WindowRateLimiter`. Dearer than a bucket (it reads `window` keys per acquisition) but with no
/// bursts across bucket edges.
///
/// Each second `s` (Unix time) counts under `"<key>@<s>"`. Slots are not given back.
#[derive(Clone, Debug)]
pub struct WindowRateLimiter {
    backend: Arc<dyn RateLimiterBackend>,
    key: Arc<str>,
    limit: i64,
    window: u32,
}

impl WindowRateLimiter {
    /// At most `limit` acquisitions of `key` in any `window` seconds.
    ///
    /// # Panics
    ///
    /// If `limit` or `window` is 0.
    pub fn new(
        backend: impl RateLimiterBackend,
        key: &str,
        limit: u32,
        window: u32,
    ) -> WindowRateLimiter {
        assert!(limit >= 1, "limit must be positive");
        assert!(window >= 1, "window must be positive");
        WindowRateLimiter {
            backend: Arc::new(backend),
            key: Arc::from(key),
            limit: i64::from(limit),
            window,
        }
    }

    /// The keys of the window ending at second `now_s`, newest first.
    fn window_keys(&self, now_s: i64) -> Vec<String> {
        (0..i64::from(self.window))
            .map(|i| format!("{}@{}", self.key, now_s - i))
            .collect()
    }
}

#[async_trait]
impl RateLimiter for WindowRateLimiter {
    fn key(&self) -> &str {
        &self.key
    }

    async fn take(&self) -> Result<Option<Permit>> {
        let keys = self.window_keys(now_ms().div_euclid(1000));
        let ttl = Duration::from_secs(u64::from(self.window));
        if self
            .backend
            .incr_and_sum(&keys[0], &keys, 1, self.limit, ttl)
            .await?
        {
            return Ok(taken());
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    #[test]
    fn keys_follow_dramatiq() {
        let b = BucketRateLimiter::new(
            MemoryBackend::default(),
            "api",
            3,
            Duration::from_millis(1000),
        );
        assert_eq!(b.bucket_key(1_700_000_123_456), "api@1700000123000");
        let w = WindowRateLimiter::new(MemoryBackend::default(), "api", 3, 3);
        assert_eq!(
            w.window_keys(1_700_000_123),
            ["api@1700000123", "api@1700000122", "api@1700000121"]
        );
    }

    #[tokio::test]
    async fn concurrent_slots_come_back_on_release_and_drop() {
        let l = ConcurrentRateLimiter::new(MemoryBackend::default(), "k", 2);
        let a = l.acquire().await.unwrap();
        let b = l.acquire().await.unwrap();
        let err = l.acquire().await.unwrap_err();
        assert_eq!(err.to_string(), "rate limit exceeded for key 'k'");
        a.release().await.unwrap();
        let c = l.try_acquire().await.unwrap();
        assert!(c.acquired());
        assert!(!l.try_acquire().await.unwrap().acquired());
        drop(b);
        // The drop gives the slot back in a task: let it run.
        let mut acquired = false;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            let p = l.try_acquire().await.unwrap();
            if p.acquired() {
                acquired = true;
                break;
            }
        }
        assert!(acquired);
        drop(c);
    }

    #[test]
    fn blocking_calls_work_outside_a_runtime() {
        let l = ConcurrentRateLimiter::new(MemoryBackend::default(), "k", 1);
        let p = l.acquire_blocking().unwrap();
        assert!(!l.try_acquire_blocking().unwrap().acquired());
        p.release_blocking().unwrap();
        assert!(l.try_acquire_blocking().unwrap().acquired());
    }
}
