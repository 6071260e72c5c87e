//! Consumers: one channel each, with its own prefetch, and the handle that settles deliveries.
//!
//! Delivery tags are numbers of one channel. After a reconnect the new channel counts from 1
//! again, so an ack meant for tag 5 of the old channel would settle some other message if sent
//! on the new one. Every token therefore carries the generation of the channel it came from
//! ([`pack`]), and the [`AmqpAcker`] sends an ack, nack or requeue only on the channel of that
//! generation, if it is still open. Settling a delivery of a closed channel fails with a
//! `Closed` error and changes nothing: RabbitMQ has already put that message back and delivers it
//! again (at-least-once).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dq_core::{
    async_trait, base_queue_name, Acker, BrokerError, BrokerErrorKind, Consumer, Delivery, Token,
};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::broker::{Inner, Link, Role};
use crate::error::{broker_error, reply_code};

/// Bits of a token that hold the delivery tag; the 16 above hold the channel generation. 2^48
/// deliveries is 89 years of one channel at 100,000 messages a second; should a channel get
/// there anyway, the consumer replaces it (see `fetch`).
const TAG_BITS: u32 = 48;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// A token for delivery `tag` of channel generation `generation`.
pub(crate) fn pack(generation: u16, tag: u64) -> u64 {
    (u64::from(generation) << TAG_BITS) | (tag & TAG_MASK)
}

/// The channel generation and delivery tag of a token.
pub(crate) fn unpack(token: u64) -> (u16, u64) {
    ((token >> TAG_BITS) as u16, token & TAG_MASK)
}

/// The channel currently consuming, as the acker sees it.
struct AckChannel {
    channel: lapin::Channel,
    generation: u16,
    /// Tags delivered on this channel and not settled yet: the flusher acks with `multiple`
    /// only below the lowest of them.
    open: Mutex<BTreeSet<u64>>,
}

/// A settle the flusher sends.
enum Op {
    Ack(Vec<u64>),
    Nack(u64),
    Requeue(Vec<u64>),
}

struct Request {
    op: Op,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

/// Requests taken per flush at most.
const MAX_PENDING: usize = 4_096;

/// Settles deliveries of one [`AmqpConsumer`] (see the module docs for generations).
///
/// Settles go to one flusher task per consumer, which sends everything pending at once: the
/// nacks and requeues first, then the acks. Acks below the lowest delivery still unsettled on
/// the channel go as one `basic.ack` with `multiple`, the rest one by one, so a busy consumer
/// sends about one ack frame per flush instead of one per message, and RabbitMQ does that much
/// less work. A multiple ack never covers a message still running or not yet fetched: the
/// running ones are in the open set, and later deliveries have higher tags.
pub(crate) struct AmqpAcker {
    queue: String,
    xq: String,
    current: Mutex<Option<Arc<AckChannel>>>,
    requests: mpsc::UnboundedSender<Request>,
}

impl AmqpAcker {
    fn set(&self, channel: Option<Arc<AckChannel>>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = channel;
    }

    fn get(&self) -> Option<Arc<AckChannel>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The packed token of a RabbitMQ delivery.
    fn packed(&self, token: &Token, what: &str) -> Result<u64, BrokerError> {
        match token {
            Token::Tag(packed) => Ok(*packed),
            Token::Id(_) => Err(BrokerError::new(
                BrokerErrorKind::Rejected,
                format!(
                    "{what} on {}: {token:?} is not a rabbitmq delivery",
                    self.queue
                ),
            )),
        }
    }

    fn packed_all(&self, tokens: &[Token], what: &str) -> Result<Vec<u64>, BrokerError> {
        tokens.iter().map(|t| self.packed(t, what)).collect()
    }

    fn stale(&self, what: &str, tag: u64) -> BrokerError {
        BrokerError::new(
            BrokerErrorKind::Closed,
            format!(
                "cannot {what} delivery {tag} of {}: the channel it came on is closed, so \
                 rabbitmq delivers the message again",
                self.queue
            ),
        )
    }

    /// Maps a failure to settle: a channel that died meanwhile is the stale case, not something
    /// to retry.
    fn settle_error(&self, c: &AckChannel, e: &lapin::Error, what: &str, tag: u64) -> BrokerError {
        if c.channel.status().connected() {
            broker_error(
                e.clone(),
                format!("{what} delivery {tag} of {}", self.queue),
            )
        } else {
            self.stale(what, tag)
        }
    }

    async fn submit(&self, op: Op) -> Result<(), BrokerError> {
        let (done, reply) = oneshot::channel();
        let closed = || {
            BrokerError::new(
                BrokerErrorKind::Closed,
                format!("the acker of {} is gone", self.queue),
            )
        };
        self.requests
            .send(Request { op, done })
            .map_err(|_| closed())?;
        reply.await.map_err(|_| closed())?
    }
}

#[async_trait]
impl Acker for AmqpAcker {
    fn is_stale(&self, token: &Token) -> bool {
        let Token::Tag(packed) = token else {
            return false;
        };
        let (generation, _) = unpack(*packed);
        !matches!(self.get(), Some(c) if c.generation == generation && c.channel.status().connected())
    }

    /// Acked once the frame that covers it is written (see the type docs for `multiple`).
    async fn ack(&self, tokens: &[Token]) -> Result<(), BrokerError> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.submit(Op::Ack(self.packed_all(tokens, "ack")?)).await
    }

    /// `basic.nack` without requeue: RabbitMQ dead-letters it through the default exchange to
    /// `q.XQ`, adding an `x-death` header. The reason has nowhere to go in RabbitMQ (the body must
    /// stay as Python wrote it), so it is only logged.
    async fn nack(&self, token: &Token, reason: &str) -> Result<(), BrokerError> {
        let packed = self.packed(token, "nack")?;
        self.submit(Op::Nack(packed)).await?;
        info!(queue = %self.queue, dead_letter_queue = %self.xq, reason, "dead-lettered a message; rabbitmq keeps no reason");
        Ok(())
    }

    /// `basic.reject` with requeue. RabbitMQ puts the message back at its old place in the queue
    /// (near the head, not at the tail) and marks it redelivered. Python Dramatiq requeues by
    /// closing the channel, to the same effect; an explicit reject works while consuming goes on.
    async fn requeue(&self, tokens: &[Token]) -> Result<(), BrokerError> {
        if tokens.is_empty() {
            return Ok(());
        }
        self.submit(Op::Requeue(self.packed_all(tokens, "requeue")?))
            .await
    }
}

/// What a frame the flusher sends does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nack,
    Requeue,
    Ack,
    AckMultiple,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Nack => "nack",
            Kind::Requeue => "requeue",
            Kind::Ack | Kind::AckMultiple => "ack",
        }
    }
}

async fn send(channel: &lapin::Channel, kind: Kind, tag: u64) -> Result<(), lapin::Error> {
    match kind {
        Kind::Nack => {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: false,
                    },
                )
                .await
        }
        Kind::Requeue => {
            channel
                .basic_reject(tag, BasicRejectOptions { requeue: true })
                .await
        }
        Kind::Ack => {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await
        }
        Kind::AckMultiple => {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
        }
    }
}

/// Sends the settles of one consumer, everything pending at once (see [`AmqpAcker`]). Ends when
/// the acker is dropped.
async fn flush(acker: Weak<AmqpAcker>, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut batch: Vec<Request> = Vec::new();
    while let Some(first) = requests.recv().await {
        batch.push(first);
        while batch.len() < MAX_PENDING {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let Some(acker) = acker.upgrade() else {
            return;
        };
        let mut failed: Vec<Option<BrokerError>> = Vec::with_capacity(batch.len());
        failed.resize_with(batch.len(), || None);
        // (kind, tag, request) of every frame to send, in order.
        let mut frames: Vec<(Kind, u64, usize)> = Vec::new();
        let mut acks: Vec<(u64, usize)> = Vec::new();
        let current = acker.get();
        for (i, r) in batch.iter().enumerate() {
            let (kind, packed): (Kind, &[u64]) = match &r.op {
                Op::Ack(p) => (Kind::Ack, p),
                Op::Nack(p) => (Kind::Nack, std::slice::from_ref(p)),
                Op::Requeue(p) => (Kind::Requeue, p),
            };
            for &p in packed {
                let (generation, tag) = unpack(p);
                match &current {
                    Some(c) if c.generation == generation && c.channel.status().connected() => {
                        if kind == Kind::Ack {
                            acks.push((tag, i));
                        } else {
                            frames.push((kind, tag, i));
                        }
                    }
                    _ => failed[i] = Some(acker.stale(kind.what(), tag)),
                }
            }
        }
        if let Some(c) = &current {
            let lowest_open = {
                let mut open = c.open.lock().unwrap_or_else(|e| e.into_inner());
                for (_, tag, _) in &frames {
                    open.remove(tag);
                }
                for (tag, _) in &acks {
                    open.remove(tag);
                }
                open.first().copied().unwrap_or(u64::MAX)
            };
            acks.sort_unstable();
            let below = acks.partition_point(|(tag, _)| *tag < lowest_open);
            // The nacks and requeues go first, one at a time: a multiple ack after them must
            // not find them unsettled and settle them as acked.
            for &(kind, tag, i) in &frames {
                if let Err(e) = send(&c.channel, kind, tag).await {
                    failed[i] = Some(acker.settle_error(c, &e, kind.what(), tag));
                }
            }
            // Then the acks, all at once. `MULTIPLE` stands for every request under the multiple ack.
            frames.clear();
            if below > 0 {
                let kind = if below > 1 {
                    Kind::AckMultiple
                } else {
                    Kind::Ack
                };
                frames.push((kind, acks[below - 1].0, MULTIPLE));
            }
            frames.extend(acks[below..].iter().map(|&(tag, i)| (Kind::Ack, tag, i)));
            let sent = futures_util::future::join_all(
                frames
                    .iter()
                    .map(|&(kind, tag, _)| send(&c.channel, kind, tag)),
            )
            .await;
            for (&(kind, tag, i), r) in frames.iter().zip(sent) {
                let Err(e) = r else { continue };
                let e = acker.settle_error(c, &e, kind.what(), tag);
                if i == MULTIPLE {
                    for &(_, i) in &acks[..below] {
                        failed[i] = Some(BrokerError::new(e.kind(), e.to_string()));
                    }
                } else {
                    failed[i] = Some(e);
                }
            }
        }
        for (r, f) in batch.drain(..).zip(failed) {
            let _ = r.done.send(f.map_or(Ok(()), Err));
        }
    }
}

/// The request index of the frame that acks with `multiple`.
const MULTIPLE: usize = usize::MAX;

/// The open channel of a consumer.
struct Live {
    link: Arc<Link>,
    channel: lapin::Channel,
    stream: lapin::Consumer,
    generation: u16,
    /// What the acker settles deliveries of this channel with.
    ack: Arc<AckChannel>,
}

/// Consumes one physical queue on a channel of its own, with `basic.qos(prefetch)` for this
/// consumer only and manual acks. Reconnects by itself after the connection or the channel dies.
pub(crate) struct AmqpConsumer {
    inner: Arc<Inner>,
    queue: String,
    canonical: String,
    prefetch: u16,
    live: Option<Live>,
    acker: Arc<AmqpAcker>,
    generation: u16,
    failures: u32,
    retry_at: Option<Instant>,
}

/// What one look at the delivery stream found.
enum Next {
    /// Only the parts we keep: lapin's delivery also carries properties and an acker of its own.
    Delivery {
        tag: u64,
        body: Vec<u8>,
        redelivered: bool,
    },
    Failed(lapin::Error),
    Cancelled,
    Nothing,
}

impl AmqpConsumer {
    pub(crate) async fn open(
        inner: Arc<Inner>,
        queue: &str,
        prefetch: usize,
    ) -> Result<AmqpConsumer, BrokerError> {
        let (requests, rx) = mpsc::unbounded_channel();
        let acker = Arc::new(AmqpAcker {
            queue: queue.to_owned(),
            xq: dq_core::dead_letter_queue_name(queue),
            current: Mutex::new(None),
            requests,
        });
        tokio::spawn(flush(Arc::downgrade(&acker), rx));
        let mut consumer = AmqpConsumer {
            inner,
            queue: queue.to_owned(),
            canonical: base_queue_name(queue).to_owned(),
            // Dramatiq caps prefetch at 65535 too: basic.qos takes 16 bits.
            prefetch: u16::try_from(prefetch).unwrap_or(u16::MAX),
            live: None,
            acker,
            generation: 0,
            failures: 0,
            retry_at: None,
        };
        consumer.start().await?;
        Ok(consumer)
    }

    /// Opens a channel and starts consuming on it, declaring the queues first if this
    /// connection has not.
    async fn start(&mut self) -> Result<(), BrokerError> {
        let mut declared_again = false;
        let (link, channel, stream) = loop {
            let link = self.inner.link(Role::Consumer).await?;
            self.inner.ensure_declared(&link, &self.canonical).await?;
            let channel = link.conn.create_channel().await.map_err(|e| {
                broker_error(e, format!("opening a channel to consume {}", self.queue))
            })?;
            channel
                .basic_qos(self.prefetch, BasicQosOptions { global: false })
                .await
                .map_err(|e| broker_error(e, format!("setting the prefetch of {}", self.queue)))?;
            let options = BasicConsumeOptions {
                no_ack: false,
                ..BasicConsumeOptions::default()
            };
            match channel
                .basic_consume(
                    self.queue.as_str().into(),
                    "".into(),
                    options,
                    FieldTable::default(),
                )
                .await
            {
                Ok(stream) => break (link, channel, stream),
                Err(e) if reply_code(&e) == Some(404) && !declared_again => {
                    // Declared on this connection, yet gone: someone deleted it. Declare again,
                    // as Python Dramatiq 2.2 does.
                    link.undeclare(&self.canonical);
                    declared_again = true;
                }
                Err(e) => {
                    if reply_code(&e) == Some(404) {
                        link.undeclare(&self.canonical);
                    }
                    return Err(broker_error(e, format!("consuming {}", self.queue)));
                }
            }
        };
        self.generation = self.generation.wrapping_add(1);
        let ack = Arc::new(AckChannel {
            channel: channel.clone(),
            generation: self.generation,
            open: Mutex::new(BTreeSet::new()),
        });
        self.acker.set(Some(ack.clone()));
        self.live = Some(Live {
            link,
            channel,
            stream,
            generation: self.generation,
            ack,
        });
        Ok(())
    }

    /// Drops the channel: RabbitMQ puts back whatever it delivered on it and did not get acked,
    /// and tokens of this generation become stale.
    fn lose(&mut self) {
        self.acker.set(None);
        self.live = None;
    }

    async fn next(&mut self, timeout: Option<Duration>) -> Next {
        let Some(live) = self.live.as_mut() else {
            return Next::Nothing;
        };
        let item = match timeout {
            Some(t) => match tokio::time::timeout(t, live.stream.next()).await {
                Ok(item) => item,
                Err(_elapsed) => return Next::Nothing,
            },
            None => match live.stream.next().now_or_never() {
                Some(item) => item,
                None => return Next::Nothing,
            },
        };
        match item {
            Some(Ok(d)) => Next::Delivery {
                tag: d.delivery_tag,
                body: d.data,
                redelivered: d.redelivered,
            },
            Some(Err(e)) => Next::Failed(e),
            None => Next::Cancelled,
        }
    }

    /// Reconnects, unless the last attempt was too recent; then it waits, at most `timeout`.
    async fn restart(&mut self, timeout: Duration) -> Result<bool, BrokerError> {
        if let Some(at) = self.retry_at {
            let now = Instant::now();
            if at > now {
                if at - now > timeout {
                    tokio::time::sleep(timeout).await;
                    return Ok(false);
                }
                tokio::time::sleep(at - now).await;
            }
        }
        match self.start().await {
            Ok(()) => {
                if self.failures > 0 || self.retry_at.is_some() {
                    debug!(queue = %self.queue, "consuming again after losing rabbitmq");
                }
                self.failures = 0;
                self.retry_at = None;
                Ok(true)
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.retry_at = Some(Instant::now() + reconnect_delay(self.failures));
                Err(e)
            }
        }
    }

    /// Records a lost channel and the error `fetch` returns for it.
    fn lost(&mut self, e: BrokerError) -> BrokerError {
        debug!(queue = %self.queue, error = %dq_core::ErrorChain(&e), "lost the consumer channel; reconnecting");
        self.lose();
        // Try again at once: the failure may have been the channel alone.
        self.retry_at = None;
        e
    }
}

/// Pause before reconnect attempt `failures + 1`: 200 ms doubling to 5 s, times U[0.5, 1) so
/// that many workers do not all knock at once when RabbitMQ comes back.
fn reconnect_delay(failures: u32) -> Duration {
    let base = (200u64 << failures.saturating_sub(1).min(5)).min(5000);
    let jitter: f64 = rand::thread_rng().gen_range(0.5..1.0);
    Duration::from_millis((base as f64 * jitter) as u64)
}

#[async_trait]
impl Consumer for AmqpConsumer {
    fn queue(&self) -> &str {
        &self.queue
    }

    /// Waits up to `timeout` for a first delivery, then takes every delivery already received
    /// without waiting more. RabbitMQ never has more than the prefetch unacked on this channel,
    /// so neither does the batch.
    async fn fetch(&mut self, timeout: Duration) -> Result<Vec<Delivery>, BrokerError> {
        if self.live.is_none() && !self.restart(timeout).await? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut wait = Some(timeout);
        loop {
            match self.next(wait.take()).await {
                Next::Delivery {
                    tag,
                    body,
                    redelivered,
                } => {
                    let generation = self.live.as_ref().map_or(0, |l| l.generation);
                    if tag > TAG_MASK {
                        // Out of token space: replace the channel. Every unacked delivery of
                        // this one, including those in `out`, is delivered again.
                        return Err(self.lost(BrokerError::new(
                            BrokerErrorKind::Connection,
                            format!(
                                "the channel consuming {} ran out of delivery tags",
                                self.queue
                            ),
                        )));
                    }
                    out.push(Delivery {
                        token: Token::Tag(pack(generation, tag)),
                        body,
                        redelivered,
                    });
                }
                Next::Nothing => {
                    if let Some(live) = &self.live {
                        let mut open = live.ack.open.lock().unwrap_or_else(|e| e.into_inner());
                        open.extend(out.iter().filter_map(|d| match d.token {
                            Token::Tag(packed) => Some(unpack(packed).1),
                            Token::Id(_) => None,
                        }));
                    }
                    return Ok(out);
                }
                Next::Failed(e) => {
                    // Deliveries already taken from this channel are dropped with it: RabbitMQ
                    // delivers them again, and their acks could not be sent anyway.
                    if reply_code(&e) == Some(404) {
                        if let Some(l) = &self.live {
                            l.link.undeclare(&self.canonical);
                        }
                    }
                    let err = broker_error(e, format!("consuming {}", self.queue));
                    return Err(self.lost(err));
                }
                Next::Cancelled => {
                    if let Some(l) = &self.live {
                        l.link.undeclare(&self.canonical);
                    }
                    return Err(self.lost(BrokerError::new(
                        BrokerErrorKind::Connection,
                        format!(
                            "rabbitmq cancelled the consumer of {} (was the queue deleted?); \
                             declaring it and consuming again",
                            self.queue
                        ),
                    )));
                }
            }
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    /// Cancels the consumer and closes its channel, so RabbitMQ delivers everything not yet
    /// settled again (to this or another worker). Tokens of this consumer become stale.
    async fn close(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.acker.set(None);
        let Some(live) = self.live.take() else {
            return Ok(());
        };
        if !live.channel.status().connected() {
            // Already closed: RabbitMQ has taken the deliveries back.
            return Ok(());
        }
        let tag = live.stream.tag();
        // A failed cancel does not matter: closing the channel cancels too.
        let _ = live
            .channel
            .basic_cancel(tag, BasicCancelOptions::default())
            .await;
        match live.channel.close(200, "consumer closed".into()).await {
            Ok(()) => Ok(()),
            Err(_) if !live.channel.status().connected() => Ok(()),
            Err(e) => Err(broker_error(
                e,
                format!("closing the channel consuming {}", self.queue),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_the_generation_and_the_tag() {
        for (generation, tag) in [(0u16, 1u64), (1, 42), (u16::MAX, TAG_MASK), (7, 1 << 40)] {
            assert_eq!(unpack(pack(generation, tag)), (generation, tag));
        }
        assert_ne!(pack(1, 5), pack(2, 5));
    }

    #[test]
    fn reconnect_delays_grow_and_stay_bounded() {
        for failures in 1..20 {
            let d = reconnect_delay(failures);
            let base = (200u64 << (failures - 1).min(5)).min(5000);
            assert!(d >= Duration::from_millis(base / 2), "{failures}: {d:?}");
            assert!(d < Duration::from_millis(base), "{failures}: {d:?}");
        }
    }
}
