//! `message` and `message_with_options` build the wire message Dramatiq would.

use std::time::Duration;

use dq::{Message, SendOptions};
use serde_json::{json, Value};

use crate::actors::{add, move_point, nested, nothing, send_welcome, sum_later, Point};

fn body(m: &Message) -> Value {
    serde_json::from_slice(&m.encode()).unwrap()
}

#[test]
fn arguments_are_positional() {
    let m = add::message(1, -2).unwrap();
    let v = body(&m);
    assert_eq!(v["queue_name"], "default");
    assert_eq!(v["actor_name"], "add");
    assert_eq!(v["args"], json!([1, -2]));
    assert_eq!(v["kwargs"], json!({}));
    assert_eq!(v["options"], json!({}));
    assert_eq!(v["message_id"].as_str().unwrap().len(), 36);
    assert!(v["message_timestamp"].as_i64().unwrap() > 0);

    let m = send_welcome::message("a@b.c".into(), None).unwrap();
    assert_eq!(m.queue_name, "emails");
    assert_eq!(m.args_value().unwrap(), json!(["a@b.c", null]));

    // A renamed actor sends under its wire name.
    let m = sum_later::message(vec![1, 2]).unwrap();
    assert_eq!(m.actor_name, "slow_sum");
    assert_eq!(m.args_value().unwrap(), json!([[1, 2]]));
}

#[test]
fn structs_and_no_arguments() {
    let m = move_point::message(Point { x: 1, y: 2 }, "up".into()).unwrap();
    assert_eq!(m.queue_name, "points");
    assert_eq!(m.args_value().unwrap(), json!([{"x": 1, "y": 2}, "up"]));
    assert_eq!(nothing::message().unwrap().args.get(), "[]");
    let m = nested::nested_actor::message(Point { x: 0, y: 0 }).unwrap();
    assert_eq!(m.queue_name, "nested");
}

#[test]
fn message_ids_are_fresh() {
    let a = add::message(1, 2).unwrap();
    let b = add::message(1, 2).unwrap();
    assert_ne!(a.message_id, b.message_id);
}

#[test]
fn message_with_options_merges_options_and_records_the_delay() {
    let opts = SendOptions::new()
        .delay(Duration::from_millis(1500))
        .max_retries(1)
        .on_success("print_result")
        .option("custom", "kept");
    let m = add::message_with_options(1, 2, opts).unwrap();
    let v = body(&m);
    assert_eq!(v["args"], json!([1, 2]));
    assert_eq!(
        v["options"],
        json!({"max_retries": 1, "on_success": "print_result", "custom": "kept", "delay": 1500})
    );
    // Building a message does not route it: it is on the actor's queue until sent with a delay.
    assert_eq!(m.queue_name, "default");
    assert!(m.options.eta().is_none());

    let m = nothing::message_with_options(SendOptions::new().unlimited_retries()).unwrap();
    assert_eq!(m.options.max_retries(), Some(None));
}
