//! The Flask guide in Rust: a web handler moves work out of the request by sending an actor a
//! message and answering `202 Deferred` at once; a worker does the work. The example serves
//! HTTP on 127.0.0.1 itself (a real app would use its web framework; the handler is the same
//! one line), posts a few forms to itself, and runs the worker in the same process.
//!
//! Without services it uses the in-memory broker; with `RABBITMQ_URL` set (as in the guide) it
//! uses RabbitMQ, and a separate worker binary could consume the same queue.
//!
//! ```text
//! cargo run -p examples --example web_app
//! RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run -p examples --example web_app
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static DONE: AtomicUsize = AtomicUsize::new(0);

/// The guide's actor.
#[dq::actor(queue_name = "dq-example-web")]
fn add(x: i64, y: i64) {
    println!("The sum of {x} and {y} is {}.", x + y);
    DONE.fetch_add(1, Ordering::SeqCst);
}

/// `POST /` with a form `x=..&y=..`: the view of the guide. Sending is all it does.
fn compute_sum(form: &str) -> (u16, String) {
    let field = |name: &str| {
        form.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<i64>().ok())
    };
    let (Some(x), Some(y)) = (field("x"), field("y")) else {
        return (400, "x and y must be integers".to_owned());
    };
    match add::send_blocking(x, y) {
        Ok(_) => (202, "Deferred".to_owned()),
        Err(e) => (503, format!("could not defer: {e}")),
    }
}

/// A minimal HTTP/1.0 server: one request per connection, enough for this example.
fn serve(listener: TcpListener) {
    for mut stream in listener.incoming().flatten() {
        let mut reader = BufReader::new(stream.try_clone().expect("a socket clone"));
        let mut request_line = String::new();
        let _ = reader.read_line(&mut request_line);
        let mut length = 0;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        let _ = reader.read_exact(&mut body);
        let (status, text) = if request_line.starts_with("POST / ") {
            compute_sum(&String::from_utf8_lossy(&body))
        } else {
            (404, "not found".to_owned())
        };
        let _ = write!(
            stream,
            "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
    }
}

/// What a browser submitting the form would do.
fn post(addr: &str, form: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("the example's own server");
    write!(
        s,
        "POST / HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap_or("?").to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    format!("{status} {body}")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();

    // tasks.py: pick the broker and set it before any actor is used.
    let amqp = match std::env::var("RABBITMQ_URL") {
        Ok(url) => {
            let broker = dq::amqp::AmqpBroker::builder().url(url).build().await?;
            dq::set_broker(broker.clone())?;
            Some(broker)
        }
        Err(_) => {
            dq::set_broker(dq::StubBroker::new())?;
            None
        }
    };

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || serve(listener));

    // The worker: in production a separate set of processes (`dq::cli::main()`).
    let worker = dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default());
    worker.start().await?;

    for form in ["x=1&y=2", "x=40&y=2", "x=one&y=2", "x=-7&y=7"] {
        let addr = addr.clone();
        let answer = tokio::task::spawn_blocking(move || post(&addr, form)).await?;
        println!("POST / {form} -> {answer}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while DONE.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the worker did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.stop().await?;
    if let Some(broker) = amqp {
        dq::Broker::close(&broker).await?;
    }
    Ok(())
}
