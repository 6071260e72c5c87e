//! The `Broker` trait: what a message transport must do for the worker and for producers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::BrokerError;
use crate::message::{base_queue_name, Message};
use crate::schedules::{ScheduleState, TickClaim, TickOutcome};
use crate::unique::{ReleaseOutcome, SendOutcome, UniqueLock};
use crate::workers::WorkerInfo;

/// Identifies one delivery to the consumer that handed it out: an AMQP delivery tag, a Redis
/// `redis_message_id`, or the stub broker's sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Token {
    /// A numeric tag.
    Tag(u64),
    /// A string id.
    Id(String),
}

/// One message handed out by a consumer and not yet acked. The body stays raw so that the worker,
/// not the broker, decides what to do with one that does not decode (it dead-letters it).
/// `Debug` shows the body as text.
#[derive(Clone)]
pub struct Delivery {
    /// How to ack, nack or requeue this delivery.
    pub token: Token,
    /// The body as it sits in the broker.
    pub body: Vec<u8>,
    /// Whether the broker says it was delivered before (RabbitMQ's `redelivered`).
    pub redelivered: bool,
}

/// Counts for one queue, for the admin tool and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting on the queue.
    pub ready: u64,
    /// Of `ready`, those waiting with a broker priority, on a broker that orders them by it
    /// (Redis with `max_priority`, the stub with `with_max_priority`); 0 where the broker
    /// cannot tell (RabbitMQ).
    pub prioritized: u64,
    /// Messages waiting on its delay queue.
    pub delayed: u64,
    /// Messages in its dead-letter queue.
    pub dead: u64,
    /// Messages handed to consumers and not yet acked (where the broker can tell).
    pub in_flight: u64,
}

/// A message transport: Redis, RabbitMQ, or the in-memory stub.
///
/// Brokers know nothing about middleware: the [`App`](crate::App) runs enqueue hooks and the
/// worker runs processing hooks. Queue names passed to a broker are physical (`q` or `q.DQ`);
/// dead-letter queues (`q.XQ`) are the broker's business.
///
/// **Architecture invariant:** a message is removed from the broker only by an ack or a nack
/// through the [`Acker`] of the consumer that received it.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// A short name for logs: `"redis"`, `"amqp"`, `"stub"`.
    fn kind(&self) -> &'static str;

    /// Declares canonical queue `queue` with its delay and dead-letter queues. Idempotent.
    async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError>;

    /// Puts `message` on the queue its `queue_name` names (`q`, or `q.DQ` when delayed: the
    /// caller has already set `eta`). A broker may add options it needs (Redis sets a fresh
    /// `redis_message_id`). Returns only once the broker has the message.
    async fn enqueue(&self, message: &mut Message) -> Result<(), BrokerError>;

    /// Enqueues many messages, pipelined where the broker allows. The default enqueues one by one.
    async fn enqueue_many(&self, messages: &mut [Message]) -> Result<(), BrokerError> {
        for m in messages.iter_mut() {
            self.enqueue(m).await?;
        }
        Ok(())
    }

    /// Starts consuming physical queue `queue` (`q` or `q.DQ`), holding at most `prefetch`
    /// unacked deliveries.
    async fn consume(&self, queue: &str, prefetch: usize)
        -> Result<Box<dyn Consumer>, BrokerError>;

    /// Counts for canonical queue `queue`.
    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError>;

    /// Drops every message of canonical queue `queue`, its delay queue and its dead letters.
    async fn flush(&self, queue: &str) -> Result<(), BrokerError>;

    /// Up to `limit` dead-lettered messages of canonical queue `queue`, oldest first.
    async fn dead_letters(&self, queue: &str, limit: usize)
        -> Result<Vec<DeadLetter>, BrokerError>;

    /// Checks the broker can be reached (used at startup for a clear error and exit code 3).
    async fn ping(&self) -> Result<(), BrokerError>;

    /// Delivers what this broker still buffers and closes its connections; call it before a
    /// program that is done with the broker exits. It matters where a send returns before the
    /// broker has the message (RabbitMQ without publisher confirms); the default does nothing,
    /// for brokers whose sends are complete when they return. A broker used after `close`
    /// connects again.
    async fn close(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    /// The canonical queues this broker holds messages or dead letters for, sorted: what the
    /// admin tool's `dq queues` lists when no queue is named, with the queues running workers
    /// consume ([`workers`](Broker::workers)). The default says the broker cannot
    /// ([`BrokerErrorKind::Unsupported`](crate::BrokerErrorKind::Unsupported)), which is the
    /// truth for RabbitMQ: AMQP has no command that lists queues.
    async fn list_queues(&self) -> Result<Vec<String>, BrokerError> {
        Err(BrokerError::unsupported(self.kind(), "listing queues"))
    }

    /// Publishes what a running worker is and runs ([`WorkerInfo`]), replacing what it
    /// published before under the same [`worker_id`](WorkerInfo::worker_id); the record expires
    /// `ttl` after this call unless published again, so a worker that died disappears by itself.
    /// A worker calls it once it has declared its queues, then every few seconds, well inside
    /// `ttl`. Brokers keep the record under names of their own that no Dramatiq process reads or
    /// writes. The default does nothing: a broker without a registry says so in
    /// [`workers`](Broker::workers).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dq_core::{Broker, WorkerInfo};
    ///
    /// # async fn demo(broker: &dyn Broker) -> Result<(), dq_core::BrokerError> {
    /// let me = WorkerInfo { worker_id: dq_core::new_message_id(), ..Default::default() };
    /// broker.publish_worker(&me, Duration::from_secs(60)).await?;
    /// // ... and when the worker stops:
    /// broker.withdraw_worker(&me.worker_id).await?;
    /// # Ok(()) }
    /// ```
    async fn publish_worker(&self, info: &WorkerInfo, ttl: Duration) -> Result<(), BrokerError> {
        let _ = (info, ttl);
        Ok(())
    }

    /// Removes what [`publish_worker`](Broker::publish_worker) published for `worker_id` (a
    /// worker stopping gracefully). Withdrawing a worker that is not published does nothing.
    /// The default does nothing.
    async fn withdraw_worker(&self, worker_id: &str) -> Result<(), BrokerError> {
        let _ = worker_id;
        Ok(())
    }

    /// The workers whose records have not expired or been withdrawn, one record per worker id
    /// (its latest), sorted by hostname, pid and id: what the admin tool's `dq actors` shows and
    /// where `dq send` finds an actor's queue. The default says the broker cannot
    /// ([`BrokerErrorKind::Unsupported`](crate::BrokerErrorKind::Unsupported)).
    ///
    /// ```
    /// # async fn demo(broker: &dyn dq_core::Broker) -> Result<(), dq_core::BrokerError> {
    /// for w in broker.workers().await? {
    ///     for a in &w.actors {
    ///         println!("{} runs {} on {}", w.display_name(), a.actor_name, a.queue_name);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    async fn workers(&self) -> Result<Vec<WorkerInfo>, BrokerError> {
        Err(BrokerError::unsupported(self.kind(), "listing workers"))
    }

    /// Claims tick `claim.tick_ms` of schedule `claim.schedule` and enqueues `message` (the
    /// tick's run, on its actor's queue) **as one step**: unless the schedule's recorded tick is
    /// already at or past this one ([`TickOutcome::Taken`]), or the schedule is `no_overlap` and
    /// its previous message has not been released ([`TickOutcome::Busy`], the tick is claimed
    /// and nothing enqueued). However many processes call this for one tick, one message is
    /// enqueued. The default says the broker cannot
    /// ([`BrokerErrorKind::Unsupported`](crate::BrokerErrorKind::Unsupported)); the periodic
    /// scheduler then needs another place to claim ticks.
    async fn enqueue_tick(
        &self,
        claim: &TickClaim<'_>,
        message: &mut Message,
    ) -> Result<TickOutcome, BrokerError> {
        let _ = (claim, message);
        Err(BrokerError::unsupported(
            self.kind(),
            "claiming schedule ticks",
        ))
    }

    /// Ends the busy mark of a `no_overlap` schedule, if `message_id` holds it (compare and
    /// delete): its message finished, for good. The default does nothing.
    async fn release_tick(&self, schedule: &str, message_id: &str) -> Result<(), BrokerError> {
        let _ = (schedule, message_id);
        Ok(())
    }

    /// Takes `lock` for `message` and enqueues the message **as one step**: when the lock's
    /// key (within the message's canonical queue) is free, it is set to the message's
    /// `message_id` for `lock.ttl` and the message enqueued ([`SendOutcome::Enqueued`]); when
    /// it is held, a unique or throttled send enqueues nothing
    /// ([`SendOutcome::Duplicate`] with the holder's id), and a debounced one takes the key
    /// from the holder and enqueues ([`SendOutcome::Replaced`]). However many processes send
    /// one key at once, one takes it. `message.queue_name` is physical (`q` or `q.DQ`), as for
    /// [`enqueue`](Broker::enqueue). The default says the broker cannot
    /// ([`BrokerErrorKind::Unsupported`](crate::BrokerErrorKind::Unsupported)), which is the
    /// truth for RabbitMQ: it cannot lock and publish atomically.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dq_core::{Broker, Message, SendOutcome, UniqueLock, UniqueMode, UniqueUntil};
    ///
    /// # async fn demo(broker: &dyn Broker) -> Result<(), dq_core::BrokerError> {
    /// let mut m = Message::new("default", "report", &(42,), &()).unwrap();
    /// let lock = UniqueLock {
    ///     key: "report:42".into(),
    ///     mode: UniqueMode::Unique,
    ///     until: UniqueUntil::Finished,
    ///     ttl: Duration::from_secs(60),
    /// };
    /// if let SendOutcome::Duplicate { holder } = broker.enqueue_unique(&lock, &mut m).await? {
    ///     println!("already queued as {holder}");
    /// }
    /// # Ok(()) }
    /// ```
    async fn enqueue_unique(
        &self,
        lock: &UniqueLock,
        message: &mut Message,
    ) -> Result<SendOutcome, BrokerError> {
        let _ = (lock, message);
        Err(BrokerError::unsupported(self.kind(), "unique messages"))
    }

    /// Releases the lock `key` of canonical queue `queue` if `message_id` holds it (compare
    /// and delete), and says who held it: a worker calls it when a unique message starts or
    /// finishes. A debounced message that a newer send replaced gets
    /// [`ReleaseOutcome::Replaced`] (also once the newer one has released the key), and is
    /// skipped. The default says the broker cannot.
    async fn release_unique(
        &self,
        queue: &str,
        key: &str,
        message_id: &str,
    ) -> Result<ReleaseOutcome, BrokerError> {
        let _ = (queue, key, message_id);
        Err(BrokerError::unsupported(self.kind(), "unique messages"))
    }

    /// How many unique locks are held for canonical queue `queue` now (`dq queues`). The
    /// default says the broker cannot.
    async fn unique_locks(&self, queue: &str) -> Result<u64, BrokerError> {
        let _ = queue;
        Err(BrokerError::unsupported(self.kind(), "unique messages"))
    }

    /// The schedules recorded by [`enqueue_tick`](Broker::enqueue_tick), by name. The default
    /// says the broker cannot.
    async fn schedules(&self) -> Result<Vec<ScheduleState>, BrokerError> {
        Err(BrokerError::unsupported(self.kind(), "listing schedules"))
    }

    /// Deletes dead letters of canonical queue `queue` for good: those `ids` names (as
    /// [`DeadLetter::id`] gives them), or every one when `ids` is `None`. Returns how many were
    /// deleted; an id that is not a dead letter (any more) is skipped. The default says the
    /// broker cannot ([`BrokerErrorKind::Unsupported`](crate::BrokerErrorKind::Unsupported)).
    async fn delete_dead_letters(
        &self,
        queue: &str,
        ids: Option<&[String]>,
    ) -> Result<u64, BrokerError> {
        let _ = (queue, ids);
        Err(BrokerError::unsupported(
            self.kind(),
            "deleting dead letters",
        ))
    }

    /// Puts dead letters of canonical queue `queue` back on that queue, at its tail, so workers
    /// run them again: those `ids` names, or every one when `ids` is `None`. Returns the ids
    /// requeued, oldest first. An id that is not a dead letter (any more) is skipped, and so is
    /// a letter whose body is not a valid message: it stays a dead letter.
    ///
    /// A message goes back as it was dead-lettered, with its `message_id` and options, except
    /// that it is addressed to `queue` itself, has no `eta` (one dead-lettered from the delay
    /// queue runs at once) and, with [`RetryCount::Reset`], has `retries` set to 0 as Python's
    /// dashboard does, so it gets its actor's every retry again. [`RetryCount::Keep`] keeps
    /// the count: a message that had used its retries runs once more. **Delivery:** each message is
    /// enqueued before its letter is deleted, so a failure half-way leaves a duplicate, never a
    /// loss.
    ///
    /// The default reads the letters with [`dead_letters`](Broker::dead_letters), enqueues them
    /// with [`enqueue_many`](Broker::enqueue_many) and deletes them with
    /// [`delete_dead_letters`](Broker::delete_dead_letters), in batches; a broker only needs to
    /// implement those. A broker whose `delete_dead_letters` is unsupported fails before
    /// anything is enqueued.
    async fn requeue_dead_letters(
        &self,
        queue: &str,
        ids: Option<&[String]>,
        retries: RetryCount,
    ) -> Result<Vec<String>, BrokerError> {
        /// Bounds the memory and the size of one broker call when requeueing everything.
        const BATCH: usize = 500;
        let q = base_queue_name(queue);
        // A broker that cannot delete dead letters would be left with each letter *and* its
        // requeued copy: ask first (deleting none), so it fails before enqueueing anything.
        self.delete_dead_letters(q, Some(&[])).await?;
        let total = self.stats(q).await?.dead;
        let letters = self
            .dead_letters(q, usize::try_from(total).unwrap_or(usize::MAX))
            .await?;
        let mut requeued = Vec::new();
        let mut batch_ids = Vec::with_capacity(BATCH);
        let mut batch = Vec::with_capacity(BATCH);
        let mut letters = letters.into_iter().peekable();
        while let Some(letter) = letters.next() {
            let wanted = ids.is_none_or(|ids| ids.contains(&letter.id));
            if wanted {
                if let Ok(mut message) = Message::decode(&letter.body) {
                    message.queue_name = q.to_owned();
                    message.options.remove_eta();
                    if retries == RetryCount::Reset {
                        message.options.set_retries(0);
                    }
                    batch.push(message);
                    batch_ids.push(letter.id);
                }
            }
            if !batch.is_empty() && (batch.len() == BATCH || letters.peek().is_none()) {
                self.enqueue_many(&mut batch).await?;
                self.delete_dead_letters(q, Some(&batch_ids)).await?;
                batch.clear();
                requeued.append(&mut batch_ids);
            }
        }
        Ok(requeued)
    }

    /// Up to `limit` messages of canonical queue `queue` in `state`, skipping the first
    /// `offset`, without taking them: what a dashboard lists page by page. Ready and dead-lettered
    /// messages come oldest first; delayed ones by broker order (Redis: soonest `eta` first among
    /// those read). The listing is a snapshot: workers may take or settle a message in between.
    ///
    /// The default lists dead letters through [`dead_letters`](Broker::dead_letters) and says
    /// the broker cannot list the others
    /// ([`BrokerErrorKind::Unsupported`](crate::BrokerErrorKind::Unsupported)), which is the
    /// truth for RabbitMQ: AMQP cannot look at a queue's messages without taking them.
    ///
    /// ```
    /// use dq_core::{Broker, Message, MessageState};
    ///
    /// # async fn demo(broker: &dyn Broker) -> Result<(), dq_core::BrokerError> {
    /// for m in broker.browse("default", MessageState::DeadLettered, 0, 50).await? {
    ///     if let Ok(message) = Message::decode(&m.body) {
    ///         println!("{} {}", m.id, message.display_call());
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    async fn browse(
        &self,
        queue: &str,
        state: crate::MessageState,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<crate::BrowsedMessage>, BrokerError> {
        match state {
            crate::MessageState::DeadLettered => {
                let letters = self
                    .dead_letters(queue, offset.saturating_add(limit))
                    .await?;
                Ok(letters
                    .into_iter()
                    .skip(offset)
                    .map(crate::BrowsedMessage::from)
                    .collect())
            }
            crate::MessageState::Ready => Err(BrokerError::unsupported(
                self.kind(),
                "browsing ready messages",
            )),
            crate::MessageState::Delayed => Err(BrokerError::unsupported(
                self.kind(),
                "browsing delayed messages",
            )),
        }
    }
}

/// What [`Broker::requeue_dead_letters`] does with a message's `retries`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetryCount {
    /// Set to 0, as Python's dashboard does: the message gets every retry again.
    #[default]
    Reset,
    /// Kept: a message that had used all its retries runs once more, then is dead-lettered.
    Keep,
}

/// A message in a dead-letter queue. `Debug` shows the body as text.
///
/// ```
/// let letter = dq_core::DeadLetter {
///     id: "1".into(),
///     body: br#"{"actor_name":"add"}"#.to_vec(),
///     dead_lettered_at: None,
///     reason: Some("retries exceeded".into()),
/// };
/// assert!(format!("{letter:?}").contains(r#"body: {"actor_name":"add"}"#));
/// ```
#[derive(Clone)]
pub struct DeadLetter {
    /// The broker's id for it (Redis: the `redis_message_id`).
    pub id: String,
    /// The body as it was enqueued.
    pub body: Vec<u8>,
    /// When it was dead-lettered (ms since the epoch), if the broker records it.
    pub dead_lettered_at: Option<i64>,
    /// Why, if the broker records it (the stub broker does; Dramatiq's brokers do not).
    pub reason: Option<String>,
}

/// A message body for `Debug`: its text (lossy, for bodies that are not UTF-8), unquoted.
struct BodyText<'a>(&'a [u8]);

impl fmt::Debug for BodyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("token", &self.token)
            .field("body", &BodyText(&self.body))
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("body", &BodyText(&self.body))
            .field("dead_lettered_at", &self.dead_lettered_at)
            .field("reason", &self.reason)
            .finish()
    }
}

/// A stream of deliveries from one physical queue.
#[async_trait]
pub trait Consumer: Send {
    /// The physical queue this consumer reads.
    fn queue(&self) -> &str;

    /// Waits up to `timeout` for deliveries and returns what arrived (possibly nothing). Never
    /// returns more than the prefetch allows given the deliveries not yet acked. A transient error
    /// means the caller should retry after a pause; the consumer reconnects by itself.
    async fn fetch(&mut self, timeout: Duration) -> Result<Vec<Delivery>, BrokerError>;

    /// A handle to settle deliveries from any thread or task.
    fn acker(&self) -> Arc<dyn Acker>;

    /// Stops consuming. Deliveries not settled by now are given back to the broker (requeued);
    /// on Redis that is an explicit requeue, on RabbitMQ closing the channel redelivers them.
    async fn close(self: Box<Self>) -> Result<(), BrokerError>;
}

/// Settles deliveries of one consumer. Cheap to clone behind its `Arc`.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Removes the messages for good: they were processed (or their retry is safely enqueued).
    async fn ack(&self, tokens: &[Token]) -> Result<(), BrokerError>;

    /// Moves one message to the dead-letter queue. `reason` is kept where the broker can keep it
    /// and is always logged by the caller.
    async fn nack(&self, token: &Token, reason: &str) -> Result<(), BrokerError>;

    /// Gives messages back to the queue (at its tail) unprocessed.
    async fn requeue(&self, tokens: &[Token]) -> Result<(), BrokerError>;

    /// Tells the broker the worker is done with these deliveries and is about to settle them
    /// (ack, dead-letter or requeue), so it may stop counting them against the consumer's
    /// prefetch before the settle call is made. Their messages stay unsettled, and recoverable,
    /// until then. The default does nothing.
    fn finished(&self, tokens: &[Token]) {
        let _ = tokens;
    }

    /// Whether `token` can no longer be settled because the channel or connection it came on
    /// is gone, so the broker delivers the message again by itself (RabbitMQ after a lost
    /// connection). A worker drops such a delivery instead of running or moving it a second
    /// time. The default, for brokers whose deliveries never go stale, is `false`.
    fn is_stale(&self, token: &Token) -> bool {
        let _ = token;
        false
    }
}
