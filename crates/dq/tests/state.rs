//! Actors with application state: `dq::State<T>` parameters filled from the app, not from the
//! message; state built at worker boot; a missing state stops the worker from starting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dq::{State, StateError, StubBroker, Worker, WorkerError, WorkerOptions};

/// Stands in for a database pool.
#[derive(Debug, Default)]
struct Db {
    charged: Mutex<Vec<u64>>,
}

/// Stands in for an HTTP client that needs async set-up.
#[derive(Debug)]
struct Client {
    base: String,
}

#[dq::actor(queue_name = "billing")]
fn charge(order: u64, db: State<Db>) {
    db.charged.lock().unwrap().push(order);
}

#[dq::actor(queue_name = "billing")]
async fn charge_async(order: u64, db: dq::State<Db>, client: State<Client>) -> Result<(), String> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(client.base, "https://pay.example.com");
    db.charged.lock().unwrap().push(order * 1000);
    Ok(())
}

#[dq::actor(queue_name = "plain")]
fn plain(n: u32) -> u32 {
    n
}

static CLIENTS_BUILT: AtomicUsize = AtomicUsize::new(0);

async fn connect_client() -> Result<Client, std::io::Error> {
    CLIENTS_BUILT.fetch_add(1, Ordering::SeqCst);
    Ok(Client {
        base: "https://pay.example.com".into(),
    })
}

#[test]
fn state_parameters_are_not_message_arguments() {
    let m = charge::message(7).unwrap();
    assert_eq!(m.args.get(), "[7]");
    let m = charge_async::message(8).unwrap();
    assert_eq!(m.args.get(), "[8]");
    // The fn is callable as written, with a state made by hand.
    let db = State::new(Db::default());
    charge(3, db.clone());
    assert_eq!(*db.charged.lock().unwrap(), [3]);
    // The actor records what it needs.
    let needs: Vec<&str> = charge_async::actor()
        .states
        .iter()
        .map(|k| k.type_name())
        .collect();
    assert_eq!(needs.len(), 2);
    assert!(
        needs[0].ends_with("::Db") && needs[1].ends_with("::Client"),
        "{needs:?}"
    );
}

#[tokio::test]
async fn sync_and_async_actors_get_the_apps_state() {
    let broker = StubBroker::new();
    let db = std::sync::Arc::new(Db::default());
    let before = CLIENTS_BUILT.load(Ordering::SeqCst);
    let app = dq::app(broker.clone())
        .state_arc(db.clone())
        .state_with(connect_client)
        .build()
        .unwrap();
    // Built by the worker at boot, not by the app (a producer never connects).
    assert_eq!(CLIENTS_BUILT.load(Ordering::SeqCst), before);
    app.scope(async {
        charge::send(1).await.unwrap();
        charge_async::send(2).await.unwrap();
        charge::send(3).await.unwrap();
    })
    .await;
    let worker = Worker::new(
        app,
        WorkerOptions {
            queues: Some(vec!["billing".into()]),
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    worker
        .run_until_drained(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(CLIENTS_BUILT.load(Ordering::SeqCst) > before);
    let mut got = db.charged.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, [1, 3, 2000]);
    assert!(broker.dead_letters_by_queue("billing").is_empty());
}

#[tokio::test]
async fn a_missing_state_stops_the_worker_naming_actor_and_type() {
    let app = dq::app(StubBroker::new())
        .state(Db::default())
        .build()
        .unwrap();
    let worker = Worker::new(
        app,
        WorkerOptions {
            queues: Some(vec!["billing".into()]),
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let e = worker.start().await.unwrap_err();
    match &e {
        WorkerError::State(StateError::Missing { actor, type_name }) => {
            assert_eq!(actor, "charge_async");
            assert!(type_name.ends_with("::Client"), "{type_name}");
        }
        other => panic!("expected a missing state, got {other:?}"),
    }
    let text = dq::ErrorChain(&e).to_string();
    assert!(
        text.starts_with("worker could not start: ")
            && text.contains("charge_async")
            && text.contains("Client"),
        "{text}"
    );
    // Nothing started: the worker can be started again once fixed, and stop says so.
    assert!(matches!(
        worker.stop().await,
        Err(WorkerError::Lifecycle(_))
    ));
}

#[tokio::test]
async fn a_worker_for_other_queues_does_not_need_their_state() {
    let broker = StubBroker::new();
    let app = dq::app(broker.clone()).build().unwrap();
    app.scope(async { plain::send(5).await.unwrap() }).await;
    let worker = Worker::new(
        app,
        WorkerOptions {
            queues: Some(vec!["plain".into()]),
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    worker
        .run_until_drained(Duration::from_secs(10))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_state_that_fails_to_build_stops_the_worker() {
    let app = dq::app(StubBroker::new())
        .state(Db::default())
        .state_with(|| async { Err::<Client, _>("payment gateway unreachable") })
        .build()
        .unwrap();
    let worker = Worker::new(
        app,
        WorkerOptions {
            queues: Some(vec!["billing".into()]),
            worker_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let e = worker.start().await.unwrap_err();
    assert!(
        matches!(&e, WorkerError::State(StateError::Build { type_name, .. }) if type_name.ends_with("::Client")),
        "{e:?}"
    );
    let text = dq::ErrorChain(&e).to_string();
    assert!(text.contains("payment gateway unreachable"), "{text}");
}
