//! The Abortable middleware in a worker: cancelled messages are skipped, running ones stopped,
//! on the stub broker with the memory and Redis backends, and on a RedisBroker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dq_abort::{
    AbortMode, AbortOptions, Abortable, Event, EventBackend, MemoryBackend, RedisBackend,
};
use dq_broker_stub::{JoinOptions, StubBroker};
use dq_core::{
    __private::ArgReader, group, pipeline, Actor, ActorOptions, App, ArgsError, Handler,
    Invocation, Message, Middleware,
};
use dq_results::{Error as ResultError, MessageResult, ResultBackend, Results};
use serde_json::{json, Value};

/// What each test's actors did, by the tag in their first argument.
static SEEN: Mutex<Option<HashMap<String, Vec<&'static str>>>> = Mutex::new(None);

fn record(tag: &str, what: &'static str) {
    SEEN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(tag.to_owned())
        .or_default()
        .push(what);
}

fn seen(tag: &str) -> Vec<&'static str> {
    SEEN.lock()
        .unwrap()
        .as_ref()
        .and_then(|s| s.get(tag).cloned())
        .unwrap_or_default()
}

async fn wait_seen(tag: &str, what: &'static str) {
    assert!(
        dq_test::wait_until_async(Duration::from_secs(20), || async {
            seen(tag).contains(&what)
        })
        .await,
        "{tag}: never saw {what:?}; saw {:?}",
        seen(tag)
    );
}

fn tag_of(m: &Message) -> Result<String, ArgsError> {
    let mut r = ArgReader::new(m)?;
    let tag: String = r.take("tag")?;
    r.finish(&["tag"])?;
    Ok(tag)
}

/// Records "ran" and returns at once.
fn quick(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    let tag = tag_of(m)?;
    Ok(Invocation::Sync(Box::new(move || {
        record(&tag, "ran");
        Ok(json!(tag))
    })))
}

/// Async: records "started", then sleeps a minute unless aborted; records "dropped" when its
/// future is dropped before the end.
fn sleepy_async(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    let tag = tag_of(m)?;
    Ok(Invocation::Async(Box::pin(async move {
        struct Dropped(String, bool);
        impl Drop for Dropped {
            fn drop(&mut self) {
                if !self.1 {
                    record(&self.0, "dropped");
                }
            }
        }
        let mut guard = Dropped(tag.clone(), false);
        record(&tag, "started");
        tokio::time::sleep(Duration::from_secs(60)).await;
        guard.1 = true;
        record(&tag, "finished");
        Ok(Value::Null)
    })))
}

/// Sync: records "started", then checks every 10 ms for a minute; records the error `check`
/// returned.
fn sleepy_sync(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    let tag = tag_of(m)?;
    Ok(Invocation::Sync(Box::new(move || {
        record(&tag, "started");
        for _ in 0..6000 {
            if let Err(e) = dq_core::check() {
                if e.type_name() == "Abort" {
                    record(&tag, "check: Abort");
                }
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        record(&tag, "finished");
        Ok(Value::Null)
    })))
}

/// Async: winds down when an abort with a grace period is requested, and returns "saved".
fn graceful(m: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    let tag = tag_of(m)?;
    Ok(Invocation::Async(Box::pin(async move {
        record(&tag, "started");
        for _ in 0..6000 {
            if let Some(left) = dq_abort::abort_requested() {
                if left > Duration::ZERO {
                    record(&tag, "abort requested");
                    return Ok(json!("saved"));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(json!("finished"))
    })))
}

fn actor(name: &str, queue: &str, handler: Handler, f: impl FnOnce(&mut ActorOptions)) -> Actor {
    let mut options = ActorOptions {
        queue_name: queue.to_owned(),
        store_results: Some(true),
        max_retries: Some(Some(0)),
        ..Default::default()
    };
    f(&mut options);
    Actor::new(name.to_owned(), options, handler)
}

struct Stack {
    queue: String,
    broker: StubBroker,
    results: Arc<dyn ResultBackend>,
    abortable: Abortable,
    app: App,
}

fn stack(backend: Arc<dyn EventBackend>, configure: impl FnOnce(Abortable) -> Abortable) -> Stack {
    let queue = dq_test::unique_name("abort");
    let broker = StubBroker::new();
    let results: Arc<dyn ResultBackend> = Arc::new(dq_results::MemoryBackend::default());
    let abortable = configure(Abortable::from_arc(backend));
    let q = &queue;
    let app = dq_test::stack::app(
        &broker,
        vec![
            Arc::new(abortable.clone()) as Arc<dyn Middleware>,
            Arc::new(Results::from_arc(results.clone())),
            Arc::new(dq_ratelimit::GroupCallbacks::new(
                dq_ratelimit::MemoryBackend::default(),
            )),
        ],
        vec![
            actor("quick", q, quick, |_| {}),
            actor("not_abortable", q, quick, |o| {
                o.extra.insert("abortable".into(), json!(false));
            }),
            actor("sleepy_async", q, sleepy_async, |_| {}),
            actor("sleepy_sync", q, sleepy_sync, |_| {}),
            actor("sleepy_retried", q, sleepy_async, |o| {
                o.max_retries = Some(Some(3));
                o.min_backoff = Some(200);
                o.max_backoff = Some(400);
            }),
            actor("graceful", q, graceful, |_| {}),
        ],
    );
    Stack {
        queue,
        broker,
        results,
        abortable,
        app,
    }
}

impl Stack {
    fn message(&self, actor: &str, tag: &str) -> Message {
        Message::new(&self.queue, actor, &(tag,), &()).unwrap()
    }

    async fn send(&self, actor: &str, tag: &str) -> Message {
        self.app
            .enqueue(self.message(actor, tag), None)
            .await
            .unwrap()
    }

    async fn result(&self, m: &Message) -> Result<Value, ResultError> {
        m.get_result::<Value>(&*self.results, true, Some(Duration::from_secs(20)))
            .await
    }

    async fn join(&self) {
        self.broker
            .join_with(
                &self.queue,
                JoinOptions::default()
                    .fail_fast(false)
                    .timeout(Some(Duration::from_secs(20))),
            )
            .await
            .unwrap();
    }
}

fn failure_type(r: Result<Value, ResultError>) -> String {
    match r {
        Err(ResultError::Failure { type_name, .. }) => type_name,
        other => panic!("expected a stored failure, got {other:?}"),
    }
}

fn redis_backend() -> (Arc<dyn EventBackend>, String) {
    let namespace = format!("{}:", dq_test::unique_name("aborts"));
    let backend = RedisBackend::builder()
        .url(&dq_test::require_redis())
        .namespace(&namespace)
        .build()
        .unwrap();
    (Arc::new(backend), namespace)
}

fn memory_backend() -> Arc<dyn EventBackend> {
    Arc::new(MemoryBackend::default())
}

async fn check_cancel_skips_queued_messages(backend: Arc<dyn EventBackend>) {
    let s = stack(backend, |a| a);
    let (cancelled, kept, aborted) = (
        dq_test::unique_name("cancelled"),
        dq_test::unique_name("kept"),
        dq_test::unique_name("aborted"),
    );
    let m1 = s.send("quick", &cancelled).await;
    let m2 = s.send("quick", &kept).await;
    let m3 = s.send("quick", &aborted).await;
    let cancel = AbortOptions::default().mode(AbortMode::Cancel);
    s.abortable
        .abort_with(&m1.message_id, &cancel)
        .await
        .unwrap();
    // The default mode cancels a queued message too.
    s.abortable.abort(&m3.message_id).await.unwrap();
    let w = dq_test::stack::worker(&s.app, 2).await;
    s.join().await;
    assert_eq!(s.result(&m1).await.unwrap(), Value::Null, "skipped: null");
    assert_eq!(s.result(&m2).await.unwrap(), json!(kept));
    assert_eq!(s.result(&m3).await.unwrap(), Value::Null);
    assert!(seen(&cancelled).is_empty() && seen(&aborted).is_empty());
    assert_eq!(seen(&kept), ["ran"]);
    assert!(
        s.broker.dead_letters_by_queue(&s.queue).is_empty(),
        "acked, not dead-lettered"
    );
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_skips_queued_messages_in_memory() {
    check_cancel_skips_queued_messages(memory_backend()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_skips_queued_messages_in_redis() {
    check_cancel_skips_queued_messages(redis_backend().0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_events_are_dramatiq_aborts_lists() {
    let url = dq_test::require_redis();
    let backend = RedisBackend::from_url(&url).unwrap();
    assert_eq!(backend.namespace(), "dramatiq:aborts:");
    let abortable = Abortable::new(backend);
    let id = dq_test::unique_name("message-id");
    let graceful = AbortOptions::default().abort_timeout(Duration::from_millis(1500));
    abortable.abort_with(&id, &graceful).await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let cancel = format!("dramatiq:aborts:cancel:{id}");
    let abort = format!("dramatiq:aborts:abort:{id}");
    let values: Vec<String> = redis::cmd("LRANGE")
        .arg(&cancel)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(values, ["{}"]);
    let values: Vec<String> = redis::cmd("LRANGE")
        .arg(&abort)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(values, [r#"{"abort_timeout": 1500}"#]);
    for key in [&cancel, &abort] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 90_000, "{key}: {ttl}");
    }
    // Cancel mode writes only the cancel list, with the ttl asked for.
    let id = dq_test::unique_name("message-id");
    let cancel_only = AbortOptions::default()
        .mode(AbortMode::Cancel)
        .abort_ttl(Duration::from_secs(3600));
    abortable.abort_with(&id, &cancel_only).await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("dramatiq:aborts:cancel:{id}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 90_000, "{ttl}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("dramatiq:aborts:abort:{id}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    let _: () = redis::cmd("DEL")
        .arg(&cancel)
        .arg(&abort)
        .arg(format!("dramatiq:aborts:cancel:{id}"))
        .query_async(&mut c)
        .await
        .unwrap();
}

async fn check_abort_stops_running_actors(backend: Arc<dyn EventBackend>) {
    let s = stack(backend, |a| a);
    let w = dq_test::stack::worker(&s.app, 4).await;
    let (a, b) = (dq_test::unique_name("async"), dq_test::unique_name("sync"));
    let ma = s.send("sleepy_async", &a).await;
    let mb = s.send("sleepy_sync", &b).await;
    wait_seen(&a, "started").await;
    wait_seen(&b, "started").await;
    s.abortable.abort(&ma.message_id).await.unwrap();
    s.abortable.abort(&mb.message_id).await.unwrap();
    assert_eq!(failure_type(s.result(&ma).await), "Abort");
    assert_eq!(failure_type(s.result(&mb).await), "Abort");
    // The async actor's future was dropped; the sync one saw the abort in check().
    wait_seen(&a, "dropped").await;
    wait_seen(&b, "check: Abort").await;
    assert!(!seen(&a).contains(&"finished") && !seen(&b).contains(&"finished"));
    s.join().await;
    assert_eq!(
        s.broker.dead_letters_by_queue(&s.queue).len(),
        2,
        "max_retries 0: dead-lettered"
    );
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_running_actors_in_memory() {
    check_abort_stops_running_actors(memory_backend()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_running_actors_in_redis() {
    check_abort_stops_running_actors(redis_backend().0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mode_leaves_a_running_message_alone() {
    let s = stack(memory_backend(), |a| a);
    let w = dq_test::stack::worker(&s.app, 2).await;
    let tag = dq_test::unique_name("graceful");
    let m = s.send("graceful", &tag).await;
    wait_seen(&tag, "started").await;
    let cancel = AbortOptions::default().mode(AbortMode::Cancel);
    s.abortable
        .abort_with(&m.message_id, &cancel)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(seen(&tag), ["started"], "still running, no abort requested");
    // Now an abort with a grace period: the actor reads the time left and winds down itself.
    let graceful = AbortOptions::default().abort_timeout(Duration::from_secs(30));
    s.abortable
        .abort_with(&m.message_id, &graceful)
        .await
        .unwrap();
    assert_eq!(s.result(&m).await.unwrap(), json!("saved"));
    assert_eq!(seen(&tag), ["started", "abort requested"]);
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn which_messages_are_abortable() {
    // The middleware's default says no; the actor option and then the message option win.
    let s = stack(memory_backend(), |a| a.with_abortable(false));
    let cancel = AbortOptions::default().mode(AbortMode::Cancel);
    let tags: Vec<String> = (0..4)
        .map(|i| dq_test::unique_name(&format!("abortable{i}")))
        .collect();
    let by_default = s.send("quick", &tags[0]).await;
    let mut asked = s.message("quick", &tags[1]);
    asked.options.insert("abortable".into(), json!(true));
    let asked = s.app.enqueue(asked, None).await.unwrap();
    let mut null = s.message("quick", &tags[2]);
    null.options.insert("abortable".into(), Value::Null);
    let null = s.app.enqueue(null, None).await.unwrap();
    let by_actor = s.send("not_abortable", &tags[3]).await;
    for m in [&by_default, &asked, &null, &by_actor] {
        s.abortable
            .abort_with(&m.message_id, &cancel)
            .await
            .unwrap();
    }
    let w = dq_test::stack::worker(&s.app, 2).await;
    s.join().await;
    assert_eq!(seen(&tags[0]), ["ran"], "not abortable by default");
    assert!(seen(&tags[1]).is_empty(), "the message option wins");
    assert_eq!(seen(&tags[2]), ["ran"], "null falls through to the default");
    assert_eq!(seen(&tags[3]), ["ran"]);
    w.stop().await.unwrap();

    // With the default on, the actor's `abortable = false` wins over it.
    let s = stack(memory_backend(), |a| a);
    let tag = dq_test::unique_name("actor-option");
    let m = s.send("not_abortable", &tag).await;
    s.abortable
        .abort_with(&m.message_id, &cancel)
        .await
        .unwrap();
    let w = dq_test::stack::worker(&s.app, 2).await;
    s.join().await;
    assert_eq!(seen(&tag), ["ran"]);
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_is_cancelled_when_its_eta_comes() {
    let s = stack(memory_backend(), |a| a);
    let w = dq_test::stack::worker(&s.app, 2).await;
    let tag = dq_test::unique_name("delayed");
    let m = s
        .app
        .enqueue(s.message("quick", &tag), Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    s.abortable.abort(&m.message_id).await.unwrap();
    assert_eq!(s.result(&m).await.unwrap(), Value::Null);
    assert!(seen(&tag).is_empty());
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_message_is_retried_and_its_retry_skipped() {
    let s = stack(memory_backend(), |a| a);
    let w = dq_test::stack::worker(&s.app, 2).await;
    let tag = dq_test::unique_name("retried");
    let m = s.send("sleepy_retried", &tag).await;
    wait_seen(&tag, "started").await;
    s.abortable.abort(&m.message_id).await.unwrap();
    // Retries enqueues the retry; the cancel event the abort left skips it: null, as in Python.
    assert_eq!(s.result(&m).await.unwrap(), Value::Null);
    assert_eq!(seen(&tag), ["started", "dropped"], "ran once");
    s.join().await;
    assert!(s.broker.dead_letters_by_queue(&s.queue).is_empty());
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_pipeline_stage_stops_the_pipeline() {
    let s = stack(memory_backend(), |a| a);
    let w = dq_test::stack::worker(&s.app, 2).await;
    let (first, second, third) = (
        dq_test::unique_name("stage1"),
        dq_test::unique_name("stage2"),
        dq_test::unique_name("stage3"),
    );
    // A running stage aborted.
    let stage1 = s.message("sleepy_async", &first);
    let stage2 = s.message("quick", &second);
    let pipe = pipeline([stage1.clone(), stage2])
        .run_with(&s.app, None)
        .await
        .unwrap();
    wait_seen(&first, "started").await;
    s.abortable.abort(&stage1.message_id).await.unwrap();
    assert_eq!(failure_type(s.result(&pipe.messages()[0]).await), "Abort");
    // A queued stage cancelled: its successor never runs either.
    let stage3 = s.message("quick", &third);
    let next = s.message("quick", &dq_test::unique_name("after-cancelled"));
    let pipe2 = pipeline([stage3.clone(), next.clone()]);
    s.abortable.abort(&stage3.message_id).await.unwrap();
    let pipe2 = pipe2.run_with(&s.app, None).await.unwrap();
    assert_eq!(s.result(&pipe2.messages()[0]).await.unwrap(), Value::Null);
    s.join().await;
    assert!(
        seen(&second).is_empty(),
        "the stage after an aborted one never runs"
    );
    assert!(seen(&third).is_empty());
    let e = pipe2.messages()[1]
        .get_result::<Value>(&*s.results, false, None)
        .await
        .unwrap_err();
    assert!(e.is_missing(), "{e}");
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_are_aborted_and_cancelled_by_their_own_ids() {
    let s = stack(memory_backend(), |a| a);
    let w = dq_test::stack::worker(&s.app, 4).await;
    // A whole group first, so the group's completion callback is known to work here.
    let done = dq_test::unique_name("complete");
    let members = [
        s.message("quick", &dq_test::unique_name("m")),
        s.message("quick", &dq_test::unique_name("m")),
    ];
    group(members.clone())
        .with_completion_callback(&s.message("quick", &done))
        .run_with(&s.app, None)
        .await
        .unwrap();
    wait_seen(&done, "ran").await;

    // A running member aborted, a queued one cancelled: the others run, the group never
    // completes (its barrier counts members that succeeded, as in Python).
    let (running_tag, cancelled, ok, callback) = (
        dq_test::unique_name("running"),
        dq_test::unique_name("cancelled"),
        dq_test::unique_name("ok"),
        dq_test::unique_name("callback"),
    );
    let running = s.message("sleepy_async", &running_tag);
    let cancelled_m = s.message("quick", &cancelled);
    let ok_m = s.message("quick", &ok);
    s.abortable.abort(&cancelled_m.message_id).await.unwrap();
    group([running.clone(), cancelled_m.clone(), ok_m.clone()])
        .with_completion_callback(&s.message("quick", &callback))
        .run_with(&s.app, None)
        .await
        .unwrap();
    wait_seen(&running_tag, "started").await;
    s.abortable.abort(&running.message_id).await.unwrap();
    assert_eq!(failure_type(s.result(&running).await), "Abort");
    assert_eq!(s.result(&cancelled_m).await.unwrap(), Value::Null);
    assert_eq!(s.result(&ok_m).await.unwrap(), json!(ok));
    s.join().await;
    assert_eq!(seen(&running_tag), ["started", "dropped"]);
    assert!(seen(&cancelled).is_empty(), "a cancelled member never runs");
    assert!(seen(&callback).is_empty(), "the group never completes");
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_finds_the_apps_abortable() {
    let s = stack(memory_backend(), |a| a);
    let tag = dq_test::unique_name("through-app");
    let m = s.send("quick", &tag).await;
    s.app.scope(dq_abort::abort(&m.message_id)).await.unwrap();
    let w = dq_test::stack::worker(&s.app, 2).await;
    assert_eq!(s.result(&m).await.unwrap(), Value::Null);
    w.stop().await.unwrap();
    // An app without the middleware says so.
    let plain = dq_test::stack::app(&StubBroker::new(), vec![], vec![]);
    let e = plain.scope(dq_abort::abort("x")).await.unwrap_err();
    assert!(matches!(e, dq_abort::Error::NoAbortable(None)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_limit_is_not_taken_for_an_abort() {
    // Guard against the worker confusing a time limit with an abort: both run through the
    // deadline watcher.
    let s = stack(memory_backend(), |a| a);
    let w = dq_test::stack::worker(&s.app, 2).await;
    let tag = dq_test::unique_name("time-limited");
    let mut m = s.message("sleepy_sync", &tag);
    m.options.insert("time_limit".into(), json!(300));
    let m = s.app.enqueue(m, None).await.unwrap();
    assert_eq!(failure_type(s.result(&m).await), "TimeLimitExceeded");
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_broker() {
    let url = dq_test::require_redis();
    let broker_ns = dq_test::unique_name("abort-broker");
    let broker = dq_broker_redis::RedisBroker::builder()
        .url(url.clone())
        .namespace(broker_ns.clone())
        .build()
        .await
        .unwrap();
    let (backend, events_ns) = redis_backend();
    let abortable = Abortable::from_arc(backend);
    let results: Arc<dyn ResultBackend> = Arc::new(dq_results::MemoryBackend::default());
    let q = dq_test::unique_name("abort-q");
    let app = App::builder(broker)
        .without_linked_actors()
        .middleware_arcs(dq_middleware::default_middleware())
        .middleware(abortable.clone())
        .middleware(Results::from_arc(results.clone()))
        .actor(actor("quick", &q, quick, |_| {}))
        .actor(actor("sleepy_sync", &q, sleepy_sync, |_| {}))
        .build()
        .unwrap();
    let (cancelled, running) = (
        dq_test::unique_name("cancelled"),
        dq_test::unique_name("running"),
    );
    let m1 = app
        .enqueue(
            Message::new(&q, "quick", &(&cancelled,), &()).unwrap(),
            None,
        )
        .await
        .unwrap();
    abortable.abort(&m1.message_id).await.unwrap();
    let w = dq_test::stack::worker(&app, 2).await;
    let m2 = app
        .enqueue(
            Message::new(&q, "sleepy_sync", &(&running,), &()).unwrap(),
            None,
        )
        .await
        .unwrap();
    wait_seen(&running, "started").await;
    abortable.abort(&m2.message_id).await.unwrap();
    let wait = Some(Duration::from_secs(20));
    assert_eq!(
        m1.get_result::<Value>(&*results, true, wait).await.unwrap(),
        Value::Null
    );
    assert_eq!(
        failure_type(m2.get_result::<Value>(&*results, true, wait).await),
        "Abort"
    );
    wait_seen(&running, "check: Abort").await;
    assert!(seen(&cancelled).is_empty());
    w.stop().await.unwrap();

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    for pattern in [format!("{broker_ns}:*"), format!("{events_ns}*")] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .unwrap();
        }
    }
}

/// Cancel checks made at the same time go to Redis together: each still gets its own event,
/// and an event is taken by one check only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cancel_checks_in_redis_each_get_their_own_event() {
    let url = dq_test::require_redis();
    let namespace = format!("{}:", dq_test::unique_name("aborts"));
    let backend = Arc::new(
        RedisBackend::builder()
            .url(&url)
            .namespace(&namespace)
            .build()
            .unwrap(),
    );
    let ids: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    // Every third message has a cancel event, with its index to tell them apart.
    let events: Vec<Event> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(i, id)| Event::new(AbortMode::Cancel.key(id)).with_param("i", i))
        .collect();
    backend
        .notify(&events, Duration::from_secs(60))
        .await
        .unwrap();
    for round in 0..2 {
        let checks: Vec<_> = ids
            .iter()
            .map(|id| {
                let (backend, key) = (backend.clone(), AbortMode::Cancel.key(id));
                tokio::spawn(async move { backend.poll(&key).await })
            })
            .collect();
        let mut found = Vec::new();
        for (i, check) in checks.into_iter().enumerate() {
            if let Some(event) = check.await.unwrap().unwrap() {
                assert_eq!(event.key, AbortMode::Cancel.key(&ids[i]));
                assert_eq!(event.params["i"], i);
                found.push(i);
            }
        }
        if round == 0 {
            assert_eq!(found, (0..60).step_by(3).collect::<Vec<_>>());
        } else {
            assert!(found.is_empty(), "events are popped once: {found:?}");
        }
    }
}
