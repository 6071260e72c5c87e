//! Locked-down brokers: a Redis with a password or an ACL user held to its namespace, a RabbitMQ
//! user with permissions on its own vhost only. dq works there end to end, a refused login at
//! start exits with code 3 and one line that names no secret, and a permission taken away while
//! running is logged with what was refused while the messages stay in the broker.

use super::*;

use dq_broker_amqp::AmqpBroker;
use dq_broker_redis::{RedisBroker, MAINTENANCE_SCALE};
use dq_test::{percent_encode, PrivateRedis};

/// A password with characters a URL must escape: `p%40ss%3Aw0rd%2F` in one.
const PASSWORD: &str = "p@ss:w0rd/";
/// A wrong one, escaped too, which must not show either.
const WRONG: &str = "wr@ng:pw/";

/// Every form of the secrets a text must not hold: raw and percent-encoded.
fn assert_no_secret(text: &str) {
    for secret in [PASSWORD, WRONG] {
        for form in [secret.to_owned(), percent_encode(secret)] {
            assert!(!text.contains(&form), "{form:?} leaked in:\n{text}");
        }
        // As bytes, the way lapin's DEBUG records dump the login frame.
        let bytes: Vec<String> = secret.bytes().map(|b| b.to_string()).collect();
        let bytes = bytes.join(", ");
        assert!(
            !text.contains(&bytes),
            "{secret:?} leaked as bytes in:\n{text}"
        );
        // Lowercase escapes are as good a URL.
        let lower = percent_encode(secret).to_lowercase();
        assert!(
            !text.to_lowercase().contains(&lower),
            "{lower:?} leaked in:\n{text}"
        );
    }
}

/// Runs `program` with `args` to its end: its exit code and everything it printed.
async fn run(program: &Path, args: &[String]) -> (i32, String) {
    let mut p = Running::start(program, args, &[]);
    let code = p.wait_exit().await;
    (code, p.output())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// The lines of a worker command's output that say why it could not start.
fn refusal_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.contains("Cannot reach the broker"))
        .collect()
}

/// The worker command and both admin commands refuse `url` at start with code 3, each with
/// one line naming `why`, and no secret anywhere.
async fn assert_refused_at_start(url: &str, namespace: &str, why: &str) {
    let (code, out) = run(
        &example("test_worker"),
        &strings(&["-b", url, "--namespace", namespace, "-p", "1"]),
    )
    .await;
    assert_eq!(code, 3, "{out}");
    let lines = refusal_lines(&out);
    assert!(!lines.is_empty(), "{out}");
    assert!(lines.iter().all(|l| l.contains(why)), "{out}");
    assert!(!out.contains("ready for action"), "{out}");
    assert_no_secret(&out);

    for admin in [
        vec!["queues"],
        vec![
            "send",
            "touch",
            "--queue",
            "default",
            "--args",
            "[\"/\", \"x\"]",
        ],
    ] {
        let mut args = strings(&["-b", url, "--namespace", namespace]);
        args.extend(strings(&admin));
        let (code, out) = run(&dq_bin(), &args).await;
        assert_eq!(code, 3, "dq {admin:?}: {out}");
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "dq {admin:?}: {out}");
        assert!(errors[0].contains(why), "dq {admin:?}: {out}");
        assert_no_secret(&out);
    }
}

/// A scratch directory for the test worker's marks, removed on drop.
struct Marks(PathBuf);

impl Marks {
    fn new() -> Marks {
        let dir = std::env::temp_dir().join(dq_test::unique_name("dq-cli-lockdown"));
        std::fs::create_dir_all(&dir).unwrap();
        Marks(dir)
    }

    fn message(&self, queue: &str, name: &str) -> Message {
        let dir = self.0.to_str().unwrap().to_owned();
        Message::new(queue, "touch", &(dir, name), &()).unwrap()
    }

    async fn wait(&self, name: &str) {
        let path = self.0.join(name);
        assert!(
            dq_test::wait_until_async(PATIENCE, || {
                let exists = path.exists();
                async move { exists }
            })
            .await,
            "{} never appeared",
            path.display()
        );
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the test worker on `url`, waits until it is ready.
async fn start_worker(url: &str, namespace: &str) -> Running {
    let args = strings(&["-b", url, "--namespace", namespace, "-p", "1", "-t", "2"]);
    let w = Running::start(&example("test_worker"), &args, &[]);
    w.wait_ready(1).await;
    w
}

async fn stop_worker(mut w: Running) -> String {
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    w.output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_with_a_password() {
    let redis = PrivateRedis::start(&["--requirepass", PASSWORD]);
    let url = redis.url_with("", PASSWORD);
    assert!(url.contains("p%40ss%3Aw0rd%2F"), "{url}");
    let ns = dq_test::unique_name("lockdown");
    let marks = Marks::new();

    let builder = RedisBroker::builder().url(&url).namespace(&ns);
    let shown_builder = format!("{builder:?}");
    let broker = builder.build().await.unwrap();
    let mut m = marks.message("default", "one");
    broker.enqueue(&mut m).await.unwrap();
    let w = start_worker(&url, &ns).await;
    marks.wait("one").await;
    let out = stop_worker(w).await;
    assert_no_secret(&format!("{shown_builder} {broker:?} {out}"));
    assert_eq!(broker.stats("default").await.unwrap().ready, 0);

    // With -vv, every client record is logged: none shows the password.
    let args = strings(&["-b", &url, "--namespace", &ns, "-p", "1", "-vv"]);
    let w = Running::start(&example("test_worker"), &args, &[]);
    w.wait_ready(1).await;
    assert_no_secret(&stop_worker(w).await);

    // A wrong password: a Connection error whose cause says the login was refused.
    let wrong = redis.url_with("", WRONG);
    let err = RedisBroker::builder()
        .url(&wrong)
        .build()
        .await
        .unwrap_err();
    let e = dq_core::BrokerError::from(err);
    assert_eq!(e.kind(), dq_core::BrokerErrorKind::Connection, "{e:?}");
    let chain = dq_core::ErrorChain(&e).to_string();
    assert!(chain.contains("AuthenticationFailed"), "{chain}");
    assert_no_secret(&format!("{chain} {e:?}"));
    assert_refused_at_start(&wrong, &ns, "AuthenticationFailed").await;
    // No password at all.
    assert_refused_at_start(&redis.url_with("", ""), &ns, "NOAUTH").await;

    // Redis going away under a running worker: what it logs names no secret either.
    let w = start_worker(&url, &ns).await;
    drop(redis);
    w.wait_lines("lost the broker", 1).await;
    let out = stop_worker(w).await;
    assert_no_secret(&out);
}

/// The commands the README's ACL allows: what the broker, the worker and the admin tool run,
/// KEYS included (the dispatch script's recovery of a dead broker's messages uses it, as
/// Dramatiq's does).
const ACL_COMMANDS: &str =
    "-@all +@read +@write +@scripting +@pubsub +@connection +@transaction -@dangerous +keys";

/// A Redis user that may touch `ns` and `ns:*` keys and `ns:__dq_notify__.*` channels only,
/// with the commands of the README's ACL.
fn acl_user(redis: &PrivateRedis, user: &str, ns: &str) {
    let keys = [format!("~{ns}"), format!("~{ns}:*")];
    let channel = format!("&{ns}:__dq_notify__.*");
    let pass = format!(">{PASSWORD}");
    let mut args = vec!["ACL", "SETUSER", user, "reset", "on", &pass];
    args.extend(keys.iter().map(String::as_str));
    args.push(&channel);
    args.extend(ACL_COMMANDS.split(' '));
    assert_eq!(redis.cli(PASSWORD, &args).trim(), "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_acl_user_held_to_its_namespace() {
    let redis = PrivateRedis::start(&["--requirepass", PASSWORD]);
    let admin = redis.url_with("", PASSWORD);
    let ns = dq_test::unique_name("ns");
    let user = "dqapp";
    acl_user(&redis, user, &ns);
    let url = redis.url_with(user, PASSWORD);
    let marks = Marks::new();

    // Messages held by a broker that died: the dispatch script's maintenance gives them back,
    // which reads the dead broker's keys with KEYS.
    let broker = RedisBroker::builder()
        .url(&url)
        .namespace(&ns)
        .maintenance_chance(MAINTENANCE_SCALE)
        .build()
        .await
        .unwrap();
    let mut held = marks.message("default", "held");
    let id = dq_test::unique_name("held");
    held.options.set_redis_message_id(id.clone());
    let body = String::from_utf8(held.encode()).unwrap();
    let zadd = ["ZADD", &format!("{ns}:__heartbeats__"), "0", "dead"];
    redis.cli(PASSWORD, &zadd);
    redis.cli(
        PASSWORD,
        &["SADD", &format!("{ns}:__acks__.dead.default"), &id],
    );
    redis.cli(
        PASSWORD,
        &["HSET", &format!("{ns}:default.msgs"), &id, &body],
    );
    let mut consumer = broker.consume("default", 1).await.unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the held message never came back"
        );
        let fetched = consumer.fetch(Duration::from_millis(200)).await;
        got.extend(fetched.expect("fetch as the ACL user"));
    }
    assert_eq!(got[0].body, held.encode());
    consumer.acker().ack(&[got.remove(0).token]).await.unwrap();
    consumer.close().await.unwrap();

    // The worker command and the admin tool, as that user.
    let w = start_worker(&url, &ns).await;
    let mut m = marks.message("default", "one");
    broker.enqueue(&mut m).await.unwrap();
    marks.wait("one").await;
    let args = strings(&["-b", &url, "--namespace", &ns, "queues"]);
    let (code, out) = run(&dq_bin(), &args).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("default"), "{out}");
    let args = strings(&["-b", &url, "--namespace", &ns, "send", "touch"]);
    let mut args = args;
    args.extend(strings(&["--args", &format!("[{:?}, \"two\"]", marks.0)]));
    let (code, out) = run(&dq_bin(), &args).await;
    assert_eq!(code, 0, "{out}");
    marks.wait("two").await;

    // Nothing was refused.
    let log = redis.cli(PASSWORD, &["ACL", "LOG"]);
    assert!(log.trim().is_empty(), "refused: {log}");

    // Its keys taken away while running: each refusal is logged with what was refused, and a
    // message sent meanwhile stays in Redis until the keys are given back.
    redis.cli(
        PASSWORD,
        &["ACL", "SETUSER", user, "resetkeys", "~elsewhere:*"],
    );
    let root = RedisBroker::builder()
        .url(&admin)
        .namespace(&ns)
        .build()
        .await
        .unwrap();
    let mut m = marks.message("default", "three");
    root.enqueue(&mut m).await.unwrap();
    // The refused operation, the queue and Redis' reason, in one line.
    w.wait_lines("fetch from default: NoPerm", 1).await;
    assert_eq!(root.stats("default").await.unwrap().ready, 1);
    assert!(!marks.0.join("three").exists());
    acl_user(&redis, user, &ns);
    marks.wait("three").await;
    let out = stop_worker(w).await;
    assert_no_secret(&format!("{broker:?} {out}"));

    // A wrong password for the user.
    assert_refused_at_start(&redis.url_with(user, WRONG), &ns, "AuthenticationFailed").await;
}

/// `rabbitmqctl` as root (the tests run where RabbitMQ does); panics with its output on failure.
fn rabbitmqctl(args: &[&str]) -> String {
    let program = if Path::new("/usr/sbin/rabbitmqctl").exists() {
        "/usr/sbin/rabbitmqctl"
    } else {
        "rabbitmqctl"
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("rabbitmqctl did not run ({e}): run the tests as root"));
    assert!(out.status.success(), "rabbitmqctl {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vhost with a user of its own, and a second user with no permission there; all deleted
/// on drop.
struct LockedVhost {
    name: String,
    user: String,
    stranger: String,
    host: String,
}

impl LockedVhost {
    fn new() -> LockedVhost {
        let base = dq_test::require_amqp();
        let host = base
            .rsplit_once('@')
            .map_or(base.as_str(), |(_, h)| h)
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let v = LockedVhost {
            name: dq_test::unique_name("dq-locked"),
            user: dq_test::unique_name("dq-app"),
            stranger: dq_test::unique_name("dq-stranger"),
            host,
        };
        rabbitmqctl(&["add_vhost", &v.name]);
        rabbitmqctl(&["add_user", &v.user, PASSWORD]);
        rabbitmqctl(&["add_user", &v.stranger, PASSWORD]);
        v.grant();
        v
    }

    fn grant(&self) {
        let p = ["set_permissions", "-p", &self.name, &self.user];
        rabbitmqctl(&[&p[..], &[".*", ".*", ".*"]].concat());
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!(
            "amqp://{user}:{}@{}/{}",
            percent_encode(password),
            self.host,
            self.name
        )
    }
}

impl Drop for LockedVhost {
    fn drop(&mut self) {
        let ctl = if Path::new("/usr/sbin/rabbitmqctl").exists() {
            "/usr/sbin/rabbitmqctl"
        } else {
            "rabbitmqctl"
        };
        let _ = Command::new(ctl)
            .args(["delete_vhost", &self.name])
            .output();
        for u in [&self.user, &self.stranger] {
            let _ = Command::new(ctl).args(["delete_user", u]).output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_user_of_its_own_vhost() {
    let vhost = LockedVhost::new();
    let url = vhost.url(&vhost.user, PASSWORD);
    let marks = Marks::new();

    let builder = AmqpBroker::builder().url(&url);
    let shown_builder = format!("{builder:?}");
    let broker = builder.build().await.unwrap();
    let mut m = marks.message("default", "one");
    broker.enqueue(&mut m).await.unwrap();
    let w = start_worker(&url, "unused").await;
    marks.wait("one").await;
    let args = strings(&["-b", &url, "queues"]);
    let (code, out) = run(&dq_bin(), &args).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("default"), "{out}");
    assert_no_secret(&out);

    // Its permissions taken away while running (RabbitMQ checks them when a connection opens,
    // so its connections are closed too): the refusal is logged, and a message sent meanwhile
    // waits in RabbitMQ until they are given back.
    rabbitmqctl(&["clear_permissions", "-p", &vhost.name, &vhost.user]);
    rabbitmqctl(&["close_all_user_connections", &vhost.user, "revoked"]);
    // The refused operation and RabbitMQ's reason, in one line.
    w.wait_lines(
        "(consumer): protocol error: AMQP hard error: NOT-ALLOWED",
        1,
    )
    .await;
    let mut m = marks.message("default", "two");
    let guest = dq_test::require_amqp();
    let guest = format!("{}/{}", guest.rsplit_once('/').unwrap().0, vhost.name);
    rabbitmqctl(&[
        "set_permissions",
        "-p",
        &vhost.name,
        "guest",
        ".*",
        ".*",
        ".*",
    ]);
    let root = AmqpBroker::builder().url(&guest).build().await.unwrap();
    root.enqueue(&mut m).await.unwrap();
    let stats = root.stats("default").await.unwrap();
    assert_eq!(stats.ready, 1, "{stats:?}");
    assert!(!marks.0.join("two").exists());
    vhost.grant();
    marks.wait("two").await;
    let out = stop_worker(w).await;
    assert_no_secret(&format!("{shown_builder} {broker:?} {out}"));

    // With -vv, lapin's records of every frame are logged: the login's is hidden.
    let args = strings(&["-b", &url, "-p", "1", "-vv"]);
    let w = Running::start(&example("test_worker"), &args, &[]);
    w.wait_ready(1).await;
    let out = stop_worker(w).await;
    assert!(out.contains("AMQPFrame::Method"), "{out}");
    assert!(out.contains("hidden: it holds the credentials"), "{out}");
    assert_no_secret(&out);

    // A wrong password, and a user with no permission on the vhost.
    let wrong = vhost.url(&vhost.user, WRONG);
    assert_refused_at_start(&wrong, "unused", "ACCESS_REFUSED").await;
    let stranger = vhost.url(&vhost.stranger, PASSWORD);
    let err = AmqpBroker::builder()
        .url(&stranger)
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), dq_core::BrokerErrorKind::Connection, "{err:?}");
    assert_no_secret(&format!("{err} {err:?}"));
    assert_refused_at_start(&stranger, "unused", "NOT_ALLOWED").await;
}

#[tokio::test]
async fn no_secret_in_errors_for_bad_or_unreachable_urls() {
    let enc = percent_encode(PASSWORD);
    let urls = [
        format!("redis://:{enc}@127.0.0.1:1/0"),
        format!("redis://ann:{enc}@127.0.0.1:1"),
        format!("redis://{enc}@127.0.0.1:1"),
        format!("redis://:{enc}@127.0.0.1:notaport"),
        format!("redis://127.0.0.1:1/0?password={enc}"),
        format!("rediss://:{enc}@127.0.0.1:1"),
        format!("amqp://ann:{enc}@127.0.0.1:1/%2f"),
        format!("amqp://ann:{enc}@127.0.0.1:notaport/%2f"),
        format!("amqp://{enc}@127.0.0.1:1/%2f"),
        format!("amqps://ann:{enc}@127.0.0.1:1/%2f"),
        // Malformed in other places: the parsers' complaints must not quote the user-info.
        format!("redis://:p%ZZ{enc}@127.0.0.1:1"),
        format!("redis://:{enc}@127.0.0.1:99999"),
        format!("redis://:{enc}@127.0.0.1:1/notadb"),
        format!("redis://ann:{enc}@"),
        format!(" redis://:{enc}@127.0.0.1:1"),
        format!("amqp://ann:p%ZZ{enc}@127.0.0.1:1/%2f"),
        format!("amqp://ann:{enc}@127.0.0.1:99999/%2f"),
        format!("amqp://ann:{enc}@127.0.0.1:1/%2f?heartbeat=soon&frame_max=big"),
        format!("amqp://ann:{enc}@/%2f"),
        format!("amqp://ann:{enc}@127.0.0.1:1/a/b"),
    ];
    for url in &urls {
        let shown = if url.trim_start().starts_with("redis") {
            let b = RedisBroker::builder().url(url);
            let e = b.clone().build().await.unwrap_err();
            let be = dq_core::BrokerError::from(e);
            format!("{b:?} {be} {be:?} {}", dq_core::ErrorChain(&be))
        } else {
            let b = AmqpBroker::builder().url(url);
            let e = b.clone().build().await.unwrap_err();
            format!("{b:?} {e} {e:?} {}", dq_core::ErrorChain(&e))
        };
        assert_no_secret(&shown);
        let cli = dq_cli::Cli::new().broker({
            let url = url.clone();
            move || RedisBroker::builder().url(&url).build()
        });
        assert_no_secret(&format!("{cli:?}"));

        let (code, out) = run(&example("test_worker"), &strings(&["-b", url, "-p", "1"])).await;
        assert!(code == 2 || code == 3, "{url}: {code}\n{out}");
        assert_no_secret(&out);
        for admin in [vec!["queues"], vec!["send", "touch", "--queue", "default"]] {
            let mut args = strings(&["-b", url]);
            args.extend(strings(&admin));
            let (code, out) = run(&dq_bin(), &args).await;
            assert!(code == 2 || code == 3, "{url} {admin:?}: {code}\n{out}");
            assert_no_secret(&out);
        }
    }
}
