//! Prometheus across languages: a Python Dramatiq worker with its Prometheus middleware and a dq
//! worker command run the same mix of messages (successes, a retried failure, a dead letter, a
//! delayed message), each on its own queue; their expositions must have the same metric names,
//! types, HELP texts, label names and bucket bounds (`le="5.0"`), so one Prometheus aggregates
//! both. The one expected difference: Python's delayed-messages gauge carries a `pid` label
//! (its multiprocess mode `all`), which dq's summed gauge does not.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use dq_interop::{BrokerKind, Lang, Scenario};

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

/// The body of a scrape, or `None` while nothing listens yet.
fn scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out.split_once("\r\n\r\n")?.1.to_owned())
}

/// What must match: `# HELP` / `# TYPE` lines, and per series name its label names and, for
/// buckets, the `le` values in order.
#[derive(Debug, PartialEq)]
struct Shape {
    meta: BTreeSet<String>,
    labels: BTreeMap<String, BTreeSet<String>>,
    les: Vec<String>,
}

fn shape(text: &str) -> Shape {
    let mut meta = BTreeSet::new();
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // The `le` values of each bucket series, by its other labels.
    let mut les: BTreeMap<Vec<(String, String)>, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            // dq's own autoscaling series are extra, by design.
            if !line.contains(" dq_") {
                meta.insert(line.to_owned());
            }
            continue;
        }
        let Some((series, _value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, set) = series.split_once('{').unwrap_or((series, "}"));
        // dq's own autoscaling series are extra, by design.
        if name.starts_with("dq_") {
            continue;
        }
        let set = set.strip_suffix('}').unwrap_or(set);
        let mut others = Vec::new();
        let mut le = None;
        for pair in set.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
            let v = v.trim_end_matches('"').to_owned();
            match k {
                // The one documented difference (see the module docs).
                "pid" if name == "dramatiq_delayed_messages_inprogress" => continue,
                "le" => le = Some(v),
                _ => others.push((k.to_owned(), v)),
            }
        }
        let names = labels.entry(name.to_owned()).or_default();
        names.extend(others.iter().map(|(k, _)| k.clone()));
        if let Some(le) = le {
            names.insert("le".to_owned());
            les.entry(others).or_default().push(le);
        }
    }
    Shape {
        meta,
        labels,
        les: les.into_values().next().unwrap_or_default(),
    }
}

/// Runs the mix on a worker of `lang` with its endpoint on `port`; returns the scrape once the
/// dead letter and the delayed message were counted.
fn run(lang: Lang, port: u16) -> String {
    let mut sc = Scenario::new(BrokerKind::Redis, "prom");
    sc.extra_env
        .push(("dramatiq_prom_port".into(), port.to_string()));
    sc.extra_env
        .push(("dramatiq_prom_host".into(), "127.0.0.1".into()));
    if lang == Lang::Python {
        sc.extra_env
            .push(("DQ_INTEROP_PROMETHEUS".into(), "1".into()));
        let db = sc.path("prom-db");
        std::fs::create_dir_all(&db).expect("the Prometheus db directory");
        sc.extra_env
            .push(("dramatiq_prom_db".into(), db.to_string_lossy().into_owned()));
    }
    let mut worker = sc.spawn_worker(lang, DQ_WORKER, lang.label(), 2);
    worker.wait_ready(Duration::from_secs(30));
    let file = sc.path_str("mix");
    sc.python_send(
        &serde_json::json!([
            {"actor": "count", "args": [file, 1]},
            {"actor": "count", "args": [file, 2], "delay": 200},
            {"actor": "flaky", "args": [file, "flaky", 1]},
            {"actor": "doomed", "args": [file, "doomed"]},
        ])
        .to_string(),
    );
    let mut last = String::new();
    let done = dq_test::wait_until(Duration::from_secs(60), || {
        last = scrape(port).unwrap_or_default();
        // Both counts, flaky's two attempts, doomed's two: 6 messages processed.
        let total: f64 = last
            .lines()
            .filter(|l| l.starts_with("dramatiq_messages_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        last.contains("dramatiq_message_rejects_total{") && total >= 6.0
    });
    assert!(
        done,
        "{} worker never counted the mix; last scrape:\n{last}\nlog:\n{}",
        lang.label(),
        worker.log()
    );
    let _ = worker.stop(Duration::from_secs(20));
    last
}

#[test]
fn python_and_dq_expositions_aggregate() {
    let python = run(Lang::Python, free_port());
    let dq = run(Lang::Dq, free_port());
    let (p, d) = (shape(&python), shape(&dq));
    assert!(
        p.labels
            .contains_key("dramatiq_delayed_messages_inprogress")
            && p.labels.contains_key("dramatiq_message_retries_total")
            && p.labels
                .contains_key("dramatiq_message_duration_milliseconds_bucket"),
        "the mix did not reach every series:\n{python}"
    );
    assert_eq!(p.les.len(), 19, "{python}");
    assert_eq!(p.les.first().map(String::as_str), Some("5.0"));
    assert_eq!(p.les.last().map(String::as_str), Some("+Inf"));
    assert_eq!(
        p, d,
        "Python's exposition:\n{python}\ndq's exposition:\n{dq}"
    );
    assert!(
        python.contains("dramatiq_delayed_messages_inprogress{actor_name=\"count\",pid=\""),
        "Python's delayed gauge carries pid (the documented difference):\n{python}"
    );
}
