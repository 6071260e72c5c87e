//! The dashboard's errors.

use std::net::SocketAddr;

/// Why the dashboard could not start or serve.
///
/// ```
/// use dq_dashboard::Error;
///
/// let e = Error::AuthRequired { addr: "0.0.0.0:8484".parse().unwrap() };
/// assert!(e.to_string().contains("DQ_DASHBOARD_TOKEN"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The dashboard would listen on an address other machines reach without authentication.
    #[error(
        "the dashboard would listen on {addr}, which is not a loopback address, without \
         authentication: set DQ_DASHBOARD_TOKEN, or DQ_DASHBOARD_USER and DQ_DASHBOARD_PASSWORD"
    )]
    AuthRequired {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The authentication the environment asks for is incomplete or empty.
    #[error("invalid dashboard authentication: {0}")]
    InvalidAuth(String),
    /// The management API URL is not a URL.
    #[error("invalid RabbitMQ management URL {url:?}")]
    InvalidManagementUrl {
        /// The URL given, with its password redacted.
        url: String,
    },
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("serving the dashboard failed")]
    Serve(#[source] std::io::Error),
    /// The app the dashboard enqueues through could not be built.
    #[error("building the dashboard's app")]
    App(#[source] dq_core::Error),
}

/// The dashboard's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
