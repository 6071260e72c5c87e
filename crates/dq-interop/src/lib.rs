//! # dq-interop
//!
//! dq against the real Python Dramatiq 2.2.1, on the real Redis and RabbitMQ: the scenarios of
//! `cargo xtask interop` (Python producer → dq worker, dq producer → Python worker, mixed workers
//! on one queue, a SIGKILLed worker's messages finished by the other side, results read across
//! languages) and the reliability runs (workers killed and restarted mid-run, brokers restarted
//! mid-run, a large backlog against a bounded prefetch).
//!
//! **Key design decision:** nothing here imitates the other side. The Python side is Dramatiq
//! itself, from the virtualenv `cargo xtask interop-venv` builds under `target/py` (its python is
//! passed in `DQ_PYTHON`); the dq side is a real worker binary of this package, run as a separate
//! process so it can be killed like any deployed worker. The tests are not part of the plain
//! `cargo nextest run`: `cargo xtask interop` runs them once the virtualenv is ready.
//!
//! The interop scenarios (tests/interop_*.rs), each on both brokers where the feature exists:
//!
//! | module | what it checks |
//! |---|---|
//! | `interop_roundtrip` | one language produces, the other works: every JSON type in args and kwargs, a delayed message (not run before its eta), retries with the actor's backoff, a dead letter in `q.XQ` |
//! | `interop_mixed` | a Python and a dq worker on one queue, fed by both producers: every message once, retries crossing languages |
//! | `interop_kill` | a worker SIGKILLed holding messages, which the other language's worker finishes (Redis: heartbeat recovery; RabbitMQ: redelivery); a busy dq worker keeps its messages |
//! | `interop_handoff` | a worker stopped gracefully hands its held delayed message to the other language |
//! | `interop_results` | results and failures stored by one language, read by the other, with MD5 and with prefix keys; pipelines built by one language and run by the other |
//! | `interop_groups` | a group run half by a Python and half by a dq worker: one shared barrier, one callback |
//! | `interop_deadletters` | dead letters of either worker requeued by dq's admin API and run to success |
//! | `interop_priority` | RabbitMQ `x-max-priority` and `broker_priority` across languages; on Redis, a Python producer's `broker_priority` honoured by a dq worker, a Python worker getting every prioritized message once no dq process heartbeats, and a 10,000-message backlog at three levels through a worker with prefetch 16 |
//!
//! Shared here: [`Scenario`] (unique queue, namespace and directory; the settings both sides
//! read from the environment; cleanup), [`WorkerProcess`] (a worker in its own process group),
//! and the Python side in `python/dq_interop_actors.py`, whose actors mirror those of the
//! `dq-interop-worker` binary name for name.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dq::broker::Broker;
use serde_json::Value;

/// The python of the Dramatiq 2.2.1 virtualenv: env `DQ_PYTHON`, set by `cargo xtask interop`.
///
/// # Panics
/// When `DQ_PYTHON` is unset or names no file: these tests must run through `cargo xtask
/// interop` (or with `DQ_PYTHON=$(cargo xtask interop-venv)`), never silently skip.
pub fn python() -> std::path::PathBuf {
    let p = std::env::var_os("DQ_PYTHON")
        .map(std::path::PathBuf::from)
        .expect("DQ_PYTHON is not set: run these tests with `cargo xtask interop`");
    assert!(p.is_file(), "DQ_PYTHON={} is not a file", p.display());
    p
}

/// The directory of the Python side: the module `dq_interop_actors`.
pub const PYTHON_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");

/// The Python module with the actors, the producer and the result reader.
pub const PYTHON_MODULE: &str = "dq_interop_actors";

/// The two brokers every scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// Redis, at [`dq_test::redis_url`].
    Redis,
    /// RabbitMQ, at [`dq_test::amqp_url`].
    Amqp,
}

/// Which language a worker or producer is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Python Dramatiq 2.2.1, from the virtualenv.
    Python,
    /// dq: the `dq-interop-worker` binary, or dq's `App` in the test.
    Dq,
}

impl Lang {
    /// The other language.
    pub fn other(self) -> Lang {
        match self {
            Lang::Python => Lang::Dq,
            Lang::Dq => Lang::Python,
        }
    }

    /// The label its records carry by default (`who`): `py` or `dq`.
    pub fn label(self) -> &'static str {
        match self {
            Lang::Python => "py",
            Lang::Dq => "dq",
        }
    }
}

/// One scenario's world: a broker, a queue, a Redis namespace and a scratch directory of its own,
/// all unique to it, and removed when it is dropped (Redis keys, RabbitMQ queues, files).
///
/// Both languages' workers and producers get their settings from [`Scenario::envs`], so they
/// always agree on the queue, the namespace and the heartbeat.
#[derive(Debug)]
pub struct Scenario {
    /// The broker.
    pub kind: BrokerKind,
    /// The broker's URL.
    pub broker_url: String,
    /// The Redis URL, for results and cleanup (every scenario has one).
    pub redis_url: String,
    /// The queue every actor of both sides uses.
    pub queue: String,
    /// The Redis key namespace of the broker (unused on RabbitMQ).
    pub namespace: String,
    /// The results namespace, when results are stored.
    pub results_namespace: Option<String>,
    /// Redis `heartbeat_timeout` of both sides, in ms.
    pub heartbeat_ms: u64,
    /// Redis `maintenance_chance` of both sides, out of 1,000,000.
    pub maintenance_chance: u32,
    /// The scratch directory: records, release files, worker logs.
    pub dir: PathBuf,
    /// Results keyed by the namespaced string rather than its MD5 (`use_namespace_prefix_keys`).
    pub results_prefix_keys: bool,
    /// Whether workers run group completion callbacks (barriers in the scenario's Redis).
    pub groups: bool,
    /// `max_priority` of every party: on RabbitMQ `x-max-priority` on the queues; on Redis the
    /// dq brokers' broker priority (Python's Redis broker has none).
    pub max_priority: Option<u8>,
    /// The namespace (key prefix, ending in `:`) of dramatiq-abort's events, when workers run
    /// the Abortable middleware on the scenario's Redis.
    pub aborts_namespace: Option<String>,
    /// More environment for the processes started after it is set (e.g. Dramatiq's
    /// `dramatiq_queue_prefetch`, which dq honours too).
    pub extra_env: Vec<(String, String)>,
}

impl Scenario {
    /// A new scenario on `kind`, with names made from `prefix`. Checks the services and the
    /// virtualenv first.
    ///
    /// # Panics
    /// When Redis, RabbitMQ (for [`BrokerKind::Amqp`]) or `DQ_PYTHON` is missing: never a skip.
    pub fn new(kind: BrokerKind, prefix: &str) -> Scenario {
        python();
        let redis_url = dq_test::require_redis();
        let broker_url = match kind {
            BrokerKind::Redis => redis_url.clone(),
            BrokerKind::Amqp => dq_test::require_amqp(),
        };
        let queue = dq_test::unique_name(prefix);
        let dir = std::env::temp_dir().join(format!("dq-interop-{queue}"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Scenario {
            kind,
            broker_url,
            redis_url,
            namespace: dq_test::unique_name("ns"),
            queue,
            results_namespace: None,
            heartbeat_ms: 60_000,
            maintenance_chance: 1_000,
            dir,
            results_prefix_keys: false,
            max_priority: None,
            groups: false,
            aborts_namespace: None,
            extra_env: Vec::new(),
        }
    }

    /// Sets the Redis heartbeat timeout and maintenance chance of every worker started after.
    pub fn with_heartbeat(mut self, timeout_ms: u64, maintenance_chance: u32) -> Scenario {
        self.heartbeat_ms = timeout_ms;
        self.maintenance_chance = maintenance_chance;
        self
    }

    /// Makes every worker started after store results, in a namespace of this scenario's own.
    pub fn with_results(mut self) -> Scenario {
        self.results_namespace = Some(dq_test::unique_name("results"));
        self
    }

    /// Makes every worker started after run the Abortable middleware (dq's and dramatiq-abort's),
    /// its events in the scenario's Redis under a namespace of its own.
    pub fn with_aborts(mut self) -> Scenario {
        self.aborts_namespace = Some(format!("{}:", dq_test::unique_name("aborts")));
        self
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// [`Scenario::path`] as a string, for message arguments.
    pub fn path_str(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// The environment both sides read their settings from (see the Python module's docs).
    pub fn envs(&self, who: &str) -> Vec<(String, String)> {
        let mut envs: Vec<(String, String)> = [
            ("DQ_INTEROP_BROKER", self.broker_url.clone()),
            ("DQ_INTEROP_QUEUE", self.queue.clone()),
            ("DQ_INTEROP_NAMESPACE", self.namespace.clone()),
            ("DQ_INTEROP_HEARTBEAT_MS", self.heartbeat_ms.to_string()),
            (
                "DQ_INTEROP_MAINTENANCE",
                self.maintenance_chance.to_string(),
            ),
            ("DQ_INTEROP_WHO", who.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut add = |k: &str, v: String| envs.push((k.to_owned(), v));
        if let Some(ns) = &self.results_namespace {
            add("DQ_INTEROP_RESULTS_URL", self.redis_url.clone());
            add("DQ_INTEROP_RESULTS_NS", ns.clone());
            if self.results_prefix_keys {
                add("DQ_INTEROP_RESULTS_PREFIX_KEYS", "1".to_owned());
            }
        }
        if self.groups {
            add("DQ_INTEROP_GROUPS_URL", self.redis_url.clone());
        }
        if let Some(ns) = &self.aborts_namespace {
            add("DQ_INTEROP_ABORTS_URL", self.redis_url.clone());
            add("DQ_INTEROP_ABORTS_NS", ns.clone());
        }
        if let Some(p) = self.max_priority {
            add("DQ_INTEROP_MAX_PRIORITY", p.to_string());
        }
        // Last, so they override the settings above.
        envs.extend(self.extra_env.iter().cloned());
        envs
    }

    /// A command running the virtualenv's python with the scenario's environment, in
    /// [`PYTHON_DIR`].
    pub fn python_command(&self, who: &str) -> Command {
        let mut c = Command::new(python());
        c.current_dir(PYTHON_DIR)
            .envs(self.envs(who))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1");
        c
    }

    /// Runs `dq_interop_actors.py ARGS` to completion and returns its standard output.
    ///
    /// # Panics
    /// When it fails, with its output.
    pub fn python_run(&self, args: &[&str]) -> String {
        let out = self
            .python_command("py")
            .arg(format!("{PYTHON_MODULE}.py"))
            .args(args)
            .output()
            .expect("python starts");
        assert!(
            out.status.success(),
            "python {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("python prints UTF-8")
    }

    /// Sends messages through the Python actors' `send_with_options`. `spec` is a JSON list of
    /// `{actor, args, kwargs, options, delay}`, as text (so integers beyond 64 bits survive).
    /// Returns the messages as Python enqueued them.
    pub fn python_send(&self, spec: &str) -> Vec<dq::Message> {
        let file = self.path(&format!("spec-{}.json", dq_test::unique_name("s")));
        std::fs::write(&file, spec).expect("spec written");
        let out = self.python_run(&["send", &file.to_string_lossy()]);
        out.lines()
            .map(|l| dq::Message::decode(l.as_bytes()).expect("Python's message decodes"))
            .collect()
    }

    /// Starts a Python Dramatiq worker (`python -m dramatiq`, one process of `threads`
    /// threads) on this scenario's queue; its records say `who`.
    pub fn spawn_python_worker(&self, who: &str, threads: u32) -> WorkerProcess {
        let mut c = self.python_command(who);
        c.args([
            "-m",
            "dramatiq",
            PYTHON_MODULE,
            "--processes",
            "1",
            "--threads",
        ])
        .arg(threads.to_string())
        .args(["--path", PYTHON_DIR]);
        WorkerProcess::spawn(c, self.path(&format!("{who}.log")), who)
    }

    /// Starts the dq worker binary `exe` (one process of `threads` threads) on this scenario's
    /// queue; its records say `who`.
    pub fn spawn_dq_worker(&self, exe: &str, who: &str, threads: u32) -> WorkerProcess {
        let mut c = Command::new(exe);
        // Any free port for its Prometheus endpoint: scenarios run side by side.
        c.env("dramatiq_prom_port", "0")
            .envs(self.envs(who))
            .args(["--processes", "1", "--threads"])
            .arg(threads.to_string())
            .args(["--worker-shutdown-timeout", "10000"]);
        WorkerProcess::spawn(c, self.path(&format!("{who}.log")), who)
    }

    /// Starts a worker of `lang`: see [`Scenario::spawn_python_worker`] and
    /// [`Scenario::spawn_dq_worker`].
    pub fn spawn_worker(&self, lang: Lang, exe: &str, who: &str, threads: u32) -> WorkerProcess {
        match lang {
            Lang::Python => self.spawn_python_worker(who, threads),
            Lang::Dq => self.spawn_dq_worker(exe, who, threads),
        }
    }

    /// A dq broker with the scenario's settings, for producing and inspecting queues.
    pub async fn dq_broker(&self) -> Arc<dyn Broker> {
        match self.kind {
            BrokerKind::Redis => Arc::new(
                dq::redis::RedisBroker::builder()
                    .url(self.redis_url.clone())
                    .namespace(self.namespace.clone())
                    .heartbeat_timeout(Duration::from_millis(self.heartbeat_ms))
                    .max_priority(self.max_priority)
                    .build()
                    .await
                    .expect("Redis broker"),
            ),
            BrokerKind::Amqp => Arc::new(
                dq::amqp::AmqpBroker::builder()
                    .url(self.broker_url.clone())
                    .max_priority(self.max_priority)
                    .build()
                    .await
                    .expect("RabbitMQ broker"),
            ),
        }
    }

    /// A dq app for producing: the scenario's broker, the default middleware, no actors (the
    /// test sends by name, like any client of a worker it does not link).
    pub async fn dq_app(&self) -> dq::App {
        dq::App::builder_shared(self.dq_broker().await)
            .middleware_arcs(dq::middleware::default_middleware())
            .without_linked_actors()
            .build()
            .expect("producer app")
    }

    /// The results backend of this scenario, for dq's `get_result`.
    ///
    /// # Panics
    /// When the scenario stores no results.
    pub fn dq_results_backend(&self) -> dq::results::RedisBackend {
        let ns = self
            .results_namespace
            .as_deref()
            .expect("the scenario has no results: use with_results");
        dq::results::RedisBackend::builder()
            .url(&self.redis_url)
            .namespace(ns)
            .namespace_prefix_keys(self.results_prefix_keys)
            .build()
            .expect("results backend")
    }

    /// Reads Python's result of `message` (`message.get_result(backend, block=True)`): its
    /// answer, `{"ok": value}`, `{"failure": {type, msg, str}}` or `{"error": text}`.
    pub fn python_get_result(&self, message: &dq::Message, timeout_ms: u64) -> Value {
        let body = String::from_utf8(message.encode()).expect("UTF-8");
        let out = self.python_run(&["get-result", &body, &timeout_ms.to_string()]);
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The records in file `name` of the scratch directory, one JSON object per line; none when
    /// the file does not exist yet.
    pub fn records(&self, name: &str) -> Vec<Value> {
        read_records(&self.path(name))
    }

    /// A synchronous Redis connection, for looking at the broker's keys directly.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis_url.as_str())
            .and_then(|c| c.get_connection())
            .expect("Redis connection")
    }

    /// Checks, on Redis, that nothing of the scenario's queue is left: no message waiting or
    /// delayed (list or body), and no id in any worker's ack set. A worker that acked on the
    /// wrong queue or with the wrong `redis_message_id` leaves one of these behind. A no-op on
    /// RabbitMQ.
    ///
    /// # Panics
    /// When something is left, naming the key.
    pub fn assert_redis_drained(&self) {
        if self.kind != BrokerKind::Redis {
            return;
        }
        let mut con = self.redis();
        let mut left = Vec::new();
        // A worker acks after the actor's record is written: give the last ack a moment.
        let drained = dq_test::wait_until(Duration::from_secs(10), || {
            left = self.redis_leftovers(&mut con);
            left.is_empty()
        });
        assert!(drained, "left behind on Redis: {left:?}");
    }

    fn redis_leftovers(&self, con: &mut redis::Connection) -> Vec<String> {
        let (ns, q) = (&self.namespace, &self.queue);
        let mut left: Vec<String> = [
            format!("{ns}:{q}"),
            format!("{ns}:{q}.msgs"),
            format!("{ns}:{q}.DQ"),
            format!("{ns}:{q}.DQ.msgs"),
        ]
        .into_iter()
        .filter(|key| redis::cmd("EXISTS").arg(key).query(con).unwrap_or(true))
        .collect();
        let sets: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{ns}:__acks__.*"))
            .query(con)
            .expect("KEYS");
        left.extend(sets);
        left
    }

    fn cleanup(&self) {
        if let Ok(mut con) =
            redis::Client::open(self.redis_url.as_str()).and_then(|c| c.get_connection())
        {
            let mut patterns = vec![format!("{}:*", self.namespace)];
            if let Some(ns) = &self.aborts_namespace {
                patterns.push(format!("{ns}*"));
            }
            if let Some(ns) = &self.results_namespace {
                // Only with `use_namespace_prefix_keys`; the default keys are MD5 digests
                // without a prefix, which their TTL (10 minutes) removes.
                patterns.push(format!("{ns}:*"));
            }
            for pattern in patterns {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query(&mut con)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut con);
                }
            }
        }
        if self.kind == BrokerKind::Amqp {
            let q = &self.queue;
            let _ = self
                .python_command("py")
                .arg(format!("{PYTHON_MODULE}.py"))
                .args(["delete-queues", q, &format!("{q}.DQ"), &format!("{q}.XQ")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// The JSON lines of `path`; none when it does not exist yet. A last line without its newline
/// (a writer mid-write) is left out.
pub fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l:?}: {e}")))
        .collect()
}

/// A worker process (and its children) in a process group of its own, so a kill reaches the
/// whole worker; killed when dropped. Its output goes to a log file in the scratch directory.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    log: PathBuf,
    who: String,
}

impl WorkerProcess {
    fn spawn(mut command: Command, log: PathBuf, who: &str) -> WorkerProcess {
        use std::os::unix::process::CommandExt;
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start worker {who} ({command:?}): {e}"));
        WorkerProcess {
            child,
            log,
            who: who.to_owned(),
        }
    }

    /// The process id of the group leader (the main process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the worker has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the worker process says it is ready for action (both Dramatiq and dq log
    /// "Worker process is ready for action.").
    ///
    /// # Panics
    /// When it exits first or does not get ready within `timeout`, with its log.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let ready = dq_test::wait_until(timeout, || {
            self.log().contains("ready for action")
                || self.child.try_wait().ok().flatten().is_some()
        });
        let exited = self.child.try_wait().ok().flatten();
        assert!(
            ready && exited.is_none(),
            "worker {} not ready within {timeout:?} (exit: {exited:?}); log:\n{}",
            self.who,
            self.log()
        );
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pgid = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(pgid, signal);
    }

    /// SIGKILLs the whole process group and reaps the main process: a crash, nothing is acked,
    /// nothing is requeued by the worker itself.
    pub fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Stops the worker gracefully (SIGTERM to the main process, which passes it on to its
    /// worker processes), and kills it if it has not exited within `timeout`. Returns whether
    /// it exited on its own.
    ///
    /// Only the main process is signalled: a Dramatiq worker process that gets the group's TERM
    /// and then its master's forwarded one takes the second as "kill now", and exits without
    /// requeueing what it holds.
    pub fn stop(&mut self, timeout: Duration) -> bool {
        let leader = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(leader, nix::sys::signal::Signal::SIGTERM);
        let exited =
            dq_test::wait_until(timeout, || self.child.try_wait().ok().flatten().is_some());
        if !exited {
            self.kill();
        }
        exited
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
        // Children of a group leader that exited may still be around.
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }
}

impl Scenario {
    /// Waits until the records in file `name` satisfy `done`, and returns them.
    ///
    /// # Panics
    /// After `timeout`, with the records and the logs of `workers`.
    pub fn wait_records(
        &self,
        name: &str,
        timeout: Duration,
        workers: &[&WorkerProcess],
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let mut last = Vec::new();
        let ok = dq_test::wait_until(timeout, || {
            last = self.records(name);
            done(&last)
        });
        if !ok {
            let logs: Vec<String> = workers
                .iter()
                .map(|w| format!("--- log of {} ---\n{}", w.who, w.log()))
                .collect();
            panic!(
                "records of {name} incomplete after {timeout:?}: {} records:\n{}\n{}",
                last.len(),
                last.iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                logs.join("\n")
            );
        }
        last
    }
}

/// A runtime for the dq calls of a synchronous test (producing, reading results, looking at
/// queues); the test itself blocks on files and processes.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
