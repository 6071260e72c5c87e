//! Worker settings, with Dramatiq's defaults and environment overrides.

use std::time::Duration;

/// How a worker runs. `Default` gives Dramatiq's defaults, with its environment overrides
/// (`dramatiq_queue_prefetch`, `dramatiq_delay_queue_prefetch`, `dramatiq_worker_timeout`) applied.
///
/// ```
/// let opts = dq_worker::WorkerOptions { threads: 4, ..Default::default() };
/// assert_eq!(opts.threads, 4);
/// assert_eq!(opts.effective_queue_prefetch(), 8);
/// ```
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// How many messages run at once, sync threads and async tasks together (default 8).
    pub threads: usize,
    /// Canonical queues to consume; `None` consumes every queue an actor uses.
    pub queues: Option<Vec<String>>,
    /// Unacked deliveries per queue; `None` is `min(2 * threads, 65535)`.
    pub queue_prefetch: Option<usize>,
    /// Unacked deliveries per delay queue; `None` is `min(1000 * threads, 65535)`.
    pub delay_prefetch: Option<usize>,
    /// How long one fetch waits for messages before the consumer loops (default 1 s).
    pub worker_timeout: Duration,
    /// How long `stop` waits for running messages (default 10 minutes).
    pub shutdown_timeout: Duration,
    /// How often the worker publishes what it runs to its broker's worker registry
    /// ([`Broker::publish_worker`](dq_core::Broker::publish_worker)), default 10 s; keep it
    /// well inside `registry_ttl`.
    pub registry_interval: Duration,
    /// How long a published record lives unless published again (default 60 s): a worker that
    /// died disappears from `dq actors` this long after its last publish.
    pub registry_ttl: Duration,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The longest `dramatiq_worker_timeout` honoured, in milliseconds.
const MAX_WORKER_TIMEOUT_MS: usize = 10_000;

/// `dramatiq_worker_timeout`, default 1 s, kept within 1 ms..=10 s: a graceful stop waits up to
/// one fetch, so a huge value would hang every stop, and 0 would spin the consumers.
fn env_worker_timeout() -> Duration {
    let ms =
        env_usize("dramatiq_worker_timeout").map_or(1000, |ms| ms.clamp(1, MAX_WORKER_TIMEOUT_MS));
    Duration::from_millis(ms as u64)
}

impl Default for WorkerOptions {
    fn default() -> WorkerOptions {
        WorkerOptions {
            threads: 8,
            queues: None,
            queue_prefetch: env_usize("dramatiq_queue_prefetch"),
            delay_prefetch: env_usize("dramatiq_delay_queue_prefetch"),
            worker_timeout: env_worker_timeout(),
            shutdown_timeout: Duration::from_secs(600),
            registry_interval: Duration::from_secs(10),
            registry_ttl: Duration::from_secs(60),
        }
    }
}

impl WorkerOptions {
    /// The prefetch used for each queue.
    pub fn effective_queue_prefetch(&self) -> usize {
        self.queue_prefetch
            .unwrap_or_else(|| (2 * self.threads.max(1)).min(65535))
            .max(1)
    }

    /// The prefetch used for each delay queue.
    pub fn effective_delay_prefetch(&self) -> usize {
        self.delay_prefetch
            .unwrap_or_else(|| (1000 * self.threads.max(1)).min(65535))
            .max(1)
    }
}
