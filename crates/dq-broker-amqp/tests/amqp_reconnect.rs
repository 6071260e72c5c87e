//! Losing RabbitMQ while running: consumers and producers reconnect with backoff, declare
//! again and go on; acks of deliveries from a dead channel are never sent on its successor; no
//! message is lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dq_broker_amqp::AmqpBroker;
use dq_core::{Acker, Broker, BrokerErrorKind, Consumer};

use crate::util::{self, Proxy, Queue, Vhost};

/// What happened while consuming.
#[derive(Default, Debug)]
struct Tally {
    seen: BTreeSet<u64>,
    deliveries: usize,
    stale_acks: usize,
    transient_errors: usize,
}

impl Tally {
    /// One fetch, acking everything it returns. Acks of deliveries from a channel that died
    /// meanwhile must fail as stale or as a lost connection (and those messages come again);
    /// fetch errors must be transient.
    async fn step(&mut self, consumer: &mut Box<dyn Consumer>, acker: &Arc<dyn Acker>) -> usize {
        match consumer.fetch(Duration::from_millis(200)).await {
            Ok(deliveries) => {
                let n = deliveries.len();
                for d in deliveries {
                    self.deliveries += 1;
                    self.seen.insert(util::arg_of(&d.body));
                    if let Err(e) = acker.ack(&[d.token]).await {
                        // Stale (the channel is known dead), or the connection failing under
                        // the ack itself: either way the message comes again.
                        assert!(
                            matches!(
                                e.kind(),
                                BrokerErrorKind::Closed | BrokerErrorKind::Connection
                            ),
                            "{e}"
                        );
                        self.stale_acks += 1;
                    }
                }
                n
            }
            Err(e) => {
                assert!(e.is_transient(), "a lost connection is transient: {e}");
                self.transient_errors += 1;
                // What the worker does: pause, then fetch again.
                tokio::time::sleep(Duration::from_millis(100)).await;
                0
            }
        }
    }

    /// Fetches until every one of `0..n` was seen and the queue has gone quiet.
    async fn finish(&mut self, consumer: &mut Box<dyn Consumer>, acker: &Arc<dyn Acker>, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut quiet = 0;
        while (self.seen.len() as u64) < n || quiet < 2 {
            assert!(
                Instant::now() < deadline,
                "not everything came back: {} of {n} seen, {self:?}",
                self.seen.len()
            );
            quiet = if self.step(consumer, acker).await == 0 {
                quiet + 1
            } else {
                0
            };
        }
        assert_eq!(self.seen, (0..n).collect::<BTreeSet<u64>>());
    }
}

/// Everything was acked: nothing is ready, and a new consumer gets nothing.
async fn assert_all_acked(broker: &AmqpBroker, queue: &str) {
    assert_eq!(broker.stats(queue).await.unwrap().ready, 0);
    let mut c = broker.consume(queue, 10).await.unwrap();
    assert!(c
        .fetch(Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_rabbitmq_are_reopened_without_losing_messages() {
    let base = util::init();
    // A vhost of its own, so closing its connections disturbs no other test.
    let vhost = Vhost::new(&base, false);
    let broker = util::broker(&vhost.url()).await;
    let queue = dq_test::unique_name("reconnect");
    let mut first: Vec<_> = (0..300).map(|i| util::msg(&queue, i)).collect();
    broker.enqueue_many(&mut first).await.unwrap();

    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    let acker = consumer.acker();
    let mut tally = Tally::default();
    while tally.deliveries < 50 {
        tally.step(&mut consumer, &acker).await;
    }
    // Some deliveries stay unacked across the loss: their delivery tags will name other
    // messages on the new channel.
    let held = util::fetch_n(&mut consumer, 5, Duration::from_secs(10)).await;
    let name = vhost.name.clone();
    tokio::task::spawn_blocking(move || {
        util::rabbitmqctl(&["close_all_connections", "-p", &name, "dq reconnect test"])
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tally.transient_errors == 0 {
        assert!(
            Instant::now() < deadline,
            "the consumer did not notice the close"
        );
        tally.step(&mut consumer, &acker).await;
    }
    // Consuming again on a new channel (whose tags restart at 1), the old tokens are refused
    // rather than acking whatever now has their tag.
    while tally.deliveries < 80 {
        tally.step(&mut consumer, &acker).await;
    }
    for d in held {
        let e = acker.ack(&[d.token]).await.unwrap_err();
        assert_eq!(e.kind(), BrokerErrorKind::Closed, "{e}");
    }

    // The producer rides it out: the publish fails on the dead connection, then succeeds on a
    // new one.
    let mut second: Vec<_> = (300..400).map(|i| util::msg(&queue, i)).collect();
    broker.enqueue_many(&mut second).await.unwrap();

    tally.finish(&mut consumer, &acker, 400).await;
    consumer.close().await.unwrap();
    assert_all_acked(&broker, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_unreachable_for_a_while_is_waited_out() {
    let base = util::init();
    let q = Queue::new("outage", &base);
    let mut proxy = Proxy::start(&base).await;
    let broker = util::broker(&proxy.url()).await;
    let mut first: Vec<_> = (0..200).map(|i| util::msg(&q.name, i)).collect();
    broker.enqueue_many(&mut first).await.unwrap();

    let mut consumer = broker.consume(&q.name, 20).await.unwrap();
    let acker = consumer.acker();
    let mut tally = Tally::default();
    while tally.deliveries < 30 {
        tally.step(&mut consumer, &acker).await;
    }

    proxy.down().await;
    // The consumer notices, and while nothing answers it keeps reporting transient errors or
    // nothing, never a hard failure.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tally.transient_errors == 0 {
        assert!(Instant::now() < deadline, "the loss went unnoticed");
        tally.step(&mut consumer, &acker).await;
    }
    let sender = {
        let broker = broker.clone();
        let mut second: Vec<_> = (200..300).map(|i| util::msg(&q.name, i)).collect();
        tokio::spawn(async move { broker.enqueue_many(&mut second).await })
    };
    let outage_end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < outage_end {
        tally.step(&mut consumer, &acker).await;
    }
    proxy.up().await;

    sender
        .await
        .unwrap()
        .expect("an enqueue started during a short outage succeeds once RabbitMQ is back");
    tally.finish(&mut consumer, &acker, 300).await;
    consumer.close().await.unwrap();
    assert_all_acked(&broker, &q.name).await;
}
