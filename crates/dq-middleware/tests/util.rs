//! Shared setup: an app on a stub broker with hand-registered actors, and queue readers.

use std::sync::Arc;
use std::time::Duration;

use dq_broker_stub::StubBroker;
use dq_core::{
    Actor, ActorError, ActorOptions, App, ArgsError, Broker, FailureKind, Invocation, Job, Message,
    Middleware, Outcome,
};
use serde_json::Value;

fn handler(_: &Message, _: &dq_core::States) -> Result<Invocation, ArgsError> {
    Ok(Invocation::Sync(Box::new(|| Ok(Value::Null))))
}

/// An actor named `name` on `queue`, with `options` (queue name overridden).
pub(crate) fn actor(name: &str, queue: &str, options: ActorOptions) -> Actor {
    Actor::new(
        name.to_owned(),
        ActorOptions {
            queue_name: queue.to_owned(),
            ..options
        },
        handler,
    )
}

/// An app on a fresh stub broker with `middleware` and `actors`, and no linked actors.
pub(crate) fn app(middleware: Vec<Arc<dyn Middleware>>, actors: Vec<Actor>) -> (App, StubBroker) {
    app_with_limit(middleware, actors, dq_core::DEFAULT_MAX_MESSAGE_SIZE)
}

/// Like [`app`], with a message size limit (a tiny one makes every enqueue fail).
pub(crate) fn app_with_limit(
    middleware: Vec<Arc<dyn Middleware>>,
    actors: Vec<Actor>,
    max_message_size: usize,
) -> (App, StubBroker) {
    let broker = StubBroker::new();
    let mut builder = App::builder(broker.clone())
        .without_linked_actors()
        .middleware_arcs(middleware)
        .max_message_size(max_message_size);
    for a in actors {
        builder = builder.actor(a);
    }
    (builder.build().expect("app builds"), broker)
}

/// A job for `message`, handled by its actor in `app`.
pub(crate) fn job(app: &App, message: Message) -> Job {
    let actor = app
        .actor(&message.actor_name)
        .expect("actor is registered")
        .clone();
    Job::new(message, actor)
}

/// An ordinary failure.
pub(crate) fn failure(type_name: &'static str, text: &str) -> Outcome {
    Outcome::Failure(ActorError::new(FailureKind::Error, type_name, text))
}

/// Takes (and acks) every message waiting on physical queue `queue`.
pub(crate) async fn take_all(broker: &StubBroker, queue: &str) -> Vec<Message> {
    let mut consumer = broker.consume(queue, 1000).await.expect("consume");
    let deliveries = consumer.fetch(Duration::ZERO).await.expect("fetch");
    let tokens: Vec<_> = deliveries.iter().map(|d| d.token.clone()).collect();
    consumer.acker().ack(&tokens).await.expect("ack");
    consumer.close().await.expect("close");
    deliveries
        .iter()
        .map(|d| Message::decode(&d.body).expect("decodes"))
        .collect()
}

/// How many messages wait on canonical queue `queue`: (ready, delayed).
pub(crate) async fn counts(broker: &StubBroker, queue: &str) -> (u64, u64) {
    let s = broker.stats(queue).await.expect("stats");
    (s.ready, s.delayed)
}
