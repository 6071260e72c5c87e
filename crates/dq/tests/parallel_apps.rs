//! Many tests in one test binary, run in parallel by plain `cargo test` (threads of one
//! process, not nextest's process per test), each with its own app and stub broker, and no
//! global app: sends go through the app each test entered, an actor's follow-up sends through
//! its worker's app, and no test sees another's messages.
//!
//! `cargo xtask test` runs this binary under `cargo test` as well as under nextest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dq::{App, State, StubBroker, Worker, WorkerOptions};

/// Which test's app a worker belongs to, given to each app as state.
#[derive(Debug)]
struct Tag(u32);

/// One run of an actor: its name and the test whose worker ran it.
type Run = (&'static str, u32);

/// Per test (the test a message was sent by): the runs of its messages.
static SEEN: Mutex<Option<HashMap<u32, Vec<Run>>>> = Mutex::new(None);

fn record(kind: &'static str, sent_by: u32, ran_in: &Tag) {
    SEEN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(sent_by)
        .or_default()
        .push((kind, ran_in.0));
}

#[dq::actor(queue_name = "visits")]
fn visit(test: u32, n: u32, tag: State<Tag>) -> Result<(), dq::Error> {
    record("visit", test, &tag);
    // Through App::current(): the worker's app, the one this test built.
    if n.is_multiple_of(2) {
        visited_async::send_blocking(test)?;
    }
    Ok(())
}

#[dq::actor(queue_name = "visits")]
async fn visit_async(test: u32, n: u32, tag: State<Tag>) -> Result<(), dq::Error> {
    tokio::task::yield_now().await;
    record("visit_async", test, &tag);
    if !n.is_multiple_of(2) {
        visited_async::send(test).await?;
    }
    Ok(())
}

#[dq::actor(queue_name = "visits")]
async fn visited_async(test: u32, tag: State<Tag>) {
    record("visited", test, &tag);
}

const MESSAGES: u32 = 20;

async fn isolated(test: u32) {
    let broker = StubBroker::new();
    let app = dq::app(broker.clone()).state(Tag(test)).build().unwrap();
    app.scope(async {
        for n in 0..MESSAGES {
            visit::send(test, n).await.unwrap();
            visit_async::send(test, n).await.unwrap();
        }
        // Sync code inside the scope sends through it too.
        let app = App::current().unwrap();
        tokio::task::block_in_place(|| {
            app.enter(|| visit::send_blocking(test, 1).unwrap());
        });
    })
    .await;
    let worker = Worker::new(
        app,
        WorkerOptions {
            threads: 4,
            // Stops within one short fetch.
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    worker
        .run_until_drained(Duration::from_secs(30))
        .await
        .unwrap();
    let seen = SEEN
        .lock()
        .unwrap()
        .as_mut()
        .and_then(|m| m.remove(&test))
        .unwrap_or_default();
    // Every message this test sent ran in this test's worker, and nothing else did.
    assert!(
        seen.iter().all(|(_, ran_in)| *ran_in == test),
        "test {test}: messages ran in other tests' workers: {seen:?}"
    );
    let count = |kind| seen.iter().filter(|(k, _)| *k == kind).count() as u32;
    assert_eq!(count("visit"), MESSAGES + 1, "test {test}: {seen:?}");
    assert_eq!(count("visit_async"), MESSAGES, "test {test}: {seen:?}");
    // Follow-ups: half of each kind, and the blocking send's (n = 1 is odd: none).
    assert_eq!(count("visited"), MESSAGES, "test {test}: {seen:?}");
}

#[test]
fn without_a_scope_or_global_app_send_says_what_to_do() {
    let e = std::thread::spawn(|| visit::send_blocking(0, 0).unwrap_err())
        .join()
        .unwrap();
    assert!(matches!(e, dq::Error::NoGlobalApp), "{e:?}");
    assert!(e.to_string().contains("app.scope"), "{e}");
}

macro_rules! isolated_tests {
    ($($name:ident = $id:literal),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            isolated($id).await;
        }
    )*};
}

isolated_tests!(
    app_01 = 1,
    app_02 = 2,
    app_03 = 3,
    app_04 = 4,
    app_05 = 5,
    app_06 = 6,
    app_07 = 7,
    app_08 = 8,
    app_09 = 9,
    app_10 = 10,
    app_11 = 11,
    app_12 = 12,
    app_13 = 13,
    app_14 = 14,
    app_15 = 15,
    app_16 = 16,
    app_17 = 17,
    app_18 = 18,
    app_19 = 19,
    app_20 = 20,
);
