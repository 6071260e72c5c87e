//! The Prometheus endpoint of a two-process worker command: every series after a known mix of
//! successes, failures, retries, dead letters and delays, added up over the worker processes;
//! a SIGKILLed worker process neither resets nor doubles the counters; a port in use is a
//! clear error.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use dq_core::{now_ms, Broker, Message};
use nix::sys::signal::Signal;

use crate::{example, wait_gone, Running, Scope, PATIENCE};

/// GETs `path` from the endpoint on `port`; the status line, headers and body.
fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The body of a scrape.
fn scrape(port: u16) -> String {
    let response = get(port, "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the series written exactly as `series` (name and label set), if any.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().unwrap())
    })
}

/// The port the main process said it serves on.
async fn port(w: &Running) -> u16 {
    let needle = "Serving Prometheus metrics on http://";
    w.wait_lines(needle, 1).await;
    let lines = w.lines.lock().unwrap();
    let line = lines.iter().find(|l| l.contains(needle)).unwrap();
    let addr = &line[line.find(needle).unwrap() + needle.len()..];
    let addr = addr.trim_end_matches("/metrics.");
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Scrapes until `ok` holds for the text; returns it (panics with the last text otherwise).
async fn scrape_until(port: u16, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let done = dq_test::wait_until_async(PATIENCE, || {
        last = scrape(port);
        let good = ok(&last);
        async move { good }
    })
    .await;
    assert!(done, "never {what}; last scrape:\n{last}");
    last
}

fn quick(ms: u64) -> Message {
    Message::new("metrics", "quick", &(ms,), &()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_adds_up_every_worker_process_and_survives_a_sigkill() {
    let scope = Scope::new("cli-metrics");
    let w = Running::worker(
        &scope,
        &example("metrics_worker"),
        &["--processes", "2", "--threads", "2"],
    );
    let pids = w.wait_ready(2).await;
    let port = port(&w).await;
    let broker = scope.broker().await;

    // 4 successes, 1 delayed success, 2 failures retried once then dead-lettered.
    for ms in [1, 5, 30, 60] {
        broker.enqueue(&mut quick(ms)).await.unwrap();
    }
    let mut delayed = quick(1);
    delayed.queue_name = "metrics.DQ".into();
    delayed.options.set_eta(now_ms() + 300);
    broker.enqueue(&mut delayed).await.unwrap();
    for _ in 0..2 {
        let mut m = Message::new("metrics", "broken", &(), &()).unwrap();
        broker.enqueue(&mut m).await.unwrap();
    }

    let q = r#"queue_name="metrics""#;
    let text = scrape_until(port, "saw every message settle", |t| {
        value(
            t,
            &format!(r#"dramatiq_messages_total{{actor_name="quick",{q}}}"#),
        ) == Some(5.0)
            && value(
                t,
                &format!(r#"dramatiq_message_rejects_total{{actor_name="broken",{q}}}"#),
            ) == Some(2.0)
            && value(t, &format!(r#"dq_queue_dead_messages{{{q}}}"#)) == Some(2.0)
    })
    .await;
    let expect = |series: &str, v: f64| {
        assert_eq!(value(&text, series), Some(v), "{series} in\n{text}");
    };
    expect(
        r#"dramatiq_messages_total{actor_name="broken",queue_name="metrics"}"#,
        4.0,
    );
    expect(
        r#"dramatiq_message_errors_total{actor_name="broken",queue_name="metrics"}"#,
        4.0,
    );
    assert_eq!(
        value(
            &text,
            r#"dramatiq_message_errors_total{actor_name="quick",queue_name="metrics"}"#
        ),
        None
    );
    // Once per retry, under the delay queue's name (Python also counts it under "metrics").
    expect(
        r#"dramatiq_message_retries_total{actor_name="broken",queue_name="metrics.DQ"}"#,
        2.0,
    );
    assert_eq!(
        value(
            &text,
            r#"dramatiq_message_retries_total{actor_name="broken",queue_name="metrics"}"#
        ),
        None
    );
    expect(
        r#"dramatiq_messages_inprogress{actor_name="quick",queue_name="metrics"}"#,
        0.0,
    );
    expect(
        r#"dramatiq_messages_inprogress{actor_name="broken",queue_name="metrics"}"#,
        0.0,
    );
    // Held, then moved: up and down under one label.
    expect(
        r#"dramatiq_delayed_messages_inprogress{actor_name="quick",queue_name="metrics.DQ"}"#,
        0.0,
    );
    expect(
        r#"dramatiq_delayed_messages_inprogress{actor_name="broken",queue_name="metrics.DQ"}"#,
        0.0,
    );
    let h = "dramatiq_message_duration_milliseconds";
    expect(&format!(r#"{h}_count{{actor_name="quick",{q}}}"#), 5.0);
    expect(&format!(r#"{h}_count{{actor_name="broken",{q}}}"#), 4.0);
    expect(
        &format!(r#"{h}_bucket{{actor_name="quick",le="+Inf",{q}}}"#),
        5.0,
    );
    expect(
        &format!(r#"{h}_bucket{{actor_name="quick",le="900000.0",{q}}}"#),
        5.0,
    );
    // 30 and 60 ms runs are over 25 ms; the others (1, 5, 1 ms, plus overhead) may not be.
    let under_25 = value(
        &text,
        &format!(r#"{h}_bucket{{actor_name="quick",le="25.0",{q}}}"#),
    );
    assert!(under_25.is_some_and(|n| n <= 3.0), "{text}");
    assert!(
        value(&text, &format!(r#"{h}_sum{{actor_name="quick",{q}}}"#)).is_some_and(|s| s >= 96.0),
        "{text}"
    );
    let les: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!(r#"{h}_bucket{{actor_name="quick""#)))
        .map(|l| {
            let at = l.find("le=\"").unwrap() + 4;
            &l[at..at + l[at..].find('"').unwrap()]
        })
        .collect();
    assert_eq!(
        les,
        [
            "5.0", "10.0", "25.0", "50.0", "75.0", "100.0", "250.0", "500.0", "750.0", "1000.0",
            "2500.0", "5000.0", "7500.0", "10000.0", "30000.0", "60000.0", "600000.0", "900000.0",
            "+Inf"
        ]
    );
    for line in [
        "# HELP dramatiq_messages_total The total number of messages processed.",
        "# TYPE dramatiq_messages_total counter",
        "# HELP dramatiq_message_errors_total The total number of errored messages.",
        "# HELP dramatiq_message_retries_total The total number of retried messages.",
        "# HELP dramatiq_message_rejects_total The total number of dead-lettered messages.",
        "# HELP dramatiq_messages_inprogress The number of messages in progress.",
        "# TYPE dramatiq_messages_inprogress gauge",
        "# HELP dramatiq_delayed_messages_inprogress The number of delayed messages in memory.",
        "# HELP dramatiq_message_duration_milliseconds The time spent processing messages.",
        "# TYPE dramatiq_message_duration_milliseconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    assert!(!text.contains("_created"), "{text}");
    // Autoscaling: both processes' slots, none busy; the queue's depths from the broker.
    expect("dq_worker_threads", 4.0);
    expect("dq_worker_threads_busy", 0.0);
    expect(r#"dq_queue_ready_messages{queue_name="metrics"}"#, 0.0);
    expect(r#"dq_queue_delayed_messages{queue_name="metrics"}"#, 0.0);
    // Any path answers, as Python's server does.
    assert!(get(port, "/").contains("dramatiq_messages_total"));

    // SIGKILL one worker process: what it counted stays, once.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0]), Signal::SIGKILL).unwrap();
    wait_gone(pids[0]).await;
    w.wait_ready(3).await;
    let text = scrape_until(port, "saw the restarted process", |t| {
        value(t, "dq_worker_threads") == Some(4.0)
    })
    .await;
    assert_eq!(
        value(
            &text,
            r#"dramatiq_messages_total{actor_name="quick",queue_name="metrics"}"#
        ),
        Some(5.0),
        "{text}"
    );
    for _ in 0..2 {
        broker.enqueue(&mut quick(1)).await.unwrap();
    }
    let text = scrape_until(port, "counted the messages after the restart", |t| {
        value(
            t,
            r#"dramatiq_messages_total{actor_name="quick",queue_name="metrics"}"#,
        ) == Some(7.0)
    })
    .await;
    let expect = |series: &str, v: f64| {
        assert_eq!(value(&text, series), Some(v), "{series} in\n{text}");
    };
    expect(
        r#"dramatiq_messages_total{actor_name="broken",queue_name="metrics"}"#,
        4.0,
    );
    expect(
        r#"dramatiq_message_rejects_total{actor_name="broken",queue_name="metrics"}"#,
        2.0,
    );
    expect(
        r#"dramatiq_message_retries_total{actor_name="broken",queue_name="metrics.DQ"}"#,
        2.0,
    );
    expect(
        r#"dramatiq_message_duration_milliseconds_count{actor_name="quick",queue_name="metrics"}"#,
        7.0,
    );
    expect(
        r#"dramatiq_messages_inprogress{actor_name="quick",queue_name="metrics"}"#,
        0.0,
    );
    drop(w);
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error_and_no_prometheus_turns_it_off() {
    let scope = Scope::new("cli-metrics-port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let args = [
        "--processes",
        "1",
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        &port,
    ];
    let mut w = Running::worker(&scope, &example("metrics_worker"), &args);
    assert_eq!(w.wait_exit().await, dq_cli::exit::USAGE, "{}", w.output());
    let out = w.output();
    assert!(
        out.contains(&format!(
            "Cannot serve Prometheus metrics on 127.0.0.1:{port}"
        )) && out.contains("--no-prometheus"),
        "{out}"
    );
    assert_eq!(w.count("Worker process is ready"), 0, "{out}");

    let mut args = args.to_vec();
    args.push("--no-prometheus");
    let mut w = Running::worker(&scope, &example("metrics_worker"), &args);
    w.wait_ready(1).await;
    assert_eq!(w.count("Serving Prometheus metrics"), 0, "{}", w.output());
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, dq_cli::exit::OK, "{}", w.output());
    drop(taken);
}
