//! Connecting: typed errors when RabbitMQ is down at start, URLs, and no password anywhere.

use dq_broker_amqp::{AmqpBroker, AmqpBrokerError, DEFAULT_URL};
use dq_core::{Broker, BrokerError, BrokerErrorKind};

use crate::util;

#[tokio::test]
async fn down_at_start_is_a_connection_error_without_the_password() {
    util::init();
    let err = AmqpBroker::builder()
        .url("amqp://guest:pw-down-at-start@127.0.0.1:1/%2f")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, AmqpBrokerError::Connect { .. }), "{err:?}");
    assert_eq!(err.kind(), BrokerErrorKind::Connection);
    let text = format!("{err} {err:?}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("pw-down-at-start"), "{text}");
    let broker_err = BrokerError::from(err);
    assert_eq!(broker_err.kind(), BrokerErrorKind::Connection);
    assert!(broker_err.is_transient());
    assert!(!format!("{broker_err} {broker_err:?}").contains("pw-down-at-start"));
}

#[tokio::test]
async fn refused_credentials_are_a_connection_error_without_the_password() {
    let url = util::init();
    let base: lapin::uri::AMQPUri = url.parse().unwrap();
    let wrong = format!(
        "amqp://{}:pw-wrong-credentials@{}:{}/%2f",
        base.authority.userinfo.username, base.authority.host, base.authority.port
    );
    let err = AmqpBroker::builder().url(&wrong).build().await.unwrap_err();
    assert_eq!(err.kind(), BrokerErrorKind::Connection, "{err:?}");
    let shown = format!("{err} {err:?}");
    let text = format!("{shown} {}", BrokerError::from(err));
    assert!(!text.contains("pw-wrong-credentials"), "{text}");
    assert!(!util::logs().contains("pw-wrong-credentials"));
}

/// `amqps://` goes through lapin's rustls (ring, native roots): against RabbitMQ's plain port the
/// handshake fails, as a connection error, rather than the TLS stack being missing or panicking.
#[tokio::test]
async fn amqps_runs_a_tls_handshake() {
    let url = util::init();
    let base: lapin::uri::AMQPUri = url.parse().unwrap();
    let tls = format!(
        "amqps://{}:pw-tls-handshake@{}:{}/%2f",
        base.authority.userinfo.username, base.authority.host, base.authority.port
    );
    let err = AmqpBroker::builder().url(&tls).build().await.unwrap_err();
    assert!(matches!(err, AmqpBrokerError::Connect { .. }), "{err:?}");
    assert_eq!(err.kind(), BrokerErrorKind::Connection, "{err:?}");
    let shown = format!("{err} {err:?}");
    let text = format!("{shown} {}", BrokerError::from(err));
    assert!(!text.contains("pw-tls-handshake"), "{text}");
}

#[tokio::test]
async fn bad_settings_are_rejected_before_connecting() {
    util::init();
    let err = AmqpBroker::builder()
        .url("http://user:pw-bad-scheme@127.0.0.1/")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, AmqpBrokerError::InvalidUrl { .. }), "{err:?}");
    assert_eq!(err.kind(), BrokerErrorKind::Rejected);
    assert!(!format!("{err} {err:?}").contains("pw-bad-scheme"));

    let err = AmqpBroker::builder()
        .url(DEFAULT_URL)
        .max_priority(Some(0))
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, AmqpBrokerError::InvalidConfig(_)), "{err:?}");
}

#[tokio::test]
async fn the_broker_shows_its_url_redacted() {
    let url = util::init();
    let builder = util::builder(&url).connection_name("dq-test");
    let password = url
        .parse::<lapin::uri::AMQPUri>()
        .unwrap()
        .authority
        .userinfo
        .password;
    let debug = format!("{builder:?}");
    assert!(debug.contains(":***@"), "{debug}");
    assert!(!debug.contains(&format!(":{password}@")), "{debug}");
    let broker = builder.build().await.unwrap();
    assert_eq!(broker.kind(), "amqp");
    assert!(broker.redacted_url().contains(":***@"));
    let debug = format!("{broker:?}");
    assert!(!debug.contains(&format!(":{password}@")), "{debug}");
    broker.ping().await.unwrap();
}

#[tokio::test]
async fn from_env_reads_dq_amqp_url_or_the_default() {
    let url = util::init();
    // Without DQ_AMQP_URL the default is the URL the tests use too.
    let broker = AmqpBroker::from_env().await.unwrap();
    assert_eq!(
        broker.redacted_url(),
        AmqpBroker::builder()
            .url(&url)
            .build()
            .await
            .unwrap()
            .redacted_url()
    );
    broker.ping().await.unwrap();
}
