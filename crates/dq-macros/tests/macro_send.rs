//! `send`, `send_with_options`, `send_to` and `send_blocking` enqueue through an app, here on the
//! in-memory stub broker.
//!
//! Only `send_through_the_global_app` touches the process-wide global app, so the tests in this
//! binary cannot race on it.

use std::time::Duration;

use dq::broker::Broker;
use dq::middleware::{Hooks, Invocation, Middleware};
use dq::{App, Error, Message, SendOptions, StubBroker};
use serde_json::json;

use crate::actors::{add, send_welcome};

/// Declares the middleware options the test actors use, as a rate-limit middleware would.
pub(crate) struct DeclaresOptions;

impl Middleware for DeclaresOptions {
    fn name(&self) -> &str {
        "DeclaresOptions"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn actor_options(&self) -> &[&'static str] {
        &["rate_key", "weights"]
    }
}

fn app(broker: &StubBroker) -> App {
    App::builder(broker.clone())
        .middleware(DeclaresOptions)
        .build()
        .unwrap()
}

/// Everything on physical queue `queue`, acked, in order.
async fn take_all(broker: &StubBroker, queue: &str) -> Vec<Message> {
    let mut consumer = broker.consume(queue, 100).await.unwrap();
    let deliveries = consumer.fetch(Duration::from_secs(1)).await.unwrap();
    let tokens: Vec<_> = deliveries.iter().map(|d| d.token.clone()).collect();
    consumer.acker().ack(&tokens).await.unwrap();
    consumer.close().await.unwrap();
    deliveries
        .iter()
        .map(|d| Message::decode(&d.body).unwrap())
        .collect()
}

#[test]
fn options_no_middleware_declares_are_rejected_at_build() {
    let e = App::builder(StubBroker::new()).build().unwrap_err();
    assert!(
        matches!(&e, Error::UnknownActorOption { actor, option }
            if actor == "send_welcome" && (option == "rate_key" || option == "weights")),
        "{e}"
    );
}

#[tokio::test]
async fn send_to_enqueues_on_the_actor_queue() {
    let broker = StubBroker::new();
    let app = app(&broker);
    let sent = send_welcome::send_to(&app, "a@b.c".into(), Some(2))
        .await
        .unwrap();
    assert_eq!(sent.queue_name, "emails");
    assert_eq!(sent.actor_name, "send_welcome");

    let got = take_all(&broker, "emails").await;
    assert_eq!(got, [sent]);
    // What the producer sent is what the worker's handler takes.
    let Invocation::Sync(call) =
        (send_welcome::actor().handler)(&got[0], &dq::States::default()).unwrap()
    else {
        panic!("send_welcome is sync");
    };
    assert_eq!(call().unwrap(), json!(7));
}

#[test]
fn send_through_the_global_app() {
    assert!(
        matches!(add::send_blocking(1, 2), Err(Error::NoGlobalApp)),
        "no test but this one sets the global app"
    );
    let broker = StubBroker::new();
    app(&broker).set_global();

    // From plain synchronous code, without a runtime of our own.
    let blocking = add::send_blocking(1, 2).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sent = add::send(3, 4).await.unwrap();
        let undelayed = add::send_with_options(5, 6, SendOptions::new().max_retries(0))
            .await
            .unwrap();
        let got = take_all(&broker, "default").await;
        assert_eq!(got, [blocking, sent, undelayed.clone()]);
        assert_eq!(got[1].args_value().unwrap(), json!([3, 4]));
        assert_eq!(undelayed.options.max_retries(), Some(Some(0)));

        let before = dq::broker::now_ms();
        let delayed = send_welcome::send_with_options(
            "a@b.c".into(),
            None,
            SendOptions::new()
                .delay(Duration::from_secs(60))
                .on_failure("report_failure")
                .max_retries(7),
        )
        .await
        .unwrap();
        // Delayed: on the delay queue with an eta no earlier than the delay asks.
        assert_eq!(delayed.queue_name, "emails.DQ");
        assert!(delayed.options.eta().unwrap() >= before + 60_000);
        assert_eq!(delayed.options.on_failure(), Some("report_failure"));
        assert_eq!(delayed.options.max_retries(), Some(Some(7)));
        // The delay went to the broker, not into the options (Dramatiq does the same).
        assert_eq!(delayed.options.delay(), None);
        assert!(take_all(&broker, "emails").await.is_empty());
        assert_eq!(take_all(&broker, "emails.DQ").await, [delayed]);
    });
}
