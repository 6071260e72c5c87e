//! # dq-periodic
//!
//! Periodic messages for dq: cron schedules declared next to the actor (or registered on the
//! [`Periodic`] middleware) that every worker process runs, enqueueing **exactly one message
//! per tick** however many processes run, with no leader and no failover gap.
//!
//! ```no_run
//! use dq_periodic::{Periodic, Schedule};
//!
//! # fn demo(broker: dq_broker_stub_like::Broker) {}
//! # mod dq_broker_stub_like { pub struct Broker; }
//! let periodic = Periodic::new()
//!     .schedule(Schedule::new("nightly-report", "0 3 * * *")?.timezone("Europe/Paris")?);
//! # let _ = periodic;
//! # Ok::<(), dq_periodic::ScheduleError>(())
//! ```
//!
//! **How one message per tick is guaranteed.** Each process computes the tick from the
//! expression (never "now plus the interval"), and claims it through
//! [`Broker::enqueue_tick`](dq_core::Broker::enqueue_tick): on Redis one Lua script compares
//! the schedule's recorded tick, records the new one and enqueues the message, so of any
//! number of processes exactly one enqueues, and a process that dies leaves the next tick to
//! the others. On RabbitMQ the claim is made in a Redis the user gives, then the message is
//! published with confirms.
//!
//! The messages carry a deterministic `message_id` (from the schedule's name and the tick), the
//! option `scheduled_at` that periodiq writes, and `dq_schedule`, the schedule's name.

mod claims;
mod error;
mod middleware;
mod schedule;

pub use error::ScheduleError;
pub use middleware::{
    Periodic, Resolved, CLOCK_OFFSET_ENV, REDIS_NAMESPACE_ENV, REDIS_URL_ENV, SCHEDULED_AT_OPTION,
    SCHEDULE_OPTION,
};
pub use schedule::{Missed, Schedule, MIN_INTERVAL};
