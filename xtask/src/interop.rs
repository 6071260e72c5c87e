//! Interoperability with the real Python Dramatiq 2.2.1, from a virtualenv under `target/py`.
//!
//! `interop` is a list of steps, like `test`: the golden-fixture check, then the tests of the
//! `dq-interop` package (scenarios against the live brokers with Python Dramatiq on the other
//! side, and the reliability runs), with `DQ_PYTHON` naming the virtualenv's python.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::steps::Step;
use crate::{cmd, Ctx};

/// The Dramatiq release whose wire format we match (WIRE.md).
const DRAMATIQ_VERSION: &str = "2.2.1";

/// What the virtualenv holds, as (distribution, pinned version, pip requirement): Dramatiq, and
/// the packages of its ecosystem dq interoperates with (ECOSYSTEM.md). Pinned so a run next month
/// tests what this one did; a bump is a reviewed change here.
const REQUIREMENTS: &[(&str, &str, &str)] = &[
    (
        "dramatiq",
        DRAMATIQ_VERSION,
        "dramatiq[redis,rabbitmq]==2.2.1",
    ),
    // Python Dramatiq's Prometheus middleware needs it.
    ("prometheus-client", "0.26.0", "prometheus-client==0.26.0"),
    ("dramatiq-abort", "1.2.1", "dramatiq-abort==1.2.1"),
    ("periodiq", "0.14.0", "periodiq==0.14.0"),
    ("sentry-sdk", "2.76.0", "sentry-sdk==2.76.0"),
    ("opentelemetry-api", "1.45.2", "opentelemetry-api==1.45.2"),
    ("opentelemetry-sdk", "1.45.2", "opentelemetry-sdk==1.45.2"),
];

/// The generator script and its committed output, relative to the workspace root.
const FIXTURE_SCRIPT: &str = "crates/dq-core/tests/fixtures/make_fixtures.py";
const FIXTURE_FILE: &str = "crates/dq-core/tests/fixtures/python_messages.json";

/// The package whose tests need the virtualenv; the plain nextest step leaves it out.
pub(crate) const PACKAGE: &str = "dq-interop";

const STEPS: &[Step] = &[
    Step::new("fixtures", check_fixtures),
    Step::new("scenarios", scenarios),
];

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    crate::steps::run("interop", STEPS, ctx)
}

pub(crate) fn run_venv(ctx: &Ctx) -> Result<()> {
    let python = venv(ctx)?;
    println!("{}", python.display());
    Ok(())
}

pub(crate) fn run_regenerate(ctx: &Ctx) -> Result<()> {
    let python = venv(ctx)?;
    cmd::run(
        Command::new(&python)
            .current_dir(&ctx.root)
            .args([FIXTURE_SCRIPT, FIXTURE_FILE]),
    )?;
    println!("regenerated {FIXTURE_FILE}: review the diff and commit it with the script");
    Ok(())
}

/// The virtualenv's python, with every package of [`REQUIREMENTS`] at its pinned version: created
/// and installed on first use, and only checked (one python start, well under a second) after that.
pub(crate) fn venv(ctx: &Ctx) -> Result<PathBuf> {
    let dir = ctx.target_dir().join("py");
    let python = dir.join("bin/python");
    if python.is_file() && missing(&python).is_empty() {
        return Ok(python);
    }
    if !python.is_file() {
        create_venv(&dir)?;
    }
    let requirements: Vec<&str> = REQUIREMENTS.iter().map(|r| r.2).collect();
    cmd::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(&requirements),
    )
    .with_context(|| {
        format!(
            "installing {} failed; if the virtualenv is broken, remove {} and run again",
            requirements.join(" "),
            dir.display()
        )
    })?;
    let missing = missing(&python);
    if !missing.is_empty() {
        bail!(
            "{} lacks {} after pip install",
            dir.display(),
            missing.join(", ")
        );
    }
    Ok(python)
}

/// The requirements the virtualenv does not hold at their pinned version, as `name==version`.
fn missing(python: &Path) -> Vec<String> {
    let script = "import sys\nfrom importlib.metadata import version\nfor n in sys.argv[1:]:\n    try: print(version(n))\n    except Exception: print('-')\n";
    let installed: Vec<String> = cmd::output(
        Command::new(python)
            .args(["-c", script])
            .args(REQUIREMENTS.iter().map(|r| r.0)),
    )
    .ok()
    .filter(|out| out.status.success())
    .map(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default();
    REQUIREMENTS
        .iter()
        .enumerate()
        .filter(|(i, (_, v, _))| installed.get(*i).map(String::as_str) != Some(*v))
        .map(|(_, (n, v, _))| format!("{n}=={v}"))
        .collect()
}

fn create_venv(dir: &Path) -> Result<()> {
    let mut venv = Command::new("python3");
    venv.args(["-m", "venv"]).arg(dir);
    if cmd::run(&mut venv).is_ok() {
        return Ok(());
    }
    // Debian splits venv (and ensurepip) out of python3; a half-made directory would make the
    // next attempt skip creation, so remove it first.
    let _ = std::fs::remove_dir_all(dir);
    crate::require_root("creating a virtualenv without python3-venv (installing it)")?;
    cmd::run(Command::new("apt-get").arg("update"))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "python3", "python3-venv"]),
    )?;
    cmd::run(&mut venv)
}

/// Regenerates the golden fixtures into `target/` and requires them to be byte-identical to the
/// committed ones: the script fixes every id and clock, so any difference is a change in what
/// Python writes or in the script, and the committed file (what the Rust tests check) is stale.
fn check_fixtures(ctx: &Ctx) -> Result<()> {
    let python = venv(ctx)?;
    let fresh = ctx.target_dir().join("xtask/fixtures/python_messages.json");
    std::fs::create_dir_all(fresh.parent().expect("has a parent"))?;
    cmd::run(
        Command::new(&python)
            .current_dir(&ctx.root)
            .arg(FIXTURE_SCRIPT)
            .arg(&fresh),
    )?;
    let committed_path = ctx.root.join(FIXTURE_FILE);
    let committed = std::fs::read_to_string(&committed_path)
        .with_context(|| format!("cannot read {}", committed_path.display()))?;
    let regenerated = std::fs::read_to_string(&fresh)
        .with_context(|| format!("cannot read {}", fresh.display()))?;
    if committed == regenerated {
        println!("{FIXTURE_FILE} is what Python Dramatiq {DRAMATIQ_VERSION} writes");
        return Ok(());
    }
    let (line, ours, theirs) = committed
        .lines()
        .zip(regenerated.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i + 1, a, b))
        .unwrap_or((
            committed.lines().count().min(regenerated.lines().count()) + 1,
            "",
            "",
        ));
    bail!(
        "{FIXTURE_FILE} differs from what {FIXTURE_SCRIPT} writes now ({}), first at line \
         {line}:\n  committed:   {ours}\n  regenerated: {theirs}\nRun `cargo xtask fixtures`, \
         check the Rust golden tests still pass, and commit the file.",
        fresh.display()
    )
}

/// The `dq-interop` tests, on the build the other steps share, with the virtualenv's python.
/// Extra arguments (a test name filter) come from `DQ_INTEROP_FILTER`.
fn scenarios(ctx: &Ctx) -> Result<()> {
    let python = venv(ctx)?;
    let mut c = ctx.cargo();
    c.env("DQ_PYTHON", &python)
        .args(["nextest", "run", "--package", PACKAGE]);
    if ctx.ci {
        c.args(["--profile", "ci"]);
    }
    if let Ok(filter) = std::env::var("DQ_INTEROP_FILTER") {
        c.args(filter.split_whitespace());
    }
    cmd::run(&mut c)
}
