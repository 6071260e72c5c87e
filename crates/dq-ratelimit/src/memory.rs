//! An in-memory rate limiter backend: limits shared by the workers of one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::backend::RateLimiterBackend;
use crate::error::Result;

/// Counters and events in this process's memory, with their TTLs. Clones share them.
///
/// It behaves as the Redis backend does (an event stays until its TTL, so a late waiter sees
/// it), but only within one process: use [`RedisBackend`](crate::RedisBackend) to limit
/// several worker processes together.
///
/// ```
/// use std::time::Duration;
/// use dq_ratelimit::{MemoryBackend, RateLimiterBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dq_ratelimit::Error> {
/// let b = MemoryBackend::default();
/// let ttl = Duration::from_secs(60);
/// assert!(b.add("k", 1, ttl).await?);
/// assert!(!b.add("k", 1, ttl).await?);
/// assert!(b.incr("k", 1, 2, ttl).await?);
/// assert!(!b.incr("k", 1, 2, ttl).await?);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    events: Notify,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<String, (i64, Instant)>,
    events: HashMap<String, Instant>,
    writes: u64,
}

impl State {
    fn get(&self, key: &str, now: Instant) -> Option<i64> {
        match self.counters.get(key) {
            Some((v, expires)) if *expires > now => Some(*v),
            _ => None,
        }
    }

    fn put(&mut self, key: &str, value: i64, ttl: Duration, now: Instant) {
        // Expired keys are swept now and then, so the maps stay bounded by what is live.
        self.writes += 1;
        if self.writes.is_multiple_of(1024) {
            self.counters.retain(|_, (_, exp)| *exp > now);
            self.events.retain(|_, exp| *exp > now);
        }
        self.counters.insert(key.to_owned(), (value, now + ttl));
    }
}

impl MemoryBackend {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every change is one insert or retain, so a panic elsewhere cannot leave it torn.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_event(&self, key: &str) -> bool {
        let now = Instant::now();
        self.state().events.get(key).is_some_and(|exp| *exp > now)
    }
}

#[async_trait]
impl RateLimiterBackend for MemoryBackend {
    async fn add(&self, key: &str, value: i64, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut s = self.state();
        if s.get(key, now).is_some() {
            return Ok(false);
        }
        s.put(key, value, ttl, now);
        Ok(true)
    }

    async fn incr(&self, key: &str, amount: i64, maximum: i64, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut s = self.state();
        let value = s.get(key, now).unwrap_or(0) + amount;
        if value > maximum {
            return Ok(false);
        }
        s.put(key, value, ttl, now);
        Ok(true)
    }

    async fn decr(&self, key: &str, amount: i64, minimum: i64, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut s = self.state();
        let value = s.get(key, now).unwrap_or(0) - amount;
        if value < minimum {
            return Ok(false);
        }
        s.put(key, value, ttl, now);
        Ok(true)
    }

    async fn incr_and_sum(
        &self,
        key: &str,
        keys: &[String],
        amount: i64,
        maximum: i64,
        ttl: Duration,
    ) -> Result<bool> {
        let now = Instant::now();
        let mut s = self.state();
        let value = s.get(key, now).unwrap_or(0) + amount;
        if value > maximum {
            return Ok(false);
        }
        let total = amount + keys.iter().filter_map(|k| s.get(k, now)).sum::<i64>();
        if total > maximum {
            return Ok(false);
        }
        s.put(key, value, ttl, now);
        Ok(true)
    }

    async fn wait(&self, key: &str, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            // Registered before looking, so an event posted between the look and the wait
            // still wakes us.
            let posted = self.inner.events.notified();
            tokio::pin!(posted);
            posted.as_mut().enable();
            if self.has_event(key) {
                return Ok(true);
            }
            match deadline {
                None => posted.await,
                Some(d) => {
                    if tokio::time::timeout_at(d, posted).await.is_err() {
                        return Ok(self.has_event(key));
                    }
                }
            }
        }
    }

    async fn wait_notify(&self, key: &str, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        self.state().events.insert(key.to_owned(), now + ttl);
        self.inner.events.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_respect_bounds_and_expire() {
        let b = MemoryBackend::default();
        let ttl = Duration::from_millis(30);
        assert!(b.decr("k", 1, 0, ttl).await.is_ok_and(|d| !d));
        assert!(b.incr("k", 2, 2, ttl).await.unwrap());
        assert!(!b.incr("k", 1, 2, ttl).await.unwrap());
        assert!(b.decr("k", 2, 0, ttl).await.unwrap());
        assert!(!b.decr("k", 1, 0, ttl).await.unwrap());
        assert!(b.add("j", 5, ttl).await.unwrap());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(b.add("j", 1, ttl).await.unwrap());
    }

    #[tokio::test]
    async fn incr_and_sum_counts_every_key() {
        let b = MemoryBackend::default();
        let ttl = Duration::from_secs(5);
        let keys = vec!["a@2".to_owned(), "a@1".to_owned()];
        assert!(b.add("a@1", 2, ttl).await.unwrap());
        assert!(b.incr_and_sum("a@2", &keys, 1, 3, ttl).await.unwrap());
        assert!(!b.incr_and_sum("a@2", &keys, 1, 3, ttl).await.unwrap());
    }

    #[tokio::test]
    async fn events_wake_waiters_and_stay() {
        let b = MemoryBackend::default();
        let poster = b.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            poster.wait_notify("e", Duration::from_secs(5)).await
        });
        assert!(b.wait("e", None).await.unwrap());
        task.await.unwrap().unwrap();
        assert!(b.wait("e", Some(Duration::ZERO)).await.unwrap());
        let started = std::time::Instant::now();
        assert!(!b
            .wait("other", Some(Duration::from_millis(30)))
            .await
            .unwrap());
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
