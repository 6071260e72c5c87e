//! A schedule: its expression, time zone, message and policies, and the tick arithmetic every
//! process does the same way.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ScheduleError;

/// The shortest `@every` interval: ticks closer than this would be claimed by a round trip to
/// the broker each.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What a schedule does about ticks that passed while no process ran it (a deploy, an outage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Skip them (the default): a tick runs only if a process claims it within the schedule's
    /// grace period (see [`Schedule::grace`]).
    #[default]
    Skip,
    /// Run the latest missed tick once, however late; never one message per missed tick.
    RunOnce,
}

/// When a schedule's ticks fall.
#[derive(Clone)]
enum Expression {
    Cron(Box<Cron>),
    /// Every `ms` milliseconds since the Unix epoch, whatever the zone.
    Every(i64),
}

/// One periodic message: a name, an expression, a time zone, the actor and its arguments, and
/// the policies. Register it with [`Periodic::schedule`](crate::Periodic::schedule), or declare
/// it on the actor (`#[dq::actor(cron = "...")]`).
///
/// Expressions: standard cron with 5 fields (`min hour dom month dow`), or 6 with seconds first;
/// names (`MON`, `JAN`), ranges, steps and lists; the nicknames `@hourly`, `@daily`,
/// `@weekly`, `@monthly`, `@yearly`; and intervals `@every 30s` (`ms`, `s`, `m`, `h`, `d`,
/// combinable as `1h30m`, at least one second), whose ticks fall on multiples of the interval
/// since the Unix epoch so that every process computes the same ones.
///
/// ```
/// use dq_periodic::{Missed, Schedule};
///
/// let s = Schedule::new("nightly-report", "0 3 * * *")?
///     .actor("build_report")
///     .args(&("pdf", 30))?
///     .timezone("Europe/Paris")?
///     .missed(Missed::RunOnce)
///     .no_overlap(true);
/// // 2026-07-01 00:00 UTC: the next tick is 03:00 in Paris, 01:00 UTC.
/// let t = 1_782_864_000_000;
/// assert_eq!(s.next_tick_after(t), Some(t + 3_600_000));
///
/// let every = Schedule::new("heartbeat", "@every 30s")?;
/// assert_eq!(every.tick_at_or_before(65_000), Some(60_000));
/// # Ok::<(), dq_periodic::ScheduleError>(())
/// ```
#[derive(Clone)]
pub struct Schedule {
    name: String,
    source: String,
    expression: Expression,
    timezone: Tz,
    actor_name: String,
    queue: Option<String>,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    options: Map<String, Value>,
    missed: Missed,
    no_overlap: bool,
    grace: Option<Duration>,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("name", &self.name)
            .field("expression", &self.source)
            .field("timezone", &self.timezone.name())
            .field("actor_name", &self.actor_name)
            .field("missed", &self.missed)
            .field("no_overlap", &self.no_overlap)
            .finish()
    }
}

impl Schedule {
    /// A schedule named `name` (also the actor it sends to, unless [`actor`](Schedule::actor)
    /// says otherwise) with `expression`, in UTC, without arguments.
    pub fn new(name: impl Into<String>, expression: &str) -> Result<Schedule, ScheduleError> {
        let name = name.into();
        if name.is_empty() || name.chars().any(|c| c.is_control() || c == ':') {
            return Err(ScheduleError::InvalidName(name));
        }
        let source = expression.trim().to_owned();
        let expression = parse(&source).map_err(|reason| ScheduleError::InvalidExpression {
            schedule: name.clone(),
            expression: source.clone(),
            reason,
        })?;
        Ok(Schedule {
            actor_name: name.clone(),
            name,
            source,
            expression,
            timezone: Tz::UTC,
            queue: None,
            args: Vec::new(),
            kwargs: Map::new(),
            options: Map::new(),
            missed: Missed::Skip,
            no_overlap: false,
            grace: None,
        })
    }

    /// The actor the messages go to (default: the schedule's name).
    pub fn actor(mut self, actor_name: impl Into<String>) -> Schedule {
        self.actor_name = actor_name.into();
        self
    }

    /// The queue the messages go to, for an actor this app does not declare (one a Python
    /// worker runs); by default the actor's own queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Schedule {
        self.queue = Some(queue.into());
        self
    }

    pub(crate) fn queue_override(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// The message's positional arguments: anything that serializes as a JSON array (a tuple,
    /// a `Vec`).
    pub fn args<A: Serialize + ?Sized>(mut self, args: &A) -> Result<Schedule, ScheduleError> {
        match serde_json::to_value(args) {
            Ok(Value::Array(a)) => {
                self.args = a;
                Ok(self)
            }
            Ok(Value::Null) => {
                self.args = Vec::new();
                Ok(self)
            }
            Ok(other) => Err(ScheduleError::InvalidArguments {
                schedule: self.name,
                reason: format!("arguments must be a JSON array, not {other}"),
            }),
            Err(e) => Err(ScheduleError::InvalidArguments {
                schedule: self.name,
                reason: e.to_string(),
            }),
        }
    }

    /// The message's keyword arguments (for a Python actor): anything that serializes as a
    /// JSON object.
    pub fn kwargs<K: Serialize + ?Sized>(mut self, kwargs: &K) -> Result<Schedule, ScheduleError> {
        match serde_json::to_value(kwargs) {
            Ok(Value::Object(m)) => {
                self.kwargs = m;
                Ok(self)
            }
            Ok(other) => Err(ScheduleError::InvalidArguments {
                schedule: self.name,
                reason: format!("keyword arguments must be a JSON object, not {other}"),
            }),
            Err(e) => Err(ScheduleError::InvalidArguments {
                schedule: self.name,
                reason: e.to_string(),
            }),
        }
    }

    /// A message option every message of the schedule carries (`max_retries`, `time_limit`,
    /// ...).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<Value>) -> Schedule {
        self.options.insert(key.into(), value.into());
        self
    }

    /// The IANA time zone the expression is read in (default `UTC`): `0 3 * * *` in
    /// `Europe/Paris` is 03:00 Paris time, summer and winter.
    pub fn timezone(mut self, zone: &str) -> Result<Schedule, ScheduleError> {
        self.timezone = zone
            .parse::<Tz>()
            .map_err(|_| ScheduleError::InvalidTimezone {
                schedule: self.name.clone(),
                timezone: zone.to_owned(),
            })?;
        Ok(self)
    }

    /// What to do about missed ticks (default [`Missed::Skip`]).
    pub fn missed(mut self, missed: Missed) -> Schedule {
        self.missed = missed;
        self
    }

    /// Skip a tick while the schedule's previous message is still queued, delayed or running
    /// (default: off, every tick enqueues).
    pub fn no_overlap(mut self, on: bool) -> Schedule {
        self.no_overlap = on;
        self
    }

    /// How late a tick may still be claimed under [`Missed::Skip`]: default 10 % of the
    /// interval to the next tick, between 1 s and 60 s.
    pub fn grace(mut self, grace: Duration) -> Schedule {
        self.grace = Some(grace);
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.source
    }

    /// The time zone's IANA name.
    pub fn timezone_name(&self) -> &str {
        self.timezone.name()
    }

    /// The actor the messages go to.
    pub fn actor_name(&self) -> &str {
        &self.actor_name
    }

    /// The missed-tick policy.
    pub fn missed_policy(&self) -> Missed {
        self.missed
    }

    /// Whether a tick is skipped while the previous message is still queued or running.
    pub fn is_no_overlap(&self) -> bool {
        self.no_overlap
    }

    pub(crate) fn args_value(&self) -> &[Value] {
        &self.args
    }

    pub(crate) fn kwargs_value(&self) -> &Map<String, Value> {
        &self.kwargs
    }

    pub(crate) fn options_value(&self) -> &Map<String, Value> {
        &self.options
    }

    /// The latest tick at or before `t_ms` (ms since the epoch), or `None` if there is none
    /// (an expression that never matched).
    pub fn tick_at_or_before(&self, t_ms: i64) -> Option<i64> {
        match &self.expression {
            Expression::Every(every) => Some(t_ms.div_euclid(*every) * every),
            Expression::Cron(cron) => {
                let at = self.at(t_ms)?;
                let prev = cron.find_previous_occurrence(&at, true).ok()?;
                Some(prev.timestamp_millis())
            }
        }
    }

    /// The first tick after `t_ms` (ms since the epoch), or `None` if there is none.
    pub fn next_tick_after(&self, t_ms: i64) -> Option<i64> {
        match &self.expression {
            Expression::Every(every) => Some((t_ms.div_euclid(*every) + 1) * every),
            Expression::Cron(cron) => {
                // Cron resolution is a second: from the start of the next second.
                let at = self.at(t_ms.div_euclid(1000) * 1000)?;
                let next = cron.find_next_occurrence(&at, false).ok()?;
                Some(next.timestamp_millis())
            }
        }
    }

    /// How late (ms) tick `tick_ms` may still be claimed under [`Missed::Skip`].
    pub fn grace_ms(&self, tick_ms: i64) -> i64 {
        if let Some(g) = self.grace {
            return i64::try_from(g.as_millis()).unwrap_or(i64::MAX);
        }
        let interval = self
            .next_tick_after(tick_ms)
            .map_or(60_000, |next| next.saturating_sub(tick_ms));
        (interval / 10).clamp(1_000, 60_000)
    }

    /// The tick's time as ISO 8601 in the schedule's zone, to the second: the `scheduled_at`
    /// option periodiq writes (`2026-12-05T03:00:00+01:00`).
    pub fn scheduled_at(&self, tick_ms: i64) -> String {
        match self.at(tick_ms) {
            Some(t) => t.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            None => String::new(),
        }
    }

    /// A digest of everything that defines the schedule: processes whose digests differ under
    /// one name run different schedules under that name.
    pub fn definition(&self) -> String {
        let canonical = serde_json::json!({
            "expression": self.source,
            "timezone": self.timezone.name(),
            "actor_name": self.actor_name,
            "queue": self.queue,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "missed": self.missed,
            "no_overlap": self.no_overlap,
        });
        format!("{:x}", md5::compute(canonical.to_string()))
    }

    /// The deterministic `message_id` of tick `tick_ms`: a UUID5 of the name and the tick, the
    /// same in every process.
    pub fn message_id(&self, tick_ms: i64) -> String {
        uuid::Uuid::new_v5(
            &MESSAGE_ID_NAMESPACE,
            format!("{}@{tick_ms}", self.name).as_bytes(),
        )
        .to_string()
    }

    fn at(&self, t_ms: i64) -> Option<DateTime<Tz>> {
        let utc = Utc.timestamp_millis_opt(t_ms).single()?;
        Some(utc.with_timezone(&self.timezone))
    }
}

/// The UUID5 namespace of periodic message ids (a UUID4 chosen once for dq).
const MESSAGE_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6b1d_9f3e_52a4_4c07_9e51_0d2c_8f7a_1b63);

fn parse(source: &str) -> Result<Expression, String> {
    if let Some(rest) = source.strip_prefix("@every") {
        let ms = parse_interval(rest.trim())?;
        return Ok(Expression::Every(ms));
    }
    let fields = source.split_whitespace().count();
    if !source.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "a cron expression has 5 fields (minute hour day-of-month month day-of-week) or 6 \
             (seconds first), not {fields}"
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    parser
        .parse(source)
        .map(|c| Expression::Cron(Box::new(c)))
        .map_err(|e| e.to_string())
}

/// `30s`, `5m`, `1h30m`, `500ms`, `1d`: at least [`MIN_INTERVAL`].
fn parse_interval(s: &str) -> Result<i64, String> {
    if s.is_empty() {
        return Err("@every needs an interval, such as `@every 30s`".to_owned());
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "cannot read interval {s:?}: expected a number at {rest:?}"
            ));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("interval {s:?} is too long"))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(format!(
                    "cannot read interval {s:?}: unit {other:?} is not one of ms, s, m, h, d"
                ))
            }
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("interval {s:?} is too long"))?;
    }
    let min = i64::try_from(MIN_INTERVAL.as_millis()).unwrap_or(1_000);
    if total < min {
        return Err(format!("interval {s:?} is shorter than {MIN_INTERVAL:?}"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_782_864_000_000; // 2026-07-01T00:00:00Z, a Wednesday

    #[test]
    fn five_and_six_fields() {
        let every_5_min = Schedule::new("a", "*/5 * * * *").unwrap();
        assert_eq!(every_5_min.next_tick_after(T), Some(T + 300_000));
        assert_eq!(every_5_min.tick_at_or_before(T + 299_999), Some(T));
        assert_eq!(every_5_min.tick_at_or_before(T), Some(T));
        let every_second = Schedule::new("b", "* * * * * *").unwrap();
        assert_eq!(every_second.next_tick_after(T + 1), Some(T + 1000));
        assert_eq!(every_second.tick_at_or_before(T + 1500), Some(T + 1000));
        let at_seconds = Schedule::new("c", "15,45 * * * * *").unwrap();
        assert_eq!(at_seconds.next_tick_after(T), Some(T + 15_000));
    }

    #[test]
    fn nicknames_and_names() {
        let hourly = Schedule::new("h", "@hourly").unwrap();
        assert_eq!(hourly.next_tick_after(T + 1), Some(T + 3_600_000));
        let mondays = Schedule::new("m", "0 9 * * MON").unwrap();
        // Wednesday 1 July -> Monday 6 July, 09:00.
        assert_eq!(
            mondays.next_tick_after(T),
            Some(T + 5 * 86_400_000 + 9 * 3_600_000)
        );
    }

    #[test]
    fn time_zones_follow_daylight_saving() {
        let s = Schedule::new("p", "0 3 * * *")
            .unwrap()
            .timezone("Europe/Paris")
            .unwrap();
        // Summer: 03:00 CEST is 01:00 UTC.
        assert_eq!(s.next_tick_after(T), Some(T + 3_600_000));
        assert_eq!(s.scheduled_at(T + 3_600_000), "2026-07-01T03:00:00+02:00");
        // Winter: 2026-12-01T00:00Z -> 03:00 CET is 02:00 UTC.
        let dec = 1_796_083_200_000;
        assert_eq!(s.next_tick_after(dec), Some(dec + 2 * 3_600_000));
        assert!(Schedule::new("p", "0 3 * * *")
            .unwrap()
            .timezone("Mars/Olympus")
            .is_err());
    }

    #[test]
    fn intervals_fall_on_multiples_of_the_interval() {
        let s = Schedule::new("e", "@every 1h30m").unwrap();
        assert_eq!(s.tick_at_or_before(5_400_000 * 3 + 7), Some(5_400_000 * 3));
        assert_eq!(s.next_tick_after(5_400_000 * 3), Some(5_400_000 * 4));
        for bad in [
            "@every",
            "@every 10",
            "@every 5 minutes",
            "@every 500ms",
            "@every 3w",
        ] {
            assert!(Schedule::new("e", bad).is_err(), "{bad}");
        }
        assert!(Schedule::new("e", "@every 1500ms").is_ok());
    }

    #[test]
    fn bad_expressions_say_why() {
        for bad in ["", "* * *", "61 * * * *", "* * * * * * * *", "0 0 31 2 *x"] {
            let e = Schedule::new("x", bad).unwrap_err();
            assert!(e.to_string().contains("x"), "{e}");
        }
        assert!(Schedule::new("", "* * * * *").is_err());
        assert!(Schedule::new("a:b", "* * * * *").is_err());
    }

    #[test]
    fn grace_is_a_tenth_of_the_interval_within_bounds() {
        assert_eq!(
            Schedule::new("a", "* * * * * *").unwrap().grace_ms(T),
            1_000
        );
        assert_eq!(
            Schedule::new("a", "*/5 * * * *").unwrap().grace_ms(T),
            30_000
        );
        assert_eq!(Schedule::new("a", "@daily").unwrap().grace_ms(T), 60_000);
        let custom = Schedule::new("a", "@daily")
            .unwrap()
            .grace(Duration::from_secs(5));
        assert_eq!(custom.grace_ms(T), 5_000);
    }

    #[test]
    fn ids_and_definitions_are_deterministic() {
        let a = Schedule::new("r", "0 3 * * *")
            .unwrap()
            .args(&(1, "x"))
            .unwrap();
        let b = Schedule::new("r", "0 3 * * *")
            .unwrap()
            .args(&(1, "x"))
            .unwrap();
        assert_eq!(a.message_id(T), b.message_id(T));
        assert_ne!(a.message_id(T), a.message_id(T + 1));
        assert_eq!(a.definition(), b.definition());
        let c = b.clone().args(&(2, "x")).unwrap();
        assert_ne!(a.definition(), c.definition());
        assert!(a.clone().args(&"not an array").is_err());
        assert!(a.kwargs(&[1]).is_err());
    }
}
