//! An in-memory result backend, for tests and for apps that run producer and worker in one
//! process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::backend::{ResultBackend, DEFAULT_NAMESPACE};
use crate::error::Result;

/// Results kept in this process's memory, with their TTLs. Clones share the same store.
///
/// It follows the Redis backend's semantics: a value replaces the previous one, reading does not
/// consume it, it is gone once its TTL passes, and a blocking read wakes as soon as a value is
/// stored.
///
/// ```
/// use std::time::Duration;
/// use dq_results::{MemoryBackend, ResultBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), dq_results::Error> {
/// let backend = MemoryBackend::default();
/// backend.store("k", "[1,2]", Duration::from_secs(60)).await?;
/// assert_eq!(backend.get("k", None).await?.as_deref(), Some("[1,2]"));
/// assert_eq!(backend.get("other", Some(Duration::from_millis(10))).await?, None);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
    namespace: Arc<str>,
    prefix_keys: bool,
}

#[derive(Debug)]
struct Inner {
    entries: Mutex<Entries>,
    stored: Notify,
}

#[derive(Debug)]
struct Entries {
    map: HashMap<String, (String, Instant)>,
    next_sweep: Instant,
}

/// How often expired entries are swept out; reads never see them in between.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Default for MemoryBackend {
    fn default() -> MemoryBackend {
        MemoryBackend {
            inner: Arc::new(Inner {
                entries: Mutex::new(Entries {
                    map: HashMap::new(),
                    next_sweep: Instant::now() + SWEEP_EVERY,
                }),
                stored: Notify::new(),
            }),
            namespace: Arc::from(DEFAULT_NAMESPACE),
            prefix_keys: false,
        }
    }
}

impl MemoryBackend {
    /// Uses `namespace` in result keys instead of [`DEFAULT_NAMESPACE`].
    pub fn with_namespace(mut self, namespace: &str) -> MemoryBackend {
        self.namespace = Arc::from(namespace);
        self
    }

    /// Uses readable keys (`namespace:queue:actor:message_id`) instead of their MD5 digest.
    pub fn with_namespace_prefix_keys(mut self, yes: bool) -> MemoryBackend {
        self.prefix_keys = yes;
        self
    }

    /// How many unexpired results are stored.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .map
            .values()
            .filter(|(_, exp)| *exp > now)
            .count()
    }

    /// Whether no unexpired result is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map half-updated: every change is a
        // single insert or retain.
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peek(&self, key: &str) -> Option<String> {
        let entries = self.lock();
        match entries.map.get(key) {
            Some((value, expires)) if *expires > Instant::now() => Some(value.clone()),
            _ => None,
        }
    }
}

#[async_trait]
impl ResultBackend for MemoryBackend {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn use_namespace_prefix_keys(&self) -> bool {
        self.prefix_keys
    }

    async fn store(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        {
            let mut entries = self.lock();
            if now >= entries.next_sweep {
                entries.map.retain(|_, (_, exp)| *exp > now);
                entries.next_sweep = now + SWEEP_EVERY;
            }
            entries
                .map
                .insert(key.to_owned(), (value.to_owned(), now + ttl));
        }
        self.inner.stored.notify_waiters();
        Ok(())
    }

    async fn get(&self, key: &str, block: Option<Duration>) -> Result<Option<String>> {
        let deadline = block.map(|b| tokio::time::Instant::now() + b);
        loop {
            // Registered before looking, so a store between the look and the wait still wakes us.
            let stored = self.inner.stored.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            if let Some(value) = self.peek(key) {
                return Ok(Some(value));
            }
            let Some(deadline) = deadline else {
                return Ok(None);
            };
            if tokio::time::timeout_at(deadline, stored).await.is_err() {
                return Ok(self.peek(key));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_expire_and_are_replaced() {
        let b = MemoryBackend::default();
        b.store("k", "1", Duration::from_millis(30)).await.unwrap();
        b.store("k", "2", Duration::from_millis(30)).await.unwrap();
        assert_eq!(b.get("k", None).await.unwrap().as_deref(), Some("2"));
        assert_eq!(b.len(), 1);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(b.get("k", None).await.unwrap(), None);
        assert!(b.is_empty());
    }

    #[tokio::test]
    async fn blocking_get_wakes_on_store() {
        let b = MemoryBackend::default();
        let writer = b.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            writer.store("k", "\"v\"", Duration::from_secs(5)).await
        });
        let got = b.get("k", Some(Duration::from_secs(5))).await.unwrap();
        assert_eq!(got.as_deref(), Some("\"v\""));
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn blocking_get_times_out_not_early() {
        let b = MemoryBackend::default();
        let started = std::time::Instant::now();
        assert_eq!(
            b.get("k", Some(Duration::from_millis(50))).await.unwrap(),
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
