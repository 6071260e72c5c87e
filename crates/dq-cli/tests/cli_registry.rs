//! Workers say what they run: `dq send` finds an actor's queue in the worker registry and
//! refuses an actor no running worker declares, `dq actors` and `dq workers` show the fleet, and
//! `dq queues` shows the queues workers consume even when they are empty. On Redis with a real
//! worker; on RabbitMQ with a real worker and with a record published by hand.

use std::time::Duration;

use dq_broker_amqp::AmqpBroker;
use dq_core::{ActorInfo, WorkerInfo};
use serde_json::Value;

use super::cli_admin::{check, row, stderr, stdout};
use super::*;

/// The cells of `dq actors`'s row for `actor` on `queue`.
fn actor_row(table: &str, actor: &str, queue: &str) -> Option<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.len() > 2 && cells[0] == actor && cells[1] == queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_actors_and_queues_follow_a_running_worker_on_redis() {
    let scope = Scope::new("cli-registry");
    let dir = scope.dir_str();
    let mut w = Running::worker(
        &scope,
        &example("test_worker"),
        &["-p", "1", "-t", "2", "--queues", "default"],
    );
    let pid = w.wait_ready(1).await[0];

    // What the worker runs: the actors of the queue it consumes, not `touch_other`'s.
    let o = scope.dq(&["actors"]);
    check(&o, 0);
    let table = stdout(&o);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ACTOR",
            "QUEUE",
            "PRIORITY",
            "OPTIONS",
            "PROCESSES",
            "LAST",
            "SEEN",
            "WORKERS"
        ]
    );
    for actor in ["hold", "touch"] {
        let cells = actor_row(&table, actor, "default").unwrap_or_else(|| panic!("{table}"));
        assert_eq!(cells[2..5], ["0", "-", "1"], "{table}");
        assert!(cells[7].ends_with(&format!(":{pid}")), "{table}");
    }
    assert!(!table.contains("touch_other"), "{table}");
    let o = scope.dq(&["workers"]);
    check(&o, 0);
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    assert!(stdout(&o).contains(&format!(":{pid} ")), "{}", stdout(&o));

    // An empty queue a worker consumes is listed, with its worker.
    let o = scope.dq(&["queues"]);
    check(&o, 0);
    assert_eq!(
        row(&stdout(&o), "default"),
        ["default", "0", "0", "0", "0", "1", "0"]
    );

    // `dq send` finds the actor's queue.
    let args = format!(r#"["{dir}", "sent-1"]"#);
    let o = scope.dq(&["send", "touch", "--args", &args]);
    check(&o, 0);
    let sent: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sent["queue_name"], "default");
    assert_eq!(scope.wait_mark("sent-1").await.1, pid);

    // No running worker declares these: refused, and the operator is told what to do.
    for actor in ["touch_other", "no_such_actor"] {
        let o = scope.dq(&["send", actor, "--args", &args]);
        check(&o, 2);
        let err = stderr(&o);
        assert!(
            err.contains(&format!("no running worker declares actor \"{actor}\"")),
            "{err}"
        );
        assert!(err.contains("-q QUEUE"), "{err}");
        assert!(err.contains("1 worker is running"), "{err}");
    }
    // Unless the queue is named: it waits there for a worker that consumes it.
    let o = scope.dq(&["send", "touch_other", "-q", "other", "--args", &args]);
    check(&o, 0);
    assert_eq!(stderr(&o), "");
    let sent: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sent["queue_name"], "other");
    let o = scope.dq(&["queues"]);
    check(&o, 0);
    let table = stdout(&o);
    assert_eq!(
        row(&table, "other"),
        ["other", "1", "0", "0", "0", "0", "0"]
    );
    assert_eq!(
        row(&table, "default"),
        ["default", "0", "0", "0", "0", "1", "0"]
    );
    // Naming another queue than the workers use works, with a warning.
    let o = scope.dq(&["send", "touch", "-q", "other", "--args", &args]);
    check(&o, 0);
    assert!(
        stderr(&o).contains("running workers consume actor \"touch\" from default, not other"),
        "{}",
        stderr(&o)
    );

    // A worker that stops withdraws.
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    let o = scope.dq(&["actors"]);
    check(&o, 0);
    assert_eq!(stdout(&o), "No workers are running.\n");
    let o = scope.dq(&["send", "touch", "--args", &args]);
    check(&o, 2);
    assert!(
        stderr(&o).contains("no worker is running"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_worker_routes_dq_send_on_rabbitmq() {
    let url = dq_test::require_amqp();
    // RabbitMQ is shared with every other test: names of our own, and assertions about our rows.
    let q = AmqpQueue::new(&url, dq_test::unique_name("cli-registry-amqp"));
    let actor = dq_test::unique_name("registry_actor").replace('-', "_");
    let broker = AmqpBroker::builder().url(&url).build().await.unwrap();
    let mut options = serde_json::Map::new();
    options.insert("max_retries".into(), Value::from(3));
    let info = WorkerInfo {
        worker_id: dq_test::unique_name("worker"),
        hostname: "registry-test-host".into(),
        pid: 4242,
        queues: vec![q.name.clone()],
        actors: vec![ActorInfo {
            actor_name: actor.clone(),
            queue_name: q.name.clone(),
            priority: 7,
            options,
        }],
        ..Default::default()
    };
    broker
        .publish_worker(&info, Duration::from_secs(60))
        .await
        .unwrap();
    let dq = |args: &[&str]| {
        Command::new(dq_bin())
            .args(["--broker-url", &url])
            .args(args)
            .output()
            .unwrap()
    };

    let o = dq(&["send", &actor, "--args", "[1]"]);
    check(&o, 0);
    let sent: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(sent["queue_name"], q.name.as_str());
    assert_eq!(broker.stats(&q.name).await.unwrap().ready, 1);
    let unknown = dq_test::unique_name("unknown_actor");
    let o = dq(&["send", &unknown]);
    check(&o, 2);
    assert!(stderr(&o).contains(&unknown), "{}", stderr(&o));

    let o = dq(&["actors"]);
    check(&o, 0);
    let table = stdout(&o);
    let cells = actor_row(&table, &actor, &q.name).unwrap_or_else(|| panic!("{table}"));
    assert_eq!(cells[2..5], ["7", "max_retries=3", "1"], "{table}");
    assert_eq!(cells.last().unwrap(), "registry-test-host:4242", "{table}");

    // RabbitMQ cannot list queues: `dq queues` shows those running workers consume, and says so.
    let o = dq(&["queues"]);
    check(&o, 0);
    assert_eq!(
        row(&stdout(&o), &q.name),
        [q.name.as_str(), "1", "0", "0", "0", "1"]
    );
    assert!(
        stderr(&o).contains("cannot list its queues"),
        "{}",
        stderr(&o)
    );

    broker.withdraw_worker(&info.worker_id).await.unwrap();
    let o = dq(&["send", &actor]);
    check(&o, 2);
    let o = dq(&["actors"]);
    check(&o, 0);
    assert!(actor_row(&stdout(&o), &actor, &q.name).is_none());
    broker.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_on_rabbitmq_publishes_and_withdraws() {
    let url = dq_test::require_amqp();
    let scope = Scope::new("cli-registry-amqp-worker");
    let prefix = format!("{}.", scope.namespace);
    let default = AmqpQueue::new(&url, format!("{prefix}default"));
    let _other = AmqpQueue::new(&url, format!("{prefix}other"));
    let args: Vec<String> = ["-b", &url, "-p", "1", "-t", "1"].map(String::from).into();
    let mut w = Running::start(
        &example("test_worker"),
        &args,
        &[("DQ_TEST_WORKER_QUEUE_PREFIX", &prefix)],
    );
    let pid = w.wait_ready(1).await[0];
    let dq = |args: &[&str]| {
        Command::new(dq_bin())
            .args(["--broker-url", &url])
            .args(args)
            .output()
            .unwrap()
    };
    let o = dq(&["actors"]);
    check(&o, 0);
    let table = stdout(&o);
    let cells = actor_row(&table, "touch", &default.name).unwrap_or_else(|| panic!("{table}"));
    assert!(
        cells.last().unwrap().ends_with(&format!(":{pid}")),
        "{table}"
    );
    let o = dq(&["queues", &default.name]);
    check(&o, 0);
    assert_eq!(
        row(&stdout(&o), &default.name),
        [default.name.as_str(), "0", "0", "0", "0", "1"]
    );

    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    let o = dq(&["actors"]);
    check(&o, 0);
    assert!(
        actor_row(&stdout(&o), "touch", &default.name).is_none(),
        "{}",
        stdout(&o)
    );
}
