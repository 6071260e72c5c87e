//! A Redis server of one test's own, for what the shared one must not be put through: a
//! password, ACL users, a restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` on a spare port of 127.0.0.1, with no persistence, killed (and its
/// directory removed) on drop.
///
/// ```no_run
/// let redis = dq_test::PrivateRedis::start(&["--requirepass", "hunter2"]);
/// let url = redis.url_with("", "hunter2"); // redis://:hunter2@127.0.0.1:<port>
/// assert_eq!(redis.cli("hunter2", &["PING"]).trim(), "PONG");
/// # let _ = url;
/// ```
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl PrivateRedis {
    /// Starts `redis-server` with `args` added to its command line, and waits until it listens.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed or does not come up within 10 seconds.
    pub fn start(args: &[&str]) -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a spare port")
            .port();
        let dir = std::env::temp_dir().join(crate::unique_name("dq-private-redis"));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): is it installed?"));
        let redis = PrivateRedis { port, dir, child };
        let up = crate::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "redis-server did not listen on port {port}");
        redis
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://user:password@127.0.0.1:port`, with `user` and `password` percent-encoded.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!(
            "redis://{}:{}@127.0.0.1:{}",
            percent_encode(user),
            percent_encode(password),
            self.port
        )
    }

    /// Runs one command with `redis-cli` as the default user (authenticated with `password`,
    /// if not empty) and returns its output.
    ///
    /// # Panics
    ///
    /// When `redis-cli` cannot run or fails.
    pub fn cli(&self, password: &str, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string(), "--no-auth-warning"]);
        if !password.is_empty() {
            cmd.args(["-a", password]);
        }
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e})"));
        assert!(out.status.success(), "redis-cli {args:?} failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `s` with every byte outside RFC 3986's unreserved set percent-encoded, as a URL's user-info
/// needs.
///
/// ```
/// assert_eq!(dq_test::percent_encode("p@ss:w0rd/"), "p%40ss%3Aw0rd%2F");
/// ```
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
