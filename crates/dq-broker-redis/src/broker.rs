//! `RedisBroker`, its builder, and what its consumers share: the dispatch script, connections,
//! the heartbeat.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use dq_core::{
    base_queue_name, is_valid_queue_name, new_message_id, now_ms, Broker, BrokerError,
    BrokerErrorKind, Consumer, DeadLetter, Message, QueueStats, ReleaseOutcome, ScheduleState,
    SendOutcome, TickClaim, TickOutcome, UniqueLock, WorkerInfo,
};
use rand::Rng;
use redis::{Cmd, ErrorKind, RedisResult, ServerErrorKind, Value};

use crate::conn::Lanes;
use crate::consumer::{QueueState, RedisConsumer};
use crate::error::{broker_error, unexpected_reply, RedisBrokerError};
use crate::notify::Notifier;
use dq_core::redact_url as redact;

/// The URL used when none is given and `DQ_REDIS_URL` is not set.
pub const DEFAULT_URL: &str = dq_redis_conn::DEFAULT_URL;
/// The environment variable [`RedisBroker::from_env`] reads the URL from.
pub const URL_ENV: &str = dq_redis_conn::URL_ENV;
/// The environment variable [`RedisBroker::from_env`] reads the namespace from.
pub const NAMESPACE_ENV: &str = dq_redis_conn::NAMESPACE_ENV;
/// Dramatiq's default key namespace.
pub const DEFAULT_NAMESPACE: &str = "dramatiq";

const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(60_000);
const DEFAULT_DEAD_MESSAGE_TTL: Duration = Duration::from_millis(7 * 86_400_000);
/// Out of [`MAINTENANCE_SCALE`] calls, as Dramatiq: 0.1 %.
const DEFAULT_MAINTENANCE_CHANCE: u32 = 1_000;
/// The denominator of `maintenance_chance`.
pub const MAINTENANCE_SCALE: u32 = 1_000_000;
const DEFAULT_POOL_SIZE: usize = 8;
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Dramatiq's environment override of the probed Lua stack size.
const MAX_STACK_ENV: &str = "dramatiq_lua_max_stack";
/// Ids per enqueue or settle call: big batches amortise the round trip, and smaller ones keep
/// any single script from holding Redis for long.
pub(crate) const MAX_BATCH: usize = 2_000;

const DISPATCH_LUA: &str = include_str!("dispatch.lua");

/// Finds how many values Lua's `unpack` takes here: 1000 doubled while it still works.
const PROBE_LUA: &str = r"
local unpack = table.unpack or unpack
local function fits(n)
    local t = {}
    for i = 1, n do t[i] = 0 end
    return pcall(function() return unpack(t) end)
end
local size = 1000
while size < 1048576 and fits(size * 2) do size = size * 2 end
return size
";

/// A broker that keeps its queues in Redis, with Dramatiq 2.2.1's keys and semantics, so dq
/// and Python Dramatiq workers and producers can share them.
///
/// Build one with [`RedisBroker::builder`] or [`RedisBroker::from_env`]. Clones share the
/// connections, the heartbeat and the broker id (one per process, as in Dramatiq).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use dq_broker_redis::RedisBroker;
/// use dq_core::Broker;
///
/// let broker = RedisBroker::builder()
///     .url("redis://127.0.0.1:6379/0")
///     .namespace("tenant-a")
///     .build()
///     .await?;
/// let stats = broker.stats("default").await?;
/// println!("{} ready", stats.ready);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) lanes: Lanes,
    pub(crate) namespace: String,
    pub(crate) broker_id: String,
    url: String,
    heartbeat_timeout_ms: u64,
    dead_message_ttl_ms: u64,
    maintenance_chance: u32,
    pub(crate) max_unpack: usize,
    /// The highest broker priority; 0 when priority is off.
    pub(crate) max_priority: u8,
    pub(crate) close_timeout: Duration,
    script: redis::Script,
    pub(crate) notifier: Arc<Notifier>,
    /// When this broker last told Redis it is alive (ms since the epoch).
    last_beat: AtomicI64,
    /// Consumers (or their ackers) still alive: only a broker that may hold messages needs
    /// its heartbeat kept up.
    pub(crate) active_consumers: AtomicUsize,
    queues: Mutex<HashMap<String, Arc<QueueState>>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().expect("tasks lock").iter() {
            t.abort();
        }
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.inner.url)
            .field("namespace", &self.inner.namespace)
            .field("broker_id", &self.inner.broker_id)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`RedisBroker`]. Defaults are Dramatiq's.
#[derive(Clone)]
pub struct RedisBrokerBuilder {
    url: String,
    namespace: String,
    heartbeat_timeout: Duration,
    dead_message_ttl: Duration,
    maintenance_chance: u32,
    pool_size: usize,
    response_timeout: Duration,
    close_timeout: Duration,
    tls_root_certificate: Option<Vec<u8>>,
    max_priority: Option<u8>,
}

impl fmt::Debug for RedisBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBrokerBuilder")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("dead_message_ttl", &self.dead_message_ttl)
            .field("maintenance_chance", &self.maintenance_chance)
            .field("pool_size", &self.pool_size)
            .field("response_timeout", &self.response_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("tls_root_certificate", &self.tls_root_certificate.is_some())
            .field("max_priority", &self.max_priority)
            .finish()
    }
}

impl Default for RedisBrokerBuilder {
    fn default() -> RedisBrokerBuilder {
        RedisBrokerBuilder {
            url: DEFAULT_URL.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            dead_message_ttl: DEFAULT_DEAD_MESSAGE_TTL,
            maintenance_chance: DEFAULT_MAINTENANCE_CHANCE,
            pool_size: DEFAULT_POOL_SIZE,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            tls_root_certificate: None,
            max_priority: None,
        }
    }
}

impl RedisBrokerBuilder {
    /// A builder with the settings of the environment: the URL in `DQ_REDIS_URL` (default
    /// [`DEFAULT_URL`]) and the namespace in `DQ_REDIS_NAMESPACE` (default
    /// [`DEFAULT_NAMESPACE`]), the variables the worker command, the result backend and the
    /// rate-limiter backend read too, and the broker priority's maximum in `DQ_MAX_PRIORITY`
    /// (default none). Other settings are the defaults; set them on the builder.
    ///
    /// A URL the client cannot read is a [`RedisBrokerError::InvalidUrl`] (naming the variable),
    /// here rather than at [`build`](RedisBrokerBuilder::build); a `DQ_MAX_PRIORITY` that is
    /// not a number from 1 to 255 is a [`RedisBrokerError::InvalidConfig`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), dq_broker_redis::RedisBrokerError> {
    /// use std::time::Duration;
    /// use dq_broker_redis::RedisBrokerBuilder;
    ///
    /// let broker = RedisBrokerBuilder::from_env()?
    ///     .heartbeat_timeout(Duration::from_secs(30))
    ///     .build()
    ///     .await?;
    /// # drop(broker); Ok(()) }
    /// ```
    pub fn from_env() -> Result<RedisBrokerBuilder, RedisBrokerError> {
        let env = dq_redis_conn::RedisEnv::read().map_err(env_error)?;
        let builder = RedisBrokerBuilder::default()
            .url(env.url())
            .max_priority(max_priority_from_env(|v| std::env::var(v).ok())?);
        Ok(match env.namespace() {
            Some(ns) => builder.namespace(ns),
            None => builder,
        })
    }

    /// The Redis URL: `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS, or
    /// `redis+unix:///path`. Default [`DEFAULT_URL`]. It is never logged unredacted.
    pub fn url(mut self, url: impl Into<String>) -> RedisBrokerBuilder {
        self.url = url.into();
        self
    }

    /// The prefix of every key (default `dramatiq`). Workers and producers must agree on it;
    /// different namespaces on one Redis never see each other's messages.
    pub fn namespace(mut self, namespace: impl Into<String>) -> RedisBrokerBuilder {
        self.namespace = namespace.into();
        self
    }

    /// How long a broker may go without a heartbeat before others recover its unacked
    /// messages (default 60 s, Dramatiq's).
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> RedisBrokerBuilder {
        self.heartbeat_timeout = timeout;
        self
    }

    /// How long dead letters are kept (default 7 days, Dramatiq's).
    pub fn dead_message_ttl(mut self, ttl: Duration) -> RedisBrokerBuilder {
        self.dead_message_ttl = ttl;
        self
    }

    /// How many script calls out of [`MAINTENANCE_SCALE`] also run maintenance: recovering
    /// dead brokers' messages and expiring dead letters (default 1000, Dramatiq's 0.1 %).
    pub fn maintenance_chance(mut self, chance: u32) -> RedisBrokerBuilder {
        self.maintenance_chance = chance.min(MAINTENANCE_SCALE);
        self
    }

    /// How many connections to Redis the broker keeps (default 8). Each is multiplexed, so
    /// this bounds connections, not concurrency.
    pub fn pool_size(mut self, size: usize) -> RedisBrokerBuilder {
        self.pool_size = size;
        self
    }

    /// How long to wait for a reply before treating the connection as lost (default 30 s).
    pub fn response_timeout(mut self, timeout: Duration) -> RedisBrokerBuilder {
        self.response_timeout = timeout;
        self
    }

    /// How long a consumer's `close` keeps trying to give its unsettled messages back while
    /// Redis is unreachable (default 15 s). After that it returns an error and the messages stay
    /// in this broker's ack set, from which other workers recover them once its heartbeat stops.
    pub fn close_timeout(mut self, timeout: Duration) -> RedisBrokerBuilder {
        self.close_timeout = timeout;
        self
    }

    /// A CA certificate (PEM) to trust for `rediss://` URLs instead of the system's roots, for a
    /// Redis whose certificate a private CA signed.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> RedisBrokerBuilder {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// Turns on broker priority, with RabbitMQ's meaning: a message whose `broker_priority`
    /// option is from 1 to `max_priority` (higher values count as `max_priority`) is fetched
    /// before every message of a lower priority on its queue, and after those of its own level
    /// sent before it (default none: every message is FIFO, as in Dramatiq).
    ///
    /// Prioritized messages wait in a sorted set of dq's own, `<ns>:__dq_priority__.<q>`, which
    /// Python workers do not read; when no dq consumer has heartbeat for the heartbeat timeout,
    /// the maintenance of any worker moves them onto the list, so Python workers get them too
    /// (without their priority). Set it on the workers and on the producers of a queue; a
    /// producer without it sends prioritized messages to the list, and a worker with it moves
    /// those it sees at the head of the list into the sorted set.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), dq_broker_redis::RedisBrokerError> {
    /// let broker = dq_broker_redis::RedisBroker::builder().max_priority(Some(10)).build().await?;
    /// # drop(broker); Ok(()) }
    /// ```
    pub fn max_priority(mut self, max_priority: Option<u8>) -> RedisBrokerBuilder {
        self.max_priority = max_priority;
        self
    }

    /// Connects, checks Redis answers, and starts the heartbeat. Must run inside a Tokio
    /// runtime. Redis being unreachable is a [`RedisBrokerError::Connect`], whose
    /// [`kind`](RedisBrokerError::kind) is `Connection`.
    pub async fn build(self) -> Result<RedisBroker, RedisBrokerError> {
        let url = redact(&self.url);
        if self.pool_size == 0 {
            return Err(RedisBrokerError::InvalidConfig(
                "pool_size must be at least 1".into(),
            ));
        }
        if self.namespace.is_empty() {
            return Err(RedisBrokerError::InvalidConfig(
                "namespace must not be empty".into(),
            ));
        }
        if self.max_priority == Some(0) {
            return Err(RedisBrokerError::InvalidConfig(
                "max_priority must be between 1 and 255".into(),
            ));
        }
        if self.heartbeat_timeout.is_zero() {
            return Err(RedisBrokerError::InvalidConfig(
                "heartbeat_timeout must be positive".into(),
            ));
        }
        let invalid_url = |e: redis::RedisError| RedisBrokerError::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        };
        let client = dq_redis_conn::client(&self.url, self.tls_root_certificate.as_deref())
            .map_err(invalid_url)?;
        // The pool connects with the client's parsed settings, TLS roots included, and without
        // the client's own timeouts: the lanes time every call with `response_timeout`.
        let manager = dq_redis_conn::manager(&client).map_err(invalid_url)?;
        let mut pool_config = deadpool_redis::PoolConfig::new(self.pool_size);
        pool_config.timeouts.create = Some(self.response_timeout);
        pool_config.timeouts.recycle = Some(self.response_timeout);
        pool_config.timeouts.wait = Some(self.response_timeout);
        let pool = deadpool_redis::Pool::builder(manager)
            .config(pool_config)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| RedisBrokerError::InvalidConfig(e.to_string()))?;
        let lanes = Lanes::new(pool, self.pool_size, self.response_timeout);
        let connect_error = |e: redis::RedisError| RedisBrokerError::Connect {
            url: url.clone(),
            source: BrokerError::new(BrokerErrorKind::Connection, "ping").with_source(e),
        };
        lanes
            .query::<()>(0, &redis::cmd("PING"))
            .await
            .map_err(connect_error)?;
        let max_unpack = match env_max_stack() {
            Some(n) => n,
            None => {
                let mut probe = redis::cmd("EVAL");
                probe.arg(PROBE_LUA).arg(0);
                lanes
                    .query::<usize>(0, &probe)
                    .await
                    .map_err(connect_error)?
            }
        } / 2;
        let (notifier, notify_task) = Notifier::start(client);
        let broker_id = new_message_id();
        let heartbeat_every = heartbeat_interval(self.heartbeat_timeout);
        let inner = Arc::new(Inner {
            lanes,
            namespace: self.namespace,
            broker_id,
            url,
            heartbeat_timeout_ms: self.heartbeat_timeout.as_millis() as u64,
            dead_message_ttl_ms: self.dead_message_ttl.as_millis() as u64,
            maintenance_chance: self.maintenance_chance,
            max_unpack: max_unpack.max(1),
            max_priority: self.max_priority.unwrap_or(0),
            close_timeout: self.close_timeout,
            script: redis::Script::new(DISPATCH_LUA),
            notifier,
            last_beat: AtomicI64::new(0),
            active_consumers: AtomicUsize::new(0),
            queues: Mutex::new(HashMap::new()),
            tasks: Mutex::new(vec![notify_task.abort_handle()]),
        });
        // Spawned once `inner` exists: the task holds it weakly and ends when it cannot upgrade.
        let beat = tokio::spawn(heartbeat(Arc::downgrade(&inner), heartbeat_every));
        inner
            .tasks
            .lock()
            .expect("tasks lock")
            .push(beat.abort_handle());
        tracing::debug!(
            url = %inner.url,
            namespace = %inner.namespace,
            broker_id = %inner.broker_id,
            max_unpack = inner.max_unpack,
            "redis broker connected"
        );
        Ok(RedisBroker { inner })
    }
}

/// `DQ_MAX_PRIORITY`, read through `var`: none when unset or empty.
fn max_priority_from_env(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<u8>, RedisBrokerError> {
    dq_core::env::max_priority(var(dq_core::env::MAX_PRIORITY).as_deref())
        .map_err(|e| RedisBrokerError::InvalidConfig(e.to_string()))
}

fn env_max_stack() -> Option<usize> {
    std::env::var(MAX_STACK_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n >= 2)
}

/// Well under the timeout, so that one late tick never makes us look dead; at most 5 s.
fn heartbeat_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5))
}

/// Keeps this broker's heartbeat fresh while it lives, even when no consumer calls Redis (all
/// worker threads busy on long messages): otherwise other workers would recover, and run a
/// second time, the messages it is still processing (WIRE.md 9.5). It skips the write when a
/// script call heartbeat recently, so an idle worker adds no traffic, and when no consumer is
/// alive, so a producer-only process writes no more heartbeats than a Python one.
async fn heartbeat(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = now_ms();
        if inner.active_consumers.load(Ordering::Relaxed) == 0 {
            continue;
        }
        // The priority pseudo-workers of the queues this broker consumes are alive while it
        // is (XX: only those that exist). Script calls refresh only their own queue's, so these
        // are refreshed on every tick, even when a recent call made our own beat unnecessary.
        let pseudo = inner.priority_workers();
        let own_beat_due =
            now - inner.last_beat.load(Ordering::Relaxed) >= every.as_millis() as i64;
        if !own_beat_due && pseudo.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(inner.key("__heartbeats__"))
            .arg(now)
            .arg(&inner.broker_id)
            .ignore();
        if !pseudo.is_empty() {
            let mut zadd = redis::cmd("ZADD");
            zadd.arg(inner.key("__heartbeats__")).arg("XX");
            for w in &pseudo {
                zadd.arg(now).arg(w);
            }
            pipe.add_command(zadd).ignore();
        }
        match inner
            .lanes
            .query_pipe::<()>(inner.lanes.pick(), &pipe)
            .await
        {
            Ok(()) => inner.last_beat.store(now, Ordering::Relaxed),
            // A worker logs an outage once; the beats it misses meanwhile are details.
            Err(e) => {
                tracing::debug!(error = %dq_core::ErrorChain(&e), url = %inner.url, "redis heartbeat failed")
            }
        }
    }
}

impl Inner {
    /// Every key matching `pattern`, through `SCAN` (never `KEYS`, which blocks Redis on a
    /// large keyspace), handed to `each` a page at a time.
    pub(crate) async fn scan_keys(
        &self,
        pattern: &str,
        context: &str,
        mut each: impl FnMut(Vec<String>),
    ) -> Result<(), BrokerError> {
        let lane = self.lanes.pick();
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1_000);
            let (next, keys): (u64, Vec<String>) = self
                .lanes
                .query(lane, &scan)
                .await
                .map_err(|e| broker_error(e, context))?;
            each(keys);
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// `HMGET hash ids…` on `lane`: one body (or none, when it is gone) per id, in order.
    async fn bodies<I: redis::ToRedisArgs>(
        &self,
        lane: usize,
        hash: String,
        ids: &[I],
        context: &str,
    ) -> Result<Vec<Option<Vec<u8>>>, BrokerError> {
        let mut get = redis::cmd("HMGET");
        get.arg(hash).arg(ids);
        let bodies: Vec<Option<Vec<u8>>> = self
            .lanes
            .query(lane, &get)
            .await
            .map_err(|e| broker_error(e, context))?;
        if bodies.len() != ids.len() {
            return Err(unexpected_reply(context));
        }
        Ok(bodies)
    }

    pub(crate) fn key(&self, name: &str) -> String {
        let mut k = String::with_capacity(self.namespace.len() + 1 + name.len());
        k.push_str(&self.namespace);
        k.push(':');
        k.push_str(name);
        k
    }

    /// The set of ids this broker holds unsettled on physical queue `queue`.
    pub(crate) fn acks_key(&self, queue: &str) -> String {
        format!("{}:__acks__.{}.{}", self.namespace, self.broker_id, queue)
    }

    /// The ids of the priority pseudo-workers of the queues this broker consumes (none when
    /// priority is off), for the heartbeat.
    fn priority_workers(&self) -> Vec<String> {
        if self.max_priority == 0 {
            return Vec::new();
        }
        self.queues
            .lock()
            .expect("queues lock")
            .iter()
            .filter(|(q, state)| !q.ends_with(".DQ") && state.has_consumers())
            .map(|(q, _)| format!("__dq_priority__.{q}"))
            .collect()
    }

    pub(crate) fn notify_channel(&self, queue: &str) -> String {
        format!("{}:__dq_notify__.{}", self.namespace, queue)
    }

    fn roll_maintenance(&self) -> bool {
        self.maintenance_chance > 0
            && rand::thread_rng().gen_range(1..=MAINTENANCE_SCALE) <= self.maintenance_chance
    }

    /// An EVALSHA of the dispatch script with its fixed arguments; the caller appends the
    /// command's own. Maintenance never rides on calls that settle messages, as in Dramatiq.
    pub(crate) fn script_cmd(&self, command: &str, queue: &str) -> Cmd {
        let maintenance = command != "settle" && self.roll_maintenance();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash())
            .arg(1)
            .arg(&self.namespace)
            .arg(command)
            .arg(now_ms())
            .arg(queue)
            .arg(&self.broker_id)
            .arg(self.heartbeat_timeout_ms)
            .arg(self.dead_message_ttl_ms)
            .arg(if maintenance { "1" } else { "0" })
            .arg(self.max_unpack)
            .arg(self.max_priority);
        cmd
    }

    /// Runs a dispatch call, loading the script first if Redis lost it (a restart).
    pub(crate) async fn eval(&self, lane: usize, cmd: &Cmd) -> RedisResult<Value> {
        let started = now_ms();
        let value = match self.lanes.query::<Value>(lane, cmd).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut load = redis::cmd("SCRIPT");
                load.arg("LOAD").arg(DISPATCH_LUA);
                self.lanes.query::<String>(lane, &load).await?;
                self.lanes.query::<Value>(lane, cmd).await?
            }
            other => other?,
        };
        self.last_beat.fetch_max(started, Ordering::Relaxed);
        Ok(value)
    }

    /// Acks, nacks and requeues ids of physical queue `queue` held by this broker, in as few
    /// calls as the batch limit allows. Each call is idempotent per id (only ids still in our
    /// ack set are touched), so a call retried after a lost reply changes nothing twice.
    pub(crate) async fn settle(
        &self,
        lane: usize,
        queue: &str,
        acks: &[String],
        nacks: &[String],
        requeues: &[String],
    ) -> RedisResult<()> {
        let (mut a, mut n, mut r) = (acks, nacks, requeues);
        while !(a.is_empty() && n.is_empty() && r.is_empty()) {
            let take_a = a.len().min(MAX_BATCH);
            let take_n = n.len().min(MAX_BATCH - take_a);
            let take_r = r.len().min(MAX_BATCH - take_a - take_n);
            let mut cmd = self.script_cmd("settle", queue);
            cmd.arg(take_a).arg(take_n);
            for id in a[..take_a].iter().chain(&n[..take_n]).chain(&r[..take_r]) {
                cmd.arg(id);
            }
            self.eval(lane, &cmd).await?;
            a = &a[take_a..];
            n = &n[take_n..];
            r = &r[take_r..];
        }
        Ok(())
    }

    pub(crate) fn queue_state(&self, queue: &str) -> Arc<QueueState> {
        self.queues
            .lock()
            .expect("queues lock")
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    async fn enqueue_batch<'a>(
        &self,
        queue: &str,
        batch: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), BrokerError> {
        let mut cmd = self.script_cmd("enqueue", queue);
        for (id, body) in batch {
            cmd.arg(id).arg(body);
        }
        self.eval(self.lanes.pick(), &cmd)
            .await
            .map_err(|e| broker_error(e, format!("enqueue on {queue}")))?;
        Ok(())
    }

    async fn purge(&self, queue: &str) -> Result<(), BrokerError> {
        let cmd = self.script_cmd("purge", queue);
        self.eval(self.lanes.pick(), &cmd)
            .await
            .map_err(|e| broker_error(e, format!("purge {queue}")))?;
        Ok(())
    }
}

/// `s` with the characters that are special in a Redis glob escaped.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The environment's error as ours: a bad URL, with the variable that holds it.
fn env_error(e: dq_redis_conn::EnvError) -> RedisBrokerError {
    match e {
        dq_redis_conn::EnvError::InvalidUrl { var, url, reason } => RedisBrokerError::InvalidUrl {
            url,
            reason: format!("{reason} (from {var})"),
        },
    }
}

/// Checks that `queue` is a physical queue (`q` or `q.DQ`) with a valid name.
pub(crate) fn check_physical(queue: &str) -> Result<(), BrokerError> {
    if queue.ends_with(".XQ") || !is_valid_queue_name(base_queue_name(queue)) {
        return Err(BrokerError::new(
            BrokerErrorKind::Rejected,
            format!("invalid queue name {queue:?}"),
        ));
    }
    Ok(())
}

impl RedisBroker {
    /// A builder with Dramatiq's defaults and [`DEFAULT_URL`].
    pub fn builder() -> RedisBrokerBuilder {
        RedisBrokerBuilder::default()
    }

    /// Connects with the settings of the environment ([`RedisBrokerBuilder::from_env`]: the URL
    /// in `DQ_REDIS_URL`, default [`DEFAULT_URL`], and the namespace in `DQ_REDIS_NAMESPACE`,
    /// default [`DEFAULT_NAMESPACE`]) and otherwise default settings.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), dq_broker_redis::RedisBrokerError> {
    /// let broker = dq_broker_redis::RedisBroker::from_env().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_env() -> Result<RedisBroker, RedisBrokerError> {
        RedisBrokerBuilder::from_env()?.build().await
    }

    /// The key namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// This broker's id in the heartbeat set and in its ack-set keys (a UUID4, one per
    /// broker instance).
    pub fn broker_id(&self) -> &str {
        &self.inner.broker_id
    }

    /// The URL, with any password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.inner.url
    }

    /// The highest broker priority this broker orders messages by, or `None` when broker
    /// priority is off ([`RedisBrokerBuilder::max_priority`]).
    pub fn max_priority(&self) -> Option<u8> {
        (self.inner.max_priority > 0).then_some(self.inner.max_priority)
    }

    /// How many ids one Lua `unpack` may take on this Redis (half the probed stack, or half of
    /// `dramatiq_lua_max_stack`), as Dramatiq computes it.
    pub fn max_unpack(&self) -> usize {
        self.inner.max_unpack
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError> {
        // Redis needs no declaration: keys appear with their first message.
        check_physical(queue)
    }

    async fn enqueue(&self, message: &mut Message) -> Result<(), BrokerError> {
        check_physical(&message.queue_name)?;
        let id = new_message_id();
        message.options.set_redis_message_id(id.clone());
        let body = message.encode();
        self.inner
            .enqueue_batch(&message.queue_name, [(id.as_str(), body.as_slice())])
            .await
    }

    /// One call of the dispatch script claims the tick in `<ns>:__dq_schedules__:<name>` and
    /// enqueues the message as `enqueue` does: never one without the other.
    async fn enqueue_tick(
        &self,
        claim: &TickClaim<'_>,
        message: &mut Message,
    ) -> Result<TickOutcome, BrokerError> {
        self.inner.enqueue_tick(claim, message).await
    }

    async fn release_tick(&self, schedule: &str, message_id: &str) -> Result<(), BrokerError> {
        self.inner.release_tick(schedule, message_id).await
    }

    /// One call of the dispatch script takes the lock `<ns>:__dq_unique__:<q>:<key>` (`SET NX
    /// PX`, or for a debounce a replacement of the holder) and enqueues the message as
    /// `enqueue` does: never one without the other.
    async fn enqueue_unique(
        &self,
        lock: &UniqueLock,
        message: &mut Message,
    ) -> Result<SendOutcome, BrokerError> {
        self.inner.enqueue_unique(lock, message).await
    }

    /// Compare and delete, in the dispatch script.
    async fn release_unique(
        &self,
        queue: &str,
        key: &str,
        message_id: &str,
    ) -> Result<ReleaseOutcome, BrokerError> {
        self.inner.release_unique(queue, key, message_id).await
    }

    /// A `SCAN` of the queue's lock keys.
    async fn unique_locks(&self, queue: &str) -> Result<u64, BrokerError> {
        self.inner.unique_locks(queue).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>, BrokerError> {
        self.inner.schedules().await
    }

    async fn enqueue_many(&self, messages: &mut [Message]) -> Result<(), BrokerError> {
        // One script call per queue and batch, in the order given within each queue.
        let mut by_queue: Vec<(String, Vec<(String, Vec<u8>)>)> = Vec::new();
        for m in messages.iter_mut() {
            check_physical(&m.queue_name)?;
            let id = new_message_id();
            m.options.set_redis_message_id(id.clone());
            let body = m.encode();
            match by_queue.iter_mut().find(|(q, _)| *q == m.queue_name) {
                Some((_, items)) => items.push((id, body)),
                None => by_queue.push((m.queue_name.clone(), vec![(id, body)])),
            }
        }
        for (queue, items) in &by_queue {
            for chunk in items.chunks(MAX_BATCH) {
                let batch = chunk
                    .iter()
                    .map(|(id, body)| (id.as_str(), body.as_slice()));
                self.inner.enqueue_batch(queue, batch).await?;
            }
        }
        Ok(())
    }

    async fn consume(
        &self,
        queue: &str,
        prefetch: usize,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        check_physical(queue)?;
        if prefetch == 0 {
            return Err(BrokerError::new(
                BrokerErrorKind::Rejected,
                "prefetch must be at least 1",
            ));
        }
        Ok(Box::new(RedisConsumer::new(
            self.inner.clone(),
            queue,
            prefetch,
        )))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let q = base_queue_name(queue);
        let dq = format!("{q}.DQ");
        let mut pipe = redis::pipe();
        pipe.cmd("LLEN")
            .arg(self.inner.key(q))
            .cmd("HLEN")
            .arg(self.inner.key(&format!("{q}.msgs")))
            .cmd("HLEN")
            .arg(self.inner.key(&format!("{dq}.msgs")))
            .cmd("ZCARD")
            .arg(self.inner.key(&format!("{q}.XQ")))
            // The live ids of the priority zset are those its pseudo-worker holds.
            .cmd("SCARD")
            .arg(self.inner.key(&format!("__acks__.__dq_priority__.{q}.{q}")));
        let (listed, bodies, delayed, dead, prioritized): (u64, u64, u64, u64, u64) = self
            .inner
            .lanes
            .query_pipe(self.inner.lanes.pick(), &pipe)
            .await
            .map_err(|e| broker_error(e, format!("stats of {q}")))?;
        let ready = listed + prioritized;
        Ok(QueueStats {
            ready,
            prioritized,
            // Delayed messages held by a worker until their eta still count as delayed.
            delayed,
            dead,
            in_flight: bodies.saturating_sub(ready),
        })
    }

    async fn flush(&self, queue: &str) -> Result<(), BrokerError> {
        let q = base_queue_name(queue);
        self.inner.purge(q).await?;
        self.inner.purge(&format!("{q}.DQ")).await
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let q = base_queue_name(queue);
        let xq = self.inner.key(&format!("{q}.XQ"));
        let context = || format!("dead letters of {q}");
        let mut range = redis::cmd("ZRANGE");
        range.arg(&xq).arg(0).arg(limit - 1).arg("WITHSCORES");
        let lane = self.inner.lanes.pick();
        let scored: Vec<(String, f64)> = self
            .inner
            .lanes
            .query(lane, &range)
            .await
            .map_err(|e| broker_error(e, context()))?;
        if scored.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = scored.iter().map(|(id, _)| id.as_str()).collect();
        let bodies = self
            .inner
            .bodies(lane, format!("{xq}.msgs"), &ids, &context())
            .await?;
        Ok(scored
            .into_iter()
            .zip(bodies)
            // A body expired between the two reads: the letter is gone.
            .filter_map(|((id, at), body)| {
                body.map(|body| DeadLetter {
                    id,
                    body,
                    dead_lettered_at: Some(at as i64),
                    reason: None,
                })
            })
            .collect())
    }

    /// Ready messages are the list `q` (`LRANGE`), dead letters the zset `q.XQ` (`ZRANGE`),
    /// each with its bodies from the hash (`HMGET`). Delayed messages are read from the hash
    /// `q.DQ.msgs` (`HSCAN`), because a worker holds them, taken off the list `q.DQ`, until their
    /// `eta`: up to `offset + limit` of them (at most 10,000) are read and sorted by `eta`.
    async fn browse(
        &self,
        queue: &str,
        state: dq_core::MessageState,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<dq_core::BrowsedMessage>, BrokerError> {
        use dq_core::{BrowsedMessage, MessageState};
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Redis takes list and zset indexes as signed 64-bit integers.
        let offset = offset.min(i64::MAX as usize / 2);
        let limit = limit.min(i64::MAX as usize / 2);
        let q = base_queue_name(queue);
        let lane = self.inner.lanes.pick();
        let context = || format!("browse {state} messages of {q}");
        let (ids, at): (Vec<String>, Vec<Option<i64>>) = match state {
            MessageState::Ready => {
                let mut range = redis::cmd("LRANGE");
                range
                    .arg(self.inner.key(q))
                    .arg(offset)
                    .arg(offset + (limit - 1));
                let ids: Vec<String> = self
                    .inner
                    .lanes
                    .query(lane, &range)
                    .await
                    .map_err(|e| broker_error(e, context()))?;
                let n = ids.len();
                (ids, vec![None; n])
            }
            MessageState::DeadLettered => {
                let mut range = redis::cmd("ZRANGE");
                range
                    .arg(self.inner.key(&format!("{q}.XQ")))
                    .arg(offset)
                    .arg(offset + (limit - 1))
                    .arg("WITHSCORES");
                let scored: Vec<(String, f64)> = self
                    .inner
                    .lanes
                    .query(lane, &range)
                    .await
                    .map_err(|e| broker_error(e, context()))?;
                scored
                    .into_iter()
                    .map(|(id, at)| (id, Some(at as i64)))
                    .unzip()
            }
            MessageState::Delayed => {
                const MAX_SCANNED: usize = 10_000;
                let want = offset.saturating_add(limit).min(MAX_SCANNED);
                let hash = self.inner.key(&format!("{q}.DQ.msgs"));
                let mut found: Vec<(i64, String, Vec<u8>)> = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let mut scan = redis::cmd("HSCAN");
                    scan.arg(&hash).arg(cursor).arg("COUNT").arg(500);
                    let (next, pairs): (u64, Vec<(String, Vec<u8>)>) = self
                        .inner
                        .lanes
                        .query(lane, &scan)
                        .await
                        .map_err(|e| broker_error(e, context()))?;
                    for (id, body) in pairs {
                        let eta = Message::decode(&body)
                            .ok()
                            .and_then(|m| m.options.eta())
                            .unwrap_or(i64::MAX);
                        found.push((eta, id, body));
                    }
                    if next == 0 || found.len() >= MAX_SCANNED {
                        break;
                    }
                    cursor = next;
                }
                found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
                found.truncate(want);
                return Ok(found
                    .into_iter()
                    .skip(offset)
                    .map(|(_, id, body)| BrowsedMessage {
                        id,
                        body,
                        state,
                        dead_lettered_at: None,
                        reason: None,
                    })
                    .collect());
            }
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let hash = match state {
            MessageState::DeadLettered => self.inner.key(&format!("{q}.XQ.msgs")),
            _ => self.inner.key(&format!("{q}.msgs")),
        };
        let bodies = self.inner.bodies(lane, hash, &ids, &context()).await?;
        Ok(ids
            .into_iter()
            .zip(at)
            .zip(bodies)
            // Taken and acked (or expired) between the two reads: it is gone.
            .filter_map(|((id, at), body)| {
                body.map(|body| BrowsedMessage {
                    id,
                    body,
                    state,
                    dead_lettered_at: at,
                    reason: None,
                })
            })
            .collect())
    }

    async fn list_queues(&self) -> Result<Vec<String>, BrokerError> {
        // Queues have no registry in Redis: they are the keys that exist. A queue whose
        // messages are all in flight still has its `.msgs` hash.
        let ns = &self.inner.namespace;
        let pattern = format!("{}:*", glob_escape(ns));
        let mut names = std::collections::BTreeSet::new();
        self.inner
            .scan_keys(&pattern, "list queues", |keys| {
                for key in &keys {
                    let Some(name) = key
                        .strip_prefix(ns.as_str())
                        .and_then(|k| k.strip_prefix(':'))
                    else {
                        continue;
                    };
                    // Dramatiq's bookkeeping, and dq's own (the worker registry, `__dq_workers__`).
                    if name.starts_with("__acks__.")
                        || name == "__heartbeats__"
                        || name.starts_with("__dq_")
                    {
                        continue;
                    }
                    let q = base_queue_name(name.strip_suffix(".msgs").unwrap_or(name));
                    if is_valid_queue_name(q) {
                        names.insert(q.to_owned());
                    }
                }
            })
            .await?;
        Ok(names.into_iter().collect())
    }

    async fn delete_dead_letters(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        let q = base_queue_name(queue);
        let xq = self.inner.key(&format!("{q}.XQ"));
        let xq_msgs = format!("{xq}.msgs");
        let lane = self.inner.lanes.pick();
        let context = || format!("delete dead letters of {q}");
        let Some(ids) = ids else {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("ZCARD")
                .arg(&xq)
                .cmd("DEL")
                .arg(&xq)
                .arg(&xq_msgs)
                .ignore();
            let (count,): (u64,) = self
                .inner
                .lanes
                .query_pipe(lane, &pipe)
                .await
                .map_err(|e| broker_error(e, context()))?;
            return Ok(count);
        };
        let mut deleted = 0;
        for chunk in ids.chunks(MAX_BATCH) {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("ZREM").arg(&xq).arg(chunk);
            pipe.cmd("HDEL").arg(&xq_msgs).arg(chunk).ignore();
            let (removed,): (u64,) = self
                .inner
                .lanes
                .query_pipe(lane, &pipe)
                .await
                .map_err(|e| broker_error(e, context()))?;
            deleted += removed;
        }
        Ok(deleted)
    }

    /// Sets `<ns>:__dq_workers__:<worker_id>` to the record's JSON with `PX ttl`, and indexes it
    /// in the sorted set `<ns>:__dq_workers__`; Dramatiq reads neither.
    async fn publish_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), BrokerError> {
        self.inner.publish_worker(info, ttl).await
    }

    async fn withdraw_worker(&self, worker_id: &str) -> Result<(), BrokerError> {
        self.inner.withdraw_worker(worker_id).await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, BrokerError> {
        self.inner.workers().await
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.inner
            .lanes
            .query::<()>(self.inner.lanes.pick(), &redis::cmd("PING"))
            .await
            .map_err(|e| broker_error(e, "ping"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_in_the_environment_is_an_invalid_url_naming_the_variable() {
        let env = dq_redis_conn::RedisEnv::read_from(|var| {
            (var == URL_ENV).then(|| "redis://:hunter2@".to_owned())
        });
        let e = env_error(env.unwrap_err());
        assert!(matches!(e, RedisBrokerError::InvalidUrl { .. }), "{e:?}");
        assert_eq!(e.kind(), BrokerErrorKind::Rejected);
        let text = e.to_string();
        assert!(text.contains("(from DQ_REDIS_URL)"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn max_priority_from_the_environment() {
        let read = |v: Option<&str>| {
            let v = v.map(str::to_owned);
            max_priority_from_env(move |name| {
                assert_eq!(name, "DQ_MAX_PRIORITY");
                v.clone()
            })
        };
        assert_eq!(read(None).unwrap(), None);
        assert_eq!(read(Some("")).unwrap(), None);
        assert_eq!(read(Some(" 10 ")).unwrap(), Some(10));
        assert_eq!(read(Some("255")).unwrap(), Some(255));
        for bad in ["0", "256", "-1", "high"] {
            let e = read(Some(bad)).unwrap_err();
            assert!(matches!(e, RedisBrokerError::InvalidConfig(_)), "{e:?}");
            assert!(e.to_string().contains("DQ_MAX_PRIORITY"), "{e}");
        }
    }
}
