use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dq_broker_stub::StubBroker;
use dq_core::__private::ArgReader;
use dq_core::{
    async_trait, Actor, ActorError, ActorOptions, App, ArgsError, Broker, Hooks, Invocation, Job,
    Message, Middleware, MiddlewareError, Outcome, SendOptions,
};
use dq_worker::{Worker, WorkerOptions};
use serde_json::{json, Value};

fn actor(
    name: &str,
    queue: &str,
    handler: dq_core::Handler,
    f: impl FnOnce(&mut ActorOptions),
) -> Actor {
    let mut options = ActorOptions {
        queue_name: queue.to_owned(),
        ..Default::default()
    };
    f(&mut options);
    Actor::new(name.to_owned(), options, handler)
}

fn app(broker: &StubBroker, actors: Vec<Actor>) -> App {
    let mut b = App::builder(broker.clone())
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .middleware(dq_middleware::CurrentMessage);
    for a in actors {
        b = b.actor(a);
    }
    b.build().unwrap()
}

fn msg(queue: &str, actor: &str, args: Value) -> Message {
    Message::new(queue, actor, &args, &json!({})).unwrap()
}

async fn join(broker: &StubBroker, queue: &str) {
    broker
        .join(queue, Some(Duration::from_secs(20)))
        .await
        .unwrap();
}

fn opts(threads: usize) -> WorkerOptions {
    WorkerOptions {
        threads,
        worker_timeout: Duration::from_millis(100),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Priority: the learner's experiment. One thread, 100 queued low-priority sleeps, one
// high-priority greeting: the greeting runs as soon as the slot frees up.

static ORDER: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

fn sleepy(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        ORDER.lock().unwrap().push("sleep");
        std::thread::sleep(Duration::from_millis(20));
        Ok(Value::Null)
    })))
}

fn greet(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        ORDER.lock().unwrap().push("hello");
        Ok(Value::Null)
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_message_runs_next_with_one_thread() {
    let broker = StubBroker::new();
    let q = "prio";
    let app = app(
        &broker,
        vec![
            actor("sleepy", q, sleepy, |o| o.priority = 100),
            actor("greet", q, greet, |o| o.priority = 0),
        ],
    );
    for _ in 0..100 {
        app.enqueue(msg(q, "sleepy", json!([])), None)
            .await
            .unwrap();
    }
    app.enqueue(msg(q, "greet", json!([])), None).await.unwrap();
    let worker = Worker::new(
        app,
        WorkerOptions {
            queue_prefetch: Some(200),
            ..opts(1)
        },
    );
    worker.start().await.unwrap();
    join(&broker, q).await;
    worker.stop().await.unwrap();
    let order = ORDER.lock().unwrap().clone();
    assert_eq!(order.len(), 101);
    let pos = order.iter().position(|s| *s == "hello").unwrap();
    // At most the sleep that was already running when the greeting arrived goes first.
    assert!(pos <= 1, "greeting ran at position {pos}");
}

// ---------------------------------------------------------------------------------------------
// Delays are honoured: never early.

static DELAY_RAN: Mutex<Option<Instant>> = Mutex::new(None);

fn mark_delay(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        *DELAY_RAN.lock().unwrap() = Some(Instant::now());
        Ok(Value::Null)
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_message_is_not_processed_early() {
    let broker = StubBroker::new();
    let q = "delays";
    let app = app(&broker, vec![actor("mark_delay", q, mark_delay, |_| {})]);
    let worker = Worker::new(app.clone(), opts(2));
    worker.start().await.unwrap();
    let sent = Instant::now();
    let m = app
        .enqueue(
            msg(q, "mark_delay", json!([])),
            Some(Duration::from_millis(400)),
        )
        .await
        .unwrap();
    assert_eq!(m.queue_name, "delays.DQ");
    assert!(m.options.eta().is_some());
    join(&broker, q).await;
    worker.stop().await.unwrap();
    let ran = DELAY_RAN.lock().unwrap().expect("delayed actor ran");
    assert!(
        ran.duration_since(sent) >= Duration::from_millis(400),
        "ran after {:?}",
        ran.duration_since(sent)
    );
}

// ---------------------------------------------------------------------------------------------
// Retries: failures are retried with exponential backoff, then succeed; the count and the
// waits follow Dramatiq's formula.

static FLAKY_RUNS: Mutex<Vec<(Instant, u32)>> = Mutex::new(Vec::new());

fn flaky(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        let retries = dq_core::current_message()
            .map(|m| m.options.retries())
            .unwrap_or(99);
        let mut runs = FLAKY_RUNS.lock().unwrap();
        runs.push((Instant::now(), retries));
        if runs.len() < 3 {
            Err(ActorError::from_error(std::io::Error::other("transient")))
        } else {
            Ok(json!("done"))
        }
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_then_succeed() {
    let broker = StubBroker::new();
    let q = "retries";
    let app = app(
        &broker,
        vec![actor("flaky", q, flaky, |o| {
            o.min_backoff = Some(100);
            o.max_retries = Some(Some(5));
        })],
    );
    let worker = Worker::new(app.clone(), opts(2));
    worker.start().await.unwrap();
    app.enqueue(msg(q, "flaky", json!([])), None).await.unwrap();
    join(&broker, q).await;
    worker.stop().await.unwrap();
    let runs = FLAKY_RUNS.lock().unwrap().clone();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs.iter().map(|r| r.1).collect::<Vec<_>>(), vec![0, 1, 2]);
    // Retry r waits at least min_backoff * 2^r (then up to twice that).
    assert!(runs[1].0 - runs[0].0 >= Duration::from_millis(100));
    assert!(runs[2].0 - runs[1].0 >= Duration::from_millis(200));
    assert_eq!(broker.stats(q).await.unwrap().dead, 0);
}

static DOOMED_RUNS: AtomicUsize = AtomicUsize::new(0);

fn doomed(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        DOOMED_RUNS.fetch_add(1, Ordering::SeqCst);
        Err(ActorError::from_error(std::io::Error::other(
            "always broken",
        )))
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_dead_letter_with_reason() {
    let broker = StubBroker::new();
    let q = "exhaust";
    let app = app(
        &broker,
        vec![actor("doomed", q, doomed, |o| {
            o.min_backoff = Some(10);
            o.max_retries = Some(Some(2));
        })],
    );
    let worker = Worker::new(app.clone(), opts(2));
    worker.start().await.unwrap();
    let sent = app
        .enqueue(msg(q, "doomed", json!([])), None)
        .await
        .unwrap();
    let _ = broker.join(q, Some(Duration::from_secs(20))).await;
    dq_test_wait(|| DOOMED_RUNS.load(Ordering::SeqCst) == 3).await;
    let dead = wait_dead(&broker, q, 1).await;
    worker.stop().await.unwrap();
    // Two retries allow three runs.
    assert_eq!(DOOMED_RUNS.load(Ordering::SeqCst), 3);
    let body = Message::decode(&dead[0].body).unwrap();
    assert_eq!(body.message_id, sent.message_id);
    let reason = dead[0].reason.clone().unwrap();
    assert!(reason.to_lowercase().contains("retr"), "reason: {reason}");
}

async fn dq_test_wait(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_dead(broker: &StubBroker, q: &str, n: usize) -> Vec<dq_core::DeadLetter> {
    let start = Instant::now();
    loop {
        let dead = broker.dead_letters(q, 100).await.unwrap();
        if dead.len() >= n {
            return dead;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "expected {n} dead letters, have {}",
            dead.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input never crashes the worker and never disappears.

static GOOD_RUNS: AtomicUsize = AtomicUsize::new(0);

fn typed(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    let mut r = ArgReader::new(m)?;
    let n: i64 = r.take("n")?;
    r.finish(&["n"])?;
    Ok(Invocation::Sync(Box::new(move || {
        GOOD_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(json!(n))
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_dead_lettered_and_the_worker_goes_on() {
    let broker = StubBroker::new();
    let q = "badinput";
    let app = App::builder(broker.clone())
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .actor(actor("typed", q, typed, |_| {}))
        .max_message_size(2048)
        .build()
        .unwrap();
    let worker = Worker::new(app.clone(), opts(2));
    worker.start().await.unwrap();
    broker.enqueue_raw(q, b"{not json".to_vec()).unwrap();
    broker
        .enqueue_raw(q, msg(q, "nobody_home", json!([])).encode())
        .unwrap();
    broker
        .enqueue_raw(q, msg(q, "typed", json!(["not a number"])).encode())
        .unwrap();
    broker
        .enqueue_raw(q, msg(q, "typed", json!(["x".repeat(4000)])).encode())
        .unwrap();
    app.enqueue(msg(q, "typed", json!([7])), None)
        .await
        .unwrap();
    let dead = wait_dead(&broker, q, 4).await;
    dq_test_wait(|| GOOD_RUNS.load(Ordering::SeqCst) == 1).await;
    worker.stop().await.unwrap();
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| d.reason.clone().unwrap_or_default())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("undecodable")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("nobody_home")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("invalid arguments")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("over the limit")),
        "{reasons:?}"
    );
    assert_eq!(GOOD_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(broker.stats(q).await.unwrap().ready, 0);
}

// ---------------------------------------------------------------------------------------------
// Time limits: sync actors see it cooperatively and fail at the deadline; async ones are cancelled.

static SYNC_CHECKED_OUT: AtomicBool = AtomicBool::new(false);
static SYNC_STUBBORN_DONE: AtomicBool = AtomicBool::new(false);
static ASYNC_DROPPED: AtomicBool = AtomicBool::new(false);
static ASYNC_FINISHED: AtomicBool = AtomicBool::new(false);

fn cooperative(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        for _ in 0..500 {
            if let Err(e) = dq_core::check() {
                SYNC_CHECKED_OUT.store(true, Ordering::SeqCst);
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Value::Null)
    })))
}

fn stubborn(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        std::thread::sleep(Duration::from_millis(1500));
        SYNC_STUBBORN_DONE.store(true, Ordering::SeqCst);
        Ok(Value::Null)
    })))
}

struct DropFlag;
impl Drop for DropFlag {
    fn drop(&mut self) {
        ASYNC_DROPPED.store(true, Ordering::SeqCst);
    }
}

fn sleeper(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Async(Box::pin(async {
        let _flag = DropFlag;
        tokio::time::sleep(Duration::from_secs(30)).await;
        ASYNC_FINISHED.store(true, Ordering::SeqCst);
        Ok(Value::Null)
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limits_fire_on_sync_and_async_actors() {
    let broker = StubBroker::new();
    let q = "limits";
    let limited = |o: &mut ActorOptions| {
        o.time_limit = Some(200);
        o.max_retries = Some(Some(0));
    };
    let app = app(
        &broker,
        vec![
            actor("cooperative", q, cooperative, limited),
            actor("stubborn", q, stubborn, limited),
            actor("sleeper", q, sleeper, limited),
        ],
    );
    let worker = Worker::new(app.clone(), opts(4));
    worker.start().await.unwrap();
    for name in ["cooperative", "stubborn", "sleeper"] {
        app.enqueue(msg(q, name, json!([])), None).await.unwrap();
    }
    let dead = wait_dead(&broker, q, 3).await;
    // The stubborn thread is still sleeping: its message failed at the deadline regardless.
    assert!(!SYNC_STUBBORN_DONE.load(Ordering::SeqCst));
    // The cooperative actor sees the limit at its next check (it checks every 10 ms), which may
    // come just after its message was failed at the deadline.
    let seen = tokio::time::Instant::now() + Duration::from_secs(10);
    while !SYNC_CHECKED_OUT.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < seen,
            "the sync actor never saw its time limit through check()"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ASYNC_DROPPED.load(Ordering::SeqCst));
    assert!(!ASYNC_FINISHED.load(Ordering::SeqCst));
    for d in &dead {
        let m = Message::decode(&d.body).unwrap();
        assert!(["cooperative", "stubborn", "sleeper"].contains(&m.actor_name.as_str()));
    }
    worker.stop().await.unwrap();
    assert!(
        SYNC_STUBBORN_DONE.load(Ordering::SeqCst),
        "stop waits for the running thread"
    );
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown requeues what was prefetched but not started; running work finishes.

static SLOW_DONE: AtomicUsize = AtomicUsize::new(0);
static SLOW_STARTED: AtomicUsize = AtomicUsize::new(0);

fn slow(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        SLOW_STARTED.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        SLOW_DONE.fetch_add(1, Ordering::SeqCst);
        Ok(Value::Null)
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_requeues_prefetched_messages_and_finishes_running_ones() {
    let broker = StubBroker::new();
    let q = "shutdown";
    let app = app(&broker, vec![actor("slow", q, slow, |_| {})]);
    for _ in 0..6 {
        app.enqueue(msg(q, "slow", json!([])), None).await.unwrap();
    }
    let worker = Worker::new(
        app.clone(),
        WorkerOptions {
            queue_prefetch: Some(10),
            ..opts(1)
        },
    );
    worker.start().await.unwrap();
    dq_test_wait(|| SLOW_STARTED.load(Ordering::SeqCst) == 1).await;
    worker.stop().await.unwrap();
    let started = SLOW_STARTED.load(Ordering::SeqCst);
    assert_eq!(
        SLOW_DONE.load(Ordering::SeqCst),
        started,
        "running work finished"
    );
    let stats = broker.stats(q).await.unwrap();
    assert_eq!(
        stats.ready as usize,
        6 - started,
        "the rest is back on the queue"
    );
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.dead, 0);
}

static NOTIFIED: AtomicBool = AtomicBool::new(false);

fn long_async(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Async(Box::pin(async {
        NOTIFIED.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(Value::Null)
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_notifications_interrupt_and_retry() {
    let broker = StubBroker::new();
    let q = "notify";
    let app = app(
        &broker,
        vec![actor("long_async", q, long_async, |o| {
            o.notify_shutdown = Some(true)
        })],
    );
    let worker = Worker::new(app.clone(), opts(2));
    worker.start().await.unwrap();
    app.enqueue(msg(q, "long_async", json!([])), None)
        .await
        .unwrap();
    dq_test_wait(|| NOTIFIED.load(Ordering::SeqCst)).await;
    let t = Instant::now();
    worker.stop().await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the actor was interrupted, not waited for"
    );
    // Interrupted by Shutdown: a failure, so Retries put it on the delay queue.
    let stats = broker.stats(q).await.unwrap();
    assert_eq!(stats.delayed, 1);
    assert_eq!(stats.ready + stats.dead, 0);
}

// ---------------------------------------------------------------------------------------------
// Panics are failures; an after-process hook error means requeue, not ack.

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn panicky(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        panic!("kaboom");
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_actor_is_a_failure() {
    let broker = StubBroker::new();
    let q = "panics";
    let app = app(
        &broker,
        vec![actor("panicky", q, panicky, |o| {
            o.max_retries = Some(Some(0))
        })],
    );
    let worker = Worker::new(app.clone(), opts(2));
    worker.start().await.unwrap();
    app.enqueue(msg(q, "panicky", json!([])), None)
        .await
        .unwrap();
    let dead = wait_dead(&broker, q, 1).await;
    worker.stop().await.unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 1);
    assert!(dead[0].reason.is_some());
}

static HOOK_FAILS_LEFT: AtomicUsize = AtomicUsize::new(1);
static FRAGILE_RUNS: AtomicUsize = AtomicUsize::new(0);

struct FailOnce;

#[async_trait]
impl Middleware for FailOnce {
    fn name(&self) -> &str {
        "FailOnce"
    }
    fn hooks(&self) -> Hooks {
        Hooks::AFTER_PROCESS
    }
    async fn after_process(
        &self,
        _: &App,
        _: &mut Job,
        _: &Outcome,
    ) -> Result<(), MiddlewareError> {
        if HOOK_FAILS_LEFT
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(MiddlewareError::new("FailOnce", "result store unavailable"));
        }
        Ok(())
    }
}

fn fragile(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        FRAGILE_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(Value::Null)
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_after_process_error_requeues_instead_of_acking() {
    let broker = StubBroker::new();
    let q = "hookfail";
    let app = App::builder(broker.clone())
        .without_linked_actors()
        .middleware(FailOnce)
        .actor(actor("fragile", q, fragile, |_| {}))
        .build()
        .unwrap();
    let worker = Worker::new(app.clone(), opts(1));
    worker.start().await.unwrap();
    app.enqueue(msg(q, "fragile", json!([])), None)
        .await
        .unwrap();
    join(&broker, q).await;
    worker.stop().await.unwrap();
    assert_eq!(
        FRAGILE_RUNS.load(Ordering::SeqCst),
        2,
        "requeued once, then acked"
    );
}

// ---------------------------------------------------------------------------------------------
// Async actors run concurrently up to `threads`, and on_success callbacks fire.

static CONCURRENT: AtomicUsize = AtomicUsize::new(0);
static MAX_CONCURRENT: AtomicUsize = AtomicUsize::new(0);
static CALLBACKS: Mutex<Vec<Value>> = Mutex::new(Vec::new());

fn waiter(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Async(Box::pin(async {
        let now = CONCURRENT.fetch_add(1, Ordering::SeqCst) + 1;
        MAX_CONCURRENT.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        CONCURRENT.fetch_sub(1, Ordering::SeqCst);
        Ok(json!(1))
    })))
}

fn on_done(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    let mut r = ArgReader::new(m)?;
    let message: Value = r.take("message")?;
    let result: Value = r.take("result")?;
    r.finish(&["message", "result"])?;
    Ok(Invocation::Sync(Box::new(move || {
        CALLBACKS
            .lock()
            .unwrap()
            .push(json!([message["actor_name"], result]));
        Ok(Value::Null)
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_actors_are_bounded_by_threads_and_callbacks_run() {
    let broker = StubBroker::new();
    let q = "asyncs";
    let app = app(
        &broker,
        vec![
            actor("waiter", q, waiter, |_| {}),
            actor("on_done", q, on_done, |_| {}),
        ],
    );
    let worker = Worker::new(
        app.clone(),
        WorkerOptions {
            queue_prefetch: Some(100),
            ..opts(5)
        },
    );
    worker.start().await.unwrap();
    let mut ms = Vec::new();
    for _ in 0..20 {
        let mut m = msg(q, "waiter", json!([]));
        SendOptions::new()
            .on_success("on_done")
            .apply_to_message(&mut m);
        ms.push(m);
    }
    app.enqueue_many(ms).await.unwrap();
    join(&broker, q).await;
    worker.stop().await.unwrap();
    assert_eq!(MAX_CONCURRENT.load(Ordering::SeqCst), 5);
    let cbs = CALLBACKS.lock().unwrap().clone();
    assert_eq!(cbs.len(), 20);
    assert!(cbs.iter().all(|c| c == &json!(["waiter", 1])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_without_queues_is_an_error() {
    let broker = StubBroker::new();
    let app = App::builder(broker)
        .without_linked_actors()
        .build()
        .unwrap();
    let worker = Worker::new(app, opts(1));
    let err = worker.start().await.unwrap_err();
    assert!(
        matches!(err, dq_worker::WorkerError::NoQueues { .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// A worker that fails to start leaves nothing running: a failing declare hook on the second queue
// does not leave the first queue's consumer fetching, and a failing after_worker_boot stops what
// had started. Either way the messages stay on the broker for another worker.

struct FailingBoot {
    declare_queue: Option<&'static str>,
    after_boot: bool,
}

#[async_trait]
impl Middleware for FailingBoot {
    fn name(&self) -> &str {
        "FailingBoot"
    }
    fn hooks(&self) -> Hooks {
        Hooks::DECLARE | Hooks::WORKER
    }
    async fn after_declare_queue(&self, _app: &App, queue: &str) -> Result<(), MiddlewareError> {
        match self.declare_queue {
            Some(q) if q == queue => Err(MiddlewareError::new(
                "FailingBoot",
                format!("cannot declare {queue}"),
            )),
            _ => Ok(()),
        }
    }
    async fn after_worker_boot(&self, _app: &App) -> Result<(), MiddlewareError> {
        if self.after_boot {
            return Err(MiddlewareError::new("FailingBoot", "metrics port is taken"));
        }
        Ok(())
    }
}

fn never_runs(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        panic!("a worker that failed to start ran a message")
    })))
}

#[tokio::test]
async fn a_worker_that_fails_to_start_leaves_nothing_running() {
    for (declare_queue, after_boot) in [(Some("fs-b"), false), (None, true)] {
        let broker = StubBroker::new();
        let app = App::builder(broker.clone())
            .without_linked_actors()
            .middleware(FailingBoot {
                declare_queue,
                after_boot,
            })
            .actor(actor("in_a", "fs-a", never_runs, |_| {}))
            .actor(actor("in_b", "fs-b", never_runs, |_| {}))
            .build()
            .unwrap();
        let worker = Worker::new(app.clone(), opts(2));
        let err = worker.start().await.unwrap_err();
        assert!(
            matches!(err, dq_worker::WorkerError::Middleware(_)),
            "{err}"
        );
        app.enqueue(msg("fs-a", "in_a", json!([])), None)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stats = broker.stats("fs-a").await.unwrap();
        assert_eq!(
            (stats.ready, stats.in_flight),
            (1, 0),
            "a consumer was left fetching after {err}"
        );
        if after_boot {
            // Stopped already.
            assert!(worker.stop().await.is_err());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// An around_process hook that changes a call's kind: the call still runs where its new kind
// needs (a future polled on the thread that holds the slot, a blocking fn on a worker thread),
// with its time limit, and is settled once.

static SWAPPED_RUNS: Mutex<Vec<(&'static str, String)>> = Mutex::new(Vec::new());

fn was_sync(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| {
        SWAPPED_RUNS
            .lock()
            .unwrap()
            .push(("was_sync", thread_name()));
        Ok(json!(1))
    })))
}

fn was_async(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Async(Box::pin(async {
        SWAPPED_RUNS
            .lock()
            .unwrap()
            .push(("was_async", thread_name()));
        Ok(json!(2))
    })))
}

fn slow_was_async(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Async(Box::pin(async {
        // Now blocking on a worker thread, it sees its time limit only through check().
        for _ in 0..3000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            dq_core::check()?;
        }
        Ok(Value::Null)
    })))
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or_default().to_owned()
}

/// Turns blocking calls into futures and futures into blocking calls.
struct SwapKinds;

#[async_trait]
impl Middleware for SwapKinds {
    fn name(&self) -> &str {
        "SwapKinds"
    }
    fn hooks(&self) -> Hooks {
        Hooks::AROUND_PROCESS
    }
    fn around_process(&self, _: &Job, call: Invocation) -> Invocation {
        match call {
            Invocation::Sync(f) => Invocation::Async(Box::pin(async move { f() })),
            Invocation::Async(fut) => Invocation::Sync(Box::new(move || {
                tokio::runtime::Handle::current().block_on(fut)
            })),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_kind_a_hook_changed_still_runs_and_settles_once() {
    let broker = StubBroker::new();
    let q = "swapkinds";
    let app = App::builder(broker.clone())
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .middleware(SwapKinds)
        .actor(actor("was_sync", q, was_sync, |_| {}))
        .actor(actor("was_async", q, was_async, |_| {}))
        .actor(actor("slow_was_async", q, slow_was_async, |o| {
            o.time_limit = Some(200);
            o.max_retries = Some(Some(0));
        }))
        .build()
        .unwrap();
    let worker = Worker::new(app.clone(), opts(2));
    worker.start().await.unwrap();
    for name in ["was_sync", "was_async", "slow_was_async"] {
        app.enqueue(msg(q, name, json!([])), None).await.unwrap();
    }
    let dead = wait_dead(&broker, q, 1).await;
    dq_test_wait(|| SWAPPED_RUNS.lock().unwrap().len() == 2).await;
    worker.join().await;
    worker.stop().await.unwrap();
    let runs = SWAPPED_RUNS.lock().unwrap().clone();
    assert_eq!(runs.len(), 2, "{runs:?}");
    // Both ran on the worker's own threads: the sync actor's future was polled on the thread
    // that took it, the async actor's now-blocking call was handed to a thread.
    for (name, thread) in &runs {
        assert!(thread.starts_with("dq-worker-"), "{name} ran on {thread:?}");
    }
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("TimeLimitExceeded"),
        "{:?}",
        dead[0].reason
    );
    let stats = broker.stats(q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.in_flight, stats.dead),
        (0, 0, 1),
        "{stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Broker priority: a backlog of 10,000 messages at three levels, consumed with a prefetch of 16,
// runs level by level, FIFO within each, up to the slack of what the worker held.

static BACKLOG_ORDER: Mutex<Vec<(u8, u64)>> = Mutex::new(Vec::new());

fn record_level(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    let (seq,): (u64,) =
        serde_json::from_str(m.args.get()).map_err(|e| ArgsError::Malformed(e.to_string()))?;
    let level = m.options.broker_priority().unwrap_or(0);
    Ok(Invocation::Sync(Box::new(move || {
        BACKLOG_ORDER.lock().unwrap().push((level, seq));
        Ok(Value::Null)
    })))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_priority_orders_a_backlog_with_a_small_prefetch() {
    const BACKLOG: u64 = 10_000;
    const PREFETCH: usize = 16;
    let broker = StubBroker::with_max_priority(10);
    let q = "prio-backlog";
    let app = app(
        &broker,
        vec![actor("record_level", q, record_level, |_| {})],
    );
    let levels = [0u8, 5, 9];
    let messages: Vec<Message> = (0..BACKLOG)
        .map(|i| {
            let mut m = msg(q, "record_level", json!([i]));
            let level = levels[(i % 3) as usize];
            if level > 0 {
                SendOptions::default()
                    .broker_priority(level)
                    .apply_to_message(&mut m);
            }
            m
        })
        .collect();
    app.enqueue_many(messages).await.unwrap();
    let stats = broker.stats(q).await.unwrap();
    assert_eq!((stats.ready, stats.prioritized), (BACKLOG, 6_666));
    let worker = Worker::new(
        app,
        WorkerOptions {
            queue_prefetch: Some(PREFETCH),
            // One thread: with more, a message handed to a thread that is still waking up is
            // overtaken by what the others run meanwhile, which is the worker's doing, not the
            // broker's.
            ..opts(1)
        },
    );
    worker.start().await.unwrap();
    join(&broker, q).await;
    worker.stop().await.unwrap();
    let order = BACKLOG_ORDER.lock().unwrap().clone();
    check_priority_order(&order, BACKLOG as usize, PREFETCH);
}

/// Every message ran once, and whatever ran `slack` or more places before a message is of a
/// level at least as high and, of the same level, was sent before it: priority order and FIFO
/// within a level up to the slack of what a worker holds at once.
fn check_priority_order(order: &[(u8, u64)], total: usize, slack: usize) {
    assert_eq!(order.len(), total);
    let mut seen: Vec<u64> = order.iter().map(|(_, s)| *s).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), total, "a message ran twice or never");
    // Over the messages more than `slack` places back: the lowest level, and the highest
    // sequence number of each level.
    let mut lowest = u8::MAX;
    let mut last_seq: std::collections::HashMap<u8, u64> = std::collections::HashMap::new();
    for (i, &(level, seq)) in order.iter().enumerate() {
        if i >= slack {
            let (l, s) = order[i - slack];
            lowest = lowest.min(l);
            let e = last_seq.entry(l).or_insert(s);
            *e = (*e).max(s);
        }
        assert!(
            lowest >= level,
            "message {seq} of level {level} ran at {i}, more than {slack} places after one of level {lowest}"
        );
        if let Some(&before) = last_seq.get(&level) {
            assert!(
                before < seq,
                "message {seq} of level {level} ran at {i}, more than {slack} places after {before}"
            );
        }
    }
}
