//! Periodic schedules on Redis: the claim of a tick and the enqueue of its message in one call of
//! the dispatch script (`enqueue_tick`), so that one message is enqueued per tick however many
//! processes run the schedule.
//!
//! | key | type | content |
//! |---|---|---|
//! | `<ns>:__dq_schedules__:<name>` | hash | `tick` (the latest claimed, ms), `state` ([`ScheduleState`] JSON), `busy` / `busy_until` (a `no_overlap` schedule's running message id, and until when it counts); expires a record TTL after its latest claim |
//! | `<ns>:__dq_schedules__` | zset | schedule name → when its hash expires (ms) |
//!
//! Dramatiq reads and writes neither, and `list_queues` skips them.

use dq_core::{
    new_message_id, now_ms, BrokerError, BrokerErrorKind, Message, ScheduleState, TickClaim,
    TickOutcome,
};
use redis::Value;

use crate::broker::{check_physical, Inner};
use crate::error::broker_error;

/// The index key's name under the namespace, and the prefix of the schedules' hashes.
pub(crate) const SCHEDULES: &str = "__dq_schedules__";

impl Inner {
    pub(crate) async fn enqueue_tick(
        &self,
        claim: &TickClaim<'_>,
        message: &mut Message,
    ) -> Result<TickOutcome, BrokerError> {
        check_physical(&message.queue_name)?;
        let id = new_message_id();
        message.options.set_redis_message_id(id.clone());
        let body = message.encode();
        let mut cmd = self.script_cmd("enqueue_tick", &message.queue_name);
        cmd.arg(claim.schedule)
            .arg(claim.tick_ms)
            .arg(&id)
            .arg(body)
            .arg(claim.state.encode())
            .arg(if claim.no_overlap { "1" } else { "0" })
            .arg(claim.busy_ttl_ms.max(1))
            .arg(claim.record_ttl_ms.max(1))
            .arg(&message.message_id);
        let what = || {
            format!(
                "claiming tick {} of schedule {}",
                claim.tick_ms, claim.schedule
            )
        };
        let reply = self
            .eval(self.lanes.pick(), &cmd)
            .await
            .map_err(|e| broker_error(e, what()))?;
        let parts: Vec<String> = match reply {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                .collect(),
            _ => Vec::new(),
        };
        match parts.first().map(String::as_str) {
            Some("enqueued") => Ok(TickOutcome::Enqueued),
            Some("taken") => Ok(TickOutcome::Taken),
            Some("busy") => Ok(TickOutcome::Busy(parts.get(1).cloned().unwrap_or_default())),
            _ => Err(BrokerError::new(
                BrokerErrorKind::Other,
                format!("{}: unexpected reply {parts:?}", what()),
            )),
        }
    }

    pub(crate) async fn release_tick(
        &self,
        schedule: &str,
        message_id: &str,
    ) -> Result<(), BrokerError> {
        // The queue argument is not used by this command; the schedule index is a name no
        // queue can have.
        let mut cmd = self.script_cmd("release_tick", SCHEDULES);
        cmd.arg(schedule).arg(message_id);
        self.eval(self.lanes.pick(), &cmd)
            .await
            .map_err(|e| broker_error(e, format!("releasing schedule {schedule}")))?;
        Ok(())
    }

    pub(crate) async fn schedules(&self) -> Result<Vec<ScheduleState>, BrokerError> {
        let index = self.key(SCHEDULES);
        let lane = self.lanes.pick();
        let mut range = redis::cmd("ZRANGEBYSCORE");
        range.arg(&index).arg(now_ms()).arg("+inf");
        let names: Vec<String> = self
            .lanes
            .query(lane, &range)
            .await
            .map_err(|e| broker_error(e, "listing schedules"))?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let mut get = redis::cmd("HMGET");
            get.arg(format!("{index}:{name}"))
                .arg("tick")
                .arg("state")
                .arg("busy");
            let (tick, state, busy): (Option<i64>, Option<Vec<u8>>, Option<String>) = self
                .lanes
                .query(lane, &get)
                .await
                .map_err(|e| broker_error(e, format!("reading schedule {name}")))?;
            let Some(tick) = tick else { continue };
            let mut s = state
                .and_then(|b| ScheduleState::decode(&b).ok())
                .unwrap_or_default();
            s.name = name;
            if s.last_tick_ms != tick {
                // Claimed but skipped (busy): the stored state is of the tick that enqueued.
                s.last_tick_ms = tick;
                if let Some(busy) = busy {
                    s.last_message_id = busy;
                }
            }
            out.push(s);
        }
        // Past members: best effort (the next reader retries).
        let mut prune = redis::cmd("ZREMRANGEBYSCORE");
        prune.arg(&index).arg("-inf").arg(format!("({}", now_ms()));
        if let Err(e) = self.lanes.query::<()>(lane, &prune).await {
            tracing::debug!(error = %e, "pruning the schedule index");
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
