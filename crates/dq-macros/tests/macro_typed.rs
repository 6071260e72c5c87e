//! Typed messages and sends: the `Output` alias, `piped` stages and `dq::pipe`, which build the
//! same wire messages as the untyped APIs.

use std::time::Duration;

use dq::{pipeline, App, Message, SendOptions, Sent, Stage, StubBroker, TypedMessage};
use serde_json::{json, Value};

use crate::actors::typed::{label, opaque, scale, wraps, Output};
use crate::actors::{add, nothing, send_welcome, sum_later};

/// Compiles only when `T` and `U` are the same type.
fn same_type<T>(_: std::marker::PhantomData<T>, _: std::marker::PhantomData<T>) {}

fn of<T>() -> std::marker::PhantomData<T> {
    std::marker::PhantomData
}

#[test]
fn output_is_what_the_actor_returns_when_it_succeeds() {
    same_type(of::<add::Output>(), of::<i64>());
    // `Result<T, E>` and aliases of it (`io::Result<T>`) give `T`.
    same_type(of::<send_welcome::Output>(), of::<u64>());
    same_type(of::<sum_later::Output>(), of::<i64>());
    same_type(of::<scale::Output>(), of::<i64>());
    same_type(of::<nothing::Output>(), of::<()>());
    // The user's own `Output` type is not shadowed by the alias.
    same_type(of::<wraps::Output>(), of::<Output>());
    // `impl Trait` cannot be named: read as JSON.
    same_type(of::<opaque::Output>(), of::<Value>());

    let m: TypedMessage<Output> = wraps::message(Output(1)).unwrap();
    assert_eq!(m.args.get(), "[1]");
}

#[test]
fn piped_leaves_out_the_last_message_argument() {
    let stage: Stage<i64, i64> = scale::piped(3).unwrap();
    assert_eq!(stage.message().actor_name, "scale");
    assert_eq!(stage.message().queue_name, "typed");
    assert_eq!(stage.message().args.get(), "[3]");
    let stage: Stage<i64, String> = label::piped("n=".into(), 4).unwrap();
    assert_eq!(stage.message().args.get(), r#"["n=",4]"#);
    let stage: Stage<Output, Output> = wraps::piped().unwrap();
    assert_eq!(stage.message().args.get(), "[]");

    let opts = SendOptions::new()
        .max_retries(1)
        .delay(Duration::from_millis(20));
    let stage = label::piped_with_options("n=".into(), 4, opts).unwrap();
    assert_eq!(
        Value::from(stage.message().options.0.clone()),
        json!({"max_retries": 1, "delay": 20})
    );
}

#[test]
fn typed_pipelines_are_the_untyped_wire_messages() {
    let first = add::message(1, 2).unwrap();
    let second = scale::piped(10).unwrap();
    let third = label::piped("total: ".into(), 3).unwrap();
    let expected = pipeline([
        first.message().clone(),
        second.message().clone(),
        third.message().clone(),
    ]);
    let typed: dq::TypedPipeline<String> = dq::pipe(first).then(second).then(third);
    let built = typed.into_pipeline();
    assert_eq!(built, expected);
    let encoded: Vec<Value> = built.messages().iter().map(Message::to_value).collect();
    assert_eq!(encoded[0]["args"], json!([1, 2]));
    assert_eq!(encoded[0]["options"]["pipe_target"]["args"], json!([10]));
    assert_eq!(
        encoded[0]["options"]["pipe_target"]["options"]["pipe_target"]["args"],
        json!(["total: ", 3])
    );
}

#[tokio::test]
async fn sends_return_typed_handles_that_are_the_message() {
    let broker = StubBroker::new();
    let app = App::builder(broker.clone())
        .middleware(crate::macro_send::DeclaresOptions)
        .build()
        .unwrap();
    let sent: Sent<i64> = add::send_to(&app, 1, 2).await.unwrap();
    assert_eq!(sent.actor_name, "add");
    assert_eq!(sent.args.get(), "[1,2]");
    let message: Message = sent.clone().into_message();
    assert_eq!(message, sent);
    let sent: Sent<()> = app.scope(async { nothing::send().await.unwrap() }).await;
    assert_eq!(sent.message().actor_name, "nothing");
}
