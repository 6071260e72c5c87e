//! # dq-fuzz
//!
//! The bodies of dq's fuzz targets: each takes arbitrary bytes and must return without
//! panicking, hanging or allocating without bound, whatever the bytes are.
//!
//! **Key design decision:** the bodies are plain fns in a workspace crate, called by two
//! drivers: the libFuzzer targets in `fuzz/` (their own workspace, nightly, run by
//! `cargo xtask fuzz`) and this crate's test, which replays every committed corpus and
//! regression input plus deterministic mutations of them on stable, in `cargo xtask test`. So a
//! crash found by a long fuzz run becomes a regression test by committing its input.
//!
//! ```
//! for target in dq_fuzz::TARGETS {
//!     (target.run)(b"{\"args\": [1]}");
//! }
//! ```
//!
//! | target | what it exercises |
//! |---|---|
//! | `message_decode` | `Message::decode`, and encode/decode round trips of what decodes |
//! | `actor_args` | the argument decoding `#[dq::actor]` generates, on arbitrary args and kwargs |
//! | `redis_dispatch` | RESP bytes read as the Redis dispatch script's fetch reply |
//! | `amqp_properties` | AMQP basic properties read as the broker does (`x-death`), and the priority a message is published with |
//! | `send_args` | `dq send --args/--kwargs/--options` parsing |

use dq::{Message, States};

mod actors;

/// A fuzz target: its name (the directory of its corpus, `fuzz/corpus/NAME`) and its body.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The target's name, as `cargo fuzz run` and `cargo xtask fuzz --target` know it.
    pub name: &'static str,
    /// The body: any bytes at all.
    pub run: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "message_decode",
        run: message_decode,
    },
    Target {
        name: "actor_args",
        run: actor_args,
    },
    Target {
        name: "redis_dispatch",
        run: redis_dispatch,
    },
    Target {
        name: "amqp_properties",
        run: amqp_properties,
    },
    Target {
        name: "send_args",
        run: send_args,
    },
];

/// `Message::decode`; what decodes must encode to bytes that decode to the same message.
pub fn message_decode(data: &[u8]) {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    let bytes = message.encode();
    let again = Message::decode(&bytes).expect("an encoded message decodes");
    assert_eq!(
        again.encode(),
        bytes,
        "encoding is stable across a round trip"
    );
}

/// The handlers `#[dq::actor]` generates, fed a message whose args and kwargs come from the
/// input: the first byte picks the actor, the rest is `ARGS\nKWARGS` (each any JSON, so not only
/// arrays and objects). A call that decodes runs, when it is a blocking one.
pub fn actor_args(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (args, kwargs) = text.split_once('\n').unwrap_or((&text, "{}"));
    let (Ok(args), Ok(kwargs)) = (
        serde_json::from_str::<Box<serde_json::value::RawValue>>(args),
        serde_json::from_str::<Box<serde_json::value::RawValue>>(kwargs),
    ) else {
        return;
    };
    let all = actors::all();
    let actor = &all[usize::from(pick) % all.len()];
    let message = Message::from_raw("default", &actor.name, args, kwargs);
    if let Ok(dq::middleware::Invocation::Sync(call)) =
        (actor.handler)(&message, &States::default())
    {
        // The bodies only look at their arguments; an error result is as good as a value.
        let _ = call();
    }
}

/// RESP bytes read as the Redis dispatch script's `fetch` reply.
pub fn redis_dispatch(data: &[u8]) {
    if let Some((deliveries, orphans)) = dq::redis::__fuzz::fetch_reply(data) {
        assert!(
            deliveries + orphans <= data.len(),
            "every entry came from the input"
        );
    }
}

/// AMQP basic properties read as the broker reads a delivery's; and when the input is a
/// message, the properties it would be published with.
pub fn amqp_properties(data: &[u8]) {
    let _ = dq::amqp::__fuzz::delivery_properties(data);
    if let Ok(message) = Message::decode(data) {
        let (priority, persistent) = dq::amqp::__fuzz::publish_priority(&message);
        assert!(persistent, "dq publishes persistent messages");
        assert_eq!(priority, message.options.broker_priority());
    }
}

/// `dq send --args A --kwargs K --options O`, the three texts split from the input at
/// newlines (no third line: no `--options`). What builds must be a message that decodes.
pub fn send_args(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let args = parts.next().unwrap_or("");
    let kwargs = parts.next().unwrap_or("{}");
    let options = parts.next();
    if let Ok(message) = dq::cli::admin::send_message("default", "fuzzed", args, kwargs, options) {
        let bytes = message.encode();
        Message::decode(&bytes).expect("a message dq send builds decodes");
    }
}
