//! The user guide's `count_words`: an actor that fetches a URL and counts its words. To stay off
//! the internet, the example serves a few pages itself on 127.0.0.1 (with axum) and sends the
//! actor their URLs, plus one bad URL that fails, is retried and ends in the dead-letter queue.
//! The actor fetches with reqwest, through one shared client given to it as app state.
//!
//! ```text
//! cargo run --example count_words
//! ```

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use dq::State;

/// Why a page could not be fetched: reqwest's error with its causes, so the dead letter's
/// reason says "relative URL without a base", not only "builder error".
#[derive(Debug)]
struct FetchError(String);

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> FetchError {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        FetchError(text)
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[dq::actor(max_retries = 2, min_backoff = 200)]
async fn count_words(url: String, http: State<reqwest::Client>) -> Result<usize, FetchError> {
    let text = http
        .get(&url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let count = text.split_whitespace().count();
    println!("There are {count} words at {url:?}.");
    Ok(count)
}

/// A page of `n` words.
fn words(n: usize) -> String {
    vec!["word"; n].join(" ")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();

    let pages = Router::new()
        .route("/one", get(|| async { words(3) }))
        .route("/two", get(|| async { words(30) }))
        .route("/three", get(|| async { words(300) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, pages).await });

    let broker = dq::StubBroker::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    // The one app of this program: the stub broker, default middleware, and the client.
    let app = dq::app(broker.clone()).state(http).build()?;
    app.set_global();
    for page in ["one", "two", "three"] {
        count_words::send(format!("http://{addr}/{page}")).await?;
    }
    // No scheme: fails, is retried twice (about 0.2 s, then 0.4 s later), then dead-lettered.
    count_words::send("foo".to_owned()).await?;

    dq::Worker::new(app.clone(), dq::WorkerOptions::default())
        .run_until_drained(Duration::from_secs(60))
        .await?;
    for dead in broker.dead_letters_by_queue(count_words::QUEUE) {
        let message = dq::Message::decode(&dead.body)?;
        println!(
            "dead letter: {} ({})",
            message.display_call(),
            dead.reason.unwrap_or_default()
        );
    }
    Ok(())
}
