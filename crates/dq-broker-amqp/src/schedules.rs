//! Periodic schedules on RabbitMQ without a Redis: one leader, elected through the broker.
//!
//! AMQP has no compare-and-set, so the claim of a tick cannot be one step with its publish as on
//! Redis. Instead, per schedule, the process whose publisher connection holds the exclusive queue
//! `dq:schedules.leader.<name>` ([`LEADER_QUEUE`] and the name) is the leader and the only one
//! whose claims succeed; every other process's claim is "taken". A leader per schedule, so that
//! apps sharing a vhost with different schedules do not wait on each other. RabbitMQ deletes an exclusive queue when its connection closes, so when the
//! leader dies (or loses its connection) the next process to try a tick takes over: every
//! process tries every tick, so no tick passes without a candidate.
//!
//! The leader remembers the latest tick per schedule for the duration of its leadership, and
//! writes it with the schedule's [`ScheduleState`] to the durable queue `dq:schedule.<name>`
//! (`x-max-length` 1: the newest record only), which a new leader reads first. What failover
//! costs: a tick the old leader published but had not recorded when it died may be published
//! again by the new leader (with the same deterministic `message_id`); a leader that vanishes
//! without closing its connection keeps the lock until RabbitMQ's heartbeat timeout, and the
//! ticks in between follow the schedule's missed-tick policy.
//!
//! `no_overlap` needs a store that a consumer can update safely: it is refused here (give the
//! periodic middleware a Redis to claim ticks in).
//!
//! The names of schedules are listed in the durable queue [`SCHEDULES_QUEUE`] (one message per
//! schedule and leadership, expiring with the record TTL) for `dq schedules`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use dq_core::{BrokerError, BrokerErrorKind, ScheduleState, TickClaim, TickOutcome};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;

use crate::broker::{close_quietly, give_back, Inner, Link, Role};
use crate::error::{broker_error, reply_code};

/// The prefix of the exclusive queue a schedule's leader's publisher connection holds.
pub const LEADER_QUEUE: &str = "dq:schedules.leader.";
/// The index of schedule names.
pub const SCHEDULES_QUEUE: &str = "dq:schedules";
/// The prefix of each schedule's record queue.
const RECORD_PREFIX: &str = "dq:schedule.";
/// `x-max-length` of the index.
const MAX_INDEX: i32 = 10_000;
/// The AMQP `type` of a record.
const RECORD: &str = "dq.schedule";

/// This broker's side of the leadership.
#[derive(Default)]
pub(crate) struct Leadership {
    /// Per schedule, the connection its leader queue was declared on, while it lives.
    held_on: Mutex<HashMap<String, Weak<Link>>>,
    /// The latest tick per schedule, known or recorded during this leadership.
    ticks: Mutex<HashMap<String, i64>>,
    /// The schedules listed in the index during this leadership.
    indexed: Mutex<HashSet<String>>,
    /// One claim at a time.
    claiming: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn declare_options(exclusive: bool) -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: false,
        durable: !exclusive,
        exclusive,
        auto_delete: false,
        nowait: false,
    }
}

fn arguments(max_length: i32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("classic")),
    );
    args.insert("x-max-length".into(), AMQPValue::LongInt(max_length));
    args
}

fn record_queue(name: &str) -> Result<String, BrokerError> {
    let q = format!("{RECORD_PREFIX}{name}");
    if q.len().max(LEADER_QUEUE.len() + name.len()) > 255 {
        return Err(BrokerError::new(
            BrokerErrorKind::Rejected,
            format!("schedule name {name:?} is too long for a RabbitMQ queue name"),
        ));
    }
    Ok(q)
}

impl Inner {
    /// Whether this broker leads schedule `name`, taking the lead if nobody holds it.
    async fn lead(&self, link: &Arc<Link>, name: &str) -> Result<bool, BrokerError> {
        let s = &self.leadership;
        if lock(&s.held_on)
            .get(name)
            .and_then(Weak::upgrade)
            .is_some_and(|held| Arc::ptr_eq(&held, link))
        {
            return Ok(true);
        }
        let leader_queue = format!("{LEADER_QUEUE}{name}");
        let channel = link
            .conn
            .create_channel()
            .await
            .map_err(|e| broker_error(e, "opening a channel for the schedules' leader"))?;
        match channel
            .queue_declare(
                leader_queue.as_str().into(),
                declare_options(true),
                FieldTable::default(),
            )
            .await
        {
            Ok(_) => {
                close_quietly(channel).await;
                lock(&s.held_on).insert(name.to_owned(), Arc::downgrade(link));
                lock(&s.ticks).remove(name);
                lock(&s.indexed).remove(name);
                tracing::info!(
                    schedule = name,
                    "this process now leads schedule {name} ({leader_queue})"
                );
                Ok(true)
            }
            // RESOURCE_LOCKED: another connection leads (and our channel is closed).
            Err(e) if reply_code(&e) == Some(405) => Ok(false),
            Err(e) => {
                close_quietly(channel).await;
                Err(broker_error(e, format!("declaring {leader_queue}")))
            }
        }
    }

    /// The recorded state of schedule `name`, if any.
    async fn read_record(
        &self,
        link: &Link,
        name: &str,
    ) -> Result<Option<ScheduleState>, BrokerError> {
        let queue = record_queue(name)?;
        let channel = link
            .conn
            .create_channel()
            .await
            .map_err(|e| broker_error(e, "opening a channel for a schedule record"))?;
        let result = async {
            channel
                .queue_declare(queue.as_str().into(), declare_options(false), arguments(1))
                .await
                .map_err(|e| broker_error(e, format!("declaring {queue}")))?;
            let got = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| broker_error(e, format!("reading {queue}")))?;
            let Some(m) = got else { return Ok(None) };
            let state = ScheduleState::decode(&m.delivery.data).ok();
            give_back(&channel, m.delivery.delivery_tag, &queue).await?;
            Ok(state)
        }
        .await;
        close_quietly(channel).await;
        result
    }

    /// Publishes `state` as schedule `name`'s record (persistent, confirmed) and, once per
    /// leadership, the name to the index.
    async fn write_record(
        &self,
        link: &Link,
        state: &ScheduleState,
        ttl_ms: u64,
    ) -> Result<(), BrokerError> {
        let queue = record_queue(&state.name)?;
        let index = !lock(&self.leadership.indexed).contains(&state.name);
        let channel = link
            .conn
            .create_channel()
            .await
            .map_err(|e| broker_error(e, "opening a channel for a schedule record"))?;
        let result = async {
            channel
                .confirm_select(Default::default())
                .await
                .map_err(|e| broker_error(e, "selecting confirms"))?;
            channel
                .queue_declare(queue.as_str().into(), declare_options(false), arguments(1))
                .await
                .map_err(|e| broker_error(e, format!("declaring {queue}")))?;
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_type(RECORD.into())
                .with_message_id(state.name.as_str().into())
                .with_expiration(ttl_ms.max(1).to_string().into());
            let mut confirms = vec![channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &state.encode(),
                    props.clone(),
                )
                .await
                .map_err(|e| broker_error(e, format!("publishing to {queue}")))?];
            if index {
                channel
                    .queue_declare(
                        SCHEDULES_QUEUE.into(),
                        declare_options(false),
                        arguments(MAX_INDEX),
                    )
                    .await
                    .map_err(|e| broker_error(e, format!("declaring {SCHEDULES_QUEUE}")))?;
                confirms.push(
                    channel
                        .basic_publish(
                            "".into(),
                            SCHEDULES_QUEUE.into(),
                            BasicPublishOptions::default(),
                            state.name.as_bytes(),
                            props,
                        )
                        .await
                        .map_err(|e| broker_error(e, format!("publishing to {SCHEDULES_QUEUE}")))?,
                );
            }
            for c in confirms {
                c.await
                    .map_err(|e| broker_error(e, format!("recording schedule {}", state.name)))?;
            }
            Ok(())
        }
        .await;
        close_quietly(channel).await;
        if result.is_ok() && index {
            lock(&self.leadership.indexed).insert(state.name.clone());
        }
        result
    }

    /// Claims the tick if this process leads; see the module's notes. `publish` enqueues the
    /// message (the broker's confirmed publish).
    pub(crate) async fn claim_tick<F, Fut>(
        &self,
        claim: &TickClaim<'_>,
        publish: F,
    ) -> Result<TickOutcome, BrokerError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), BrokerError>>,
    {
        if claim.no_overlap {
            return Err(BrokerError::unsupported(
                "amqp",
                "no_overlap schedules without a Redis to claim ticks in",
            ));
        }
        let _one = self.leadership.claiming.lock().await;
        let link = self.link(Role::Publisher).await?;
        record_queue(claim.schedule)?;
        if !self.lead(&link, claim.schedule).await? {
            return Ok(TickOutcome::Taken);
        }
        let known = lock(&self.leadership.ticks).get(claim.schedule).copied();
        let last = match known {
            Some(t) => Some(t),
            None => self
                .read_record(&link, claim.schedule)
                .await?
                .map(|s| s.last_tick_ms),
        };
        if last.is_some_and(|t| t >= claim.tick_ms) {
            if let Some(t) = last {
                lock(&self.leadership.ticks).insert(claim.schedule.to_owned(), t);
            }
            return Ok(TickOutcome::Taken);
        }
        publish().await?;
        lock(&self.leadership.ticks).insert(claim.schedule.to_owned(), claim.tick_ms);
        if let Err(e) = self
            .write_record(&link, claim.state, claim.record_ttl_ms)
            .await
        {
            // The message is out; only a failover before the next record could repeat it.
            tracing::warn!(schedule = claim.schedule, error = %dq_core::ErrorChain(&e), "could not record schedule {}'s tick", claim.schedule);
        }
        Ok(TickOutcome::Enqueued)
    }

    /// The schedules of the index, with their records.
    pub(crate) async fn schedules(&self) -> Result<Vec<ScheduleState>, BrokerError> {
        let link = self.link(Role::Publisher).await?;
        let channel = link
            .conn
            .create_channel()
            .await
            .map_err(|e| broker_error(e, "opening a channel for the schedules"))?;
        let names = async {
            channel
                .queue_declare(
                    SCHEDULES_QUEUE.into(),
                    declare_options(false),
                    arguments(MAX_INDEX),
                )
                .await
                .map_err(|e| broker_error(e, format!("declaring {SCHEDULES_QUEUE}")))?;
            let mut names = Vec::new();
            let mut last_tag = None;
            for _ in 0..(2 * MAX_INDEX) {
                let got = channel
                    .basic_get(SCHEDULES_QUEUE.into(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(|e| broker_error(e, format!("reading {SCHEDULES_QUEUE}")))?;
                let Some(m) = got else { break };
                last_tag = Some(m.delivery.delivery_tag);
                names.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
            }
            if let Some(tag) = last_tag {
                give_back(&channel, tag, SCHEDULES_QUEUE).await?;
            }
            Ok::<_, BrokerError>(names)
        }
        .await;
        close_quietly(channel).await;
        let mut names = names?;
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            if let Some(mut s) = self.read_record(&link, &name).await? {
                s.name = name;
                out.push(s);
            }
        }
        Ok(out)
    }
}
