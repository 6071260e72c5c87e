//! Pipelines' after-hook against a broker.

use std::sync::Arc;

use dq_core::{now_ms, ActorOptions, Message, Middleware, Outcome, SendOptions};
use dq_middleware::Pipelines;
use serde_json::json;

use crate::util::{actor, app, app_with_limit, counts, failure, job, take_all};

fn pipelines() -> Vec<Arc<dyn Middleware>> {
    vec![Arc::new(Pipelines)]
}

fn actors() -> Vec<dq_core::Actor> {
    vec![
        actor("first", "jobs", ActorOptions::default()),
        actor("second", "later", ActorOptions::default()),
    ]
}

/// `first(1)` piped into `next`.
fn stage(next: &Message) -> Message {
    let mut m = Message::new("jobs", "first", &(1,), &()).unwrap();
    m.options.set_pipe_target(next);
    m
}

#[tokio::test]
async fn success_enqueues_the_next_stage_with_the_result() {
    let (app, broker) = app(pipelines(), actors());
    let next = Message::new("later", "second", &("a",), &()).unwrap();
    let mut job = job(&app, stage(&next));
    Pipelines
        .after_process(&app, &mut job, &Outcome::Success(json!([4, 5])))
        .await
        .unwrap();
    let sent = take_all(&broker, "later").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id, next.message_id);
    assert_eq!(sent[0].message_timestamp, next.message_timestamp);
    assert_eq!(sent[0].args_value().unwrap(), json!(["a", [4, 5]]));
}

#[tokio::test]
async fn pipe_ignore_keeps_the_arguments() {
    let (app, broker) = app(pipelines(), actors());
    let mut next = Message::new("later", "second", &("a",), &()).unwrap();
    SendOptions::new()
        .pipe_ignore(true)
        .apply_to_message(&mut next);
    let mut job = job(&app, stage(&next));
    Pipelines
        .after_process(&app, &mut job, &Outcome::Success(json!(9)))
        .await
        .unwrap();
    assert_eq!(
        take_all(&broker, "later").await[0].args_value().unwrap(),
        json!(["a"])
    );
}

#[tokio::test]
async fn the_next_stage_keeps_its_delay() {
    let (app, broker) = app(pipelines(), actors());
    let mut next = Message::new("later", "second", &(), &()).unwrap();
    SendOptions::new()
        .delay(std::time::Duration::from_secs(60))
        .apply_to_message(&mut next);
    let mut job = job(&app, stage(&next));
    let before = now_ms();
    Pipelines
        .after_process(&app, &mut job, &Outcome::Success(json!(null)))
        .await
        .unwrap();
    let after = now_ms();
    let sent = take_all(&broker, "later.DQ").await;
    let eta = sent[0].options.eta().unwrap();
    assert!((before + 60_000..=after + 60_000).contains(&eta), "{eta}");
    assert_eq!(sent[0].queue_name, "later.DQ");
}

#[tokio::test]
async fn failures_and_failed_jobs_are_not_forwarded() {
    let (app, broker) = app(pipelines(), actors());
    let next = Message::new("later", "second", &(), &()).unwrap();
    let mut failed = job(&app, stage(&next));
    Pipelines
        .after_process(&app, &mut failed, &failure("E", "x"))
        .await
        .unwrap();
    let mut marked = job(&app, stage(&next));
    marked.fail("dead-lettered by another middleware");
    Pipelines
        .after_process(&app, &mut marked, &Outcome::Success(json!(1)))
        .await
        .unwrap();
    assert_eq!(counts(&broker, "later").await, (0, 0));
}

#[tokio::test]
async fn an_invalid_target_dead_letters_the_message() {
    let (app, broker) = app(pipelines(), actors());
    let mut m = Message::new("jobs", "first", &(), &()).unwrap();
    m.options
        .insert("pipe_target".into(), json!({"actor_name": "second"}));
    let mut job = job(&app, m);
    Pipelines
        .after_process(&app, &mut job, &Outcome::Success(json!(1)))
        .await
        .unwrap();
    let reason = job.failure_reason().expect("failed");
    assert!(reason.contains("invalid pipe_target"), "{reason}");
    assert!(broker.queues().is_empty(), "{:?}", broker.queues());
}

#[tokio::test]
async fn a_refused_next_stage_is_an_error() {
    let (app, _broker) = app_with_limit(pipelines(), actors(), 16);
    let next = Message::new("later", "second", &(), &()).unwrap();
    let mut job = job(&app, stage(&next));
    let err = Pipelines
        .after_process(&app, &mut job, &Outcome::Success(json!(1)))
        .await
        .unwrap_err();
    let text = dq_core::ErrorChain(&err).to_string();
    assert!(text.contains("next pipeline stage"), "{text}");
}
