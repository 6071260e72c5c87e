//! Pipelines: each stage's result goes to the next; results per stage and of the whole.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dq_broker_stub::StubBroker;
use dq_core::{pipeline, ActorError, FailureKind, Message, SendOptions};
use dq_results::{Error, MemoryBackend, MessageResult, PipelineResults, ResultBackend};
use serde_json::{json, Value};

use crate::support::{actor, app, results, worker, RedisNamespace};

sync_handler!(add, |x: i64, y: i64| Ok(json!(x + y)));
sync_handler!(double, |x: i64| Ok(json!(x * 2)));
sync_handler!(inc, |x: i64| Ok(json!(x + 1)));
sync_handler!(seven, || Ok(json!(7)));
sync_handler!(describe, |label: String, x: Value| Ok(json!(format!(
    "{label}={x}"
))));
sync_handler!(fail, |x: i64| Err(ActorError::new(
    FailureKind::Error,
    "ValueError",
    format!("cannot take {x}")
)));

fn msg(q: &str, actor: &str, args: Value) -> Message {
    Message::new(q, actor, &args, &()).unwrap()
}

async fn check_pipelines(backend: Arc<dyn ResultBackend>) {
    let q = dq_test::unique_name("pipes");
    let broker = StubBroker::new();
    let app = app(
        &broker,
        vec![results(&backend)],
        vec![
            actor("add", &q, add, |_| {}),
            actor("double", &q, double, |_| {}),
            actor("inc", &q, inc, |_| {}),
            actor("seven", &q, seven, |_| {}),
            actor("describe", &q, describe, |_| {}),
            actor("fail", &q, fail, |o| o.max_retries = Some(Some(0))),
        ],
    );
    let w = worker(&app, 4).await;
    let wait = Some(Duration::from_secs(20));

    // Each result is the next stage's last argument.
    let pipe = pipeline([
        msg(&q, "add", json!([1, 2])),
        msg(&q, "double", json!([])),
        msg(&q, "inc", json!([])),
        msg(&q, "describe", json!(["total"])),
    ])
    .run_with(&app, None)
    .await
    .unwrap();
    assert_eq!(
        pipe.get_result::<String>(&*backend, true, wait)
            .await
            .unwrap(),
        "total=7"
    );
    let each: Vec<Value> = pipe.get_results(&*backend, true, wait).await.unwrap();
    assert_eq!(each, [json!(3), json!(6), json!(7), json!("total=7")]);
    assert_eq!(pipe.completed_count(&*backend).await.unwrap(), 4);

    // Pipe notation, and pipe_ignore on a receiving message.
    let ignoring = {
        let mut m = msg(&q, "seven", json!([]));
        SendOptions::new()
            .pipe_ignore(true)
            .apply_to_message(&mut m);
        m
    };
    let pipe = (msg(&q, "inc", json!([1])) | ignoring | msg(&q, "double", json!([])))
        .run_with(&app, None)
        .await
        .unwrap();
    let each: Vec<i64> = pipe.get_results(&*backend, true, wait).await.unwrap();
    assert_eq!(each, [2, 7, 14]);
    // Stage results can be read by message too: ids survive the pipeline.
    let second = &pipe.messages()[1];
    assert_eq!(
        second
            .get_result::<i64>(&*backend, false, None)
            .await
            .unwrap(),
        7
    );

    // A failing stage stops the pipeline: its error, then nothing.
    let pipe = pipeline([
        msg(&q, "add", json!([1, 1])),
        msg(&q, "fail", json!([])),
        msg(&q, "double", json!([])),
    ])
    .run_with(&app, None)
    .await
    .unwrap();
    match pipe.messages()[1]
        .get_result::<i64>(&*backend, true, wait)
        .await
        .unwrap_err()
    {
        Error::Failure { message, .. } => assert_eq!(message, "cannot take 2"),
        other => panic!("expected a failure, got {other}"),
    }
    let e = pipe
        .get_results::<i64>(&*backend, true, wait)
        .await
        .unwrap_err();
    assert!(e.is_failure(), "{e}");
    let e = pipe
        .get_result::<i64>(&*backend, false, None)
        .await
        .unwrap_err();
    assert!(e.is_missing(), "{e}");
    assert_eq!(pipe.completed_count(&*backend).await.unwrap(), 1);
    w.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pipeline_passes_each_result_on() {
    check_pipelines(Arc::new(MemoryBackend::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pipeline_passes_each_result_on() {
    let ns = RedisNamespace::new("pipes");
    check_pipelines(Arc::new(ns.readable())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_delay_is_the_larger_of_run_and_first_message() {
    let backend: Arc<dyn ResultBackend> = Arc::new(MemoryBackend::default());
    let q = dq_test::unique_name("pipes-delay");
    let broker = StubBroker::new();
    let app = app(
        &broker,
        vec![results(&backend)],
        vec![
            actor("inc", &q, inc, |_| {}),
            actor("double", &q, double, |_| {}),
        ],
    );
    let w = worker(&app, 2).await;
    let mut first = msg(&q, "inc", json!([4]));
    SendOptions::new()
        .delay(Duration::from_millis(500))
        .apply_to_message(&mut first);
    let sent = Instant::now();
    let pipe = (first | msg(&q, "double", json!([])))
        .run_with(&app, Some(Duration::from_millis(100)))
        .await
        .unwrap();
    let r: i64 = pipe
        .get_result(&*backend, true, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(r, 10);
    assert!(sent.elapsed() >= Duration::from_millis(500));
    w.stop().await.unwrap();
}
