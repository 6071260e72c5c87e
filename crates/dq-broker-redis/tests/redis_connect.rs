//! Building a broker: Redis down at start, bad URLs, TLS URLs, and secrets kept out of output.

use dq_broker_redis::{RedisBroker, RedisBrokerError};
use dq_core::{Broker, BrokerError, BrokerErrorKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_is_a_connection_error() {
    let err = RedisBroker::builder()
        .url("redis://127.0.0.1:1")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, RedisBrokerError::Connect { .. }), "{err:?}");
    assert_eq!(err.kind(), BrokerErrorKind::Connection);
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    let err = BrokerError::from(err);
    assert_eq!(err.kind(), BrokerErrorKind::Connection);
    assert!(err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_show_in_errors_or_debug() {
    let secret = "hunter2-very-secret";
    let urls = [
        format!("redis://:{secret}@127.0.0.1:1/0"),
        format!("redis://ann:{secret}@127.0.0.1:1"),
        // The shared test Redis has no password: AUTH fails, and says so without echoing it.
        format!("redis://:{secret}@127.0.0.1:6379"),
        format!("redis://:{secret}@127.0.0.1:6379/999999"),
    ];
    for url in &urls {
        let builder = RedisBroker::builder().url(url.as_str());
        let shown = format!("{builder:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains(":***@"), "{shown}");
        let err = builder.build().await.unwrap_err();
        let mut shown = format!("{err} | {err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            shown.push_str(&format!(" | {s} | {s:?}"));
            source = s.source();
        }
        assert!(!shown.contains(secret), "{shown}");
        let as_broker = BrokerError::from(err);
        let shown = format!("{as_broker} | {as_broker:?}");
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_broker_shows_no_password() {
    let url = crate::util::redis_url();
    let broker = RedisBroker::builder()
        .url(url.as_str())
        .build()
        .await
        .unwrap();
    let shown = format!("{broker:?}");
    assert!(shown.contains(broker.broker_id()), "{shown}");
    assert!(shown.contains("dramatiq"), "{shown}");
    assert_eq!(broker.redacted_url(), url);
    broker.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_that_are_not_redis_urls_are_rejected() {
    for url in ["http://127.0.0.1:6379", "not a url"] {
        let err = RedisBroker::builder().url(url).build().await.unwrap_err();
        assert!(
            matches!(err, RedisBrokerError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
        assert_eq!(err.kind(), BrokerErrorKind::Rejected);
    }
    let err = RedisBroker::builder()
        .pool_size(0)
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, RedisBrokerError::InvalidConfig(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_connects_to_the_configured_redis() {
    let broker = RedisBroker::from_env().await.unwrap();
    assert_eq!(broker.namespace(), "dramatiq");
    assert_eq!(broker.broker_id().len(), 36);
    assert!(broker.max_unpack() >= 500, "{}", broker.max_unpack());
    broker.ping().await.unwrap();
}
