//! The worker registry on RabbitMQ: what running workers publish about themselves.
//!
//! RabbitMQ keeps messages, not values, so the registry is a queue of dq's own,
//! [`WORKERS_QUEUE`] (`dq:workers`: the colon keeps it apart from every Dramatiq queue name,
//! so no actor can ever use it and no Dramatiq worker consumes it). Each worker publishes its
//! [`WorkerInfo`] there at every refresh, as a transient message that expires (`expiration`)
//! after its TTL; a stopping worker publishes a withdrawal. A reader fetches every message
//! without acking, keeps the newest per worker id (a later message in the queue is a newer
//! one), then gives them all back with one `basic.nack(requeue)`, so nothing is consumed.
//!
//! A reader holding the messages hides them from another reader meanwhile, so readers take
//! turns: each holds the exclusive queue [`LOCK_QUEUE`] while it reads (RabbitMQ refuses a
//! second connection's declaration with 405 RESOURCE_LOCKED, and deletes the queue if its
//! holder's connection dies).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dq_core::{BrokerError, BrokerErrorKind, WorkerInfo};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;

use crate::broker::{close_quietly, give_back, if_exists, Inner, Link, Role};
use crate::error::{broker_error, reply_code};

/// The queue workers publish themselves to: durable, classic, at most [`MAX_RECORDS`]
/// messages (the oldest are dropped first), each transient and expiring with its TTL.
pub const WORKERS_QUEUE: &str = "dq:workers";

/// The exclusive queue a reader of [`WORKERS_QUEUE`] holds while it reads.
pub const LOCK_QUEUE: &str = "dq:workers.lock";

/// `x-max-length` of [`WORKERS_QUEUE`]: room for about 1,500 workers refreshing every 10 s
/// with a 60 s TTL. It must stay the same in every dq version: RabbitMQ refuses a declaration
/// with other arguments.
pub const MAX_RECORDS: i32 = 10_000;

/// The AMQP `type` of a message holding a [`WorkerInfo`].
const RECORD: &str = "dq.worker";
/// The AMQP `type` of a withdrawal; its `message-id` is the worker id.
const WITHDRAWN: &str = "dq.worker.withdrawn";
/// How long a withdrawal of a worker this broker did not publish is kept: longer than any
/// record of it could live under the default TTL.
const UNKNOWN_TTL: Duration = Duration::from_secs(600);
/// How long a reader waits for another to finish.
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// This broker's side of the registry.
#[derive(Default)]
pub(crate) struct Registry {
    /// The TTL each worker was last published with, for its withdrawal.
    ttls: Mutex<HashMap<String, Duration>>,
    /// Readers of one broker take turns here: the lock queue does not tell one connection's
    /// readers apart.
    reading: tokio::sync::Mutex<()>,
}

fn options(exclusive: bool) -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: false,
        durable: !exclusive,
        exclusive,
        auto_delete: false,
        nowait: false,
    }
}

fn arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("classic")),
    );
    args.insert("x-max-length".into(), AMQPValue::LongInt(MAX_RECORDS));
    args
}

fn ttl_ms(ttl: Duration) -> String {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
        .to_string()
}

/// The longest worker id a message id carries (an AMQP short string).
const MAX_ID: usize = 255;

fn check_id(worker_id: &str) -> Result<(), BrokerError> {
    if worker_id.is_empty() || worker_id.len() > MAX_ID {
        return Err(BrokerError::new(
            BrokerErrorKind::Rejected,
            format!(
                "a worker id must have 1 to {MAX_ID} bytes, not {}",
                worker_id.len()
            ),
        ));
    }
    Ok(())
}

impl Inner {
    /// Publishes one registry message on a channel of its own: declared, published, closed
    /// (the close waits until RabbitMQ has routed the publish before it).
    async fn publish_entry(
        &self,
        kind: &str,
        worker_id: &str,
        body: &[u8],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let link = self.link(Role::Publisher).await?;
        let channel = link
            .conn
            .create_channel()
            .await
            .map_err(|e| broker_error(e, "opening a channel for the worker registry"))?;
        let result = async {
            channel
                .queue_declare(WORKERS_QUEUE.into(), options(false), arguments())
                .await
                .map_err(|e| broker_error(e, format!("declaring {WORKERS_QUEUE}")))?;
            let props = BasicProperties::default()
                .with_delivery_mode(1)
                .with_type(kind.into())
                .with_message_id(worker_id.into())
                .with_expiration(ttl_ms(ttl).into());
            channel
                .basic_publish(
                    "".into(),
                    WORKERS_QUEUE.into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .map_err(|e| broker_error(e, format!("publishing to {WORKERS_QUEUE}")))?;
            channel
                .close(200, "published".into())
                .await
                .map_err(|e| broker_error(e, format!("publishing to {WORKERS_QUEUE}")))
        }
        .await;
        if result.is_err() {
            close_quietly(channel).await;
        }
        result
    }

    pub(crate) async fn publish_worker(
        &self,
        info: &WorkerInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        check_id(&info.worker_id)?;
        self.registry
            .ttls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.worker_id.clone(), ttl);
        self.publish_entry(RECORD, &info.worker_id, &info.encode(), ttl)
            .await
    }

    pub(crate) async fn withdraw_worker(&self, worker_id: &str) -> Result<(), BrokerError> {
        check_id(worker_id)?;
        let ttl = self
            .registry
            .ttls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(worker_id)
            .unwrap_or(UNKNOWN_TTL);
        // Outlives every record of the worker: they expire no later than `ttl` from now.
        self.publish_entry(WITHDRAWN, worker_id, b"", ttl).await
    }

    pub(crate) async fn workers(&self) -> Result<Vec<WorkerInfo>, BrokerError> {
        let _turn = self.registry.reading.lock().await;
        let link = self.link(Role::Publisher).await?;
        let lock = take_lock(&link).await?;
        let read = read_registry(&link).await;
        // Deleting the lock queue lets the next reader in; if that fails, closing the
        // connection would too, and the channel's close does not.
        if let Err(e) = lock
            .queue_delete(LOCK_QUEUE.into(), Default::default())
            .await
        {
            tracing::debug!(error = %e, "deleting {LOCK_QUEUE}");
        }
        close_quietly(lock).await;
        read
    }
}

/// Declares the exclusive lock queue, waiting while another connection holds it.
async fn take_lock(link: &Link) -> Result<lapin::Channel, BrokerError> {
    let deadline = tokio::time::Instant::now() + LOCK_PATIENCE;
    loop {
        let channel = link
            .conn
            .create_channel()
            .await
            .map_err(|e| broker_error(e, "opening a channel for the worker registry"))?;
        match channel
            .queue_declare(LOCK_QUEUE.into(), options(true), FieldTable::default())
            .await
        {
            Ok(_) => return Ok(channel),
            // RESOURCE_LOCKED: another reader's; it closed our channel.
            Err(e) if reply_code(&e) == Some(405) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(BrokerError::new(
                        BrokerErrorKind::Timeout,
                        format!(
                            "another reader held the worker registry ({LOCK_QUEUE}) for over {LOCK_PATIENCE:?}"
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(broker_error(e, format!("declaring {LOCK_QUEUE}"))),
        }
    }
}

/// Every message of the registry queue, fetched unacked and given back; the newest entry per
/// worker id decides whether it is listed.
async fn read_registry(link: &Link) -> Result<Vec<WorkerInfo>, BrokerError> {
    let mut channel = link
        .conn
        .create_channel()
        .await
        .map_err(|e| broker_error(e, "opening a channel for the worker registry"))?;
    let mut latest: HashMap<String, Option<WorkerInfo>> = HashMap::new();
    let mut last_tag = None;
    // Bounded: workers may publish while we read.
    for _ in 0..(2 * MAX_RECORDS) {
        let got = if_exists(
            link,
            &mut channel,
            &format!("reading {WORKERS_QUEUE}"),
            |ch| async move {
                ch.basic_get(WORKERS_QUEUE.into(), BasicGetOptions { no_ack: false })
                    .await
            },
        )
        .await?;
        let Some(Some(m)) = got else { break };
        let d = m.delivery;
        last_tag = Some(d.delivery_tag);
        let kind = d.properties.kind().as_ref().map(|k| k.as_str());
        match kind {
            Some(RECORD) => match WorkerInfo::decode(&d.data) {
                Ok(info) => {
                    latest.insert(info.worker_id.clone(), Some(info));
                }
                Err(e) => tracing::debug!(error = %e, "unreadable worker record"),
            },
            Some(WITHDRAWN) => {
                if let Some(id) = d.properties.message_id() {
                    latest.insert(id.to_string(), None);
                }
            }
            _ => {}
        }
    }
    let given_back = match last_tag {
        Some(tag) => give_back(&channel, tag, WORKERS_QUEUE).await,
        None => Ok(()),
    };
    // Closing the channel would give them back too, should the nack have failed.
    close_quietly(channel).await;
    given_back?;
    let mut workers: Vec<WorkerInfo> = latest.into_values().flatten().collect();
    workers.sort_by(WorkerInfo::listing_order);
    Ok(workers)
}
