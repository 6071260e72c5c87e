//! A task as a list of named steps, run in order up to the first failure, each timed.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::Ctx;

/// One step of a task.
pub(crate) struct Step {
    pub(crate) name: &'static str,
    /// Skipped when `DQ_SKIP_LINT=1` (fmt, clippy, doc), for quick local runs.
    pub(crate) lint: bool,
    pub(crate) run: fn(&Ctx) -> Result<()>,
}

impl Step {
    pub(crate) const fn new(name: &'static str, run: fn(&Ctx) -> Result<()>) -> Step {
        Step {
            name,
            lint: false,
            run,
        }
    }

    pub(crate) const fn lint(name: &'static str, run: fn(&Ctx) -> Result<()>) -> Step {
        Step {
            name,
            lint: true,
            run,
        }
    }
}

/// Runs `steps` in order, stopping at the first failure, and prints one summary line:
/// `xtask <task>: ok, ...` or `xtask <task>: FAILED at <step>, ...`, with each step's time.
pub(crate) fn run(task: &str, steps: &[Step], ctx: &Ctx) -> Result<()> {
    let skip_lint = std::env::var("DQ_SKIP_LINT").is_ok_and(|v| v == "1" || v == "true");
    let start = Instant::now();
    let mut times: Vec<String> = Vec::new();
    for step in steps {
        if step.lint && skip_lint {
            println!("\n==> {task}: {} skipped (DQ_SKIP_LINT)", step.name);
            times.push(format!("{} skipped", step.name));
            continue;
        }
        println!("\n==> {task}: {}", step.name);
        let t = Instant::now();
        let result = (step.run)(ctx);
        times.push(format!("{} {}", step.name, human(t.elapsed())));
        if let Err(e) = result {
            println!(
                "\nxtask {task}: FAILED at {} after {} ({})",
                step.name,
                human(start.elapsed()),
                times.join(", ")
            );
            return Err(e).with_context(|| format!("step {} failed", step.name));
        }
    }
    println!(
        "\nxtask {task}: ok, {} step(s) in {} ({})",
        steps.len(),
        human(start.elapsed()),
        times.join(", ")
    );
    Ok(())
}

fn human(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}
