//! `rediss://`: a full round trip through a private TLS redis-server whose certificate a test CA
//! signed, and a refusal when that CA is not trusted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dq_broker_redis::{RedisBroker, RedisBrokerError};
use dq_core::{Broker, BrokerErrorKind};

use crate::util::{decode, fetch_n, message};

struct TlsRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = std::env::temp_dir().join(format!("dq-redis-tls-{}", uuid::Uuid::new_v4()));
        let ca = dq_test::TestCa::create(&dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(ca.server_cert())
            .arg("--tls-key-file")
            .arg(ca.server_key())
            .arg("--tls-ca-cert-file")
            .arg(ca.ca_cert())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server is needed for the TLS test: {e}"));
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return TlsRedis { port, dir, child };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("TLS redis-server on port {port} did not start");
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("ca.crt")).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_travel_over_tls() {
    let redis = TlsRedis::start();
    let broker = RedisBroker::builder()
        .url(redis.url())
        .tls_root_certificate(redis.ca())
        .build()
        .await
        .unwrap();
    let mut m = message("default", 1);
    broker.enqueue(&mut m).await.unwrap();
    let mut consumer = broker.consume("default", 1).await.unwrap();
    let got = fetch_n(&mut consumer, 1).await;
    assert_eq!(decode(&got[0]).message_id, m.message_id);
    consumer.acker().ack(&[got[0].token.clone()]).await.unwrap();
    assert_eq!(
        broker.stats("default").await.unwrap(),
        dq_core::QueueStats::default()
    );
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused() {
    let redis = TlsRedis::start();
    let err = RedisBroker::builder()
        .url(redis.url())
        .response_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, RedisBrokerError::Connect { .. }), "{err:?}");
    assert_eq!(err.kind(), BrokerErrorKind::Connection);
}
