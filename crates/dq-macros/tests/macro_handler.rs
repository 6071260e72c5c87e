//! The handler decodes a message's arguments into the typed parameters and runs the fn the way
//! the worker does: sync fns as a closure, async fns as a future.

use std::time::Duration;

use dq::middleware::{Actor, Invocation};
use dq::{ActorError, ArgsError, FailureKind, Message};
use serde_json::{json, Value};

use crate::actors::{add, asks_for_retry, move_point, nothing, send_welcome, sum_later};

/// Prepares the call as the worker does and runs it.
async fn run(
    actor: Actor,
    args: Value,
    kwargs: Value,
) -> Result<Result<Value, ActorError>, ArgsError> {
    let m = Message::new(actor.queue_name(), &actor.name, &args, &kwargs).unwrap();
    let invocation = (actor.handler)(&m, &dq::States::default())?;
    // Only the `async fn`s' handlers give a future; every other one gives a closure.
    assert_eq!(
        invocation.is_async(),
        [sum_later::NAME, move_point::NAME].contains(&actor.name.as_str()),
        "{} gave the wrong kind of call: {invocation:?}",
        actor.name
    );
    Ok(match invocation {
        Invocation::Sync(f) => f(),
        Invocation::Async(fut) => fut.await,
    })
}

#[tokio::test]
async fn positional_keyword_and_mixed_arguments() {
    let sum = |args, kwargs| run(add::actor(), args, kwargs);
    assert_eq!(
        sum(json!([2, 3]), json!({})).await.unwrap().unwrap(),
        json!(5)
    );
    assert_eq!(
        sum(json!([]), json!({"y": 3, "x": 2}))
            .await
            .unwrap()
            .unwrap(),
        json!(5)
    );
    assert_eq!(
        sum(json!([2]), json!({"y": 3})).await.unwrap().unwrap(),
        json!(5)
    );
}

#[tokio::test]
async fn missing_option_parameters_are_none() {
    let r = run(send_welcome::actor(), json!(["a@b.c"]), json!({})).await;
    assert_eq!(r.unwrap().unwrap(), json!(5));
    let r = run(
        send_welcome::actor(),
        json!(["a@b.c"]),
        json!({"attempt": 2}),
    )
    .await;
    assert_eq!(r.unwrap().unwrap(), json!(7));
}

#[tokio::test]
async fn sync_errors_become_actor_errors() {
    let r = run(send_welcome::actor(), json!(["nobody", 1]), json!({})).await;
    let e = r.unwrap().unwrap_err();
    assert_eq!(e.kind(), &FailureKind::Error);
    assert_eq!(e.type_name(), "BadInput");
    assert_eq!(e.message(), "bad input: nobody");
}

#[tokio::test]
async fn async_values_and_errors() {
    let r = run(sum_later::actor(), json!([[1, 2, 3]]), json!({})).await;
    assert_eq!(r.unwrap().unwrap(), json!(6));
    let e = run(sum_later::actor(), json!([[]]), json!({}))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.type_name(), "BadInput");
    assert_eq!(e.message(), "bad input: no values");
}

#[tokio::test]
async fn structs_and_raw_identifier_keywords() {
    // `r#type` is the keyword `type`, as a Python producer would send it.
    let r = run(
        move_point::actor(),
        json!([]),
        json!({"type": "up", "p": {"x": 4, "y": 4}}),
    )
    .await;
    assert_eq!(r.unwrap().unwrap(), json!({"x": 4, "y": 5}));
}

#[tokio::test]
async fn unit_results_are_null() {
    assert_eq!(
        run(nothing::actor(), json!([]), json!({}))
            .await
            .unwrap()
            .unwrap(),
        Value::Null
    );
}

#[tokio::test]
async fn retry_requests_keep_their_kind() {
    let e = run(asks_for_retry::actor(), json!([5]), json!({}))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        e.kind(),
        &FailureKind::Retry(Some(Duration::from_millis(5)))
    );
    let e = run(asks_for_retry::actor(), json!([]), json!({}))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), &FailureKind::Retry(None));
}

#[tokio::test]
async fn arguments_that_do_not_fit_are_args_errors() {
    let err = |args, kwargs| async move { run(add::actor(), args, kwargs).await.unwrap_err() };
    let e = err(json!(["one", 2]), json!({})).await;
    assert!(
        matches!(
            e,
            ArgsError::Invalid {
                name: "x",
                index: 0,
                ..
            }
        ),
        "{e}"
    );
    let e = err(json!([1, 2.5]), json!({})).await;
    assert!(
        matches!(
            e,
            ArgsError::Invalid {
                name: "y",
                index: 1,
                ..
            }
        ),
        "{e}"
    );
    let e = err(json!([1]), json!({})).await;
    assert!(matches!(e, ArgsError::Missing { name: "y", .. }), "{e}");
    let e = err(json!([1, 2, 3]), json!({})).await;
    assert!(
        matches!(
            e,
            ArgsError::TooMany {
                expected: 2,
                given: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = err(json!([1, 2]), json!({"z": 3})).await;
    assert!(
        matches!(e, ArgsError::UnexpectedKeyword { ref name, .. } if name == "z"),
        "{e}"
    );
    let e = err(json!([1, 2]), json!({"x": 3})).await;
    assert!(matches!(e, ArgsError::Duplicate { name: "x", .. }), "{e}");

    let e = run(nothing::actor(), json!([1]), json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ArgsError::TooMany {
                expected: 0,
                given: 1,
                ..
            }
        ),
        "{e}"
    );
    // An async actor's arguments are checked before its future exists.
    let e = run(sum_later::actor(), json!(["x"]), json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(e, ArgsError::Invalid { name: "values", .. }),
        "{e}"
    );
}

#[test]
fn malformed_containers_are_args_errors() {
    let args = serde_json::value::to_raw_value(&json!({"x": 1})).unwrap();
    let kwargs = serde_json::value::to_raw_value(&json!({})).unwrap();
    let m = Message::from_raw("default", "add", args, kwargs);
    let e = (add::actor().handler)(&m, &dq::States::default()).unwrap_err();
    assert!(matches!(e, ArgsError::Malformed(_)), "{e}");
}
