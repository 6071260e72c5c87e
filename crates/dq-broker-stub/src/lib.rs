//! # dq-broker-stub
//!
//! An in-memory [`Broker`](dq_core::Broker) for tests and for the embedded quickstart, where the
//! producer and the worker share one process: real queues, delay queues (`q.DQ`) and dead letters
//! (`q.XQ`, kept with the reason of each nack), and [`StubBroker::join`], which waits until a
//! queue's work is all done. It is Dramatiq's `StubBroker`, rebuilt.
//!
//! **Key design decision:** the stub behaves like a real broker rather than a convenient fake.
//! Bodies are stored encoded, exactly as Redis or RabbitMQ would hold them; consumers respect their
//! prefetch bound; a delivery stays unsettled until it is acked, nacked or requeued, and one still
//! held when its consumer closes goes back to the queue marked redelivered. Delays are not
//! scheduled here either: as on Redis and RabbitMQ, a delayed message waits on `q.DQ` until a
//! worker's delay-queue consumer takes it. So a test that passes on the stub exercises the same
//! delivery path as production, and `join` can mean "every message was processed", not merely
//! "the queue is empty".
//!
//! The one deliberate difference from Dramatiq: queues are declared on first enqueue or consume,
//! where Dramatiq's stub raises `QueueNotFound`. `join` still refuses a queue nothing ever touched,
//! to catch misspelt names.
//!
//! Everything is behind one mutex, held only for short synchronous steps; waiting consumers and
//! joins are woken by notifications, never by polling.
//!
//! ```
//! use std::time::Duration;
//! use dq_broker_stub::StubBroker;
//! use dq_core::{Broker, Message};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = StubBroker::new();
//! let mut msg = Message::new("default", "add", &(1, 2), &())?;
//! broker.enqueue(&mut msg).await?;
//!
//! let mut consumer = broker.consume("default", 8).await?;
//! let deliveries = consumer.fetch(Duration::from_secs(1)).await?;
//! assert_eq!(Message::decode(&deliveries[0].body)?.message_id, msg.message_id);
//! assert_eq!(broker.stats("default").await?.in_flight, 1);
//!
//! consumer.acker().ack(&[deliveries[0].token.clone()]).await?;
//! let stats = broker.stats("default").await?;
//! assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 0));
//! broker.join("default", Some(Duration::from_secs(1))).await?;
//! # Ok(()) }
//! ```
//!
//! This crate has no cargo features.

mod broker;
mod consumer;
mod error;
mod state;

pub use broker::{JoinOptions, StubBroker};
pub use error::{Error, JoinError, Result};
