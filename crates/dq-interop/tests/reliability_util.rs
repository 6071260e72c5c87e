//! What the reliability tests share: the worker process they kill, the Redis set its actor
//! records into, and private Redis and RabbitMQ servers they may stop and start (the shared ones
//! on the default ports are never touched).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use dq::amqp::AmqpBroker;
use dq::broker::{Broker, QueueStats};
use dq::Message;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How many messages the kill and restart tests send.
pub(crate) const MESSAGES: u64 = 10_000;

/// A directory of this test alone under the system's temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(dq_test::unique_name(prefix));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a spare port")
        .port()
}

/// The Redis set the `record` actor adds each message's number to, on the shared Redis (which no
/// test restarts). Deleted on drop.
pub(crate) struct Recorder {
    pub(crate) key: String,
    conn: redis::Connection,
}

impl Recorder {
    pub(crate) fn new() -> Recorder {
        let url = dq_test::require_redis();
        let conn = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("connect to the shared redis");
        Recorder {
            key: dq_test::unique_name("dq-reliability-record"),
            conn,
        }
    }

    /// How many distinct messages have run.
    pub(crate) fn count(&mut self) -> u64 {
        redis::cmd("SCARD")
            .arg(&self.key)
            .query(&mut self.conn)
            .expect("SCARD")
    }

    /// How many runs there were, repeats included.
    pub(crate) fn runs(&mut self) -> u64 {
        redis::cmd("GET")
            .arg(format!("{}:runs", self.key))
            .query::<Option<u64>>(&mut self.conn)
            .expect("GET runs")
            .unwrap_or(0)
    }

    /// The numbers in `0..n` that never ran.
    pub(crate) fn missing(&mut self, n: u64) -> Vec<u64> {
        let members: Vec<u64> = redis::cmd("SMEMBERS")
            .arg(&self.key)
            .query(&mut self.conn)
            .expect("SMEMBERS");
        let seen: std::collections::HashSet<u64> = members.into_iter().collect();
        (0..n).filter(|i| !seen.contains(i)).collect()
    }

    /// Waits until `at_least` distinct messages have run; returns the count then, or panics
    /// with `what` and the worker's log when `timeout` passes first.
    pub(crate) async fn wait_for(
        &mut self,
        at_least: u64,
        timeout: Duration,
        what: &str,
        worker: &mut Worker,
    ) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.count();
            if n >= at_least {
                return n;
            }
            if Instant::now() > deadline {
                let missing = self.missing(MESSAGES);
                panic!(
                    "{what}: only {n} of {at_least} messages ran within {timeout:?}; \
                     {} missing, the first: {:?}; worker {:?}; its log ends:\n{}",
                    missing.len(),
                    &missing[..missing.len().min(20)],
                    worker.status(),
                    worker.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = redis::cmd("DEL")
            .arg(&self.key)
            .arg(format!("{}:runs", self.key))
            .query::<()>(&mut self.conn);
    }
}

/// Deletes every key of a Redis namespace on drop.
pub(crate) struct RedisNamespace {
    pub(crate) url: String,
    pub(crate) name: String,
}

impl RedisNamespace {
    pub(crate) fn new(url: &str, prefix: &str) -> RedisNamespace {
        RedisNamespace {
            url: url.to_owned(),
            name: dq_test::unique_name(prefix),
        }
    }
}

impl Drop for RedisNamespace {
    fn drop(&mut self) {
        let Ok(mut conn) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
        else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.name))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _ = redis::cmd("DEL").arg(chunk).query::<()>(&mut conn);
        }
    }
}

/// Sends `n` `record` messages for `key` on `queue`, numbered `0..n`, in batches. Every tenth
/// goes through the delay queue, due within 3 s, so that a kill or an outage also catches
/// delayed messages a worker holds in memory until they are due.
pub(crate) async fn send_records(broker: &dyn Broker, queue: &str, key: &str, n: u64) {
    let delay_queue = dq::broker::delay_queue_name(queue);
    let now = dq::broker::now_ms();
    let mut i = 0;
    while i < n {
        let end = (i + 1000).min(n);
        let mut batch: Vec<Message> = (i..end)
            .map(|k| {
                if k % 10 == 0 {
                    let mut m =
                        Message::new(&delay_queue, "record", &(key, k), &()).expect("message");
                    m.options.set_eta(now + (k % 30) as i64 * 100);
                    m
                } else {
                    Message::new(queue, "record", &(key, k), &()).expect("message")
                }
            })
            .collect();
        broker.enqueue_many(&mut batch).await.expect("enqueue");
        i = end;
    }
}

/// Waits until `queue` is empty and no message has run for a second, and returns the runs
/// then: the repeats a kill or an outage causes run too, and the test can check that nothing is
/// left behind once the worker stops. Panics with the worker's log after `timeout`.
pub(crate) async fn wait_drained(
    broker: &dyn Broker,
    queue: &str,
    rec: &mut Recorder,
    worker: &mut Worker,
    timeout: Duration,
) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = (u64::MAX, Instant::now());
    loop {
        let stats = broker.stats(queue).await.expect("stats");
        let runs = rec.runs();
        if runs != last.0 {
            last = (runs, Instant::now());
        }
        if stats == QueueStats::default() && last.1.elapsed() >= Duration::from_secs(1) {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} not drained within {timeout:?}: {stats:?}, {runs} runs; worker {:?}; its \
             log ends:\n{}",
            worker.status(),
            worker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pids of `pid`'s children, from `/proc`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so parse from the
        // last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// The resident set size of `pid` in KiB (`VmRSS` of `/proc/PID/status`), if it is alive.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A `dq-reliability-worker` command: its main process and the one worker process it
/// supervises, in a process group of their own so a test can SIGKILL both at once, like a
/// machine losing power. Killed on drop.
pub(crate) struct Worker {
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Worker {
    /// Starts the worker command, one worker process, with `args` and `env`, logging to `log`.
    pub(crate) fn start(args: &[&str], env: &HashMap<&str, String>, log: PathBuf) -> Worker {
        Worker::start_processes(1, args, env, log)
    }

    /// Starts the worker command with `processes` worker processes.
    pub(crate) fn start_processes(
        processes: u32,
        args: &[&str],
        env: &HashMap<&str, String>,
        log: PathBuf,
    ) -> Worker {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the worker log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dq-reliability-worker"));
        cmd.args(["--processes", &processes.to_string()])
            .args(["--worker-shutdown-timeout", "10000"])
            .args(args)
            // Any free port for its Prometheus endpoint: tests run side by side.
            .env("dramatiq_prom_port", "0")
            .envs(env)
            // Not to be picked up instead of what the test says.
            .env_remove("DQ_REDIS_URL")
            .env_remove("DQ_AMQP_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log"))
            .stderr(out)
            .process_group(0);
        let child = cmd.spawn().expect("start dq-reliability-worker");
        Worker {
            child,
            log,
            status: None,
        }
    }

    /// The main process's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The worker process's pid, once the main process has started it.
    pub(crate) fn worker_pid(&self, timeout: Duration) -> u32 {
        let mut found = None;
        let ok = dq_test::wait_until(timeout, || {
            found = children_of(self.pid()).first().copied();
            found.is_some()
        });
        assert!(
            ok,
            "no worker process after {timeout:?}:\n{}",
            self.log_tail()
        );
        found.expect("worker pid")
    }

    /// SIGKILLs the main process and its worker process together and reaps the main one.
    pub(crate) fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        self.status = self.child.wait().ok();
    }

    /// Asks for a graceful stop (SIGTERM) and returns the exit status, killing the group when it
    /// takes longer than `timeout`.
    pub(crate) fn stop(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = kill(Pid::from_raw(self.pid() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
                // Anything still in the group (it should not be) goes too.
                let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Stops it gracefully within `timeout` and asserts it exited with code 0.
    pub(crate) fn stop_cleanly(&mut self, timeout: Duration) {
        let status = self.stop(timeout);
        assert!(
            status.is_some_and(|s| s.success()),
            "the worker did not stop cleanly: {status:?}\n{}",
            self.log_tail()
        );
    }

    /// The exit status, or `None` while it runs.
    pub(crate) fn status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Checks what the worker logged across `outages` broker outages it recovered from: no
    /// ERROR line (nothing needed a person), and per worker process one WARNING when each
    /// outage began and one INFO when it was over (outages close together may be one for the
    /// worker). Lines of the broker client are DEBUG, so not in the log at all.
    pub(crate) fn assert_outages_logged_once(&self, outages: usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let pid = |line: &str| {
            line.split("[PID ")
                .nth(1)
                .and_then(|r| r.split(']').next())
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("] [ERROR] ")).collect();
        assert!(
            errors.is_empty(),
            "ERROR lines for an outage dq recovers from:\n{}",
            errors.join("\n")
        );
        let mut lost: BTreeMap<String, usize> = BTreeMap::new();
        let mut back: BTreeMap<String, usize> = BTreeMap::new();
        for line in text.lines() {
            if line.contains("] [WARNING] lost the broker while ") {
                *lost.entry(pid(line)).or_default() += 1;
            } else if line.contains("] [INFO] the broker is back after ") {
                *back.entry(pid(line)).or_default() += 1;
            }
        }
        let others: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("] [WARNING] ") && !l.contains("lost the broker while "))
            .collect();
        let said: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("lost the broker while ") || l.contains("the broker is back after ")
            })
            .collect();
        let summary = format!(
            "lost per process {lost:?}, back per process {back:?}:\n{}\nother warnings:\n{}",
            said.join("\n"),
            others.join("\n")
        );
        assert!(
            !lost.is_empty(),
            "no outage logged: {summary}\n{}",
            self.log_tail()
        );
        // Outages closer together than the worker's quiet period are one for it.
        assert!(
            lost.values().all(|&n| (1..=outages).contains(&n)),
            "{summary}"
        );
        assert_eq!(lost, back, "{summary}");
        assert!(others.is_empty(), "{summary}");
        assert!(
            !text.contains("client_level="),
            "broker client lines at INFO:\n{}",
            self.log_tail()
        );
    }

    /// The worker's whole log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the worker's log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill();
        }
    }
}

/// A redis-server of this test alone on a spare port, in a directory of its own, optionally
/// persisting every write (append-only file, fsync always), so it can be stopped and started
/// again without losing what it acknowledged.
pub(crate) struct PrivateRedis {
    port: u16,
    dir: TempDir,
    persist: bool,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) fn start(persist: bool) -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_port(),
            dir: TempDir::new("dq-reliability-redis"),
            persist,
            child: None,
        };
        redis.restart();
        redis
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and directory, and waits until it has loaded
    /// its data and answers.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is running already");
        let persistence: &[&str] = if self.persist {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(persistence)
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server is needed for the reliability tests: {e}"));
        self.child = Some(child);
        let url = self.url();
        let up = dq_test::wait_until(Duration::from_secs(30), || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        assert!(up, "the private redis-server on {url} did not start");
    }

    /// Kills the server (SIGKILL), as a crash would. With `persist`, every write it answered is
    /// in the append-only file already (fsync always), so it comes back with all of them.
    pub(crate) fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server the way an operator would (SHUTDOWN: it flushes the append-only file
    /// and exits) and waits for the process to end.
    pub(crate) fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(mut c) = redis::Client::open(self.url()).and_then(|c| c.get_connection()) {
            // The server closes the connection instead of answering.
            let _ = redis::cmd("SHUTDOWN").query::<()>(&mut c);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the private redis-server did not shut down within 20 s");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A RabbitMQ node of this test alone (`dqtest-PID@localhost`, spare AMQP and distribution
/// ports, its database, logs and Erlang cookie in a directory of its own), so a test can stop
/// and start it while other tests use the shared node on 5672.
pub(crate) struct PrivateRabbit {
    port: u16,
    /// The TLS listener's port and the CA that signed its certificate, when started with TLS.
    tls: Option<(u16, dq_test::TestCa)>,
    dist_port: u16,
    node: String,
    dir: TempDir,
    child: Option<Child>,
}

/// The node's start script: env `DQ_RABBITMQ_SERVER`, else the Debian package's script without
/// the distribution's wrapper (which would `su` to the rabbitmq user, who cannot write the
/// test's directory), else `rabbitmq-server` on the PATH (generic-unix and Homebrew installs).
fn rabbitmq_server() -> PathBuf {
    if let Some(p) = std::env::var_os("DQ_RABBITMQ_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let debian = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if debian.is_file() {
        return debian.to_owned();
    }
    PathBuf::from("rabbitmq-server")
}

/// `rabbitmqctl` next to the node's start script (same reasons: not the wrapper that changes user).
fn rabbitmqctl() -> PathBuf {
    let server = rabbitmq_server();
    match server.parent() {
        Some(bin) if bin.join("rabbitmqctl").is_file() => bin.join("rabbitmqctl"),
        _ => PathBuf::from("rabbitmqctl"),
    }
}

impl PrivateRabbit {
    pub(crate) async fn start() -> PrivateRabbit {
        PrivateRabbit::start_with(false).await
    }

    /// A node with a TLS listener too (see [`PrivateRabbit::tls_url`]), its certificate signed
    /// by a CA the test made.
    pub(crate) async fn start_with_tls() -> PrivateRabbit {
        PrivateRabbit::start_with(true).await
    }

    async fn start_with(tls: bool) -> PrivateRabbit {
        let dir = TempDir::new("dq-reliability-rabbit");
        let cookie = dir.path().join(".erlang.cookie");
        std::fs::write(&cookie, dq_test::unique_name("cookie")).expect("write cookie");
        std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))
            .expect("chmod cookie");
        let tls = tls.then(|| {
            (
                free_port(),
                dq_test::TestCa::create(&dir.path().join("tls")),
            )
        });
        let mut rabbit = PrivateRabbit {
            port: free_port(),
            tls,
            dist_port: free_port(),
            node: format!("dqtest-{}@localhost", std::process::id()),
            dir,
            child: None,
        };
        rabbit.restart().await;
        rabbit
    }

    pub(crate) fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The `amqps://` URL of the TLS listener, and the CA to trust for it.
    pub(crate) fn tls_url(&self) -> (String, &dq_test::TestCa) {
        let (port, ca) = self.tls.as_ref().expect("started with start_with_tls");
        (format!("amqps://guest:guest@127.0.0.1:{port}/%2f"), ca)
    }

    /// Runs `rabbitmqctl` against this node (its cookie is in the node's HOME), and returns
    /// its output; panics when it fails.
    pub(crate) fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(rabbitmqctl())
            .env("HOME", self.dir.path())
            .args(["-n", &self.node])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds vhost `name` with all permissions for `guest`, and returns its URL.
    pub(crate) fn vhost(&self, name: &str) -> String {
        self.ctl(&["add_vhost", name]);
        self.ctl(&["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]);
        format!("amqp://guest:guest@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the RabbitMQ application, the Erlang VM staying up (`rabbitmqctl stop_app`): every
    /// connection is closed, as in a restart of the service.
    pub(crate) fn stop_app(&self) {
        self.ctl(&["stop_app"]);
    }

    /// Starts the application again (`rabbitmqctl start_app`) and waits until it takes AMQP
    /// connections.
    pub(crate) async fn start_app(&mut self) {
        self.ctl(&["start_app"]);
        self.wait_ready().await;
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("node.pid")
    }

    /// Starts the node (again) on the same ports and database, and waits until it takes AMQP
    /// connections.
    pub(crate) async fn restart(&mut self) {
        assert!(self.child.is_none(), "the rabbitmq node is running already");
        let dir = self.dir.path();
        let mut conf = format!(
            "listeners.tcp.default = 127.0.0.1:{}\nloopback_users = none\n",
            self.port
        );
        if let Some((port, ca)) = &self.tls {
            conf.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                ca.ca_cert().display(),
                ca.server_cert().display(),
                ca.server_key().display()
            ));
        }
        std::fs::write(dir.join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        let log = File::options()
            .create(true)
            .append(true)
            .open(dir.join("node.out"))
            .expect("open node log");
        let server = rabbitmq_server();
        let child = Command::new(&server)
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", self.pid_file())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} is needed for the restart test (or set DQ_RABBITMQ_SERVER): {e}",
                    server.display()
                )
            });
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let attempt = AmqpBroker::builder()
                .url(self.url())
                .connect_timeout(Duration::from_secs(2))
                .build()
                .await;
            if let Ok(b) = attempt {
                if b.ping().await.is_ok() {
                    return;
                }
            }
            if let Some(Ok(Some(s))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "the private rabbitmq node exited with {s}:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the private rabbitmq node did not take connections within 90 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the node gracefully (SIGTERM to the Erlang VM, as systemd would) and waits for it
    /// to end.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let beam = std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        match beam {
            Some(pid) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            None => {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                // The VM writes a fresh pid file at its next start.
                let _ = std::fs::remove_file(self.pid_file());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.wait();
        panic!("the private rabbitmq node did not stop within 60 s");
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("node.out")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The VM is in the script's process group; a test that failed does not wait for a
            // graceful stop.
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// A canonical queue of this test alone on the shared RabbitMQ; its `q`, `q.DQ` and `q.XQ` are
/// deleted on drop, even when the test fails.
pub(crate) struct AmqpQueue {
    pub(crate) name: String,
    url: String,
}

impl AmqpQueue {
    pub(crate) fn new(url: &str, prefix: &str) -> AmqpQueue {
        AmqpQueue {
            name: dq_test::unique_name(prefix),
            url: url.to_owned(),
        }
    }
}

impl Drop for AmqpQueue {
    fn drop(&mut self) {
        let names = [
            self.name.clone(),
            dq::broker::delay_queue_name(&self.name),
            dq::broker::dead_letter_queue_name(&self.name),
        ];
        let url = self.url.clone();
        // A runtime of its own on a thread of its own: drop cannot await, and the test's runtime
        // may be the one blocked here.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let props = lapin::ConnectionProperties::default();
                let Ok(conn) = lapin::Connection::connect(&url, props).await else {
                    return;
                };
                for name in &names {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(
                                name.as_str().into(),
                                lapin::options::QueueDeleteOptions::default(),
                            )
                            .await;
                    }
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// What [`kill_twice_and_finish`] saw: the records done at each kill, and the runs in all.
pub(crate) struct KillRun {
    pub(crate) at_first_kill: u64,
    pub(crate) at_second_kill: u64,
    pub(crate) runs: u64,
}

/// The SIGKILL scenario both brokers run over `total` recorded messages on `queue`: a worker
/// command started with `args` / `env`; its worker process SIGKILLed alone at a fifth (its main
/// process must start another), then the whole command SIGKILLed at a half and started again;
/// then every message must be recorded, the queue drained (repeats included), the worker
/// stopped cleanly and nothing left on the queue.
pub(crate) async fn kill_twice_and_finish(
    broker: &dyn Broker,
    queue: &str,
    rec: &mut Recorder,
    total: u64,
    args: &[&str],
    env: &HashMap<&str, String>,
    log: PathBuf,
) -> KillRun {
    let mut worker = Worker::start(args, env, log.clone());
    rec.wait_for(
        total / 5,
        Duration::from_secs(60),
        "before the first kill",
        &mut worker,
    )
    .await;
    let first = worker.worker_pid(Duration::from_secs(5));
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("SIGKILL the worker process");
    let at_first_kill = rec.count();

    rec.wait_for(
        total / 2,
        Duration::from_secs(60),
        "after the first kill",
        &mut worker,
    )
    .await;
    assert_ne!(
        worker.worker_pid(Duration::from_secs(5)),
        first,
        "the worker process was not restarted"
    );
    worker.kill();
    let at_second_kill = rec.count();
    assert!(
        at_second_kill < total,
        "all messages ran before the second kill: the test killed nothing mid-run"
    );

    let mut worker = Worker::start(args, env, log);
    rec.wait_for(
        total,
        Duration::from_secs(90),
        "after the restart",
        &mut worker,
    )
    .await;
    let runs = wait_drained(broker, queue, rec, &mut worker, Duration::from_secs(60)).await;
    worker.stop_cleanly(Duration::from_secs(30));
    let stats = broker.stats(queue).await.expect("stats");
    assert_eq!(stats, QueueStats::default(), "messages left behind");
    KillRun {
        at_first_kill,
        at_second_kill,
        runs,
    }
}
