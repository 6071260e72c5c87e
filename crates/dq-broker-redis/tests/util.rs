//! Test support: a unique namespace per test, raw access to its keys, cleanup on drop.

use std::time::Duration;

use dq_broker_redis::{RedisBroker, RedisBrokerBuilder};
use dq_core::{Broker, Consumer, Delivery, Message};
use redis::aio::MultiplexedConnection;

pub(crate) fn redis_url() -> String {
    std::env::var("DQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A namespace of its own for one test; its keys are deleted when it is dropped.
pub(crate) struct Ns {
    pub(crate) name: String,
    client: redis::Client,
}

impl Ns {
    pub(crate) fn new() -> Ns {
        let url = redis_url();
        let client = redis::Client::open(url.as_str()).expect("valid DQ_REDIS_URL");
        Ns {
            name: format!("dqtest-{}", uuid::Uuid::new_v4()),
            client,
        }
    }

    pub(crate) fn builder(&self) -> RedisBrokerBuilder {
        RedisBroker::builder()
            .url(redis_url())
            .namespace(&self.name)
    }

    pub(crate) async fn broker(&self) -> RedisBroker {
        match self.builder().build().await {
            Ok(b) => b,
            Err(e) => panic!("redis is needed at {} for these tests: {e}", redis_url()),
        }
    }

    pub(crate) async fn raw(&self) -> MultiplexedConnection {
        self.client
            .get_multiplexed_async_connection()
            .await
            .expect("raw redis connection")
    }

    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.name)
    }

    pub(crate) async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut self.raw().await)
            .await
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    pub(crate) async fn list(&self, name: &str) -> Vec<String> {
        self.cmd(&["LRANGE", &self.key(name), "0", "-1"]).await
    }

    pub(crate) async fn set(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self.cmd(&["SMEMBERS", &self.key(name)]).await;
        v.sort();
        v
    }

    pub(crate) async fn hget(&self, name: &str, field: &str) -> Option<String> {
        self.cmd(&["HGET", &self.key(name), field]).await
    }

    pub(crate) async fn hlen(&self, name: &str) -> usize {
        self.cmd(&["HLEN", &self.key(name)]).await
    }

    pub(crate) async fn acks(&self, broker: &RedisBroker, queue: &str) -> Vec<String> {
        self.set(&format!("__acks__.{}.{queue}", broker.broker_id()))
            .await
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(mut conn) = self.client.get_connection() {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.name))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}

pub(crate) fn message(queue: &str, n: i64) -> Message {
    Message::new(queue, "work", &(n,), &()).expect("message")
}

pub(crate) async fn enqueue(broker: &RedisBroker, queue: &str, n: i64) -> Message {
    let mut m = message(queue, n);
    broker.enqueue(&mut m).await.expect("enqueue");
    m
}

/// Enqueues messages `0..count` to `queue` in one batch.
pub(crate) async fn enqueue_batch(broker: &RedisBroker, queue: &str, count: i64) -> Vec<Message> {
    let mut messages: Vec<Message> = (0..count).map(|i| message(queue, i)).collect();
    broker
        .enqueue_many(&mut messages)
        .await
        .expect("enqueue_many");
    messages
}

/// Fetches until `count` deliveries arrived (or panics after a while).
pub(crate) async fn fetch_n(consumer: &mut Box<dyn Consumer>, count: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    for _ in 0..50 {
        if out.len() >= count {
            break;
        }
        out.extend(
            consumer
                .fetch(Duration::from_millis(200))
                .await
                .expect("fetch"),
        );
    }
    assert_eq!(out.len(), count, "deliveries");
    out
}

pub(crate) fn decode(d: &Delivery) -> Message {
    Message::decode(&d.body).expect("body decodes")
}
