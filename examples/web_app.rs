//! The Flask guide in Rust, with axum: a web handler moves work out of the request by sending an
//! actor a message and answering `202 Deferred` at once; a worker does the work. The example
//! serves the handler with axum on 127.0.0.1, posts a few forms to it with reqwest (as a browser
//! submitting the form would), and runs the worker in the same process; it exits once the worker
//! has done the work.
//!
//! Without services it uses the in-memory broker; with `RABBITMQ_URL` set (as in the guide) it
//! uses RabbitMQ, and a separate worker binary could consume the same queue.
//!
//! ```text
//! cargo run -p examples --example web_app
//! RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p examples --example web_app
//! ```

use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::Form;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

/// The guide's actor.
#[dq::actor(queue_name = "dq-example-web")]
fn add(x: i64, y: i64) {
    println!("The sum of {x} and {y} is {}.", x + y);
}

/// The form `POST /` takes.
#[derive(Deserialize)]
struct Sum {
    x: i64,
    y: i64,
}

/// `POST /` with a form `x=..&y=..`: the view of the guide. Sending is all it does.
async fn compute_sum(form: Result<Form<Sum>, FormRejection>) -> (StatusCode, String) {
    // axum answers a form it cannot read with 422 (or 415 without the form content type);
    // the guide's view answers 400.
    let Form(Sum { x, y }) = match form {
        Ok(form) => form,
        Err(rejection) => return (StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    match add::send(x, y).await {
        Ok(_) => (StatusCode::ACCEPTED, "Deferred".to_owned()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not defer: {e}"),
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();

    // tasks.py: pick the broker and set it before any handler runs.
    let app = match std::env::var("RABBITMQ_URL") {
        Ok(url) => dq::set_broker(dq::amqp::AmqpBroker::builder().url(url).build().await?)?,
        Err(_) => dq::set_broker(dq::StubBroker::new())?,
    };

    // The web app.
    let router = Router::new().route("/", post(compute_sum));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = server_stopped.await;
            })
            .await
    });

    // The worker: in production a separate set of processes (`dq::cli::main()`).
    let worker = dq::Worker::new(app.clone(), dq::WorkerOptions::default());
    worker.start().await?;

    // A browser submitting the form.
    let client = reqwest::Client::new();
    for (x, y) in [("1", "2"), ("40", "2"), ("one", "2"), ("-7", "7")] {
        let response = client.post(&url).form(&[("x", x), ("y", y)]).send().await?;
        let status = response.status().as_u16();
        println!("POST / x={x}&y={y} -> {status} {}", response.text().await?);
    }

    // Wait until the worker has done what the handler deferred, then stop everything.
    worker.drained(Duration::from_secs(30)).await?;
    worker.stop().await?;
    let _ = stop_server.send(());
    server.await??;
    app.close().await?;
    Ok(())
}
