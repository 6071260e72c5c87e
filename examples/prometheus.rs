//! Prometheus metrics from a worker command: with the `prometheus` feature of `dq` (and `cli`),
//! the worker command records Python Dramatiq's series in every worker process and serves them,
//! added up, on `dramatiq_prom_host:dramatiq_prom_port` (default `0.0.0.0:9191`), next to `dq_`
//! gauges for autoscaling (queue depths, busy and total worker threads). Nothing to add to the
//! app: the worker command adds the `Prometheus` middleware itself (`--no-prometheus` turns it
//! all off).
//!
//! To stay one runnable file, this example starts itself as the worker command
//! (`PROMETHEUS_ROLE=worker`, two worker processes, the endpoint on a free port), sends a few
//! messages (successes, one that fails, is retried and dead-lettered), scrapes the endpoint as
//! Prometheus would, prints Dramatiq's series, and stops the worker with TERM. Needs Redis
//! (`DQ_REDIS_URL`, default `redis://127.0.0.1:6379`).
//!
//! ```text
//! cargo run -p examples --example prometheus
//! PROMETHEUS_ROLE=worker cargo run -p examples --example prometheus -- --processes 2   # the worker alone
//! curl -s localhost:9191/metrics
//! ```

use std::process::{Child, Command};
use std::time::Duration;

use dq::cli::Cli;

/// Tells this file which side to play; an application has two binaries instead.
const ROLE_ENV: &str = "PROMETHEUS_ROLE";

/// Succeeds after a short pause.
#[dq::actor(queue_name = "prometheus_example")]
fn resize(width: u32) {
    std::thread::sleep(Duration::from_millis(u64::from(width) / 10));
}

/// Always fails: retried once after 10-20 ms, then dead-lettered.
#[dq::actor(
    queue_name = "prometheus_example",
    max_retries = 1,
    min_backoff = 10,
    max_backoff = 20
)]
fn flaky_upload() -> Result<(), String> {
    Err("the storage said no".to_owned())
}

/// The worker command started from this file; stopped with TERM, or killed if the example
/// fails before it gets there.
struct WorkerCommand(Child);

impl WorkerCommand {
    fn start(port: u16) -> std::io::Result<WorkerCommand> {
        let child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, "worker")
            .args(["--processes", "2", "--threads", "2"])
            .args(["--prometheus-host", "127.0.0.1"])
            .args(["--prometheus-port", &port.to_string()])
            .spawn()?;
        Ok(WorkerCommand(child))
    }

    /// TERM, as systemd or Ctrl-C would send, and the exit code.
    fn stop(mut self) -> Result<i32, Box<dyn std::error::Error>> {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(self.0.wait()?.code().unwrap_or(-1))
    }
}

impl Drop for WorkerCommand {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Scrapes until every message was counted (the worker processes write their numbers every
/// second); returns the text.
async fn scrape(url: &str, expected: f64) -> Result<String, Box<dyn std::error::Error>> {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(response) = client.get(url).send().await {
            let text = response.text().await?;
            let processed: f64 = text
                .lines()
                .filter(|l| l.starts_with("dramatiq_messages_total{"))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            if processed >= expected {
                return Ok(text);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the endpoint never counted every message".into())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let app = match Cli::new().build_app().await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {}", dq::ErrorChain(&e));
            std::process::exit(e.exit_code()); // 3 when Redis is down, as for the worker
        }
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let worker = WorkerCommand::start(port)?;

    for width in [50, 100, 200, 400] {
        resize::send_to(&app, width).await?;
    }
    flaky_upload::send_to(&app).await?;
    // 4 successes, and the failing message twice (the run and its retry).
    let text = scrape(&format!("http://127.0.0.1:{port}/metrics"), 6.0).await?;
    for line in text
        .lines()
        .filter(|l| (l.starts_with("dramatiq_") && !l.contains("_bucket{")) || l.starts_with("dq_"))
    {
        println!("{line}");
    }
    // The example's dead letter would stay in Redis otherwise.
    app.broker().flush("prometheus_example").await?;
    app.close().await?;
    println!(
        "the worker command stopped with exit code {}",
        worker.stop()?
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var(ROLE_ENV).as_deref() == Ok("worker") {
        // The worker binary's whole main.
        dq::cli::main()
    }
    tokio::runtime::Runtime::new()?.block_on(run())
}
