//! Pipelines, from the cookbook: chain actors so each one's result becomes the next one's last
//! argument. `dq::pipe(first).then(stage)` checks at compile time that each stage takes what the
//! one before returns (`my_actor::piped(..)` is the actor with every argument but that last
//! one); `then_message` adds a stage that ignores the previous result (`pipe_ignore`). The last
//! stage's result reads back typed; Dramatiq's `get_results` reads every stage's. Needs no
//! services.
//!
//! ```text
//! cargo run -p examples --example pipelines
//! ```
//!
//! Reading results needs the Results middleware (use `dq::results::RedisBackend` across
//! processes). Dramatiq's untyped `pipeline([...])` and `a | b` build the same messages, from any
//! messages, checked only when they run.

use std::time::Duration;

use dq::results::{MemoryBackend, PipelineResults, Results};

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
    let timeout = Duration::from_secs(5);

    // `count_words` gets its `text` from the previous stage: `piped` takes the other arguments.
    let uri = "http://example.com".to_owned();
    let pipe = dq::pipe(get_uri_contents::message(uri.clone())?)
        .then(count_words::piped(uri)?)
        .run()
        .await?;
    let count = pipe.wait_result(&backend, timeout).await?; // a usize, as count_words returns
    println!("the pipeline's result: {count}");

    // A stage that ignores the previous result, then one that takes its own.
    let pipe = dq::pipe(bust_caches::message()?)
        .then_message(prepare_codes::message()?)
        .then(launch_missiles::piped()?)
        .run()
        .await?;
    let last = pipe.wait_result(&backend, timeout).await?;
    println!("{last}");
    let each: Vec<serde_json::Value> = pipe.get_results(&backend, true, Some(timeout)).await?;
    println!("every stage's result: {}", serde_json::Value::from(each));

    worker.stop().await?;
    Ok(())
}
