//! The user guide's `count_words`: an actor that fetches a URL and counts its words. To stay off
//! the internet, the example serves a few pages itself on 127.0.0.1 and sends the actor their
//! URLs, plus one bad URL that fails, is retried and ends in the dead-letter queue.
//!
//! ```text
//! cargo run --example count_words
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use dq::SendOptions;

/// Why a page could not be fetched.
#[derive(Debug)]
struct FetchError(String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A minimal HTTP/1.0 GET, enough for this example's own server (a real app would use an HTTP
/// client crate with timeouts).
fn http_get(url: &str) -> Result<String, FetchError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| FetchError(format!("Invalid URL {url:?}: No scheme supplied")))?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = TcpStream::connect(host).map_err(|e| FetchError(format!("{url}: {e}")))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")
        .map_err(|e| FetchError(e.to_string()))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| FetchError(e.to_string()))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    Ok(body.to_owned())
}

#[dq::actor(max_retries = 2, min_backoff = 200)]
fn count_words(url: String) -> Result<usize, FetchError> {
    let text = http_get(&url)?;
    let count = text.split(' ').count();
    println!("There are {count} words at {url:?}.");
    Ok(count)
}

/// Serves `/one`, `/two` and `/three` with some text each.
fn serve(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            continue;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .to_owned();
        let words = match path.as_str() {
            "/one" => 3,
            "/two" => 30,
            "/three" => 300,
            _ => 0,
        };
        let body = vec!["word"; words].join(" ");
        let mut stream = reader.into_inner();
        let _ = write!(
            stream,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || serve(listener));

    let broker = dq::StubBroker::new();
    dq::set_broker(broker.clone())?;
    for page in ["one", "two", "three"] {
        count_words::send(format!("http://{addr}/{page}")).await?;
    }
    // No scheme: fails, is retried twice (about 0.2 s, then 0.4 s later), then dead-lettered.
    count_words::send_with_options("foo".to_owned(), SendOptions::new()).await?;

    dq::Worker::new(dq::App::global()?, dq::WorkerOptions::default())
        .run_until_drained(std::time::Duration::from_secs(60))
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
