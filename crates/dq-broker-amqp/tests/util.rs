//! Shared test support: the service check, log capture, queues and vhosts that clean up after
//! themselves, raw lapin channels for looking at what the broker did, and a TCP proxy that can
//! take RabbitMQ away.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use dq_broker_amqp::{AmqpBroker, AmqpBrokerBuilder};
use dq_core::{Consumer, Delivery, Message};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks RabbitMQ answers and returns its URL. Every log line of the test binary (ours at
/// TRACE, lapin's at DEBUG, which is as much as a user can ask of it without seeing its
/// handshake frames) is kept, so tests can look for secrets in them.
pub(crate) fn init() -> String {
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,dq_broker_amqp=trace,lapin=debug",
            ))
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
    dq_test::require_amqp()
}

/// Everything logged so far by any test of this binary.
pub(crate) fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

pub(crate) fn builder(url: &str) -> AmqpBrokerBuilder {
    AmqpBroker::builder().url(url)
}

pub(crate) async fn broker(url: &str) -> AmqpBroker {
    builder(url).build().await.expect("connect to rabbitmq")
}

/// A connection and channel of our own, to look at queues the way Python (pika) would.
pub(crate) async fn raw(url: &str) -> (Connection, lapin::Channel) {
    let props = ConnectionProperties::default();
    let conn = Connection::connect(url, props).await.expect("raw connect");
    let channel = conn.create_channel().await.expect("raw channel");
    (conn, channel)
}

/// The options Python Dramatiq declares every queue with.
pub(crate) fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// The arguments Python Dramatiq 2.2.1 (through pika) declares `q` and `q.DQ` with, written out
/// here independently of the crate.
pub(crate) fn python_queue_args(canonical: &str, max_priority: Option<i32>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    t.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(format!("{canonical}.XQ"))),
    );
    if let Some(p) = max_priority {
        t.insert("x-max-priority".into(), AMQPValue::LongInt(p));
    }
    t
}

/// The arguments Python Dramatiq declares `q.XQ` with.
pub(crate) fn python_xq_args(ttl_ms: i32) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl_ms));
    t
}

/// A canonical queue name of this test alone; its `q`, `q.DQ` and `q.XQ` are deleted on drop,
/// even when the test fails.
pub(crate) struct Queue {
    pub(crate) name: String,
    url: String,
}

impl Queue {
    pub(crate) fn new(prefix: &str, url: &str) -> Queue {
        Queue {
            name: dq_test::unique_name(prefix),
            url: url.to_owned(),
        }
    }

    pub(crate) fn dq(&self) -> String {
        format!("{}.DQ", self.name)
    }

    pub(crate) fn xq(&self) -> String {
        format!("{}.XQ", self.name)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let names = [self.name.clone(), self.dq(), self.xq()];
        let url = self.url.clone();
        // A runtime of its own on a thread of its own: drop cannot await, and the test's
        // runtime may be the one blocked here.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                let (conn, _) = raw(&url).await;
                for name in &names {
                    let ch = conn.create_channel().await.expect("cleanup channel");
                    let _ = ch
                        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// A message for `actor` on `queue` carrying `i`.
pub(crate) fn msg(queue: &str, i: u64) -> Message {
    Message::new(queue, "work", &(i,), &()).expect("message")
}

/// Fetches until `n` deliveries arrived; panics after `within`.
pub(crate) async fn fetch_n(
    consumer: &mut Box<dyn Consumer>,
    n: usize,
    within: Duration,
) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} deliveries within {within:?}",
            out.len()
        );
        out.extend(
            consumer
                .fetch(Duration::from_millis(200))
                .await
                .expect("fetch"),
        );
    }
    out
}

/// The `arg` of a message built by [`msg`].
pub(crate) fn arg_of(body: &[u8]) -> u64 {
    let m = Message::decode(body).expect("decodes");
    m.args_value().expect("args")[0].as_u64().expect("u64 arg")
}

/// Runs `rabbitmqctl` (as root, through the /usr/sbin wrapper that switches to the rabbitmq
/// user) and returns its output.
///
/// # Panics
///
/// When it cannot run or fails, with what to do about it.
pub(crate) fn rabbitmqctl(args: &[&str]) -> String {
    let program = if std::path::Path::new("/usr/sbin/rabbitmqctl").exists() {
        "/usr/sbin/rabbitmqctl"
    } else {
        "rabbitmqctl"
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
            "this test manages vhosts and connections with rabbitmqctl, which did not run ({e}); \
             run the tests as root on the machine where RabbitMQ runs (`cargo xtask services`)"
        )
        });
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed ({}): {}{} -- this test needs rabbitmqctl as root on the \
         RabbitMQ machine",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vhost of this test alone (the way the user guide gives each app its own), where `guest`
/// and, if asked, a user of its own may do everything. Deleted with its queues, and the user, on
/// drop.
pub(crate) struct Vhost {
    pub(crate) name: String,
    pub(crate) user: Option<(String, String)>,
    base: AMQPUri,
}

impl Vhost {
    pub(crate) fn new(base_url: &str, with_user: bool) -> Vhost {
        let name = dq_test::unique_name("dq-vhost");
        rabbitmqctl(&["add_vhost", &name]);
        let base: AMQPUri = base_url.parse().expect("base url");
        let guest = base.authority.userinfo.username.clone();
        let mut vhost = Vhost {
            name,
            user: None,
            base,
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &guest,
            ".*",
            ".*",
            ".*",
        ]);
        if with_user {
            let user = dq_test::unique_name("dq-user");
            let password = format!("pw-{}", dq_test::unique_name("secret"));
            rabbitmqctl(&["add_user", &user, &password]);
            rabbitmqctl(&[
                "set_permissions",
                "-p",
                &vhost.name,
                &user,
                ".*",
                ".*",
                ".*",
            ]);
            vhost.user = Some((user, password));
        }
        vhost
    }

    /// The URL of this vhost, with its own user if it has one, else the base URL's.
    pub(crate) fn url(&self) -> String {
        let (user, password) = match &self.user {
            Some((u, p)) => (u.clone(), p.clone()),
            None => (
                self.base.authority.userinfo.username.clone(),
                self.base.authority.userinfo.password.clone(),
            ),
        };
        format!(
            "amqp://{user}:{password}@{}:{}/{}",
            self.base.authority.host, self.base.authority.port, self.name
        )
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
        if let Some((user, _)) = &self.user {
            let _ = Command::new("/usr/sbin/rabbitmqctl")
                .args(["delete_user", user])
                .output();
        }
    }
}

/// A TCP proxy in front of RabbitMQ that a test can take down (closing every connection through
/// it and refusing new ones) and bring back on the same port.
pub(crate) struct Proxy {
    addr: SocketAddr,
    upstream: String,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    base: AMQPUri,
}

impl Proxy {
    pub(crate) async fn start(base_url: &str) -> Proxy {
        let base: AMQPUri = base_url.parse().expect("base url");
        let upstream = format!("{}:{}", base.authority.host, base.authority.port);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let mut proxy = Proxy {
            addr: listener.local_addr().expect("proxy addr"),
            upstream,
            accept: None,
            conns: Arc::new(Mutex::new(Vec::new())),
            base,
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let conns = self.conns.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns.lock().unwrap().push(task);
            }
        }));
    }

    /// The base URL, pointed at the proxy.
    pub(crate) fn url(&self) -> String {
        let u = &self.base.authority.userinfo;
        let vhost = if self.base.vhost == "/" {
            "%2f".to_owned()
        } else {
            self.base.vhost.clone()
        };
        format!("amqp://{}:{}@{}/{vhost}", u.username, u.password, self.addr)
    }

    /// Closes every connection through the proxy and stops accepting; returns once the
    /// sockets are closed.
    pub(crate) async fn down(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
            let _ = a.await;
        }
        let conns: Vec<JoinHandle<()>> = self.conns.lock().unwrap().drain(..).collect();
        for c in conns {
            c.abort();
            let _ = c.await;
        }
    }

    /// Accepts again, on the same port.
    pub(crate) async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind proxy");
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}
