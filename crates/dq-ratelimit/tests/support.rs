//! Actors, apps, clocks and Redis keys shared by the tests.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dq_core::{Actor, ActorOptions, Handler};
use dq_ratelimit::{MemoryBackend, RateLimiterBackend, RedisBackend};

/// An actor on `queue`, retried quickly and forever unless `f` says otherwise.
pub(crate) fn actor(
    name: &str,
    queue: &str,
    handler: Handler,
    f: impl FnOnce(&mut ActorOptions),
) -> Actor {
    let mut options = ActorOptions {
        queue_name: queue.to_owned(),
        max_retries: Some(None),
        min_backoff: Some(20),
        max_backoff: Some(200),
        ..Default::default()
    };
    f(&mut options);
    Actor::new(name.to_owned(), options, handler)
}

pub(crate) use dq_test::stack::{app, worker};

/// Wall-clock milliseconds, the clock limiters cut buckets and windows on.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sleeps until `offset_ms` into the next period of `period_ms` (aligned on the epoch, as
/// buckets and window seconds are), so a burst of attempts falls inside one period.
pub(crate) async fn align(period_ms: u64, offset_ms: u64) {
    let now = now_ms();
    let target = now - now % period_ms + period_ms + offset_ms;
    tokio::time::sleep(Duration::from_millis(target - now)).await;
}

/// Limiter keys of their own on Redis (deleted on drop), or in memory.
pub(crate) struct Keys {
    pub(crate) prefix: String,
    pub(crate) url: Option<String>,
}

impl Keys {
    pub(crate) fn memory(prefix: &str) -> Keys {
        Keys {
            prefix: dq_test::unique_name(prefix),
            url: None,
        }
    }

    pub(crate) fn redis(prefix: &str) -> Keys {
        Keys {
            url: Some(dq_test::require_redis()),
            prefix: dq_test::unique_name(prefix),
        }
    }

    /// A key under this prefix.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// A fresh backend: each test's own memory, or Redis.
    pub(crate) fn backend(&self) -> Arc<dyn RateLimiterBackend> {
        match &self.url {
            Some(url) => Arc::new(self.redis_backend(url, 16)),
            None => Arc::new(MemoryBackend::default()),
        }
    }

    pub(crate) fn redis_backend(&self, url: &str, pool_size: usize) -> RedisBackend {
        RedisBackend::builder()
            .url(url)
            .pool_size(pool_size)
            .build()
            .unwrap()
    }

    pub(crate) fn client(&self) -> redis::Connection {
        redis::Client::open(self.url.as_deref().expect("a Redis test"))
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let Some(url) = &self.url else { return };
        let Ok(mut c) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut c)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut c);
        }
    }
}
