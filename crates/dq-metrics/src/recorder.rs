//! A `metrics` recorder that keeps what Prometheus scrapes, with Dramatiq's buckets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

use crate::error::{Error, Result};
use crate::exposition::{Family, HistogramValue, Kind, Snapshot, Value};
use crate::DURATION_BUCKETS;

/// A [`metrics::Recorder`] that keeps counters, gauges and histograms in memory and turns
/// them into a [`Snapshot`] (and from there into the Prometheus text a Python Dramatiq worker
/// would serve). Histograms get Dramatiq's duration buckets unless
/// [`with_buckets`](Recorder::with_buckets) sets others for their name.
///
/// Cloning it gives another handle on the same values: install one clone and keep another to
/// take snapshots.
///
/// ```
/// use dq_metrics::Recorder;
///
/// let recorder = Recorder::default();
/// metrics::with_local_recorder(&recorder, || {
///     metrics::histogram!("dramatiq_message_duration_milliseconds",
///         "queue_name" => "default", "actor_name" => "add").record(7.0);
/// });
/// let text = recorder.snapshot().render();
/// assert!(text.contains(r#"le="10.0",queue_name="default"} 1.0"#));
/// ```
#[derive(Clone, Default)]
pub struct Recorder {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Counters, gauges and histograms, one map each (see [`slot`]): looking a key up needs no
    /// copy of it, which matters on the hot path (every `counter!` call looks its key up).
    entries: [RwLock<HashMap<Key, Entry>>; 3],
    help: RwLock<HashMap<String, String>>,
    buckets: Vec<(String, Vec<f64>)>,
}

#[derive(Clone)]
enum Entry {
    Scalar(Arc<AtomicU64>),
    Histogram(Arc<Buckets>),
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self
            .inner
            .entries
            .iter()
            .map(|m| m.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum();
        f.debug_struct("Recorder").field("series", &n).finish()
    }
}

impl Recorder {
    /// Sets the bucket bounds of histogram `name` (ascending, finite: `+Inf` is always there).
    /// Call it before the recorder records anything.
    ///
    /// ```
    /// let recorder = dq_metrics::Recorder::default().with_buckets("my_latency_seconds", &[0.1, 1.0]);
    /// metrics::with_local_recorder(&recorder, || metrics::histogram!("my_latency_seconds").record(0.5));
    /// assert!(recorder.snapshot().render().contains(r#"my_latency_seconds_bucket{le="1.0"} 1.0"#));
    /// ```
    pub fn with_buckets(mut self, name: &str, bounds: &[f64]) -> Recorder {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        // Only a recorder nothing else holds yet can change: the builder use above.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.buckets.retain(|(n, _)| n != name);
            inner.buckets.push((name.to_owned(), bounds));
        }
        self
    }

    /// Makes this recorder the process's global one, which the `metrics` macros (and so the
    /// [`Prometheus`](crate::Prometheus) middleware) record to. Keep a clone to take snapshots.
    ///
    /// ```
    /// let recorder = dq_metrics::Recorder::default();
    /// recorder.clone().install()?;
    /// // Only one global recorder per process:
    /// assert!(dq_metrics::Recorder::default().install().is_err());
    /// # Ok::<(), dq_metrics::Error>(())
    /// ```
    pub fn install(self) -> Result<()> {
        metrics::set_global_recorder(self).map_err(|_| Error::RecorderInstalled)?;
        crate::describe();
        Ok(())
    }

    /// Everything recorded so far.
    pub fn snapshot(&self) -> Snapshot {
        let help = self
            .inner
            .help
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut snap = Snapshot::default();
        for kind in [Kind::Counter, Kind::Gauge, Kind::Histogram] {
            let entries = self.inner.entries[slot(kind)]
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for (key, entry) in entries.iter() {
                let fam = snap
                    .families
                    .entry(key.name().to_owned())
                    .or_insert_with(|| Family {
                        kind,
                        help: help.get(key.name()).cloned().unwrap_or_default(),
                        series: Vec::new(),
                    });
                if fam.kind != kind {
                    continue;
                }
                let labels = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                let value = match (kind, entry) {
                    (Kind::Counter, Entry::Scalar(v)) => {
                        Value::Scalar(v.load(Ordering::Relaxed) as f64)
                    }
                    (Kind::Gauge, Entry::Scalar(v)) => {
                        Value::Scalar(f64::from_bits(v.load(Ordering::Relaxed)))
                    }
                    (_, Entry::Histogram(h)) => Value::Histogram(h.value()),
                    (Kind::Histogram, Entry::Scalar(_)) => continue,
                };
                fam.series.push((labels, value));
            }
        }
        for fam in snap.families.values_mut() {
            fam.series.sort_by(|a, b| a.0.cmp(&b.0));
        }
        snap
    }

    fn entry(&self, kind: Kind, key: &Key) -> Entry {
        let map = &self.inner.entries[slot(kind)];
        let found = map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if let Some(e) = found {
            return e;
        }
        let mut entries = map.write().unwrap_or_else(PoisonError::into_inner);
        entries
            .entry(key.clone())
            .or_insert_with(|| match kind {
                Kind::Histogram => {
                    let bounds = self
                        .inner
                        .buckets
                        .iter()
                        .find(|(n, _)| n == key.name())
                        .map_or_else(|| DURATION_BUCKETS.to_vec(), |(_, b)| b.clone());
                    Entry::Histogram(Arc::new(Buckets::new(bounds)))
                }
                Kind::Counter | Kind::Gauge => Entry::Scalar(Arc::new(AtomicU64::new(0))),
            })
            .clone()
    }

    fn describe(&self, key: KeyName, description: SharedString) {
        self.inner
            .help
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.as_str().to_owned(), description.into_owned());
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        match self.entry(Kind::Counter, key) {
            Entry::Scalar(v) => Counter::from_arc(v),
            Entry::Histogram(_) => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        match self.entry(Kind::Gauge, key) {
            Entry::Scalar(v) => Gauge::from_arc(v),
            Entry::Histogram(_) => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        match self.entry(Kind::Histogram, key) {
            Entry::Histogram(h) => Histogram::from_arc(h),
            Entry::Scalar(_) => Histogram::noop(),
        }
    }
}

/// The index of `kind`'s map in `Inner::entries`.
fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Counter => 0,
        Kind::Gauge => 1,
        Kind::Histogram => 2,
    }
}

/// A histogram's live state: one count per bucket (not cumulative) and the sum, as f64 bits.
struct Buckets {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: Vec<f64>) -> Buckets {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Buckets {
            bounds,
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn value(&self) -> HistogramValue {
        HistogramValue {
            bounds: self.bounds.clone(),
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }
}

impl metrics::HistogramFn for Buckets {
    fn record(&self, value: f64) {
        // Prometheus buckets are "less than or equal": 5.0 goes in le="5.0".
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}
