//! `--queues` binds a worker to some of its actors' queues; messages sent with `dq send` from
//! another shell reach it.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_restricts_what_a_worker_consumes() {
    let scope = Scope::new("cli-queues");
    let broker = scope.broker().await;
    let dir = scope.dir_str();
    let args = format!(r#"["{dir}", "other-1"]"#);
    let sent = scope.dq(&["send", "touch_other", "--queue", "other", "--args", &args]);
    assert!(sent.status.success(), "{sent:?}");
    scope.send(&broker, "default", "touch", "default-1").await;

    let mut w = Running::worker(
        &scope,
        &example("test_worker"),
        &["-p", "1", "-t", "2", "--queues", "default"],
    );
    w.wait_ready(1).await;
    assert!(
        w.output().contains(r#"queues=["default"]"#),
        "{}",
        w.output()
    );
    scope.wait_mark("default-1").await;
    // The `other` message was there first: had the worker consumed `other`, it would have run
    // it by now. Give it a while more anyway.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(scope.read_mark("other-1").is_none(), "{}", w.output());
    let other = broker.stats("other").await.unwrap();
    assert_eq!((other.ready, other.in_flight), (1, 0), "{other:?}");
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());

    // A worker group bound to `other` picks it up.
    let mut w = Running::worker(
        &scope,
        &example("test_worker"),
        &["-p", "1", "-t", "2", "-Q", "other"],
    );
    let pids = w.wait_ready(1).await;
    assert_eq!(scope.wait_mark("other-1").await, ("v1".to_owned(), pids[0]));
    scope.send(&broker, "default", "touch", "default-2").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(scope.read_mark("default-2").is_none(), "{}", w.output());
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    let default = broker.stats("default").await.unwrap();
    assert_eq!((default.ready, default.in_flight), (1, 0), "{default:?}");
}

#[tokio::test]
async fn an_unknown_queue_is_reported() {
    let scope = Scope::new("cli-noqueue");
    let mut w = Running::worker(
        &scope,
        &example("test_worker"),
        &["-p", "1", "-Q", "nobody_uses_this"],
    );
    let code = w.wait_exit().await;
    let out = w.output();
    assert!(
        out.contains("No actor uses queue \"nobody_uses_this\""),
        "{out}"
    );
    assert_eq!(code, 2, "{out}");
}
