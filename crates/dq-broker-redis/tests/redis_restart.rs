//! Redis restarting under a working consumer: it reconnects, and with Redis persisting its
//! data nothing is lost and no ack is dropped. Uses a private redis-server the test owns.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dq_core::{Broker, Token};

use crate::util::decode;

/// A redis-server on a spare port, persisting every write (append-only file, fsync always) so
/// that a SIGKILL loses nothing it acknowledged.
struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("dq-redis-restart-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = PrivateRedis {
            port,
            dir,
            child: None,
        };
        redis.spawn();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        self.child = Some(spawn_server(self.port, &self.dir));
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_server(port: u16, dir: &std::path::Path) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server is needed for the restart tests: {e}"));
    let url = format!("redis://127.0.0.1:{port}");
    let mut child = child;
    for _ in 0..400 {
        if let Ok(mut conn) = redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
            if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                return child;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("private redis-server on port {port} did not start");
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_survives_a_redis_restart_without_losing_messages() {
    let mut redis = PrivateRedis::start();
    let broker = dq_broker_redis::RedisBroker::builder()
        .url(redis.url())
        .response_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let total = 300;
    let mut messages: Vec<_> = (0..total)
        .map(|i| crate::util::message("default", i))
        .collect();
    broker.enqueue_many(&mut messages).await.unwrap();
    let sent: HashSet<String> = messages.iter().map(|m| m.message_id.clone()).collect();

    let mut consumer = broker.consume("default", 10).await.unwrap();
    let acker = consumer.acker();
    let mut seen: HashSet<String> = HashSet::new();
    let mut errors = 0;
    let mut restarted = false;
    for _ in 0..2_000 {
        if seen.len() == sent.len() {
            break;
        }
        if !restarted && seen.len() >= total as usize / 3 {
            redis.kill();
            // Bring it back a little later, while the consumer is failing.
            let (port, dir) = (redis.port, redis.dir.clone());
            let handle = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(700));
                spawn_server(port, &dir)
            });
            let during = consumer.fetch(Duration::from_millis(10)).await;
            assert!(during.is_err() || during.unwrap().is_empty());
            redis.child = Some(handle.join().unwrap());
            restarted = true;
        }
        match consumer.fetch(Duration::from_millis(200)).await {
            Ok(batch) => {
                let tokens: Vec<Token> = batch.iter().map(|d| d.token.clone()).collect();
                for d in &batch {
                    seen.insert(decode(d).message_id);
                }
                acker.ack(&tokens).await.unwrap();
            }
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                errors += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(restarted);
    assert_eq!(
        seen, sent,
        "every message processed after the restart ({errors} errors)"
    );
    let stats = broker.stats("default").await.unwrap();
    assert_eq!(stats, dq_core::QueueStats::default());
    consumer.close().await.unwrap();
}

/// An ack sent while Redis is down is held and applied once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_during_an_outage_is_applied_after_it() {
    let mut redis = PrivateRedis::start();
    let broker = dq_broker_redis::RedisBroker::builder()
        .url(redis.url())
        .response_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let mut m = crate::util::message("default", 1);
    broker.enqueue(&mut m).await.unwrap();
    let mut consumer = broker.consume("default", 1).await.unwrap();
    let got = crate::util::fetch_n(&mut consumer, 1).await;
    redis.kill();

    let acker = consumer.acker();
    let token = got[0].token.clone();
    let ack = tokio::spawn(async move { acker.ack(&[token]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !ack.is_finished(),
        "an ack cannot be done while Redis is down"
    );
    let err = broker.ping().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    redis.spawn();
    tokio::time::timeout(Duration::from_secs(30), ack)
        .await
        .expect("the ack completes once Redis is back")
        .unwrap()
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let bodies: i64 = redis::cmd("HLEN")
        .arg("dramatiq:default.msgs")
        .query(&mut conn)
        .unwrap();
    assert_eq!(bodies, 0);
    consumer.close().await.unwrap();
}

/// Closing while Redis is gone gives up after the close timeout instead of hanging; the
/// unsettled messages are still in Redis, in this broker's ack set, once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_during_an_outage_gives_up_without_losing_messages() {
    let mut redis = PrivateRedis::start();
    let broker = dq_broker_redis::RedisBroker::builder()
        .url(redis.url())
        .response_timeout(Duration::from_secs(2))
        .close_timeout(Duration::from_millis(600))
        .build()
        .await
        .unwrap();
    let mut m = crate::util::message("default", 1);
    broker.enqueue(&mut m).await.unwrap();
    let mut consumer = broker.consume("default", 1).await.unwrap();
    crate::util::fetch_n(&mut consumer, 1).await;
    redis.kill();
    let err = consumer.close().await.unwrap_err();
    assert!(err.is_transient(), "{err}");

    redis.spawn();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let held: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("dramatiq:__acks__.{}.default", broker.broker_id()))
        .query(&mut conn)
        .unwrap();
    assert_eq!(held, vec![m.options.redis_message_id().unwrap().to_owned()]);
}
