//! The `dq` admin tool on Redis and on RabbitMQ: `queues`, `send`, `purge`, `dead-letters`,
//! and its exit codes.

use dq_broker_amqp::AmqpBroker;
use serde_json::Value;

use super::*;

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts `o` exited with `code`, showing its output if not.
pub(crate) fn check(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

/// The cells of the `dq queues` row for `queue`.
pub(crate) fn row(table: &str, queue: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(queue))
        .unwrap_or_else(|| panic!("no row for {queue} in:\n{table}"))
}

/// Receives up to `n` messages of physical queue `queue` and nacks them into its dead letters.
async fn dead_letter(broker: &dyn Broker, queue: &str, n: usize) {
    let mut consumer = broker.consume(queue, n).await.unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while got.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n}",
            got.len()
        );
        got.extend(consumer.fetch(Duration::from_millis(200)).await.unwrap());
    }
    for d in &got {
        consumer
            .acker()
            .nack(&d.token, "failed in a test")
            .await
            .unwrap();
    }
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn send_queues_and_purge_on_redis() {
    let scope = Scope::new("cli-admin-send");
    let broker = scope.broker().await;
    let o = scope.dq(&["queues"]);
    check(&o, 0);
    assert_eq!(stdout(&o), "No queues.\n");

    let o = scope.dq(&[
        "send",
        "add",
        "--queue",
        "math",
        "--args",
        "[1, 2]",
        "--kwargs",
        r#"{"k": "v"}"#,
    ]);
    check(&o, 0);
    let sent: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sent["actor_name"], "add");
    assert_eq!(sent["queue_name"], "math");
    assert_eq!(sent["args"], serde_json::json!([1, 2]));
    assert_eq!(sent["kwargs"], serde_json::json!({"k": "v"}));
    check(
        &scope.dq(&["send", "add", "-q", "math", "--args", "[3, 4]"]),
        0,
    );
    let o = scope.dq(&["send", "add", "-q", "math", "--delay", "60000"]);
    check(&o, 0);
    let delayed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(delayed["queue_name"], "math.DQ");
    assert!(
        delayed["options"]["eta"].as_i64().unwrap() > sent["message_timestamp"].as_i64().unwrap()
    );

    let o = scope.dq(&["queues"]);
    check(&o, 0);
    let table = stdout(&o);
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["QUEUE", "READY", "DELAYED", "DEAD", "UNACKED", "WORKERS", "LOCKS"]
    );
    assert_eq!(row(&table, "math"), ["math", "2", "1", "0", "0", "0", "0"]);

    // What `dq send` enqueued is what a worker receives.
    let mut consumer = broker.consume("math", 1).await.unwrap();
    let got = loop {
        let d = consumer.fetch(Duration::from_millis(200)).await.unwrap();
        if let Some(d) = d.into_iter().next() {
            break d;
        }
    };
    let m = Message::decode(&got.body).unwrap();
    assert_eq!(m.message_id, sent["message_id"].as_str().unwrap());
    assert_eq!((m.args.get(), m.kwargs.get()), ("[1,2]", r#"{"k":"v"}"#));
    consumer.close().await.unwrap();

    let o = scope.dq(&["purge", "math"]);
    check(&o, 0);
    assert_eq!(stdout(&o), "Purged math.\n");
    let s = broker.stats("math").await.unwrap();
    assert_eq!((s.ready, s.delayed, s.dead), (0, 0, 0), "{s:?}");

    // Bad arguments are code 2, and say what is wrong.
    let o = scope.dq(&["send", "add", "--args", r#"{"a": 1}"#]);
    check(&o, 2);
    assert!(
        stderr(&o).contains("--args must be a JSON array"),
        "{}",
        stderr(&o)
    );
    let o = scope.dq(&["send", "add", "--kwargs", "{"]);
    check(&o, 2);
    let o = scope.dq(&["purge", "no good"]);
    check(&o, 2);
    assert!(stderr(&o).contains("invalid queue name"), "{}", stderr(&o));
}

#[tokio::test]
async fn dead_letters_on_redis() {
    let scope = Scope::new("cli-admin-dead");
    let broker = scope.broker().await;
    let o = scope.dq(&["dead-letters", "list"]);
    check(&o, 0);
    assert_eq!(stdout(&o), "No dead letters.\n");

    let mut sent = Vec::new();
    for i in 0..3 {
        let mut m = Message::new("jobs", "work", &(i,), &()).unwrap();
        m.options.set_retries(2);
        broker.enqueue(&mut m).await.unwrap();
        sent.push(m);
    }
    dead_letter(&broker, "jobs", 3).await;
    let letters = broker.dead_letters("jobs", 10).await.unwrap();
    assert_eq!(letters.len(), 3);

    let o = scope.dq(&["dead-letters", "list"]);
    check(&o, 0);
    let list = stdout(&o);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.starts_with("ID "), "{list}");
    for l in &letters {
        let line = list.lines().find(|x| x.starts_with(&l.id)).unwrap();
        assert!(line.contains("jobs"), "{line}");
    }
    assert!(list.contains("work(0)"), "{list}");
    let o = scope.dq(&["queues"]);
    assert_eq!(
        row(&stdout(&o), "jobs"),
        ["jobs", "0", "0", "3", "0", "0", "0"]
    );

    // `show` finds a letter by its id or by its message id.
    let o = scope.dq(&["dead-letters", "show", &letters[0].id]);
    check(&o, 0);
    let shown = stdout(&o);
    assert!(shown.contains("queue:         jobs"), "{shown}");
    let first = Message::decode(&letters[0].body).unwrap();
    assert!(shown.contains(&first.message_id), "{shown}");
    let o = scope.dq(&["dead-letters", "show", &first.message_id, "-q", "jobs"]);
    check(&o, 0);
    assert!(stdout(&o).contains(&letters[0].id));
    let o = scope.dq(&["dead-letters", "show", "no-such-letter"]);
    check(&o, 1);
    assert!(
        stderr(&o).contains("no dead letter \"no-such-letter\""),
        "{}",
        stderr(&o)
    );

    // Requeue one by id, then the rest.
    let o = scope.dq(&["dead-letters", "requeue", &letters[1].id]);
    check(&o, 0);
    assert_eq!(
        stdout(&o),
        "Requeued 1 message(s) of jobs under their own message ids, with retries reset to 0.\n"
    );
    let s = broker.stats("jobs").await.unwrap();
    assert_eq!((s.ready, s.dead), (1, 2), "{s:?}");
    let o = scope.dq(&[
        "dead-letters",
        "requeue",
        "--all",
        "-q",
        "jobs",
        "--keep-retries",
    ]);
    check(&o, 0);
    assert_eq!(
        stdout(&o),
        "Requeued 2 message(s) of jobs under their own message ids, with their retry counts kept.\n"
    );
    let s = broker.stats("jobs").await.unwrap();
    assert_eq!((s.ready, s.dead), (3, 0), "{s:?}");
    let o = scope.dq(&["dead-letters", "requeue", "--all"]);
    check(&o, 0);
    assert_eq!(stdout(&o), "No dead letters to requeue.\n");
    let o = scope.dq(&["dead-letters", "requeue", "gone"]);
    check(&o, 1);

    // They went back whole: same message ids, on their queue.
    let mut consumer = broker.consume("jobs", 3).await.unwrap();
    let mut ids = Vec::new();
    while ids.len() < 3 {
        for d in consumer.fetch(Duration::from_millis(200)).await.unwrap() {
            let m = Message::decode(&d.body).unwrap();
            ids.push((m.message_id, m.options.retries()));
        }
    }
    consumer.close().await.unwrap();
    ids.sort();
    let reset = Message::decode(&letters[1].body).unwrap().message_id;
    let mut want: Vec<_> = sent
        .iter()
        .map(|m| {
            let retries = if m.message_id == reset { 0 } else { 2 };
            (m.message_id.clone(), retries)
        })
        .collect();
    want.sort();
    assert_eq!(ids, want);

    dead_letter(&broker, "jobs", 2).await;
    let o = scope.dq(&["dead-letters", "purge"]);
    check(&o, 0);
    assert_eq!(stdout(&o), "Deleted 2 dead letter(s) of jobs.\n");
    let s = broker.stats("jobs").await.unwrap();
    assert_eq!((s.ready, s.dead), (1, 0), "{s:?}");
}

#[tokio::test]
async fn an_unreachable_broker_is_code_3() {
    for url in ["redis://127.0.0.1:1", "amqp://guest:s3cret@127.0.0.1:1/%2f"] {
        let o = Command::new(dq_bin())
            .args(["--broker-url", url, "queues", "default"])
            .output()
            .unwrap();
        check(&o, 3);
        assert!(stderr(&o).contains("127.0.0.1:1"), "{}", stderr(&o));
        assert!(!stderr(&o).contains("s3cret"), "{}", stderr(&o));
    }
}

#[tokio::test]
async fn queues_send_and_dead_letters_on_rabbitmq() {
    let url = dq_test::require_amqp();
    let q = AmqpQueue::new(&url, dq_test::unique_name("cli-admin-amqp"));
    let dq = |args: &[&str]| {
        Command::new(dq_bin())
            .args(["--broker-url", &url])
            .args(args)
            .output()
            .unwrap()
    };
    let o = dq(&["send", "work", "-q", &q.name, "--args", "[1]"]);
    check(&o, 0);
    let sent: Value = serde_json::from_slice(&o.stdout).unwrap();
    check(&dq(&["send", "work", "-q", &q.name, "--delay", "60000"]), 0);
    check(&dq(&["send", "work", "-q", &q.name, "--args", "[2]"]), 0);

    let o = dq(&["queues", &q.name]);
    check(&o, 0);
    assert_eq!(
        row(&stdout(&o), &q.name),
        [q.name.as_str(), "2", "1", "0", "0", "0"]
    );

    let broker = AmqpBroker::builder().url(&url).build().await.unwrap();
    dead_letter(&broker, &q.name, 2).await;
    let o = dq(&["dead-letters", "list", "-q", &q.name]);
    check(&o, 0);
    let list = stdout(&o);
    assert_eq!(list.lines().count(), 3, "{list}");
    let id = sent["message_id"].as_str().unwrap();
    assert!(list.contains(id), "{list}");
    let o = dq(&["dead-letters", "show", id, "-q", &q.name]);
    check(&o, 0);
    assert!(
        stdout(&o).contains(r#""actor_name": "work""#),
        "{}",
        stdout(&o)
    );
    // Reading dead letters leaves them where they were.
    let s = broker.stats(&q.name).await.unwrap();
    assert_eq!((s.ready, s.delayed, s.dead), (0, 1, 2), "{s:?}");

    let o = dq(&["dead-letters", "requeue", id, "-q", &q.name]);
    check(&o, 0);
    assert_eq!(
        stdout(&o),
        format!(
            "Requeued 1 message(s) of {} under their own message ids, with retries reset to 0.\n",
            q.name
        )
    );
    let s = broker.stats(&q.name).await.unwrap();
    assert_eq!((s.ready, s.dead), (1, 1), "{s:?}");
    let o = dq(&["dead-letters", "requeue", "--all", "-q", &q.name]);
    check(&o, 0);
    let s = broker.stats(&q.name).await.unwrap();
    assert_eq!((s.ready, s.dead), (2, 0), "{s:?}");
    dead_letter(&broker, &q.name, 2).await;
    let o = dq(&["dead-letters", "purge", "-q", &q.name]);
    check(&o, 0);
    assert_eq!(
        stdout(&o),
        format!("Deleted 2 dead letter(s) of {}.\n", q.name)
    );
    let s = broker.stats(&q.name).await.unwrap();
    assert_eq!((s.ready, s.delayed, s.dead), (0, 1, 0), "{s:?}");

    check(&dq(&["purge", &q.name]), 0);
    let s = broker.stats(&q.name).await.unwrap();
    assert_eq!((s.ready, s.delayed, s.dead), (0, 0, 0), "{s:?}");
}

#[tokio::test]
async fn abort_writes_dramatiq_abort_events_to_redis() {
    let url = dq_test::require_redis();
    let ns = format!("{}:", dq_test::unique_name("cli-aborts"));
    let (a, b) = (dq_test::unique_name("id-a"), dq_test::unique_name("id-b"));
    let o = Command::new(dq_bin())
        .args([
            "--broker-url",
            &url,
            "abort",
            "--abort-namespace",
            &ns,
            "--timeout",
            "2500",
            &a,
            &b,
        ])
        .output()
        .unwrap();
    check(&o, 0);
    assert_eq!(stdout(&o), format!("Aborted {a}.\nAborted {b}.\n"));
    let o = Command::new(dq_bin())
        .args([
            "abort",
            "--redis-url",
            &url,
            "--abort-namespace",
            &ns,
            "--mode",
            "cancel",
            "--ttl",
            "600000",
            "c",
        ])
        .output()
        .unwrap();
    check(&o, 0);
    assert_eq!(stdout(&o), "Cancelled c.\n");

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let list = |key: String| redis::cmd("LRANGE").arg(key).arg(0).arg(-1).clone();
    for id in [&a, &b] {
        let v: Vec<String> = list(format!("{ns}cancel:{id}"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v, ["{}"]);
        let v: Vec<String> = list(format!("{ns}abort:{id}"))
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v, [r#"{"abort_timeout": 2500}"#]);
    }
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{ns}cancel:c"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 90_000, "--ttl: {ttl}");
    let none: i64 = redis::cmd("EXISTS")
        .arg(format!("{ns}abort:c"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(none, 0, "cancel mode writes no abort event");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut c)
        .await
        .unwrap();

    // Bad arguments are exit code 2; an unreachable Redis is 3.
    let o = Command::new(dq_bin())
        .args(["abort", "--mode", "stop", "x"])
        .output()
        .unwrap();
    check(&o, 2);
    let o = Command::new(dq_bin())
        .args(["abort", "--redis-url", "redis://127.0.0.1:1", "x"])
        .output()
        .unwrap();
    check(&o, 3);
}
