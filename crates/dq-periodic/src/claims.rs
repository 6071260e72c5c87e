//! Claiming ticks in a Redis of the user's, for a broker that cannot claim them itself
//! (RabbitMQ): the claim is one script, then the message is published with the broker's
//! confirms.
//!
//! Unlike the Redis broker's claim, this one is not atomic with the enqueue: a process killed
//! between its claim and its publish (a window of one publish) loses that tick. A publish that
//! fails is retried by the claiming process until it lands or the tick's grace period passes.

use std::time::Duration;

use deadpool_redis::Pool;
use dq_core::{now_ms, ScheduleState, TickClaim, TickOutcome};
use dq_redis_conn::Exclusive;

/// The claim: the same record and rules as the Redis broker's `enqueue_tick`, without the
/// enqueue. KEYS: the schedule's hash, the index. ARGV: tick, now, state, no_overlap, busy ttl,
/// record ttl, message id, name.
const CLAIM_LUA: &str = r"
local last = tonumber(redis.call('hget', KEYS[1], 'tick') or '')
local tick = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
if last and last >= tick then
    return {'taken'}
end
redis.call('hset', KEYS[1], 'tick', ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[6])
redis.call('zadd', KEYS[2], now + tonumber(ARGV[6]), ARGV[8])
if ARGV[4] == '1' then
    local busy = redis.call('hget', KEYS[1], 'busy')
    if busy and tonumber(redis.call('hget', KEYS[1], 'busy_until') or '0') > now then
        return {'busy', busy}
    end
    redis.call('hset', KEYS[1], 'busy', ARGV[7], 'busy_until', now + tonumber(ARGV[5]))
else
    redis.call('hdel', KEYS[1], 'busy', 'busy_until')
end
redis.call('hset', KEYS[1], 'state', ARGV[3])
return {'claimed'}
";

const RELEASE_LUA: &str = r"
if redis.call('hget', KEYS[1], 'busy') == ARGV[1] then
    redis.call('hdel', KEYS[1], 'busy', 'busy_until')
    return 1
end
return 0
";

/// Where ticks are claimed when the broker cannot: a Redis URL and a key namespace.
#[derive(Clone)]
pub(crate) struct RedisClaims {
    pool: Pool,
    namespace: String,
    url: String,
}

impl std::fmt::Debug for RedisClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClaims")
            .field("url", &dq_redis_conn::describe(&self.url))
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// A claim store failure, as text naming the server without its credentials.
pub(crate) type ClaimError = String;

impl RedisClaims {
    pub(crate) fn new(url: &str, namespace: &str) -> Result<RedisClaims, ClaimError> {
        Ok(RedisClaims {
            pool: dq_redis_conn::pool(url, 2, Duration::from_secs(5))?,
            namespace: namespace.to_owned(),
            url: url.to_owned(),
        })
    }

    fn index(&self) -> String {
        format!("{}:__dq_schedules__", self.namespace)
    }

    async fn conn(&self) -> Result<Exclusive, ClaimError> {
        Exclusive::get(&self.pool)
            .await
            .map_err(|e| format!("{}: {e}", dq_redis_conn::describe(&self.url)))
    }

    fn fail(&self, e: redis::RedisError) -> ClaimError {
        format!("{}: {e}", dq_redis_conn::describe(&self.url))
    }

    /// Claims the tick: `Enqueued` here means "claimed, publish it now".
    pub(crate) async fn claim(
        &self,
        claim: &TickClaim<'_>,
        message_id: &str,
    ) -> Result<TickOutcome, ClaimError> {
        let index = self.index();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM_LUA)
            .arg(2)
            .arg(format!("{index}:{}", claim.schedule))
            .arg(&index)
            .arg(claim.tick_ms)
            .arg(now_ms())
            .arg(claim.state.encode())
            .arg(if claim.no_overlap { "1" } else { "0" })
            .arg(claim.busy_ttl_ms.max(1))
            .arg(claim.record_ttl_ms.max(1))
            .arg(message_id)
            .arg(claim.schedule);
        let reply: Vec<String> = self
            .conn()
            .await?
            .query(&cmd)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(match reply.first().map(String::as_str) {
            Some("claimed") => TickOutcome::Enqueued,
            Some("busy") => TickOutcome::Busy(reply.get(1).cloned().unwrap_or_default()),
            _ => TickOutcome::Taken,
        })
    }

    pub(crate) async fn release(&self, schedule: &str, message_id: &str) -> Result<(), ClaimError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_LUA)
            .arg(1)
            .arg(format!("{}:{schedule}", self.index()))
            .arg(message_id);
        self.conn()
            .await?
            .query::<()>(&cmd)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The recorded schedules, as the Redis broker lists its own.
    pub(crate) async fn schedules(&self) -> Result<Vec<ScheduleState>, ClaimError> {
        let index = self.index();
        let mut conn = self.conn().await?;
        let mut range = redis::cmd("ZRANGEBYSCORE");
        range.arg(&index).arg(now_ms()).arg("+inf");
        let names: Vec<String> = conn.query(&range).await.map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for name in names {
            let mut get = redis::cmd("HMGET");
            get.arg(format!("{index}:{name}")).arg("tick").arg("state");
            let (tick, state): (Option<i64>, Option<Vec<u8>>) =
                conn.query(&get).await.map_err(|e| self.fail(e))?;
            let Some(tick) = tick else { continue };
            let mut s = state
                .and_then(|b| ScheduleState::decode(&b).ok())
                .unwrap_or_default();
            s.name = name;
            s.last_tick_ms = tick;
            out.push(s);
        }
        Ok(out)
    }
}
