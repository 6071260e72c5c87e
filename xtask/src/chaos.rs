//! `cargo xtask chaos --broker redis|amqp --messages N [--seconds S] [--kills K] [--restarts R]`:
//! the chaos run of `dq-interop` (`reliability_chaos`), long: 100,000 messages by default, two
//! broker restarts and a SIGKILL of a worker process every few seconds, on a broker of its own,
//! with dq and Python Dramatiq producing at once and about 1 % garbage. It prints the ledger's
//! table. The test command runs the same code short (3,000 messages, one restart, three kills).

use anyhow::{bail, Context, Result};

use crate::{cmd, Ctx};

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    let mut brokers = "redis,amqp".to_owned();
    let mut messages = 100_000u64;
    let mut seconds: Option<u64> = None;
    let mut kills: Option<u64> = None;
    let mut restarts = 2u64;
    let mut it = ctx.args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs {what}"))
        };
        match a.as_str() {
            "--broker" => {
                brokers = value("redis or amqp")?;
                if !brokers.split(',').all(|b| b == "redis" || b == "amqp") {
                    bail!("--broker is redis, amqp or redis,amqp, not {brokers:?}");
                }
            }
            "--messages" => messages = value("a number")?.parse().context("--messages N")?,
            "--seconds" => seconds = Some(value("a number")?.parse().context("--seconds S")?),
            "--kills" => kills = Some(value("a number")?.parse().context("--kills K")?),
            "--restarts" => restarts = value("a number")?.parse().context("--restarts R")?,
            other => bail!(
                "unknown chaos argument {other:?} (--broker redis|amqp, --messages N, \
                 --seconds S, --kills K, --restarts R)"
            ),
        }
    }
    // A kill every two seconds or so over the run's expected length, at least five.
    let kills = kills.unwrap_or_else(|| (messages / 5_000).max(5));
    let python = crate::interop::venv(ctx)?;
    let mut c = ctx.cargo();
    c.env("DQ_PYTHON", &python)
        .env("DQ_CHAOS_BROKERS", &brokers)
        .env("DQ_CHAOS_MESSAGES", messages.to_string())
        .env("DQ_CHAOS_KILLS", kills.to_string())
        .env("DQ_CHAOS_RESTARTS", restarts.to_string())
        .args([
            // The dev build the test command shares: the run measures losses, not speed.
            "test",
            "--package",
            "dq-interop",
            "--test",
            "tests",
            "reliability_chaos",
            "--",
            "--nocapture",
            "--test-threads",
            "1",
        ]);
    if let Some(s) = seconds {
        c.env("DQ_CHAOS_SECONDS", s.to_string());
    }
    cmd::run(&mut c)
}
