//! The broker's half of periodic messages: claiming a schedule's tick and enqueueing its message
//! as one step, so that however many processes run a schedule, one message is enqueued per tick.
//!
//! The scheduler itself (cron expressions, time zones, when to wake) lives in `dq-periodic`; a
//! broker only stores, per schedule name, the latest tick claimed and a [`ScheduleState`] for
//! tools, and enqueues the tick's message when the claim is new. Like the worker registry this is
//! dq's own record, under names no Dramatiq process reads or writes.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One attempt to claim tick `tick_ms` of schedule `schedule` (see
/// [`Broker::enqueue_tick`](crate::Broker::enqueue_tick)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickClaim<'a> {
    /// The schedule's name.
    pub schedule: &'a str,
    /// The tick's scheduled time (ms since the epoch), computed from the schedule's expression,
    /// not read from a clock, so that every process claims the same number.
    pub tick_ms: i64,
    /// Skip the tick (claiming it all the same) while the schedule's previous message is still
    /// queued, delayed or running, that is, until [`Broker::release_tick`](crate::Broker::release_tick)
    /// was called with its id or `busy_ttl_ms` passed.
    pub no_overlap: bool,
    /// How long a message of a `no_overlap` schedule counts as busy at most, in ms: a safety net
    /// for a release that never comes.
    pub busy_ttl_ms: u64,
    /// How long the broker keeps the schedule's record after this claim, in ms: a schedule no
    /// process runs any more disappears after it.
    pub record_ttl_ms: u64,
    /// What tools show about the schedule (stored with the claim).
    pub state: &'a ScheduleState,
}

/// What came of a [`TickClaim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TickOutcome {
    /// This call claimed the tick and enqueued its message.
    Enqueued,
    /// The tick, or a later one, was claimed already (by another process, most likely).
    Taken,
    /// This call claimed the tick but enqueued nothing: the schedule's previous message, this
    /// id, is still queued or running (`no_overlap`).
    Busy(String),
}

/// A schedule as the broker records it at each claim, for `dq schedules` and dashboards.
///
/// ```
/// use dq_core::ScheduleState;
///
/// let s = ScheduleState {
///     name: "nightly-report".into(),
///     actor_name: "build_report".into(),
///     queue_name: "reports".into(),
///     expression: "0 3 * * *".into(),
///     timezone: "Europe/Paris".into(),
///     ..Default::default()
/// };
/// assert_eq!(ScheduleState::decode(&s.encode()).unwrap(), s);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScheduleState {
    /// The schedule's name (unique in a namespace or vhost).
    pub name: String,
    /// The actor its messages go to.
    pub actor_name: String,
    /// That actor's queue.
    pub queue_name: String,
    /// The expression, as written (`0 */5 * * * *`, `@every 30s`).
    pub expression: String,
    /// The IANA time zone the expression is read in.
    pub timezone: String,
    /// A digest of everything that defines the schedule (expression, zone, actor, arguments,
    /// policies): two processes with different digests under one name disagree.
    pub definition: String,
    /// The latest tick claimed (ms since the epoch).
    pub last_tick_ms: i64,
    /// The `message_id` of the message enqueued for it (or, when busy, of the one still
    /// running).
    pub last_message_id: String,
    /// When the claim was made, by the claiming process's clock (ms since the epoch).
    pub claimed_at_ms: i64,
    /// The tick after `last_tick_ms` (ms since the epoch), as the claiming process computed it.
    pub next_tick_ms: Option<i64>,
    /// The messages' positional arguments.
    pub args: Vec<Value>,
    /// The messages' keyword arguments.
    pub kwargs: Map<String, Value>,
}

impl ScheduleState {
    /// Its JSON form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a ScheduleState always serializes")
    }

    /// Reads the JSON form; unknown keys are ignored, missing ones take their default.
    pub fn decode(bytes: &[u8]) -> Result<ScheduleState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
