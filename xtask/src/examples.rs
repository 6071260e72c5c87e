//! `cargo xtask examples`: builds every example once and runs each, so none of them rots.
//!
//! Examples are self-contained programs that exit on their own; one that fails, prints nothing or
//! runs past the time limit fails the step.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cmd, Ctx};

const LIMIT: Duration = Duration::from_secs(120);

/// The `[[example]]` names in examples/Cargo.toml, in file order.
fn names(ctx: &Ctx) -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(ctx.root.join("examples/Cargo.toml"))
        .context("reading examples/Cargo.toml")?;
    let mut names = Vec::new();
    let mut in_example = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_example = line == "[[example]]";
        } else if in_example {
            if let Some(v) = line
                .strip_prefix("name")
                .map(str::trim)
                .and_then(|r| r.strip_prefix('='))
            {
                names.push(v.trim().trim_matches('"').to_owned());
            }
        }
    }
    Ok(names)
}

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    cmd::run(
        ctx.cargo()
            .args(["build", "--package", "examples", "--examples"]),
    )?;
    let dir = ctx.target_dir().join("debug/examples");
    let mut failed = Vec::new();
    for name in names(ctx)? {
        let start = Instant::now();
        let mut child = Command::new(dir.join(&name))
            .current_dir(&ctx.root)
            // A worker command's Prometheus endpoint on any free port, not 9191.
            .env("dramatiq_prom_port", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting example {name}"))?;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if start.elapsed() > LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ok = status.is_some_and(|s| s.success()) && !stdout.trim().is_empty();
        println!(
            "example {name}: {} in {:.1}s, {} line(s) of output",
            if ok { "ok" } else { "FAILED" },
            start.elapsed().as_secs_f64(),
            stdout.lines().count()
        );
        if !ok {
            println!(
                "--- stdout\n{stdout}--- stderr\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("examples failed: {}", failed.join(", "));
    }
    Ok(())
}
