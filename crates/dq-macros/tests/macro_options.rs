//! Attribute arguments land in `NAME`, `QUEUE` and `options()`.

use dq::{ActorError, FailureKind};
use serde_json::json;

use crate::actors::{add, move_point, nothing, send_welcome, sum_later, urgent};

#[test]
fn defaults() {
    assert_eq!(add::NAME, "add");
    assert_eq!(add::QUEUE, "default");
    let o = add::options();
    assert_eq!(o.queue_name, "default");
    assert_eq!(o.priority, 0);
    assert_eq!(o.max_retries, None);
    assert_eq!(o.time_limit, None);
    assert!(o.throws.is_empty());
    assert!(o.retry_when.is_none());
    assert!(o.extra.is_empty());
    assert_eq!(nothing::NAME, "nothing");
}

#[test]
fn every_builtin_option() {
    assert_eq!(send_welcome::QUEUE, "emails");
    let o = send_welcome::options();
    assert_eq!(o.queue_name, "emails");
    assert_eq!(o.priority, 10);
    assert_eq!(o.max_retries, Some(Some(3)));
    assert_eq!(o.min_backoff, Some(1000));
    assert_eq!(o.max_backoff, Some(60_000));
    assert_eq!(o.max_age, Some(3_600_000));
    assert_eq!(o.time_limit, Some(60_000));
    assert_eq!(o.store_results, Some(true));
    assert_eq!(o.result_ttl, Some(5000));
    assert_eq!(o.notify_shutdown, Some(true));
    assert_eq!(o.on_retry_exhausted.as_deref(), Some("welcome_exhausted"));
    // A type in `throws` is named as `ActorError::from_error` names its errors.
    assert_eq!(o.throws, ["BadInput", "OtherError"]);
}

#[test]
fn broker_priority_is_a_default_of_the_actors_messages() {
    assert_eq!(urgent::options().broker_priority, Some(7));
    assert_eq!(add::options().broker_priority, None);
    let m = urgent::message(1).unwrap().into_message();
    assert_eq!(m.options.broker_priority(), Some(7));
    let m = urgent::message_with_options(1, dq::SendOptions::default().broker_priority(2))
        .unwrap()
        .into_message();
    assert_eq!(m.options.broker_priority(), Some(2));
    assert!(add::message(1, 2)
        .unwrap()
        .into_message()
        .options
        .is_empty());
}

#[test]
fn retry_when_is_the_given_fn() {
    let retry_when = send_welcome::options().retry_when.expect("retry_when set");
    let other = ActorError::new(FailureKind::Error, "Timeout", "");
    let bad = ActorError::new(FailureKind::Error, "BadInput", "");
    assert!(retry_when(0, &other));
    assert!(!retry_when(2, &other));
    assert!(!retry_when(0, &bad));

    // A closure works too.
    let closure = crate::actors::asks_for_retry::options()
        .retry_when
        .expect("retry_when set");
    assert!(closure(4, &other));
    assert!(!closure(5, &other));
}

#[test]
fn unknown_options_go_to_extra_as_json() {
    let o = send_welcome::options();
    assert_eq!(o.extra.len(), 2);
    assert_eq!(o.extra["rate_key"], json!("welcome"));
    assert_eq!(o.extra["weights"], json!([1, -2, 2.5, "a", true, null]));
}

#[test]
fn none_max_retries_means_unlimited() {
    assert_eq!(sum_later::options().max_retries, Some(None));
}

#[test]
fn actor_name_and_expressions() {
    // `actor_name` renames the actor on the wire; the fn and module keep the Rust name.
    assert_eq!(sum_later::NAME, "slow_sum");
    // A constant and an arithmetic expression are accepted where literals are.
    assert_eq!(sum_later::QUEUE, "emails");
    let o = move_point::options();
    assert_eq!(o.time_limit, Some(60_000));
    assert_eq!(o.priority, -5);
    assert_eq!(o.queue_name, "points");
}

// `crate = ...` points generated code at dq under another path, as a crate that re-exports dq
// (or dq itself) needs.
use ::dq as renamed_dq;

#[dq::actor(crate = renamed_dq, queue_name = "renamed")]
fn through_renamed_path(n: u8) -> u8 {
    n
}

#[dq::actor(crate = "renamed_dq")]
fn through_string_path() {}

#[test]
fn crate_path_override() {
    assert_eq!(through_renamed_path::options().queue_name, "renamed");
    assert_eq!(through_renamed_path::actor().name, "through_renamed_path");
    assert_eq!(through_string_path::NAME, "through_string_path");
}
