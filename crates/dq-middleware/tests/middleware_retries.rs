//! Retries' after-hook against a broker: the retry on the delay queue, exhaustion, throws, and a
//! refused enqueue.

use std::sync::Arc;
use std::time::Duration;

use dq_core::{
    now_ms, ActorError, ActorOptions, FailureKind, Message, Middleware, Outcome, SendOptions,
};
use dq_middleware::Retries;
use serde_json::{json, Value};

use crate::util::{actor, app, app_with_limit, counts, failure, job, take_all};

fn retries() -> Vec<Arc<dyn Middleware>> {
    vec![Arc::new(Retries::default())]
}

#[tokio::test]
async fn a_failure_is_retried_on_the_delay_queue_with_backoff() {
    let (app, broker) = app(
        retries(),
        vec![actor("work", "jobs", ActorOptions::default())],
    );
    let mut original = Message::new("jobs", "work", &(1, 2), &()).unwrap();
    original.options.insert("custom".into(), json!("kept"));
    let mut job = job(&app, original.clone());

    let before = now_ms();
    Retries::default()
        .after_process(&app, &mut job, &failure("ValueError", "boom"))
        .await
        .unwrap();
    let after = now_ms();

    assert!(!job.is_failed());
    assert_eq!(counts(&broker, "jobs").await, (0, 1));
    let retried = take_all(&broker, "jobs.DQ").await;
    assert_eq!(retried.len(), 1);
    let m = &retried[0];
    assert_eq!(m.queue_name, "jobs.DQ");
    assert_eq!(m.message_id, original.message_id);
    assert_eq!(m.message_timestamp, original.message_timestamp);
    assert_eq!(m.args_value().unwrap(), json!([1, 2]));
    assert_eq!(m.options.retries(), 1);
    assert_eq!(m.options.get_str("traceback"), Some("ValueError: boom"));
    assert_eq!(m.options.get_str("custom"), Some("kept"));
    let requeued = m.options.get_i64("requeue_timestamp").unwrap();
    assert!((before..=after).contains(&requeued), "{requeued}");
    let eta = m.options.eta().unwrap();
    assert!(
        eta >= before + 15_000,
        "retry is early: eta {eta}, sent {before}"
    );
    assert!(
        eta < after + 30_000,
        "retry is late: eta {eta}, sent {after}"
    );
}

#[tokio::test]
async fn retries_accumulate_across_attempts() {
    let (app, broker) = app(
        retries(),
        vec![actor("work", "jobs", ActorOptions::default())],
    );
    let mut m = Message::new("jobs", "work", &(), &()).unwrap();
    m.options.set_retries(4);
    let mut job = job(&app, m);
    Retries::default()
        .after_process(&app, &mut job, &failure("E", "x"))
        .await
        .unwrap();
    let retried = take_all(&broker, "jobs.DQ").await;
    assert_eq!(retried[0].options.retries(), 5);
    // The hook also changed the job's own message, for the after-hooks that run next.
    assert_eq!(job.message.options.retries(), 5);
}

#[tokio::test]
async fn a_retry_with_a_delay_waits_that_long() {
    let (app, broker) = app(
        retries(),
        vec![actor("work", "jobs", ActorOptions::default())],
    );
    let mut job = job(&app, Message::new("jobs", "work", &(), &()).unwrap());
    let outcome = Outcome::Failure(ActorError::from_error(dq_core::Retry::after(
        Duration::from_millis(2500),
    )));
    let before = now_ms();
    Retries::default()
        .after_process(&app, &mut job, &outcome)
        .await
        .unwrap();
    let after = now_ms();
    let eta = take_all(&broker, "jobs.DQ").await[0].options.eta().unwrap();
    assert!((before + 2500..=after + 2500).contains(&eta), "{eta}");
}

#[tokio::test]
async fn exhausted_messages_fail_and_notify_on_retry_exhausted() {
    let (app, broker) = app(
        retries(),
        vec![
            actor("work", "jobs", ActorOptions::default()),
            actor("gave_up", "alerts", ActorOptions::default()),
        ],
    );
    let mut m = Message::new("jobs", "work", &(7,), &()).unwrap();
    SendOptions::new()
        .max_retries(2)
        .on_retry_exhausted("gave_up")
        .apply_to_message(&mut m);
    m.options.set_retries(2);
    let mut job = job(&app, m.clone());

    Retries::default()
        .after_process(&app, &mut job, &failure("ValueError", "boom"))
        .await
        .unwrap();

    assert_eq!(
        job.failure_reason(),
        Some("retries exceeded (2): ValueError: boom")
    );
    assert_eq!(counts(&broker, "jobs").await, (0, 0));
    let notices = take_all(&broker, "alerts").await;
    assert_eq!(notices.len(), 1);
    let n = &notices[0];
    assert_eq!(n.actor_name, "gave_up");
    assert_eq!(n.queue_name, "alerts");
    assert_ne!(n.message_id, m.message_id);
    assert!(n.options.is_empty(), "{:?}", n.options);
    let args = n.args_value().unwrap();
    assert_eq!(args[0]["message_id"], json!(m.message_id));
    assert_eq!(args[0]["options"]["retries"], json!(3));
    assert_eq!(args[1], json!({"retries": 2, "max_retries": 2}));
}

#[tokio::test]
async fn actor_on_retry_exhausted_applies_when_the_message_has_none() {
    let options = ActorOptions {
        max_retries: Some(Some(0)),
        on_retry_exhausted: Some("gave_up".into()),
        ..ActorOptions::default()
    };
    let (app, broker) = app(
        retries(),
        vec![
            actor("work", "jobs", options),
            actor("gave_up", "alerts", ActorOptions::default()),
        ],
    );
    let mut job = job(&app, Message::new("jobs", "work", &(), &()).unwrap());
    Retries::default()
        .after_process(&app, &mut job, &failure("E", "x"))
        .await
        .unwrap();
    assert!(job.is_failed());
    let notices = take_all(&broker, "alerts").await;
    assert_eq!(
        notices[0].args_value().unwrap()[1],
        json!({"retries": 0, "max_retries": 0})
    );
}

#[tokio::test]
async fn an_unknown_on_retry_exhausted_actor_still_fails_the_message() {
    let (app, broker) = app(
        retries(),
        vec![actor("work", "jobs", ActorOptions::default())],
    );
    let mut m = Message::new("jobs", "work", &(), &()).unwrap();
    SendOptions::new()
        .max_retries(0)
        .on_retry_exhausted("nobody")
        .apply_to_message(&mut m);
    let mut job = job(&app, m);
    Retries::default()
        .after_process(&app, &mut job, &failure("E", "x"))
        .await
        .unwrap();
    assert!(job.is_failed());
    assert!(broker.queues().is_empty(), "{:?}", broker.queues());
}

#[tokio::test]
async fn throws_fails_at_once_without_counting_a_retry() {
    let options = ActorOptions {
        throws: vec!["BadInput".into()],
        ..ActorOptions::default()
    };
    let (app, broker) = app(retries(), vec![actor("work", "jobs", options)]);
    let mut job = job(&app, Message::new("jobs", "work", &(), &()).unwrap());
    Retries::default()
        .after_process(&app, &mut job, &failure("BadInput", "no"))
        .await
        .unwrap();
    assert!(job.failure_reason().unwrap().contains("throws"));
    assert_eq!(job.message.options.get("retries"), None);
    assert_eq!(counts(&broker, "jobs").await, (0, 0));
}

#[tokio::test]
async fn retry_when_decides_instead_of_max_retries() {
    let (app, broker) = app(
        retries(),
        vec![actor("work", "jobs", ActorOptions::default())],
    );
    let mw = Retries::default().with_retry_when(|_, e| e.type_name() == "Timeout");
    let mut m = Message::new("jobs", "work", &(), &()).unwrap();
    m.options.set_retries(500);
    let mut retried = job(&app, m.clone());
    mw.after_process(&app, &mut retried, &failure("Timeout", ""))
        .await
        .unwrap();
    assert!(!retried.is_failed());
    assert_eq!(counts(&broker, "jobs").await, (0, 1));

    let mut refused = job(&app, m);
    mw.after_process(&app, &mut refused, &failure("ValueError", ""))
        .await
        .unwrap();
    assert!(refused.is_failed());
    assert_eq!(counts(&broker, "jobs").await, (0, 1));
}

#[tokio::test]
async fn a_refused_retry_is_an_error_so_the_message_is_not_acked() {
    let (app, broker) = app_with_limit(
        retries(),
        vec![actor("work", "jobs", ActorOptions::default())],
        16,
    );
    let mut job = job(&app, Message::new("jobs", "work", &(), &()).unwrap());
    let err = Retries::default()
        .after_process(&app, &mut job, &failure("E", "x"))
        .await
        .unwrap_err();
    assert_eq!(err.middleware, "Retries");
    let text = dq_core::ErrorChain(&err).to_string();
    assert!(
        text.starts_with("middleware Retries: could not enqueue the retry of message "),
        "{text}"
    );
    let source = std::error::Error::source(&err).expect("has a cause");
    assert!(matches!(
        source.downcast_ref::<dq_middleware::Error>(),
        Some(dq_middleware::Error::Enqueue {
            follow_up: dq_middleware::FollowUp::Retry,
            ..
        })
    ));
    assert!(!job.is_failed());
    assert_eq!(counts(&broker, "jobs").await, (0, 0));
}

#[tokio::test]
async fn success_is_left_alone() {
    let (app, broker) = app(
        retries(),
        vec![actor("work", "jobs", ActorOptions::default())],
    );
    let mut job = job(&app, Message::new("jobs", "work", &(), &()).unwrap());
    Retries::default()
        .after_process(&app, &mut job, &Outcome::Success(Value::Null))
        .await
        .unwrap();
    assert!(!job.is_failed());
    assert_eq!(job.message.options.get("retries"), None);
    assert_eq!(counts(&broker, "jobs").await, (0, 0));
}

#[tokio::test]
async fn panics_and_time_limits_are_retried_like_errors() {
    let (app, broker) = app(
        retries(),
        vec![actor("work", "jobs", ActorOptions::default())],
    );
    for e in [
        ActorError::time_limit_exceeded(),
        ActorError::shutdown(),
        ActorError::new(FailureKind::Panic, "Panic", "oops"),
        ActorError::new(FailureKind::RateLimitExceeded, "RateLimitExceeded", "busy"),
    ] {
        let mut job = job(&app, Message::new("jobs", "work", &(), &()).unwrap());
        Retries::default()
            .after_process(&app, &mut job, &Outcome::Failure(e))
            .await
            .unwrap();
        assert!(!job.is_failed());
    }
    assert_eq!(counts(&broker, "jobs").await, (0, 4));
}
