//! Choosing and connecting a broker from a URL: the one place in dq that names concrete brokers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dq_core::{redact_url, Broker, BrokerError};

use crate::error::Error;

/// The environment variable naming a Redis broker URL ([`dq_core::env::REDIS_URL`]), which
/// the Redis result and rate-limiter backends read too.
pub const REDIS_URL_ENV: &str = dq_core::env::REDIS_URL;
/// The environment variable naming the Redis key namespace ([`dq_core::env::REDIS_NAMESPACE`]):
/// `--namespace`'s fallback, and what [`Cli::build_app`](crate::Cli::build_app) reads.
pub const REDIS_NAMESPACE_ENV: &str = dq_core::env::REDIS_NAMESPACE;
/// The environment variable naming a RabbitMQ broker URL ([`dq_core::env::AMQP_URL`]).
pub const AMQP_URL_ENV: &str = dq_core::env::AMQP_URL;
/// The broker used when neither a flag, the code, nor the environment names one.
pub const DEFAULT_BROKER_URL: &str = "redis://127.0.0.1:6379";

/// A boxed future yielding a connected broker.
pub(crate) type BrokerFuture =
    Pin<Box<dyn Future<Output = Result<Arc<dyn Broker>, BrokerError>> + Send>>;

/// Makes the broker a binary sets in code.
pub(crate) type BrokerFactory = Arc<dyn Fn() -> BrokerFuture + Send + Sync>;

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
    [REDIS_URL_ENV, AMQP_URL_ENV].into_iter().find_map(env_var)
}

/// The variable the URL [`url_from`] chooses comes from, if it comes from one: for messages.
pub(crate) fn url_variable(flag: Option<&str>) -> Option<&'static str> {
    if flag.is_some() {
        return None;
    }
    [REDIS_URL_ENV, AMQP_URL_ENV]
        .into_iter()
        .find(|var| env_var(var).is_some())
}

/// The Redis namespace: `--namespace` (whose own fallback is the variable), else the variable.
/// Empty counts as unset, as it does for every variable dq reads.
pub(crate) fn namespace_from(flag: Option<&str>) -> Option<String> {
    match flag {
        Some(ns) if !ns.trim().is_empty() => Some(ns.to_owned()),
        Some(_) => None,
        None => env_var(REDIS_NAMESPACE_ENV),
    }
}

/// Variable `var`, unless it is unset or empty. A value that is not UTF-8 is kept, lossily, so
/// that it fails as a URL naming its variable instead of being ignored for the default broker.
fn env_var(var: &str) -> Option<String> {
    std::env::var_os(var)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.trim().is_empty())
}

/// What the schemes dq knows are, for messages about a URL it cannot use.
const EXPECTED_SCHEMES: &str = "expected redis://, rediss://, amqp:// or amqps://";

/// Connects to the broker `url` names by its scheme. `namespace` is the Redis key namespace.
/// `variable` is the environment variable the URL comes from, named in a settings error.
pub(crate) async fn connect(
    url: &str,
    variable: Option<&str>,
    namespace: Option<&str>,
) -> Result<Arc<dyn Broker>, Error> {
    // Space around a URL is a copy-and-paste accident; inside it, it would split the line that
    // shows the URL, and a URL encodes it anyway.
    let url = url.trim();
    // Its own variable, so its error is not prefixed with the URL's.
    let max_priority = max_priority()?;
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    let result = match scheme.as_deref() {
        Some(_) if url.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(Error::BrokerSettings(format!(
                "the broker url {} holds a space or a control character: percent-encode it",
                redact_url(&url.escape_debug().to_string())
            )))
        }
        Some("redis" | "rediss" | "redis+unix" | "unix") => {
            connect_redis(url, namespace, max_priority).await
        }
        Some("amqp" | "amqps") => connect_amqp(url, max_priority).await,
        // Shown only when it has a scheme: a string without one may be a bare password.
        Some(_) => Err(Error::BrokerSettings(format!(
            "unsupported broker url {}: {EXPECTED_SCHEMES}",
            redact_url(url)
        ))),
        None if url.trim().is_empty() => Err(Error::BrokerSettings(format!(
            "the broker url is empty: {EXPECTED_SCHEMES}"
        ))),
        None => Err(Error::BrokerSettings(format!(
            "the broker url has no scheme: {EXPECTED_SCHEMES}"
        ))),
    };
    match (result, variable) {
        (Err(Error::BrokerSettings(text)), Some(var)) => {
            Err(Error::BrokerSettings(format!("{var}: {text}")))
        }
        (result, _) => result,
    }
}

/// The CA certificate of env `DQ_TLS_CA_FILE`, if set: for a `rediss://` or `amqps://` broker
/// whose certificate a private CA signed. A file that cannot be read is a settings error (exit
/// code 2), not a connection failure.
#[cfg_attr(not(any(feature = "redis", feature = "amqp")), allow(dead_code))]
fn tls_ca() -> Result<Option<Vec<u8>>, Error> {
    let var = dq_core::env::TLS_CA_FILE;
    let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    std::fs::read(&path).map(Some).map_err(|e| {
        Error::BrokerSettings(format!(
            "{var}: cannot read {}: {e}",
            std::path::Path::new(&path).display()
        ))
    })
}

/// Env `DQ_MAX_PRIORITY`, if set: the highest `broker_priority`, with one meaning on both
/// brokers (RabbitMQ's `x-max-priority`; on Redis, broker priority through dq's priority set).
/// Anything but a number from 1 to 255 is a settings error (exit code 2).
fn max_priority() -> Result<Option<u8>, Error> {
    let value = std::env::var(dq_core::env::MAX_PRIORITY).ok();
    dq_core::env::max_priority(value.as_deref()).map_err(|e| Error::BrokerSettings(e.to_string()))
}

#[cfg(feature = "redis")]
async fn connect_redis(
    url: &str,
    namespace: Option<&str>,
    max_priority: Option<u8>,
) -> Result<Arc<dyn Broker>, Error> {
    let mut builder = dq_broker_redis::RedisBroker::builder()
        .url(url)
        .max_priority(max_priority);
    if let Some(ns) = namespace {
        builder = builder.namespace(ns);
    }
    if let Some(ca) = tls_ca()? {
        builder = builder.tls_root_certificate(ca);
    }
    match builder.build().await {
        Ok(b) => Ok(Arc::new(b)),
        // The builder's own words: "broker rejected the request" would blame the server.
        Err(e) if e.kind() == dq_core::BrokerErrorKind::Rejected => {
            Err(Error::BrokerSettings(error_chain(&e)))
        }
        Err(e) => Err(Error::from_broker(&BrokerError::from(e))),
    }
}

#[cfg(not(feature = "redis"))]
async fn connect_redis(
    url: &str,
    _namespace: Option<&str>,
    _max_priority: Option<u8>,
) -> Result<Arc<dyn Broker>, Error> {
    Err(Error::BrokerSettings(format!(
        "{} is a Redis url, but this binary was built without dq-cli's `redis` feature",
        redact_url(url)
    )))
}

#[cfg(feature = "amqp")]
async fn connect_amqp(url: &str, max_priority: Option<u8>) -> Result<Arc<dyn Broker>, Error> {
    let mut builder = dq_broker_amqp::AmqpBroker::builder()
        .url(url)
        .max_priority(max_priority);
    if let Some(ca) = tls_ca()? {
        builder = builder.tls_root_certificate(ca);
    }
    match builder.build().await {
        Ok(b) => Ok(Arc::new(b)),
        // The builder's own words: "broker rejected the request" would blame the server.
        Err(e) if e.kind() == dq_core::BrokerErrorKind::Rejected => {
            Err(Error::BrokerSettings(error_chain(&e)))
        }
        Err(e) => Err(Error::from_broker(&BrokerError::from(e))),
    }
}

#[cfg(not(feature = "amqp"))]
async fn connect_amqp(url: &str, _max_priority: Option<u8>) -> Result<Arc<dyn Broker>, Error> {
    Err(Error::BrokerSettings(format!(
        "{} is a RabbitMQ url, but this binary was built without dq-cli's `amqp` feature",
        redact_url(url)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dq_core::BrokerErrorKind;

    #[test]
    fn unknown_schemes_are_config_errors() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt
            .block_on(connect("kafka://user:pw@host", None, None))
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    /// The settings error `connect` gives for `url`, found in variable `var`.
    fn settings_error(url: &str, var: Option<&str>) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match rt.block_on(connect(url, var, None)) {
            Err(Error::BrokerSettings(text)) => text,
            Err(e) => panic!("{url:?}: {e}"),
            Ok(_) => panic!("{url:?} connected"),
        }
    }

    #[test]
    fn unusable_urls_say_why_without_showing_a_secret() {
        let expected = "expected redis://, rediss://, amqp:// or amqps://";
        for (url, var, says) in [
            ("", None, format!("the broker url is empty: {expected}")),
            (" \t", None, format!("the broker url is empty: {expected}")),
            (
                "hunter2",
                None,
                format!("the broker url has no scheme: {expected}"),
            ),
            (
                "hunter2",
                Some("DQ_REDIS_URL"),
                format!("DQ_REDIS_URL: the broker url has no scheme: {expected}"),
            ),
            (
                "redis://:pw@h\nx",
                None,
                "the broker url redis://:***@h\\nx holds a space or a control character: \
                 percent-encode it"
                    .to_owned(),
            ),
        ] {
            assert_eq!(settings_error(url, var), says, "{url:?}");
        }
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

    /// The CLI names the variables the brokers and backends read, not copies of them.
    #[test]
    fn the_variables_are_the_brokers() {
        #[cfg(feature = "redis")]
        {
            assert_eq!(REDIS_URL_ENV, dq_broker_redis::URL_ENV);
            assert_eq!(REDIS_NAMESPACE_ENV, dq_broker_redis::NAMESPACE_ENV);
            assert_eq!(DEFAULT_BROKER_URL, dq_broker_redis::DEFAULT_URL);
        }
        #[cfg(feature = "amqp")]
        assert_eq!(AMQP_URL_ENV, dq_broker_amqp::URL_ENV);
        assert_eq!(REDIS_URL_ENV, "DQ_REDIS_URL");
    }

    #[test]
    fn empty_namespaces_count_as_unset() {
        assert_eq!(namespace_from(Some("shop")).as_deref(), Some("shop"));
        assert_eq!(namespace_from(Some(" ")), None);
    }
}
