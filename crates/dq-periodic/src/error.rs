//! The errors of schedules and of the periodic middleware.

/// A schedule that cannot be built, or cannot run with this app.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The name is empty or has a control character or `:`.
    #[error(
        "invalid schedule name {0:?}: it must be non-empty, without control characters or ':'"
    )]
    InvalidName(String),
    /// The expression does not parse.
    #[error("schedule {schedule}: invalid expression {expression:?}: {reason}")]
    InvalidExpression {
        /// The schedule's name.
        schedule: String,
        /// The expression as given.
        expression: String,
        /// Why.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error(
        "schedule {schedule}: unknown time zone {timezone:?} (an IANA name, such as Europe/Paris)"
    )]
    InvalidTimezone {
        /// The schedule's name.
        schedule: String,
        /// The zone as given.
        timezone: String,
    },
    /// The arguments do not serialize as the message needs them.
    #[error("schedule {schedule}: invalid arguments: {reason}")]
    InvalidArguments {
        /// The schedule's name.
        schedule: String,
        /// Why.
        reason: String,
    },
    /// An actor option of the schedule (`cron`, `cron_tz`, ...) has a value of the wrong type.
    #[error("actor {actor}: option {option}: {reason}")]
    InvalidOption {
        /// The actor.
        actor: String,
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// The schedule sends to an actor the app does not know, and names no queue.
    #[error(
        "schedule {schedule}: unknown actor {actor:?} (declare it, or give the schedule its queue)"
    )]
    UnknownActor {
        /// The schedule's name.
        schedule: String,
        /// The actor.
        actor: String,
    },
    /// Two schedules of this app have one name.
    #[error("two schedules are named {0:?}")]
    Duplicate(String),
    /// A `no_overlap` schedule on RabbitMQ without a Redis to claim ticks in.
    #[error(
        "schedule {schedule}: no_overlap on RabbitMQ needs a Redis to claim ticks in \
         (Periodic::claims_in_redis, or env DQ_PERIODIC_REDIS_URL)"
    )]
    NoOverlapNeedsRedis {
        /// The schedule's name.
        schedule: String,
    },
    /// The broker cannot claim ticks and no other claim store was given.
    #[error(
        "the {broker} broker cannot claim schedule ticks by itself: give the Periodic middleware \
         a Redis to claim them in (Periodic::claims_in_redis, or env DQ_PERIODIC_REDIS_URL)"
    )]
    NoClaimStore {
        /// The broker's kind.
        broker: &'static str,
    },
}
