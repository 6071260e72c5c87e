//! # dq-bench
//!
//! The programs `cargo xtask bench` runs to compare dq with Python Dramatiq 2.2.1 on the same
//! machine and broker: `dq-bench-worker` (a `dq::cli` worker with the benchmark's actors) and
//! `dq-bench-producer` (enqueues, pre-fills, sends the latency probes, cleans up). The Python
//! side is in `python/`.
//!
//! **Key design decision:** each worker process measures itself and the bench reads the numbers
//! from files, instead of asking the broker. An actor notes when it started and finished; a
//! background thread writes the counts to `$DQ_BENCH_OUT/<pid>.txt` every 20 ms. Throughput is
//! then the number of messages over the span from the first start to the last finish across all
//! processes, which works the same for Redis and RabbitMQ, for one or many processes, and for
//! the Python worker (which writes the same file), and costs the broker no extra command.
//!
//! The file holds one line `count first_start_ns last_finish_ns`, then one line per latency
//! sample (nanoseconds from send to actor start). Times are `CLOCK_REALTIME`, comparable across
//! processes on one machine.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable naming the directory the progress files go to.
pub const OUT_ENV: &str = "DQ_BENCH_OUT";
/// The environment variable with the broker URL (`redis://...` or `amqp://...`).
pub const URL_ENV: &str = "DQ_BENCH_BROKER_URL";
/// The environment variable with the queue every benchmark actor uses.
pub const QUEUE_ENV: &str = "DQ_BENCH_QUEUE";
/// The environment variable with the Redis namespace.
pub const NAMESPACE_ENV: &str = "DQ_BENCH_NAMESPACE";

static COUNT: AtomicU64 = AtomicU64::new(0);
static FIRST: AtomicU64 = AtomicU64::new(u64::MAX);
static LAST: AtomicU64 = AtomicU64::new(0);
static LATENCIES: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static WRITER: AtomicBool = AtomicBool::new(false);

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Notes that an actor started; returns the time to pass to [`finished`].
pub fn started() -> u64 {
    let now = now_ns();
    FIRST.fetch_min(now, Ordering::Relaxed);
    now
}

/// Notes that an actor finished.
pub fn finished() {
    LAST.fetch_max(now_ns(), Ordering::Relaxed);
    COUNT.fetch_add(1, Ordering::Relaxed);
}

/// Notes a latency sample: the message was sent at `sent_ns`, its actor starts now.
pub fn latency(sent_ns: u64) {
    let now = started();
    let mut l = LATENCIES.lock().unwrap_or_else(|e| e.into_inner());
    l.push(now.saturating_sub(sent_ns));
}

/// Starts the thread that writes this process's progress file, when [`OUT_ENV`] is set.
/// Calling it again does nothing.
pub fn start_writer() {
    let Some(dir) = std::env::var_os(OUT_ENV) else {
        return;
    };
    if WRITER.swap(true, Ordering::SeqCst) {
        return;
    }
    let dir = std::path::PathBuf::from(dir);
    let pid = std::process::id();
    let path = dir.join(format!("{pid}.txt"));
    let tmp = dir.join(format!(".{pid}.tmp"));
    std::thread::Builder::new()
        .name("dq-bench-writer".into())
        .spawn(move || loop {
            // A failed write only delays the figures; the next tick retries.
            let _ = write_progress(&tmp, &path);
            std::thread::sleep(Duration::from_millis(20));
        })
        .expect("spawn the progress writer");
}

fn write_progress(tmp: &std::path::Path, path: &std::path::Path) -> std::io::Result<()> {
    let mut s = String::new();
    let first = FIRST.load(Ordering::Relaxed);
    // Read the count before the last finish time, so the span never misses a counted message.
    let count = COUNT.load(Ordering::Relaxed);
    let last = LAST.load(Ordering::Relaxed);
    s.push_str(&format!(
        "{count} {} {last}\n",
        if first == u64::MAX { 0 } else { first }
    ));
    for l in LATENCIES.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        s.push_str(&format!("{l}\n"));
    }
    let mut f = std::fs::File::create(tmp)?;
    f.write_all(s.as_bytes())?;
    drop(f);
    // Rename is atomic, so the reader never sees half a file.
    std::fs::rename(tmp, path)
}
