//! The stub's consumer and acker.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use dq_core::{async_trait, Acker, BrokerError, BrokerErrorKind, Consumer, Delivery, Token};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::Error;
use crate::state::Shared;

/// Settles the deliveries of one [`StubConsumer`]. A token of another consumer, of a delivery
/// already settled, or of a consumer already closed is ignored, as on Dramatiq's Redis broker.
pub(crate) struct StubAcker {
    shared: Arc<Shared>,
    queue: usize,
    consumer: u64,
}

fn tag_of(token: &Token) -> Result<u64, Error> {
    match token {
        Token::Tag(t) => Ok(*t),
        Token::Id(_) => Err(Error::ForeignToken(token.clone())),
    }
}

fn check_tokens(tokens: &[Token], doing: &str) -> Result<(), BrokerError> {
    for t in tokens {
        tag_of(t).map_err(|e| e.into_broker(doing))?;
    }
    Ok(())
}

fn tags(tokens: &[Token]) -> impl Iterator<Item = u64> + '_ {
    tokens.iter().filter_map(|t| tag_of(t).ok())
}

#[async_trait]
impl Acker for StubAcker {
    async fn ack(&self, tokens: &[Token]) -> Result<(), BrokerError> {
        check_tokens(tokens, "ack")?;
        self.shared
            .lock()
            .ack(self.queue, self.consumer, tags(tokens));
        Ok(())
    }

    async fn nack(&self, token: &Token, reason: &str) -> Result<(), BrokerError> {
        let tag = tag_of(token).map_err(|e| e.into_broker("nack"))?;
        self.shared
            .lock()
            .nack(self.queue, self.consumer, tag, reason);
        Ok(())
    }

    async fn requeue(&self, tokens: &[Token]) -> Result<(), BrokerError> {
        check_tokens(tokens, "requeue")?;
        self.shared
            .lock()
            .requeue(self.queue, self.consumer, tags(tokens));
        Ok(())
    }
}

/// A consumer of one physical queue (`q` or `q.DQ`) of a [`StubBroker`](crate::StubBroker).
///
/// Dropping it without [`close`](Consumer::close) requeues what it holds too, as a real broker
/// redelivers when a connection goes away.
pub(crate) struct StubConsumer {
    name: String,
    notify: Arc<Notify>,
    acker: Arc<StubAcker>,
}

impl StubConsumer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        name: &str,
        queue: usize,
        consumer: u64,
        notify: Arc<Notify>,
    ) -> StubConsumer {
        StubConsumer {
            name: name.to_owned(),
            notify,
            acker: Arc::new(StubAcker {
                shared,
                queue,
                consumer,
            }),
        }
    }

    fn take(&self) -> Result<Vec<Delivery>, BrokerError> {
        let a = &self.acker;
        a.shared.lock().take(a.queue, a.consumer).ok_or_else(|| {
            BrokerError::new(
                BrokerErrorKind::Closed,
                format!("consumer of {} is closed", self.name),
            )
        })
    }
}

#[async_trait]
impl Consumer for StubConsumer {
    fn queue(&self) -> &str {
        &self.name
    }

    async fn fetch(&mut self, timeout: Duration) -> Result<Vec<Delivery>, BrokerError> {
        // A timeout too large for the clock means "wait until something arrives".
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // Registered before looking, so an enqueue between the look and the wait still wakes us.
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            let got = self.take()?;
            if !got.is_empty() {
                return Ok(got);
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, notified).await.is_err() {
                        return Ok(got);
                    }
                }
                None => notified.await,
            }
        }
    }

    fn acker(&self) -> Arc<dyn Acker> {
        self.acker.clone()
    }

    async fn close(self: Box<Self>) -> Result<(), BrokerError> {
        // Drop requeues what is still held.
        drop(self);
        Ok(())
    }
}

impl Drop for StubConsumer {
    fn drop(&mut self) {
        let a = &self.acker;
        a.shared.lock().remove_consumer(a.queue, a.consumer);
    }
}
