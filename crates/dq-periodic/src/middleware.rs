//! The `Periodic` middleware: runs the scheduler in every worker process, and, on the consuming
//! side, skips stale periodic messages (periodiq's `skip_delay`) and ends a `no_overlap`
//! schedule's busy mark when its message finishes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dq_core::{
    async_trait, now_ms, App, Control, Hooks, Job, Message, Middleware, MiddlewareError, Outcome,
    ScheduleState, TickClaim, TickOutcome,
};
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::claims::RedisClaims;
use crate::error::ScheduleError;
use crate::schedule::{Missed, Schedule};

/// The message option naming the schedule a message was sent by (dq's own; Python ignores it).
pub const SCHEDULE_OPTION: &str = "dq_schedule";
/// The message option periodiq writes: the tick's time, ISO 8601.
pub const SCHEDULED_AT_OPTION: &str = "scheduled_at";
/// Env: a Redis URL to claim ticks in, for a broker that cannot (RabbitMQ).
pub const REDIS_URL_ENV: &str = "DQ_PERIODIC_REDIS_URL";
/// Env: the key namespace in the Redis of `DQ_PERIODIC_REDIS_URL` (default `dramatiq`).
pub const REDIS_NAMESPACE_ENV: &str = "DQ_PERIODIC_REDIS_NAMESPACE";
/// Env, for tests: milliseconds added to this process's clock (negative: behind).
pub const CLOCK_OFFSET_ENV: &str = "DQ_PERIODIC_CLOCK_OFFSET_MS";

/// The actor options `Periodic` declares.
const ACTOR_OPTIONS: &[&str] = &[
    "cron",
    "cron_tz",
    "cron_args",
    "cron_missed",
    "cron_no_overlap",
];

/// How long the record of a schedule outlives its latest claim, at least.
const MIN_RECORD_TTL_MS: i64 = 7 * 86_400_000;
/// How long a `no_overlap` message counts as busy at most, by default.
const DEFAULT_BUSY_TTL: Duration = Duration::from_secs(3600);
/// The scheduler re-reads the clock at least this often.
const MAX_SLEEP_MS: i64 = 60_000;
/// How often a process checks that the others run the same definitions.
const DEFINITION_CHECK_EVERY_MS: i64 = 60_000;

/// Periodic messages: cron schedules that every worker process runs and that enqueue exactly
/// one message per tick, with no leader.
///
/// Each worker process with this middleware wakes at each tick of each schedule and asks the
/// broker to claim the tick and enqueue its message in one step
/// ([`Broker::enqueue_tick`](dq_core::Broker::enqueue_tick)): on Redis one script, so exactly
/// one process enqueues, whatever their number, and a process that dies leaves no gap (the
/// others claim the next tick). Ticks are computed from the expression, not from each process's
/// clock, so processes whose clocks differ by less than the interval agree. On RabbitMQ, ticks
/// are claimed in a Redis given with [`claims_in_redis`](Periodic::claims_in_redis) (or env
/// `DQ_PERIODIC_REDIS_URL`), then published with confirms.
///
/// Messages carry the deterministic `message_id` of [`Schedule::message_id`], the option
/// `scheduled_at` (periodiq's, so a Python worker with periodiq's middleware applies its
/// `skip_delay` to them) and `dq_schedule` (the schedule's name). On the consuming side the
/// middleware skips a message whose `scheduled_at` is older than
/// [`skip_delay`](Periodic::skip_delay) (30 s by default, as periodiq), as periodiq does.
///
/// Schedules come from the actors (`#[dq::actor(cron = "0 */5 * * * *")]`, with `cron_tz`,
/// `cron_args` (a list), `cron_missed` (`"skip"` or `"run_once"`) and `cron_no_overlap`), the
/// schedule taking the actor's name, and from [`schedule`](Periodic::schedule).
///
/// ```
/// use dq_periodic::{Periodic, Schedule};
///
/// let periodic = Periodic::new()
///     .schedule(Schedule::new("cleanup", "@every 10m")?.actor("purge_sessions"));
/// // App::builder(broker).middleware(periodic)...
/// # let _ = periodic;
/// # Ok::<(), dq_periodic::ScheduleError>(())
/// ```
pub struct Periodic {
    schedules: Vec<Schedule>,
    skip_delay: Option<Duration>,
    scheduler: bool,
    claims_url: Option<String>,
    claims_namespace: String,
    busy_ttl: Duration,
    clock_offset_ms: i64,
    running: Mutex<Option<Running>>,
    claims: Mutex<Option<RedisClaims>>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Periodic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Periodic")
            .field("schedules", &self.schedules)
            .field("skip_delay", &self.skip_delay)
            .field("scheduler", &self.scheduler)
            .finish()
    }
}

impl Default for Periodic {
    fn default() -> Periodic {
        Periodic::new()
    }
}

impl Periodic {
    /// The middleware, with no schedules of its own (the actors' `cron` options add theirs),
    /// a `skip_delay` of 30 s, and the Redis of env `DQ_PERIODIC_REDIS_URL` (if set) to claim
    /// ticks in when the broker cannot.
    pub fn new() -> Periodic {
        let clock_offset_ms = std::env::var(CLOCK_OFFSET_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Periodic {
            schedules: Vec::new(),
            skip_delay: Some(Duration::from_secs(30)),
            scheduler: true,
            claims_url: std::env::var(REDIS_URL_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty()),
            claims_namespace: std::env::var(REDIS_NAMESPACE_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "dramatiq".to_owned()),
            busy_ttl: DEFAULT_BUSY_TTL,
            clock_offset_ms,
            running: Mutex::new(None),
            claims: Mutex::new(None),
        }
    }

    /// Adds a schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Periodic {
        self.schedules.push(schedule);
        self
    }

    /// Skip a periodic message (one with `scheduled_at`) older than this when it comes up
    /// (default 30 s, periodiq's default); `None` runs them however late.
    pub fn skip_delay(mut self, delay: Option<Duration>) -> Periodic {
        self.skip_delay = delay;
        self
    }

    /// Whether this process runs the scheduler (default: yes). A process that only consumes
    /// still applies `skip_delay` and ends busy marks.
    pub fn scheduler(mut self, on: bool) -> Periodic {
        self.scheduler = on;
        self
    }

    /// Claim ticks in the Redis at `url`, under `namespace`, for a broker that cannot claim
    /// them itself (RabbitMQ). Ignored on a broker that can (Redis, the stub).
    pub fn claims_in_redis(
        mut self,
        url: impl Into<String>,
        namespace: impl Into<String>,
    ) -> Periodic {
        self.claims_url = Some(url.into());
        self.claims_namespace = namespace.into();
        self
    }

    /// How long the message of a `no_overlap` schedule counts as busy at most (default 1 h):
    /// a safety net for a mark nothing ends (a message purged from its queue).
    pub fn busy_ttl(mut self, ttl: Duration) -> Periodic {
        self.busy_ttl = ttl;
        self
    }

    /// The schedules this app runs: the ones given, then the actors' (checked: each actor
    /// known, each name once).
    pub fn schedules_of(&self, app: &App) -> Result<Vec<Resolved>, ScheduleError> {
        let mut out: Vec<Resolved> = Vec::new();
        let mut all = self.schedules.clone();
        for actor in app.registry().iter() {
            if let Some(s) = from_actor_options(&actor.name, &actor.options.extra)? {
                all.push(s);
            }
        }
        for schedule in all {
            if out.iter().any(|r| r.schedule.name() == schedule.name()) {
                return Err(ScheduleError::Duplicate(schedule.name().to_owned()));
            }
            let queue = match schedule.queue_override() {
                Some(q) => q.to_owned(),
                None => match app.actor(schedule.actor_name()) {
                    Some(a) => a.options.queue_name.clone(),
                    None => {
                        return Err(ScheduleError::UnknownActor {
                            schedule: schedule.name().to_owned(),
                            actor: schedule.actor_name().to_owned(),
                        })
                    }
                },
            };
            out.push(Resolved {
                definition: schedule.definition(),
                schedule,
                queue,
            });
        }
        Ok(out)
    }

    fn claims(&self) -> Option<RedisClaims> {
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn release(&self, app: &App, message: &Message) {
        let (Some(name), true) = (
            message.options.get_str(SCHEDULE_OPTION),
            message.options.contains_key(SCHEDULE_OPTION),
        ) else {
            return;
        };
        let result = match self.claims() {
            Some(c) => c.release(name, &message.message_id).await,
            None => app
                .broker()
                .release_tick(name, &message.message_id)
                .await
                .map_err(|e| dq_core::ErrorChain(&e).to_string()),
        };
        if let Err(e) = result {
            // The busy mark expires by itself (busy_ttl).
            warn!(schedule = name, error = %e, "could not end the busy mark of schedule {name}");
        }
    }
}

/// A schedule with what this app resolved for it.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The schedule.
    pub schedule: Schedule,
    /// The queue its messages go to.
    pub queue: String,
    /// Its definition digest.
    pub definition: String,
}

/// A `scheduled_at` as dq writes it (`2026-12-05T03:00:00+01:00`) or as periodiq does
/// (pendulum's `str`: `2026-12-05 03:00:00+01:00`, fractions of a second allowed).
pub(crate) fn parse_scheduled_at(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .ok()
}

fn from_actor_options(
    actor: &str,
    extra: &Map<String, Value>,
) -> Result<Option<Schedule>, ScheduleError> {
    let Some(cron) = extra.get("cron") else {
        return Ok(None);
    };
    let bad = |option: &'static str, reason: &str| ScheduleError::InvalidOption {
        actor: actor.to_owned(),
        option,
        reason: reason.to_owned(),
    };
    let Some(expr) = cron.as_str() else {
        return Err(bad("cron", "must be a string, such as \"0 */5 * * * *\""));
    };
    let mut s = Schedule::new(actor, expr)?.actor(actor);
    if let Some(tz) = extra.get("cron_tz") {
        let tz = tz
            .as_str()
            .ok_or_else(|| bad("cron_tz", "must be a string"))?;
        s = s.timezone(tz)?;
    }
    if let Some(args) = extra.get("cron_args") {
        if !args.is_array() {
            return Err(bad("cron_args", "must be a list of the actor's arguments"));
        }
        s = s.args(args)?;
    }
    if let Some(missed) = extra.get("cron_missed") {
        s = s.missed(match missed.as_str() {
            Some("skip") => Missed::Skip,
            Some("run_once") => Missed::RunOnce,
            _ => return Err(bad("cron_missed", "must be \"skip\" or \"run_once\"")),
        });
    }
    if let Some(v) = extra.get("cron_no_overlap") {
        s = s.no_overlap(
            v.as_bool()
                .ok_or_else(|| bad("cron_no_overlap", "must be a bool"))?,
        );
    }
    Ok(Some(s))
}

#[async_trait]
impl Middleware for Periodic {
    fn name(&self) -> &str {
        "Periodic"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_PROCESS
            | Hooks::AFTER_PROCESS
            | Hooks::AFTER_SKIP
            | Hooks::NACK
            | Hooks::WORKER
    }

    fn actor_options(&self) -> &[&'static str] {
        ACTOR_OPTIONS
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        let (Some(delay), Some(at)) = (
            self.skip_delay,
            job.message.options.get_str(SCHEDULED_AT_OPTION),
        ) else {
            return Ok(Control::Continue);
        };
        let Some(at) = parse_scheduled_at(at) else {
            return Ok(Control::Continue);
        };
        let age_ms = now_ms().saturating_sub(at.timestamp_millis());
        if age_ms > i64::try_from(delay.as_millis()).unwrap_or(i64::MAX) {
            info!(
                message_id = %job.message.message_id,
                actor = %job.message.actor_name,
                scheduled_at = %at,
                "Skipping {} scheduled at {at}: older than {delay:?}",
                job.message.actor_name
            );
            return Ok(Control::Skip);
        }
        Ok(Control::Continue)
    }

    async fn after_process(
        &self,
        app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        // A failure that is retried keeps the mark; the retry's end (or its dead letter) ends it.
        if matches!(outcome, Outcome::Success(_)) {
            self.release(app, &job.message).await;
        }
        Ok(())
    }

    async fn after_skip(&self, app: &App, job: &mut Job) -> Result<(), MiddlewareError> {
        self.release(app, &job.message).await;
        Ok(())
    }

    async fn after_nack(
        &self,
        app: &App,
        message: &Message,
        _reason: &str,
    ) -> Result<(), MiddlewareError> {
        self.release(app, message).await;
        Ok(())
    }

    async fn after_worker_boot(&self, app: &App) -> Result<(), MiddlewareError> {
        let schedules = self
            .schedules_of(app)
            .map_err(|e| MiddlewareError::caused_by("Periodic", "", e))?;
        let kind = app.broker().kind();
        let claims = match &self.claims_url {
            Some(url) if !atomic_claims(kind) => Some(
                RedisClaims::new(url, &self.claims_namespace)
                    .map_err(|e| MiddlewareError::new("Periodic", e))?,
            ),
            _ => None,
        };
        if claims.is_none() && self.scheduler && !schedules.is_empty() {
            let refuse = |e: ScheduleError| Err(MiddlewareError::caused_by("Periodic", "", e));
            if !atomic_claims(kind) && kind != "amqp" {
                return refuse(ScheduleError::NoClaimStore { broker: kind });
            }
            if kind == "amqp" {
                if let Some(r) = schedules.iter().find(|r| r.schedule.is_no_overlap()) {
                    return refuse(ScheduleError::NoOverlapNeedsRedis {
                        schedule: r.schedule.name().to_owned(),
                    });
                }
            }
        }
        *self.claims.lock().unwrap_or_else(|p| p.into_inner()) = claims.clone();
        if !self.scheduler || schedules.is_empty() {
            return Ok(());
        }
        for r in &schedules {
            info!(
                schedule = r.schedule.name(),
                expression = r.schedule.expression(),
                timezone = r.schedule.timezone_name(),
                actor = r.schedule.actor_name(),
                queue = %r.queue,
                "Schedule {} ({} {}) sends to {}",
                r.schedule.name(),
                r.schedule.expression(),
                r.schedule.timezone_name(),
                r.schedule.actor_name()
            );
        }
        let (stop, stopped) = watch::channel(false);
        let scheduler = Scheduler {
            app: app.clone(),
            schedules,
            claims,
            offset_ms: self.clock_offset_ms,
            busy_ttl_ms: u64::try_from(self.busy_ttl.as_millis()).unwrap_or(u64::MAX),
            attempted: HashMap::new(),
            warned_definitions: HashMap::new(),
            last_definition_check: 0,
            failing: false,
        };
        let task = tokio::spawn(scheduler.run(stopped));
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running { stop, task });
        Ok(())
    }

    async fn before_worker_shutdown(&self, _app: &App) -> Result<(), MiddlewareError> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = running {
            let _ = r.stop.send(true);
            // A claim in progress finishes (it is one broker call); then the loop ends.
            let _ = tokio::time::timeout(Duration::from_secs(10), r.task).await;
        }
        Ok(())
    }
}

/// Whether the broker claims a tick and enqueues its message as one step. RabbitMQ claims
/// through a leader instead (`dq:schedules.leader`), unless the middleware has a Redis for the
/// claims; another broker needs that Redis.
fn atomic_claims(kind: &str) -> bool {
    matches!(kind, "redis" | "stub")
}

struct Scheduler {
    app: App,
    schedules: Vec<Resolved>,
    claims: Option<RedisClaims>,
    offset_ms: i64,
    busy_ttl_ms: u64,
    /// The latest tick this process attempted, per schedule.
    attempted: HashMap<String, i64>,
    /// Other definitions already warned about, per schedule.
    warned_definitions: HashMap<String, String>,
    last_definition_check: i64,
    /// Whether the last claim failed (one WARN per run of failures).
    failing: bool,
}

impl Scheduler {
    fn now(&self) -> i64 {
        now_ms().saturating_add(self.offset_ms)
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            let now = self.now();
            let mut wake = now.saturating_add(MAX_SLEEP_MS);
            for i in 0..self.schedules.len() {
                let retry_at = self.tick(i, now).await;
                let s = &self.schedules[i].schedule;
                if let Some(next) = s.next_tick_after(now) {
                    wake = wake.min(next);
                }
                if let Some(at) = retry_at {
                    wake = wake.min(at);
                }
            }
            if now.saturating_sub(self.last_definition_check) >= DEFINITION_CHECK_EVERY_MS {
                self.last_definition_check = now;
                self.check_definitions().await;
            }
            let sleep =
                Duration::from_millis(u64::try_from(wake.saturating_sub(self.now())).unwrap_or(0));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = stopped.changed() => return,
            }
            if *stopped.borrow() {
                return;
            }
        }
    }

    /// Claims the due tick of schedule `i` if this process has not tried it yet. Returns when
    /// to try again after a failure.
    async fn tick(&mut self, i: usize, now: i64) -> Option<i64> {
        let r = &self.schedules[i];
        let s = &r.schedule;
        let due = s.tick_at_or_before(now)?;
        if self.attempted.get(s.name()).is_some_and(|&a| a >= due) {
            return None;
        }
        let late = now.saturating_sub(due);
        if s.missed_policy() == Missed::Skip && late > s.grace_ms(due) {
            debug!(
                schedule = s.name(),
                tick = due,
                late_ms = late,
                "tick missed: skipped"
            );
            self.attempted.insert(s.name().to_owned(), due);
            return None;
        }
        match self.claim(i, due).await {
            Ok(outcome) => {
                if self.failing {
                    self.failing = false;
                    info!("schedules: claims work again");
                }
                let r = &self.schedules[i];
                let name = r.schedule.name();
                match outcome {
                    TickOutcome::Enqueued => info!(
                        schedule = name,
                        tick = %r.schedule.scheduled_at(due),
                        message_id = %r.schedule.message_id(due),
                        "Enqueued {} for its tick at {}",
                        name,
                        r.schedule.scheduled_at(due)
                    ),
                    TickOutcome::Taken => debug!(
                        schedule = name,
                        tick = due,
                        "tick claimed by another process"
                    ),
                    TickOutcome::Busy(id) => info!(
                        schedule = name,
                        tick = %r.schedule.scheduled_at(due),
                        running = %id,
                        "Skipped the tick of {} at {}: its previous message {} is still queued or running",
                        name,
                        r.schedule.scheduled_at(due),
                        id
                    ),
                }
                self.attempted.insert(name.to_owned(), due);
                None
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    warn!(schedule = self.schedules[i].schedule.name(), error = %e, "cannot claim a schedule tick; retrying");
                } else {
                    debug!(error = %e, "claim failed again");
                }
                Some(self.now().saturating_add(1_000))
            }
        }
    }

    fn message(&self, i: usize, tick: i64) -> Message {
        let r = &self.schedules[i];
        let s = &r.schedule;
        let args = serde_json::value::to_raw_value(s.args_value()).expect("JSON values serialize");
        let kwargs =
            serde_json::value::to_raw_value(s.kwargs_value()).expect("JSON values serialize");
        let mut m = Message::from_raw(&r.queue, s.actor_name(), args, kwargs);
        m.message_id = s.message_id(tick);
        for (k, v) in s.options_value() {
            m.options.insert(k.clone(), v.clone());
        }
        m.options.insert(
            SCHEDULED_AT_OPTION.to_owned(),
            Value::from(s.scheduled_at(tick)),
        );
        m.options
            .insert(SCHEDULE_OPTION.to_owned(), Value::from(s.name()));
        m
    }

    async fn claim(&self, i: usize, tick: i64) -> Result<TickOutcome, String> {
        let r = &self.schedules[i];
        let s = &r.schedule;
        let message = self.message(i, tick);
        let next = s.next_tick_after(tick);
        let state = ScheduleState {
            name: s.name().to_owned(),
            actor_name: s.actor_name().to_owned(),
            queue_name: r.queue.clone(),
            expression: s.expression().to_owned(),
            timezone: s.timezone_name().to_owned(),
            definition: r.definition.clone(),
            last_tick_ms: tick,
            last_message_id: message.message_id.clone(),
            claimed_at_ms: now_ms(),
            next_tick_ms: next,
            args: s.args_value().to_vec(),
            kwargs: s.kwargs_value().clone(),
        };
        let interval = next.map_or(0, |n| n.saturating_sub(tick));
        let record_ttl_ms =
            u64::try_from(interval.saturating_mul(3).max(MIN_RECORD_TTL_MS)).unwrap_or(u64::MAX);
        let claim = TickClaim {
            schedule: s.name(),
            tick_ms: tick,
            no_overlap: s.is_no_overlap(),
            busy_ttl_ms: self.busy_ttl_ms,
            record_ttl_ms,
            state: &state,
        };
        match &self.claims {
            None => self
                .app
                .enqueue_tick(message, &claim)
                .await
                .map(|(outcome, _)| outcome)
                .map_err(|e| dq_core::ErrorChain(&e).to_string()),
            Some(claims) => {
                let outcome = claims.claim(&claim, &message.message_id).await?;
                if outcome != TickOutcome::Enqueued {
                    return Ok(outcome);
                }
                // Claimed: publish, retrying within the tick's grace period.
                let deadline = now_ms().saturating_add(s.grace_ms(tick).max(5_000));
                loop {
                    match self.app.enqueue(message.clone(), None).await {
                        Ok(_) => return Ok(TickOutcome::Enqueued),
                        Err(e) if now_ms() < deadline => {
                            debug!(error = %dq_core::ErrorChain(&e), "publishing a claimed tick; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => {
                            return Err(format!(
                                "claimed tick {tick} of {} but could not publish it: {}",
                                s.name(),
                                dq_core::ErrorChain(&e)
                            ))
                        }
                    }
                }
            }
        }
    }

    /// Warns, once per other definition, when the record of a schedule was written by a process
    /// with another definition under the same name.
    async fn check_definitions(&mut self) {
        let states = match &self.claims {
            Some(c) => c.schedules().await.ok(),
            None => self.app.broker().schedules().await.ok(),
        };
        let Some(states) = states else { return };
        for r in &self.schedules {
            let Some(theirs) = states.iter().find(|s| s.name == r.schedule.name()) else {
                continue;
            };
            if theirs.definition.is_empty() || theirs.definition == r.definition {
                continue;
            }
            if self.warned_definitions.get(r.schedule.name()) == Some(&theirs.definition) {
                continue;
            }
            warn!(
                schedule = r.schedule.name(),
                ours = %format!("{} {} -> {}", r.schedule.expression(), r.schedule.timezone_name(), r.schedule.actor_name()),
                theirs = %format!("{} {} -> {}", theirs.expression, theirs.timezone, theirs.actor_name),
                "two definitions of schedule {} are running (a deploy in progress, or two apps sharing a name): each process claims ticks by its own",
                r.schedule.name()
            );
            self.warned_definitions
                .insert(r.schedule.name().to_owned(), theirs.definition.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_scheduled_at;

    #[test]
    fn scheduled_at_as_dq_and_periodiq_write_it() {
        let dq = parse_scheduled_at("2026-12-05T03:00:00+01:00").unwrap();
        let periodiq = parse_scheduled_at("2026-12-05 03:00:00+01:00").unwrap();
        let fraction = parse_scheduled_at("2026-12-05 02:00:00.5+00:00").unwrap();
        assert_eq!(dq, periodiq);
        assert_eq!(fraction.timestamp_millis(), dq.timestamp_millis() + 500);
        assert!(parse_scheduled_at("yesterday").is_none());
    }
}
