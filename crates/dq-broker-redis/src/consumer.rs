//! Consumers of one physical queue, and their ackers.
//!
//! A fetch moves ids from the queue into this broker's ack set in one script call; the worker
//! settles them through the [`Acker`], whose calls go to one flusher task per consumer that
//! settles everything pending in a single script call. An ack returns only once Redis has
//! applied it; until then the id stays in the ack set, so if this process dies the message is
//! recovered by another worker's maintenance rather than lost.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use dq_core::{compute_backoff, Acker, BrokerError, BrokerErrorKind, Consumer, Delivery, Token};
use redis::Value;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use crate::broker::Inner;
use crate::error::{broker_error, unexpected_reply};

/// The dispatch script's `fetch` reply, read: `[id, body, id, body, ..]` (nil when the queue is
/// empty). A body that is not a string is an entry whose message is gone (an orphan).
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    /// Ids with their message bodies, in the order the script gave them.
    pub(crate) entries: Vec<(String, Vec<u8>)>,
    /// Ids without a body.
    pub(crate) orphans: Vec<String>,
}

/// Reads a `fetch` reply; `None` when it is not the shape the script returns. An odd last id
/// (no body after it) is ignored.
pub(crate) fn read_fetch_reply(reply: Value) -> Option<Fetched> {
    let items = match reply {
        Value::Array(items) => items,
        Value::Nil => Vec::new(),
        _ => return None,
    };
    let mut fetched = Fetched {
        entries: Vec::with_capacity(items.len() / 2),
        orphans: Vec::new(),
    };
    let mut items = items.into_iter();
    while let (Some(id), Some(body)) = (items.next(), items.next()) {
        let id = match id {
            Value::BulkString(b) => String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            Value::SimpleString(s) => s,
            _ => return None,
        };
        match body {
            Value::BulkString(body) => fetched.entries.push((id, body)),
            _ => fetched.orphans.push(id),
        }
    }
    Some(fetched)
}

/// How often a consumer with broker priority looks at the head of its list for messages that
/// carry a priority but were pushed there (by a Python producer, or dq without `max_priority`),
/// and how far it looks: at most one script call a second, a bounded amount of work in Redis.
const PROMOTE_EVERY: Duration = Duration::from_secs(1);
const PROMOTE_SCAN: usize = 1_000;

/// Dramatiq's idle poll: `compute_backoff(misses, factor=5, max_backoff=1000)`.
const POLL_FACTOR_MS: u64 = 5;
const POLL_MAX_MS: u64 = 1_000;

/// What the consumers of one physical queue in this broker share. Fetches hold `gate` for
/// reading while ids move from Redis into a consumer's `held` set; reconciling holds it for
/// writing, so it never mistakes an id in flight between the two for a stray.
#[derive(Default)]
pub(crate) struct QueueState {
    gate: tokio::sync::RwLock<()>,
    consumers: Mutex<Vec<Weak<Shared>>>,
}

impl QueueState {
    /// Whether a consumer of this queue is open in this broker.
    pub(crate) fn has_consumers(&self) -> bool {
        self.consumers
            .lock()
            .expect("queue state lock")
            .iter()
            .any(|w| w.strong_count() > 0)
    }
}

/// The part of a consumer its acker shares.
struct Shared {
    queue: String,
    /// The consumer's prefetch: also how many finished deliveries at most may wait for their
    /// settle call with their room freed.
    prefetch: usize,
    held: Mutex<Held>,
    /// Signalled when settled deliveries free prefetch room.
    settled: Notify,
    requests: mpsc::UnboundedSender<Request>,
}

#[derive(Default)]
struct Held {
    /// Handed out and not settled, each with whether its room is free already (see `free`).
    delivered: HashMap<String, bool>,
    /// Ids fetched whose body was missing. Dramatiq keeps such ids in its ack set too; we give
    /// them back (if a body has appeared) when the consumer closes.
    orphans: HashSet<String>,
    /// Of `delivered`, how many no longer count against the prefetch: the worker has finished
    /// with them ([`Acker::finished`]) or their settle call is on its way. Their messages are
    /// done; only the ack is still to reach Redis, so a busy worker fetches its next batch
    /// without sitting out the settle path and the settle's round trip.
    free: usize,
}

impl Held {
    /// Stops counting the delivered ones of `ids` against the prefetch, while fewer than
    /// `most` are free; returns how many it freed.
    fn free_up<'a>(&mut self, ids: impl IntoIterator<Item = &'a String>, most: usize) -> usize {
        let mut freed = 0;
        for id in ids {
            if self.free >= most {
                break;
            }
            if let Some(free) = self.delivered.get_mut(id) {
                if !*free {
                    *free = true;
                    self.free += 1;
                    freed += 1;
                }
            }
        }
        freed
    }
}

enum Op {
    Ack(Vec<String>),
    Nack(String),
    Requeue(Vec<String>),
    Close,
}

struct Request {
    op: Op,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

pub(crate) struct RedisConsumer {
    inner: Arc<Inner>,
    shared: Arc<Shared>,
    state: Arc<QueueState>,
    lane: usize,
    prefetch: usize,
    misses: u32,
    /// When an idle consumer polls next, unless woken earlier. It outlives a `fetch` call, so
    /// idle Redis traffic follows Dramatiq's backoff however short the caller's timeouts are.
    next_poll: Option<Instant>,
    wake: Arc<Notify>,
    /// Set when a fetch may have moved ids into the ack set without us seeing the reply, and
    /// at start for ids an earlier consumer of this broker left behind.
    must_reconcile: bool,
    flusher: Option<tokio::task::JoinHandle<()>>,
    /// When this consumer last promoted prioritized messages from its list; `None` before the
    /// first fetch, and always on a queue without broker priority.
    promoted_at: Option<Instant>,
}

impl RedisConsumer {
    pub(crate) fn new(inner: Arc<Inner>, queue: &str, prefetch: usize) -> RedisConsumer {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: queue.to_owned(),
            prefetch,
            held: Mutex::new(Held::default()),
            settled: Notify::new(),
            requests: tx,
        });
        let state = inner.queue_state(queue);
        {
            let mut consumers = state.consumers.lock().expect("queue state lock");
            consumers.retain(|w| w.strong_count() > 0);
            consumers.push(Arc::downgrade(&shared));
        }
        let lane = inner.lanes.pick();
        let wake = inner.notifier.watch(inner.notify_channel(queue));
        inner.active_consumers.fetch_add(1, Ordering::Relaxed);
        let flusher = tokio::spawn(flush(inner.clone(), Arc::downgrade(&shared), rx, lane));
        RedisConsumer {
            inner,
            shared,
            state,
            lane,
            prefetch,
            misses: 0,
            next_poll: None,
            wake,
            must_reconcile: true,
            flusher: Some(flusher),
            promoted_at: None,
        }
    }

    /// The least room worth a fetch. A busy consumer that fetched whenever one slot came free
    /// would pay a script call per message or two; waiting for half the prefetch (at most 64)
    /// makes each call carry several, while the half still held keeps the worker's threads fed.
    fn low_water(&self) -> usize {
        (self.prefetch / 2).clamp(1, 64)
    }

    fn room(&self) -> usize {
        let held = self.shared.held.lock().expect("held lock");
        self.prefetch
            .saturating_sub(held.delivered.len().saturating_sub(held.free))
    }

    /// Gives back ids in our ack set that no consumer of this broker holds: left by a fetch
    /// whose reply was lost, or by a consumer dropped without `close`.
    async fn reconcile(&mut self) -> Result<(), BrokerError> {
        let queue = &self.shared.queue;
        let _exclusive = self.state.gate.write().await;
        let mut members = redis::cmd("SMEMBERS");
        members.arg(self.inner.acks_key(queue));
        let members: Vec<String> = self
            .inner
            .lanes
            .query(self.lane, &members)
            .await
            .map_err(|e| broker_error(e, format!("reconcile {queue}")))?;
        if members.is_empty() {
            return Ok(());
        }
        let mut stray: HashSet<String> = members.into_iter().collect();
        let consumers: Vec<Arc<Shared>> = self
            .state
            .consumers
            .lock()
            .expect("queue state lock")
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for c in consumers {
            let held = c.held.lock().expect("held lock");
            for id in held.delivered.keys().chain(&held.orphans) {
                stray.remove(id);
            }
        }
        if stray.is_empty() {
            return Ok(());
        }
        let stray: Vec<String> = stray.into_iter().collect();
        tracing::info!(
            queue = %queue,
            count = stray.len(),
            "requeueing messages this worker fetched but never handed out"
        );
        self.inner
            .settle(self.lane, queue, &[], &[], &stray)
            .await
            .map_err(|e| broker_error(e, format!("requeue strays of {queue}")))
    }

    /// Moves the prioritized messages among the first [`PROMOTE_SCAN`] of the list into the
    /// priority zset, at most every [`PROMOTE_EVERY`], so that their priority counts across the
    /// queue whoever sent them.
    async fn promote(&mut self) -> Result<(), BrokerError> {
        let queue = self.shared.queue.as_str();
        if self.inner.max_priority == 0 || queue.ends_with(".DQ") {
            return Ok(());
        }
        if self
            .promoted_at
            .is_some_and(|at| at.elapsed() < PROMOTE_EVERY)
        {
            return Ok(());
        }
        let mut cmd = self.inner.script_cmd("promote", queue);
        cmd.arg(PROMOTE_SCAN);
        let reply = self
            .inner
            .eval(self.lane, &cmd)
            .await
            .map_err(|e| broker_error(e, format!("promote prioritized messages of {queue}")))?;
        self.promoted_at = Some(Instant::now());
        if let Value::Int(n) = reply {
            if n > 0 {
                tracing::debug!(queue = %queue, count = n, "prioritized messages moved off the list");
            }
        }
        Ok(())
    }

    async fn fetch_once(&mut self, n: usize) -> Result<Vec<Delivery>, BrokerError> {
        self.promote().await?;
        let queue = self.shared.queue.as_str();
        let _fetching = self.state.gate.read().await;
        let mut cmd = self.inner.script_cmd("fetch", queue);
        cmd.arg(n.min(self.inner.max_unpack));
        let reply = match self.inner.eval(self.lane, &cmd).await {
            Ok(v) => v,
            Err(e) => {
                // The script may have run and its reply been lost: its ids would sit in our
                // ack set with nobody holding them.
                self.must_reconcile = true;
                return Err(broker_error(e, format!("fetch from {queue}")));
            }
        };
        let fetched = read_fetch_reply(reply).ok_or_else(|| unexpected_reply("fetch"))?;
        let mut out = Vec::with_capacity(fetched.entries.len());
        let mut held = self.shared.held.lock().expect("held lock");
        for (id, body) in fetched.entries {
            held.delivered.insert(id.clone(), false);
            out.push(Delivery {
                token: Token::Id(id),
                body,
                redelivered: false,
            });
        }
        for id in fetched.orphans {
            tracing::warn!(
                queue = %queue,
                id = %id,
                "queue entry without a message body; skipping it"
            );
            held.orphans.insert(id);
        }
        Ok(out)
    }

    fn idle_pause(&mut self) -> Duration {
        let ms = compute_backoff(self.misses, POLL_FACTOR_MS, POLL_MAX_MS);
        self.misses = self.misses.saturating_add(1).min(32);
        Duration::from_millis(ms.max(1))
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    fn queue(&self) -> &str {
        &self.shared.queue
    }

    async fn fetch(&mut self, timeout: Duration) -> Result<Vec<Delivery>, BrokerError> {
        if self.flusher.is_none() {
            return Err(BrokerError::new(
                BrokerErrorKind::Closed,
                "consumer is closed",
            ));
        }
        let deadline = Instant::now() + timeout;
        if self.must_reconcile {
            self.reconcile().await?;
            self.must_reconcile = false;
        }
        loop {
            let room = self.room();
            if room < self.low_water() {
                let settled = self.shared.settled.notified();
                tokio::pin!(settled);
                settled.as_mut().enable();
                if self.room() >= self.low_water() {
                    continue;
                }
                tokio::select! {
                    _ = settled => continue,
                    _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                }
            }
            if let Some(at) = self.next_poll {
                if Instant::now() < at {
                    let until = at.min(deadline);
                    tokio::select! {
                        // A permit stored while we were busy ends this wait at once.
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(until) => {
                            if until < at {
                                return Ok(Vec::new());
                            }
                        }
                    }
                }
            }
            let got = self.fetch_once(room).await?;
            if !got.is_empty() {
                self.misses = 0;
                self.next_poll = None;
                return Ok(got);
            }
            let now = Instant::now();
            self.next_poll = Some(now + self.idle_pause());
            if now >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        Arc::new(RedisAcker {
            shared: self.shared.clone(),
        })
    }

    async fn close(mut self: Box<Self>) -> Result<(), BrokerError> {
        let Some(flusher) = self.flusher.take() else {
            return Ok(());
        };
        // The flusher may be stuck retrying acks while Redis is away; closing must still end.
        // What it never settled stays in our ack set and is recovered by other workers once
        // this broker's heartbeat stops, so giving up here loses nothing.
        let result =
            match tokio::time::timeout(self.inner.close_timeout, submit(&self.shared, Op::Close))
                .await
            {
                Ok(result) => result,
                Err(_) => {
                    flusher.abort();
                    Err(BrokerError::new(
                        BrokerErrorKind::Timeout,
                        format!(
                        "closing the consumer of {}: redis is unreachable; its unsettled messages \
                         will be recovered after the heartbeat timeout",
                        self.shared.queue
                    ),
                    ))
                }
            };
        let _ = flusher.await;
        let me = Arc::as_ptr(&self.shared);
        self.state
            .consumers
            .lock()
            .expect("queue state lock")
            .retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), me));
        result
    }
}

/// Settles deliveries of one [`RedisConsumer`].
struct RedisAcker {
    shared: Arc<Shared>,
}

fn ids(tokens: &[Token]) -> Result<Vec<String>, BrokerError> {
    tokens
        .iter()
        .map(|t| match t {
            Token::Id(id) => Ok(id.clone()),
            Token::Tag(_) => Err(BrokerError::new(
                BrokerErrorKind::Rejected,
                "a redis consumer settles deliveries by id, not by tag",
            )),
        })
        .collect()
}

async fn submit(shared: &Shared, op: Op) -> Result<(), BrokerError> {
    let (done, reply) = oneshot::channel();
    let closed = || {
        BrokerError::new(
            BrokerErrorKind::Closed,
            format!("consumer of {} is closed", shared.queue),
        )
    };
    shared
        .requests
        .send(Request { op, done })
        .map_err(|_| closed())?;
    reply.await.map_err(|_| closed())?
}

#[async_trait]
impl Acker for RedisAcker {
    async fn ack(&self, tokens: &[Token]) -> Result<(), BrokerError> {
        if tokens.is_empty() {
            return Ok(());
        }
        submit(&self.shared, Op::Ack(ids(tokens)?)).await
    }

    async fn nack(&self, token: &Token, reason: &str) -> Result<(), BrokerError> {
        let mut id = ids(std::slice::from_ref(token))?;
        tracing::debug!(queue = %self.shared.queue, reason, "dead-lettering message");
        submit(&self.shared, Op::Nack(id.remove(0))).await
    }

    async fn requeue(&self, tokens: &[Token]) -> Result<(), BrokerError> {
        if tokens.is_empty() {
            return Ok(());
        }
        submit(&self.shared, Op::Requeue(ids(tokens)?)).await
    }

    /// Frees the deliveries' prefetch room at once, up to the prefetch's worth of finished
    /// deliveries waiting for their settle call, so a fetch need not wait for the settle path.
    fn finished(&self, tokens: &[Token]) {
        let ids = tokens.iter().filter_map(|t| match t {
            Token::Id(id) => Some(id),
            Token::Tag(_) => None,
        });
        let freed = self
            .shared
            .held
            .lock()
            .expect("held lock")
            .free_up(ids, self.shared.prefetch);
        if freed > 0 {
            self.shared.settled.notify_waiters();
        }
    }
}

/// Requests taken per settle call at most.
const MAX_PENDING: usize = 4_096;

/// Applies settle requests, batching all that are pending into one script call. It holds the
/// consumer's shared state weakly: once the consumer and its ackers are gone the channel closes
/// and the task ends.
async fn flush(
    inner: Arc<Inner>,
    shared: Weak<Shared>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    lane: usize,
) {
    let _alive = Alive(inner.clone());
    let mut batch: Vec<Request> = Vec::new();
    while let Some(first) = requests.recv().await {
        batch.push(first);
        while batch.len() < MAX_PENDING {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (mut acks, mut nacks, mut requeues) = (Vec::new(), Vec::new(), Vec::new());
        let mut closing = false;
        for r in &mut batch {
            match &mut r.op {
                Op::Ack(ids) => acks.append(ids),
                Op::Nack(id) => nacks.push(std::mem::take(id)),
                Op::Requeue(ids) => requeues.append(ids),
                Op::Close => closing = true,
            }
        }
        if closing {
            // Whatever is still held once the acks before the close are in is given back.
            let held = shared.held.lock().expect("held lock");
            let settling: HashSet<&String> = acks.iter().chain(&nacks).chain(&requeues).collect();
            let give_back: Vec<String> = held
                .delivered
                .keys()
                .chain(&held.orphans)
                .filter(|id| !settling.contains(id))
                .cloned()
                .collect();
            drop(held);
            requeues.extend(give_back);
        }
        // Room whose settle call is on its way is free, however many that is.
        let freed = shared
            .held
            .lock()
            .expect("held lock")
            .free_up(acks.iter().chain(&nacks).chain(&requeues), usize::MAX);
        if freed > 0 {
            shared.settled.notify_waiters();
        }
        let result = apply(&inner, &shared, lane, &acks, &nacks, &requeues, closing).await;
        let mut held = shared.held.lock().expect("held lock");
        let ok = result.is_ok();
        for id in acks.iter().chain(&nacks).chain(&requeues) {
            let was_free = if ok {
                held.orphans.remove(id);
                held.delivered.remove(id)
            } else {
                // Still held after all: the room freed early is taken back.
                held.delivered.get_mut(id).map(std::mem::take)
            };
            if was_free == Some(true) {
                held.free -= 1;
            }
        }
        drop(held);
        for r in batch.drain(..) {
            let _ = r.done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(BrokerError::new(e.kind(), e.to_string())),
            });
        }
        if closing {
            return;
        }
    }
}

/// Counts a consumer as alive for the heartbeat while its flusher runs, however the flusher
/// ends (the consumer closed, everything dropped, or the task aborted).
struct Alive(Arc<Inner>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.active_consumers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One settle, retried through connection failures: an ack is reported done only once Redis
/// has it, and never dropped because Redis was briefly away. Retrying is safe because the
/// script only touches ids still in our ack set.
async fn apply(
    inner: &Inner,
    shared: &Shared,
    lane: usize,
    acks: &[String],
    nacks: &[String],
    requeues: &[String],
    closing: bool,
) -> Result<(), BrokerError> {
    let queue = &shared.queue;
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        match inner.settle(lane, queue, acks, nacks, requeues).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                let err = broker_error(e, format!("settle messages of {queue}"));
                let give_up =
                    !err.is_transient() || (closing && started.elapsed() >= inner.close_timeout);
                if give_up {
                    tracing::error!(queue = %queue, error = %dq_core::ErrorChain(&err), "could not settle messages");
                    return Err(err);
                }
                if attempt == 0 {
                    // The worker logs the outage once; this is a detail of it.
                    tracing::debug!(queue = %queue, error = %dq_core::ErrorChain(&err), "redis unavailable; retrying acks");
                }
                let pause = (50u64 << attempt.min(6)).min(2_000);
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
}
