//! `--watch`: a source change runs the build command, and a successful build reloads the worker
//! processes from the binary's path, so they run the new code. The "build" here swaps in the
//! `test_worker_v2` binary (no cargo inside tests), or fails on demand.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_rebuilds_and_reloads_and_a_failed_build_keeps_the_old_workers() {
    let scope = Scope::new("cli-watch");
    let broker = scope.broker().await;
    let src = scope.file("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("lib.rs"), "fn v1() {}\n").unwrap();
    let bin = scope.file("worker");
    std::fs::copy(example("test_worker"), &bin).unwrap();
    // Replaced by a rename, as cargo does: the running file cannot be written to.
    let build = scope.file("build.sh");
    std::fs::write(
        &build,
        format!(
            "if [ -e {fail} ]; then echo 'error[E0308]: mismatched types' >&2; exit 101; fi\n\
             cp {v2} {bin}.new && mv {bin}.new {bin}\n",
            fail = scope.file("fail").display(),
            v2 = example("test_worker_v2").display(),
            bin = bin.display(),
        ),
    )
    .unwrap();
    let command = format!("sh {}", build.display());
    let mut w = Running::worker(
        &scope,
        &bin,
        &[
            "-p",
            "1",
            "-t",
            "1",
            "--watch",
            src.to_str().unwrap(),
            "--watch-build-command",
            &command,
        ],
    );
    let first = w.wait_ready(1).await;

    // A failed build: reported with the compiler's output; the old worker keeps working.
    std::fs::write(scope.file("fail"), "").unwrap();
    std::fs::write(src.join("lib.rs"), "fn v2() { oops }\n").unwrap();
    w.wait_lines("Build failed", 1).await;
    assert!(w.output().contains("error[E0308]: mismatched types"));
    scope
        .send(&broker, "default", "touch", "after-failure")
        .await;
    assert_eq!(
        scope.wait_mark("after-failure").await,
        ("v1".to_owned(), first[0])
    );
    assert_eq!(w.ready_pids(), first, "{}", w.output());

    // A good build: the worker process is replaced by one running the new binary.
    std::fs::remove_file(scope.file("fail")).unwrap();
    std::fs::write(src.join("lib.rs"), "fn v2() {}\n").unwrap();
    w.wait_lines("Build succeeded: reloading worker processes.", 1)
        .await;
    let all = w.wait_ready(2).await;
    wait_gone(first[0]).await;
    scope.send(&broker, "default", "touch", "after-build").await;
    assert_eq!(
        scope.wait_mark("after-build").await,
        ("v2".to_owned(), all[1])
    );

    // Files the filter leaves out (and the binary itself) change nothing.
    std::fs::write(src.join("notes.txt"), "").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.count("Changes detected"), 2, "{}", w.output());

    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
}
