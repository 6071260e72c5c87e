//! Actors with state: an actor takes application state (settings, an HTTP client, a database
//! pool) as a `dq::State<T>` parameter. It is not a message argument: `send` does not take it,
//! the worker hands it over from the app.
//!
//! - `quote`, a sync actor, takes `State<Settings>`, registered with `.state(..)`;
//! - `fetch_stock`, an async actor, takes `State<Fetcher>` (a `reqwest::Client` and the URL of a
//!   stock service), built with `.state_with(..)` when the worker boots, never by a producer;
//!   the stock service is a tiny axum server the example starts on 127.0.0.1;
//! - a worker whose app lacks a state one of its actors needs does not start, and says which.
//!
//! ```text
//! cargo run -p examples --example state
//! ```

use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use dq::State;
use serde::{Deserialize, Serialize};

/// Plain settings, ready when the app is built.
#[derive(Debug)]
struct Settings {
    currency: &'static str,
    vat_percent: u64,
}

/// An HTTP client and where the stock service is: built when the worker boots.
struct Fetcher {
    client: reqwest::Client,
    base: String,
}

impl Fetcher {
    /// Async set-up, as a database pool would need: here a check that the service answers.
    async fn connect(base: String) -> Result<Fetcher, reqwest::Error> {
        println!("[boot]   building the Fetcher: GET {base}/health");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        client
            .get(format!("{base}/health"))
            .send()
            .await?
            .error_for_status()?;
        Ok(Fetcher { client, base })
    }
}

/// What the stock service answers.
#[derive(Debug, Serialize, Deserialize)]
struct Stock {
    sku: String,
    count: u32,
}

/// A sync actor with state: `cents` comes from the message, `settings` from the app.
#[dq::actor(queue_name = "dq-example-state")]
fn quote(cents: u64, settings: State<Settings>) {
    let gross = cents * (100 + settings.vat_percent) / 100;
    let currency = settings.currency;
    println!("[worker] quote: {cents} {currency} cents net, {gross} gross");
}

/// An async actor with state built at boot. An `Err` is retried, as for any actor.
#[dq::actor(queue_name = "dq-example-state")]
async fn fetch_stock(sku: String, fetcher: State<Fetcher>) -> Result<(), reqwest::Error> {
    let stock: Stock = fetcher
        .client
        .get(format!("{}/stock/{sku}", fetcher.base))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!(
        "[worker] fetch_stock: {} in stock: {}",
        stock.sku, stock.count
    );
    Ok(())
}

/// The stock service the `Fetcher` talks to.
async fn stock_service() -> std::io::Result<String> {
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/stock/{sku}",
            get(|Path(sku): Path<String>| async move {
                let count = sku.len() as u32 * 7;
                Json(Stock { sku, count })
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(base)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let base = stock_service().await?;

    // The app: settings as they are, the Fetcher built by each worker as it starts.
    let app = dq::app(dq::StubBroker::new())
        .state(Settings {
            currency: "EUR",
            vat_percent: 20,
        })
        .state_with(move || Fetcher::connect(base.clone()))
        .build()?;
    app.set_global();

    // The producer sends message arguments only; it never builds the Fetcher.
    quote::send(1000).await?;
    fetch_stock::send("apple".to_owned()).await?;
    fetch_stock::send("banana".to_owned()).await?;
    println!("[app]    sent 3 messages; no Fetcher built yet");

    // The worker builds the Fetcher, then runs the messages; stops once the queue is empty.
    let options = dq::WorkerOptions {
        worker_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let worker = dq::Worker::new(app, options.clone());
    worker.run_until_drained(Duration::from_secs(10)).await?;
    println!("[app]    worker drained the queue and stopped");

    // An app without the Fetcher: a worker on `fetch_stock`'s queue refuses to start.
    let incomplete = dq::app(dq::StubBroker::new())
        .state(Settings {
            currency: "EUR",
            vat_percent: 20,
        })
        .build()?;
    match dq::Worker::new(incomplete, options).start().await {
        Err(e) => println!("[app]    a worker without the Fetcher: Worker::start failed: {e}"),
        Ok(()) => return Err("a worker started without the state its actor needs".into()),
    }
    Ok(())
}
