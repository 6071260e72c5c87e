//! Throughput from samples: the dashboard counts every queue every few seconds and keeps ten
//! minutes of counts, from which it reports how fast the backlog and the dead letters change.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use dq_core::QueueStats;
use serde::Serialize;

use crate::Shared;

/// How long samples are kept.
const KEEP_MS: i64 = 10 * 60 * 1000;
/// The window rates are computed over.
const RATE_WINDOW_MS: i64 = 5 * 60 * 1000;

/// One queue's counts at one moment.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Sample {
    pub(crate) at: i64,
    pub(crate) ready: u64,
    pub(crate) delayed: u64,
    pub(crate) in_flight: u64,
    pub(crate) dead: u64,
}

impl Sample {
    fn backlog(&self) -> f64 {
        (self.ready + self.delayed + self.in_flight) as f64
    }
}

/// Rates over the last minutes, from the samples.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub(crate) struct Rates {
    /// Over how many seconds of samples (0: not enough samples yet).
    pub(crate) window_s: u64,
    /// Messages waiting (ready, delayed, in flight), change per minute: negative when workers
    /// drain the queue faster than producers fill it.
    pub(crate) backlog_per_min: f64,
    /// New dead letters per minute.
    pub(crate) dead_per_min: f64,
}

#[derive(Default)]
pub(crate) struct History {
    queues: BTreeMap<String, VecDeque<Sample>>,
}

impl History {
    pub(crate) fn record(&mut self, queue: &str, at: i64, s: QueueStats) {
        let samples = self.queues.entry(queue.to_owned()).or_default();
        samples.push_back(Sample {
            at,
            ready: s.ready,
            delayed: s.delayed,
            in_flight: s.in_flight,
            dead: s.dead,
        });
        while samples.front().is_some_and(|f| at - f.at > KEEP_MS) {
            samples.pop_front();
        }
    }

    pub(crate) fn samples(&self, queue: &str) -> Vec<Sample> {
        self.queues
            .get(queue)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub(crate) fn rates(&self, queue: &str) -> Rates {
        let Some(samples) = self.queues.get(queue) else {
            return Rates::default();
        };
        let Some(last) = samples.back() else {
            return Rates::default();
        };
        let Some(first) = samples.iter().find(|s| last.at - s.at <= RATE_WINDOW_MS) else {
            return Rates::default();
        };
        let span_ms = last.at - first.at;
        if span_ms <= 0 {
            return Rates::default();
        }
        let minutes = span_ms as f64 / 60_000.0;
        let round = |x: f64| (x * 10.0).round() / 10.0;
        Rates {
            window_s: (span_ms / 1000) as u64,
            backlog_per_min: round((last.backlog() - first.backlog()) / minutes),
            // Dead letters expire or are deleted: a drop is not negative throughput.
            dead_per_min: round((last.dead.saturating_sub(first.dead)) as f64 / minutes),
        }
    }
}

/// Samples every queue every `interval` while the dashboard exists.
pub(crate) fn spawn(shared: &Arc<Shared>, interval: Duration) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            // A failed round (the broker is away) leaves a gap in the samples, nothing more:
            // the pages report the broker's error themselves.
            if let Err(e) = crate::data::sample(&shared).await {
                tracing::debug!(error = %dq_core::ErrorChain(&e), "dashboard sample failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ready: u64, dead: u64) -> QueueStats {
        QueueStats {
            ready,
            delayed: 0,
            dead,
            in_flight: 0,
            prioritized: 0,
        }
    }

    #[test]
    fn rates_come_from_the_window() {
        let mut h = History::default();
        assert_eq!(h.rates("q"), Rates::default());
        h.record("q", 0, stats(100, 0));
        assert_eq!(h.rates("q"), Rates::default());
        h.record("q", 60_000, stats(40, 3));
        h.record("q", 120_000, stats(10, 2));
        let r = h.rates("q");
        assert_eq!(r.window_s, 120);
        assert_eq!(r.backlog_per_min, -45.0);
        assert_eq!(r.dead_per_min, 1.0);
        // Old samples leave the window, then the history.
        h.record("q", 420_000, stats(10, 2));
        assert_eq!(h.rates("q").window_s, 360 - 60);
        h.record("q", 1_000_000, stats(0, 0));
        assert_eq!(h.samples("q").len(), 2);
    }
}
