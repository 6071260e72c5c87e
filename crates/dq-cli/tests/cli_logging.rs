//! `--log-file`: every process's lines, in Dramatiq's format, go to one file.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_file_gets_every_process_lines() {
    let scope = Scope::new("cli-logfile");
    let log = scope.file("dq.log");
    let mut w = Running::worker(
        &scope,
        &example("test_worker"),
        &["-p", "2", "-t", "1", "--log-file", log.to_str().unwrap()],
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let ready = dq_test::wait_until_async(PATIENCE, || {
        let n = read()
            .matches("Worker process is ready for action.")
            .count();
        async move { n == 2 }
    })
    .await;
    assert!(ready, "{}", read());
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0);
    let text = read();
    let booting = format!(
        "[dq.MainProcess] [INFO] Dq '{}' is booting up.",
        env!("CARGO_PKG_VERSION")
    );
    for needle in [
        booting.as_str(),
        "[dq.WorkerProcess(0)] [INFO] Worker process is ready for action.",
        "[dq.WorkerProcess(1)] [INFO] Worker process stopped.",
        "[dq.MainProcess] [INFO] Dq is shutting down (exit code 0).",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
    assert!(
        text.lines()
            .all(|l| l.starts_with("[20") && l.contains("] [PID ")),
        "{text}"
    );
    assert_eq!(w.output(), "", "nothing goes to the terminal");
}
