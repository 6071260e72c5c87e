//! Snapshots of a registry, their sum over processes, and the Prometheus text format as Python's
//! `prometheus_client` writes it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The content type of [`Snapshot::render`]'s text: the one `prometheus_client` 0.26 sends.
pub const CONTENT_TYPE: &str = "text/plain; version=1.0.0; charset=utf-8";

/// What kind of metric a [`Family`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Only goes up; summed over processes, kept after a process ends.
    Counter,
    /// Goes up and down; summed over the processes that are running.
    Gauge,
    /// Observations in buckets; summed over processes, kept after a process ends.
    Histogram,
}

/// The value of one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    /// A counter's or a gauge's value.
    Scalar(f64),
    /// A histogram's state.
    Histogram(HistogramValue),
}

/// A histogram's buckets (not cumulative: `counts[i]` observations were at most `bounds[i]` and
/// over the bound before it; the last count is over every bound), sum and count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistogramValue {
    /// The finite upper bounds, ascending; `+Inf` is implied.
    pub bounds: Vec<f64>,
    /// One count per bound, plus one for `+Inf`.
    pub counts: Vec<u64>,
    /// The sum of the observations.
    pub sum: f64,
}

impl HistogramValue {
    /// The number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// One metric: its kind, HELP text and series, keyed by their labels (name, value) in the order
/// they were recorded with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Family {
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The HELP text (empty when the metric was never described).
    pub help: String,
    /// The series.
    pub series: Vec<(Vec<(String, String)>, Value)>,
}

/// The state of a registry at one moment, by metric name: what a worker process hands its main
/// process, and what [`Snapshot::render`] turns into the text a scrape returns.
///
/// ```
/// use dq_metrics::Recorder;
///
/// let recorder = Recorder::default();
/// metrics::with_local_recorder(&recorder, || {
///     metrics::counter!("dramatiq_messages_total", "queue_name" => "default", "actor_name" => "add")
///         .increment(2);
/// });
/// let text = recorder.snapshot().render();
/// assert!(text.contains(r#"dramatiq_messages_total{actor_name="add",queue_name="default"} 2.0"#));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The metrics, by name.
    pub families: BTreeMap<String, Family>,
}

impl Snapshot {
    /// Adds `other` into `self`: counters, gauges and histograms are summed per series, as
    /// `prometheus_client`'s multiprocess collector sums counters, histograms and `livesum`
    /// gauges. With `gauges` false, `other`'s gauges are left out: those of a process that
    /// ended.
    pub fn merge(&mut self, other: &Snapshot, gauges: bool) {
        for (name, fam) in &other.families {
            if fam.kind == Kind::Gauge && !gauges {
                continue;
            }
            let mine = self.families.entry(name.clone()).or_insert_with(|| Family {
                kind: fam.kind,
                help: String::new(),
                series: Vec::new(),
            });
            if mine.help.is_empty() {
                mine.help.clone_from(&fam.help);
            }
            for (labels, value) in &fam.series {
                match mine.series.iter_mut().find(|(l, _)| same_labels(l, labels)) {
                    Some((_, v)) => add(v, value),
                    None => mine.series.push((labels.clone(), value.clone())),
                }
            }
        }
    }

    /// Drops every gauge: what is left of a process that ended.
    pub fn without_gauges(mut self) -> Snapshot {
        self.families.retain(|_, f| f.kind != Kind::Gauge);
        self
    }

    /// Writes the snapshot to `path` as JSON, atomically (a temporary file next to it, then a
    /// rename), so a reader never sees half of it.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("dq-metrics-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("4100.json");
    /// let snapshot = dq_metrics::Recorder::default().snapshot();
    /// snapshot.write_file(&path)?;
    /// assert_eq!(dq_metrics::Snapshot::read_file(&path)?, snapshot);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let file_err = |source| Error::SnapshotFile {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec(self).map_err(|e| file_err(std::io::Error::other(e)))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, json).map_err(file_err)?;
        std::fs::rename(&tmp, path).map_err(file_err)
    }

    /// Reads a snapshot [`write_file`](Snapshot::write_file) wrote.
    pub fn read_file(path: &Path) -> Result<Snapshot> {
        let bytes = std::fs::read(path).map_err(|source| Error::SnapshotFile {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::SnapshotFormat {
            path: path.to_owned(),
            source,
        })
    }

    /// The value of the counter or gauge `name` with exactly these labels (in any order).
    ///
    /// ```
    /// # let recorder = dq_metrics::Recorder::default();
    /// # metrics::with_local_recorder(&recorder, || metrics::gauge!("dq_worker_threads").set(8.0));
    /// let snapshot = recorder.snapshot();
    /// assert_eq!(snapshot.scalar("dq_worker_threads", &[]), Some(8.0));
    /// ```
    pub fn scalar(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let fam = self.families.get(name)?;
        fam.series.iter().find_map(|(l, v)| match v {
            Value::Scalar(x) if labels_are(l, labels) => Some(*x),
            _ => None,
        })
    }

    /// The histogram `name` with exactly these labels (in any order).
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<&HistogramValue> {
        let fam = self.families.get(name)?;
        fam.series.iter().find_map(|(l, v)| match v {
            Value::Histogram(h) if labels_are(l, labels) => Some(h),
            _ => None,
        })
    }

    /// The Prometheus text format, written as `prometheus_client` 0.26's multiprocess collector
    /// writes it, so a Python worker's and a dq worker's scrapes are the same series:
    ///
    /// - label names in alphabetical order;
    /// - numbers as Python writes them (`1.0`, `le="5.0"`, `le="+Inf"`, `1.234567e+06`);
    /// - histograms as `_sum`, cumulative `_bucket{le=...}` and `_count`;
    /// - no `_created` series (the multiprocess collector writes none).
    ///
    /// Metrics are sorted by name; a metric with no series is left out.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, fam) in &self.families {
            if fam.series.is_empty() {
                continue;
            }
            let kind = match fam.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&fam.help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &fam.series {
                match value {
                    Value::Scalar(v) => {
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            label_set(labels, None),
                            float_to_go_string(*v)
                        );
                    }
                    Value::Histogram(h) => render_histogram(&mut out, name, labels, h),
                }
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &[(String, String)], h: &HistogramValue) {
    let _ = writeln!(
        out,
        "{name}_sum{} {}",
        label_set(labels, None),
        float_to_go_string(h.sum)
    );
    let mut cumulative = 0u64;
    for (i, count) in h.counts.iter().enumerate() {
        cumulative += count;
        let le = h.bounds.get(i).copied().unwrap_or(f64::INFINITY);
        let _ = writeln!(
            out,
            "{name}_bucket{} {}",
            label_set(labels, Some(&float_to_go_string(le))),
            float_to_go_string(cumulative as f64)
        );
    }
    let _ = writeln!(
        out,
        "{name}_count{} {}",
        label_set(labels, None),
        float_to_go_string(cumulative as f64)
    );
}

fn same_labels(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

fn labels_are(a: &[(String, String)], b: &[(&str, &str)]) -> bool {
    a.len() == b.len()
        && b.iter()
            .all(|(k, v)| a.iter().any(|(ak, av)| ak == k && av == v))
}

fn add(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Scalar(a), Value::Scalar(b)) => *a += b,
        (Value::Histogram(a), Value::Histogram(b)) if a.bounds == b.bounds => {
            for (x, y) in a.counts.iter_mut().zip(&b.counts) {
                *x += y;
            }
            a.sum += b.sum;
        }
        // A histogram whose buckets changed between builds, or a name reused for another
        // kind: the series cannot be added up, and the first one seen is kept.
        _ => {}
    }
}

/// `{a="1",b="2"}` with the names sorted, `le` among them if given; empty without labels.
fn label_set(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut all: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(le) = le {
        all.push(("le", le));
    }
    if all.is_empty() {
        return String::new();
    }
    all.sort_by(|a, b| a.0.cmp(b.0));
    let mut s = String::from("{");
    for (i, (k, v)) in all.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape_label(v));
    }
    s.push('}');
    s
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('\n', r"\n")
        .replace('"', "\\\"")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

/// A number as `prometheus_client` writes it: Python's `repr(float)`, except `+Inf`, `-Inf`,
/// `NaN`, and positive numbers of more than 6 integer digits in Go's exponent form
/// (`1.234567e+06`).
pub(crate) fn float_to_go_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v == f64::INFINITY {
        return "+Inf".to_owned();
    }
    if v == f64::NEG_INFINITY {
        return "-Inf".to_owned();
    }
    let s = python_repr(v);
    match s.find('.') {
        Some(dot) if v > 0.0 && dot > 6 => {
            let digits = format!("{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
            let mantissa = digits.trim_end_matches(['0', '.']);
            format!("{mantissa}e+{:02}", dot - 1)
        }
        _ => s,
    }
}

/// Python's `repr` of a finite float: the shortest digits that read back the same, in fixed
/// notation when the decimal exponent is in -4..16, else as `1.5e+16` / `1e-05`.
fn python_repr(v: f64) -> String {
    // `{:e}` gives the shortest round-trip digits: "-1.2345e6", "5e0".
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            let (int, frac) = if digits.len() > int_len {
                (digits[..int_len].to_owned(), digits[int_len..].to_owned())
            } else {
                (
                    format!("{digits}{}", "0".repeat(int_len - digits.len())),
                    "0".to_owned(),
                )
            };
            format!("{sign}{int}.{frac}")
        } else {
            let zeros = "0".repeat((-exp - 1) as usize);
            format!("{sign}0.{zeros}{digits}")
        }
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: f64, expected: &str) {
        assert_eq!(float_to_go_string(v), expected, "{v}");
    }

    #[test]
    fn numbers_are_written_as_prometheus_client_writes_them() {
        // Each pair read from prometheus_client 0.26's floatToGoString.
        check(1.0, "1.0");
        check(5.0, "5.0");
        check(600_000.0, "600000.0");
        check(1_234_567.0, "1.234567e+06");
        check(1e7, "1e+07");
        check(1e16, "1e+16");
        check(1e20, "1e+20");
        check(0.5, "0.5");
        check(1e-5, "1e-05");
        check(123.456, "123.456");
        check(12_345_678_901.5, "1.23456789015e+10");
        check(3e-7, "3e-07");
        check(0.0, "0.0");
        check(-2.0, "-2.0");
        check(-1_234_567.0, "-1234567.0");
        check(f64::INFINITY, "+Inf");
        check(f64::NAN, "NaN");
    }

    #[test]
    fn labels_are_sorted_and_escaped() {
        let labels = vec![
            ("queue_name".to_owned(), "q".to_owned()),
            ("actor_name".to_owned(), "a\"b\\c\nd".to_owned()),
        ];
        assert_eq!(
            label_set(&labels, Some("5.0")),
            r#"{actor_name="a\"b\\c\nd",le="5.0",queue_name="q"}"#
        );
        assert_eq!(label_set(&[], None), "");
    }

    #[test]
    fn merging_sums_and_drops_gauges_of_ended_processes() {
        let fam = |kind, v| Family {
            kind,
            help: "h".to_owned(),
            series: vec![(vec![("q".to_owned(), "a".to_owned())], Value::Scalar(v))],
        };
        let mut one = Snapshot::default();
        one.families.insert("c".into(), fam(Kind::Counter, 2.0));
        one.families.insert("g".into(), fam(Kind::Gauge, 1.0));
        let mut total = Snapshot::default();
        total.merge(&one, true);
        total.merge(&one, false);
        assert_eq!(total.scalar("c", &[("q", "a")]), Some(4.0));
        assert_eq!(total.scalar("g", &[("q", "a")]), Some(1.0));
        assert_eq!(one.without_gauges().families.len(), 1);
    }
}
