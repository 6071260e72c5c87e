//! Whether the worker can reach its broker, so that an outage it recovers from reads as one
//! WARN line when it starts and one INFO line when it is over, however many consumers, acks
//! and retries meet it in between (those go to DEBUG).
//!
//! An outage is over when broker calls have succeeded and none failed for [`QUIET`]: a call
//! can succeed while the broker is still away (a fetch answered from what the consumer holds,
//! an ack a broker client queues), and a broker coming back can drop a few more connections.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dq_core::BrokerError;
use tracing::{debug, info, warn};

/// How long broker calls must go without a failure for an outage to be over.
pub(crate) const QUIET: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Times {
    since: Instant,
    last_failure: Instant,
}

/// One worker's view of its broker.
#[derive(Debug, Default)]
pub(crate) struct BrokerHealth {
    /// Set from the first failure of an outage until the next success.
    down: AtomicBool,
    /// When the outage began and when a call last failed.
    times: Mutex<Option<Times>>,
    /// Failures met during the outage, for the line that ends it.
    failures: AtomicU64,
}

impl BrokerHealth {
    /// A broker call failed in a way the worker recovers from (a lost connection, a timeout, a
    /// delivery of a dead channel): the first of an outage is a WARN, the rest DEBUG.
    pub(crate) fn failed(&self, doing: &str, error: &BrokerError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        match times.as_mut() {
            Some(t) => {
                t.last_failure = now;
                debug!(error = %dq_core::ErrorChain(error), "{doing} failed; the broker is still away");
            }
            None => {
                *times = Some(Times {
                    since: now,
                    last_failure: now,
                });
                self.down.store(true, Ordering::Release);
                warn!(error = %dq_core::ErrorChain(error), "lost the broker while {doing}; retrying with backoff until it is back");
            }
        }
    }

    /// A broker call succeeded: ends an outage, with one INFO line, once no call has failed for
    /// [`QUIET`]. One atomic load when there is no outage, so it can sit on every fetch and ack.
    pub(crate) fn ok(&self) {
        if !self.down.load(Ordering::Acquire) {
            return;
        }
        let mut times = self.times.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = *times else { return };
        if t.last_failure.elapsed() < QUIET {
            return;
        }
        *times = None;
        self.down.store(false, Ordering::Release);
        let failures = self.failures.swap(0, Ordering::Relaxed);
        let down_ms = t.last_failure.duration_since(t.since).as_millis() as u64;
        info!(
            down_ms,
            failures,
            "the broker is back after {:.1}s",
            down_ms as f64 / 1000.0
        );
    }

    /// Whether an outage is going on.
    #[cfg(test)]
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use dq_core::BrokerErrorKind;

    #[test]
    fn an_outage_begins_at_the_first_failure_and_ends_after_a_quiet_success() {
        let h = BrokerHealth::default();
        h.ok();
        assert!(!h.is_down());
        let e = BrokerError::new(BrokerErrorKind::Connection, "fetch from default");
        h.failed("fetching", &e);
        h.failed("acking", &e);
        assert!(h.is_down());
        assert_eq!(h.failures.load(Ordering::Relaxed), 2);
        // A success right after a failure does not end it: the broker may still be away.
        h.ok();
        assert!(h.is_down());
        // Pretend the last failure was longer ago than QUIET.
        {
            let mut t = h.times.lock().unwrap();
            let t = t.as_mut().unwrap();
            t.last_failure -= QUIET;
            t.since -= QUIET;
        }
        h.ok();
        assert!(!h.is_down());
        assert_eq!(h.failures.load(Ordering::Relaxed), 0);
        assert!(h.times.lock().unwrap().is_none());
    }
}
