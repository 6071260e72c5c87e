//! Unique, debounced and throttled messages, end to end through `#[dq::actor]` sends, the
//! default middleware (with `Unique`) and a real worker, on the stub broker and on real Redis:
//! concurrent senders of one key, each release point, debounce and throttle with delays, the
//! actor options, and (Redis) a worker SIGKILLed while it holds a lock.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use dq::redis::RedisBrokerBuilder;
use dq::{App, SendOptions, SendOutcome, StubBroker, UniqueUntil, Worker, WorkerOptions};

/// What the actors did: (token, event).
static EVENTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// Tokens whose `hold` may finish.
static RELEASED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn record(token: &str, event: String) {
    EVENTS.lock().unwrap().push((token.to_owned(), event));
}

fn events(token: &str) -> Vec<String> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == token)
        .map(|(_, e)| e.clone())
        .collect()
}

fn release(token: &str) {
    RELEASED
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(token.to_owned());
}

/// Runs until its token is released.
#[dq::actor(queue_name = "unique_hold", max_retries = 0)]
fn hold(token: String) {
    record(&token, "started".into());
    while !RELEASED
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|r| r.contains(&token))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    record(&token, "done".into());
}

#[dq::actor(queue_name = "unique_work", max_retries = 0)]
fn work(token: String, n: u32) {
    record(&token, format!("run {n}"));
}

#[dq::actor(queue_name = "unique_fail", max_retries = 0)]
fn fail(token: String) -> Result<(), String> {
    record(&token, "failed".into());
    Err("boom".into())
}

#[dq::actor(
    queue_name = "unique_by_actor",
    unique_for = 60_000,
    unique_until = "started"
)]
fn by_actor(token: String) {
    record(&token, "ran".into());
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Stub,
    Redis,
}

async fn app_on(kind: Kind) -> App {
    let b = match kind {
        Kind::Stub => App::builder(StubBroker::new()),
        Kind::Redis => App::builder(
            RedisBrokerBuilder::default()
                .url(dq_test::require_redis())
                .namespace(dq_test::unique_name("unique-ns"))
                .build()
                .await
                .expect("Redis broker"),
        ),
    };
    b.middleware_arcs(dq::middleware::default_middleware())
        .build()
        .expect("app")
}

async fn worker(app: &App) -> Worker {
    let w = Worker::new(
        app.clone(),
        WorkerOptions {
            threads: 4,
            worker_timeout: Duration::from_millis(50),
            ..WorkerOptions::default()
        },
    );
    w.start().await.expect("worker starts");
    w
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    assert!(
        dq_test::wait_until_async(timeout, || std::future::ready(cond())).await,
        "timed out waiting for {what}"
    );
}

async fn locks(app: &App, queue: &str) -> u64 {
    app.broker().unique_locks(queue).await.expect("lock count")
}

async fn wait_locks(app: &App, queue: &str, want: u64, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = locks(app, queue).await;
        if n == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} holds {n} locks, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_work(app: &App, token: &str, n: u32, opts: SendOptions) -> dq::Sent<()> {
    app.scope(work::send_with_options(token.to_owned(), n, opts))
        .await
        .expect("send")
}

async fn send_hold(app: &App, token: &str, opts: SendOptions) -> dq::Sent<()> {
    app.scope(hold::send_with_options(token.to_owned(), opts))
        .await
        .expect("send")
}

/// 50 concurrent senders of one key: exactly one enqueued per key and TTL, the others told
/// the holder's id.
async fn concurrent_senders(kind: Kind) {
    let app = app_on(kind).await;
    let token = dq_test::unique_name("concurrent");
    let opts = SendOptions::new()
        .unique_for(Duration::from_secs(2))
        .unique_key(token.clone());
    for round in 0..2 {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (app, token, opts) = (app.clone(), token.clone(), opts.clone());
            tasks.push(tokio::spawn(async move {
                send_work(&app, &token, i, opts).await
            }));
        }
        let mut sent = Vec::new();
        for t in tasks {
            sent.push(t.await.unwrap());
        }
        let enqueued: Vec<&dq::Sent<()>> = sent
            .iter()
            .filter(|s| *s.outcome() == SendOutcome::Enqueued)
            .collect();
        assert_eq!(enqueued.len(), 1, "{kind:?} round {round}");
        let holder = enqueued[0].message_id.clone();
        for s in &sent {
            if s.message_id != holder {
                assert_eq!(s.duplicate_of(), Some(holder.as_str()), "{kind:?}");
            }
        }
        let stats = app.broker().stats("unique_work").await.unwrap();
        assert_eq!(stats.ready, round + 1, "{kind:?}: one message per round");
        assert_eq!(locks(&app, "unique_work").await, 1);
        // The lock expires after its TTL, and the next round takes it again.
        wait_locks(&app, "unique_work", 0, Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_stub() {
    concurrent_senders(Kind::Stub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_redis() {
    concurrent_senders(Kind::Redis).await;
}

/// Each release point: when the message finishes (success, and dead letter), when it starts,
/// and after the TTL only.
async fn release_points(kind: Kind) {
    let app = app_on(kind).await;
    let minute = Duration::from_secs(60);
    let finished = dq_test::unique_name("finished");
    let started = dq_test::unique_name("started");
    let ttl = dq_test::unique_name("ttl");
    let dead = dq_test::unique_name("dead");
    let finished_opts = SendOptions::new()
        .unique_for(minute)
        .unique_key(finished.clone());
    let started_opts = SendOptions::new()
        .unique_for(minute)
        .unique_until(UniqueUntil::Started)
        .unique_key(started.clone());
    let ttl_opts = SendOptions::new()
        .unique_for(Duration::from_secs(4))
        .unique_until(UniqueUntil::Ttl)
        .unique_key(ttl.clone());
    let dead_opts = SendOptions::new()
        .unique_for(minute)
        .unique_key(dead.clone());

    // Before any worker runs: the first send of each key is enqueued, the second refused.
    let f1 = send_hold(&app, &finished, finished_opts.clone()).await;
    let s1 = send_hold(&app, &started, started_opts.clone()).await;
    let t1 = send_work(&app, &ttl, 1, ttl_opts.clone()).await;
    let d1 = app
        .scope(fail::send_with_options(dead.clone(), dead_opts.clone()))
        .await
        .unwrap();
    for s in [&f1, &s1, &t1] {
        assert_eq!(*s.outcome(), SendOutcome::Enqueued, "{kind:?}");
    }
    assert_eq!(*d1.outcome(), SendOutcome::Enqueued);
    let again = send_hold(&app, &finished, finished_opts.clone()).await;
    assert_eq!(again.duplicate_of(), Some(f1.message_id.as_str()));
    let again = send_hold(&app, &started, started_opts.clone()).await;
    assert_eq!(again.duplicate_of(), Some(s1.message_id.as_str()));

    let w = worker(&app).await;
    let long = Duration::from_secs(20);

    // TTL: the message ran, and the lock is held all the same until it expires.
    wait_for("the ttl work", long, || !events(&ttl).is_empty()).await;
    let again = send_work(&app, &ttl, 2, ttl_opts.clone()).await;
    assert_eq!(
        again.duplicate_of(),
        Some(t1.message_id.as_str()),
        "{kind:?}"
    );

    // Started: released as the message starts, so a send while it runs is enqueued.
    wait_for("the started hold", long, || !events(&started).is_empty()).await;
    let s2 = send_hold(&app, &started, started_opts.clone()).await;
    assert_eq!(*s2.outcome(), SendOutcome::Enqueued, "{kind:?}");

    // Finished: still held while running, released once done.
    wait_for("the finished hold", long, || !events(&finished).is_empty()).await;
    let again = send_hold(&app, &finished, finished_opts.clone()).await;
    assert_eq!(
        again.duplicate_of(),
        Some(f1.message_id.as_str()),
        "{kind:?}"
    );
    release(&finished);
    wait_for("the finished hold to end", long, || {
        events(&finished).contains(&"done".to_owned())
    })
    .await;
    // (The second `started` released its key as it started.)
    wait_locks(&app, "unique_hold", 0, long).await;
    let f2 = send_hold(&app, &finished, finished_opts.clone()).await;
    assert_eq!(*f2.outcome(), SendOutcome::Enqueued, "{kind:?}");

    // Dead letter: a finished lock is released when the message is dead-lettered.
    wait_for("the failure", long, || !events(&dead).is_empty()).await;
    wait_locks(&app, "unique_fail", 0, long).await;
    let d2 = app
        .scope(fail::send_with_options(dead.clone(), dead_opts))
        .await
        .unwrap();
    assert_eq!(*d2.outcome(), SendOutcome::Enqueued, "{kind:?}");

    wait_locks(&app, "unique_work", 0, long).await;
    let t2 = send_work(&app, &ttl, 3, ttl_opts).await;
    assert_eq!(*t2.outcome(), SendOutcome::Enqueued);

    release(&started);
    wait_for("everything", long, || {
        events(&started).iter().filter(|e| *e == "done").count() == 2
            && events(&finished).iter().filter(|e| *e == "done").count() == 2
            && events(&ttl).len() == 2
            && events(&dead).len() == 2
    })
    .await;
    w.stop().await.unwrap();
    assert_eq!(events(&ttl), ["run 1", "run 3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_points_stub() {
    release_points(Kind::Stub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_points_redis() {
    release_points(Kind::Redis).await;
}

/// Debounce: each newer send replaces the older one, only the last runs; and with an explicit
/// delay, which the debounce keeps.
async fn debounce(kind: Kind) {
    let app = app_on(kind).await;
    let w = worker(&app).await;
    let token = dq_test::unique_name("debounce");
    let opts = SendOptions::new()
        .debounce(Duration::from_millis(800))
        .unique_key(token.clone());
    let mut sent: Vec<dq::Sent<()>> = Vec::new();
    for n in 0..5 {
        sent.push(send_work(&app, &token, n, opts.clone()).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(*sent[0].outcome(), SendOutcome::Enqueued, "{kind:?}");
    for pair in sent.windows(2) {
        assert_eq!(
            *pair[1].outcome(),
            SendOutcome::Replaced {
                previous: pair[0].message_id.clone()
            },
            "{kind:?}"
        );
    }
    // With its own delay: a later send with a shorter delay replaces it too.
    let other = dq_test::unique_name("debounce-delay");
    let delayed = SendOptions::new()
        .debounce(Duration::from_millis(300))
        .unique_key(other.clone());
    let a = send_work(
        &app,
        &other,
        10,
        delayed.clone().delay(Duration::from_secs(2)),
    )
    .await;
    let b = send_work(&app, &other, 11, delayed.delay(Duration::from_millis(200))).await;
    assert_eq!(*a.outcome(), SendOutcome::Enqueued);
    assert_eq!(
        *b.outcome(),
        SendOutcome::Replaced {
            previous: a.message_id.clone()
        }
    );
    let long = Duration::from_secs(20);
    wait_for("the last debounced run", long, || {
        events(&token) == ["run 4"] && events(&other) == ["run 11"]
    })
    .await;
    // Once the last has started, a newer send is queued as usual, not a replacement.
    let after = send_work(&app, &token, 5, opts).await;
    assert_eq!(*after.outcome(), SendOutcome::Enqueued, "{kind:?}");
    wait_for("the replaced one skipped", long, || {
        events(&token) == ["run 4", "run 5"]
    })
    .await;
    // The replaced message with the long delay comes up and is skipped, too.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let stats = app.broker().stats("unique_work").await.unwrap();
    w.stop().await.unwrap();
    assert_eq!(
        (stats.ready, stats.delayed, stats.dead),
        (0, 0, 0),
        "{kind:?}"
    );
    assert_eq!(events(&other), ["run 11"]);
    assert_eq!(events(&token), ["run 4", "run 5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_stub() {
    debounce(Kind::Stub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_redis() {
    debounce(Kind::Redis).await;
}

/// Throttle: at most one per window, delayed sends included.
async fn throttle(kind: Kind) {
    let app = app_on(kind).await;
    let w = worker(&app).await;
    let token = dq_test::unique_name("throttle");
    let opts = SendOptions::new()
        .throttle(Duration::from_millis(1500))
        .unique_key(token.clone())
        .delay(Duration::from_millis(200));
    let mut outcomes = Vec::new();
    for n in 0..6 {
        outcomes.push(send_work(&app, &token, n, opts.clone()).await);
    }
    assert_eq!(*outcomes[0].outcome(), SendOutcome::Enqueued, "{kind:?}");
    for s in &outcomes[1..] {
        assert_eq!(s.duplicate_of(), Some(outcomes[0].message_id.as_str()));
    }
    let long = Duration::from_secs(20);
    wait_for("the first run", long, || events(&token) == ["run 0"]).await;
    // Still inside the window after the run: refused.
    wait_locks(&app, "unique_work", 0, long).await;
    let next = send_work(&app, &token, 7, opts).await;
    assert_eq!(*next.outcome(), SendOutcome::Enqueued, "{kind:?}");
    wait_for("the second run", long, || {
        events(&token) == ["run 0", "run 7"]
    })
    .await;
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_stub() {
    throttle(Kind::Stub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_redis() {
    throttle(Kind::Redis).await;
}

/// Actor options make every send of the actor unique; a bad option is a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_options_and_bad_options() {
    let app = app_on(Kind::Stub).await;
    let token = dq_test::unique_name("by-actor");
    let first = app.scope(by_actor::send(token.clone())).await.unwrap();
    let second = app.scope(by_actor::send(token.clone())).await.unwrap();
    assert_eq!(*first.outcome(), SendOutcome::Enqueued);
    assert_eq!(second.duplicate_of(), Some(first.message_id.as_str()));
    // The default key is the call's: other arguments, another key.
    let other = app
        .scope(by_actor::send(format!("{token}-2")))
        .await
        .unwrap();
    assert_eq!(*other.outcome(), SendOutcome::Enqueued);
    let w = worker(&app).await;
    wait_for("both", Duration::from_secs(20), || {
        events(&token) == ["ran"] && events(&format!("{token}-2")) == ["ran"]
    })
    .await;
    w.stop().await.unwrap();
    // Released as they started.
    let third = app.scope(by_actor::send(token.clone())).await.unwrap();
    assert_eq!(*third.outcome(), SendOutcome::Enqueued);

    let no_ttl = SendOptions::new().unique_key("k");
    let e = app
        .scope(work::send_with_options("x".into(), 1, no_ttl))
        .await
        .unwrap_err();
    assert!(matches!(e, dq::Error::InvalidUniqueOption { .. }), "{e}");
}

/// A worker process SIGKILLed while it runs a message holding a `finished` lock: the lock
/// expires after its TTL (nobody releases it), and the message itself is recovered from the
/// dead worker and run by another one.
///
/// The test runs its own binary again as the worker to kill (`DQ_UNIQUE_VICTIM` set).
#[test]
fn sigkill_worker_holding_a_finished_lock() {
    if let Ok(namespace) = std::env::var("DQ_UNIQUE_VICTIM") {
        victim(&namespace);
        return;
    }
    let url = dq_test::require_redis();
    let namespace = dq_test::unique_name("unique-kill");
    let token = dq_test::unique_name("killed");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = |heartbeat: Duration| {
        let (url, namespace) = (url.clone(), namespace.clone());
        async move {
            RedisBrokerBuilder::default()
                .url(url)
                .namespace(namespace)
                .heartbeat_timeout(heartbeat)
                .maintenance_chance(dq::redis::MAINTENANCE_SCALE)
                .build()
                .await
                .expect("Redis broker")
        }
    };
    let app = rt.block_on(async {
        App::builder(broker(Duration::from_secs(2)).await)
            .middleware_arcs(dq::middleware::default_middleware())
            .build()
            .unwrap()
    });
    let ttl = Duration::from_secs(3);
    let opts = SendOptions::new().unique_for(ttl).unique_key(token.clone());
    let first = rt.block_on(send_work_blocking(&app, &token, opts.clone()));
    assert_eq!(*first.outcome(), SendOutcome::Enqueued);

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_worker_holding_a_finished_lock",
            "--nocapture",
        ])
        .env("DQ_UNIQUE_VICTIM", &namespace)
        .env("DQ_UNIQUE_TOKEN", &token)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the victim worker");
    // The victim takes the message into its ack set, runs it and hangs.
    let marked = dq_test::wait_until(Duration::from_secs(30), || {
        rt.block_on(app.broker().stats("unique_hold"))
            .is_ok_and(|s| s.in_flight == 1 && s.ready == 0)
    });
    assert!(marked, "the victim took the message");
    child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
    child.wait().unwrap();

    rt.block_on(async {
        // Still held: nobody released it.
        assert_eq!(locks(&app, "unique_hold").await, 1);
        let dup = send_work_blocking(&app, &token, opts.clone()).await;
        assert_eq!(dup.duplicate_of(), Some(first.message_id.as_str()));
        // Expires by its TTL.
        wait_locks(&app, "unique_hold", 0, ttl + Duration::from_secs(5)).await;
        // The message is recovered from the dead worker's ack set and runs here.
        release(&token);
        let w = worker(&app).await;
        wait_for("the recovered message", Duration::from_secs(30), || {
            events(&token).contains(&"done".to_owned())
        })
        .await;
        w.stop().await.unwrap();
        assert_eq!(
            app.broker().stats("unique_hold").await.unwrap(),
            dq::broker::QueueStats::default()
        );
        // And the key is free again.
        let again = send_work_blocking(&app, &token, opts).await;
        assert_eq!(*again.outcome(), SendOutcome::Enqueued);
    });
}

async fn send_work_blocking(app: &App, token: &str, opts: SendOptions) -> dq::Sent<()> {
    send_hold(app, token, opts).await
}

/// The worker the test kills: runs `hold`, which never finishes here.
fn victim(namespace: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = RedisBrokerBuilder::default()
            .url(dq_test::require_redis())
            .namespace(namespace)
            .heartbeat_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("Redis broker");
        let app = App::builder(broker)
            .middleware_arcs(dq::middleware::default_middleware())
            .build()
            .unwrap();
        let w = Worker::new(
            app,
            WorkerOptions {
                threads: 1,
                queues: Some(vec!["unique_hold".into()]),
                worker_timeout: Duration::from_millis(50),
                ..WorkerOptions::default()
            },
        );
        w.start().await.expect("victim starts");
        std::future::pending::<()>().await;
    });
}
