//! `cargo xtask test`: the README's test command and CI's.
//!
//! Every cargo call uses the same profile and leaves `RUSTFLAGS` alone, so the build of one
//! step is reused by the next instead of redone (clippy's check artifacts are separate from the
//! test build by nature; the dependencies' are shared with `cargo doc`).

use anyhow::Result;

use crate::steps::Step;
use crate::{cmd, services, Ctx};

/// In order; the first failure stops the run. Adding a step is one line here.
const STEPS: &[Step] = &[
    Step::new("services", services::run),
    Step::lint("fmt", fmt),
    Step::lint("clippy", clippy),
    Step::lint("doc", doc),
    Step::new("tidy", crate::tidy::run),
    Step::new("msrv", crate::msrv::run),
    Step::new("nextest", nextest),
    Step::new("parallel-tests", parallel_tests),
    Step::new("doctests", doctests),
    Step::new("examples", crate::examples::run),
    Step::new("interop", crate::interop::run),
    Step::new("bench-smoke", crate::bench::smoke),
];

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    crate::steps::run("test", STEPS, ctx)
}

fn fmt(ctx: &Ctx) -> Result<()> {
    cmd::run(ctx.cargo().args(["fmt", "--all", "--", "--check"]))
}

fn clippy(ctx: &Ctx) -> Result<()> {
    cmd::run(ctx.cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// `RUSTDOCFLAGS` with `-D warnings` added to what the caller set. The doctests get the same
/// value as `cargo doc`, so both see the same flags.
fn rustdocflags() -> String {
    match std::env::var("RUSTDOCFLAGS") {
        Ok(v) if !v.trim().is_empty() => format!("{v} -D warnings"),
        _ => "-D warnings".to_owned(),
    }
}

fn doc(ctx: &Ctx) -> Result<()> {
    cmd::run(ctx.cargo().env("RUSTDOCFLAGS", rustdocflags()).args([
        "doc",
        "--workspace",
        "--no-deps",
    ]))
}

fn nextest(ctx: &Ctx) -> Result<()> {
    let installed =
        cmd::output(ctx.cargo().args(["nextest", "--version"])).is_ok_and(|o| o.status.success());
    if !installed {
        println!("cargo-nextest is not installed: installing it");
        cmd::run(ctx.cargo().args(["install", "cargo-nextest", "--locked"]))?;
    }
    let mut c = ctx.cargo();
    // dq-interop's tests need the Python virtualenv: the interop step runs them.
    c.args([
        "nextest",
        "run",
        "--workspace",
        "--exclude",
        crate::interop::PACKAGE,
    ]);
    if ctx.ci {
        // .config/nextest.toml: no fail-fast, so one CI run reports every failing test.
        c.args(["--profile", "ci"]);
    }
    cmd::run(&mut c)
}

/// The tests that prove parallel tests in one binary stay apart, run as `cargo test` runs
/// them: as threads of one process (nextest gives each test a process of its own).
fn parallel_tests(ctx: &Ctx) -> Result<()> {
    cmd::run(ctx.cargo().args([
        "test",
        "-p",
        "dq",
        "--test",
        "parallel_apps",
        "--",
        "--test-threads",
        "8",
    ]))
}

/// nextest does not run doctests, so cargo test does, for the doctests only.
fn doctests(ctx: &Ctx) -> Result<()> {
    cmd::run(
        ctx.cargo()
            .env("RUSTDOCFLAGS", rustdocflags())
            .args(["test", "--workspace", "--doc"]),
    )
}
