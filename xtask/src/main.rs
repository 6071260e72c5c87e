//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! Run `cargo xtask` with no arguments for the list of tasks. `cargo xtask test` is the README's
//! test command and what CI runs (`.ci/run`).
//!
//! This crate depends on no workspace crate, so the service checks and the lint steps still run
//! while a library does not build; the raw-protocol service probe is shared with `dq-test` as a
//! source file instead (see `probe`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};

mod bench;
mod chaos;
mod cmd;
mod examples;
mod fuzz;
mod interop;
mod msrv;
// One implementation of "is Redis / RabbitMQ really answering", also used by the tests through
// dq-test; included as source because xtask must not depend on workspace crates.
#[path = "../../crates/dq-test/src/probe.rs"]
mod probe;
mod services;
mod steps;
mod test;
mod tidy;

/// What every task gets: where the repository is, which cargo to call, whether this is CI.
struct Ctx {
    root: PathBuf,
    cargo: OsString,
    ci: bool,
    /// The arguments after the task's name (`bench`, `chaos` and `fuzz` take some).
    args: Vec<String>,
}

impl Ctx {
    fn new() -> Ctx {
        // xtask/ sits at the workspace root; CARGO_MANIFEST_DIR is baked in at build time.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask has a parent directory")
            .to_path_buf();
        // The cargo that runs us (set by `cargo run`), so nested calls use the same toolchain.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let args = std::env::args().skip(2).collect();
        Ctx {
            root,
            cargo,
            ci,
            args,
        }
    }

    /// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `target/` at the root.
    fn target_dir(&self) -> PathBuf {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => self.root.join(dir),
            _ => self.root.join("target"),
        }
    }

    /// A `cargo` command run from the workspace root.
    fn cargo(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.cargo);
        c.current_dir(&self.root);
        c
    }
}

struct Task {
    name: &'static str,
    about: &'static str,
    run: fn(&Ctx) -> Result<()>,
}

const TASKS: &[Task] = &[
    Task {
        name: "test",
        about: "services up, then fmt, clippy, doc and every test: the README's test command, run by CI",
        run: test::run,
    },
    Task {
        name: "tidy",
        about: "the crate graph is ARCHITECTURE.md's, and no public signature names a redis/lapin type",
        run: tidy::run,
    },
    Task {
        name: "msrv",
        about: "no package in Cargo.lock needs a newer Rust than the workspace's rust-version",
        run: msrv::run,
    },
    Task {
        name: "services",
        about: "make sure Redis and RabbitMQ answer (127.0.0.1:6379, :5672); start or install them",
        run: services::run,
    },
    Task {
        name: "examples",
        about: "build every example once and run each (they need no input and exit by themselves)",
        run: examples::run,
    },
    Task {
        name: "interop",
        about: "checks against the real Python Dramatiq 2.2.1 (golden fixtures are what it writes)",
        run: interop::run,
    },
    Task {
        name: "interop-venv",
        about: "create target/py with dramatiq[redis,rabbitmq]==2.2.1 and its ecosystem packages and print its python",
        run: interop::run_venv,
    },
    Task {
        name: "bench",
        about: "dq against Python Dramatiq on Redis and RabbitMQ, into target/bench/ (--smoke: a quick check)",
        run: bench::run,
    },
    Task {
        name: "chaos",
        about: "many faults at once under load, with a ledger: --broker redis|amqp --messages N (100,000) [--seconds S]",
        run: chaos::run,
    },
    Task {
        name: "fuzz",
        about: "libFuzzer on every target of fuzz/ (cargo +nightly fuzz): [--seconds S (60)] [--target NAME]",
        run: fuzz::run,
    },
    Task {
        name: "fixtures",
        about: "regenerate dq-core's golden fixtures (python_messages.json) with Python Dramatiq",
        run: interop::run_regenerate,
    },
];

fn usage() -> String {
    let mut s = String::from("Usage: cargo xtask <task>\n\nTasks:\n");
    for t in TASKS {
        s.push_str(&format!("  {:<14}{}\n", t.name, t.about));
    }
    s.push_str(
        "\nEnvironment:\n  \
         CI=true          missing services are an error with CI's instructions; nextest's ci profile\n  \
         DQ_SKIP_LINT=1   `test` skips fmt, clippy and doc\n  \
         DQ_REDIS_URL     Redis the tests use (default redis://127.0.0.1:6379)\n  \
         DQ_AMQP_URL      RabbitMQ the tests use (default amqp://guest:guest@127.0.0.1:5672/%2f)\n",
    );
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match args.as_slice() {
        [] => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        [h] if h == "help" || h == "-h" || h == "--help" => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        [name] => match TASKS.iter().find(|t| t.name == name) {
            Some(t) => t,
            None => {
                eprint!("error: unknown task {name:?}\n\n{}", usage());
                return ExitCode::from(2);
            }
        },
        // The tasks that take arguments (they read them from `Ctx::args`).
        [name, ..] if name == "bench" || name == "chaos" || name == "fuzz" => {
            TASKS.iter().find(|t| t.name == name).expect("a task")
        }
        [name, ..] => {
            eprint!("error: task {name:?} takes no arguments\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match (task.run)(&Ctx::new()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nerror: cargo xtask {}: {e:#}", task.name);
            ExitCode::FAILURE
        }
    }
}

/// Fails unless we are root, with `why` saying what root was needed for.
fn require_root(why: &str) -> Result<()> {
    if is_root() {
        Ok(())
    } else {
        bail!("{why} needs root (to use apt-get); run it as root or do it by hand")
    }
}

fn is_root() -> bool {
    // No libc dependency for geteuid: /proc tells the effective uid on Linux, the only platform
    // whose package manager we drive anyway.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
