//! `cargo xtask services`: Redis and RabbitMQ must answer before any test runs.
//!
//! A service counts as up only when it speaks its protocol (Redis answers `PING`, RabbitMQ sends
//! `Connection.Start`), not when a port merely accepts: RabbitMQ opens its port seconds before
//! it can serve. A service that is down is started when installed, installed with apt-get first
//! when not (as root), and otherwise reported with what to do. It is never skipped: the tests
//! need both.
//!
//! The dashboard's browser test also needs Debian's `chromium` and `chromium-driver`: they are
//! installed the same way when missing, and their absence fails the step like a service's. So
//! does RabbitMQ's management API (the `rabbitmq_management` plugin, enabled when it does not
//! answer), which the dashboard's RabbitMQ test reads rates and consumers from.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{cmd, probe, Ctx};

struct Service {
    name: &'static str,
    /// The env var the tests read the URL from (dq-test), and its default.
    env: &'static str,
    default_url: &'static str,
    port: u16,
    probe: fn(&str, Duration) -> Result<(), probe::ProbeError>,
    /// The Debian package that provides it.
    package: &'static str,
    /// Where the server binary is, if installed.
    installed: fn() -> Option<PathBuf>,
    /// Starts the server in the background (it daemonizes); `Ok(false)` if the command failed.
    start: fn(&Ctx, &Path) -> Result<bool>,
    /// How long a start may take before the service answers.
    ready_within: Duration,
    /// How to start it by hand, for the error message.
    manual_start: &'static str,
}

const REDIS: Service = Service {
    name: "Redis",
    env: "DQ_REDIS_URL",
    default_url: "redis://127.0.0.1:6379",
    port: 6379,
    probe: probe::redis,
    package: "redis-server",
    installed: || cmd::find_program("redis-server"),
    start: start_redis,
    ready_within: Duration::from_secs(15),
    manual_start:
        "redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes",
};

const RABBITMQ: Service = Service {
    name: "RabbitMQ",
    env: "DQ_AMQP_URL",
    default_url: "amqp://guest:guest@127.0.0.1:5672/%2f",
    port: 5672,
    probe: probe::amqp,
    package: "rabbitmq-server",
    installed: || {
        cmd::find_program(RABBITMQ_SERVER).or_else(|| cmd::find_program("rabbitmq-server"))
    },
    start: start_rabbitmq,
    // It is ready 7-9 s after the start command returns on these machines; a first boot after
    // an install creates its database and takes longer.
    ready_within: Duration::from_secs(90),
    manual_start:
        "as root, with RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 and ERL_EPMD_ADDRESS=127.0.0.1 \
                   exported: su rabbitmq -s /bin/sh -c \"cd /var/lib/rabbitmq && \
                   HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server -detached\" \
                   (its log is in /var/log/rabbitmq)",
};

/// The server script under the rabbitmq user's own tree; the /usr/sbin wrapper insists on root.
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    // `apt-get update` is slow: at most once per run, and only if something must be installed.
    let apt_updated = Cell::new(false);
    let mut failures = Vec::new();
    for service in [&REDIS, &RABBITMQ] {
        if let Err(e) = ensure(ctx, service, &apt_updated) {
            failures.push(format!("{}: {e:#}", service.name));
        }
    }
    if failures.is_empty() {
        if let Err(e) = ensure_management() {
            failures.push(format!(
                "RabbitMQ's management API (for the dashboard's rates and consumers): {e:#}"
            ));
        }
    }
    if let Err(e) = ensure_browser(&apt_updated) {
        failures.push(format!(
            "Chromium (for the dashboard's browser test): {e:#}"
        ));
    }
    if failures.is_empty() {
        return Ok(());
    }
    let why = if ctx.ci {
        "CI=true: the test suite needs Redis, RabbitMQ and Chromium and never skips their tests"
    } else {
        "the test suite needs Redis, RabbitMQ and Chromium"
    };
    bail!("{why}; not available:\n  {}", failures.join("\n  "))
}

fn ensure(ctx: &Ctx, s: &Service, apt_updated: &Cell<bool>) -> Result<()> {
    let url = match std::env::var(s.env) {
        Ok(v) if !v.is_empty() => v,
        _ => s.default_url.to_owned(),
    };
    let Some(addr) = probe::host_port(&url, s.port) else {
        bail!("{} = {url:?} names no host", s.env);
    };
    let first = match (s.probe)(&addr, PROBE_TIMEOUT) {
        Ok(()) => {
            println!("{} is up at {addr}", s.name);
            return Ok(());
        }
        Err(e) => e,
    };
    println!("{} is not answering at {addr}: {first}", s.name);
    let local = [
        format!("127.0.0.1:{}", s.port),
        format!("localhost:{}", s.port),
    ];
    if !local.contains(&addr) {
        bail!(
            "not reachable at {addr} (from {}): {first}; xtask only starts servers on \
             127.0.0.1:{}, so start that one or unset {}",
            s.env,
            s.port,
            s.env
        );
    }

    let program = match (s.installed)() {
        Some(p) => p,
        None => {
            install(s, apt_updated)?;
            match (s.installed)() {
                Some(p) => p,
                None => bail!(
                    "apt-get installed {} but its server is not found",
                    s.package
                ),
            }
        }
    };
    // An apt-get install may have started it through its init script already.
    if (s.probe)(&addr, PROBE_TIMEOUT).is_err() {
        println!("starting {} ({})", s.name, program.display());
        if !(s.start)(ctx, &program)? {
            // Not fatal yet: one may be booting already, which makes a second start fail.
            println!(
                "the start command failed; waiting in case {} is already booting",
                s.name
            );
        }
    }
    wait_ready(s, &addr)
}

fn wait_ready(s: &Service, addr: &str) -> Result<()> {
    let start = Instant::now();
    let deadline = start + s.ready_within;
    loop {
        match (s.probe)(addr, PROBE_TIMEOUT) {
            Ok(()) => {
                println!(
                    "{} is up at {addr} after {:.1}s",
                    s.name,
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Err(e) if Instant::now() >= deadline => bail!(
                "started, but not answering at {addr} within {}s: {e}. Start it by hand: {}",
                s.ready_within.as_secs(),
                s.manual_start
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// RabbitMQ's management API on 127.0.0.1:15672, which the dashboard reads rates and consumers
/// from when its URL is given: the plugin ships with the server and is enabled when it does not
/// answer (a server named by `DQ_AMQP_URL` is the user's to configure).
fn ensure_management() -> Result<()> {
    if std::env::var_os("DQ_AMQP_URL").is_some() {
        return Ok(());
    }
    let addr = "127.0.0.1:15672";
    let answers = || {
        addr.parse()
            .ok()
            .and_then(|a| std::net::TcpStream::connect_timeout(&a, PROBE_TIMEOUT).ok())
            .is_some()
    };
    if answers() {
        return Ok(());
    }
    let Some(plugins) = cmd::find_program("rabbitmq-plugins") else {
        bail!("not answering at {addr}, and there is no rabbitmq-plugins to enable it with");
    };
    println!("enabling rabbitmq_management");
    cmd::run(Command::new(plugins).args(["enable", "rabbitmq_management"]))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers() {
        if Instant::now() >= deadline {
            bail!("rabbitmq_management is enabled, but nothing answers at {addr} within 60s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    println!("RabbitMQ's management API is up at {addr}");
    Ok(())
}

/// Headless Chromium and its WebDriver server, which dq-dashboard's browser test drives.
fn ensure_browser(apt_updated: &Cell<bool>) -> Result<()> {
    let present = || {
        cmd::find_program("chromedriver").is_some()
            && (cmd::find_program("chromium").is_some()
                || cmd::find_program("chromium-browser").is_some())
    };
    if present() {
        return Ok(());
    }
    println!("chromium or chromium-driver is not installed");
    if !crate::is_root() {
        bail!(
            "not installed, and installing needs root: `sudo apt-get install -y chromium \
             chromium-driver`, then `cargo xtask services` again"
        );
    }
    let Some(apt) = cmd::find_program("apt-get") else {
        bail!("not installed, and there is no apt-get: install Chromium and chromedriver by hand");
    };
    if !apt_updated.get() {
        cmd::run(Command::new(&apt).arg("update"))?;
        apt_updated.set(true);
    }
    cmd::run(
        Command::new(&apt)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "chromium",
                "chromium-driver",
            ]),
    )?;
    if !present() {
        bail!("apt-get installed chromium and chromium-driver, but chromedriver is not found");
    }
    Ok(())
}

fn install(s: &Service, apt_updated: &Cell<bool>) -> Result<()> {
    println!("{} is not installed", s.name);
    if !crate::is_root() {
        bail!(
            "not installed, and installing needs root: `sudo apt-get install -y {}`, then \
             `cargo xtask services` again",
            s.package
        );
    }
    let Some(apt) = cmd::find_program("apt-get") else {
        bail!(
            "not installed, and there is no apt-get: install {} by hand",
            s.package
        );
    };
    if !apt_updated.get() {
        cmd::run(Command::new(&apt).arg("update"))?;
        apt_updated.set(true);
    }
    cmd::run(
        Command::new(&apt)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", s.package]),
    )
}

fn start_redis(ctx: &Ctx, program: &Path) -> Result<bool> {
    // Loopback only, and no snapshots: test data is disposable and a save would stall the tests.
    cmd::run_logged(
        Command::new(program).args([
            "--port",
            "6379",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
        ]),
        &ctx.target_dir().join("xtask/redis-start.log"),
    )
}

fn start_rabbitmq(ctx: &Ctx, program: &Path) -> Result<bool> {
    // Without these, epmd and the Erlang distribution port listen on every interface.
    let mut env = String::from(
        "export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 \
         RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'; ",
    );
    // The node is named rabbit@<hostname>; Erlang cannot reach a node whose host does not
    // resolve, so fall back to localhost.
    if !hostname_resolves() {
        env.push_str("export RABBITMQ_NODENAME=rabbit@localhost; ");
    }
    let log = ctx.target_dir().join("xtask/rabbitmq-start.log");
    if crate::is_root() {
        // RabbitMQ refuses to run as root and keeps its Erlang cookie in the rabbitmq user's home.
        let script = format!(
            "{env}cd /var/lib/rabbitmq && HOME=/var/lib/rabbitmq exec {} -detached",
            program.display()
        );
        cmd::run_logged(
            Command::new("su").args(["rabbitmq", "-s", "/bin/sh", "-c", &script]),
            &log,
        )
    } else {
        let script = format!("{env}exec {} -detached", program.display());
        cmd::run_logged(Command::new("/bin/sh").args(["-c", &script]), &log)
    }
}

fn hostname_resolves() -> bool {
    use std::net::ToSocketAddrs;
    let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") else {
        return true;
    };
    (name.trim(), 0)
        .to_socket_addrs()
        .is_ok_and(|mut a| a.next().is_some())
}
