//! INT / TERM stop gracefully, a second one kills, HUP reloads: WIRE.md section 7, checked on
//! the real processes and in Redis.

use super::*;

/// Waits until Redis holds `n` unacked messages of `queue` (the worker fetched them).
async fn wait_in_flight(broker: &RedisBroker, queue: &str, n: u64) {
    let ok = dq_test::wait_until_async(PATIENCE, || async {
        broker.stats(queue).await.unwrap().in_flight >= n
    })
    .await;
    assert!(
        ok,
        "the worker never held {n} message(s) of {queue}: {:?}",
        broker.stats(queue).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int_finishes_the_running_message_and_requeues_the_prefetched_ones() {
    let scope = Scope::new("cli-int");
    let broker = scope.broker().await;
    // One thread: `hold` occupies it, and the prefetch (2 × threads) takes one more message.
    let mut w = Running::worker(&scope, &example("test_worker"), &["-p", "1", "-t", "1"]);
    let pids = w.wait_ready(1).await;
    scope.send(&broker, "default", "hold", "a").await;
    let (_, hold_pid) = scope.wait_mark("started-a").await;
    assert_eq!(hold_pid, pids[0]);
    for name in ["b", "c", "d", "e"] {
        scope.send(&broker, "default", "touch", name).await;
    }
    wait_in_flight(&broker, "default", 2).await;

    // Ctrl-C in a terminal signals the whole process group; workers leave INT to the main
    // process, which TERMs them.
    killpg(Pid::from_raw(w.pid()), Signal::SIGINT).unwrap();
    w.wait_lines("Stopping worker process...", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        scope.read_mark("done-a").is_none() && w.child.try_wait().unwrap().is_none(),
        "the worker must wait for the running message; output:\n{}",
        w.output()
    );

    std::fs::write(scope.file("release"), "").unwrap();
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    assert_eq!(scope.read_mark("done-a"), Some(("v1".to_owned(), hold_pid)));
    wait_gone(hold_pid).await;

    // Nothing lost, nothing run after the stop began: the four `touch` messages are all back
    // on the queue, and no message is left unacked.
    let stats = broker.stats("default").await.unwrap();
    let touched: Vec<_> = ["b", "c", "d", "e"]
        .into_iter()
        .filter(|n| scope.file(n).exists())
        .collect();
    assert_eq!(touched, Vec::<&str>::new(), "{}", w.output());
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead),
        (4, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_term_kills_at_once_with_code_1() {
    let scope = Scope::new("cli-term2");
    let broker = scope.broker().await;
    let mut w = Running::worker(&scope, &example("test_worker"), &["-p", "1", "-t", "1"]);
    w.wait_ready(1).await;
    scope.send(&broker, "default", "hold", "a").await;
    let (_, hold_pid) = scope.wait_mark("started-a").await;

    w.signal(Signal::SIGTERM);
    w.wait_lines("Stopping worker process...", 1).await;
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 1, "{}", w.output());
    assert!(
        w.output()
            .contains("received again: killing worker processes"),
        "{}",
        w.output()
    );
    wait_gone(hold_pid).await;
    assert!(scope.read_mark("done-a").is_none());
    // Killed mid-message: it was never acked, so Redis still has it for redelivery.
    let stats = broker.stats("default").await.unwrap();
    assert_eq!(stats.ready + stats.in_flight, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hup_reloads_the_worker_processes_gracefully() {
    let scope = Scope::new("cli-hup");
    let broker = scope.broker().await;
    let mut w = Running::worker(&scope, &example("test_worker"), &["-p", "2", "-t", "2"]);
    let old = w.wait_ready(2).await;
    scope.send(&broker, "default", "hold", "a").await;
    let (_, hold_pid) = scope.wait_mark("started-a").await;
    assert!(old.contains(&hold_pid));

    w.signal(Signal::SIGHUP);
    w.wait_lines("Stopping worker process...", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A reload is a graceful stop: the running message finishes in the old process, and the
    // new processes start only once every old one is gone.
    assert!(scope.read_mark("done-a").is_none());
    assert_eq!(w.ready_pids().len(), 2, "{}", w.output());
    std::fs::write(scope.file("release"), "").unwrap();
    assert_eq!(scope.wait_mark("done-a").await, ("v1".to_owned(), hold_pid));

    let all = w.wait_ready(4).await;
    let new = &all[2..];
    assert!(
        new.iter().all(|p| !old.contains(p)),
        "old {old:?}, new {new:?}"
    );
    for pid in &old {
        wait_gone(*pid).await;
    }
    scope.send(&broker, "default", "touch", "after").await;
    let (_, pid) = scope.wait_mark("after").await;
    assert!(new.contains(&pid), "{pid} is not one of {new:?}");

    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    let stats = broker.stats("default").await.unwrap();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_that_dies_is_restarted() {
    let scope = Scope::new("cli-crash");
    let broker = scope.broker().await;
    let mut w = Running::worker(&scope, &example("test_worker"), &["-p", "2", "-t", "1"]);
    let old = w.wait_ready(2).await;
    kill(Pid::from_raw(old[0]), Signal::SIGKILL).unwrap();
    w.wait_lines("was killed by SIGKILL unexpectedly: restarting it", 1)
        .await;
    let all = w.wait_ready(3).await;
    let fresh = all[2];
    assert!(!old.contains(&fresh), "{all:?}");
    assert!(
        is_alive(old[1]),
        "the other worker process must be left alone"
    );

    // Both processes work: one is kept busy, and of the next two messages it can have taken
    // (prefetched) one at most, so the other process runs the other.
    scope.send(&broker, "default", "hold", "a").await;
    let (_, busy) = scope.wait_mark("started-a").await;
    scope.send(&broker, "default", "touch", "b").await;
    scope.send(&broker, "default", "touch", "c").await;
    let b_or_c = dq_test::wait_until_async(PATIENCE, || {
        let any = scope.file("b").exists() || scope.file("c").exists();
        async move { any }
    })
    .await;
    assert!(b_or_c, "{}", w.output());
    let (_, other) = scope
        .read_mark("b")
        .or_else(|| scope.read_mark("c"))
        .unwrap();
    let mut running = vec![busy, other];
    running.sort();
    let mut want = vec![old[1], fresh];
    want.sort();
    assert_eq!(running, want);
    std::fs::write(scope.file("release"), "").unwrap();
    for name in ["done-a", "b", "c"] {
        scope.wait_mark(name).await;
    }

    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
}

/// systemd's default `KillMode=control-group` sends TERM to every process of the service at
/// once, and the main process forwards its own: a worker process gets two TERMs, which must still
/// be one graceful stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn term_to_the_whole_group_is_one_graceful_stop() {
    let scope = Scope::new("cli-termgroup");
    let broker = scope.broker().await;
    let mut w = Running::worker(&scope, &example("test_worker"), &["-p", "1", "-t", "1"]);
    w.wait_ready(1).await;
    scope.send(&broker, "default", "hold", "a").await;
    let (_, hold_pid) = scope.wait_mark("started-a").await;

    killpg(Pid::from_raw(w.pid()), Signal::SIGTERM).unwrap();
    w.wait_lines("Stopping worker process...", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(is_alive(hold_pid), "{}", w.output());
    std::fs::write(scope.file("release"), "").unwrap();
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    assert_eq!(scope.read_mark("done-a"), Some(("v1".to_owned(), hold_pid)));
    let stats = broker.stats("default").await.unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int_on_rabbitmq_finishes_the_running_message_and_redelivers_the_prefetched_ones() {
    let url = dq_test::require_amqp();
    let scope = Scope::new("cli-int-amqp");
    let prefix = format!("{}.", scope.namespace);
    let default = AmqpQueue::new(&url, format!("{prefix}default"));
    let _other = AmqpQueue::new(&url, format!("{prefix}other"));
    let broker = dq_broker_amqp::AmqpBroker::builder()
        .url(&url)
        .build()
        .await
        .unwrap();
    let send = |actor: &str, name: &str| {
        let mut m = Message::new(&default.name, actor, &(scope.dir_str(), name), &()).unwrap();
        let broker = &broker;
        async move { broker.enqueue(&mut m).await.unwrap() }
    };
    let args: Vec<String> = ["-b", &url, "-p", "1", "-t", "1"].map(String::from).into();
    let mut w = Running::start(
        &example("test_worker"),
        &args,
        &[("DQ_TEST_WORKER_QUEUE_PREFIX", &prefix)],
    );
    w.wait_ready(1).await;
    send("hold", "a").await;
    let (_, hold_pid) = scope.wait_mark("started-a").await;
    for name in ["b", "c", "d", "e"] {
        send("touch", name).await;
    }
    // RabbitMQ does not say what is unacked; give the worker time to take its prefetch.
    let taken = dq_test::wait_until_async(PATIENCE, || async {
        broker.stats(&default.name).await.unwrap().ready <= 3
    })
    .await;
    assert!(taken, "{}", w.output());

    killpg(Pid::from_raw(w.pid()), Signal::SIGINT).unwrap();
    w.wait_lines("Stopping worker process...", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(scope.read_mark("done-a").is_none());
    std::fs::write(scope.file("release"), "").unwrap();
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    assert_eq!(scope.read_mark("done-a"), Some(("v1".to_owned(), hold_pid)));

    // The prefetched message went back when the worker closed its channel: all four are
    // ready again, and `hold` was acked.
    let back = dq_test::wait_until_async(PATIENCE, || async {
        broker.stats(&default.name).await.unwrap().ready == 4
    })
    .await;
    let stats = broker.stats(&default.name).await.unwrap();
    assert!(back, "{stats:?}\n{}", w.output());
    assert_eq!(stats.dead, 0);
    for name in ["b", "c", "d", "e"] {
        assert!(
            !scope.file(name).exists(),
            "{name} ran after the stop began"
        );
    }
}

/// Signalled directly, a worker process stops gracefully on the first TERM and exits at once
/// on a second one that comes later than the duplicate of a group-wide signal would; the main
/// process, still running, starts a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_signalled_twice_directly_exits_at_once() {
    let scope = Scope::new("cli-child2");
    let broker = scope.broker().await;
    let mut w = Running::worker(&scope, &example("test_worker"), &["-p", "1", "-t", "1"]);
    let pids = w.wait_ready(1).await;
    scope.send(&broker, "default", "hold", "a").await;
    scope.wait_mark("started-a").await;
    let child = Pid::from_raw(pids[0]);

    kill(child, Signal::SIGTERM).unwrap();
    w.wait_lines("Stopping worker process...", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(is_alive(pids[0]), "{}", w.output());
    kill(child, Signal::SIGTERM).unwrap();
    w.wait_lines("Killing worker process...", 1).await;
    wait_gone(pids[0]).await;
    w.wait_lines("exited with code 1 unexpectedly: restarting it", 1)
        .await;
    w.wait_ready(2).await;
    assert!(scope.read_mark("done-a").is_none());

    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
}
