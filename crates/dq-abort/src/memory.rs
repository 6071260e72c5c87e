//! Events in this process's memory: dramatiq-abort's `StubBackend`, with expiry.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::backend::{Event, EventBackend};
use crate::error::Result;

struct Entry {
    values: VecDeque<Map<String, Value>>,
    expires: Instant,
}

struct Inner {
    events: Mutex<HashMap<String, Entry>>,
    /// Bumped on every notify, so waiters look again.
    version: watch::Sender<u64>,
}

/// Events kept in memory, for the stub broker, tests, and a single process: a list per key,
/// dropped `ttl` after its last notify, as Redis would. Clones share the events.
///
/// ```
/// use std::time::Duration;
/// use dq_abort::{Event, EventBackend, MemoryBackend};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let backend = MemoryBackend::default();
/// let waiter = backend.clone();
/// let wait = tokio::spawn(async move {
///     waiter.wait_many(&["abort:m1".to_owned()], Duration::from_secs(5)).await
/// });
/// backend.notify(&[Event::new("abort:m1").with_param("abort_timeout", 0)], Duration::from_secs(90)).await?;
/// let event = wait.await.unwrap()?.expect("signalled");
/// assert_eq!(event.params["abort_timeout"], 0);
/// # Ok::<(), dq_abort::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

impl Default for MemoryBackend {
    fn default() -> MemoryBackend {
        MemoryBackend {
            inner: Arc::new(Inner {
                events: Mutex::new(HashMap::new()),
                version: watch::Sender::new(0),
            }),
        }
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

impl MemoryBackend {
    fn take(&self, key: &str) -> Option<Event> {
        let mut events = self.inner.events.lock().unwrap_or_else(|p| p.into_inner());
        let entry = events.get_mut(key)?;
        if entry.expires <= Instant::now() {
            events.remove(key);
            return None;
        }
        let params = entry.values.pop_front();
        if entry.values.is_empty() {
            events.remove(key);
        }
        params.map(|params| Event {
            key: key.to_owned(),
            params,
        })
    }
}

#[async_trait]
impl EventBackend for MemoryBackend {
    async fn notify(&self, events: &[Event], ttl: Duration) -> Result<()> {
        let expires = Instant::now() + ttl;
        {
            let mut map = self.inner.events.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, e| e.expires > Instant::now());
            for event in events {
                let entry = map.entry(event.key.clone()).or_insert_with(|| Entry {
                    values: VecDeque::new(),
                    expires,
                });
                entry.values.push_back(event.params.clone());
                entry.expires = expires;
            }
        }
        self.inner.version.send_modify(|v| *v = v.wrapping_add(1));
        Ok(())
    }

    async fn poll(&self, key: &str) -> Result<Option<Event>> {
        Ok(self.take(key))
    }

    async fn wait_many(&self, keys: &[String], timeout: Duration) -> Result<Option<Event>> {
        let until = tokio::time::Instant::now() + timeout;
        let mut version = self.inner.version.subscribe();
        loop {
            // Subscribed before looking, so a notify in between is not missed.
            version.mark_unchanged();
            if let Some(event) = keys.iter().find_map(|k| self.take(k)) {
                return Ok(Some(event));
            }
            match tokio::time::timeout_at(until, version.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Ok(None),
            }
        }
    }
}
