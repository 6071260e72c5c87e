//! Actors register themselves at link time.

use dq::middleware::{Actor, Registry};
use dq::Message;
use serde_json::json;

use crate::actors::{add, sum_later};

#[test]
fn linked_actors_are_in_the_registry() {
    let registry = Registry::from_linked().unwrap();
    for name in [
        "add",
        "send_welcome",
        "slow_sum",
        "move_point",
        "nothing",
        "asks_for_retry",
        "private_actor",
        "nested_actor",
        "through_renamed_path",
        "through_string_path",
    ] {
        assert!(registry.get(name).is_some(), "{name} is not registered");
    }
    // Registered under the wire name only.
    assert!(registry.get("sum_later").is_none());
    assert!(registry.get("compiled_out").is_none());

    let slow = registry.get(sum_later::NAME).unwrap();
    assert!(is_async(slow, json!([[1, 2]])));
    assert_eq!(slow.queue_name(), "emails");
    assert_eq!(slow.options.max_retries, Some(None));
    let add_actor = registry.get(add::NAME).unwrap();
    assert!(!is_async(add_actor, json!([1, 2])));
    assert_eq!(add_actor.priority(), 0);

    let queues = registry.queues();
    for q in ["default", "emails", "points", "nested", "renamed"] {
        assert!(queues.iter().any(|x| x == q), "{q} missing from {queues:?}");
    }
}

#[test]
fn actor_matches_its_parts() {
    let a = add::actor();
    assert_eq!(a.name, add::NAME);
    assert_eq!(a.queue_name(), add::QUEUE);
    assert!(!is_async(&a, json!([1, 2])));
    assert!(is_async(&sum_later::actor(), json!([[1, 2]])));
}

/// Whether the actor's handler prepares an async call for these arguments (the worker's one
/// source for where a message runs).
fn is_async(actor: &Actor, args: serde_json::Value) -> bool {
    let m = Message::new(actor.queue_name(), &actor.name, &args, &json!({})).unwrap();
    (actor.handler)(&m, &dq::States::default())
        .unwrap()
        .is_async()
}
