//! Schedules declared on actors through `#[dq::actor(cron = ...)]` options, on the stub broker:
//! the options reach the `Periodic` middleware (arguments, zone, policies), a bad one stops the
//! worker's start, and a schedule for an actor the app does not know too.

use std::sync::Mutex;
use std::time::Duration;

use dq::periodic::{Periodic, Schedule};
use dq::{App, StubBroker, Worker, WorkerOptions};

static RUNS: Mutex<Vec<(String, u32, String)>> = Mutex::new(Vec::new());

#[dq::actor(cron = "* * * * * *", cron_tz = "Asia/Tokyo", cron_args = ["x", 2], cron_no_overlap = true)]
fn every_second(kind: String, n: u32) {
    let at = dq::current_message()
        .and_then(|m| m.options.get_str("scheduled_at").map(str::to_owned))
        .unwrap_or_default();
    RUNS.lock().unwrap().push((kind, n, at));
}

#[dq::actor(cron = "* * * * *", cron_missed = "sometimes")]
fn badly_declared() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_options_declare_schedules() {
    let app = App::builder(StubBroker::new())
        .without_linked_actors()
        .actor(every_second::actor())
        .middleware(Periodic::new())
        .middleware(dq::middleware::CurrentMessage)
        .build()
        .unwrap();
    let worker = Worker::new(app.clone(), WorkerOptions::default());
    worker.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    worker.stop().await.unwrap();
    let runs = RUNS.lock().unwrap().clone();
    assert!(runs.len() >= 2, "{runs:?}");
    let mut ticks: Vec<&str> = runs.iter().map(|r| r.2.as_str()).collect();
    ticks.dedup();
    assert_eq!(ticks.len(), runs.len(), "a tick ran twice: {runs:?}");
    for (kind, n, at) in &runs {
        assert_eq!((kind.as_str(), *n), ("x", 2));
        assert!(
            at.ends_with("+09:00"),
            "scheduled_at in the schedule's zone: {at}"
        );
    }
    let states = app.broker().schedules().await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].name, "every_second");
    assert_eq!(states[0].timezone, "Asia/Tokyo");
}

#[tokio::test]
async fn a_bad_schedule_stops_the_start() {
    let app = App::builder(StubBroker::new())
        .without_linked_actors()
        .actor(badly_declared::actor())
        .middleware(Periodic::new())
        .build()
        .unwrap();
    let err = Worker::new(app, WorkerOptions::default())
        .start()
        .await
        .unwrap_err();
    let text = dq::ErrorChain(&err).to_string();
    assert!(text.contains("cron_missed"), "{text}");

    let app = App::builder(StubBroker::new())
        .without_linked_actors()
        .actor(every_second::actor())
        .middleware(
            Periodic::new().schedule(Schedule::new("ghost", "@every 5s").unwrap().actor("nobody")),
        )
        .build()
        .unwrap();
    let err = Worker::new(app, WorkerOptions::default())
        .start()
        .await
        .unwrap_err();
    let text = dq::ErrorChain(&err).to_string();
    assert!(text.contains("unknown actor \"nobody\""), "{text}");
}
