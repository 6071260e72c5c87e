//! Errors of the RabbitMQ broker, and how lapin's errors map onto [`BrokerError`].

use dq_core::{BrokerError, BrokerErrorKind};
use lapin::ErrorKind;

/// Why an [`AmqpBroker`](crate::AmqpBroker) could not be built.
///
/// URLs in these errors are always redacted: a password never appears in their text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AmqpBrokerError {
    /// The URL is not an `amqp://` or `amqps://` URL.
    #[error("invalid amqp url {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid amqp broker setting: {0}")]
    InvalidConfig(String),
    /// RabbitMQ could not be reached, or refused us, when the broker was built.
    #[error("cannot connect to rabbitmq at {url}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// The failure.
        #[source]
        source: BrokerError,
    },
}

impl AmqpBrokerError {
    /// The broker error kind this maps to: `Connection` when RabbitMQ could not be reached (or
    /// refused the credentials) at start, which the CLI turns into exit code 3; `Rejected` for
    /// bad settings.
    pub fn kind(&self) -> BrokerErrorKind {
        match self {
            AmqpBrokerError::InvalidUrl { .. } | AmqpBrokerError::InvalidConfig(_) => {
                BrokerErrorKind::Rejected
            }
            AmqpBrokerError::Connect { .. } => BrokerErrorKind::Connection,
        }
    }
}

impl From<AmqpBrokerError> for BrokerError {
    /// The same text, with the failure underneath (for `Connect`) as the source, so the chain
    /// says each part once.
    fn from(e: AmqpBrokerError) -> BrokerError {
        let kind = e.kind();
        match e {
            AmqpBrokerError::Connect { url, source } => {
                BrokerError::new(kind, format!("cannot connect to rabbitmq at {url}"))
                    .with_source(source)
            }
            other => BrokerError::new(kind, other.to_string()),
        }
    }
}

/// The AMQP reply code of a protocol error, if `e` is one.
pub(crate) fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

/// How a lapin error should be treated.
pub(crate) fn classify(e: &lapin::Error) -> BrokerErrorKind {
    match e.kind() {
        // The socket, the connection or the channel is gone: a new one may work.
        ErrorKind::IOError(_)
        // An I/O error lapin 4 tells apart because the runtime is shutting down: an I/O error,
        // and `Connection`, as lapin 3 had it.
        | ErrorKind::RuntimeShutdownError(_)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::MissingHeartbeatError => BrokerErrorKind::Connection,
        ErrorKind::ProtocolError(p) => match p.get_id() {
            404 => BrokerErrorKind::QueueNotFound,
            // CONNECTION_FORCED (an operator or a restarting node closed us), RESOURCE_ERROR,
            // INTERNAL_ERROR: the node will take us back.
            320 | 506 | 541 => BrokerErrorKind::Connection,
            // ACCESS_REFUSED, RESOURCE_LOCKED, PRECONDITION_FAILED, NOT_ALLOWED (no such vhost),
            // CONTENT_TOO_LARGE, NO_ROUTE, NO_CONSUMERS, NOT_IMPLEMENTED.
            403 | 405 | 406 | 530 | 311 | 312 | 313 | 540 => BrokerErrorKind::Rejected,
            _ => BrokerErrorKind::Other,
        },
        ErrorKind::ChannelsLimitReached => BrokerErrorKind::Rejected,
        ErrorKind::InvalidProtocolVersion(_)
        | ErrorKind::ParsingError(_)
        | ErrorKind::SerialisationError(_)
        | ErrorKind::AuthProviderError(_)
        | ErrorKind::FutureCompleted
        | ErrorKind::NoDefaultRuntime => BrokerErrorKind::Other,
        // lapin's ErrorKind is non-exhaustive.
        _ => BrokerErrorKind::Other,
    }
}

/// Wraps a client error, saying what we were doing. lapin's errors never carry the URL.
pub(crate) fn broker_error(e: lapin::Error, context: impl Into<String>) -> BrokerError {
    BrokerError::new(classify(&e), context).with_source(e)
}
