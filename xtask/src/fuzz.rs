//! `cargo xtask fuzz [--seconds S] [--target NAME]`: the libFuzzer targets of `fuzz/`, through
//! `cargo +nightly fuzz` (installed with `cargo install cargo-fuzz --locked` when missing).
//!
//! Every target runs for S seconds (default 60) with bounded memory (`-rss_limit_mb`,
//! `-malloc_limit_mb`: an input that makes dq allocate without bound is a crash) and time per
//! input (`-timeout`: a hang is a crash). The committed seeds in `fuzz/corpus/TARGET` are read,
//! never written: what libFuzzer finds goes to `fuzz/target/corpus/TARGET`, crashes to
//! `fuzz/artifacts/TARGET/`. Any crash fails the task with the reproducer's path; once fixed, the
//! input belongs in `fuzz/regressions/TARGET/`, which dq-fuzz's test replays in
//! `cargo xtask test` (stable, no fuzzer: the short bounded run).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use crate::{cmd, Ctx};

/// Optimised, but with debug assertions and overflow checks (cargo fuzz drops them with `-O`
/// unless asked): an arithmetic overflow on some input is a crash, as in a debug build.
const BUILD: [&str; 2] = ["-O", "--debug-assertions"];
/// Megabytes of memory a target may hold in all and per allocation.
const MEMORY_MB: u32 = 2048;
/// Seconds one input may take.
const INPUT_TIMEOUT_S: u32 = 10;
/// The largest input libFuzzer makes, in bytes.
const MAX_LEN: u32 = 65_536;

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    let mut seconds: u64 = 60;
    let mut only: Option<String> = None;
    let mut it = ctx.args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs {what}"))
        };
        match a.as_str() {
            "--seconds" => seconds = value("a number")?.parse().context("--seconds S")?,
            "--target" => only = Some(value("a target's name")?),
            other => bail!("unknown fuzz argument {other:?} (--seconds S, --target NAME)"),
        }
    }
    let dir = ctx.root.join("fuzz");
    let mut targets = targets(&dir)?;
    if let Some(name) = &only {
        if !targets.contains(name) {
            bail!(
                "no fuzz target {name:?}; the targets: {}",
                targets.join(", ")
            );
        }
        targets.retain(|t| t == name);
    }
    ensure_cargo_fuzz()?;
    // One build of every target before any runs, so the runs' seconds are spent fuzzing.
    cmd::run(fuzz_cmd(&dir).args(["build"]).args(BUILD))?;
    let mut crashes = Vec::new();
    for t in &targets {
        let work = dir.join("target/corpus").join(t);
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        let started = SystemTime::now();
        let ok = fuzz_cmd(&dir)
            .arg("run")
            .args(BUILD)
            .arg(t)
            .arg(&work)
            .arg(dir.join("corpus").join(t))
            .arg("--")
            .args([
                format!("-max_total_time={seconds}"),
                format!("-rss_limit_mb={MEMORY_MB}"),
                format!("-malloc_limit_mb={MEMORY_MB}"),
                format!("-timeout={INPUT_TIMEOUT_S}"),
                format!("-max_len={MAX_LEN}"),
            ])
            .status()
            .context("cannot start cargo fuzz")?
            .success();
        let found = new_files(&dir.join("artifacts").join(t), started);
        if !ok || !found.is_empty() {
            crashes.push((t.clone(), found));
        }
    }
    if crashes.is_empty() {
        println!(
            "fuzz: ok: {} target(s), {seconds} s each, no crash, hang or unbounded allocation",
            targets.len()
        );
        return Ok(());
    }
    for (t, found) in &crashes {
        println!(
            "fuzz: {t} failed; reproduce with `cd fuzz && cargo +nightly fuzz run -O -a {t} PATH`:"
        );
        for f in found {
            println!("  {}", f.display());
        }
        println!("  once fixed, copy the input into fuzz/regressions/{t}/ (replayed by cargo xtask test)");
    }
    bail!("{} fuzz target(s) failed (see above)", crashes.len())
}

/// The targets: the files of `fuzz/fuzz_targets/`, by name.
fn targets(dir: &Path) -> Result<Vec<String>> {
    let src = dir.join("fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&src)
        .with_context(|| format!("cannot read {}", src.display()))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// `cargo +nightly fuzz` in `fuzz/`, with its own target directory (sanitizer builds share
/// nothing with the workspace's).
fn fuzz_cmd(dir: &Path) -> Command {
    // The rustup proxy, not the cargo that runs xtask: only the proxy understands `+nightly`.
    let mut c = Command::new("cargo");
    c.current_dir(dir)
        .arg("+nightly")
        .arg("fuzz")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTUP_TOOLCHAIN");
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let have = cmd::output(Command::new("cargo").args(["fuzz", "--version"]))
        .is_ok_and(|o| o.status.success());
    if !have {
        cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let nightly =
        cmd::output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"]))
            .is_ok_and(|o| o.status.success());
    if !nightly {
        bail!("cargo fuzz needs a nightly toolchain: `rustup toolchain install nightly`");
    }
    Ok(())
}

/// Files in `dir` modified since `since`: what this run left there.
fn new_files(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let modified = e.metadata().ok()?.modified().ok()?;
            (modified >= since).then(|| e.path())
        })
        .collect();
    out.sort();
    out
}
