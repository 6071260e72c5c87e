//! dq-sentry's tests, one binary (STYLE.md): a real worker on a real Redis broker, reporting
//! to the Sentry SDK's own test transport.

mod sentry_redis;
