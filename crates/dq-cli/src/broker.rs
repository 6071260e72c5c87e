//! Choosing and connecting a broker from a URL: the one place in dq that names concrete brokers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dq_core::{redact_url, Broker, BrokerError, BrokerErrorKind};

/// The environment variable naming a Redis broker URL.
pub const REDIS_URL_ENV: &str = "DQ_REDIS_URL";
/// The environment variable naming a RabbitMQ broker URL.
pub const AMQP_URL_ENV: &str = "DQ_AMQP_URL";
/// The broker used when neither a flag, the code, nor the environment names one.
pub const DEFAULT_BROKER_URL: &str = "redis://127.0.0.1:6379";

/// A boxed future yielding a connected broker.
pub(crate) type BrokerFuture =
    Pin<Box<dyn Future<Output = Result<Arc<dyn Broker>, BrokerError>> + Send>>;

/// Makes the broker a binary sets in code.
pub(crate) type BrokerFactory = Arc<dyn Fn() -> BrokerFuture + Send + Sync>;

/// Why no broker could be had, sorted by the exit code it deserves.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The URL or a setting is wrong: exit code 2.
    #[error("{0}")]
    Config(String),
    /// The broker could not be reached or refused us: exit code 3.
    #[error("{0}")]
    Unreachable(String),
}

impl ConnectError {
    /// Sorts a broker error met while connecting or pinging: a refused setting is the
    /// operator's to fix (2); anything else means the broker is not there for us (3).
    pub(crate) fn from_broker(e: &BrokerError) -> ConnectError {
        let text = error_chain(e);
        match e.kind() {
            BrokerErrorKind::Rejected | BrokerErrorKind::Unsupported => ConnectError::Config(text),
            _ => ConnectError::Unreachable(text),
        }
    }

    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            ConnectError::Config(_) => crate::exit::USAGE,
            ConnectError::Unreachable(_) => crate::exit::BROKER,
        }
    }
}

/// `e` and its sources, each part said once (see [`ErrorChain`](dq_core::ErrorChain)).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    dq_core::ErrorChain(e).to_string()
}

/// The URL to use: `--broker-url`, else the one from the environment. `None` when neither says
/// and the code's broker, if any, should be used.
pub(crate) fn url_from(flag: Option<&str>) -> Option<String> {
    if let Some(url) = flag {
        return Some(url.to_owned());
    }
    [REDIS_URL_ENV, AMQP_URL_ENV]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
}

/// Connects to the broker `url` names by its scheme. `namespace` is the Redis key namespace.
pub(crate) async fn connect(
    url: &str,
    namespace: Option<&str>,
) -> Result<Arc<dyn Broker>, ConnectError> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("redis" | "rediss" | "redis+unix" | "unix") => connect_redis(url, namespace).await,
        Some("amqp" | "amqps") => connect_amqp(url).await,
        _ => Err(ConnectError::Config(format!(
            "unsupported broker url {}: expected redis://, rediss://, amqp:// or amqps://",
            redact_url(url)
        ))),
    }
}

#[cfg(feature = "redis")]
async fn connect_redis(
    url: &str,
    namespace: Option<&str>,
) -> Result<Arc<dyn Broker>, ConnectError> {
    let mut builder = dq_broker_redis::RedisBroker::builder().url(url);
    if let Some(ns) = namespace {
        builder = builder.namespace(ns);
    }
    match builder.build().await {
        Ok(b) => Ok(Arc::new(b)),
        Err(e) => {
            let e = BrokerError::from(e);
            Err(ConnectError::from_broker(&e))
        }
    }
}

#[cfg(not(feature = "redis"))]
async fn connect_redis(
    url: &str,
    _namespace: Option<&str>,
) -> Result<Arc<dyn Broker>, ConnectError> {
    Err(ConnectError::Config(format!(
        "{} is a Redis url, but this binary was built without dq-cli's `redis` feature",
        redact_url(url)
    )))
}

#[cfg(feature = "amqp")]
async fn connect_amqp(url: &str) -> Result<Arc<dyn Broker>, ConnectError> {
    match dq_broker_amqp::AmqpBroker::builder().url(url).build().await {
        Ok(b) => Ok(Arc::new(b)),
        Err(e) => {
            let e = BrokerError::from(e);
            Err(ConnectError::from_broker(&e))
        }
    }
}

#[cfg(not(feature = "amqp"))]
async fn connect_amqp(url: &str) -> Result<Arc<dyn Broker>, ConnectError> {
    Err(ConnectError::Config(format!(
        "{} is a RabbitMQ url, but this binary was built without dq-cli's `amqp` feature",
        redact_url(url)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_config_errors() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt
            .block_on(connect("kafka://user:pw@host", None))
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[test]
    fn error_chains_say_each_part_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect to redis at {0}")]
        struct Connect(&'static str, #[source] BrokerError);

        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let ping = BrokerError::new(BrokerErrorKind::Connection, "ping").with_source(io);
        let connect = Connect("redis://h:1", ping);
        let text = connect.to_string();
        let top = BrokerError::new(BrokerErrorKind::Connection, text).with_source(connect);
        assert_eq!(
            error_chain(&top),
            "broker connection failed: cannot connect to redis at redis://h:1: ping: refused"
        );
    }

    #[test]
    fn connect_errors_are_sorted_by_kind() {
        let refused = BrokerError::new(BrokerErrorKind::Connection, "ping");
        assert_eq!(ConnectError::from_broker(&refused).exit_code(), 3);
        let bad = BrokerError::new(BrokerErrorKind::Rejected, "invalid url");
        assert_eq!(ConnectError::from_broker(&bad).exit_code(), 2);
    }
}
