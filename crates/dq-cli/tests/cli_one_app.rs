//! One app definition for the worker command and the producer ([`Cli::app`],
//! [`Cli::build_app`]): the `one_app_worker` binary's worker processes run what a producer
//! built from the same function sent, with that function's middleware on both sides and its
//! state in the worker; and both sides fail the same way, with the same exit codes.

use dq_cli::{Cli, Error};

use super::*;

#[path = "../examples/support/one_app.rs"]
mod one_app;

/// What `record` writes when both sides had the app function's middleware and state.
fn expected_mark() -> String {
    format!("{} hello from the app function", one_app::RELEASE)
}

/// The environment a deployment gives both binaries: the broker and its namespace, no flags.
fn deployment_env(scope: &Scope) -> Vec<(&'static str, String)> {
    vec![
        (dq_cli::REDIS_URL_ENV, scope.url.clone()),
        (dq_cli::REDIS_NAMESPACE_ENV, scope.namespace.clone()),
    ]
}

fn as_pairs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The `one_app_worker` binary as a producer: builds the app, sends `record(dir, name)`, exits.
fn produce(scope: &Scope, env: &[(&str, &str)], name: &str) -> Output {
    Command::new(example("one_app_worker"))
        .args([scope.dir_str(), name.to_owned()])
        .env("DQ_TEST_ROLE", "send")
        .env_remove(dq_cli::AMQP_URL_ENV)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_worker_runs_what_a_producer_of_the_same_app_sent() {
    let scope = Scope::new("cli-oneapp");
    let env = deployment_env(&scope);
    let mut worker = Running::start(
        &example("one_app_worker"),
        &["-p", "1", "-t", "2"].map(String::from),
        &as_pairs(&env),
    );
    worker.wait_ready(1).await;

    // A producer binary with the same environment and the same app function.
    let out = produce(&scope, &as_pairs(&env), "from-a-producer-binary");
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A producer in this process, on the broker set in code, from the same function.
    let (url, namespace) = (scope.url.clone(), scope.namespace.clone());
    let app = Cli::new()
        .broker(move || {
            RedisBroker::builder()
                .url(url.clone())
                .namespace(namespace.clone())
                .build()
        })
        .app(one_app::app)
        .build_app()
        .await
        .unwrap();
    assert!(app.states().get::<one_app::Greeting>().is_some());
    one_app::record::send_to(&app, scope.dir_str(), "from-this-process".to_owned())
        .await
        .unwrap();

    for name in ["from-a-producer-binary", "from-this-process"] {
        let path = scope.file(name);
        let written = dq_test::wait_until_async(PATIENCE, || {
            let exists = path.exists();
            async move { exists }
        })
        .await;
        assert!(
            written,
            "{name} never ran; worker output:\n{}",
            worker.output()
        );
        assert_eq!(
            std::fs::read_to_string(scope.file(name)).unwrap(),
            expected_mark(),
            "{name}"
        );
    }
    worker.signal(Signal::SIGTERM);
    assert_eq!(worker.wait_exit().await, 0, "{}", worker.output());
    app.close().await.unwrap();
}

#[tokio::test]
async fn an_app_function_that_fails_stops_both_sides_with_code_2() {
    let scope = Scope::new("cli-oneapp-fail");
    let deployment = deployment_env(&scope);
    let mut env = as_pairs(&deployment);
    env.push((one_app::FAIL_ENV, "1"));

    let mut worker = Running::start(
        &example("one_app_worker"),
        &["-p", "1"].map(String::from),
        &env,
    );
    assert_eq!(worker.wait_exit().await, 2, "{}", worker.output());
    let log = worker.output();
    assert!(log.contains("The app function failed"), "{log}");
    assert!(
        log.contains("the test asked the app function to fail"),
        "{log}"
    );
    assert!(!log.contains("ready for action"), "{log}");

    let out = produce(&scope, &env, "never");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the app function failed"), "{stderr}");

    let e = Cli::new()
        .broker(|| async { Ok::<_, dq_core::BrokerError>(dq::StubBroker::new()) })
        .app(one_app::app)
        .app(|_| Err::<dq_core::AppBuilder, _>("a second function fails too"))
        .build_app()
        .await
        .unwrap_err();
    // Functions run in the order given: the first one succeeds in this process (only the
    // child processes have the variable), the second one's error is reported.
    assert!(matches!(e, Error::AppFn(_)), "{e:?}");
    assert_eq!(e.exit_code(), 2);
    let text = dq_core::ErrorChain(&e).to_string();
    assert_eq!(text, "the app function failed: a second function fails too");
}

#[tokio::test]
async fn a_producer_fails_like_the_worker_command_on_a_bad_or_absent_broker() {
    let scope = Scope::new("cli-oneapp-broker");

    // From the environment, as the worker command reads it.
    let out = produce(
        &scope,
        &[(dq_cli::REDIS_URL_ENV, "redis://:s3cret@127.0.0.1:1")],
        "never",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot reach the broker"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");

    let out = produce(
        &scope,
        &[(dq_cli::REDIS_URL_ENV, "kafka://127.0.0.1")],
        "never",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid broker settings"), "{stderr}");

    // From a broker set in code.
    let e = Cli::new()
        .broker(|| RedisBroker::builder().url("redis://127.0.0.1:1").build())
        .build_app()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BrokerUnreachable(_)), "{e:?}");
    assert_eq!(e.exit_code(), dq_cli::exit::BROKER);
    let url = scope.url.clone();
    let e = Cli::new()
        .broker(move || RedisBroker::builder().url(url.clone()).pool_size(0).build())
        .build_app()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BrokerSettings(_)), "{e:?}");
    assert_eq!(e.exit_code(), dq_cli::exit::USAGE);
}
