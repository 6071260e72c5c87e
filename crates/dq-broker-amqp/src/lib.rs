//! # dq-broker-amqp
//!
//! The RabbitMQ broker of dq, Dramatiq rebuilt in Rust. Its queues are Python Dramatiq 2.2.1's
//! queues: a Python producer can feed a dq worker, a dq producer a Python worker, and Python and
//! Rust workers can consume one queue side by side.
//!
//! **Key design decision:** everything another Dramatiq process can observe is done exactly as
//! Python does it, and everything it cannot is done the safe way.
//! - Observable: for a canonical queue `q` it declares `q`, `q.DQ` and `q.XQ`, durable, with
//!   Python's arguments (dead letters to `q.XQ` through the default exchange, `x-max-priority`
//!   when set, `x-message-ttl` on `q.XQ`), so neither side ever meets a 406
//!   PRECONDITION_FAILED; it publishes persistent messages to the default exchange with only
//!   `delivery_mode` and `priority` set; it acks after processing and nacks to dead letters.
//! - Safe: enqueues wait for RabbitMQ's publisher confirm; publishing and consuming use separate
//!   connections (a publisher blocked by a resource alarm cannot stop acks); every consumer has
//!   its own channel and prefetch; after a lost connection everything reconnects with backoff
//!   and declares again, and an ack meant for a delivery of a dead channel is never sent on its
//!   successor, where the same delivery tag names another message.
//!
//! ```no_run
//! use std::time::Duration;
//! use dq_broker_amqp::AmqpBroker;
//! use dq_core::{Broker, Message};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One vhost per application; the password never shows in logs, errors or `Debug`.
//! let broker = AmqpBroker::builder()
//!     .url("amqp://billing:secret@127.0.0.1:5672/billing")
//!     .max_priority(Some(10))
//!     .build()
//!     .await?;
//!
//! // A producer: returns once RabbitMQ has confirmed the message.
//! let mut msg = Message::new("emails", "send_welcome", &("ann@example.com",), &())?;
//! broker.enqueue(&mut msg).await?;
//!
//! // A consumer, as the worker drives it: fetch, process, ack.
//! let mut consumer = broker.consume("emails", 16).await?;
//! let acker = consumer.acker();
//! for delivery in consumer.fetch(Duration::from_secs(1)).await? {
//!     let message = Message::decode(&delivery.body)?;
//!     println!("processing {message}");
//!     acker.ack(&[delivery.token]).await?;
//! }
//! consumer.close().await?;
//! # Ok(()) }
//! ```
//!
//! | setting | default | Python Dramatiq |
//! |---|---|---|
//! | URL | env `DQ_AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672/%2f` | `url=` |
//! | `max_priority` | none | `max_priority=` |
//! | `dead_message_ttl` | env `dramatiq_dead_message_ttl`, else 7 days | the same |
//! | `confirm_delivery` | `true` | `confirm_delivery=False` |
//!
//! `amqps://` URLs use rustls (ring) with the system's root certificates. Delivery tokens are
//! [`Token::Tag`](dq_core::Token::Tag)s holding the channel generation in their top 16 bits and
//! the AMQP delivery tag in the rest. Dead letters keep no reason in RabbitMQ: the reason is
//! logged when a message is nacked.
//!
//! The worker registry ([`Broker::publish_worker`](dq_core::Broker::publish_worker), what
//! `dq actors` reads) is the queue [`WORKERS_QUEUE`] (`dq:workers`), which no Dramatiq queue
//! name can collide with: each worker publishes its record there as a message expiring with
//! its TTL, and readers fetch and give back every message, one reader at a time
//! ([`LOCK_QUEUE`]).
//!
//! Secrets: this crate shows URLs only with the password replaced by `***`, in its logs, errors
//! and `Debug` output alike. lapin, underneath, logs every frame it writes at TRACE level, the
//! login frame with the password included; keep the `lapin` target at DEBUG or quieter in
//! production (`RUST_LOG=info,lapin=info`).

#![doc(test(attr(deny(warnings))))]

mod broker;
mod consumer;
mod declare;
mod error;
mod schedules;
mod url;
mod workers;

pub use broker::{AmqpBroker, AmqpBrokerBuilder, URL_ENV};
pub use declare::{queue_arguments, ArgumentValue, QueueArguments, DEFAULT_DEAD_MESSAGE_TTL_MS};
pub use error::AmqpBrokerError;
pub use schedules::{LEADER_QUEUE, SCHEDULES_QUEUE};
pub use url::DEFAULT_URL;
pub use workers::{LOCK_QUEUE, MAX_RECORDS, WORKERS_QUEUE};

/// Entry points for the fuzz targets (`fuzz/`, `dq-fuzz`): not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    use dq_core::Message;

    /// Parses `bytes` as the basic properties of a content header (what RabbitMQ sends with a
    /// delivery or a `basic.get`) and reads them as the broker does: `Some(dead_lettered_at)`
    /// from the `x-death` header, or `None` when the bytes are not properties.
    pub fn delivery_properties(bytes: &[u8]) -> Option<Option<i64>> {
        let (_, props) = lapin::protocol::basic::parse_properties(bytes).ok()?;
        Some(crate::broker::death_time_ms(&props))
    }

    /// The priority `message` is published with (from its `broker_priority` option), and that
    /// the properties are persistent.
    pub fn publish_priority(message: &Message) -> (Option<u8>, bool) {
        let props = crate::broker::publish_properties(message);
        (*props.priority(), *props.delivery_mode() == Some(2))
    }
}
