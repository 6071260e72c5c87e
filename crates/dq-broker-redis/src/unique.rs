//! Unique, debounced and throttled messages on Redis: the lock and the enqueue in one call of
//! the dispatch script (`enqueue_unique`), release by compare and delete (`release_unique`).
//!
//! | key | type | content |
//! |---|---|---|
//! | `<ns>:__dq_unique__:<q>:<key>` | string | the `message_id` holding the lock of `key` on canonical queue `q`; expires with the lock's TTL |
//! | `<ns>:__dq_replaced__:<q>:<id>` | string | the `message_id` of the debounced message that replaced message `id`, which is skipped when it comes up; expires with the longer of the two locks' TTLs |
//!
//! Dramatiq reads and writes neither, and `list_queues` skips them.

use dq_core::{
    base_queue_name, new_message_id, BrokerError, BrokerErrorKind, Message, ReleaseOutcome,
    SendOutcome, UniqueLock,
};
use redis::Value;

use crate::broker::{check_physical, glob_escape, Inner};
use crate::error::broker_error;

/// The prefix of lock keys under the namespace.
pub(crate) const UNIQUE: &str = "__dq_unique__";

/// The script's reply as strings: `{'enqueued'}`, `{'duplicate', holder}`, ...
fn parts(reply: Value) -> Vec<String> {
    match reply {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| redis::from_redis_value::<String>(v).ok())
            .collect(),
        _ => Vec::new(),
    }
}

impl Inner {
    pub(crate) async fn enqueue_unique(
        &self,
        lock: &UniqueLock,
        message: &mut Message,
    ) -> Result<SendOutcome, BrokerError> {
        check_physical(&message.queue_name)?;
        let id = new_message_id();
        message.options.set_redis_message_id(id.clone());
        let body = message.encode();
        let mut cmd = self.script_cmd("enqueue_unique", &message.queue_name);
        cmd.arg(&lock.key)
            .arg(&message.message_id)
            .arg(lock.ttl_ms())
            .arg(lock.mode.as_str())
            .arg(&id)
            .arg(body);
        let what = || {
            format!(
                "enqueueing unique message {} (key {})",
                message.message_id, lock.key
            )
        };
        let reply = self
            .eval(self.lanes.pick(), &cmd)
            .await
            .map_err(|e| broker_error(e, what()))?;
        let parts = parts(reply);
        match (parts.first().map(String::as_str), parts.get(1)) {
            (Some("enqueued"), _) => Ok(SendOutcome::Enqueued),
            (Some("duplicate"), Some(holder)) => Ok(SendOutcome::Duplicate {
                holder: holder.clone(),
            }),
            (Some("replaced"), Some(previous)) => Ok(SendOutcome::Replaced {
                previous: previous.clone(),
            }),
            _ => Err(BrokerError::new(
                BrokerErrorKind::Other,
                format!("{}: unexpected reply {parts:?}", what()),
            )),
        }
    }

    pub(crate) async fn release_unique(
        &self,
        queue: &str,
        key: &str,
        message_id: &str,
    ) -> Result<ReleaseOutcome, BrokerError> {
        let queue = base_queue_name(queue);
        check_physical(queue)?;
        let mut cmd = self.script_cmd("release_unique", queue);
        cmd.arg(key).arg(message_id);
        let what = || format!("releasing unique key {key} of {queue}");
        let reply = self
            .eval(self.lanes.pick(), &cmd)
            .await
            .map_err(|e| broker_error(e, what()))?;
        let parts = parts(reply);
        match (parts.first().map(String::as_str), parts.get(1)) {
            (Some("released"), _) => Ok(ReleaseOutcome::Released),
            (Some("absent"), _) => Ok(ReleaseOutcome::Absent),
            (Some("held"), Some(holder)) => Ok(ReleaseOutcome::HeldBy(holder.clone())),
            (Some("replaced"), Some(newer)) => Ok(ReleaseOutcome::Replaced(newer.clone())),
            _ => Err(BrokerError::new(
                BrokerErrorKind::Other,
                format!("{}: unexpected reply {parts:?}", what()),
            )),
        }
    }

    /// Counts the queue's lock keys with `SCAN` (no `KEYS`: it would block Redis on a large
    /// keyspace). Cheap enough for `dq queues`, not for a hot path.
    pub(crate) async fn unique_locks(&self, queue: &str) -> Result<u64, BrokerError> {
        let queue = base_queue_name(queue);
        check_physical(queue)?;
        let pattern = format!(
            "{}:{UNIQUE}:{}:*",
            glob_escape(&self.namespace),
            glob_escape(queue)
        );
        let mut count = 0u64;
        self.scan_keys(
            &pattern,
            &format!("counting unique locks of {queue}"),
            |keys| count += keys.len() as u64,
        )
        .await?;
        Ok(count)
    }
}
