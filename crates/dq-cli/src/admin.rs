//! The `dq` admin tool: queue counts, dead letters, sending and purging, from the shell.
//!
//! ```text
//! $ dq queues
//! QUEUE    READY  DELAYED  DEAD  UNACKED  WORKERS  LOCKS
//! default      3        1     2        0        1      0
//! (a PRIORITIZED column, of READY those waiting with a broker priority, appears when a queue
//! has any)
//! $ dq dead-letters requeue --all
//! Requeued 2 message(s) of default.
//! $ dq send add --args '[1, 2]'
//! {"queue_name":"default","actor_name":"add","args":[1,2],...}
//! $ dq abort 7f5c6a3e-5b0e-4a7b-9a53-2d9c3f1f0b6e
//! Aborted 7f5c6a3e-5b0e-4a7b-9a53-2d9c3f1f0b6e.
//! $ dq actors
//! ACTOR  QUEUE    PRIORITY  OPTIONS  PROCESSES  LAST SEEN            WORKERS
//! add    default         0  -                1  2024-05-01 10:00:10  web-1:4101
//! ```
//!
//! `dq send`, `dq actors`, `dq workers` and `dq queues` read the worker registry: running
//! workers publish who they are and the actors they run through their broker
//! ([`Broker::publish_worker`]), so `dq send` addresses an
//! actor's messages to the queue its workers consume.
//!
//! The broker comes from `--broker-url`, else `DQ_REDIS_URL`, else `DQ_AMQP_URL`, else
//! [`DEFAULT_BROKER_URL`]. Exit codes are the worker's
//! ([`exit`]): 1 when something asked for is not there, 2 for a bad argument,
//! 3 when the broker cannot be reached.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use dq_core::{
    is_valid_queue_name, App, Broker, BrokerError, BrokerErrorKind, DeadLetter, Message,
    RetryCount, ScheduleState, WorkerInfo,
};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::broker::{
    connect, error_chain, namespace_from, url_from, url_variable, DEFAULT_BROKER_URL,
    REDIS_NAMESPACE_ENV,
};
use crate::error::Error;
use crate::exit;

/// Look at and fix dq (and Python Dramatiq) queues on Redis or RabbitMQ.
///
/// Exit codes: 0 done; 1 something asked for is not there; 2 bad argument; 3 the broker cannot
/// be reached.
#[derive(Debug, Parser)]
#[command(name = "dq", version, about, long_about, max_term_width = 100)]
struct AdminArgs {
    /// The broker: redis://, rediss://, amqp:// or amqps://. Default: DQ_REDIS_URL, else
    /// DQ_AMQP_URL, else redis://127.0.0.1:6379.
    #[arg(short = 'b', long, value_name = "URL", global = true)]
    broker_url: Option<String>,

    /// The Redis key namespace (Dramatiq's default is "dramatiq"). Ignored by RabbitMQ.
    #[arg(long, value_name = "NAME", env = REDIS_NAMESPACE_ENV, global = true)]
    namespace: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show ready, delayed, dead-lettered and unacked message counts per queue, and how many
    /// running worker processes consume it, as a table.
    Queues {
        /// The queues to show. Default: every queue the broker holds messages for (Redis only:
        /// RabbitMQ cannot list its queues) and every queue a running worker consumes, empty
        /// or not.
        queues: Vec<String>,
    },
    /// Show the actors running workers declare: queue, priority, options, and which worker
    /// processes run them.
    Actors,
    /// Show the running worker processes: host and pid, id, start, queues and actors.
    Workers,
    /// Show the periodic schedules running workers claim ticks of: expression, zone, actor,
    /// last and next tick, the last message. `run NAME` enqueues one of its messages now.
    Schedules {
        #[command(subcommand)]
        action: Option<SchedulesAction>,
    },
    /// List, show, requeue or purge dead-lettered messages.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Enqueue a message for an actor, as a producer in any language would (no middleware runs),
    /// on the queue running workers declare for it.
    Send(SendArgs),
    /// Drop every message of these queues: ready, delayed and dead-lettered.
    Purge {
        /// The queues to purge.
        #[arg(required = true)]
        queues: Vec<String>,
    },
    /// Abort or cancel messages, whichever worker (dq or Python with dramatiq-abort's
    /// Abortable) holds them: the events go to Redis, whatever the broker.
    #[cfg(feature = "abort")]
    Abort(AbortArgs),
    /// Serve the web dashboard: queues, messages, dead letters, workers, schedules, and the
    /// actions to fix them, with a JSON API under /api. Listening beyond loopback needs
    /// DQ_DASHBOARD_TOKEN, or DQ_DASHBOARD_USER and DQ_DASHBOARD_PASSWORD.
    #[cfg(feature = "dashboard")]
    Dashboard(DashboardArgs),
}

#[cfg(feature = "dashboard")]
#[derive(Debug, Args)]
struct DashboardArgs {
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8484")]
    bind: std::net::SocketAddr,
    /// The path the dashboard is served under (for a reverse proxy), such as /dq.
    #[arg(long, value_name = "PATH", default_value = "/")]
    prefix: String,
    /// Show this queue too (repeatable): RabbitMQ cannot list its queues, so name the ones no
    /// running worker consumes.
    #[arg(short = 'q', long = "queue", value_name = "QUEUE")]
    queues: Vec<String>,
    /// RabbitMQ's management API (http://user:password@host:15672), for every queue's name,
    /// rates and consumers.
    #[arg(long, value_name = "URL", env = dq_dashboard::MANAGEMENT_URL_ENV)]
    management_url: Option<String>,
    /// The RabbitMQ vhost the management API is asked about.
    #[arg(long, value_name = "VHOST", default_value = "/")]
    vhost: String,
    /// Show stored results from the Redis result backend at this URL (the Results
    /// middleware's, Python's or dq's); its namespace is DQ_RESULTS_NAMESPACE, else
    /// dramatiq-results.
    #[cfg(feature = "results")]
    #[arg(long, value_name = "URL")]
    results_url: Option<String>,
    /// Offer abort and cancel, through dramatiq-abort's events in Redis: the broker URL when it
    /// is a Redis one, else DQ_REDIS_URL, else redis://127.0.0.1:6379.
    #[arg(long)]
    abort: bool,
    /// The abort events' key prefix (dramatiq-abort's `RedisBackend(namespace=...)`).
    #[arg(long, value_name = "PREFIX", default_value = dq_abort::DEFAULT_NAMESPACE)]
    abort_namespace: String,
}

#[cfg(feature = "abort")]
#[derive(Debug, Args)]
struct AbortArgs {
    /// The message ids (Dramatiq's `message_id`, a UUID).
    #[arg(required = true, value_name = "MESSAGE_ID")]
    message_ids: Vec<String>,
    /// `cancel`: only messages that have not started. `abort`: running ones too.
    #[arg(long, default_value = "abort", value_parser = ["cancel", "abort"])]
    mode: String,
    /// The grace period of a running message, in milliseconds, before it is stopped (abort
    /// mode only).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    timeout: u64,
    /// How long the events wait for their message, in milliseconds (dramatiq-abort's
    /// `abort_ttl`). Raise it for messages delayed longer.
    #[arg(long, value_name = "MS", default_value_t = dq_abort::DEFAULT_ABORT_TTL_MS)]
    ttl: u64,
    /// The Redis holding the events. Default: the broker URL when it is a Redis one, else
    /// DQ_REDIS_URL, else redis://127.0.0.1:6379.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// The events' key prefix (dramatiq-abort's `RedisBackend(namespace=...)`).
    #[arg(long, value_name = "PREFIX", default_value = dq_abort::DEFAULT_NAMESPACE)]
    abort_namespace: String,
}

#[derive(Debug, Subcommand)]
enum SchedulesAction {
    /// Enqueue one message of schedule NAME now (its actor, queue and arguments as recorded),
    /// outside its ticks.
    Run {
        /// The schedule's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetters {
    /// List dead letters, oldest first: their ids, queues, when, and the call.
    List {
        /// Only this queue. Default: every queue.
        #[arg(short = 'q', long)]
        queue: Option<String>,
        /// At most this many per queue.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead letter in full.
    Show {
        /// Its id (as `list` shows it) or its message id.
        id: String,
        /// Look only in this queue. Default: every queue.
        #[arg(short = 'q', long)]
        queue: Option<String>,
    },
    /// Put dead letters back on their queue to run again.
    Requeue {
        /// Their ids (as `list` shows them) or message ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Requeue every dead letter (of --queue, or of every queue).
        #[arg(long)]
        all: bool,
        /// Only this queue. Default: every queue.
        #[arg(short = 'q', long)]
        queue: Option<String>,
        /// Keep each message's retry count. Default: reset it to 0, as Python's dashboard
        /// does, so the message gets its actor's every retry again.
        #[arg(long)]
        keep_retries: bool,
    },
    /// Delete dead letters for good.
    Purge {
        /// Only this queue. Default: every queue.
        #[arg(short = 'q', long)]
        queue: Option<String>,
    },
}

#[derive(Debug, Args)]
struct SendArgs {
    /// The actor's name.
    actor: String,
    /// Positional arguments, a JSON array.
    #[arg(long, value_name = "JSON", default_value = "[]")]
    args: String,
    /// Keyword arguments, a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    kwargs: String,
    /// Message options, a JSON object (`{"max_retries": 3}`).
    #[arg(long, value_name = "JSON")]
    options: Option<String>,
    /// The queue to send to. Default: the actor's queue, as running workers declare it; needed
    /// when no running worker declares the actor (to enqueue it for later) or the broker keeps
    /// no worker registry.
    #[arg(short = 'q', long)]
    queue: Option<String>,
    /// Deliver after this many milliseconds (through the delay queue, as Dramatiq does).
    #[arg(long, value_name = "MS")]
    delay: Option<u64>,
}

/// Something the operator asked for is not there: exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

/// A bad argument found after parsing: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// Runs `dq` with this process's arguments and exits with its code.
pub fn main() -> ! {
    std::process::exit(run(std::env::args_os()))
}

/// Runs `dq` with `args` (the first one is the program name); returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match AdminArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return exit::KILLED;
        }
    };
    match rt.block_on(execute(args)) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            exit_code(&e)
        }
    }
}

/// The exit code an error deserves.
fn exit_code(e: &anyhow::Error) -> i32 {
    if let Some(c) = e.downcast_ref::<Error>() {
        return c.exit_code();
    }
    if e.downcast_ref::<Usage>().is_some() {
        return exit::USAGE;
    }
    if let Some(b) = e.chain().find_map(|c| c.downcast_ref::<BrokerError>()) {
        return match b.kind() {
            BrokerErrorKind::Unsupported | BrokerErrorKind::Rejected => exit::USAGE,
            k if b.is_transient() || k == BrokerErrorKind::Closed => exit::BROKER,
            _ => exit::KILLED,
        };
    }
    exit::KILLED
}

async fn execute(args: AdminArgs) -> anyhow::Result<()> {
    let url = url_from(args.broker_url.as_deref()).unwrap_or_else(|| DEFAULT_BROKER_URL.to_owned());
    let namespace = namespace_from(args.namespace.as_deref());
    // A bad argument is exit code 2 whether or not the broker is up.
    check_arguments(&args.command)?;
    #[cfg(feature = "abort")]
    if let Command::Abort(a) = &args.command {
        // The events live in Redis whatever the broker is: no broker connection needed.
        let mut out = String::new();
        abort(a, args.broker_url.as_deref(), &mut out).await?;
        print!("{out}");
        return Ok(());
    }
    let variable = url_variable(args.broker_url.as_deref());
    let broker = connect(&url, variable, namespace.as_deref()).await?;
    broker.ping().await.map_err(|e| Error::from_broker(&e))?;
    let mut out = String::new();
    match args.command {
        Command::Queues { queues } => queues_table(&*broker, queues, &mut out).await?,
        Command::Actors => actors_table(&*broker, &mut out).await?,
        Command::Workers => workers_table(&*broker, &mut out).await?,
        Command::Schedules { action } => schedules(broker, action, &mut out).await?,
        Command::DeadLetters(d) => dead_letters(&*broker, d, &mut out).await?,
        Command::Send(s) => send(broker, s, &mut out).await?,
        #[cfg(feature = "abort")]
        Command::Abort(_) => {}
        #[cfg(feature = "dashboard")]
        Command::Dashboard(d) => dashboard(broker, d, args.broker_url.as_deref()).await?,
        Command::Purge { queues } => {
            for q in &queues {
                check_queue(q)?;
                broker
                    .flush(q)
                    .await
                    .with_context(|| format!("purging {q}"))?;
                let _ = writeln!(out, "Purged {q}.");
            }
        }
    }
    print!("{out}");
    Ok(())
}

/// `dq abort`: signals dramatiq-abort's events for each message id.
#[cfg(feature = "abort")]
async fn abort(a: &AbortArgs, broker_url: Option<&str>, out: &mut String) -> anyhow::Result<()> {
    use dq_abort::{AbortMode, AbortOptions, Abortable, RedisBackend};

    let is_redis = |u: &&str| {
        u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("redis+unix://")
    };
    let url = match (a.redis_url.as_deref(), broker_url.filter(is_redis)) {
        (Some(u), _) | (None, Some(u)) => u.to_owned(),
        (None, None) => dq_redis_env_url(),
    };
    let backend = RedisBackend::builder()
        .url(&url)
        .namespace(&a.abort_namespace)
        .build()
        .map_err(|e| Usage(e.to_string()))?;
    let abortable = Abortable::new(backend);
    let mode: AbortMode = a.mode.parse().map_err(Usage)?;
    let options = AbortOptions::default()
        .mode(mode)
        .abort_timeout(Duration::from_millis(a.timeout))
        .abort_ttl(Duration::from_millis(a.ttl));
    for id in &a.message_ids {
        abortable.abort_with(id, &options).await.map_err(|e| {
            Error::BrokerUnreachable(format!(
                "{} (abort events): {}",
                dq_core::redact_url(&url),
                error_chain(&e)
            ))
        })?;
        let verb = match mode {
            AbortMode::Cancel => "Cancelled",
            AbortMode::Abort => "Aborted",
        };
        let _ = writeln!(out, "{verb} {id}.");
    }
    Ok(())
}

/// `dq dashboard`: serves until Ctrl-C or SIGTERM.
#[cfg(feature = "dashboard")]
async fn dashboard(
    broker: Arc<dyn Broker>,
    d: DashboardArgs,
    broker_url: Option<&str>,
) -> anyhow::Result<()> {
    use dq_dashboard::{Auth, Dashboard};

    let auth = Auth::from_env().map_err(|e| Usage(e.to_string()))?;
    let prefix = d.prefix.trim_end_matches('/').to_owned();
    let mut dashboard = Dashboard::new(broker).auth(auth).prefix(&prefix);
    for q in &d.queues {
        dashboard = dashboard.queue(q.clone());
    }
    if let Some(url) = &d.management_url {
        dashboard = dashboard.management(url, &d.vhost);
    }
    #[cfg(feature = "results")]
    if let Some(url) = &d.results_url {
        let mut builder = dq_results::RedisBackend::builder().url(url);
        if let Some(ns) = std::env::var(dq_core::env::RESULTS_NAMESPACE)
            .ok()
            .filter(|n| !n.trim().is_empty())
        {
            builder = builder.namespace(&ns);
        }
        let results = builder.build().map_err(|e| Usage(e.to_string()))?;
        dashboard = dashboard.results(Arc::new(results));
    }
    if d.abort {
        let is_redis = |u: &&str| {
            u.starts_with("redis://")
                || u.starts_with("rediss://")
                || u.starts_with("redis+unix://")
        };
        let url = broker_url
            .filter(is_redis)
            .map(str::to_owned)
            .unwrap_or_else(dq_redis_env_url);
        let backend = dq_abort::RedisBackend::builder()
            .url(&url)
            .namespace(&d.abort_namespace)
            .build()
            .map_err(|e| Usage(e.to_string()))?;
        dashboard = dashboard.abortable(dq_abort::Abortable::new(backend));
    }
    eprintln!(
        "dq dashboard on http://{}{} (Ctrl-C to stop)",
        d.bind,
        if prefix.is_empty() { "/" } else { &prefix }
    );
    dashboard
        .serve(d.bind, async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        })
        .await
        .map_err(|e| match e {
            dq_dashboard::Error::Bind { .. } | dq_dashboard::Error::AuthRequired { .. } => {
                anyhow::Error::new(Usage(error_chain(&e)))
            }
            other => anyhow::Error::new(other),
        })
}

/// `DQ_REDIS_URL`, else the default Redis.
#[cfg(feature = "abort")]
fn dq_redis_env_url() -> String {
    std::env::var(crate::broker::REDIS_URL_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_BROKER_URL.to_owned())
}

/// Checks what can be checked without the broker: queue names, the actor's name, JSON.
fn check_arguments(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Queues { queues } | Command::Purge { queues } => {
            queues.iter().try_for_each(|q| check_queue(q))
        }
        Command::DeadLetters(
            DeadLetters::List { queue, .. }
            | DeadLetters::Show { queue, .. }
            | DeadLetters::Requeue { queue, .. }
            | DeadLetters::Purge { queue },
        ) => queue.iter().try_for_each(|q| check_queue(q)),
        Command::Send(s) => {
            check_actor(&s.actor)?;
            if let Some(q) = &s.queue {
                check_queue(q)?;
            }
            json_arg("--args", &s.args, true)?;
            json_arg("--kwargs", &s.kwargs, false)?;
            if let Some(o) = &s.options {
                json_arg("--options", o, false)?;
            }
            Ok(())
        }
        Command::Actors | Command::Workers | Command::Schedules { .. } => Ok(()),
        #[cfg(feature = "dashboard")]
        Command::Dashboard(d) => {
            d.queues.iter().try_for_each(|q| check_queue(q))?;
            if !d.prefix.starts_with('/') {
                return Err(Usage(format!("the prefix {:?} must start with /", d.prefix)).into());
            }
            // Refuse before connecting: an open dashboard is a configuration mistake.
            let auth = dq_dashboard::Auth::from_env().map_err(|e| Usage(e.to_string()))?;
            dq_dashboard::check_bind(d.bind, &auth).map_err(|e| Usage(e.to_string()))?;
            Ok(())
        }
        #[cfg(feature = "abort")]
        Command::Abort(a) => match a.message_ids.iter().find(|id| id.trim().is_empty()) {
            Some(_) => Err(Usage("a message id is empty".to_owned()).into()),
            None => Ok(()),
        },
    }
}

/// An actor's name: anything a producer may use, but not blank, which no actor can be named.
fn check_actor(actor: &str) -> anyhow::Result<()> {
    if actor.trim().is_empty() {
        Err(Usage("the actor name is empty".to_owned()).into())
    } else {
        Ok(())
    }
}

fn check_queue(q: &str) -> anyhow::Result<()> {
    if is_valid_queue_name(q) {
        Ok(())
    } else {
        Err(Usage(format!(
            "invalid queue name {q:?}: queue names match [a-zA-Z_][a-zA-Z0-9._-]*"
        ))
        .into())
    }
}

/// The named queues, or every queue the broker can list.
async fn queues_or_all(
    broker: &dyn Broker,
    named: Option<&str>,
    how_to_name: &str,
) -> anyhow::Result<Vec<String>> {
    if let Some(q) = named {
        check_queue(q)?;
        return Ok(vec![q.to_owned()]);
    }
    match broker.list_queues().await {
        Ok(qs) => Ok(qs),
        Err(e) if e.kind() == BrokerErrorKind::Unsupported => Err(Usage(format!(
            "the {} broker cannot list its queues: name {how_to_name}",
            broker.kind()
        ))
        .into()),
        Err(e) => Err(anyhow::Error::new(e).context("listing queues")),
    }
}

/// Formats rows as a plain table: columns padded to their widest cell, numbers right-aligned.
fn table(header: &[&str], rows: &[Vec<String>], numeric: &[bool], out: &mut String) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if numeric.get(i).copied().unwrap_or(false) {
                l.extend(std::iter::repeat_n(' ', pad));
                l.push_str(cell);
            } else {
                l.push_str(cell);
                if i + 1 < cells.len() {
                    l.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
}

async fn queues_table(
    broker: &dyn Broker,
    named: Vec<String>,
    out: &mut String,
) -> anyhow::Result<()> {
    // `None`: the broker keeps no worker registry, and the table has no WORKERS column.
    let workers = registry(broker).await?;
    let queues = if named.is_empty() {
        let listed = match broker.list_queues().await {
            Ok(qs) => Some(qs),
            Err(e) if e.kind() == BrokerErrorKind::Unsupported => None,
            Err(e) => return Err(anyhow::Error::new(e).context("listing queues")),
        };
        // Empty queues have no keys in Redis and no listing in RabbitMQ: the queues running
        // workers consume are known even so.
        let mut all: std::collections::BTreeSet<String> =
            listed.iter().flatten().cloned().collect();
        for w in workers.iter().flatten() {
            all.extend(w.queues.iter().cloned());
        }
        if listed.is_none() {
            if all.is_empty() {
                let why = if workers.is_none() {
                    ""
                } else {
                    ", and no worker is running"
                };
                return Err(Usage(format!(
                    "the {} broker cannot list its queues{why}: name them, as in `dq queues default`",
                    broker.kind()
                ))
                .into());
            }
            eprintln!(
                "note: the {} broker cannot list its queues: these are the ones running workers \
                 consume; name others to see them",
                broker.kind()
            );
        }
        all.into_iter().collect()
    } else {
        for q in &named {
            check_queue(q)?;
        }
        named
    };
    if queues.is_empty() {
        out.push_str("No queues.\n");
        return Ok(());
    }
    // Unique locks held per queue; `None`: the broker holds none (RabbitMQ), no LOCKS column.
    let mut locks: Option<Vec<u64>> = Some(Vec::with_capacity(queues.len()));
    for q in &queues {
        match broker.unique_locks(q).await {
            Ok(n) => locks.iter_mut().for_each(|l| l.push(n)),
            Err(e) if e.kind() == BrokerErrorKind::Unsupported => {
                locks = None;
                break;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("counting the locks of {q}")))
            }
        }
    }
    let mut stats = Vec::with_capacity(queues.len());
    for q in &queues {
        let s = broker
            .stats(q)
            .await
            .with_context(|| format!("counting the messages of {q}"))?;
        stats.push(s);
    }
    // PRIORITIZED (of READY, those waiting with a broker priority) only when some queue has
    // any, so the table of a broker without priority stays as it was.
    let prioritized = stats.iter().any(|s| s.prioritized > 0);
    let mut rows = Vec::with_capacity(queues.len());
    for (i, (q, s)) in queues.iter().zip(&stats).enumerate() {
        let mut row = vec![q.clone(), s.ready.to_string()];
        if prioritized {
            row.push(s.prioritized.to_string());
        }
        row.extend([
            s.delayed.to_string(),
            s.dead.to_string(),
            s.in_flight.to_string(),
        ]);
        if let Some(workers) = &workers {
            let consumers = workers.iter().filter(|w| w.queues.contains(q)).count();
            row.push(consumers.to_string());
        }
        if let Some(locks) = &locks {
            row.push(locks[i].to_string());
        }
        rows.push(row);
    }
    let mut header = vec!["QUEUE", "READY"];
    if prioritized {
        header.push("PRIORITIZED");
    }
    header.extend(["DELAYED", "DEAD", "UNACKED"]);
    if workers.is_some() {
        header.push("WORKERS");
    }
    if locks.is_some() {
        header.push("LOCKS");
    }
    table(
        &header,
        &rows,
        &[false, true, true, true, true, true, true, true],
        out,
    );
    Ok(())
}

/// The running workers, or `None` when the broker keeps no worker registry.
async fn registry(broker: &dyn Broker) -> anyhow::Result<Option<Vec<WorkerInfo>>> {
    match broker.workers().await {
        Ok(w) => Ok(Some(w)),
        Err(e) if e.kind() == BrokerErrorKind::Unsupported => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context("reading the worker registry")),
    }
}

/// The running workers, or a usage error saying the broker keeps no registry.
async fn registry_or_usage(broker: &dyn Broker) -> anyhow::Result<Vec<WorkerInfo>> {
    registry(broker).await?.ok_or_else(|| {
        Usage(format!(
            "the {} broker keeps no registry of workers",
            broker.kind()
        ))
        .into()
    })
}

/// An actor's options as `key=value` words, `-` when it sets none.
fn options_text(options: &serde_json::Map<String, Value>) -> String {
    if options.is_empty() {
        return "-".to_owned();
    }
    options
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn actors_table(broker: &dyn Broker, out: &mut String) -> anyhow::Result<()> {
    let workers = registry_or_usage(broker).await?;
    // One row per actor as declared: workers of two builds may declare it differently.
    let mut rows: std::collections::BTreeMap<(String, String, i32, String), Vec<&WorkerInfo>> =
        std::collections::BTreeMap::new();
    for w in &workers {
        for a in &w.actors {
            let key = (
                a.actor_name.clone(),
                a.queue_name.clone(),
                a.priority,
                options_text(&a.options),
            );
            rows.entry(key).or_default().push(w);
        }
    }
    if rows.is_empty() {
        out.push_str(if workers.is_empty() {
            "No workers are running.\n"
        } else {
            "The running workers declare no actors.\n"
        });
        return Ok(());
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|((actor, queue, priority, options), ws)| {
            let last_seen = ws.iter().map(|w| w.last_seen).max();
            let mut names: Vec<String> = ws.iter().map(|w| w.display_name()).collect();
            names.sort();
            vec![
                actor,
                queue,
                priority.to_string(),
                options,
                ws.len().to_string(),
                when(last_seen),
                names.join(","),
            ]
        })
        .collect();
    table(
        &[
            "ACTOR",
            "QUEUE",
            "PRIORITY",
            "OPTIONS",
            "PROCESSES",
            "LAST SEEN",
            "WORKERS",
        ],
        &rows,
        &[false, false, true, false, true],
        out,
    );
    Ok(())
}

async fn workers_table(broker: &dyn Broker, out: &mut String) -> anyhow::Result<()> {
    let workers = registry_or_usage(broker).await?;
    if workers.is_empty() {
        out.push_str("No workers are running.\n");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.display_name(),
                w.worker_id.clone(),
                when(Some(w.started_at)),
                when(Some(w.last_seen)),
                w.threads.to_string(),
                w.actors.len().to_string(),
                w.queues.join(","),
            ]
        })
        .collect();
    table(
        &[
            "WORKER",
            "ID",
            "STARTED",
            "LAST SEEN",
            "THREADS",
            "ACTORS",
            "QUEUES",
        ],
        &rows,
        &[false, false, false, false, true, true],
        out,
    );
    Ok(())
}

/// Every dead letter of `queue`, oldest first.
async fn all_letters(broker: &dyn Broker, queue: &str) -> anyhow::Result<Vec<DeadLetter>> {
    let dead = broker
        .stats(queue)
        .await
        .with_context(|| format!("counting the dead letters of {queue}"))?
        .dead;
    if dead == 0 {
        return Ok(Vec::new());
    }
    broker
        .dead_letters(queue, usize::try_from(dead).unwrap_or(usize::MAX))
        .await
        .with_context(|| format!("reading the dead letters of {queue}"))
}

/// Whether `letter` is the one `id` names: by its dead-letter id or its message id.
fn is_letter(letter: &DeadLetter, message: Option<&Message>, id: &str) -> bool {
    letter.id == id || message.is_some_and(|m| m.message_id == id)
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".to_owned())
}

fn call_of(message: Option<&Message>, body: &[u8]) -> String {
    let text = match message {
        Some(m) => m.display_call(),
        None => format!("<not a message: {}>", String::from_utf8_lossy(body)),
    };
    const MAX: usize = 80;
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX - 3).collect();
        format!("{cut}...")
    } else {
        text
    }
}

async fn dead_letters(
    broker: &dyn Broker,
    cmd: DeadLetters,
    out: &mut String,
) -> anyhow::Result<()> {
    match cmd {
        DeadLetters::List { queue, limit } => {
            let mut rows = Vec::new();
            for q in queues_or_all(broker, queue.as_deref(), "one with --queue").await? {
                let letters = broker
                    .dead_letters(&q, limit)
                    .await
                    .with_context(|| format!("reading the dead letters of {q}"))?;
                for l in letters {
                    let m = Message::decode(&l.body).ok();
                    rows.push(vec![
                        l.id.clone(),
                        q.clone(),
                        when(l.dead_lettered_at),
                        call_of(m.as_ref(), &l.body),
                    ]);
                }
            }
            if rows.is_empty() {
                out.push_str("No dead letters.\n");
            } else {
                table(
                    &["ID", "QUEUE", "DEAD-LETTERED", "MESSAGE"],
                    &rows,
                    &[],
                    out,
                );
            }
        }
        DeadLetters::Show { id, queue } => {
            let queues = queues_or_all(broker, queue.as_deref(), "one with --queue").await?;
            for q in &queues {
                for l in all_letters(broker, q).await? {
                    let m = Message::decode(&l.body).ok();
                    if !is_letter(&l, m.as_ref(), &id) {
                        continue;
                    }
                    let _ = writeln!(out, "id:            {}", l.id);
                    let _ = writeln!(out, "queue:         {q}");
                    let _ = writeln!(out, "dead-lettered: {}", when(l.dead_lettered_at));
                    if let Some(r) = &l.reason {
                        let _ = writeln!(out, "reason:        {r}");
                    }
                    match serde_json::from_slice::<Value>(&l.body) {
                        Ok(v) => {
                            let pretty = serde_json::to_string_pretty(&v)
                                .unwrap_or_else(|_| String::from_utf8_lossy(&l.body).into_owned());
                            let _ = writeln!(out, "message:\n{pretty}");
                        }
                        Err(_) => {
                            let _ = writeln!(
                                out,
                                "body (not JSON):\n{}",
                                String::from_utf8_lossy(&l.body)
                            );
                        }
                    }
                    return Ok(());
                }
            }
            bail!(NotFound(format!(
                "no dead letter {id:?} in {}",
                describe_queues(&queues)
            )));
        }
        DeadLetters::Requeue {
            ids,
            all,
            queue,
            keep_retries,
        } => {
            let queues = queues_or_all(broker, queue.as_deref(), "one with --queue").await?;
            // Requeueing enqueues each message, then deletes its letter: on a broker that cannot
            // delete letters it would enqueue them and then fail, leaving duplicates. Deleting
            // no letter at all tells, harmlessly, whether it can.
            if let Some(q) = queues.first() {
                match broker.delete_dead_letters(q, Some(&[])).await {
                    Err(e) if e.kind() == BrokerErrorKind::Unsupported => {
                        return Err(Usage(format!(
                            "the {} broker cannot delete dead letters, so it cannot requeue them \
                             without duplicating them",
                            broker.kind()
                        ))
                        .into())
                    }
                    _ => {}
                }
            }
            let retries = if keep_retries {
                RetryCount::Keep
            } else {
                RetryCount::Reset
            };
            let mut missing: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut total = 0;
            for q in &queues {
                let picked = if all {
                    None
                } else {
                    // Users may name letters by message id: resolve to the broker's ids.
                    let mut picked = Vec::new();
                    for l in all_letters(broker, q).await? {
                        let m = Message::decode(&l.body).ok();
                        if let Some(pos) =
                            missing.iter().position(|id| is_letter(&l, m.as_ref(), id))
                        {
                            missing.swap_remove(pos);
                            picked.push(l.id);
                        }
                    }
                    if picked.is_empty() {
                        continue;
                    }
                    Some(picked)
                };
                let done = broker
                    .requeue_dead_letters(q, picked.as_deref(), retries)
                    .await
                    .with_context(|| format!("requeueing dead letters of {q}"))?;
                let skipped = picked
                    .as_ref()
                    .map_or(0, |p| p.len() - done.len().min(p.len()));
                if !done.is_empty() {
                    let _ = writeln!(
                        out,
                        "Requeued {} message(s) of {q} under their own message ids, {}.",
                        done.len(),
                        match retries {
                            RetryCount::Reset => "with retries reset to 0",
                            RetryCount::Keep => "with their retry counts kept",
                        }
                    );
                }
                if skipped > 0 {
                    let _ = writeln!(
                        out,
                        "Skipped {skipped} dead letter(s) of {q} that are not valid messages."
                    );
                }
                total += done.len();
            }
            if !missing.is_empty() {
                print!("{out}");
                out.clear();
                bail!(NotFound(format!(
                    "no dead letter {} in {}",
                    missing
                        .iter()
                        .map(|m| format!("{m:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    describe_queues(&queues)
                )));
            }
            if total == 0 {
                out.push_str("No dead letters to requeue.\n");
            }
        }
        DeadLetters::Purge { queue } => {
            let mut total = 0;
            for q in queues_or_all(broker, queue.as_deref(), "one with --queue").await? {
                let n = broker
                    .delete_dead_letters(&q, None)
                    .await
                    .with_context(|| format!("deleting the dead letters of {q}"))?;
                if n > 0 {
                    let _ = writeln!(out, "Deleted {n} dead letter(s) of {q}.");
                }
                total += n;
            }
            if total == 0 {
                out.push_str("No dead letters to delete.\n");
            }
        }
    }
    Ok(())
}

fn describe_queues(queues: &[String]) -> String {
    match queues {
        [] => "any queue (there are none)".to_owned(),
        [q] => format!("queue {q}"),
        qs => format!("queues {}", qs.join(", ")),
    }
}

/// Parses `text` as JSON of the kind `what` needs (`array` or `object`).
fn json_arg(flag: &str, text: &str, array: bool) -> anyhow::Result<Box<RawValue>> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| Usage(format!("{flag} is not valid JSON: {e}")))?;
    let ok = if array {
        value.is_array()
    } else {
        value.is_object()
    };
    if !ok {
        let want = if array { "array" } else { "object" };
        // The JSON's kind, not its text, which may be long.
        let got = match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        return Err(Usage(format!("{flag} must be a JSON {want}, got {got}")).into());
    }
    serde_json::value::to_raw_value(&value).map_err(|e| anyhow!(e))
}

/// The message `dq send` enqueues for `--args`, `--kwargs` and `--options` (JSON texts): a usage
/// error (exit code 2) when one is not JSON or not the kind it must be. Options are merged into
/// the message's, so `{"eta": ..}` or `{"max_retries": ..}` behave as from Python.
#[doc(hidden)]
pub fn send_message(
    queue: &str,
    actor: &str,
    args: &str,
    kwargs: &str,
    options: Option<&str>,
) -> anyhow::Result<Message> {
    let args = json_arg("--args", args, true)?;
    let kwargs = json_arg("--kwargs", kwargs, false)?;
    let options = options
        .map(|o| json_arg("--options", o, false))
        .transpose()?;
    let mut message = Message::from_raw(queue, actor, args, kwargs);
    if let Some(raw) = options {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(raw.get()) {
            for (k, v) in map {
                message.options.insert(k, v);
            }
        }
    }
    Ok(message)
}

async fn send(broker: Arc<dyn Broker>, s: SendArgs, out: &mut String) -> anyhow::Result<()> {
    // The arguments were checked before connecting (`check_arguments`).
    let mut message = send_message(
        "default",
        &s.actor,
        &s.args,
        &s.kwargs,
        s.options.as_deref(),
    )?;
    let queue = match s.queue {
        Some(q) => {
            warn_if_elsewhere(&*broker, &s.actor, &q).await;
            q
        }
        None => actor_queue(&*broker, &s.actor).await?,
    };
    message.queue_name = queue;
    // No middleware, no actors: exactly what a producer in another language enqueues.
    let app = App::builder_shared(broker)
        .without_linked_actors()
        .build()?;
    let sent = app
        .enqueue(message, s.delay.map(Duration::from_millis))
        .await
        .context("enqueueing the message")?;
    out.push_str(&String::from_utf8_lossy(&sent.encode()));
    out.push('\n');
    Ok(())
}

/// Env: the Redis where periodic ticks are claimed for a broker that cannot claim them (the
/// `Periodic` middleware's `DQ_PERIODIC_REDIS_URL`), and its namespace.
const PERIODIC_REDIS_URL_ENV: &str = "DQ_PERIODIC_REDIS_URL";
const PERIODIC_REDIS_NAMESPACE_ENV: &str = "DQ_PERIODIC_REDIS_NAMESPACE";

/// The schedules the broker records, or, for one that records none (RabbitMQ), the ones in the
/// Redis of `DQ_PERIODIC_REDIS_URL`, which keeps them under the same keys.
async fn schedule_states(broker: &dyn Broker) -> anyhow::Result<Vec<ScheduleState>> {
    match broker.schedules().await {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == BrokerErrorKind::Unsupported => {
            let Some(url) = std::env::var(PERIODIC_REDIS_URL_ENV)
                .ok()
                .filter(|u| !u.trim().is_empty())
            else {
                return Err(Usage(format!(
                    "the {} broker records no schedules: its workers claim ticks in the Redis of \
                     {PERIODIC_REDIS_URL_ENV}; set it here too",
                    broker.kind()
                ))
                .into());
            };
            let namespace = std::env::var(PERIODIC_REDIS_NAMESPACE_ENV)
                .ok()
                .filter(|n| !n.trim().is_empty());
            let claims = connect(&url, Some(PERIODIC_REDIS_URL_ENV), namespace.as_deref()).await?;
            Ok(claims.schedules().await.context("reading the schedules")?)
        }
        Err(e) => Err(anyhow::Error::new(e).context("reading the schedules")),
    }
}

async fn schedules(
    broker: Arc<dyn Broker>,
    action: Option<SchedulesAction>,
    out: &mut String,
) -> anyhow::Result<()> {
    let states = schedule_states(&*broker).await?;
    match action {
        None => {
            if states.is_empty() {
                out.push_str("No schedules are recorded (none ran in the last 7 days).\n");
                return Ok(());
            }
            let now = dq_core::now_ms();
            let rows: Vec<Vec<String>> = states
                .iter()
                .map(|s| {
                    let next = match s.next_tick_ms {
                        Some(t) if t < now => format!("{} (overdue)", when(Some(t))),
                        t => when(t),
                    };
                    vec![
                        s.name.clone(),
                        s.expression.clone(),
                        s.timezone.clone(),
                        s.actor_name.clone(),
                        s.queue_name.clone(),
                        when(Some(s.last_tick_ms)),
                        next,
                        s.last_message_id.clone(),
                    ]
                })
                .collect();
            table(
                &[
                    "SCHEDULE",
                    "EXPRESSION",
                    "ZONE",
                    "ACTOR",
                    "QUEUE",
                    "LAST TICK",
                    "NEXT TICK",
                    "LAST MESSAGE",
                ],
                &rows,
                &[false; 7],
                out,
            );
        }
        Some(SchedulesAction::Run { name }) => {
            let Some(s) = states.into_iter().find(|s| s.name == name) else {
                bail!("no schedule {name:?} is recorded (see `dq schedules`)");
            };
            let args = serde_json::value::to_raw_value(&s.args)?;
            let kwargs = serde_json::value::to_raw_value(&s.kwargs)?;
            let mut message = Message::from_raw(&s.queue_name, &s.actor_name, args, kwargs);
            let at = chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S+00:00")
                .to_string();
            message
                .options
                .insert("scheduled_at".to_owned(), Value::from(at));
            message
                .options
                .insert("dq_schedule".to_owned(), Value::from(s.name.clone()));
            let app = App::builder_shared(broker)
                .without_linked_actors()
                .build()?;
            let sent = app
                .enqueue(message, None)
                .await
                .context("enqueueing the message")?;
            let _ = writeln!(
                out,
                "Enqueued {} for schedule {name} on {}.",
                sent.message_id, sent.queue_name
            );
        }
    }
    Ok(())
}

/// The distinct queues running workers declare `actor` on.
fn declared_queues<'a>(workers: &'a [WorkerInfo], actor: &str) -> Vec<&'a str> {
    let mut queues: Vec<&str> = workers
        .iter()
        .filter_map(|w| w.actor(actor))
        .map(|a| a.queue_name.as_str())
        .collect();
    queues.sort_unstable();
    queues.dedup();
    queues
}

/// The queue running workers consume `actor`'s messages from; a usage error (exit code 2) when
/// none declares it, when they disagree, or when the broker keeps no worker registry.
async fn actor_queue(broker: &dyn Broker, actor: &str) -> anyhow::Result<String> {
    let Some(workers) = registry(broker).await? else {
        return Err(Usage(format!(
            "the {} broker keeps no registry of workers, so dq cannot tell which queue actor \
             {actor:?} uses: name it with -q QUEUE",
            broker.kind()
        ))
        .into());
    };
    match declared_queues(&workers, actor).as_slice() {
        [q] => Ok((*q).to_owned()),
        [] => {
            let seen = match workers.len() {
                0 => "no worker is running".to_owned(),
                1 => "1 worker is running".to_owned(),
                n => format!("{n} workers are running"),
            };
            Err(Usage(format!(
                "no running worker declares actor {actor:?} ({seen}), so no queue is known \
                 for it: check the name with `dq actors`, start a worker that runs it, or name \
                 its queue with -q QUEUE to enqueue it anyway"
            ))
            .into())
        }
        qs => Err(Usage(format!(
            "running workers declare actor {actor:?} on different queues ({}): name one with \
             -q QUEUE",
            qs.join(", ")
        ))
        .into()),
    }
}

/// Warns on stderr when running workers consume `actor`'s messages from queues other than
/// `queue`, which the operator named: the message is sent, but may wait for a long time.
async fn warn_if_elsewhere(broker: &dyn Broker, actor: &str, queue: &str) {
    let Ok(Some(workers)) = registry(broker).await else {
        return;
    };
    let queues = declared_queues(&workers, actor);
    if !queues.is_empty() && !queues.contains(&queue) {
        eprintln!(
            "warning: running workers consume actor {actor:?} from {}, not {queue}",
            queues.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AdminArgs, clap::Error> {
        AdminArgs::try_parse_from(std::iter::once("dq").chain(args.iter().copied()))
    }

    #[test]
    fn the_commands_parse() {
        use clap::CommandFactory;
        AdminArgs::command().debug_assert();
        assert!(parse(&["queues"]).is_ok());
        assert!(parse(&["dead-letters", "requeue", "--all", "-q", "default"]).is_ok());
        assert!(parse(&["dead-letters", "requeue", "a", "b"]).is_ok());
        let usage = |a: &[&str]| parse(a).unwrap_err().exit_code();
        assert_eq!(usage(&["dead-letters", "requeue"]), 2);
        assert_eq!(usage(&["dead-letters", "requeue", "a", "--all"]), 2);
        assert_eq!(usage(&["purge"]), 2);
        assert_eq!(usage(&["send"]), 2);
    }

    #[test]
    fn tables_pad_and_align() {
        let mut out = String::new();
        table(
            &["QUEUE", "READY"],
            &[
                vec!["default".into(), "3".into()],
                vec!["q".into(), "12345".into()],
            ],
            &[false, true],
            &mut out,
        );
        assert_eq!(out, "QUEUE    READY\ndefault      3\nq        12345\n");
    }

    #[test]
    fn json_arguments_are_checked() {
        assert_eq!(
            json_arg("--args", "[1, \"a\"]", true).unwrap().get(),
            "[1,\"a\"]"
        );
        let e = json_arg("--args", "{}", true).unwrap_err();
        assert_eq!(e.to_string(), "--args must be a JSON array, got an object");
        assert!(json_arg("--kwargs", "[", false).unwrap_err().is::<Usage>());
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let down = anyhow::Error::new(BrokerError::new(BrokerErrorKind::Connection, "x"))
            .context("counting");
        assert_eq!(exit_code(&down), 3);
        let unsupported = anyhow::Error::new(BrokerError::unsupported("amqp", "listing queues"));
        assert_eq!(exit_code(&unsupported), 2);
        assert_eq!(exit_code(&anyhow::Error::new(NotFound("x".into()))), 1);
        assert_eq!(exit_code(&anyhow::Error::new(Usage("x".into()))), 2);
    }

    /// A broker that keeps no worker registry and cannot list its queues, as a third-party
    /// broker may be: the stub broker with those two left to the trait's defaults.
    struct Plain(dq::StubBroker);

    #[dq_core::async_trait]
    impl Broker for Plain {
        fn kind(&self) -> &'static str {
            "plain"
        }
        async fn declare_queue(&self, queue: &str) -> Result<(), BrokerError> {
            self.0.declare_queue(queue).await
        }
        async fn enqueue(&self, message: &mut Message) -> Result<(), BrokerError> {
            self.0.enqueue(message).await
        }
        async fn consume(
            &self,
            queue: &str,
            prefetch: usize,
        ) -> Result<Box<dyn dq_core::Consumer>, BrokerError> {
            self.0.consume(queue, prefetch).await
        }
        async fn stats(&self, queue: &str) -> Result<dq_core::QueueStats, BrokerError> {
            self.0.stats(queue).await
        }
        async fn flush(&self, queue: &str) -> Result<(), BrokerError> {
            self.0.flush(queue).await
        }
        async fn dead_letters(
            &self,
            queue: &str,
            limit: usize,
        ) -> Result<Vec<DeadLetter>, BrokerError> {
            self.0.dead_letters(queue, limit).await
        }
        async fn ping(&self) -> Result<(), BrokerError> {
            Ok(())
        }
    }

    fn send_args(actor: &str, queue: Option<&str>) -> SendArgs {
        SendArgs {
            actor: actor.into(),
            args: "[1]".into(),
            kwargs: "{}".into(),
            options: None,
            queue: queue.map(Into::into),
            delay: None,
        }
    }

    /// Sends through `broker` and returns the message sent.
    async fn sent(broker: Arc<dyn Broker>, args: SendArgs) -> anyhow::Result<Message> {
        let mut out = String::new();
        send(broker, args, &mut out).await?;
        Ok(Message::decode(out.trim_end().as_bytes()).unwrap())
    }

    fn worker(id: &str, pid: u32, actors: &[(&str, &str)]) -> WorkerInfo {
        let mut queues: Vec<String> = actors.iter().map(|(_, q)| (*q).to_owned()).collect();
        queues.sort();
        queues.dedup();
        WorkerInfo {
            worker_id: id.into(),
            hostname: "web-1".into(),
            pid,
            started_at: 1_714_557_600_000,
            last_seen: 1_714_557_610_000,
            threads: 8,
            queues,
            actors: actors
                .iter()
                .map(|(a, q)| dq_core::ActorInfo {
                    actor_name: (*a).into(),
                    queue_name: (*q).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn without_a_registry_send_needs_a_queue_and_queues_need_names() {
        let broker: Arc<dyn Broker> = Arc::new(Plain(dq::StubBroker::new()));
        let e = sent(broker.clone(), send_args("add", None))
            .await
            .unwrap_err();
        assert_eq!(exit_code(&e), 2);
        assert_eq!(
            e.to_string(),
            "the plain broker keeps no registry of workers, so dq cannot tell which queue actor \
             \"add\" uses: name it with -q QUEUE"
        );
        let m = sent(broker.clone(), send_args("add", Some("math")))
            .await
            .unwrap();
        assert_eq!(m.queue_name, "math");

        let e = queues_table(&*broker, vec![], &mut String::new())
            .await
            .unwrap_err();
        assert_eq!(exit_code(&e), 2);
        assert!(e.to_string().contains("cannot list its queues"), "{e}");
        let mut out = String::new();
        queues_table(&*broker, vec!["math".into()], &mut out)
            .await
            .unwrap();
        // No registry, no WORKERS column.
        assert_eq!(
            out,
            "QUEUE  READY  DELAYED  DEAD  UNACKED\nmath       1        0     0        0\n"
        );
        let e = actors_table(&*broker, &mut String::new())
            .await
            .unwrap_err();
        assert_eq!(exit_code(&e), 2);
    }

    #[tokio::test]
    async fn queues_count_the_unique_locks_held() {
        let stub = dq::StubBroker::new();
        let lock = |key: &str| dq_core::UniqueLock {
            key: key.into(),
            mode: dq_core::UniqueMode::Unique,
            until: dq_core::UniqueUntil::Finished,
            ttl: Duration::from_secs(60),
        };
        for key in ["a", "b", "a"] {
            let mut m = Message::new("reports", "build", &(key,), &()).unwrap();
            stub.enqueue_unique(&lock(key), &mut m).await.unwrap();
        }
        let mut out = String::new();
        queues_table(&stub, vec!["reports".into()], &mut out)
            .await
            .unwrap();
        assert_eq!(
            out,
            "QUEUE    READY  DELAYED  DEAD  UNACKED  WORKERS  LOCKS\n\
             reports      2        0     0        0        0      2\n"
        );
    }

    #[tokio::test]
    async fn queues_shows_prioritized_messages_when_there_are_some() {
        let stub = dq::StubBroker::with_max_priority(10);
        let broker: Arc<dyn Broker> = Arc::new(stub.clone());
        for p in [None, Some(3), Some(9)] {
            let mut m = Message::new("jobs", "work", &(1,), &()).unwrap();
            if let Some(p) = p {
                dq_core::SendOptions::default()
                    .broker_priority(p)
                    .apply_to_message(&mut m);
            }
            broker.enqueue(&mut m).await.unwrap();
        }
        let mut out = String::new();
        queues_table(&*broker, vec!["jobs".into()], &mut out)
            .await
            .unwrap();
        assert_eq!(
            out,
            "QUEUE  READY  PRIORITIZED  DELAYED  DEAD  UNACKED  WORKERS  LOCKS\n\
             jobs       3            2        0     0        0        0      0\n"
        );
    }

    #[tokio::test]
    async fn send_takes_the_queue_running_workers_declare() {
        let stub = dq::StubBroker::new();
        let broker: Arc<dyn Broker> = Arc::new(stub.clone());
        let e = sent(broker.clone(), send_args("send_email", None))
            .await
            .unwrap_err();
        assert_eq!(exit_code(&e), 2);
        assert!(
            e.to_string().starts_with(
                "no running worker declares actor \"send_email\" (no worker is running)"
            ),
            "{e}"
        );
        let ttl = Duration::from_secs(60);
        let w1 = worker("w1", 11, &[("send_email", "emails"), ("add", "default")]);
        broker.publish_worker(&w1, ttl).await.unwrap();
        let m = sent(broker.clone(), send_args("send_email", None))
            .await
            .unwrap();
        assert_eq!(m.queue_name, "emails");
        let e = sent(broker.clone(), send_args("no_such_actor", None))
            .await
            .unwrap_err();
        assert_eq!(exit_code(&e), 2);
        let text = e.to_string();
        assert!(
            text.contains("\"no_such_actor\" (1 worker is running)"),
            "{text}"
        );
        assert!(text.contains("-q QUEUE"), "{text}");
        // Named, it goes where it is told.
        let m = sent(broker.clone(), send_args("no_such_actor", Some("later")))
            .await
            .unwrap();
        assert_eq!(m.queue_name, "later");

        // Two builds that disagree: the operator chooses.
        let w2 = worker("w2", 12, &[("send_email", "mail")]);
        broker.publish_worker(&w2, ttl).await.unwrap();
        let e = sent(broker.clone(), send_args("send_email", None))
            .await
            .unwrap_err();
        assert_eq!(exit_code(&e), 2);
        assert!(
            e.to_string().contains("different queues (emails, mail)"),
            "{e}"
        );

        // `dq queues` knows the empty queues workers consume.
        let mut out = String::new();
        queues_table(&*broker, vec![], &mut out).await.unwrap();
        assert_eq!(
            out,
            "QUEUE    READY  DELAYED  DEAD  UNACKED  WORKERS  LOCKS\n\
             default      0        0     0        0        1      0\n\
             emails       1        0     0        0        1      0\n\
             later        1        0     0        0        0      0\n\
             mail         0        0     0        0        1      0\n"
        );

        let mut out = String::new();
        actors_table(&*broker, &mut out).await.unwrap();
        let seen = when(Some(w1.last_seen));
        let pad = " ".repeat(seen.len() - "LAST SEEN".len());
        assert_eq!(
            out,
            format!(
                "ACTOR       QUEUE    PRIORITY  OPTIONS  PROCESSES  LAST SEEN{pad}  WORKERS\n\
                 add         default         0  -                1  {seen}  web-1:11\n\
                 send_email  emails          0  -                1  {seen}  web-1:11\n\
                 send_email  mail            0  -                1  {seen}  web-1:12\n"
            )
        );
        broker.withdraw_worker("w1").await.unwrap();
        broker.withdraw_worker("w2").await.unwrap();
        let mut out = String::new();
        actors_table(&*broker, &mut out).await.unwrap();
        assert_eq!(out, "No workers are running.\n");
    }

    #[test]
    fn options_read_as_words() {
        let o =
            serde_json::json!({"max_retries": 3, "on_retry_exhausted": "alert", "max_age": null});
        assert_eq!(
            options_text(o.as_object().unwrap()),
            "max_retries=3 on_retry_exhausted=alert max_age=null"
        );
        assert_eq!(options_text(&serde_json::Map::new()), "-");
    }

    #[test]
    fn long_calls_are_cut() {
        let m = Message::new("q", "a", &("x".repeat(200),), &()).unwrap();
        let text = call_of(Some(&m), b"");
        assert_eq!(text.chars().count(), 80);
        assert!(text.ends_with("..."));
        assert_eq!(call_of(None, b"oops"), "<not a message: oops>");
    }
}
