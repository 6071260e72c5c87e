//! The before-process middleware: AgeLimit, TimeLimit, ShutdownNotifications, CurrentMessage.

use std::time::{Duration, Instant};

use dq_core::{ActorOptions, Control, Message, Middleware, Outcome, SendOptions};
use dq_middleware::{AgeLimit, CurrentMessage, ShutdownNotifications, TimeLimit};
use serde_json::json;

use crate::util::{actor, app, job};

#[tokio::test]
async fn age_limit_skips_and_fails_old_messages() {
    let (app, _broker) = app(vec![], vec![actor("work", "jobs", ActorOptions::default())]);
    let mw = AgeLimit::default().with_max_age(Duration::from_secs(60));

    let fresh = Message::new("jobs", "work", &(), &()).unwrap();
    let mut fresh_job = job(&app, fresh);
    assert_eq!(
        mw.before_process(&app, &mut fresh_job).await.unwrap(),
        Control::Continue
    );
    assert!(!fresh_job.is_failed());

    let mut old = Message::new("jobs", "work", &(), &()).unwrap();
    old.message_timestamp -= 61_000;
    let mut old_job = job(&app, old);
    assert_eq!(
        mw.before_process(&app, &mut old_job).await.unwrap(),
        Control::Skip
    );
    let reason = old_job.failure_reason().expect("failed");
    assert!(
        reason.starts_with("message age limit exceeded (max_age 60000 ms, age 6"),
        "{reason}"
    );
}

#[tokio::test]
async fn age_limit_reads_the_message_option() {
    let (app, _broker) = app(vec![], vec![actor("work", "jobs", ActorOptions::default())]);
    let mut m = Message::new("jobs", "work", &(), &()).unwrap();
    SendOptions::new()
        .max_age(Duration::from_millis(1000))
        .apply_to_message(&mut m);
    m.message_timestamp -= 1000;
    let mut job = job(&app, m);
    assert_eq!(
        AgeLimit::default()
            .before_process(&app, &mut job)
            .await
            .unwrap(),
        Control::Skip
    );
}

#[tokio::test]
async fn time_limit_sets_the_deadline_from_message_actor_or_default() {
    let options = ActorOptions {
        time_limit: Some(5_000),
        ..ActorOptions::default()
    };
    let (app, _broker) = app(
        vec![],
        vec![
            actor("limited", "jobs", options),
            actor("plain", "jobs", ActorOptions::default()),
        ],
    );
    let check = |name: &str, message_limit: Option<u64>| {
        let app = app.clone();
        let name = name.to_owned();
        async move {
            let mut m = Message::new("jobs", &name, &(), &()).unwrap();
            if let Some(ms) = message_limit {
                m.options.insert("time_limit".into(), json!(ms));
            }
            let mut job = job(&app, m);
            let before = Instant::now();
            let control = TimeLimit::default()
                .before_process(&app, &mut job)
                .await
                .unwrap();
            let after = Instant::now();
            assert_eq!(control, Control::Continue);
            let deadline = job.deadline.expect("a deadline");
            (deadline - before, deadline - after)
        }
    };
    let within = |(hi, lo): (Duration, Duration), ms: u64| {
        let d = Duration::from_millis(ms);
        assert!(lo <= d && d <= hi, "{lo:?}..{hi:?} vs {d:?}");
    };
    within(check("plain", None).await, 600_000);
    within(check("limited", None).await, 5_000);
    within(check("limited", Some(200)).await, 200);
}

#[tokio::test]
async fn time_limit_after_hook_does_not_fail_the_job() {
    let (app, _broker) = app(vec![], vec![actor("work", "jobs", ActorOptions::default())]);
    let mut job = job(&app, Message::new("jobs", "work", &(), &()).unwrap());
    TimeLimit::default()
        .after_process(
            &app,
            &mut job,
            &Outcome::Failure(dq_core::ActorError::time_limit_exceeded()),
        )
        .await
        .unwrap();
    assert!(!job.is_failed());
}

#[tokio::test]
async fn shutdown_notifications_follow_message_then_actor() {
    let options = ActorOptions {
        notify_shutdown: Some(true),
        ..ActorOptions::default()
    };
    let (app, _broker) = app(
        vec![],
        vec![
            actor("notified", "jobs", options),
            actor("plain", "jobs", ActorOptions::default()),
        ],
    );
    let mw = ShutdownNotifications::default();
    let mut j = job(&app, Message::new("jobs", "notified", &(), &()).unwrap());
    mw.before_process(&app, &mut j).await.unwrap();
    assert!(j.notify_shutdown);

    let mut j = job(&app, Message::new("jobs", "plain", &(), &()).unwrap());
    mw.before_process(&app, &mut j).await.unwrap();
    assert!(!j.notify_shutdown);

    let mut m = Message::new("jobs", "notified", &(), &()).unwrap();
    SendOptions::new()
        .notify_shutdown(false)
        .apply_to_message(&mut m);
    let mut j = job(&app, m);
    mw.before_process(&app, &mut j).await.unwrap();
    assert!(!j.notify_shutdown);
}

#[tokio::test]
async fn current_message_exposes_the_message() {
    let (app, _broker) = app(vec![], vec![actor("work", "jobs", ActorOptions::default())]);
    let mut j = job(&app, Message::new("jobs", "work", &(), &()).unwrap());
    assert!(!j.expose_message);
    assert_eq!(
        CurrentMessage.before_process(&app, &mut j).await.unwrap(),
        Control::Continue
    );
    assert!(j.expose_message);
}
