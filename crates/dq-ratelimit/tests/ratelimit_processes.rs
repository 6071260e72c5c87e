//! A distributed mutex across two worker processes: a `ConcurrentRateLimiter` of limit 1 on
//! Redis, held by the actor of two separate `mutex_worker` processes consuming one Redis queue.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dq_broker_redis::RedisBroker;
use dq_core::{Broker, Message};
use serde_json::Value;

use crate::support::Keys;

/// The `mutex_worker` example. `cargo test` and `cargo nextest run` build a package's examples
/// with its tests, into `examples/` beside the test binary's `deps/`, so it is normally there
/// and current; only when it is not (a run limited to `--test tests`) is it built here, which
/// may take a while.
fn mutex_worker() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    if let Some(profile_dir) = exe.parent().and_then(|deps| deps.parent()) {
        let built = profile_dir
            .join("examples")
            .join(format!("mutex_worker{}", std::env::consts::EXE_SUFFIX));
        if built.is_file() {
            return built;
        }
    }
    build_mutex_worker()
}

/// Builds the `mutex_worker` example and returns its path (cargo knows where it put it).
fn build_mutex_worker() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--package",
            "dq-ratelimit",
            "--example",
            "mutex_worker",
            "--message-format=json",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build for the mutex_worker example");
    assert!(
        out.status.success(),
        "cannot build the mutex_worker example"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "mutex_worker")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no mutex_worker executable")
}

/// A running worker process; it stops its worker when its stdin closes (on drop).
struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    fn start(exe: &PathBuf, env: &[(&str, &str)]) -> WorkerProcess {
        let mut child = Command::new(exe)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting mutex_worker");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "mutex_worker did not start");
        WorkerProcess { child }
    }

    /// Closes stdin and waits for a clean exit.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "mutex_worker exited with {status}");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.child.stdin.take().is_some() {
            // Stopped by a failed assertion: do not leave it running.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mutex_never_overlaps_across_two_worker_processes() {
    let keys = Keys::redis("rl-procs");
    let url = keys.url.clone().unwrap();
    let namespace = keys.key("ns");
    let queue = dq_test::unique_name("rl-procs");
    let mutex_key = keys.key("mutex");
    let dir = std::env::temp_dir().join(keys.key("records"));
    std::fs::create_dir_all(&dir).unwrap();
    let records = dir.join("runs.jsonl");
    let records_path = records.to_str().unwrap().to_owned();

    let exe = mutex_worker();
    let env = [
        ("DQ_RL_REDIS", url.as_str()),
        ("DQ_RL_NAMESPACE", namespace.as_str()),
        ("DQ_RL_QUEUE", queue.as_str()),
        ("DQ_RL_KEY", mutex_key.as_str()),
        ("DQ_RL_THREADS", "3"),
    ];
    let a = WorkerProcess::start(&exe, &env);
    let b = WorkerProcess::start(&exe, &env);

    let broker = RedisBroker::builder()
        .url(url.clone())
        .namespace(namespace.clone())
        .build()
        .await
        .unwrap();
    let n = 16;
    for i in 0..n {
        let mut m = Message::new(
            &queue,
            "one_at_a_time",
            &(&records_path, i.to_string(), 40),
            &(),
        )
        .unwrap();
        broker.enqueue(&mut m).await.unwrap();
    }
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&records)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let ran = |lines: &[Value]| lines.iter().filter(|l| l["kind"] == "ran").count();
    let all_ran = dq_test::wait_until_async(Duration::from_secs(90), || {
        let lines = read();
        async move { ran(&lines) >= n }
    })
    .await;
    a.stop();
    b.stop();
    let lines = read();
    assert!(
        all_ran,
        "only {} of {n} messages ran: {lines:?}",
        ran(&lines)
    );

    let mut runs: Vec<(u128, u128, u64)> = lines
        .iter()
        .filter(|l| l["kind"] == "ran")
        .map(|l| {
            let t = |k: &str| l[k].as_str().unwrap().parse::<u128>().unwrap();
            (t("start_us"), t("end_us"), l["pid"].as_u64().unwrap())
        })
        .collect();
    runs.sort();
    assert_eq!(runs.len(), n, "each message ran once");
    for pair in runs.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two holders at once: {pair:?}");
    }
    let mut labels: Vec<String> = lines
        .iter()
        .filter(|l| l["kind"] == "ran")
        .map(|l| l["label"].as_str().unwrap().to_owned())
        .collect();
    labels.sort_by_key(|l| l.parse::<u32>().unwrap());
    assert_eq!(labels, (0..n).map(|i| i.to_string()).collect::<Vec<_>>());
    // Both processes held the mutex, and were turned away while the other held it.
    let pids: std::collections::BTreeSet<u64> = runs.iter().map(|r| r.2).collect();
    assert_eq!(pids.len(), 2, "both processes ran messages: {pids:?}");
    let busy = lines.iter().filter(|l| l["kind"] == "busy").count();
    assert!(busy > 0, "no attempt ever found the mutex taken");
    eprintln!(
        "{n} runs in 2 processes, {busy} attempts turned away, span {} ms",
        (runs[n - 1].1 - runs[0].0) / 1000
    );

    // The broker's keys live in this test's namespace, under the same prefix as the limiter's.
    let _ = std::fs::remove_dir_all(&dir);
}
