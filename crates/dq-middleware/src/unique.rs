//! Unique: releases the locks of unique messages and skips superseded debounced ones.

use dq_core::{
    async_trait, base_queue_name, App, Control, ErrorChain, Hooks, Job, Message, Middleware,
    MiddlewareError, Outcome, ReleaseOutcome, UniqueLock, UniqueMode, UniqueUntil,
    UNIQUE_ACTOR_OPTIONS, UNIQUE_KEY_OPTION,
};
use tracing::{info, warn};

/// The worker's half of unique, debounced and throttled messages (the producer's half is
/// [`App::send`], which takes the lock with the enqueue). Reads the lock a message carries in
/// its options (`dq_unique_key`, `dq_unique_mode`, `dq_unique_until`) and releases it, only if
/// this message holds it (compare and delete):
///
/// - `started` locks, and debounced messages, when the message starts (`before_process`);
/// - `finished` locks when the message succeeds (`after_process`), is skipped (`after_skip`) or
///   is dead-lettered (`after_nack`), not after a failure that is retried: the retry keeps it;
/// - `ttl` locks (and throttles) never: they expire.
///
/// A debounced message that finds its key held by a newer message was replaced: it is skipped
/// with a log line (and acked), unless it is a retry, which ran once already. A release that
/// fails is logged; the lock expires after its TTL. Messages without a lock cost one lookup in
/// their options.
///
/// It declares the actor options `unique_for`, `unique_until`, `debounce` and `throttle`, and
/// is the last of [`default_middleware`](crate::default_middleware), so that its
/// `before_process` runs after every other middleware has decided to run the message.
///
/// ```
/// use dq_core::Middleware;
///
/// let unique = dq_middleware::Unique;
/// assert!(unique.actor_options().contains(&"unique_for"));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Unique;

impl Unique {
    /// Releases `message`'s lock if it holds it; what the broker found, or `None` when the
    /// message has no lock or the release failed (logged).
    async fn release(
        &self,
        app: &App,
        message: &Message,
        lock: &UniqueLock,
    ) -> Option<ReleaseOutcome> {
        let queue = base_queue_name(&message.queue_name);
        match app
            .broker()
            .release_unique(queue, &lock.key, &message.message_id)
            .await
        {
            Ok(found) => Some(found),
            Err(e) => {
                // The lock has a TTL: at worst it is held until then.
                warn!(
                    message_id = %message.message_id,
                    actor = %message.actor_name,
                    queue,
                    key = %lock.key,
                    error = %ErrorChain(&e),
                    "could not release the unique lock; it expires after its TTL"
                );
                None
            }
        }
    }
}

/// The lock `message` carries, if any: one option lookup for a message without.
fn lock_of(message: &Message) -> Option<UniqueLock> {
    if !message.options.contains_key(UNIQUE_KEY_OPTION) {
        return None;
    }
    UniqueLock::from_options(&message.options)
}

#[async_trait]
impl Middleware for Unique {
    fn name(&self) -> &str {
        "Unique"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_PROCESS | Hooks::AFTER_PROCESS | Hooks::AFTER_SKIP | Hooks::NACK
    }

    fn actor_options(&self) -> &[&'static str] {
        UNIQUE_ACTOR_OPTIONS
    }

    async fn before_process(&self, app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        let Some(lock) = lock_of(&job.message) else {
            return Ok(Control::Continue);
        };
        match (lock.mode, lock.until) {
            (UniqueMode::Debounce, _) => {
                let found = self.release(app, &job.message, &lock).await;
                if let Some(ReleaseOutcome::HeldBy(newer) | ReleaseOutcome::Replaced(newer)) = found
                {
                    if job.message.options.retries() == 0 {
                        info!(
                            message_id = %job.message.message_id,
                            actor = %job.message.actor_name,
                            queue = %job.message.queue_name,
                            key = %lock.key,
                            replaced_by = %newer,
                            "Skipping {} {}: replaced by the newer {newer} (debounce)",
                            job.message.actor_name,
                            job.message.message_id
                        );
                        return Ok(Control::Skip);
                    }
                }
            }
            (_, UniqueUntil::Started) => {
                self.release(app, &job.message, &lock).await;
            }
            (_, UniqueUntil::Finished | UniqueUntil::Ttl) => {}
        }
        Ok(Control::Continue)
    }

    async fn after_process(
        &self,
        app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        // A failure keeps the lock: either a retry is enqueued, which holds it on, or the
        // message is dead-lettered, and `after_nack` releases it.
        if let (Outcome::Success(_), false) = (outcome, job.is_failed()) {
            if let Some(lock) = lock_of(&job.message) {
                if lock.until == UniqueUntil::Finished {
                    self.release(app, &job.message, &lock).await;
                }
            }
        }
        Ok(())
    }

    async fn after_skip(&self, app: &App, job: &mut Job) -> Result<(), MiddlewareError> {
        if let Some(lock) = lock_of(&job.message) {
            if lock.until == UniqueUntil::Finished {
                self.release(app, &job.message, &lock).await;
            }
        }
        Ok(())
    }

    async fn after_nack(
        &self,
        app: &App,
        message: &Message,
        _reason: &str,
    ) -> Result<(), MiddlewareError> {
        if let Some(lock) = lock_of(message) {
            if lock.until == UniqueUntil::Finished {
                self.release(app, message, &lock).await;
            }
        }
        Ok(())
    }
}
