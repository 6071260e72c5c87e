//! `cargo xtask bench`: dq against Python Dramatiq 2.2.1, in one run, on one machine and broker.
//!
//! The machine is noisy (two cores, shared with whatever else runs), so every figure is judged
//! as a ratio to Python measured in the same run, each case alternating between the two, and
//! each figure is the median of `--runs` runs (the raw runs are kept in `target/bench/raw.csv`).
//!
//! Redis is a private `redis-server` on a free port that the bench starts and stops, so its
//! `INFO commandstats` and CPU count only the bench's traffic and `redis-benchmark` measures the
//! same server. RabbitMQ is the shared one (a private node takes seconds to boot and needs its
//! own Erlang distribution setup): its CPU figures include whatever else the machine asks of it,
//! and each case's queues are deleted afterwards. Its ceiling is a bare lapin client on the same
//! server (`dq-bench-producer ceiling`): no dq code in the loop.
//!
//! The workers measure themselves (see the `dq-bench` crate): throughput is the messages over
//! the span from the first actor start to the last actor finish, across processes.
//!
//! Sizes come from flags or the environment (`--runs N` or `DQ_BENCH_RUNS`, and
//! `DQ_BENCH_{ENQUEUE,NOOP,SLEEP_SECS,SLEEP_MAX,LATENCY,IDLE_SECS}`, `DQ_BENCH_BROKERS=redis,amqp`,
//! `DQ_BENCH_CASES=noop-2x8,latency` for some cases only).
//! `--smoke` runs tiny counts once on the dev build, in seconds: the test command runs it so
//! the benchmark never rots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::{cmd, Ctx};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// What the worker command reads its broker's `max_priority` from (dq-core's `env::MAX_PRIORITY`;
/// xtask depends on no dq crate).
const DQ_MAX_PRIORITY_ENV: &str = "DQ_MAX_PRIORITY";

/// How much to measure.
#[derive(Clone, Debug)]
struct Config {
    smoke: bool,
    runs: usize,
    brokers: Vec<Kind>,
    enqueue: usize,
    noop: usize,
    /// The sleeping cases run about this long at their ideal rate.
    sleep_secs: f64,
    /// At most this many messages in a sleeping case.
    sleep_max: usize,
    latency: usize,
    latency_gap_ms: u64,
    idle_secs: f64,
    /// Only the cases named here (`DQ_BENCH_CASES=noop-2x8,latency`), for profiling one.
    cases: Option<Vec<String>>,
}

impl Config {
    fn wants(&self, case: &str) -> bool {
        self.cases
            .as_ref()
            .is_none_or(|cs| cs.iter().any(|c| c == case))
    }
}

impl Config {
    fn new(args: &[String]) -> Result<Config> {
        let mut smoke = false;
        let mut runs = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--smoke" => smoke = true,
                "--runs" => {
                    let n = it.next().context("--runs needs a number")?;
                    runs = Some(n.parse().context("--runs needs a number")?);
                }
                other => bail!("unknown bench argument {other:?} (try --smoke or --runs N)"),
            }
        }
        let c = if smoke {
            Config {
                smoke,
                runs: 1,
                brokers: vec![Kind::Redis, Kind::Amqp],
                enqueue: 200,
                noop: 500,
                sleep_secs: 0.3,
                sleep_max: 2000,
                latency: 10,
                latency_gap_ms: 20,
                idle_secs: 0.5,
                cases: None,
            }
        } else {
            Config {
                smoke,
                runs: 3,
                brokers: vec![Kind::Redis, Kind::Amqp],
                enqueue: 10_000,
                noop: 20_000,
                sleep_secs: 4.0,
                sleep_max: 100_000,
                latency: 500,
                latency_gap_ms: 200,
                idle_secs: 5.0,
                cases: None,
            }
        };
        Ok(Config {
            runs: runs.or(env_num("DQ_BENCH_RUNS")?).unwrap_or(c.runs).max(1),
            brokers: match std::env::var("DQ_BENCH_BROKERS") {
                Ok(v) => v
                    .split(',')
                    .map(|b| match b.trim() {
                        "redis" => Ok(Kind::Redis),
                        "amqp" | "rabbitmq" => Ok(Kind::Amqp),
                        other => bail!("DQ_BENCH_BROKERS: unknown broker {other:?}"),
                    })
                    .collect::<Result<_>>()?,
                Err(_) => c.brokers.clone(),
            },
            enqueue: env_num("DQ_BENCH_ENQUEUE")?.unwrap_or(c.enqueue),
            noop: env_num("DQ_BENCH_NOOP")?.unwrap_or(c.noop),
            sleep_secs: env_num("DQ_BENCH_SLEEP_SECS")?.unwrap_or(c.sleep_secs),
            sleep_max: env_num("DQ_BENCH_SLEEP_MAX")?.unwrap_or(c.sleep_max),
            latency: env_num("DQ_BENCH_LATENCY")?.unwrap_or(c.latency),
            idle_secs: env_num("DQ_BENCH_IDLE_SECS")?.unwrap_or(c.idle_secs),
            cases: std::env::var("DQ_BENCH_CASES")
                .ok()
                .map(|v| v.split(',').map(|c| c.trim().to_owned()).collect()),
            ..c
        })
    }
}

fn env_num<T: std::str::FromStr>(name: &str) -> Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(v) => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("{name}={v:?} is not a number")
            })?))
        }
        Err(_) => Ok(None),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Redis,
    Amqp,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Redis => "Redis",
            Kind::Amqp => "RabbitMQ",
        }
    }
}

/// One broker as the bench uses it.
struct BrokerUnderTest {
    kind: Kind,
    url: String,
    /// The private redis-server's port.
    redis_port: Option<u16>,
}

/// Counters read off the broker, for CPU and commands per message.
#[derive(Clone, Copy, Debug)]
struct BrokerSnapshot {
    at: Instant,
    cpu_secs: f64,
    /// Commands served (Redis only: INFO commandstats, script-internal calls included).
    commands: Option<f64>,
}

impl BrokerUnderTest {
    fn snapshot(&self) -> Result<BrokerSnapshot> {
        let at = Instant::now();
        match self.redis_port {
            Some(port) => {
                let out = cmd::output(Command::new("redis-cli").args([
                    "-p",
                    &port.to_string(),
                    "info",
                    "cpu",
                    "commandstats",
                ]))?;
                let text = String::from_utf8_lossy(&out.stdout);
                let mut cpu = 0.0;
                let mut calls = 0.0;
                for line in text.lines() {
                    if let Some(v) = line
                        .strip_prefix("used_cpu_sys:")
                        .or_else(|| line.strip_prefix("used_cpu_user:"))
                    {
                        cpu += v.trim().parse::<f64>().unwrap_or(0.0);
                    }
                    if line.starts_with("cmdstat_") {
                        if let Some(n) = line
                            .split(&[':', ','][..])
                            .find_map(|f| f.strip_prefix("calls="))
                        {
                            calls += n.parse::<f64>().unwrap_or(0.0);
                        }
                    }
                }
                Ok(BrokerSnapshot {
                    at,
                    cpu_secs: cpu,
                    commands: Some(calls),
                })
            }
            None => Ok(BrokerSnapshot {
                at,
                cpu_secs: beam_cpu_secs().unwrap_or(f64::NAN),
                commands: None,
            }),
        }
    }
}

/// CPU time of RabbitMQ's Erlang VM, from /proc (utime + stime, in clock ticks of 1/100 s,
/// the value on every Linux we run on).
fn beam_cpu_secs() -> Option<f64> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == "beam.smp" {
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = after.split_whitespace().collect();
            // Fields 14 and 15 of stat; `after` starts at field 3.
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            return Some(ticks / 100.0);
        }
    }
    None
}

/// A redis-server of the bench's own, stopped on drop.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    fn start(dir: &Path) -> Result<PrivateRedis> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (is it installed? `cargo xtask services`)")?;
        let r = PrivateRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = cmd::output(Command::new("redis-cli").args(["-p", &port.to_string(), "ping"]))
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"));
            if ok {
                return Ok(r);
            }
            if Instant::now() > deadline {
                bail!("the bench's redis-server on port {port} did not answer within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

/// Where the programs are and where this run writes.
struct Env {
    producer: PathBuf,
    worker: PathBuf,
    python: PathBuf,
    pydir: PathBuf,
    /// This run's scratch directory (logs, progress files).
    scratch: PathBuf,
    stamp: String,
}

/// Who runs the actors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Imp {
    Python,
    Dq,
}

impl Imp {
    fn name(self) -> &'static str {
        match self {
            Imp::Python => "python",
            Imp::Dq => "dq",
        }
    }
}

/// One measured value.
#[derive(Clone, Debug)]
struct Sample {
    broker: Kind,
    case: &'static str,
    imp: Imp,
    metric: &'static str,
    run: usize,
    value: f64,
}

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    run_with(ctx, Config::new(&ctx.args)?)
}

/// `cargo xtask bench --smoke`, the test command's step.
pub(crate) fn smoke(ctx: &Ctx) -> Result<()> {
    run_with(ctx, Config::new(&["--smoke".to_owned()])?)
}

fn run_with(ctx: &Ctx, cfg: Config) -> Result<()> {
    println!("bench configuration: {cfg:?}");
    let profile = if cfg.smoke {
        // The smoke reuses the dev build the tests made, instead of compiling everything again
        // with optimizations.
        cmd::run(ctx.cargo().args(["build", "-p", "dq-bench"]))?;
        "debug"
    } else {
        cmd::run(ctx.cargo().args(["build", "--release", "-p", "dq-bench"]))?;
        "release"
    };
    let bin = ctx.target_dir().join(profile);
    let python = crate::interop::venv(ctx)?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        .to_string();
    let out = ctx
        .target_dir()
        .join(if cfg.smoke { "bench-smoke" } else { "bench" });
    let scratch = out.join("runs").join(&stamp);
    fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
    let env = Env {
        producer: bin.join("dq-bench-producer"),
        worker: bin.join("dq-bench-worker"),
        python,
        pydir: ctx.root.join("crates/dq-bench/python"),
        scratch: scratch.clone(),
        stamp,
    };

    let redis = if cfg.brokers.contains(&Kind::Redis) {
        Some(PrivateRedis::start(&scratch)?)
    } else {
        None
    };
    let mut brokers = Vec::new();
    for &kind in &cfg.brokers {
        brokers.push(match kind {
            Kind::Redis => {
                let port = redis.as_ref().expect("started above").port;
                BrokerUnderTest {
                    kind,
                    url: format!("redis://127.0.0.1:{port}"),
                    redis_port: Some(port),
                }
            }
            Kind::Amqp => BrokerUnderTest {
                kind,
                url: std::env::var("DQ_AMQP_URL").unwrap_or_else(|_| AMQP_URL.to_owned()),
                redis_port: None,
            },
        });
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    for run in 0..cfg.runs {
        for b in &brokers {
            println!(
                "\n==> bench run {} of {}: {}",
                run + 1,
                cfg.runs,
                b.kind.name()
            );
            samples.extend(suite(&cfg, &env, b, run)?);
        }
    }
    let ceiling = match &redis {
        Some(r) => Some(redis_ceiling(r.port, cfg.smoke)?),
        None => None,
    };
    drop(redis);
    let amqp_ceiling = match brokers.iter().find(|b| b.kind == Kind::Amqp) {
        Some(b) => Some(amqp_ceiling(&env, b, cfg.smoke)?),
        None => None,
    };

    let raw = out.join("raw.csv");
    let new_file = !raw.exists();
    let mut csv = String::new();
    if new_file {
        csv.push_str("stamp,broker,case,impl,metric,run,value\n");
    }
    for s in &samples {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{}",
            env.stamp,
            s.broker.name(),
            s.case,
            s.imp.name(),
            s.metric,
            s.run,
            s.value
        );
    }
    if let Some(c) = &amqp_ceiling {
        // Measured once per bench run, by a bare client: "lapin" in the impl column.
        for (case, value) in [
            ("ceiling-publish", c.publish),
            ("ceiling-publish-written", c.publish_written),
            ("ceiling-publish-confirmed", c.publish_confirmed),
            ("ceiling-drain", c.drain),
            ("ceiling-drain-narrow", c.drain_narrow),
        ] {
            let _ = writeln!(
                csv,
                "{},{},{case},lapin,rate,0,{value}",
                env.stamp,
                Kind::Amqp.name()
            );
        }
    }
    append(&raw, &csv)?;

    let rows = summarize(&samples);
    let table = markdown(
        &rows,
        &cfg,
        ceiling.as_ref(),
        amqp_ceiling.as_ref(),
        started.elapsed(),
    );
    fs::write(out.join("results.md"), &table)?;
    fs::write(scratch.join("results.md"), &table)?;
    fs::write(out.join("chart.svg"), svg(&rows))?;
    println!("\n{table}");
    println!(
        "written: {} (raw runs: {}, logs: {})",
        out.join("results.md").display(),
        raw.display(),
        scratch.display()
    );
    if cfg.smoke && cfg.cases.is_none() {
        check_smoke(&samples, &cfg)?;
    }
    Ok(())
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The smoke fails unless every case produced its figures.
fn check_smoke(samples: &[Sample], cfg: &Config) -> Result<()> {
    for &b in &cfg.brokers {
        for (case, imp, metric) in [
            ("enqueue", Imp::Python, "rate"),
            ("enqueue", Imp::Dq, "rate"),
            ("enqueue-pipelined", Imp::Dq, "rate"),
            ("enqueue-unique", Imp::Dq, "rate"),
            ("noop-2x8", Imp::Python, "rate"),
            ("noop-2x8", Imp::Dq, "rate"),
            ("noop-2x8-prometheus", Imp::Python, "rate"),
            ("noop-2x8-prometheus", Imp::Dq, "rate"),
            ("sleep-async-1000", Imp::Dq, "rate"),
            ("latency", Imp::Dq, "p99_ms"),
            ("latency", Imp::Python, "p99_ms"),
        ] {
            let ok = samples.iter().any(|s| {
                s.broker == b
                    && s.case == case
                    && s.imp == imp
                    && s.metric == metric
                    && s.value.is_finite()
                    && s.value > 0.0
            });
            // Unique sends are Redis only.
            let expected = case != "enqueue-unique" || b == Kind::Redis;
            if !ok && expected {
                bail!(
                    "smoke: no {metric} for {case} ({}) on {}",
                    imp.name(),
                    b.name()
                );
            }
        }
    }
    println!("bench smoke: every case produced its figures");
    Ok(())
}

/// A worker case: who, how many processes and threads, which actor.
struct WorkerCase {
    case: &'static str,
    imp: Imp,
    processes: usize,
    threads: usize,
    actor: &'static str,
    arg: Option<u64>,
    count: usize,
    /// `dramatiq_queue_prefetch` for both workers, when not Dramatiq's default (2 x threads).
    prefetch: Option<usize>,
    /// Both workers record Dramatiq's Prometheus series and serve them; every other case runs
    /// without (Python Dramatiq 2.x has no Prometheus middleware by default).
    prometheus: bool,
}

/// Every case once on one broker, Python and dq alternating.
fn suite(cfg: &Config, env: &Env, b: &BrokerUnderTest, run: usize) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    let mut push = |case, imp, metric, value: f64| {
        out.push(Sample {
            broker: b.kind,
            case,
            imp,
            metric,
            run,
            value,
        })
    };

    // Enqueue from one producer: one message at a time (both), and dq's pipelined batches.
    for (case, imp, mode) in [
        ("enqueue", Imp::Python, "send"),
        ("enqueue", Imp::Dq, "send"),
        ("enqueue-pipelined", Imp::Dq, "batch"),
        ("enqueue-unconfirmed", Imp::Dq, "batch-unconfirmed"),
        // Unique sends (Redis only: RabbitMQ refuses them): a lock and the enqueue in one
        // script call, each on its own key, and all on one key (refused after the first).
        ("enqueue-unique", Imp::Dq, "send-unique"),
        ("enqueue-unique-duplicate", Imp::Dq, "send-unique-duplicate"),
        // Broker priority on Redis (max_priority 10, broker_priority 1 to 10 in turn): what
        // routing into the priority set costs against `enqueue` and `enqueue-pipelined`.
        ("enqueue-prioritized", Imp::Dq, "send-prioritized"),
        (
            "enqueue-pipelined-prioritized",
            Imp::Dq,
            "batch-prioritized",
        ),
    ] {
        // Only RabbitMQ has publisher confirms to turn off; only Redis has dq's priority set
        // (RabbitMQ's priority is the server's own).
        if !cfg.wants(case)
            || (mode == "batch-unconfirmed" && b.kind != Kind::Amqp)
            || (mode.ends_with("-prioritized") && b.kind != Kind::Redis)
        {
            continue;
        }
        if mode.starts_with("send-unique") && b.kind != Kind::Redis {
            continue;
        }
        let queue = queue_name(env, case, imp);
        // dq confirms every publish on RabbitMQ and a lone send waits for it (a disk write, some
        // milliseconds): a tenth of the messages gives the same rate in a tenth of the time.
        let n = if b.kind == Kind::Amqp && imp == Imp::Dq && mode == "send" {
            (cfg.enqueue / 10).max(1)
        } else {
            cfg.enqueue
        };
        let rate = produce(env, b, &queue, imp, mode, n, "noop", None)?;
        println!("  {case:<20} {:<7} {rate:>10.0} msg/s", imp.name());
        push(case, imp, "rate", rate);
        cleanup(env, b, &queue)?;
    }

    let sleep_n = |threads: usize| -> usize {
        ((threads as f64 * 100.0 * cfg.sleep_secs) as usize).clamp(1, cfg.sleep_max)
    };
    let cases = [
        ("noop-1x8", 1, 8, "noop", None, cfg.noop, false, None, false),
        ("noop-2x8", 2, 8, "noop", None, cfg.noop, false, None, false),
        // The same with the Prometheus middleware on both sides: its cost per message.
        (
            "noop-2x8-prometheus",
            2,
            8,
            "noop",
            None,
            cfg.noop,
            false,
            None,
            true,
        ),
        // The same with a deeper prefetch for both (Dramatiq's default is 2 x threads).
        (
            "noop-2x8-prefetch-64",
            2,
            8,
            "noop",
            None,
            cfg.noop,
            false,
            Some(64),
            false,
        ),
        // The cost of the Abortable middleware (one LPOP of the message's cancel event before it
        // runs, the watcher's BLPOP beside): the same as noop-2x8 with it on, for both.
        (
            "noop-2x8-abortable",
            2,
            8,
            "noop",
            None,
            cfg.noop,
            false,
            None,
            false,
        ),
        // Broker priority on Redis: noop-2x8's backlog with broker_priority 1 to 10, taken from
        // the priority set by dq workers with max_priority 10. Python's Redis broker has none.
        (
            "noop-2x8-prioritized",
            2,
            8,
            "noop",
            None,
            cfg.noop,
            true,
            None,
            false,
        ),
        (
            "sleep-8",
            1,
            8,
            "sleep_sync",
            Some(10),
            sleep_n(8),
            false,
            None,
            false,
        ),
        (
            "sleep-32",
            1,
            32,
            "sleep_sync",
            Some(10),
            sleep_n(32),
            false,
            None,
            false,
        ),
        (
            "sleep-async-1000",
            1,
            1000,
            "sleep_async",
            Some(10),
            sleep_n(1000),
            true,
            None,
            false,
        ),
    ];
    // The smoke runs one case of each kind: the others take the same code paths.
    let smoke_cases = ["noop-2x8", "noop-2x8-prometheus", "sleep-async-1000"];
    // noop-2x8's rate and worker CPU (Python, dq), to show what the Prometheus middleware costs
    // per message. The CPU difference is the steadier figure on a shared two-core machine.
    let mut plain: [Option<(f64, f64)>; 2] = [None, None];
    for (case, processes, threads, actor, arg, count, dq_only, prefetch, prometheus) in cases {
        if (cfg.smoke && !smoke_cases.contains(&case)) || !cfg.wants(case) {
            continue;
        }
        // The abort events live in Redis: on RabbitMQ the case would measure a second server.
        if (case.ends_with("-abortable") || case.ends_with("-prioritized")) && b.kind != Kind::Redis
        {
            continue;
        }
        for imp in [Imp::Python, Imp::Dq] {
            if dq_only && imp == Imp::Python {
                continue;
            }
            let wc = WorkerCase {
                case,
                imp,
                processes,
                threads,
                actor,
                arg,
                count,
                prefetch,
                prometheus,
            };
            let m = worker_case(env, b, &wc)?;
            println!(
                "  {case:<20} {:<7} {:>10.0} msg/s  rss {:.1} MB (anon {:.1}, pss {:.1})  worker {:.1} cpu ms/1k msg  broker {:.2} cmd/msg {:.1} cpu ms/1k msg",
                imp.name(),
                m.rate,
                m.rss_mb,
                m.anon_mb,
                m.pss_mb,
                m.worker_cpu_ms_per_kmsg,
                m.cmds_per_msg,
                m.cpu_ms_per_kmsg
            );
            let slot = usize::from(imp == Imp::Dq);
            if case == "noop-2x8" {
                plain[slot] = Some((m.rate, m.worker_cpu_ms_per_kmsg));
            }
            if let (true, Some((rate, cpu))) = (prometheus, plain[slot]) {
                println!(
                    "  {:<20} {:<7} Prometheus costs {:.2} us of worker CPU per message ({cpu:.1} -> {:.1} cpu ms/1k msg; {rate:.0} -> {:.0} msg/s)",
                    "",
                    imp.name(),
                    m.worker_cpu_ms_per_kmsg - cpu,
                    m.worker_cpu_ms_per_kmsg,
                    m.rate
                );
            }
            push(case, imp, "rate", m.rate);
            push(case, imp, "rss_mb", m.rss_mb);
            push(case, imp, "anon_mb", m.anon_mb);
            push(case, imp, "pss_mb", m.pss_mb);
            push(
                case,
                imp,
                "worker_cpu_ms_per_kmsg",
                m.worker_cpu_ms_per_kmsg,
            );
            push(case, imp, "cmds_per_msg", m.cmds_per_msg);
            push(case, imp, "cpu_ms_per_kmsg", m.cpu_ms_per_kmsg);
        }
    }

    for imp in [Imp::Python, Imp::Dq] {
        if !cfg.wants("latency") {
            break;
        }
        let l = latency_case(cfg, env, b, imp)?;
        println!(
            "  {:<20} {:<7} p50 {:.2} ms p99 {:.2} ms; idle broker {:.2} cmd/s {:.2}% cpu",
            "latency",
            imp.name(),
            l.p50_ms,
            l.p99_ms,
            l.idle_cmds_per_s,
            l.idle_cpu_pct
        );
        push("latency", imp, "p50_ms", l.p50_ms);
        push("latency", imp, "p99_ms", l.p99_ms);
        push("latency", imp, "idle_cmds_per_s", l.idle_cmds_per_s);
        push("latency", imp, "idle_cpu_pct", l.idle_cpu_pct);
        push("latency", imp, "rss_mb", l.rss_mb);
    }
    Ok(out)
}

fn queue_name(env: &Env, case: &str, imp: Imp) -> String {
    format!("dqbench-{}-{case}-{}", env.stamp, imp.name())
}

/// The environment every bench program gets.
fn bench_env(c: &mut Command, env: &Env, b: &BrokerUnderTest, queue: &str) {
    c.env("DQ_BENCH_BROKER_URL", &b.url)
        .env("DQ_BENCH_QUEUE", queue)
        .env("DQ_BENCH_NAMESPACE", format!("dqbench-{}", env.stamp))
        .env("DQ_REDIS_NAMESPACE", format!("dqbench-{}", env.stamp))
        .env("PYTHONPATH", &env.pydir);
}

/// Runs a producer and returns its messages per second.
#[allow(clippy::too_many_arguments)]
fn produce(
    env: &Env,
    b: &BrokerUnderTest,
    queue: &str,
    imp: Imp,
    mode: &str,
    n: usize,
    actor: &str,
    arg: Option<u64>,
) -> Result<f64> {
    let mut c = match imp {
        Imp::Dq => Command::new(&env.producer),
        Imp::Python => {
            let mut c = Command::new(&env.python);
            c.arg(env.pydir.join("producer.py"));
            c
        }
    };
    c.args([mode, &n.to_string(), actor]);
    if let Some(a) = arg {
        c.arg(a.to_string());
    }
    bench_env(&mut c, env, b, queue);
    let text = stdout_of(&mut c)?;
    let secs = text
        .split("\"secs\":")
        .nth(1)
        .and_then(|s| s.trim().trim_end_matches('}').trim().parse::<f64>().ok())
        .with_context(|| format!("no secs in the producer's output {text:?}"))?;
    Ok(n as f64 / secs)
}

fn cleanup(env: &Env, b: &BrokerUnderTest, queue: &str) -> Result<()> {
    let mut c = Command::new(&env.producer);
    c.arg("cleanup");
    bench_env(&mut c, env, b, queue);
    stdout_of(&mut c).with_context(|| format!("cleanup of {queue}"))?;
    Ok(())
}

/// Runs a bench program to its end and returns what it printed; its stderr is the error if it
/// fails.
fn stdout_of(c: &mut Command) -> Result<String> {
    let out = cmd::output(c)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            cmd::display(c),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running worker command (Python's `dramatiq` or `dq-bench-worker`) and its files.
struct Worker {
    child: Child,
    log: PathBuf,
    progress: PathBuf,
    processes: usize,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    fn start(
        env: &Env,
        b: &BrokerUnderTest,
        queue: &str,
        imp: Imp,
        processes: usize,
        threads: usize,
        prefetch: Option<usize>,
        prometheus: bool,
        tag: &str,
    ) -> Result<Worker> {
        let progress = env.scratch.join(format!("progress-{tag}"));
        let _ = fs::remove_dir_all(&progress);
        fs::create_dir_all(&progress)?;
        let log = env.scratch.join(format!("{tag}.log"));
        let mut c = match imp {
            Imp::Dq => {
                let mut c = Command::new(&env.worker);
                c.args(["--broker-url", &b.url]);
                c
            }
            Imp::Python => {
                let mut c = Command::new(&env.python);
                c.args(["-m", "dramatiq", "bench_actors", "--path"])
                    .arg(&env.pydir);
                c
            }
        };
        c.args(["--processes", &processes.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--queues", queue])
            .env("DQ_BENCH_OUT", &progress);
        if tag.ends_with("-abortable-dq") || tag.ends_with("-abortable-python") {
            // Both workers add their Abortable middleware, events on the broker's Redis.
            c.env("DQ_BENCH_ABORTABLE", "1");
        }
        if tag.ends_with("-prioritized-dq") {
            // The producer's max_priority (dq-bench-producer's `-prioritized` modes).
            c.env(DQ_MAX_PRIORITY_ENV, "10");
        }
        if let Some(p) = prefetch {
            c.env("dramatiq_queue_prefetch", p.to_string());
        }
        match (imp, prometheus) {
            (Imp::Dq, false) => {
                c.arg("--no-prometheus");
            }
            (Imp::Dq, true) => {
                c.env("dramatiq_prom_port", "0");
            }
            (Imp::Python, false) => {}
            (Imp::Python, true) => {
                let db = env.scratch.join(format!("prom-{tag}"));
                let _ = fs::remove_dir_all(&db);
                fs::create_dir_all(&db)?;
                c.env("DQ_BENCH_PROMETHEUS", "1")
                    .env("dramatiq_prom_db", &db)
                    .env("dramatiq_prom_port", free_port()?.to_string());
            }
        }
        bench_env(&mut c, env, b, queue);
        let file = fs::File::create(&log)?;
        let child = c
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::display(&c)))?;
        Ok(Worker {
            child,
            log,
            progress,
            processes,
        })
    }

    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the worker exited early ({status}); its log: {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// Waits until every worker process has said it is ready (both print Dramatiq's line).
    fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.alive()?;
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if log.matches("Worker process is ready for action.").count() >= self.processes {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the worker was not ready within {within:?}; its log: {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the processes together have finished `n` messages.
    fn wait_done(&mut self, n: usize, within: Duration) -> Result<Progress> {
        let deadline = Instant::now() + within;
        loop {
            let p = Progress::read(&self.progress);
            if p.count >= n as u64 {
                return Ok(p);
            }
            self.alive()?;
            if Instant::now() > deadline {
                bail!(
                    "the worker finished {} of {n} messages within {within:?}; its log: {}",
                    p.count,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Peak RSS of the worker command and every process under it, in MB.
    fn peak_rss_mb(&self) -> f64 {
        let kb: u64 = tree(self.child.id())
            .into_iter()
            .filter_map(|pid| {
                let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .sum();
        kb as f64 / 1024.0
    }

    /// What the worker command's processes hold right now, in MB: anonymous memory (heap and
    /// stacks: what the worker itself allocated) and proportional set size (every page shared
    /// by several processes, such as the binary's code mapped by each worker process, counted
    /// once in shares). Peak RSS counts a shared page in full in every process that maps it.
    fn memory_now_mb(&self) -> (f64, f64) {
        let (mut anon_kb, mut pss_kb) = (0u64, 0u64);
        for pid in tree(self.child.id()) {
            let Ok(s) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
                continue;
            };
            for l in s.lines() {
                let kb = |v: &str| v.split_whitespace().next()?.parse::<u64>().ok();
                if let Some(v) = l.strip_prefix("Anonymous:").and_then(kb) {
                    anon_kb += v;
                } else if let Some(v) = l.strip_prefix("Pss:").and_then(kb) {
                    pss_kb += v;
                }
            }
        }
        (anon_kb as f64 / 1024.0, pss_kb as f64 / 1024.0)
    }

    /// CPU seconds (user + system) used so far by the worker command and every process under
    /// it, from /proc (clock ticks of 1/100 s, as on every Linux we run on).
    fn cpu_secs(&self) -> f64 {
        let ticks: u64 = tree(self.child.id())
            .into_iter()
            .filter_map(|pid| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let f: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .sum();
        ticks as f64 / 100.0
    }

    /// Stops the worker gracefully (TERM to the main process, as an operator would), killing it
    /// if it takes too long.
    fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                for pid in tree(self.child.id()) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                let _ = self.child.wait();
                bail!(
                    "the worker did not stop within 30 s of SIGTERM; its log: {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// `root` and its descendants, from /proc.
fn tree(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parent.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// What the worker processes wrote (see the dq-bench crate).
#[derive(Debug, Default)]
struct Progress {
    count: u64,
    first_ns: u64,
    last_ns: u64,
    latencies_ns: Vec<u64>,
}

impl Progress {
    fn read(dir: &Path) -> Progress {
        let mut p = Progress {
            first_ns: u64::MAX,
            ..Progress::default()
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return p;
        };
        for e in entries.flatten() {
            if e.path().extension().is_none_or(|x| x != "txt") {
                continue;
            }
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let mut lines = text.lines();
            let head: Vec<u64> = lines
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [count, first, last] = head[..] {
                p.count += count;
                if count > 0 {
                    p.first_ns = p.first_ns.min(first);
                    p.last_ns = p.last_ns.max(last);
                }
            }
            p.latencies_ns
                .extend(lines.filter_map(|l| l.trim().parse::<u64>().ok()));
        }
        p
    }
}

struct WorkerFigures {
    rate: f64,
    rss_mb: f64,
    /// Anonymous memory and proportional set size once the queue is drained (see
    /// [`Worker::memory_now_mb`]).
    anon_mb: f64,
    pss_mb: f64,
    /// The worker's own CPU per 1,000 messages, start-up included.
    worker_cpu_ms_per_kmsg: f64,
    cmds_per_msg: f64,
    cpu_ms_per_kmsg: f64,
}

/// Pre-fills the queue, then times a worker draining it.
fn worker_case(env: &Env, b: &BrokerUnderTest, wc: &WorkerCase) -> Result<WorkerFigures> {
    let queue = queue_name(env, wc.case, wc.imp);
    // Pre-filling is not measured: dq's pipelined batches make it quick for both.
    let fill = if wc.case.ends_with("-prioritized") {
        "batch-prioritized"
    } else {
        "batch"
    };
    produce(env, b, &queue, Imp::Dq, fill, wc.count, wc.actor, wc.arg)?;
    let before = b.snapshot()?;
    let tag = format!("{}-{}-{}", b.kind.name(), wc.case, wc.imp.name());
    let mut w = Worker::start(
        env,
        b,
        &queue,
        wc.imp,
        wc.processes,
        wc.threads,
        wc.prefetch,
        wc.prometheus,
        &tag,
    )?;
    // Generous: the slowest case (Python, 10 ms sleeps on 8 threads) runs at ~800 msg/s.
    let within = Duration::from_secs(60) + Duration::from_millis(wc.count as u64 * 5);
    let result = w.wait_done(wc.count, within);
    let after = b.snapshot()?;
    let rss_mb = w.peak_rss_mb();
    let (anon_mb, pss_mb) = w.memory_now_mb();
    let worker_cpu = w.cpu_secs();
    let stopped = w.stop();
    let p = result?;
    stopped?;
    cleanup(env, b, &queue)?;
    let span = (p.last_ns.saturating_sub(p.first_ns)) as f64 / 1e9;
    let n = p.count as f64;
    Ok(WorkerFigures {
        rate: if span > 0.0 { n / span } else { f64::NAN },
        rss_mb,
        anon_mb,
        pss_mb,
        worker_cpu_ms_per_kmsg: worker_cpu * 1e6 / n,
        // One INFO per snapshot is the bench's own.
        cmds_per_msg: after
            .commands
            .zip(before.commands)
            .map_or(f64::NAN, |(a, b)| (a - b - 1.0) / n),
        cpu_ms_per_kmsg: (after.cpu_secs - before.cpu_secs) * 1e6 / n,
    })
}

struct LatencyFigures {
    p50_ms: f64,
    p99_ms: f64,
    idle_cmds_per_s: f64,
    idle_cpu_pct: f64,
    rss_mb: f64,
}

/// A worker (1x8) first idles, for the broker's idle cost, then gets messages with random gaps.
fn latency_case(cfg: &Config, env: &Env, b: &BrokerUnderTest, imp: Imp) -> Result<LatencyFigures> {
    let queue = queue_name(env, "latency", imp);
    let tag = format!("{}-latency-{}", b.kind.name(), imp.name());
    let mut w = Worker::start(env, b, &queue, imp, 1, 8, None, false, &tag)?;
    let result = (|| -> Result<LatencyFigures> {
        w.wait_ready(Duration::from_secs(60))?;
        // Let start-up traffic (declarations, first heartbeats) pass.
        std::thread::sleep(Duration::from_millis(500));
        let before = b.snapshot()?;
        std::thread::sleep(Duration::from_secs_f64(cfg.idle_secs));
        let after = b.snapshot()?;
        let secs = after.at.duration_since(before.at).as_secs_f64();
        let idle_cmds_per_s = after
            .commands
            .zip(before.commands)
            .map_or(f64::NAN, |(a, b)| (a - b - 1.0) / secs);
        let idle_cpu_pct = (after.cpu_secs - before.cpu_secs) / secs * 100.0;

        let mut c = Command::new(&env.producer);
        c.args([
            "latency",
            &cfg.latency.to_string(),
            &cfg.latency_gap_ms.to_string(),
        ]);
        bench_env(&mut c, env, b, &queue);
        stdout_of(&mut c)?;
        let p = w.wait_done(cfg.latency, Duration::from_secs(60))?;
        let mut l = p.latencies_ns;
        l.sort_unstable();
        Ok(LatencyFigures {
            p50_ms: percentile(&l, 50.0) / 1e6,
            p99_ms: percentile(&l, 99.0) / 1e6,
            idle_cmds_per_s,
            idle_cpu_pct,
            rss_mb: w.peak_rss_mb(),
        })
    })();
    let stopped = w.stop();
    let figures = result?;
    stopped?;
    cleanup(env, b, &queue)?;
    Ok(figures)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// What redis-benchmark gets out of the same server for the commands a message costs.
#[derive(Debug)]
struct Ceiling {
    /// Per command, requests per second, pipelined 16 deep.
    ops: Vec<(String, f64)>,
    /// Mean EVALSHA of a script doing what dq's enqueue does (HSET + RPUSH), pipelined.
    script_ops: f64,
}

impl Ceiling {
    fn mean_ops(&self) -> f64 {
        self.ops.iter().map(|(_, v)| v).sum::<f64>() / self.ops.len().max(1) as f64
    }
}

fn redis_ceiling(port: u16, smoke: bool) -> Result<Ceiling> {
    let n = if smoke { "5000" } else { "200000" };
    let p = port.to_string();
    let out = cmd::output(Command::new("redis-benchmark").args([
        "-p",
        &p,
        "-q",
        "-n",
        n,
        "-P",
        "16",
        "-t",
        "rpush,lpop,hset",
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let mut ops = Vec::new();
    for line in text.lines() {
        // "RPUSH: 123456.79 requests per second, p50=0.135 msec"
        if let Some((name, rest)) = line.split_once(": ") {
            if let Some(v) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
            {
                if rest.contains("requests per second") {
                    ops.push((name.trim().to_owned(), v));
                }
            }
        }
    }
    let script = "redis.call('hset', KEYS[1], ARGV[1], ARGV[2]); redis.call('rpush', KEYS[2], ARGV[1]); redis.call('hdel', KEYS[1], ARGV[1]); return redis.call('lpop', KEYS[2])";
    let out = cmd::output(Command::new("redis-benchmark").args([
        "-p",
        &p,
        "-q",
        "-n",
        n,
        "-P",
        "16",
        "eval",
        script,
        "2",
        "ceil:msgs",
        "ceil:q",
        "__rand_int__",
        "{\"x\":1}",
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let script_ops = text
        .lines()
        .filter(|l| l.contains("requests per second"))
        .filter_map(|l| {
            l.split_once(": ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .next_back()
        .unwrap_or(f64::NAN);
    if ops.is_empty() {
        bail!("redis-benchmark printed no figures: {text}");
    }
    Ok(Ceiling { ops, script_ops })
}

/// What a bare lapin client (no dq code in the loop) gets out of the same RabbitMQ server, from
/// `dq-bench-producer ceiling N`, in messages per second: the persistent messages and queue
/// arguments are dq's.
#[derive(Debug)]
struct AmqpCeiling {
    /// Messages published each way (each drain takes N).
    count: usize,
    /// Without publisher confirms, until the queue holds all N.
    publish: f64,
    /// Without publisher confirms, until the last publish is written to the socket: where dq's
    /// own unconfirmed enqueue stops its clock.
    publish_written: f64,
    /// With publisher confirms, 1,000 outstanding, until the last confirm.
    publish_confirmed: f64,
    /// Prefetch 1,000 and a multiple ack every 100 deliveries, first delivery to last ack.
    drain: f64,
    /// Prefetch 16 (Dramatiq's default for 8 threads) and a multiple ack every 8 deliveries.
    drain_narrow: f64,
}

fn amqp_ceiling(env: &Env, b: &BrokerUnderTest, smoke: bool) -> Result<AmqpCeiling> {
    let n: usize = if smoke { 500 } else { 50_000 };
    println!(
        "\n==> RabbitMQ ceiling: a bare lapin client, {n} messages published each way, then drained"
    );
    let mut c = Command::new(&env.producer);
    c.args(["ceiling", &n.to_string()]);
    // The producer declares (and deletes) `<queue>.ceiling`.
    bench_env(&mut c, env, b, &format!("dqbench-{}", env.stamp));
    let text = stdout_of(&mut c)?;
    let field = |key: &str| -> Result<f64> {
        text.split(&format!("\"{key}\":"))
            .nth(1)
            .and_then(|s| s.split([',', '}']).next()?.trim().parse::<f64>().ok())
            .with_context(|| format!("no {key} in the ceiling's output {text:?}"))
    };
    let ceiling = AmqpCeiling {
        count: n,
        publish: field("publish")?,
        publish_written: field("publish_written")?,
        publish_confirmed: field("publish_confirmed")?,
        drain: field("drain")?,
        drain_narrow: field("drain_narrow")?,
    };
    println!(
        "  publish {:.0} msg/s (written {:.0})  confirmed {:.0} msg/s  drain {:.0} msg/s (prefetch 16: {:.0})",
        ceiling.publish,
        ceiling.publish_written,
        ceiling.publish_confirmed,
        ceiling.drain,
        ceiling.drain_narrow
    );
    Ok(ceiling)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Whether a row's target is a ratio (dq / Python at least or at most) or an absolute bound.
#[derive(Clone, Copy, Debug)]
enum Target {
    None,
    RatioAtLeast(f64),
    RatioAtMost(f64),
    DqAtMost(f64),
}

struct Row {
    broker: Kind,
    label: String,
    unit: &'static str,
    python: f64,
    dq: f64,
    target: Target,
    /// Higher is better (throughput), for the chart.
    higher_better: bool,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.dq / self.python
    }

    fn met(&self) -> Option<bool> {
        let r = self.ratio();
        if !r.is_finite() {
            return None;
        }
        match self.target {
            Target::None => None,
            Target::RatioAtLeast(t) => Some(r >= t),
            Target::RatioAtMost(t) => Some(r <= t),
            Target::DqAtMost(t) => Some(self.dq <= t),
        }
    }
}

fn summarize(samples: &[Sample]) -> Vec<Row> {
    let mut by: BTreeMap<(Kind, &str, Imp, &str), Vec<f64>> = BTreeMap::new();
    for s in samples {
        by.entry((s.broker, s.case, s.imp, s.metric))
            .or_default()
            .push(s.value);
    }
    let med = |b: Kind, case: &str, imp: Imp, metric: &str| -> f64 {
        by.get(&(b, case, imp, metric))
            .map_or(f64::NAN, |v| median(v.clone()))
    };
    let mut rows = Vec::new();
    let mut brokers: Vec<Kind> = samples.iter().map(|s| s.broker).collect();
    brokers.sort();
    brokers.dedup();
    for b in brokers {
        let redis = b == Kind::Redis;
        let mut row = |label: &str,
                       unit: &'static str,
                       py: &str,
                       dq: &str,
                       metric: &str,
                       target: Target,
                       higher_better: bool| {
            rows.push(Row {
                broker: b,
                label: label.to_owned(),
                unit,
                python: med(b, py, Imp::Python, metric),
                dq: med(b, dq, Imp::Dq, metric),
                target,
                higher_better,
            });
        };
        let enq = Target::RatioAtLeast(10.0);
        row(
            "enqueue, one producer, one at a time",
            "msg/s",
            "enqueue",
            "enqueue",
            "rate",
            Target::None,
            true,
        );
        // On RabbitMQ the target is judged at Python's guarantee: Dramatiq publishes without
        // confirms by default; dq's default (a confirm per message) is shown beside it.
        row(
            "enqueue, one producer, dq pipelined (enqueue_many)",
            "msg/s",
            "enqueue",
            "enqueue-pipelined",
            "rate",
            if redis { enq } else { Target::None },
            true,
        );
        if redis {
            // Python has no unique sends: the ratio is to its plain sends, and the difference
            // from dq's plain `enqueue` row above is what the lock costs per send.
            row(
                "enqueue, one at a time, unique (a lock per send)",
                "msg/s",
                "enqueue",
                "enqueue-unique",
                "rate",
                Target::None,
                true,
            );
            row(
                "unique sends of one held key (refused)",
                "msg/s",
                "enqueue",
                "enqueue-unique-duplicate",
                "rate",
                Target::None,
                true,
            );
        }
        if !redis {
            row(
                "enqueue, dq pipelined without publisher confirms (Python's default)",
                "msg/s",
                "enqueue",
                "enqueue-unconfirmed",
                "rate",
                enq,
                true,
            );
        }
        row(
            "noop, 1 process x 8 threads",
            "msg/s",
            "noop-1x8",
            "noop-1x8",
            "rate",
            Target::None,
            true,
        );
        let noop = Target::RatioAtLeast(if redis { 20.0 } else { 5.0 });
        row(
            "noop, 2 processes x 8 threads",
            "msg/s",
            "noop-2x8",
            "noop-2x8",
            "rate",
            noop,
            true,
        );
        row(
            "noop, 2 x 8, Prometheus middleware on for both",
            "msg/s",
            "noop-2x8-prometheus",
            "noop-2x8-prometheus",
            "rate",
            Target::None,
            true,
        );
        row(
            "noop, 2 x 8, prefetch 64 for both (default 16)",
            "msg/s",
            "noop-2x8-prefetch-64",
            "noop-2x8-prefetch-64",
            "rate",
            Target::None,
            true,
        );
        if redis {
            // Python's Redis broker has no priority: its plain figures stand beside dq's.
            row(
                "enqueue, one at a time, dq with broker priority (Python plain)",
                "msg/s",
                "enqueue",
                "enqueue-prioritized",
                "rate",
                Target::None,
                true,
            );
            row(
                "enqueue, dq pipelined with broker priority (Python plain, one at a time)",
                "msg/s",
                "enqueue",
                "enqueue-pipelined-prioritized",
                "rate",
                Target::None,
                true,
            );
            row(
                "noop, 2 x 8, dq with broker priority (Python plain)",
                "msg/s",
                "noop-2x8",
                "noop-2x8-prioritized",
                "rate",
                Target::None,
                true,
            );
            row(
                "noop, 2 x 8, with the Abortable middleware (both)",
                "msg/s",
                "noop-2x8-abortable",
                "noop-2x8-abortable",
                "rate",
                Target::None,
                true,
            );
        }
        row(
            "sleep 10 ms, 8 threads (dq sync)",
            "msg/s",
            "sleep-8",
            "sleep-8",
            "rate",
            Target::None,
            true,
        );
        row(
            "sleep 10 ms, 32 threads (dq sync)",
            "msg/s",
            "sleep-32",
            "sleep-32",
            "rate",
            Target::None,
            true,
        );
        row(
            "sleep 10 ms: Python 32 threads, dq async 1,000",
            "msg/s",
            "sleep-32",
            "sleep-async-1000",
            "rate",
            Target::RatioAtLeast(20.0),
            true,
        );
        row(
            "idle latency send→start p50",
            "ms",
            "latency",
            "latency",
            "p50_ms",
            Target::None,
            false,
        );
        let p99 = if redis {
            Target::DqAtMost(5.0)
        } else {
            Target::None
        };
        row(
            "idle latency send→start p99",
            "ms",
            "latency",
            "latency",
            "p99_ms",
            p99,
            false,
        );
        if redis {
            row(
                "broker idle, commands/s (one 1x8 worker)",
                "cmd/s",
                "latency",
                "latency",
                "idle_cmds_per_s",
                Target::RatioAtMost(1.0),
                false,
            );
        }
        row(
            "broker idle CPU (one 1x8 worker)",
            "%",
            "latency",
            "latency",
            "idle_cpu_pct",
            Target::None,
            false,
        );
        if redis {
            row(
                "broker busy, commands/message (noop 2x8)",
                "cmd/msg",
                "noop-2x8",
                "noop-2x8",
                "cmds_per_msg",
                Target::None,
                false,
            );
            row(
                "broker busy, commands/message (noop 2x8; dq with broker priority)",
                "cmd/msg",
                "noop-2x8",
                "noop-2x8-prioritized",
                "cmds_per_msg",
                Target::None,
                false,
            );
            row(
                "broker busy, commands/message (noop 2x8, Abortable)",
                "cmd/msg",
                "noop-2x8-abortable",
                "noop-2x8-abortable",
                "cmds_per_msg",
                Target::None,
                false,
            );
        }
        row(
            "broker busy CPU per 1,000 messages (noop 2x8)",
            "ms",
            "noop-2x8",
            "noop-2x8",
            "cpu_ms_per_kmsg",
            Target::None,
            false,
        );
        row(
            "worker CPU per 1,000 messages (noop 2x8, all processes)",
            "ms",
            "noop-2x8",
            "noop-2x8",
            "worker_cpu_ms_per_kmsg",
            Target::None,
            false,
        );
        row(
            "worker peak RSS, noop 2x8 (all processes)",
            "MB",
            "noop-2x8",
            "noop-2x8",
            "rss_mb",
            Target::RatioAtMost(0.1),
            false,
        );
        row(
            "worker anonymous memory after the drain, noop 2x8 (heap and stacks)",
            "MB",
            "noop-2x8",
            "noop-2x8",
            "anon_mb",
            Target::None,
            false,
        );
        row(
            "worker PSS after the drain, noop 2x8 (shared pages split)",
            "MB",
            "noop-2x8",
            "noop-2x8",
            "pss_mb",
            Target::None,
            false,
        );
        row(
            "worker peak RSS, noop 1x8",
            "MB",
            "noop-1x8",
            "noop-1x8",
            "rss_mb",
            Target::RatioAtMost(0.1),
            false,
        );
        row(
            "worker peak RSS: Python 32 threads, dq async 1,000",
            "MB",
            "sleep-32",
            "sleep-async-1000",
            "rss_mb",
            Target::None,
            false,
        );
    }
    rows
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "n/a".to_owned()
    } else if v.abs() >= 100.0 {
        let s = format!("{v:.0}");
        // Thousands separators: easier to read at a glance in a table of rates.
        let (neg, digits) = s
            .strip_prefix('-')
            .map_or((false, s.as_str()), |d| (true, d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if neg {
            format!("-{out}")
        } else {
            out
        }
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "n/a".to_owned()
    } else if r >= 10.0 {
        format!("{r:.0}x")
    } else if r >= 0.1 {
        format!("{r:.2}x")
    } else {
        format!("{r:.3}x")
    }
}

/// `part` as a percentage of `whole`, or n/a.
fn fmt_pct(part: f64, whole: f64) -> String {
    let p = part / whole * 100.0;
    if p.is_finite() {
        format!("{p:.0}%")
    } else {
        "n/a".to_owned()
    }
}

fn markdown(
    rows: &[Row],
    cfg: &Config,
    ceiling: Option<&Ceiling>,
    amqp_ceiling: Option<&AmqpCeiling>,
    took: Duration,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dq vs Python Dramatiq 2.2.1, same machine and broker, median of {} run(s){} (took {:.0} s).",
        cfg.runs,
        if cfg.smoke { ", SMOKE sizes: not figures to quote" } else { "" },
        took.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "Sizes: enqueue {} messages, noop {} pre-filled, sleeping cases ~{} s at their ideal rate (at most {}), latency {} messages with 0-{} ms gaps, idle {} s.\n",
        cfg.enqueue, cfg.noop, cfg.sleep_secs, cfg.sleep_max, cfg.latency, cfg.latency_gap_ms, cfg.idle_secs
    );
    let mut current = None;
    for r in rows {
        if current != Some(r.broker) {
            current = Some(r.broker);
            let _ = writeln!(s, "\n### {}\n", r.broker.name());
            let _ = writeln!(
                s,
                "| measure | unit | Python | dq | dq/Python | target | met |"
            );
            let _ = writeln!(s, "|---|---|---:|---:|---:|---|---|");
        }
        let target = match r.target {
            Target::None => String::new(),
            Target::RatioAtLeast(t) => format!("≥ {t}x"),
            Target::RatioAtMost(t) => format!("≤ {t}x"),
            Target::DqAtMost(t) => format!("dq ≤ {t} {}", r.unit),
        };
        let met = match r.met() {
            None => "",
            Some(true) => "yes",
            Some(false) => "**no**",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.unit,
            fmt_num(r.python),
            fmt_num(r.dq),
            fmt_ratio(r.ratio()),
            target,
            met
        );
    }
    if let Some(c) = ceiling {
        let cmds = rows
            .iter()
            .find(|r| r.broker == Kind::Redis && r.unit == "cmd/msg")
            .map_or(f64::NAN, |r| r.dq);
        let dq_rate = rows
            .iter()
            .find(|r| r.broker == Kind::Redis && r.label.starts_with("noop, 2 processes"))
            .map_or(f64::NAN, |r| r.dq);
        let ceiling_rate = c.mean_ops() / cmds;
        let _ = writeln!(
            s,
            "\n### Redis ceiling (redis-benchmark, same server, pipelined 16 deep)\n"
        );
        let _ = writeln!(s, "| command | requests/s |");
        let _ = writeln!(s, "|---|---:|");
        for (name, v) in &c.ops {
            let _ = writeln!(s, "| {name} | {} |", fmt_num(*v));
        }
        let _ = writeln!(
            s,
            "| EVAL: HSET + RPUSH + HDEL + LPOP (one message's enqueue, fetch and ack, in one script) | {} |",
            fmt_num(c.script_ops)
        );
        let _ = writeln!(
            s,
            "\nAt {} commands per message (dq, noop 2x8, script-internal calls included), the server's plain-command rate allows ~{} msg/s; dq's noop 2x8 reached {} msg/s ({:.0}% of that). The one-script-per-message bound is ~{} msg/s ({:.0}%).",
            fmt_num(cmds),
            fmt_num(ceiling_rate),
            fmt_num(dq_rate),
            dq_rate / ceiling_rate * 100.0,
            fmt_num(c.script_ops),
            dq_rate / c.script_ops * 100.0
        );
    }
    if let Some(c) = amqp_ceiling {
        let dq_rate = |label: &str| {
            rows.iter()
                .find(|r| r.broker == Kind::Amqp && r.label.starts_with(label))
                .map_or(f64::NAN, |r| r.dq)
        };
        let unconfirmed = dq_rate("enqueue, dq pipelined without publisher confirms");
        let pipelined = dq_rate("enqueue, one producer, dq pipelined");
        let noop = dq_rate("noop, 2 processes");
        let noop_one = dq_rate("noop, 1 process");
        let sleep = dq_rate("sleep 10 ms: Python 32 threads, dq async");
        let _ = writeln!(
            s,
            "\n### RabbitMQ ceiling (bare lapin client, same server)\n"
        );
        let _ = writeln!(
            s,
            "{} persistent noop messages published each way to a queue declared as dq declares its own, then drained {} at a time by one consumer, each way.\n",
            fmt_num(c.count as f64),
            fmt_num(c.count as f64)
        );
        let _ = writeln!(s, "| measure | msg/s |");
        let _ = writeln!(s, "|---|---:|");
        for (name, v) in [
            (
                "publish without confirms, until the queue holds them all",
                c.publish,
            ),
            (
                "publish without confirms, until the last is written to the socket",
                c.publish_written,
            ),
            (
                "publish with confirms, pipelined 1,000 deep, until the last confirm",
                c.publish_confirmed,
            ),
            (
                "drain: prefetch 16 (Dramatiq's default for 8 threads), one multiple ack per 8 deliveries",
                c.drain_narrow,
            ),
            (
                "drain: prefetch 1,000, one multiple ack per 100 deliveries",
                c.drain,
            ),
        ] {
            let _ = writeln!(s, "| {name} | {} |", fmt_num(v));
        }
        let _ = writeln!(
            s,
            "\ndq on RabbitMQ against it: enqueue without confirms {} msg/s ({} of the bare publish until queued, {} of it until written to the socket, where dq's own clock stops: RabbitMQ takes bytes in far faster than its queue stores them, so this row can pass 100%), pipelined enqueue {} msg/s ({} of the confirmed pipelined publish), noop 1x8 {} msg/s ({} of the drain at the same prefetch of 16 on one channel), noop 2x8 {} msg/s ({} of the prefetch-1,000 drain), async sleep 1,000 {} msg/s ({} of it).",
            fmt_num(unconfirmed),
            fmt_pct(unconfirmed, c.publish),
            fmt_pct(unconfirmed, c.publish_written),
            fmt_num(pipelined),
            fmt_pct(pipelined, c.publish_confirmed),
            fmt_num(noop_one),
            fmt_pct(noop_one, c.drain_narrow),
            fmt_num(noop),
            fmt_pct(noop, c.drain),
            fmt_num(sleep),
            fmt_pct(sleep, c.drain)
        );
    }
    let _ = writeln!(
        s,
        "\nRedis is a private redis-server the bench starts (commands and CPU are the bench's alone); RabbitMQ is the shared server, so its CPU figures include other clients. Throughput is messages over the span from the first actor start to the last actor finish; RSS sums every process of the worker command (main process included). Python's RabbitMQ producer runs without publisher confirms (Dramatiq's default); dq's confirms each publish (its default)."
    );
    s
}

/// A hand-written bar chart of dq/Python per row, on a log scale, with the targets marked.
fn svg(rows: &[Row]) -> String {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.ratio().is_finite()).collect();
    let (w, left, bar_h, gap, top) = (900.0, 430.0, 16.0, 6.0, 40.0);
    let h = top + rows.len() as f64 * (bar_h + gap) + 40.0;
    // log10 scale from 0.001x to 1000x.
    let (lo, hi) = (-3.0_f64, 3.0_f64);
    let x = |r: f64| left + (r.log10().clamp(lo, hi) - lo) / (hi - lo) * (w - left - 20.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="14">dq / Python Dramatiq (log scale; green: better than Python, target tick in black)</text>"#
    );
    for d in [-3, -2, -1, 0, 1, 2, 3] {
        let xx = x(10f64.powi(d));
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{}" x2="{xx:.1}" y2="{}" stroke="{}" /><text x="{xx:.1}" y="{}" text-anchor="middle">{}x</text>"##,
            top - 6.0,
            h - 30.0,
            if d == 0 { "#444" } else { "#ddd" },
            h - 16.0,
            10f64.powi(d)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let ratio = r.ratio();
        let better = if r.higher_better {
            ratio >= 1.0
        } else {
            ratio <= 1.0
        };
        let (x0, x1) = (x(1.0).min(x(ratio)), x(1.0).max(x(ratio)));
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{} {}</text>"#,
            left - 6.0,
            y + bar_h - 4.0,
            r.broker.name(),
            escape(&r.label)
        );
        let _ = writeln!(
            s,
            r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{bar_h}" fill="{}" /><text x="{:.1}" y="{:.1}">{}</text>"#,
            (x1 - x0).max(1.0),
            if better { "#3a9d5d" } else { "#d9534f" },
            x1 + 4.0,
            y + bar_h - 4.0,
            fmt_ratio(ratio)
        );
        let t = match r.target {
            Target::RatioAtLeast(t) | Target::RatioAtMost(t) => Some(t),
            Target::DqAtMost(v) => Some(v / r.python),
            Target::None => None,
        };
        if let Some(t) = t.filter(|t| t.is_finite() && *t > 0.0) {
            let tx = x(t);
            let _ = writeln!(
                s,
                r#"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="black" stroke-width="2" />"#,
                y - 2.0,
                y + bar_h + 2.0
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
