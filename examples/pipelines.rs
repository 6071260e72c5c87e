//! Pipelines, from the cookbook: chain actors so each one's result becomes the next one's last
//! argument, with `pipeline([...])` or `a | b`; `pipe_ignore` keeps a result from being passed on;
//! read the last result with `get_result` and every stage's with `get_results`. Needs no
//! services.
//!
//! ```text
//! cargo run -p examples --example pipelines
//! ```
//!
//! Reading results needs the Results middleware (use `dq::results::RedisBackend` across
//! processes).

use std::time::Duration;

use dq::results::{pipeline, MemoryBackend, PipelineResults, Results};
use dq::{Message, SendOptions};

/// Stands in for an HTTP fetch, so the example needs no network.
#[dq::actor(store_results = true)]
fn get_uri_contents(uri: String) -> String {
    format!("lorem ipsum dolor sit amet, fetched from {uri}")
}

#[dq::actor(store_results = true)]
fn count_words(uri: String, text: String) -> usize {
    let count = text.split(' ').count();
    println!("There are {count} words at {uri}.");
    count
}

#[dq::actor(store_results = true)]
fn bust_caches() -> u32 {
    println!("caches busted");
    3
}

#[dq::actor(store_results = true)]
fn prepare_codes() -> Vec<String> {
    vec!["1234".into(), "5678".into()]
}

#[dq::actor(store_results = true)]
fn launch_missiles(codes: Vec<String>) -> String {
    format!("launched with codes {}", codes.join(", "))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();

    let backend = MemoryBackend::default();
    let broker = dq::StubBroker::new();
    let app = dq::app(broker.clone())
        .middleware(Results::new(backend.clone()))
        .build()?;
    app.set_global();
    let worker = dq::Worker::new(app, dq::WorkerOptions::default());
    worker.start().await?;
    let timeout = Some(Duration::from_secs(5));

    // `count_words` gets its `text` from the previous stage, so its message is built with the
    // first argument only: `Message::new` takes any arguments, `count_words::message` all of them.
    let uri = "http://example.com".to_owned();
    let pipe = pipeline([
        get_uri_contents::message(uri.clone())?,
        Message::new(count_words::QUEUE, count_words::NAME, &(&uri,), &())?,
    ])
    .run()
    .await?;
    let count: usize = pipe.get_result(&backend, true, timeout).await?;
    println!("the pipeline's result: {count}");

    // Pipe notation, and a stage that ignores the previous result.
    let pipe = (bust_caches::message()?
        | prepare_codes::message_with_options(SendOptions::new().pipe_ignore(true))?
        | Message::new(launch_missiles::QUEUE, launch_missiles::NAME, &(), &())?)
    .run()
    .await?;
    let last: String = pipe.get_result(&backend, true, timeout).await?;
    println!("{last}");
    let each: Vec<serde_json::Value> = pipe.get_results(&backend, true, timeout).await?;
    println!("every stage's result: {}", serde_json::Value::from(each));

    worker.stop().await?;
    Ok(())
}
