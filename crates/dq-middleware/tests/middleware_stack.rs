//! The default stack as a whole: hooks declared, options declared, and the after-hook order
//! (reverse of the stack) that lets Callbacks see what Retries wrote.

use dq_core::{ActorOptions, Hooks, Message, SendOptions};
use dq_middleware::default_middleware;
use serde_json::json;

use crate::util::{actor, app, failure, job, take_all};

#[test]
fn each_middleware_declares_only_the_hooks_it_implements() {
    let hooks: Vec<(String, Hooks)> = default_middleware()
        .iter()
        .map(|m| (m.name().to_owned(), m.hooks()))
        .collect();
    let expected = [
        ("AgeLimit", Hooks::BEFORE_PROCESS),
        ("TimeLimit", Hooks::BEFORE_PROCESS | Hooks::AFTER_PROCESS),
        ("ShutdownNotifications", Hooks::BEFORE_PROCESS),
        ("Callbacks", Hooks::AFTER_PROCESS),
        ("Pipelines", Hooks::AFTER_PROCESS),
        ("Retries", Hooks::AFTER_PROCESS),
        (
            "Unique",
            Hooks::BEFORE_PROCESS | Hooks::AFTER_PROCESS | Hooks::AFTER_SKIP | Hooks::NACK,
        ),
    ];
    assert_eq!(hooks.len(), expected.len());
    for ((name, got), (want_name, want)) in hooks.iter().zip(expected) {
        assert_eq!(name, want_name);
        assert_eq!(*got, want, "{name}");
    }
}

#[test]
fn actors_may_use_the_options_the_stack_declares() {
    let mut options = ActorOptions::default();
    for key in ["on_success", "on_failure", "pipe_ignore"] {
        options.extra.insert(key.into(), json!("x"));
    }
    let (app, _broker) = app(
        default_middleware(),
        vec![actor("work", "jobs", options.clone())],
    );
    assert!(app.actor("work").is_some());
    let unknown = dq_core::App::builder(dq_broker_stub::StubBroker::new())
        .without_linked_actors()
        .actor(actor("work", "jobs", options))
        .build();
    assert!(matches!(
        unknown,
        Err(dq_core::Error::UnknownActorOption { .. })
    ));
}

#[tokio::test]
async fn after_hooks_in_reverse_order_let_callbacks_see_retries() {
    let (app, broker) = app(
        default_middleware(),
        vec![
            actor("work", "jobs", ActorOptions::default()),
            actor("print_error", "errors", ActorOptions::default()),
        ],
    );
    let mut m = Message::new("jobs", "work", &(), &()).unwrap();
    SendOptions::new()
        .on_failure("print_error")
        .apply_to_message(&mut m);
    let mut job = job(&app, m);
    let outcome = failure("ValueError", "boom");
    for mw in app.middleware_with(Hooks::AFTER_PROCESS).iter().rev() {
        mw.after_process(&app, &mut job, &outcome).await.unwrap();
    }
    assert!(!job.is_failed());
    assert_eq!(take_all(&broker, "jobs.DQ").await.len(), 1);
    let callback = take_all(&broker, "errors").await;
    let dict = &callback[0].args_value().unwrap()[0];
    assert_eq!(dict["options"]["retries"], json!(1));
    assert_eq!(dict["options"]["traceback"], json!("ValueError: boom"));
}
