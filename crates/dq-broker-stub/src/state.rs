//! The broker's state, behind one mutex. Every operation here is synchronous and short; nothing
//! awaits while the lock is held, and waiters are woken through the queues' [`Notify`]s.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dq_core::{
    is_valid_queue_name, now_ms, DeadLetter, Delivery, Message, QueueStats, Token, WorkerInfo,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Error;

/// Which physical queue of a canonical queue: `q` or `q.DQ`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Ready,
    Delayed,
}

/// Splits a physical queue name into its canonical queue and side, refusing `.XQ` and names
/// Dramatiq would not accept.
pub(crate) fn parse_physical(name: &str) -> Result<(&str, Side), Error> {
    let (canonical, side) = match name.strip_suffix(".DQ") {
        Some(c) => (c, Side::Delayed),
        None if name.ends_with(".XQ") => return Err(Error::DeadLetterQueue(name.to_owned())),
        None => (name, Side::Ready),
    };
    if !is_valid_queue_name(canonical) {
        return Err(Error::InvalidQueueName(name.to_owned()));
    }
    Ok((canonical, side))
}

/// A stored message. `id` is fixed at enqueue and names it as a dead letter; delivery tags are
/// issued afresh on each fetch, so a stale token from an earlier delivery cannot settle a later one.
pub(crate) struct Entry {
    id: u64,
    body: Vec<u8>,
    redelivered: bool,
    /// Its broker priority, clamped to the broker's maximum; 0 when it has none (or the broker
    /// orders by none).
    priority: u8,
}

/// Where a prioritized ready message waits: higher priority first, then by `seq` (FIFO; a
/// message given back unprocessed gets a negative one, ahead of its level).
type Rank = (std::cmp::Reverse<u8>, i64);

struct Dead {
    id: u64,
    body: Vec<u8>,
    at: i64,
    reason: String,
}

impl Dead {
    fn to_dead_letter(&self) -> DeadLetter {
        DeadLetter {
            id: self.id.to_string(),
            body: self.body.clone(),
            dead_lettered_at: Some(self.at),
            reason: Some(self.reason.clone()),
        }
    }
}

struct ConsumerRec {
    side: Side,
    prefetch: usize,
    unsettled: HashMap<u64, Entry>,
}

/// A canonical queue `q` with its delay queue `q.DQ` and its dead letters `q.XQ`.
pub(crate) struct Queue {
    name: String,
    ready: VecDeque<Entry>,
    /// Ready messages with a broker priority, as Redis's `__dq_priority__` zset keeps them.
    prioritized: BTreeMap<Rank, Entry>,
    delayed: VecDeque<Entry>,
    dead: Vec<Dead>,
    /// Dead letters before this index were reported by (or accepted at the end of) a join.
    accounted: usize,
    /// Deliveries fetched and not settled, over all consumers.
    unsettled: usize,
    consumers: HashMap<u64, ConsumerRec>,
    ready_notify: Arc<Notify>,
    delayed_notify: Arc<Notify>,
    /// Wakes joins: signalled when the queue may have become idle and on every dead letter.
    changed: Arc<Notify>,
}

impl Queue {
    fn new(name: &str) -> Queue {
        Queue {
            name: name.to_owned(),
            ready: VecDeque::new(),
            prioritized: BTreeMap::new(),
            delayed: VecDeque::new(),
            dead: Vec::new(),
            accounted: 0,
            unsettled: 0,
            consumers: HashMap::new(),
            ready_notify: Arc::new(Notify::new()),
            delayed_notify: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut VecDeque<Entry> {
        match side {
            Side::Ready => &mut self.ready,
            Side::Delayed => &mut self.delayed,
        }
    }

    pub(crate) fn notify(&self, side: Side) -> &Arc<Notify> {
        match side {
            Side::Ready => &self.ready_notify,
            Side::Delayed => &self.delayed_notify,
        }
    }

    pub(crate) fn changed(&self) -> &Arc<Notify> {
        &self.changed
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.ready.is_empty()
            && self.prioritized.is_empty()
            && self.delayed.is_empty()
            && self.unsettled == 0
    }

    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (
            self.ready.len() + self.prioritized.len(),
            self.delayed.len(),
            self.unsettled,
        )
    }

    pub(crate) fn stats(&self) -> QueueStats {
        QueueStats {
            ready: (self.ready.len() + self.prioritized.len()) as u64,
            prioritized: self.prioritized.len() as u64,
            delayed: self.delayed.len() as u64,
            dead: self.dead.len() as u64,
            in_flight: self.unsettled as u64,
        }
    }

    /// Up to `limit` messages in `state` after the first `offset`, oldest first.
    pub(crate) fn browse(
        &self,
        state: dq_core::MessageState,
        offset: usize,
        limit: usize,
    ) -> Vec<dq_core::BrowsedMessage> {
        let waiting = |entries: &VecDeque<Entry>| {
            entries
                .iter()
                .skip(offset)
                .take(limit)
                .map(|e| dq_core::BrowsedMessage {
                    id: e.id.to_string(),
                    body: e.body.clone(),
                    state,
                    dead_lettered_at: None,
                    reason: None,
                })
                .collect()
        };
        match state {
            dq_core::MessageState::Ready => waiting(&self.ready),
            dq_core::MessageState::Delayed => waiting(&self.delayed),
            dq_core::MessageState::DeadLettered => self
                .dead
                .iter()
                .skip(offset)
                .take(limit)
                .map(|d| d.to_dead_letter().into())
                .collect(),
        }
    }

    pub(crate) fn dead_letters(&self, limit: usize) -> Vec<DeadLetter> {
        self.dead
            .iter()
            .take(limit)
            .map(Dead::to_dead_letter)
            .collect()
    }

    /// Deletes the dead letters `ids` names (all when `None`) and returns how many went. Letters
    /// a join already reported stay reported: `accounted` keeps counting the ones left of them.
    pub(crate) fn delete_dead(&mut self, ids: Option<&[String]>) -> u64 {
        let before = self.dead.len();
        let mut kept_accounted = 0;
        let mut index = 0;
        let accounted = self.accounted;
        self.dead.retain(|d| {
            let delete = ids.is_none_or(|ids| ids.iter().any(|id| id.parse() == Ok(d.id)));
            if !delete && index < accounted {
                kept_accounted += 1;
            }
            index += 1;
            !delete
        });
        self.accounted = kept_accounted;
        (before - self.dead.len()) as u64
    }

    /// The dead letters no join has accounted for yet, which are now accounted for.
    pub(crate) fn take_unaccounted(&mut self) -> Option<Vec<DeadLetter>> {
        if self.dead.len() <= self.accounted {
            return None;
        }
        let new = self.dead[self.accounted..]
            .iter()
            .map(Dead::to_dead_letter)
            .collect();
        self.accounted = self.dead.len();
        Some(new)
    }

    pub(crate) fn account_all(&mut self) {
        self.accounted = self.dead.len();
    }

    /// Drops every message, delayed message, dead letter and unsettled delivery, as Dramatiq's
    /// Redis `purge` deletes the ack sets too: settling a dropped delivery later is a no-op.
    fn flush(&mut self) {
        self.ready.clear();
        self.prioritized.clear();
        self.delayed.clear();
        self.dead.clear();
        self.accounted = 0;
        self.unsettled = 0;
        for rec in self.consumers.values_mut() {
            rec.unsettled.clear();
        }
        // Consumers held at their prefetch bound have room again, and joins may be done.
        self.ready_notify.notify_waiters();
        self.delayed_notify.notify_waiters();
        self.changed.notify_waiters();
    }
}

/// Everything the broker holds.
#[derive(Default)]
pub(crate) struct State {
    index: HashMap<String, usize>,
    /// Queues are never removed (flush empties them), so an index stays valid for a consumer's life.
    queues: Vec<Queue>,
    next_id: u64,
    next_tag: u64,
    next_consumer: u64,
    /// The worker registry: each worker's record and when it expires.
    workers: HashMap<String, (WorkerInfo, Instant)>,
    /// Periodic schedules, by name: see [`Schedule`].
    pub(crate) schedules: HashMap<String, Schedule>,
    /// Unique locks by (canonical queue, key): the holder's `message_id` and when the lock
    /// expires (Tokio's clock).
    pub(crate) unique: HashMap<(String, String), (String, Instant)>,
    /// Debounced messages replaced by a newer send, by (canonical queue, `message_id`): the
    /// newer one's id, and until when this is remembered.
    pub(crate) replaced: HashMap<(String, String), (String, Instant)>,
    /// The highest broker priority; 0 orders by none.
    pub(crate) max_priority: u8,
    next_seq: i64,
}

/// One periodic schedule's record, as the Redis broker keeps it (without expiry: a stub broker
/// lives as long as its process).
#[derive(Default)]
pub(crate) struct Schedule {
    pub(crate) tick_ms: i64,
    pub(crate) state: dq_core::ScheduleState,
    /// A `no_overlap` schedule's running message id, and until when it counts (ms).
    pub(crate) busy: Option<(String, i64)>,
}

impl State {
    /// The index of canonical queue `name`, declaring it if needed. The caller has validated it.
    pub(crate) fn declare(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.queues.len();
        self.queues.push(Queue::new(name));
        self.index.insert(name.to_owned(), i);
        i
    }

    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub(crate) fn queue(&self, i: usize) -> &Queue {
        &self.queues[i]
    }

    pub(crate) fn queue_mut(&mut self, i: usize) -> &mut Queue {
        &mut self.queues[i]
    }

    /// Declared canonical queue names, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.queues.iter().map(|q| q.name.clone()).collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn push(&mut self, i: usize, side: Side, body: Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        // As on Redis, the delay queue is ordered by eta, and priority is read from the body
        // (so raw bodies and foreign producers' messages get theirs too).
        let priority = match side {
            Side::Ready if self.max_priority > 0 => Message::decode(&body)
                .ok()
                .and_then(|m| m.options.broker_priority())
                .map_or(0, |p| p.min(self.max_priority)),
            _ => 0,
        };
        let entry = Entry {
            id,
            body,
            redelivered: false,
            priority,
        };
        if priority > 0 {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.queues[i]
                .prioritized
                .insert((std::cmp::Reverse(priority), seq), entry);
        } else {
            self.queues[i].side_mut(side).push_back(entry);
        }
    }

    pub(crate) fn flush(&mut self, i: usize) {
        self.queues[i].flush();
    }

    pub(crate) fn flush_all(&mut self) {
        for q in &mut self.queues {
            q.flush();
        }
    }

    /// Replaces `info.worker_id`'s record, to expire at `expires`.
    pub(crate) fn publish_worker(&mut self, info: WorkerInfo, expires: Instant) {
        self.workers.insert(info.worker_id.clone(), (info, expires));
    }

    pub(crate) fn withdraw_worker(&mut self, id: &str) {
        self.workers.remove(id);
    }

    /// The records not expired at `now`, in listing order; expired ones are dropped.
    pub(crate) fn workers(&mut self, now: Instant) -> Vec<WorkerInfo> {
        self.workers.retain(|_, (_, expires)| *expires > now);
        let mut list: Vec<WorkerInfo> = self.workers.values().map(|(w, _)| w.clone()).collect();
        list.sort_by(WorkerInfo::listing_order);
        list
    }

    /// Registers a consumer of one side of queue `i` and returns its id.
    pub(crate) fn add_consumer(&mut self, i: usize, side: Side, prefetch: usize) -> u64 {
        let id = self.next_consumer;
        self.next_consumer += 1;
        self.queues[i].consumers.insert(
            id,
            ConsumerRec {
                side,
                prefetch,
                unsettled: HashMap::new(),
            },
        );
        id
    }

    /// Hands consumer `c` of queue `i` the oldest messages, as many as its prefetch leaves room for.
    /// `None` means the consumer is gone.
    pub(crate) fn take(&mut self, i: usize, c: u64) -> Option<Vec<Delivery>> {
        let State {
            queues, next_tag, ..
        } = self;
        let q = &mut queues[i];
        let rec = q.consumers.get_mut(&c)?;
        let room = rec.prefetch.saturating_sub(rec.unsettled.len());
        // Prioritized messages first, best first, then the plain queue.
        let mut entries = Vec::with_capacity(room.min(64));
        if rec.side == Side::Ready {
            while entries.len() < room {
                match q.prioritized.pop_first() {
                    Some((_, entry)) => entries.push(entry),
                    None => break,
                }
            }
        }
        let src = match rec.side {
            Side::Ready => &mut q.ready,
            Side::Delayed => &mut q.delayed,
        };
        let more = (room - entries.len()).min(src.len());
        entries.extend(src.drain(..more));
        let n = entries.len();
        let mut out = Vec::with_capacity(n);
        for entry in entries {
            let tag = *next_tag;
            *next_tag += 1;
            out.push(Delivery {
                token: Token::Tag(tag),
                body: entry.body.clone(),
                redelivered: entry.redelivered,
            });
            rec.unsettled.insert(tag, entry);
        }
        q.unsettled += n;
        Some(out)
    }

    /// Removes the listed deliveries of consumer `c` for good. Tags it does not hold are ignored,
    /// as Dramatiq's Redis broker ignores ids outside the consumer's ack set.
    pub(crate) fn ack(&mut self, i: usize, c: u64, tags: impl Iterator<Item = u64>) {
        let q = &mut self.queues[i];
        let Some(rec) = q.consumers.get_mut(&c) else {
            return;
        };
        let was_full = rec.unsettled.len() >= rec.prefetch;
        let side = rec.side;
        let mut settled = 0;
        for tag in tags {
            if rec.unsettled.remove(&tag).is_some() {
                settled += 1;
            } else {
                tracing::debug!(queue = %q.name, tag, "ack of a delivery this consumer does not hold");
            }
        }
        q.unsettled -= settled;
        if settled > 0 && was_full {
            q.notify(side).notify_waiters();
        }
        if settled > 0 && q.is_idle() {
            q.changed.notify_waiters();
        }
    }

    /// Moves one delivery of consumer `c` to the dead letters of its canonical queue.
    pub(crate) fn nack(&mut self, i: usize, c: u64, tag: u64, reason: &str) {
        let q = &mut self.queues[i];
        let Some(rec) = q.consumers.get_mut(&c) else {
            return;
        };
        let was_full = rec.unsettled.len() >= rec.prefetch;
        let Some(entry) = rec.unsettled.remove(&tag) else {
            tracing::debug!(queue = %q.name, tag, "nack of a delivery this consumer does not hold");
            return;
        };
        let side = rec.side;
        q.unsettled -= 1;
        q.dead.push(Dead {
            id: entry.id,
            body: entry.body,
            at: now_ms(),
            reason: reason.to_owned(),
        });
        if was_full {
            q.notify(side).notify_waiters();
        }
        q.changed.notify_waiters();
    }

    /// Puts deliveries of consumer `c` back at the tail of the queue they came from.
    pub(crate) fn requeue(&mut self, i: usize, c: u64, tags: impl Iterator<Item = u64>) {
        let q = &mut self.queues[i];
        let Some(rec) = q.consumers.get_mut(&c) else {
            return;
        };
        let side = rec.side;
        let mut back = Vec::new();
        for tag in tags {
            match rec.unsettled.remove(&tag) {
                Some(mut entry) => {
                    entry.redelivered = true;
                    back.push((tag, entry));
                }
                None => {
                    tracing::debug!(queue = %q.name, tag, "requeue of a delivery this consumer does not hold");
                }
            }
        }
        let moved = back.len();
        for (tag, entry) in back {
            give_back(q, side, tag, entry);
        }
        q.unsettled -= moved;
        if moved > 0 {
            q.notify(side).notify_waiters();
        }
    }

    /// Unregisters consumer `c`, requeueing what it still holds in the order it fetched it.
    pub(crate) fn remove_consumer(&mut self, i: usize, c: u64) {
        let q = &mut self.queues[i];
        let Some(rec) = q.consumers.remove(&c) else {
            return;
        };
        if rec.unsettled.is_empty() {
            return;
        }
        let mut held: Vec<(u64, Entry)> = rec.unsettled.into_iter().collect();
        held.sort_unstable_by_key(|(tag, _)| *tag);
        q.unsettled -= held.len();
        for (tag, mut entry) in held {
            entry.redelivered = true;
            give_back(q, rec.side, tag, entry);
        }
        q.notify(rec.side).notify_waiters();
    }
}

/// Puts back a delivery (tag `tag`) that was not processed: a prioritized one at the head of
/// its level (it was at the front when fetched; tags keep those given back in fetch order), any
/// other at the tail, as Dramatiq's requeue does.
fn give_back(q: &mut Queue, side: Side, tag: u64, entry: Entry) {
    if entry.priority > 0 && side == Side::Ready {
        let seq = i64::MIN.saturating_add(i64::try_from(tag).unwrap_or(i64::MAX));
        q.prioritized
            .insert((std::cmp::Reverse(entry.priority), seq), entry);
    } else {
        q.side_mut(side).push_back(entry);
    }
}

/// The state and its lock, shared by the broker's clones, its consumers and their ackers.
#[derive(Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // No operation leaves the state half-updated on panic (none panics while holding the lock
        // short of running out of memory), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_parse(name: &str, expected: Option<(&str, Side)>) {
        assert_eq!(parse_physical(name).ok(), expected, "{name}");
    }

    #[test]
    fn physical_names() {
        check_parse("default", Some(("default", Side::Ready)));
        check_parse("default.DQ", Some(("default", Side::Delayed)));
        check_parse("a.b-c_d", Some(("a.b-c_d", Side::Ready)));
        check_parse("default.XQ", None);
        check_parse("9lives", None);
        check_parse(".DQ", None);
        check_parse("", None);
        check_parse("a b", None);
    }

    fn tags(d: &[Delivery]) -> Vec<u64> {
        d.iter()
            .map(|d| match d.token {
                Token::Tag(t) => t,
                Token::Id(_) => panic!("stub issues tags"),
            })
            .collect()
    }

    #[test]
    fn unsettled_counter_tracks_every_settlement() {
        let mut st = State::default();
        let q = st.declare("q");
        for b in [b"1", b"2", b"3", b"4"] {
            st.push(q, Side::Ready, b.to_vec());
        }
        let c = st.add_consumer(q, Side::Ready, 10);
        let got = tags(&st.take(q, c).unwrap());
        assert_eq!(st.queue(q).counts(), (0, 0, 4));
        st.ack(q, c, [got[0]].into_iter());
        st.nack(q, c, got[1], "boom");
        st.requeue(q, c, [got[2]].into_iter());
        assert_eq!(st.queue(q).counts(), (1, 0, 1));
        st.remove_consumer(q, c);
        assert_eq!(st.queue(q).counts(), (2, 0, 0));
        assert_eq!(st.queue(q).stats().dead, 1);
        // Settling through a removed consumer changes nothing.
        st.ack(q, c, got.iter().copied());
        assert_eq!(st.queue(q).counts(), (2, 0, 0));
    }

    #[test]
    fn accounting_reports_each_dead_letter_once() {
        let mut st = State::default();
        let q = st.declare("q");
        st.push(q, Side::Ready, b"x".to_vec());
        st.push(q, Side::Ready, b"y".to_vec());
        let c = st.add_consumer(q, Side::Ready, 10);
        let got = tags(&st.take(q, c).unwrap());
        st.nack(q, c, got[0], "first");
        let new = st.queue_mut(q).take_unaccounted().unwrap();
        assert_eq!(new.len(), 1);
        assert!(st.queue_mut(q).take_unaccounted().is_none());
        st.nack(q, c, got[1], "second");
        let new = st.queue_mut(q).take_unaccounted().unwrap();
        assert_eq!(new[0].reason.as_deref(), Some("second"));
        assert_eq!(new[0].body, b"y");
    }
}
