//! A worker binary for dq-cli's Prometheus tests: one actor that succeeds after a pause, one
//! that always fails (retried once, 10-20 ms later, then dead-lettered). Needs Redis.
//!
//! `cargo run -p dq-cli --example metrics_worker -- --processes 2` then
//! `curl localhost:9191/metrics`

use std::time::Duration;

/// Succeeds after `ms` milliseconds.
#[dq::actor(queue_name = "metrics")]
fn quick(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Always fails: retried once, then dead-lettered.
#[dq::actor(
    queue_name = "metrics",
    max_retries = 1,
    min_backoff = 10,
    max_backoff = 20
)]
fn broken() -> Result<(), String> {
    Err("broken on purpose".to_owned())
}

fn main() {
    dq_cli::main()
}
