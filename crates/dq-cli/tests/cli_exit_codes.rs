//! The worker command's exit codes 2, 3 and 4 (Dramatiq's), and what it says with them.

use super::*;

/// Runs the test worker with `args` (and no broker flags) to its end.
async fn run_worker(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut w = Running::start(&example("test_worker"), &args, envs);
    let code = w.wait_exit().await;
    (code, w.output())
}

#[tokio::test]
async fn a_bad_flag_is_code_2() {
    let (code, out) = run_worker(&["--threads", "zero"], &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("invalid value 'zero'"), "{out}");
    let (code, out) = run_worker(&["--no-such-flag"], &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--no-such-flag"), "{out}");
    let (code, out) = run_worker(&["--watch", "/no/such/dir", "-p", "1"], &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Cannot watch /no/such/dir"), "{out}");
    let (code, out) = run_worker(&["-b", "kafka://127.0.0.1", "-p", "1"], &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unsupported broker url"), "{out}");
}

#[tokio::test]
async fn a_bad_actor_is_code_2() {
    let scope = Scope::new("cli-badactor");
    let mut args = scope.broker_args();
    args.extend(["-p", "2", "-t", "1"].map(String::from));
    let mut w = Running::start(
        &example("test_worker"),
        &args,
        &[("DQ_TEST_WORKER_BAD_ACTOR", "1")],
    );
    assert_eq!(w.wait_exit().await, 2, "{}", w.output());
    let out = w.output();
    assert!(out.contains("Invalid actor definitions"), "{out}");
    assert!(out.contains("no_such_option"), "{out}");
    assert!(!out.contains("ready for action"), "{out}");
}

#[tokio::test]
async fn an_unreachable_broker_at_startup_is_code_3_with_the_address() {
    let (code, out) = run_worker(&["-b", "redis://:s3cret@127.0.0.1:1", "-p", "1"], &[]).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("Cannot reach the broker"), "{out}");
    assert!(out.contains("127.0.0.1:1"), "{out}");
    assert!(!out.contains("s3cret"), "the password leaked: {out}");

    let url = "amqp://guest:s3cret@127.0.0.1:1/%2f";
    let (code, out) = run_worker(&["-b", url, "-p", "1"], &[]).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("Cannot reach the broker"), "{out}");
    assert!(!out.contains("s3cret"), "the password leaked: {out}");
}

#[tokio::test]
async fn a_pid_file_naming_a_running_process_is_code_4() {
    let scope = Scope::new("cli-pidfile");
    let path = scope.file("dq.pid");
    let path_arg = path.to_str().unwrap();

    let mut other = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(&path, format!("{}\n", other.id())).unwrap();
    let mut args = scope.broker_args();
    args.extend(["-p", "1", "--pid-file", path_arg].map(String::from));
    let mut w = Running::start(&example("test_worker"), &args, &[]);
    assert_eq!(w.wait_exit().await, 4, "{}", w.output());
    assert!(
        w.output().contains("is dq already running?"),
        "{}",
        w.output()
    );
    assert!(!w.output().contains("ready for action"), "{}", w.output());
    // Someone else's pid file is left alone.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        other.id().to_string()
    );
    other.kill().unwrap();
    other.wait().unwrap();

    // Now stale: taken over, holding the main process's pid while it runs, removed at exit.
    let mut w = Running::start(&example("test_worker"), &args, &[]);
    w.wait_ready(1).await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        w.pid().to_string()
    );
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    assert!(!path.exists(), "the pid file was left behind");
}
