//! Callbacks' after-hook against a broker.

use std::sync::Arc;

use dq_core::{ActorOptions, Message, Middleware, Outcome, SendOptions};
use dq_middleware::Callbacks;
use serde_json::json;

use crate::util::{actor, app, app_with_limit, counts, failure, job, take_all};

fn callbacks() -> Vec<Arc<dyn Middleware>> {
    vec![Arc::new(Callbacks)]
}

fn actors() -> Vec<dq_core::Actor> {
    vec![
        actor("work", "jobs", ActorOptions::default()),
        actor("print_result", "results", ActorOptions::default()),
        actor("print_error", "errors", ActorOptions::default()),
    ]
}

fn message() -> Message {
    let mut m = Message::new("jobs", "work", &("x",), &()).unwrap();
    SendOptions::new()
        .on_success("print_result")
        .on_failure("print_error")
        .apply_to_message(&mut m);
    m
}

#[tokio::test]
async fn success_sends_the_message_and_result_to_on_success() {
    let (app, broker) = app(callbacks(), actors());
    let m = message();
    let mut job = job(&app, m.clone());
    Callbacks
        .after_process(&app, &mut job, &Outcome::Success(json!({"words": 3})))
        .await
        .unwrap();
    assert_eq!(counts(&broker, "errors").await, (0, 0));
    let sent = take_all(&broker, "results").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].actor_name, "print_result");
    assert_eq!(sent[0].queue_name, "results");
    assert!(sent[0].options.is_empty());
    assert_eq!(
        sent[0].args_value().unwrap(),
        json!([m.to_value(), {"words": 3}])
    );
}

#[tokio::test]
async fn each_failure_sends_type_and_message_to_on_failure() {
    let (app, broker) = app(callbacks(), actors());
    let mut job = job(&app, message());
    // Options another after-hook (Retries) already changed are what the callback sees.
    job.message.options.set_retries(1);
    Callbacks
        .after_process(&app, &mut job, &failure("ValueError", "boom"))
        .await
        .unwrap();
    assert!(!job.is_failed());
    assert_eq!(counts(&broker, "results").await, (0, 0));
    let sent = take_all(&broker, "errors").await;
    let args = sent[0].args_value().unwrap();
    assert_eq!(args[0]["options"]["retries"], json!(1));
    assert_eq!(args[1], json!({"type": "ValueError", "message": "boom"}));
}

#[tokio::test]
async fn actor_options_name_the_callbacks_too() {
    let mut options = ActorOptions::default();
    options
        .extra
        .insert("on_success".into(), json!("print_result"));
    let (app, broker) = app(
        callbacks(),
        vec![
            actor("work", "jobs", options),
            actor("print_result", "results", ActorOptions::default()),
        ],
    );
    let mut job = job(&app, Message::new("jobs", "work", &(), &()).unwrap());
    Callbacks
        .after_process(&app, &mut job, &Outcome::Success(json!(1)))
        .await
        .unwrap();
    assert_eq!(counts(&broker, "results").await, (1, 0));
}

#[tokio::test]
async fn an_unknown_callback_actor_is_skipped_without_failing() {
    let (app, broker) = app(
        callbacks(),
        vec![actor("work", "jobs", ActorOptions::default())],
    );
    let mut job = job(&app, message());
    Callbacks
        .after_process(&app, &mut job, &Outcome::Success(json!(1)))
        .await
        .unwrap();
    assert!(!job.is_failed());
    assert!(broker.queues().is_empty(), "{:?}", broker.queues());
}

#[tokio::test]
async fn a_refused_callback_is_an_error() {
    let (app, _broker) = app_with_limit(callbacks(), actors(), 16);
    let mut job = job(&app, message());
    let err = Callbacks
        .after_process(&app, &mut job, &failure("E", "x"))
        .await
        .unwrap_err();
    let text = dq_core::ErrorChain(&err).to_string();
    assert!(text.contains("on_failure callback"), "{text}");
}
