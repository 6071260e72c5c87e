//! The worker binary's flags: Dramatiq's, with its defaults, plus the few a Rust binary needs.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

/// Dramatiq's default number of worker threads per process.
pub(crate) const DEFAULT_THREADS: usize = 8;
/// Dramatiq's default `--worker-shutdown-timeout`, in milliseconds (10 minutes).
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 600_000;

/// Run dq worker processes for the actors linked into this binary.
///
/// The main process starts --processes worker processes (this same binary, re-executed), each
/// running --threads actors at a time, and restarts any that dies. Signals: INT or TERM stops
/// gracefully (running messages finish, prefetched ones go back to the broker); a second INT or
/// TERM kills the workers at once; HUP reloads the worker processes.
///
/// Exit codes: 0 stopped gracefully; 1 killed; 2 bad argument or actor definition; 3 the
/// broker could not be reached at startup; 4 the pid file names a running process.
#[derive(Clone, Debug, Parser)]
#[command(version, about, long_about, max_term_width = 100)]
pub(crate) struct WorkerArgs {
    /// The broker to connect to: redis://, rediss:// or amqp://, amqps://. Default: the broker
    /// the binary sets in code, else DQ_REDIS_URL, else DQ_AMQP_URL, else redis://127.0.0.1:6379.
    #[arg(short = 'b', long, value_name = "URL")]
    pub(crate) broker_url: Option<String>,

    /// The Redis key namespace (Dramatiq's default is "dramatiq"). Ignored by RabbitMQ.
    #[arg(long, value_name = "NAME", env = crate::broker::REDIS_NAMESPACE_ENV)]
    pub(crate) namespace: Option<String>,

    /// The number of worker processes to run. Default: the number of CPUs.
    #[arg(short = 'p', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) processes: Option<u32>,

    /// The number of messages each worker process runs at once, sync and async actors together.
    #[arg(short = 't', long, value_name = "N", default_value_t = DEFAULT_THREADS as u32,
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub(crate) threads: u32,

    /// Listen only on these queues (space- or comma-separated). Default: every queue the linked
    /// actors use.
    #[arg(short = 'Q', long, value_name = "QUEUE", num_args = 1.., value_delimiter = ',',
          value_parser = queue_name)]
    pub(crate) queues: Vec<String>,

    /// Write the main process's PID to this file, and remove it on exit. If the file names a
    /// process that is running, exit with code 4.
    #[arg(long, value_name = "PATH")]
    pub(crate) pid_file: Option<PathBuf>,

    /// Append log lines, and the worker processes' output, to this file instead of standard
    /// error.
    #[arg(long, value_name = "PATH")]
    pub(crate) log_file: Option<PathBuf>,

    /// Do not set up logging: the binary installed its own tracing subscriber. If it did not,
    /// only WARNING and ERROR lines are shown.
    #[arg(long)]
    pub(crate) skip_logging: bool,

    /// How long a worker process waits for running messages when stopping, in milliseconds.
    /// Messages still running then are left to the broker to redeliver.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_MS)]
    pub(crate) worker_shutdown_timeout: u64,

    /// Watch this directory for source changes: rebuild (see --watch-build-command) and, when
    /// the build succeeds, reload the worker processes. For development, not production.
    #[arg(long, value_name = "DIR")]
    pub(crate) watch: Option<PathBuf>,

    /// The command that rebuilds this binary, run with `sh -c` in the watched directory.
    /// Default: `cargo build` of this binary (with --release, --profile, --bin or --example as
    /// its path in the target directory says).
    #[arg(long, value_name = "COMMAND", requires = "watch")]
    pub(crate) watch_build_command: Option<String>,

    /// Watch only files matching this glob (repeatable). A glob without `/` matches file
    /// names, one with `/` paths relative to the watched directory; `**` crosses directories.
    /// Default: *.rs and *.toml.
    #[arg(short = 'i', long, value_name = "GLOB", requires = "watch")]
    pub(crate) watch_include: Vec<String>,

    /// Ignore files matching this glob (repeatable). Hidden directories and `target` are
    /// always ignored.
    #[arg(short = 'x', long, value_name = "GLOB", requires = "watch")]
    pub(crate) watch_exclude: Vec<String>,

    /// Accepted for compatibility with Dramatiq: dq always polls the watched directory.
    #[arg(long, requires = "watch")]
    pub(crate) watch_use_polling: bool,

    /// Serve the worker processes' Prometheus metrics on this address (feature `prometheus`).
    #[cfg(feature = "prometheus")]
    #[arg(
        long,
        value_name = "HOST",
        env = "dramatiq_prom_host",
        default_value = "0.0.0.0"
    )]
    pub(crate) prometheus_host: String,

    /// Serve the worker processes' Prometheus metrics on this port (feature `prometheus`).
    #[cfg(feature = "prometheus")]
    #[arg(
        long,
        value_name = "PORT",
        env = "dramatiq_prom_port",
        default_value_t = 9191
    )]
    pub(crate) prometheus_port: u16,

    /// Do not serve Prometheus metrics, nor add the Prometheus middleware to the worker
    /// processes' apps (feature `prometheus`).
    #[cfg(feature = "prometheus")]
    #[arg(long)]
    pub(crate) no_prometheus: bool,

    /// Log more: -v for DEBUG, -vv for TRACE (RUST_LOG, when set, takes precedence).
    #[arg(short = 'v', long, action = ArgAction::Count)]
    pub(crate) verbose: u8,
}

/// A queue name as Dramatiq accepts it: checked while parsing, so a typo is a usage error
/// before any worker process starts, not a worker that finds nothing to consume.
pub(crate) fn queue_name(name: &str) -> Result<String, String> {
    if dq_core::is_valid_queue_name(name) {
        Ok(name.to_owned())
    } else {
        Err("queue names match [a-zA-Z_][a-zA-Z0-9._-]*".to_owned())
    }
}

impl WorkerArgs {
    /// `--processes`, or the number of CPUs.
    pub(crate) fn processes(&self) -> usize {
        match self.processes {
            Some(n) => n as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<WorkerArgs, clap::Error> {
        WorkerArgs::try_parse_from(std::iter::once("worker").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_dramatiqs() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.threads, 8);
        assert_eq!(a.worker_shutdown_timeout, 600_000);
        assert!(a.queues.is_empty());
        assert_eq!(
            a.processes(),
            std::thread::available_parallelism().unwrap().get()
        );
        assert_eq!(a.verbose, 0);
    }

    #[test]
    fn queues_take_several_values_or_commas() {
        let a = parse(&["-Q", "a", "b", "--threads", "2"]).unwrap();
        assert_eq!(a.queues, ["a", "b"]);
        let a = parse(&["--queues", "a,b", "-Q", "c"]).unwrap();
        assert_eq!(a.queues, ["a", "b", "c"]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &["--threads", "zero"][..],
            &["--threads", "0"],
            &["--processes", "0"],
            &["--watch-build-command", "make"],
            &["--no-such-flag"],
            &["--queues", "bad name"],
            &["-Q", "default,"],
            &["-Q", "9lives"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn verbose_counts() {
        assert_eq!(parse(&["-vv"]).unwrap().verbose, 2);
    }

    #[test]
    fn the_flags_are_consistent() {
        use clap::CommandFactory;
        WorkerArgs::command().debug_assert();
    }
}
