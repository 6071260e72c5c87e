//! The web dashboard mounted in your own axum app, under `/dq`: queues with their counts and
//! throughput, a queue's ready, delayed and dead-lettered messages, a dead letter's traceback,
//! requeue and delete, workers, schedules, and the JSON API behind it all.
//!
//! It runs on the in-memory broker with a few messages in every state, asks its own JSON API
//! for the queues (with reqwest, as a script or an autoscaler would), and serves the dashboard
//! for `DQ_EXAMPLE_SECONDS` seconds (default 3), or until Ctrl-C. Open the printed address
//! while it runs; `DQ_EXAMPLE_SECONDS=600` keeps it up for ten minutes and
//! `DQ_DASHBOARD_BIND=127.0.0.1:8484` picks the address. No services needed.
//!
//! ```text
//! DQ_EXAMPLE_SECONDS=600 DQ_DASHBOARD_BIND=127.0.0.1:8484 cargo run -p examples --example dashboard
//! ```
//!
//! On a real broker, `dq dashboard` (the admin tool) serves the same pages on its own.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use dq::broker::Broker;
use dq::dashboard::Dashboard;
use dq::{Message, StubBroker};

/// Puts messages in every state: ready, delayed, and dead letters with their reasons.
async fn fill(broker: &StubBroker) -> Result<(), Box<dyn std::error::Error>> {
    for n in 0..12 {
        let mut m = Message::new(
            "emails",
            "send_welcome",
            &(format!("user{n}@example.com"),),
            &(),
        )?;
        broker.enqueue(&mut m).await?;
    }
    for n in 0..3 {
        let mut m = Message::new("reports.DQ", "build_report", &(2024, n), &())?;
        m.options.set_eta(dq::broker::now_ms() + 3_600_000);
        broker.enqueue(&mut m).await?;
    }
    // Two failures a Retries middleware gave up on, with its traceback in the options as
    // Python Dramatiq and dq both write it.
    for (n, error) in [
        (7, "ZeroDivisionError: division by zero"),
        (9, "KeyError: 'month'"),
    ] {
        let mut m = Message::new("reports", "build_report", &(2023, n), &())?;
        m.options.set_retries(20);
        m.options.insert(
            "traceback".into(),
            format!(
                "Traceback (most recent call last):\n  File \"reports.py\", line 12, in build_report\n{error}\n"
            )
            .into(),
        );
        broker.enqueue(&mut m).await?;
    }
    let mut consumer = broker.consume("reports", 10).await?;
    for d in consumer.fetch(Duration::from_secs(1)).await? {
        consumer.acker().nack(&d.token, "retries exceeded").await?;
    }
    consumer.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = StubBroker::new();
    fill(&broker).await?;

    // Your app, with the dashboard under /dq. Anything but loopback needs authentication:
    // `Auth::from_env()` reads DQ_DASHBOARD_TOKEN, or DQ_DASHBOARD_USER and DQ_DASHBOARD_PASSWORD.
    let dashboard = Dashboard::new(Arc::new(broker.clone()))
        .prefix("/dq")
        .auth(dq::dashboard::Auth::from_env()?)
        .build()?;
    let app = Router::new()
        .route("/", get(|| async { "My app. The dashboard is at /dq" }))
        .nest("/dq", dashboard);

    let bind = std::env::var("DQ_DASHBOARD_BIND").unwrap_or_else(|_| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let addr = listener.local_addr()?;
    let seconds: u64 = std::env::var("DQ_EXAMPLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await
    });
    println!("The dashboard is at http://{addr}/dq for {seconds} s (Ctrl-C to stop).");

    // What a script or an autoscaler reads.
    let overview: serde_json::Value = reqwest::get(format!("http://{addr}/dq/api/queues"))
        .await?
        .json()
        .await?;
    for q in overview["queues"].as_array().into_iter().flatten() {
        println!(
            "{:<8} ready {:>3}  delayed {:>3}  dead {:>3}",
            q["name"].as_str().unwrap_or("?"),
            q["ready"].as_u64().unwrap_or(0),
            q["delayed"].as_u64().unwrap_or(0),
            q["dead"].as_u64().unwrap_or(0)
        );
    }
    server.await??;
    Ok(())
}
