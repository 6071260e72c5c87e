//! # dq-test
//!
//! Test support for dq's own crates; unpublished, a dev-dependency only. Use it from a crate's
//! `tests/` directory, not from its unit tests: there, dq-core would be linked twice and its types
//! would not match the crate's own.
//!
//! **Key design decision:** tests run against the real Redis and RabbitMQ (at `DQ_REDIS_URL` and
//! `DQ_AMQP_URL`, by default on 127.0.0.1 with guest/guest), never against fakes, and a missing
//! service is a loud failure, never a skip: [`require_redis`] and [`require_amqp`] panic with the
//! address and the cause. `cargo xtask services` starts the services, or installs them, first.
//! Tests share the servers, so each one works in its own names, from [`unique_name`], and deletes
//! what it made.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let url = dq_test::require_redis(); // panics if nothing answers PING there
//! let queue = dq_test::unique_name("retries");
//! assert!(queue.starts_with("retries-"));
//! # let (_url, done) = (url, || true);
//! // ... enqueue on `queue` through a broker connected to `url`, then:
//! assert!(dq_test::wait_until(Duration::from_secs(10), || done()));
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

mod private_redis;
mod probe;
pub mod stack;
mod tls;

pub use private_redis::{percent_encode, PrivateRedis};
pub use tls::TestCa;

#[doc(hidden)]
pub use dq_core as __dq_core;

/// The Redis URL tests connect to: env `DQ_REDIS_URL`, else `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    env_or("DQ_REDIS_URL", "redis://127.0.0.1:6379")
}

/// The RabbitMQ URL tests connect to: env `DQ_AMQP_URL`, else
/// `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    env_or("DQ_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

fn env_or(key: &str, default: &str) -> String {
    match std::env::var(key) {
        Ok(v) if !v.is_empty() => v,
        _ => default.to_owned(),
    }
}

/// How long a service check waits for the connection and for each answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks that a Redis server answers `PING` at [`redis_url`] and returns that URL.
///
/// # Panics
///
/// When nothing answers like Redis there, with the address, the cause and what to run.
pub fn require_redis() -> String {
    let url = redis_url();
    require("Redis", "DQ_REDIS_URL", &url, 6379, probe::redis);
    url
}

/// Checks that a RabbitMQ broker answers the AMQP 0-9-1 handshake at [`amqp_url`] and returns
/// that URL.
///
/// # Panics
///
/// When nothing answers like an AMQP broker there, with the address, the cause and what to run.
pub fn require_amqp() -> String {
    let url = amqp_url();
    require("RabbitMQ", "DQ_AMQP_URL", &url, 5672, probe::amqp);
    url
}

fn require(
    service: &str,
    env: &str,
    url: &str,
    default_port: u16,
    check: fn(&str, Duration) -> Result<(), probe::ProbeError>,
) {
    let Some(addr) = probe::host_port(url, default_port) else {
        panic!("{service}: {env} = {url:?} names no host");
    };
    if let Err(cause) = check(&addr, PROBE_TIMEOUT) {
        panic!(
            "{service} is not reachable at {addr} ({env} or its default): {cause}. \
             Run `cargo xtask services` to start it, or point {env} at a running server."
        );
    }
}

/// A name no other test run uses: `prefix`, a dash and 12 hex digits of a fresh UUID4. It is a
/// valid Dramatiq queue name (`[a-zA-Z_][a-zA-Z0-9._-]*`), so it can name a queue, a Redis
/// namespace or a rate-limiter key.
///
/// # Panics
///
/// If `prefix` would make an invalid queue name (empty, starting with a digit, or holding
/// characters outside `a-zA-Z0-9._-`).
///
/// ```
/// let a = dq_test::unique_name("emails");
/// let b = dq_test::unique_name("emails");
/// assert_ne!(a, b);
/// assert!(dq_core::is_valid_queue_name(&a));
/// ```
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{prefix}-{}", &id[..12]);
    assert!(
        dq_core::is_valid_queue_name(&name),
        "unique_name({prefix:?}) makes {name:?}, which is not a valid queue name"
    );
    name
}

/// Polls `condition` until it holds or `timeout` has passed; returns whether it held. Assert on
/// the result, so a test fails instead of hanging when the thing never happens:
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
///
/// let calls = AtomicU32::new(0);
/// assert!(dq_test::wait_until(Duration::from_secs(5), || {
///     calls.fetch_add(1, Ordering::Relaxed) == 3
/// }));
/// assert!(!dq_test::wait_until(Duration::from_millis(30), || false));
/// ```
///
/// The first poll is immediate, later ones back off from 1 ms to 50 ms: a fast condition is
/// noticed fast, and a slow one does not spin a core (the machines have two). It blocks the
/// thread; in async tests use [`wait_until_async`].
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = next_pause(pause);
    }
}

/// [`wait_until`] for async tests: awaits `condition()` until it yields `true` or `timeout` has
/// passed, sleeping on the Tokio timer in between so the runtime keeps running other tasks.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
///
/// let start = std::time::Instant::now();
/// let ready = dq_test::wait_until_async(Duration::from_secs(5), || async move {
///     start.elapsed() >= Duration::from_millis(20)
/// })
/// .await;
/// assert!(ready);
/// # }
/// ```
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if condition().await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = next_pause(pause);
    }
}

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_host_port(url: &str, default_port: u16, expected: Option<&str>) {
        assert_eq!(
            probe::host_port(url, default_port).as_deref(),
            expected,
            "{url}"
        );
    }

    #[test]
    fn host_port_of_urls() {
        check_host_port("redis://127.0.0.1:6379", 6379, Some("127.0.0.1:6379"));
        check_host_port("redis://localhost/3", 6379, Some("localhost:6379"));
        check_host_port("redis://:secret@cache:7000/0", 6379, Some("cache:7000"));
        check_host_port(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            5672,
            Some("127.0.0.1:5672"),
        );
        check_host_port("amqp://u:p@[::1]/vhost", 5672, Some("[::1]:5672"));
        check_host_port("amqp://[::1]:5673", 5672, Some("[::1]:5673"));
        check_host_port("redis://", 6379, None);
    }

    #[test]
    fn unique_names_differ_and_keep_the_prefix() {
        let a = unique_name("q");
        let b = unique_name("q");
        assert_ne!(a, b);
        assert!(a.starts_with("q-") && a.len() == 2 + 12, "{a}");
    }

    #[test]
    fn unique_name_rejects_a_bad_prefix() {
        let err = std::panic::catch_unwind(|| unique_name("9lives")).unwrap_err();
        let msg = err
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(msg.contains("not a valid queue name"), "{msg}");
    }

    #[test]
    fn wait_until_gives_up_after_the_timeout() {
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(20), || false));
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn the_shared_services_answer_the_probes() {
        assert_eq!(require_redis(), redis_url());
        assert_eq!(require_amqp(), amqp_url());
    }

    #[test]
    fn probes_report_a_closed_port() {
        // Binding port 0 then dropping the listener gives a port nothing listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let err = probe::redis(&addr, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err, probe::ProbeError::Connect(_)),
            "{err}: {err:?}"
        );
        assert!(probe::amqp(&addr, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn probes_reject_the_wrong_protocol() {
        // A server speaking neither protocol: it sends a line and hangs up.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                // Answer only after the client spoke, and hang up only after it did, so the
                // client never writes to or reads from a reset connection.
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).unwrap();
                s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
                while s.read(&mut buf).is_ok_and(|n| n > 0) {}
            }
        });
        let redis = probe::redis(&addr, Duration::from_secs(2)).unwrap_err();
        assert!(redis.to_string().contains("expected +PONG"), "{redis}");
        let amqp = probe::amqp(&addr, Duration::from_secs(2)).unwrap_err();
        assert!(
            amqp.to_string().contains("Connection.Start"),
            "{amqp}: {amqp:?}"
        );
        server.join().unwrap();
    }
}
