//! The Grafana dashboard in contrib/grafana/dq.json: valid JSON, and every series its queries
//! name is one this crate (or the worker command) exports, so a rename cannot leave it behind.

use dq_metrics::names;

#[test]
fn every_series_the_dashboard_queries_exists() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/grafana/dq.json");
    let text = std::fs::read_to_string(path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let known = [
        names::MESSAGES_TOTAL,
        names::MESSAGE_ERRORS_TOTAL,
        names::MESSAGE_RETRIES_TOTAL,
        names::MESSAGE_REJECTS_TOTAL,
        names::MESSAGES_INPROGRESS,
        names::DELAYED_MESSAGES_INPROGRESS,
        names::MESSAGE_DURATION_MILLISECONDS,
        names::WORKER_THREADS,
        names::WORKER_THREADS_BUSY,
        names::QUEUE_READY,
        names::QUEUE_DELAYED,
        names::QUEUE_DEAD,
    ];
    let mut used = std::collections::BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !(word.starts_with("dramatiq_") || word.starts_with("dq_")) {
                    continue;
                }
                let series = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .filter(|base| *base == names::MESSAGE_DURATION_MILLISECONDS)
                    .unwrap_or(word);
                assert!(known.contains(&series), "{word} in {expr}");
                used.insert(series);
            }
        }
    }
    assert_eq!(used.len(), known.len(), "panels for every series: {used:?}");
}
