//! Bad input at the edges a user touches: the worker command's flags, the environment it and
//! `dq` read, broker URLs, and `dq`'s arguments. Each case runs the real binary and wants the
//! documented exit code, a short message that says what is wrong, and never a panic, a
//! backtrace or a Rust type dump.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;

use serde_json::Value;

use super::*;

/// What no user should ever see.
const NEVER: &[&str] = &[
    "panicked",
    "RUST_BACKTRACE",
    "stack backtrace",
    "{ kind:",
    "Os { code",
    "Error {",
];

/// Cases running at once: enough to be quick, few enough for two cores.
const AT_ONCE: usize = 6;

/// The variables the binaries read, cleared so the cases do not depend on the test's
/// environment.
const CLEARED: &[&str] = &[
    "DQ_REDIS_URL",
    "DQ_AMQP_URL",
    "DQ_REDIS_NAMESPACE",
    "DQ_RESULTS_NAMESPACE",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// One run of a binary and what it must do.
#[derive(Clone, Debug)]
struct Case {
    args: Vec<String>,
    envs: Vec<(String, OsString)>,
    code: i32,
    /// A piece of the message, matched ignoring case.
    says: String,
    /// Must not appear (a password).
    hides: Option<String>,
    /// At most this many lines of output.
    max_lines: usize,
}

fn case(args: &[&str], code: i32, says: &str) -> Case {
    Case {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        envs: Vec::new(),
        code,
        says: says.to_owned(),
        hides: None,
        max_lines: 8,
    }
}

impl Case {
    fn env(self, var: &str, value: &str) -> Case {
        self.env_os(var, OsString::from(value))
    }

    fn env_os(mut self, var: &str, value: OsString) -> Case {
        self.envs.push((var.to_owned(), value));
        self
    }

    fn hides(mut self, secret: &str) -> Case {
        self.hides = Some(secret.to_owned());
        self
    }

    fn max_lines(mut self, n: usize) -> Case {
        self.max_lines = n;
        self
    }

    /// Puts `args` before this case's own.
    fn after(mut self, args: &[String]) -> Case {
        let mut all = args.to_vec();
        all.append(&mut self.args);
        self.args = all;
        self
    }
}

/// Runs `program` as `case` says, to its end; returns its exit code and output (stdout, then
/// stderr).
async fn run(program: &Path, case: &Case) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&case.args).env("dramatiq_prom_port", "0");
    for var in CLEARED {
        cmd.env_remove(var);
    }
    cmd.envs(case.envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{case:?} did not exit"))
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("{case:?} was killed by a signal:\n{text}"));
    (code, text)
}

/// What is wrong with `out`, the output of `case` that exited with `code`.
fn judge(case: &Case, code: i32, out: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    if code != case.code {
        wrong.push(format!("exit code {code}, not {}", case.code));
    }
    if !out.to_lowercase().contains(&case.says.to_lowercase()) {
        wrong.push(format!("does not say {:?}", case.says));
    }
    for never in NEVER {
        if out.contains(never) {
            wrong.push(format!("says {never:?}"));
        }
    }
    if let Some(secret) = &case.hides {
        if out.contains(secret.as_str()) {
            wrong.push(format!("shows the secret {secret:?}"));
        }
    }
    let lines = out.lines().count();
    if lines > case.max_lines {
        wrong.push(format!("{lines} lines, more than {}", case.max_lines));
    }
    if lines == 0 {
        wrong.push("says nothing".to_owned());
    }
    wrong
}

/// Runs every case, a few at once, and fails listing each case that went wrong.
async fn run_all(program: &Path, cases: Vec<Case>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut runs = Vec::new();
    for case in cases {
        let permits = permits.clone();
        let program = program.to_owned();
        runs.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let (code, out) = run(&program, &case).await;
            (case, code, out)
        }));
    }
    let mut failures = Vec::new();
    for r in runs {
        let (case, code, out) = r.await.unwrap();
        let wrong = judge(&case, code, &out);
        if !wrong.is_empty() {
            // The output may be huge (that is one thing a case checks): show its start.
            let shown: String = out.chars().take(2000).collect();
            failures.push(format!(
                "{} {:?} (env {:?}): {}\n{shown}",
                program.file_name().unwrap().to_string_lossy(),
                case.args,
                case.envs,
                wrong.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// A path under a directory that does not exist, and one nobody can create a file in (even
/// root, which these tests may run as).
const MISSING_DIR: &str = "/no/such/dir";
const NO_FILES_HERE: &str = "/proc/dq-edges";

#[tokio::test]
async fn worker_flags_with_bad_values() {
    let scope = Scope::new("cli-edges-flags");
    let dir = scope.dir_str();
    let file = scope.file("a-file");
    std::fs::write(&file, "").unwrap();
    let file = file.to_str().unwrap();
    let broker = scope.broker_args();
    let pid_missing = format!("{MISSING_DIR}/dq.pid");
    let pid_proc = format!("{NO_FILES_HERE}.pid");
    let log_missing = format!("{MISSING_DIR}/dq.log");
    let log_proc = format!("{NO_FILES_HERE}.log");
    let cases = vec![
        case(
            &["--threads", "zero"],
            2,
            "invalid value 'zero' for '--threads <N>'",
        ),
        case(&["--threads", "-1"], 2, "unexpected argument '-1'"),
        case(
            &["--threads", ""],
            2,
            "invalid value '' for '--threads <N>'",
        ),
        case(&["--threads", "0"], 2, "0 is not in 1..=65535"),
        case(
            &["--threads", "99999999999999999999"],
            2,
            "number too large",
        ),
        case(
            &["--threads", "1", "--threads", "2"],
            2,
            "cannot be used multiple times",
        ),
        case(&["--processes", "0"], 2, "0 is not in 1..=1024"),
        case(&["-p", "2000"], 2, "2000 is not in 1..=1024"),
        case(&["-p", "abc"], 2, "invalid value 'abc'"),
        case(
            &["--worker-shutdown-timeout", "-5"],
            2,
            "unexpected argument '-5'",
        ),
        case(&["--worker-shutdown-timeout", "1.5"], 2, "invalid digit"),
        case(
            &["--worker-shutdown-timeout", "99999999999999999999"],
            2,
            "number too large",
        ),
        case(
            &["--no-such-flag"],
            2,
            "unexpected argument '--no-such-flag'",
        ),
        case(&["stray"], 2, "unexpected argument 'stray'"),
        case(&["--watch-build-command", "make"], 2, "--watch <DIR>"),
        case(&["-i", "*.rs"], 2, "--watch <DIR>"),
        case(&["-Q", "bad name"], 2, "queue names match"),
        case(&["--queues", ""], 2, "queue names match"),
        case(&["-Q", "default,"], 2, "queue names match"),
        case(&["-Q", "9lives"], 2, "queue names match"),
        case(&["-Q"], 2, "a value is required"),
        case(&["--pid-file", &pid_missing, "-p", "1"], 4, &pid_missing)
            .max_lines(3)
            .after(&broker),
        case(&["--pid-file", &pid_proc, "-p", "1"], 4, &pid_proc)
            .max_lines(3)
            .after(&broker),
        case(&["--pid-file", &dir, "-p", "1"], 4, "is a directory")
            .max_lines(3)
            .after(&broker),
        case(&["--log-file", &log_missing], 2, "cannot open log file"),
        case(&["--log-file", &log_proc], 2, "cannot open log file"),
        case(&["--log-file", &dir], 2, "is a directory"),
        case(
            &["--watch", MISSING_DIR, "-p", "1"],
            2,
            "Cannot watch /no/such/dir",
        )
        .after(&broker),
        case(&["--watch", file, "-p", "1"], 2, "not a directory").after(&broker),
        // The binary installed no subscriber: the error is still shown, as a WARNING or ERROR
        // is by Python's last-resort handler.
        case(
            &["--skip-logging", "-b", "kafka://x", "-p", "1"],
            2,
            "unsupported broker url",
        ),
        // Valid names no actor uses: the documented code 2, from the worker process.
        case(
            &["-Q", "nobody_uses_this", "-p", "1"],
            2,
            "no queues to consume",
        )
        .after(&broker),
    ];
    run_all(&example("test_worker"), cases).await;
}

/// Every broker URL case, for both binaries: `dq` says it on one line.
fn url_cases() -> Vec<Case> {
    let long_host = format!("redis://{}:6379", "a".repeat(5000));
    let secret = "s3cret";
    vec![
        case(&[""], 2, "the broker url is empty"),
        case(&["   "], 2, "the broker url is empty"),
        case(&["127.0.0.1:6379"], 2, "the broker url has no scheme"),
        case(&["hunter2"], 2, "has no scheme").hides("hunter2"),
        case(&["redis:/127.0.0.1"], 2, "has no scheme"),
        case(
            &["kafka://user:s3cret@host"],
            2,
            "unsupported broker url kafka://",
        )
        .hides(secret),
        case(&["http://x"], 2, "unsupported broker url http://x"),
        case(&["redis://"], 2, "invalid redis url"),
        case(&["redis://:99999"], 2, "invalid redis url"),
        case(&["redis://127.0.0.1:99999"], 2, "invalid redis url"),
        case(&["redis://127.0.0.1:abc"], 2, "invalid redis url"),
        case(&["redis://[::1"], 2, "invalid redis url"),
        case(&["redis://h\nx"], 2, "a space or a control character"),
        case(
            &["redis://127.0.0.1:1/0 x"],
            2,
            "a space or a control character",
        ),
        case(&[" redis://127.0.0.1:1\n"], 3, "cannot reach the broker"),
        case(
            &["redis://127.0.0.1:6379/abc"],
            2,
            "invalid database number",
        ),
        case(
            &["redis://127.0.0.1:6379?protocol=x"],
            2,
            "invalid protocol",
        ),
        case(&["redis+unix://"], 2, "invalid redis url"),
        case(
            &["redis+unix:///no/such.sock"],
            3,
            "cannot reach the broker",
        ),
        case(&["unix:///no/such.sock"], 3, "cannot reach the broker"),
        case(
            &["redis://:s3cret@127.0.0.1:1"],
            3,
            "cannot reach the broker",
        )
        .hides(secret),
        case(
            &["redis://%zz%00@127.0.0.1:1"],
            3,
            "cannot reach the broker",
        ),
        case(&["redis://[::1]:1"], 3, "cannot reach the broker"),
        case(&[long_host.as_str()], 3, "cannot reach the broker"),
        case(&["amqp://127.0.0.1:99999"], 2, "invalid amqp url"),
        case(&["amqp://:abc"], 2, "invalid amqp url"),
        case(
            &["amqp://127.0.0.1:5672/%2f?heartbeat=abc"],
            2,
            "invalid amqp url",
        ),
        case(
            &["amqp://guest:s3cret@127.0.0.1:1/%2f"],
            3,
            "cannot reach the broker",
        )
        .hides(secret),
    ]
}

#[tokio::test]
async fn broker_urls_the_worker_cannot_use() {
    let cases = url_cases()
        .into_iter()
        .map(|mut c| {
            c.args = vec!["-b".into(), c.args[0].clone(), "-p".into(), "1".into()];
            c
        })
        .collect();
    run_all(&example("test_worker"), cases).await;
}

#[tokio::test]
async fn broker_urls_dq_cannot_use() {
    let cases = url_cases()
        .into_iter()
        .map(|c| {
            let url = c.args[0].clone();
            let mut c = c.max_lines(1);
            c.args = vec!["-b".into(), url, "queues".into()];
            c
        })
        .collect();
    run_all(&dq_bin(), cases).await;
}

/// Bad values in the variables both binaries read: as a flag's would be, and naming the
/// variable.
fn env_cases() -> Vec<Case> {
    let none: &[&str] = &[];
    vec![
        case(none, 2, "DQ_REDIS_URL: the broker url has no scheme").env("DQ_REDIS_URL", "garbage"),
        case(none, 2, "DQ_REDIS_URL: invalid redis url").env("DQ_REDIS_URL", "redis://:99999"),
        case(none, 2, "DQ_AMQP_URL: the broker url has no scheme")
            .env("DQ_REDIS_URL", " ")
            .env("DQ_AMQP_URL", "nope"),
        case(none, 2, "DQ_AMQP_URL: invalid amqp url").env("DQ_AMQP_URL", "amqp://:abc"),
        // A settings error before any connection, on either broker.
        case(
            none,
            2,
            "DQ_MAX_PRIORITY must be a number from 1 to 255, not \"0\"",
        )
        .env("DQ_REDIS_URL", "redis://127.0.0.1:1")
        .env("DQ_MAX_PRIORITY", "0"),
        case(
            none,
            2,
            "DQ_MAX_PRIORITY must be a number from 1 to 255, not \"high\"",
        )
        .env("DQ_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("DQ_MAX_PRIORITY", "high"),
        // Not UTF-8: an error naming the variable, not the default broker.
        case(none, 2, "DQ_REDIS_URL: invalid redis url").env_os(
            "DQ_REDIS_URL",
            OsString::from_vec(b"redis://127.0.0.1:\xff".to_vec()),
        ),
        case(none, 3, "cannot reach the broker")
            .env("DQ_REDIS_URL", "redis://:s3cret@127.0.0.1:1")
            .hides("s3cret"),
        // Blank counts as unset: the default namespace, on a broker that is not there.
        case(none, 3, "cannot reach the broker")
            .env("DQ_REDIS_URL", "redis://127.0.0.1:1")
            .env("DQ_REDIS_NAMESPACE", " "),
        // Blank counts as unset: the error line is still there (it used to turn every line off).
        case(none, 2, "unsupported broker url kafka://x")
            .env("DQ_REDIS_URL", "kafka://x")
            .env("RUST_LOG", ""),
        case(none, 2, "unsupported broker url kafka://x")
            .env("DQ_REDIS_URL", "kafka://x")
            .env("RUST_LOG", "x=[[[,,,=="),
    ]
}

#[tokio::test]
async fn environment_overrides_with_bad_values() {
    let worker: Vec<Case> = env_cases()
        .into_iter()
        .map(|mut c| {
            c.args = vec!["-p".into(), "1".into()];
            c
        })
        .collect();
    // An invalid RUST_LOG is ignored, with one WARNING saying so.
    let rust_log = case(&["-p", "1"], 2, "RUST_LOG=\"x=[[[\" is invalid")
        .env("DQ_REDIS_URL", "kafka://x")
        .env("RUST_LOG", "x=[[[");
    let mut cases = worker;
    cases.push(rust_log);
    run_all(&example("test_worker"), cases).await;

    let admin: Vec<Case> = env_cases()
        .into_iter()
        .map(|mut c| {
            c.args = vec!["queues".into()];
            c.max_lines = 1;
            c
        })
        .collect();
    run_all(&dq_bin(), admin).await;
}

/// Dramatiq's variables with values no one means, and the longest `--worker-shutdown-timeout`
/// (a deadline past what an `Instant` holds): a worker still starts, and stops when told,
/// within 10 s (a huge `dramatiq_worker_timeout` used to hang every graceful stop: dq keeps it
/// at most 10 s).
#[tokio::test]
async fn dramatiq_variables_with_odd_values_do_not_hang_or_panic() {
    let scope = Scope::new("cli-edges-dramatiq-env");
    let mut args = scope.broker_args();
    let huge = "18446744073709551615";
    args.extend(["-p", "1", "-t", "1", "--worker-shutdown-timeout", huge].map(String::from));
    let mut w = Running::start(
        &example("test_worker"),
        &args,
        &[
            ("dramatiq_worker_timeout", huge),
            ("dramatiq_queue_prefetch", "lots"),
            ("dramatiq_delay_queue_prefetch", huge),
            ("dramatiq_lua_max_stack", "-1"),
        ],
    );
    w.wait_ready(1).await;
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    for never in NEVER {
        assert!(!w.output().contains(never), "{}", w.output());
    }
}

#[tokio::test]
async fn admin_arguments_with_bad_values() {
    let scope = Scope::new("cli-edges-admin");
    let broker = scope.broker_args();
    let huge_object = format!("{{\"a\": \"{}\"}}", "x".repeat(100_000));
    let long_id = "x".repeat(10_000);
    let on_scope = |c: Case| c.after(&broker);
    let usage = |args: &[&str], says: &str| on_scope(case(args, 2, says).max_lines(1));
    let clap = |args: &[&str], says: &str| on_scope(case(args, 2, says));
    let missing = |args: &[&str]| on_scope(case(args, 1, "no dead letter").max_lines(1));
    let cases = vec![
        clap(&[], "requires a subcommand"),
        clap(&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        clap(&["send"], "required arguments were not provided"),
        clap(&["send", "a", "--no-such-flag"], "unexpected argument"),
        clap(
            &["send", "a", "-q", "x", "--delay", "-5"],
            "unexpected argument '-5'",
        ),
        clap(
            &["send", "a", "-q", "x", "--delay", "soon"],
            "invalid value 'soon'",
        ),
        clap(
            &["send", "a", "-q", "x", "--delay", "99999999999999999999"],
            "number too large",
        ),
        usage(&["send", "a", "--args", "{"], "--args is not valid JSON"),
        usage(&["send", "a", "--args", ""], "--args is not valid JSON"),
        usage(
            &["send", "a", "--args", "{}"],
            "--args must be a JSON array, got an object",
        ),
        usage(
            &["send", "a", "--args", "\"x\""],
            "--args must be a JSON array, got a string",
        ),
        usage(
            &["send", "a", "--kwargs", "[]"],
            "--kwargs must be a JSON object, got an array",
        ),
        usage(
            &["send", "a", "--kwargs", "{\"a\":"],
            "--kwargs is not valid JSON",
        ),
        usage(
            &["send", "a", "--options", "[1]"],
            "--options must be a JSON object",
        ),
        usage(
            &["send", "a", "--options", "null"],
            "--options must be a JSON object, got null",
        ),
        usage(
            &["send", "a", "--options", "{"],
            "--options is not valid JSON",
        ),
        usage(&["send", "a", "--args", &huge_object], "got an object"),
        usage(
            &["send", "a", "-q", "bad name"],
            "invalid queue name \"bad name\"",
        ),
        usage(&["send", "a", "-q", ""], "invalid queue name \"\""),
        usage(&["send", "", "-q", "x"], "the actor name is empty"),
        usage(&["send", "  "], "the actor name is empty"),
        usage(
            &["send", "nobody_declares_this"],
            "no running worker declares actor",
        ),
        usage(&["purge", "bad name"], "invalid queue name"),
        usage(&["purge", ""], "invalid queue name"),
        usage(&["purge", "ok", "9lives"], "invalid queue name \"9lives\""),
        clap(&["purge"], "required arguments were not provided"),
        usage(&["queues", "9lives"], "invalid queue name"),
        // clap's own help, as for every command that needs a subcommand.
        clap(&["dead-letters"], "Usage: dq dead-letters").max_lines(20),
        clap(&["dead-letters", "frob"], "unrecognized subcommand"),
        clap(
            &["dead-letters", "list", "--limit", "-1"],
            "unexpected argument '-1'",
        ),
        clap(
            &["dead-letters", "list", "--limit", "x"],
            "invalid value 'x'",
        ),
        usage(&["dead-letters", "list", "-q", "x y"], "invalid queue name"),
        usage(&["dead-letters", "purge", "-q", "."], "invalid queue name"),
        clap(
            &["dead-letters", "requeue"],
            "required arguments were not provided",
        ),
        clap(
            &["dead-letters", "requeue", "a", "--all"],
            "cannot be used with",
        ),
        usage(
            &["dead-letters", "requeue", "--all", "-q", "x y"],
            "invalid queue name",
        ),
        missing(&["dead-letters", "show", ""]),
        missing(&["dead-letters", "show", "../../etc/passwd"]),
        missing(&["dead-letters", "show", "a\nb"]),
        missing(&["dead-letters", "show", &long_id, "-q", "default"]),
        missing(&["dead-letters", "requeue", "nope", "-q", "default"]),
    ];
    run_all(&dq_bin(), cases).await;
}

/// Arguments are checked before the broker is: a bad one is code 2 even when the broker is
/// down, and only a good command is code 3.
#[tokio::test]
async fn admin_arguments_are_checked_before_connecting() {
    let down = ["-b".to_owned(), "redis://127.0.0.1:1".to_owned()];
    let c = |args: &[&str], code: i32, says: &str| case(args, code, says).max_lines(1).after(&down);
    let cases = vec![
        c(&["send", "a", "--args", "{"], 2, "--args is not valid JSON"),
        c(
            &["send", "a", "--kwargs", "[]"],
            2,
            "--kwargs must be a JSON object",
        ),
        c(&["send", "", "-q", "x"], 2, "the actor name is empty"),
        c(&["send", "a", "-q", "bad name"], 2, "invalid queue name"),
        c(&["purge", "bad name"], 2, "invalid queue name"),
        c(&["queues", "9lives"], 2, "invalid queue name"),
        c(
            &["dead-letters", "list", "-q", "x y"],
            2,
            "invalid queue name",
        ),
        c(&["send", "a", "-q", "x"], 3, "cannot reach the broker"),
        c(&["queues"], 3, "cannot reach the broker"),
    ];
    run_all(&dq_bin(), cases).await;
}

/// `--delay` up to `u64::MAX` ms is accepted and means far away, not an overflow (a panic in
/// debug builds) or an eta in the past (a wrap in release builds).
#[tokio::test]
async fn a_huge_delay_is_far_in_the_future() {
    let scope = Scope::new("cli-edges-delay");
    let now = chrono::Utc::now().timestamp_millis();
    for delay in [
        "18446744073709551615",
        "9223372036854775807",
        "9223372036854775",
    ] {
        let o = scope.dq(&["send", "a", "-q", "later", "--delay", delay]);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(0), "--delay {delay}: {out}");
        let sent: Value = serde_json::from_slice(&o.stdout).unwrap();
        let eta = sent["options"]["eta"].as_i64().unwrap();
        let century = 100 * 365 * 24 * 3600 * 1000_i64;
        assert!(eta > now + century, "--delay {delay}: eta {eta}");
    }
}

/// A message from another producer with an `eta` far in the past runs at once: the delay
/// holder's wait cannot overflow (it panicked in debug builds and stopped holding).
#[tokio::test]
async fn an_eta_far_in_the_past_runs_at_once() {
    let scope = Scope::new("cli-edges-eta");
    let mut w = Running::worker(&scope, &example("test_worker"), &["-p", "1", "-t", "1"]);
    w.wait_ready(1).await;
    let args = serde_json::json!([scope.dir_str(), "past"]).to_string();
    let o = scope.dq(&[
        "send",
        "touch",
        "-q",
        "default",
        "--args",
        &args,
        "--options",
        "{\"eta\": -9223372036854775808}",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    scope.wait_mark("past").await;
    w.signal(Signal::SIGTERM);
    assert_eq!(w.wait_exit().await, 0, "{}", w.output());
    for never in NEVER {
        assert!(!w.output().contains(never), "{}", w.output());
    }
}
