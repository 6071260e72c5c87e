//! `StubBroker`: the in-memory broker and its `join`.

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use dq_core::{
    async_trait, base_queue_name, is_valid_queue_name, Broker, BrokerError, Consumer, DeadLetter,
    Message, QueueStats, ReleaseOutcome, ScheduleState, SendOutcome, TickClaim, TickOutcome,
    UniqueLock, UniqueMode, WorkerInfo,
};
use tokio::time::Instant;

use crate::consumer::StubConsumer;
use crate::error::{Error, JoinError, Result};
use crate::state::{parse_physical, Shared};

/// An in-memory broker with Dramatiq's queue layout: `q`, its delay queue `q.DQ` and its dead
/// letters `q.XQ`, with delivery semantics of a real broker (prefetch, ack, nack, requeue,
/// redelivery on close).
///
/// Cheap to clone: clones share one broker. Queues are declared by [`Broker::declare_queue`] or,
/// unlike Dramatiq's `StubBroker` which raises `QueueNotFound`, on their first enqueue or consume,
/// so a test needs no setup. Like the real brokers, it schedules nothing: a message enqueued with
/// an `eta` sits on `q.DQ` until a worker's delay-queue consumer fetches it.
///
/// ```
/// use std::time::Duration;
/// use dq_broker_stub::StubBroker;
/// use dq_core::Broker;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let broker = StubBroker::new();
/// broker.enqueue_raw("default", br#"{"not":"a message"}"#.to_vec())?;
/// let mut consumer = broker.consume("default", 1).await?;
/// let got = consumer.fetch(Duration::from_secs(1)).await?;
/// consumer.acker().nack(&got[0].token, "undecodable").await?;
/// let dead = broker.dead_letters("default", 10).await?;
/// assert_eq!(dead[0].reason.as_deref(), Some("undecodable"));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct StubBroker {
    shared: Arc<Shared>,
}

/// How [`StubBroker::join_with`] waits.
///
/// ```
/// use std::time::Duration;
/// use dq_broker_stub::JoinOptions;
///
/// // Wait at most 5 s, and do not fail on dead letters.
/// let opts = JoinOptions::default().fail_fast(false).timeout(Duration::from_secs(5));
/// # let _ = opts;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct JoinOptions {
    fail_fast: bool,
    timeout: Option<Duration>,
}

impl Default for JoinOptions {
    /// `fail_fast` on, as in Dramatiq 2.x, and no timeout.
    fn default() -> JoinOptions {
        JoinOptions {
            fail_fast: true,
            timeout: None,
        }
    }
}

impl JoinOptions {
    /// Whether to return [`JoinError::DeadLetters`] as soon as the queue has a dead letter no
    /// earlier join reported (default true).
    pub fn fail_fast(self, fail_fast: bool) -> JoinOptions {
        JoinOptions { fail_fast, ..self }
    }

    /// How long to wait before [`JoinError::Timeout`] (default: forever).
    pub fn timeout(self, timeout: impl Into<Option<Duration>>) -> JoinOptions {
        JoinOptions {
            timeout: timeout.into(),
            ..self
        }
    }
}

impl fmt::Debug for StubBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StubBroker")
            .field("queues", &self.queues())
            .finish()
    }
}

fn canonical(queue: &str) -> Result<&str> {
    let name = base_queue_name(queue);
    if is_valid_queue_name(name) {
        Ok(name)
    } else {
        Err(Error::InvalidQueueName(queue.to_owned()))
    }
}

impl StubBroker {
    /// A new, empty broker.
    pub fn new() -> StubBroker {
        StubBroker::default()
    }

    /// A new, empty broker that orders ready messages by their `broker_priority` option, as
    /// the Redis broker with [`max_priority`] does: higher first (values above `max_priority`
    /// count as `max_priority`), FIFO within a level, messages without one (or 0) after every
    /// prioritized one. A message given back unprocessed goes to the head of its level. `0`
    /// orders by none, like [`StubBroker::new`].
    ///
    /// [`max_priority`]: https://docs.rs/dq-broker-redis/latest/dq_broker_redis/struct.RedisBrokerBuilder.html#method.max_priority
    ///
    /// ```
    /// use std::time::Duration;
    /// use dq_broker_stub::StubBroker;
    /// use dq_core::{Broker, Message, SendOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let broker = StubBroker::with_max_priority(10);
    /// for p in [0, 3, 7] {
    ///     let mut m = Message::new("default", "work", &(p,), &())?;
    ///     SendOptions::default().broker_priority(p).apply_to_message(&mut m);
    ///     broker.enqueue(&mut m).await?;
    /// }
    /// assert_eq!(broker.stats("default").await?.prioritized, 2);
    /// let mut consumer = broker.consume("default", 10).await?;
    /// let got = consumer.fetch(Duration::from_secs(1)).await?;
    /// let order: Vec<u8> = got
    ///     .iter()
    ///     .map(|d| Message::decode(&d.body).unwrap().options.broker_priority().unwrap_or(0))
    ///     .collect();
    /// assert_eq!(order, [7, 3, 0]);
    /// # Ok(()) }
    /// ```
    pub fn with_max_priority(max_priority: u8) -> StubBroker {
        let broker = StubBroker::default();
        broker.shared.lock().max_priority = max_priority;
        broker
    }

    /// The highest broker priority this broker orders by, or `None` ([`with_max_priority`]).
    ///
    /// [`with_max_priority`]: StubBroker::with_max_priority
    ///
    /// ```
    /// assert_eq!(dq_broker_stub::StubBroker::with_max_priority(5).max_priority(), Some(5));
    /// assert_eq!(dq_broker_stub::StubBroker::new().max_priority(), None);
    /// ```
    pub fn max_priority(&self) -> Option<u8> {
        let p = self.shared.lock().max_priority;
        (p > 0).then_some(p)
    }

    /// Puts raw `body` at the tail of physical queue `queue` (`q` or `q.DQ`), bypassing
    /// [`Message`]: for tests that feed what a broken or foreign producer might send.
    ///
    /// ```
    /// # let broker = dq_broker_stub::StubBroker::new();
    /// broker.enqueue_raw("default", b"{not json".to_vec()).unwrap();
    /// ```
    pub fn enqueue_raw(&self, queue: &str, body: impl Into<Vec<u8>>) -> Result<()> {
        let (name, side) = parse_physical(queue)?;
        let mut st = self.shared.lock();
        let i = st.declare(name);
        st.push(i, side, body.into());
        st.queue(i).notify(side).notify_waiters();
        Ok(())
    }

    /// The declared canonical queues, sorted by name.
    pub fn queues(&self) -> Vec<String> {
        self.shared.lock().names()
    }

    /// The messages dead-lettered from canonical queue `queue`, oldest first, with the reason
    /// each was dead-lettered for: Dramatiq's `dead_letters_by_queue`, without a trait import.
    ///
    /// ```
    /// let broker = dq_broker_stub::StubBroker::new();
    /// assert!(broker.dead_letters_by_queue("default").is_empty());
    /// ```
    pub fn dead_letters_by_queue(&self, queue: &str) -> Vec<DeadLetter> {
        let st = self.shared.lock();
        st.find(base_queue_name(queue))
            .map(|i| st.queue(i).dead_letters(usize::MAX))
            .unwrap_or_default()
    }

    /// Empties every queue, delay queue and dead-letter queue, and forgets unsettled deliveries
    /// (settling one later does nothing). Queues stay declared and consumers stay open.
    pub fn flush_all(&self) {
        self.shared.lock().flush_all();
    }

    /// Waits until canonical queue `queue` and its delay queue are empty and every delivery from
    /// them is settled, with `fail_fast` on and at most `timeout` (forever if `None`).
    ///
    /// See [`join_with`](StubBroker::join_with).
    pub async fn join(&self, queue: &str, timeout: Option<Duration>) -> Result<(), JoinError> {
        self.join_with(queue, JoinOptions::default().timeout(timeout))
            .await
    }

    /// Waits until canonical queue `queue` (`.DQ` / `.XQ` suffixes are stripped) and its delay
    /// queue are empty and every delivery from them is acked, nacked or requeued.
    ///
    /// A message moving from the delay queue to the queue, or being retried, keeps the queue busy
    /// throughout as long as the worker enqueues before it acks, which is what dq's worker does.
    ///
    /// With `fail_fast` it returns [`JoinError::DeadLetters`] as soon as the queue holds dead
    /// letters no earlier join has accounted for, even if work remains. Every join that returns
    /// `Ok` or that error accounts for all of the queue's dead letters so far, so a dead letter
    /// fails at most one join, and one a test expected (joined with `fail_fast(false)`) does not
    /// fail the next. [`Broker::flush`] forgets them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dq_broker_stub::{JoinError, JoinOptions, StubBroker};
    /// use dq_core::Broker;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let broker = StubBroker::new();
    /// broker.enqueue_raw("default", b"{}".to_vec())?;
    /// let opts = JoinOptions::default().timeout(Duration::from_millis(10));
    /// // Nobody consumes, so the join gives up.
    /// assert!(matches!(
    ///     broker.join_with("default", opts).await,
    ///     Err(JoinError::Timeout { ready: 1, .. })
    /// ));
    /// # Ok(()) }
    /// ```
    pub async fn join_with(&self, queue: &str, opts: JoinOptions) -> Result<(), JoinError> {
        let name = base_queue_name(queue);
        let (i, changed) = {
            let st = self.shared.lock();
            let i = st.find(name).ok_or_else(|| JoinError::QueueNotFound {
                queue: name.to_owned(),
            })?;
            (i, st.queue(i).changed().clone())
        };
        let deadline = opts.timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            // Registered before looking, so a change between the look and the wait still wakes us.
            let mut notified = pin!(changed.notified());
            notified.as_mut().enable();
            let timed_out = {
                let mut st = self.shared.lock();
                let q = st.queue_mut(i);
                if opts.fail_fast {
                    if let Some(dead_letters) = q.take_unaccounted() {
                        return Err(JoinError::DeadLetters {
                            queue: name.to_owned(),
                            dead_letters,
                        });
                    }
                }
                if q.is_idle() {
                    q.account_all();
                    return Ok(());
                }
                match deadline {
                    Some(d) if Instant::now() >= d => {
                        let (ready, delayed, unsettled) = q.counts();
                        Some(JoinError::Timeout {
                            queue: name.to_owned(),
                            ready,
                            delayed,
                            unsettled,
                        })
                    }
                    _ => None,
                }
            };
            if let Some(e) = timed_out {
                return Err(e);
            }
            match deadline {
                // On timeout, loop once more: the last look decides, so work finished at the
                // deadline still counts as done.
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, notified).await;
                }
                None => notified.await,
            }
        }
    }
}

#[async_trait]
impl Broker for StubBroker {
    fn kind(&self) -> &'static str {
        "stub"
    }

    async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError> {
        let name = canonical(queue).map_err(|e| e.into_broker("declare queue"))?;
        self.shared.lock().declare(name);
        Ok(())
    }

    async fn enqueue(&self, message: &mut Message) -> Result<(), BrokerError> {
        let (name, side) =
            parse_physical(&message.queue_name).map_err(|e| e.into_broker("enqueue"))?;
        // Encode before locking, so producers on other threads are not held up by it.
        let body = message.encode();
        let mut st = self.shared.lock();
        let i = st.declare(name);
        st.push(i, side, body);
        st.queue(i).notify(side).notify_waiters();
        Ok(())
    }

    async fn enqueue_many(&self, messages: &mut [Message]) -> Result<(), BrokerError> {
        // All or nothing: check every name before anything is enqueued.
        let mut parsed = Vec::with_capacity(messages.len());
        for m in messages.iter() {
            let (name, side) =
                parse_physical(&m.queue_name).map_err(|e| e.into_broker("enqueue"))?;
            parsed.push((name, side, m.encode()));
        }
        let mut st = self.shared.lock();
        for (name, side, body) in parsed {
            let i = st.declare(name);
            st.push(i, side, body);
            st.queue(i).notify(side).notify_waiters();
        }
        Ok(())
    }

    async fn consume(
        &self,
        queue: &str,
        prefetch: usize,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        let (name, side) = parse_physical(queue).map_err(|e| e.into_broker("consume"))?;
        if prefetch == 0 {
            return Err(Error::ZeroPrefetch(queue.to_owned()).into_broker("consume"));
        }
        let (i, c, notify) = {
            let mut st = self.shared.lock();
            let i = st.declare(name);
            let c = st.add_consumer(i, side, prefetch);
            (i, c, st.queue(i).notify(side).clone())
        };
        Ok(Box::new(StubConsumer::new(
            self.shared.clone(),
            queue,
            i,
            c,
            notify,
        )))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let st = self.shared.lock();
        Ok(st
            .find(base_queue_name(queue))
            .map(|i| st.queue(i).stats())
            .unwrap_or_default())
    }

    async fn flush(&self, queue: &str) -> Result<(), BrokerError> {
        let mut st = self.shared.lock();
        if let Some(i) = st.find(base_queue_name(queue)) {
            st.flush(i);
        }
        Ok(())
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        let st = self.shared.lock();
        Ok(st
            .find(base_queue_name(queue))
            .map(|i| st.queue(i).dead_letters(limit))
            .unwrap_or_default())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn browse(
        &self,
        queue: &str,
        state: dq_core::MessageState,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<dq_core::BrowsedMessage>, BrokerError> {
        let st = self.shared.lock();
        Ok(st
            .find(base_queue_name(queue))
            .map(|i| st.queue(i).browse(state, offset, limit))
            .unwrap_or_default())
    }

    async fn list_queues(&self) -> Result<Vec<String>, BrokerError> {
        Ok(self.queues())
    }

    /// Keeps the record in memory until `ttl` passes (on Tokio's clock, so a test with paused
    /// time can let it expire).
    async fn publish_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), BrokerError> {
        self.shared
            .lock()
            .publish_worker(info.clone(), Instant::now() + ttl);
        Ok(())
    }

    async fn withdraw_worker(&self, worker_id: &str) -> Result<(), BrokerError> {
        self.shared.lock().withdraw_worker(worker_id);
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, BrokerError> {
        Ok(self.shared.lock().workers(Instant::now()))
    }

    async fn enqueue_tick(
        &self,
        claim: &TickClaim<'_>,
        message: &mut Message,
    ) -> Result<TickOutcome, BrokerError> {
        let (name, side) =
            parse_physical(&message.queue_name).map_err(|e| e.into_broker("enqueue"))?;
        let body = message.encode();
        let now = dq_core::now_ms();
        let mut st = self.shared.lock();
        let schedule = st.schedules.entry(claim.schedule.to_owned()).or_default();
        if schedule.tick_ms >= claim.tick_ms {
            return Ok(TickOutcome::Taken);
        }
        schedule.tick_ms = claim.tick_ms;
        if claim.no_overlap {
            if let Some((id, until)) = &schedule.busy {
                if *until > now {
                    return Ok(TickOutcome::Busy(id.clone()));
                }
            }
        }
        schedule.state = claim.state.clone();
        schedule.busy = claim.no_overlap.then(|| {
            let ttl = i64::try_from(claim.busy_ttl_ms).unwrap_or(i64::MAX);
            (message.message_id.clone(), now.saturating_add(ttl))
        });
        let i = st.declare(name);
        st.push(i, side, body);
        st.queue(i).notify(side).notify_waiters();
        Ok(TickOutcome::Enqueued)
    }

    async fn release_tick(&self, schedule: &str, message_id: &str) -> Result<(), BrokerError> {
        let mut st = self.shared.lock();
        if let Some(s) = st.schedules.get_mut(schedule) {
            if s.busy.as_ref().is_some_and(|(id, _)| id == message_id) {
                s.busy = None;
            }
        }
        Ok(())
    }

    /// The lock and the enqueue under the broker's one mutex, so concurrent sends of a key
    /// enqueue one message, as on Redis. Locks expire on Tokio's clock.
    async fn enqueue_unique(
        &self,
        lock: &UniqueLock,
        message: &mut Message,
    ) -> Result<SendOutcome, BrokerError> {
        let (name, side) =
            parse_physical(&message.queue_name).map_err(|e| e.into_broker("enqueue"))?;
        let body = message.encode();
        let now = Instant::now();
        let mut st = self.shared.lock();
        let slot = (name.to_owned(), lock.key.clone());
        let holder = st
            .unique
            .get(&slot)
            .filter(|(_, until)| *until > now)
            .map(|(id, _)| id.clone());
        let outcome = match holder {
            Some(holder) if lock.mode != UniqueMode::Debounce || holder == message.message_id => {
                return Ok(SendOutcome::Duplicate { holder });
            }
            Some(previous) => {
                // Remembered as long as the replaced message's own lock would have lived, or
                // this one's, whichever is longer: it is skipped when it comes up.
                let until = st.unique[&slot].1.max(now + lock.ttl);
                st.replaced.retain(|_, (_, u)| *u > now);
                st.replaced.insert(
                    (name.to_owned(), previous.clone()),
                    (message.message_id.clone(), until),
                );
                SendOutcome::Replaced { previous }
            }
            None => SendOutcome::Enqueued,
        };
        st.unique
            .insert(slot, (message.message_id.clone(), now + lock.ttl));
        let i = st.declare(name);
        st.push(i, side, body);
        st.queue(i).notify(side).notify_waiters();
        Ok(outcome)
    }

    async fn release_unique(
        &self,
        queue: &str,
        key: &str,
        message_id: &str,
    ) -> Result<ReleaseOutcome, BrokerError> {
        let now = Instant::now();
        let mut st = self.shared.lock();
        let slot = (base_queue_name(queue).to_owned(), key.to_owned());
        let mark = (slot.0.clone(), message_id.to_owned());
        if let Some((newer, until)) = st.replaced.get(&mark) {
            if *until > now {
                return Ok(ReleaseOutcome::Replaced(newer.clone()));
            }
        }
        Ok(match st.unique.get(&slot) {
            Some((_, until)) if *until <= now => {
                st.unique.remove(&slot);
                ReleaseOutcome::Absent
            }
            Some((id, _)) if id == message_id => {
                st.unique.remove(&slot);
                ReleaseOutcome::Released
            }
            Some((id, _)) => ReleaseOutcome::HeldBy(id.clone()),
            None => ReleaseOutcome::Absent,
        })
    }

    async fn unique_locks(&self, queue: &str) -> Result<u64, BrokerError> {
        let now = Instant::now();
        let mut st = self.shared.lock();
        st.unique.retain(|_, (_, until)| *until > now);
        let q = base_queue_name(queue);
        Ok(st.unique.keys().filter(|(name, _)| name == q).count() as u64)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleState>, BrokerError> {
        let st = self.shared.lock();
        let mut out: Vec<ScheduleState> = st
            .schedules
            .iter()
            .map(|(name, s)| {
                let mut state = s.state.clone();
                state.name = name.clone();
                if state.last_tick_ms != s.tick_ms {
                    state.last_tick_ms = s.tick_ms;
                    if let Some((id, _)) = &s.busy {
                        state.last_message_id = id.clone();
                    }
                }
                state
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn delete_dead_letters(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        let mut st = self.shared.lock();
        Ok(match st.find(base_queue_name(queue)) {
            Some(i) => st.queue_mut(i).delete_dead(ids),
            None => 0,
        })
    }
}
