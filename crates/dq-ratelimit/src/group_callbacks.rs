//! GroupCallbacks: enqueue a group's completion callbacks once all its children succeeded.

use std::sync::Arc;
use std::time::Duration;

use dq_core::{
    async_trait, App, GroupBarrier, Hooks, Job, Message, Middleware, MiddlewareError, Outcome,
};
use serde_json::Value;

use crate::backend::RateLimiterBackend;
use crate::barrier::Barrier;

/// Runs group completion callbacks: Dramatiq's `GroupCallbacks(rate_limiter_backend,
/// barrier_ttl)`. Required by `Group::run` for groups with completion callbacks.
///
/// Running such a group creates a [`Barrier`] named by a fresh uuid for as many parties as the
/// group has children, and tags each child (a pipeline's last message) with
/// `group_completion_uuid` and `group_completion_callbacks`. Each tagged message that succeeds
/// passes the barrier without blocking; the one that clears it enqueues every callback as it was
/// built (same message id, no delay). Python workers do the same with the same keys, so a group
/// may mix Rust and Python actors.
///
/// If enqueueing a callback fails, the hook fails and the worker requeues the message instead of
/// acking it: run again, it finds the barrier cleared and enqueues the callbacks then. So a
/// callback runs at least once, and may run twice.
///
/// Hooks: `after_process`.
///
/// ```
/// use std::time::Duration;
/// use dq_core::Middleware;
/// use dq_ratelimit::{GroupCallbacks, MemoryBackend};
///
/// let mw = GroupCallbacks::new(MemoryBackend::default())
///     .with_barrier_ttl(Duration::from_secs(3600));
/// assert!(mw.group_barrier().is_some());
/// assert_eq!(mw.barrier_ttl(), Duration::from_secs(3600));
/// ```
#[derive(Clone, Debug)]
pub struct GroupCallbacks {
    backend: Arc<dyn RateLimiterBackend>,
    barrier_ttl: Duration,
}

impl GroupCallbacks {
    /// Group barriers in `backend`, living a day (Dramatiq's default `barrier_ttl`).
    pub fn new(backend: impl RateLimiterBackend) -> GroupCallbacks {
        GroupCallbacks::from_arc(Arc::new(backend))
    }

    /// Like [`GroupCallbacks::new`], for a backend that is already shared.
    pub fn from_arc(backend: Arc<dyn RateLimiterBackend>) -> GroupCallbacks {
        GroupCallbacks {
            backend,
            barrier_ttl: Duration::from_millis(86_400_000),
        }
    }

    /// How long a group's barrier lives (default one day): a group must complete within it.
    pub fn with_barrier_ttl(mut self, ttl: Duration) -> GroupCallbacks {
        self.barrier_ttl = ttl;
        self
    }

    /// How long a group's barrier lives.
    pub fn barrier_ttl(&self) -> Duration {
        self.barrier_ttl
    }

    fn barrier(&self, key: &str) -> Barrier {
        Barrier::from_arc(self.backend.clone(), key).with_ttl(self.barrier_ttl)
    }
}

#[async_trait]
impl GroupBarrier for GroupCallbacks {
    async fn create_barrier(&self, key: &str, parties: usize) -> Result<(), MiddlewareError> {
        if parties == 0 {
            return Ok(());
        }
        self.barrier(key)
            .create(parties)
            .await
            .map(|_| ())
            .map_err(|e| {
                MiddlewareError::caused_by("GroupCallbacks", "cannot create the group's barrier", e)
            })
    }
}

#[async_trait]
impl Middleware for GroupCallbacks {
    fn name(&self) -> &str {
        "GroupCallbacks"
    }

    fn hooks(&self) -> Hooks {
        Hooks::AFTER_PROCESS
    }

    fn group_barrier(&self) -> Option<&dyn GroupBarrier> {
        Some(self)
    }

    async fn after_process(
        &self,
        app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        if !matches!(outcome, Outcome::Success(_)) {
            return Ok(());
        }
        let options = &job.message.options;
        let Some(uuid) = options.group_completion_uuid().filter(|u| !u.is_empty()) else {
            return Ok(());
        };
        let Some(callbacks) = options
            .group_completion_callbacks()
            .filter(|c| !c.is_empty())
        else {
            return Ok(());
        };
        let cleared = self.barrier(uuid).wait(false, None).await.map_err(|e| {
            MiddlewareError::caused_by(
                self.name(),
                format!("cannot pass the barrier of group {uuid}"),
                e,
            )
        })?;
        if !cleared {
            return Ok(());
        }
        let messages = decode_callbacks(&job.message, callbacks);
        for m in messages {
            let id = m.message_id.clone();
            app.enqueue(m, None).await.map_err(|e| {
                MiddlewareError::caused_by(
                    self.name(),
                    format!("cannot enqueue completion callback {id} of group {uuid}"),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

/// The callbacks as messages. One that is not a message cannot be fixed by running this one
/// again, so it is logged and left out rather than failing the others.
fn decode_callbacks(current: &Message, callbacks: &[Value]) -> Vec<Message> {
    callbacks
        .iter()
        .filter_map(|c| match Message::from_value(c) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!(
                    message_id = %current.message_id,
                    error = %dq_core::ErrorChain(&e),
                    "a group completion callback of message {} is not a message; skipping it",
                    current.message_id
                );
                None
            }
        })
        .collect()
}
