//! The worker registry on Redis: what running workers publish about themselves.
//!
//! | key | type | content |
//! |---|---|---|
//! | `<ns>:__dq_workers__:<worker_id>` | string | the worker's [`WorkerInfo`] as JSON, expiring (`PX`) after its TTL |
//! | `<ns>:__dq_workers__` | zset | worker id → when its record expires (ms, the worker's clock); the key itself expires with its latest member |
//!
//! Both names are dq's own: Dramatiq reads and writes neither, and `list_queues` skips them.
//! A record's own expiry is what makes a worker disappear; the index only spares readers a
//! `SCAN` and is pruned by writers (members past their expiry) and readers (members whose
//! record is gone).

use std::time::Duration;

use dq_core::{now_ms, BrokerError, WorkerInfo};

use crate::broker::Inner;
use crate::error::broker_error;

/// The index key's name under the namespace, and the prefix of the records'.
pub(crate) const WORKERS: &str = "__dq_workers__";

/// Sets the record, indexes it, drops index members past their expiry, and makes the index
/// expire with its latest member, in one atomic call.
const PUBLISH_LUA: &str = r"
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('zadd', KEYS[2], ARGV[5], ARGV[3])
redis.call('zremrangebyscore', KEYS[2], '-inf', '(' .. ARGV[4])
local last = redis.call('zrange', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('pexpireat', KEYS[2], last[2])
return 1
";

/// Removes the index members named in ARGV whose record no longer exists. Atomic, so a record
/// published again since the reader missed it keeps its member.
const PRUNE_LUA: &str = r"
for _, id in ipairs(ARGV) do
    if redis.call('exists', KEYS[1] .. ':' .. id) == 0 then
        redis.call('zrem', KEYS[1], id)
    end
end
return 1
";

impl Inner {
    fn worker_key(&self, worker_id: &str) -> String {
        self.key(&format!("{WORKERS}:{worker_id}"))
    }

    pub(crate) async fn publish_worker(
        &self,
        info: &WorkerInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUBLISH_LUA)
            .arg(2)
            .arg(self.worker_key(&info.worker_id))
            .arg(self.key(WORKERS))
            .arg(info.encode())
            .arg(ttl_ms)
            .arg(&info.worker_id)
            .arg(now)
            .arg(expires);
        self.lanes
            .query::<()>(self.lanes.pick(), &cmd)
            .await
            .map_err(|e| broker_error(e, "publishing this worker"))
    }

    pub(crate) async fn withdraw_worker(&self, worker_id: &str) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.worker_key(worker_id))
            .ignore()
            .cmd("ZREM")
            .arg(self.key(WORKERS))
            .arg(worker_id)
            .ignore();
        self.lanes
            .query_pipe::<()>(self.lanes.pick(), &pipe)
            .await
            .map_err(|e| broker_error(e, "withdrawing a worker"))
    }

    pub(crate) async fn workers(&self) -> Result<Vec<WorkerInfo>, BrokerError> {
        let index = self.key(WORKERS);
        let lane = self.lanes.pick();
        let mut range = redis::cmd("ZRANGE");
        range.arg(&index).arg(0).arg(-1);
        let ids: Vec<String> = self
            .lanes
            .query(lane, &range)
            .await
            .map_err(|e| broker_error(e, "listing workers"))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut get = redis::cmd("MGET");
        for id in &ids {
            get.arg(self.worker_key(id));
        }
        let records: Vec<Option<Vec<u8>>> = self
            .lanes
            .query(lane, &get)
            .await
            .map_err(|e| broker_error(e, "reading workers"))?;
        let mut gone = Vec::new();
        let mut workers = Vec::with_capacity(ids.len());
        for (id, record) in ids.iter().zip(records) {
            match record.map(|r| WorkerInfo::decode(&r)) {
                None => gone.push(id),
                Some(Ok(info)) => workers.push(info),
                // A record a future dq cannot be read by this one: skipped, not fatal.
                Some(Err(e)) => {
                    tracing::debug!(worker_id = %id, error = %e, "unreadable worker record")
                }
            }
        }
        if !gone.is_empty() {
            // Expired records: a reader tidies the index, best effort (the next one retries).
            let mut prune = redis::cmd("EVAL");
            prune.arg(PRUNE_LUA).arg(1).arg(&index).arg(gone);
            if let Err(e) = self.lanes.query::<()>(lane, &prune).await {
                tracing::debug!(error = %e, "pruning the worker index");
            }
        }
        workers.sort_by(WorkerInfo::listing_order);
        Ok(workers)
    }
}
