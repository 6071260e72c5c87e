//! Integration tests of dq-cli, one binary (STYLE.md, section 5). They run the real programs —
//! the `dq` admin tool and the `test_worker` / `test_worker_v2` / `one_app_worker` example
//! binaries, which `cargo test` builds — against the real Redis at `DQ_REDIS_URL`, each test in a Redis namespace and a
//! directory of its own, and, for the admin tool and one signal test, the real RabbitMQ at
//! `DQ_AMQP_URL`, in queues of their own ([`AmqpQueue`]) that are deleted afterwards.

mod cli_admin;
mod cli_dashboard;
mod cli_edges;
mod cli_exit_codes;
mod cli_lockdown;
mod cli_logging;
mod cli_metrics;
mod cli_one_app;
mod cli_queues;
mod cli_registry;
mod cli_schedules;
mod cli_signals;
mod cli_watch;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dq_broker_redis::RedisBroker;
use dq_core::{Broker, Message};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Long enough never to fire in a passing run, even on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// The binary of example `name`, next to the test binary's directory: `cargo test` builds the
/// package's examples along with its tests.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("the test binary's path");
    let profile_dir = deps
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p dq-cli --examples` (cargo test does)",
        path.display()
    );
    path
}

/// The `dq` admin binary.
fn dq_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dq"))
}

/// A test's own Redis namespace and scratch directory, both removed on drop.
struct Scope {
    url: String,
    namespace: String,
    dir: PathBuf,
}

impl Scope {
    fn new(prefix: &str) -> Scope {
        let url = dq_test::require_redis();
        let namespace = dq_test::unique_name(prefix);
        let dir = std::env::temp_dir().join(format!("dq-cli-{namespace}"));
        std::fs::create_dir_all(&dir).unwrap();
        Scope {
            url,
            namespace,
            dir,
        }
    }

    /// `--broker-url` and `--namespace` for this scope.
    fn broker_args(&self) -> Vec<String> {
        vec![
            "--broker-url".into(),
            self.url.clone(),
            "--namespace".into(),
            self.namespace.clone(),
        ]
    }

    async fn broker(&self) -> RedisBroker {
        RedisBroker::builder()
            .url(&self.url)
            .namespace(&self.namespace)
            .build()
            .await
            .unwrap()
    }

    fn dir_str(&self) -> String {
        self.dir.to_str().unwrap().to_owned()
    }

    /// Enqueues a message for one of the test worker's `(dir, name)` actors.
    async fn send(&self, broker: &RedisBroker, queue: &str, actor: &str, name: &str) -> Message {
        let mut m = Message::new(queue, actor, &(self.dir_str(), name), &()).unwrap();
        broker.enqueue(&mut m).await.unwrap();
        m
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What the test worker wrote into file `name`: its version and pid.
    fn read_mark(&self, name: &str) -> Option<(String, i32)> {
        let text = std::fs::read_to_string(self.file(name)).ok()?;
        let (version, pid) = text.split_once(' ')?;
        Some((version.to_owned(), pid.parse().ok()?))
    }

    /// Waits until the test worker has written file `name`, and returns its mark.
    async fn wait_mark(&self, name: &str) -> (String, i32) {
        let path = self.file(name);
        assert!(
            dq_test::wait_until_async(PATIENCE, || {
                let exists = path.exists();
                async move { exists }
            })
            .await,
            "{} never appeared",
            path.display()
        );
        self.read_mark(name).unwrap()
    }

    /// Runs the `dq` admin tool to completion against this scope's broker.
    fn dq(&self, args: &[&str]) -> Output {
        Command::new(dq_bin())
            .args(self.broker_args())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        // Every key of the namespace: queues, dead letters, ack sets, heartbeats.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut con) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.namespace))
            .query(&mut con)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut con);
        }
    }
}

/// A running program whose output lines are collected as they come.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

impl Running {
    /// Starts `program` with `args` in a process group of its own (so a signal to the group
    /// reaches it and its worker processes, as Ctrl-C in a terminal does).
    fn start(program: &Path, args: &[String], envs: &[(&str, &str)]) -> Running {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        cmd.args(args)
            // Any free port for the Prometheus endpoint: tests run side by side.
            .env("dramatiq_prom_port", "0")
            .envs(envs.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Running {
            child,
            lines,
            status: None,
        }
    }

    /// The test worker with `args` after this scope's broker flags.
    fn worker(scope: &Scope, binary: &Path, args: &[&str]) -> Running {
        let mut all = scope.broker_args();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Running::start(binary, &all, &[])
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Every line so far, joined, for failure messages.
    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until at least `n` lines contain `needle`.
    async fn wait_lines(&self, needle: &str, n: usize) {
        let ok = dq_test::wait_until_async(PATIENCE, || {
            let enough = self.count(needle) >= n;
            async move { enough }
        })
        .await;
        assert!(
            ok,
            "waited for {n} line(s) with {needle:?}; got:\n{}",
            self.output()
        );
    }

    /// The pids of worker processes that said they are ready, in order.
    fn ready_pids(&self) -> Vec<i32> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Worker process is ready for action."))
            .map(|l| line_pid(l))
            .collect()
    }

    /// Waits until `n` worker processes in all have said they are ready.
    async fn wait_ready(&self, n: usize) -> Vec<i32> {
        self.wait_lines("Worker process is ready for action.", n)
            .await;
        self.ready_pids()
    }

    /// Waits for the program to exit and returns its exit code.
    async fn wait_exit(&mut self) -> i32 {
        let ok = dq_test::wait_until_async(PATIENCE, || {
            if self.status.is_none() {
                self.status = self.child.try_wait().unwrap();
            }
            let done = self.status.is_some();
            async move { done }
        })
        .await;
        assert!(ok, "the program did not exit; output:\n{}", self.output());
        // Let the reader threads take the last lines.
        let lines = self.lines.clone();
        let before = lines.lock().unwrap().len();
        let _ = dq_test::wait_until_async(Duration::from_millis(200), || {
            let grew = lines.lock().unwrap().len() > before;
            async move { grew }
        })
        .await;
        self.status
            .unwrap()
            .code()
            .unwrap_or_else(|| panic!("killed by a signal; output:\n{}", self.output()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() && self.child.try_wait().ok().flatten().is_none() {
            // The whole group: the worker processes too, so none outlives its test.
            let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// The pid in a log line: `[...] [PID 123] [...]`.
fn line_pid(line: &str) -> i32 {
    let at = line.find("[PID ").expect("a log line") + 5;
    let end = line[at..].find(']').unwrap() + at;
    line[at..end].parse().unwrap()
}

/// Whether process `pid` is still running (and not a zombie waiting to be reaped).
fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: "123 (name) S ...".
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until process `pid` is gone.
async fn wait_gone(pid: i32) {
    assert!(
        dq_test::wait_until_async(PATIENCE, || {
            let gone = !is_alive(pid);
            async move { gone }
        })
        .await,
        "process {pid} is still running"
    );
}

/// A RabbitMQ queue of this test's, with its delay and dead-letter queues deleted on drop.
struct AmqpQueue {
    url: String,
    name: String,
}

impl AmqpQueue {
    fn new(url: &str, name: String) -> AmqpQueue {
        AmqpQueue {
            url: url.to_owned(),
            name,
        }
    }
}

impl Drop for AmqpQueue {
    fn drop(&mut self) {
        let names = [
            self.name.clone(),
            format!("{}.DQ", self.name),
            format!("{}.XQ", self.name),
        ];
        let url = self.url.clone();
        // A runtime on a thread of its own: drop cannot await.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let props = lapin::ConnectionProperties::default();
                let conn = lapin::Connection::connect(&url, props).await?;
                let ch = conn.create_channel().await?;
                for n in &names {
                    ch.queue_delete(n.as_str().into(), Default::default())
                        .await?;
                }
                conn.close(200, "cleanup".into()).await
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("could not delete RabbitMQ queue {}: {e}", self.name);
        }
    }
}
