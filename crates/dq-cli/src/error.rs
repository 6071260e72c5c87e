//! What can keep the worker command, or a producer's [`Cli::build_app`](crate::Cli::build_app),
//! from having its app, sorted by the exit code each deserves.

use dq_core::{BrokerError, BrokerErrorKind};

use crate::broker::error_chain;
use crate::exit;

/// The error an app function ([`Cli::app`](crate::Cli::app)) may return: any error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why no app could be had: the broker's settings, the broker itself, the app function or the
/// actors. [`Error::exit_code`] is the worker command's code for each; a producer may exit with
/// it too.
///
/// Broker texts never hold a password: URLs in them are redacted.
///
/// ```
/// let e = dq_cli::Error::BrokerUnreachable("cannot connect to redis at 127.0.0.1:1".into());
/// assert_eq!(e.exit_code(), dq_cli::exit::BROKER);
/// assert_eq!(e.to_string(), "cannot reach the broker: cannot connect to redis at 127.0.0.1:1");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker URL or a broker setting is wrong (an unknown scheme, a URL that does not
    /// parse, a broker this binary was built without, a refused setting): the operator's to fix,
    /// a restart would not help. Exit code 2.
    #[error("invalid broker settings: {0}")]
    BrokerSettings(String),
    /// The broker could not be reached, or refused us (credentials, vhost). Exit code 3.
    #[error("cannot reach the broker: {0}")]
    BrokerUnreachable(String),
    /// The app function returned an error (a bad backend URL in the environment, say). Exit
    /// code 2, as Dramatiq's for a module that fails to import.
    #[error("the app function failed")]
    AppFn(#[source] BoxError),
    /// The app does not build: two actors of one name, an actor option no middleware declares.
    /// Exit code 2.
    #[error("invalid actor definitions")]
    App(#[source] dq_core::Error),
}

impl Error {
    /// The worker command's [`exit`] code for this error: [`exit::BROKER`] (3) for an
    /// unreachable broker, [`exit::USAGE`] (2) for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::BrokerUnreachable(_) => exit::BROKER,
            Error::BrokerSettings(_) | Error::AppFn(_) | Error::App(_) => exit::USAGE,
        }
    }

    /// Sorts a broker error met while connecting or pinging: a refused or unsupported setting is
    /// the operator's to fix; anything else means the broker is not there for us.
    pub(crate) fn from_broker(e: &BrokerError) -> Error {
        let text = error_chain(e);
        match e.kind() {
            BrokerErrorKind::Rejected | BrokerErrorKind::Unsupported => Error::BrokerSettings(text),
            _ => Error::BrokerUnreachable(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_are_sorted_by_kind() {
        let refused = BrokerError::new(BrokerErrorKind::Connection, "ping");
        assert_eq!(Error::from_broker(&refused).exit_code(), 3);
        let slow = BrokerError::new(BrokerErrorKind::Timeout, "ping");
        assert_eq!(Error::from_broker(&slow).exit_code(), 3);
        let bad = BrokerError::new(BrokerErrorKind::Rejected, "invalid url");
        assert_eq!(Error::from_broker(&bad).exit_code(), 2);
        assert!(matches!(Error::from_broker(&bad), Error::BrokerSettings(_)));
    }

    #[test]
    fn app_errors_are_usage_errors() {
        assert_eq!(Error::AppFn("no".into()).exit_code(), 2);
        let dup = dq_core::Error::DuplicateActor { name: "a".into() };
        assert_eq!(Error::App(dup).exit_code(), 2);
    }
}
