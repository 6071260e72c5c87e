//! # dq-cli
//!
//! dq's command line: [`main`] turns your own binary, with its actors linked in, into a
//! `dramatiq`-style worker command (Dramatiq's flags, log format, signals and exit codes), and
//! the `dq` binary of this crate lets operators look at and fix queues.
//!
//! **Key design decision:** Rust cannot import actor modules by name at run time the way
//! `dramatiq my_app` does, so the worker command *is* your binary: `#[dq::actor]` registers the
//! actors at link time and `main` hands over to [`main`]. To run several worker processes the
//! main process re-executes that same binary (rather than forking a process that already runs a
//! Tokio runtime), and because each worker process starts from the file on disk, a reload
//! (`SIGHUP`, or `--watch` after a successful build) runs the code you just built.
//!
//! ```no_run
//! #[dq::actor]
//! fn count_words(url: String) {
//!     println!("There are {} words at {url:?}.", url.len());
//! }
//!
//! fn main() {
//!     // The broker comes from --broker-url, DQ_REDIS_URL or DQ_AMQP_URL (default: local Redis).
//!     dq_cli::main()
//! }
//! ```
//!
//! Then `cargo run -- --processes 2 --threads 8` prints Dramatiq's boot lines:
//!
//! ```text
//! [2024-05-01 10:00:00,001] [PID 4100] [MainThread] [dq.MainProcess] [INFO] Dq '0.1.0' is booting up.
//! [2024-05-01 10:00:00,052] [PID 4101] [MainThread] [dq.WorkerProcess(0)] [INFO] Worker process is ready for action.
//! [2024-05-01 10:00:00,053] [PID 4102] [MainThread] [dq.WorkerProcess(1)] [INFO] Worker process is ready for action.
//! ```
//!
//! | piece | what it does |
//! |---|---|
//! | flags | Dramatiq's worker flags and defaults: `--processes` (CPUs), `--threads` (8), `--queues`, `--pid-file`, `--log-file`, `--skip-logging`, `--worker-shutdown-timeout` (600000 ms), `--watch`, `-v`; `--prometheus-host` / `--prometheus-port` / `--no-prometheus` (feature `prometheus`) |
//! | metrics | with feature `prometheus`: one Prometheus endpoint for all worker processes (see the README's "Monitoring") |
//! | supervisor | starts `--processes` worker processes and restarts one that dies |
//! | signals | INT / TERM: graceful stop; a second one: kill at once; HUP: graceful reload |
//! | exit codes | [`exit`]: 0 ok, 1 killed, 2 bad argument or actor, 3 broker unreachable at startup, 4 pid file in use |
//! | one app | [`Cli::app`]: one function defines the app (middleware, backends, state) for the worker command and, through [`Cli::build_app`], for producers |
//! | `dq` binary | `dq queues`, `dq dead-letters list / show / requeue / purge`, `dq send`, `dq actors`, `dq workers`, `dq purge`; `dq abort` (feature `abort`); `dq dashboard`, the web dashboard (feature `dashboard`, with `--results-url` under feature `results`) |
//!
//! ## One app for the worker and the producer
//!
//! Write the app once, as a function from the [`AppBuilder`] dq-cli starts (the chosen broker,
//! Dramatiq's default middleware, every linked actor) to the finished one. The worker command
//! runs it in each worker process; a producer (a web server, a script) gets the same app from
//! [`Cli::build_app`], on the broker the worker command would choose without flags: the one set
//! in code, else `DQ_REDIS_URL` (with `DQ_REDIS_NAMESPACE`), else `DQ_AMQP_URL`, else local Redis.
//!
//! ```no_run
//! use dq_core::AppBuilder;
//!
//! #[dq::actor]
//! fn greet(name: String) {
//!     println!("Hello, {name}!");
//! }
//!
//! /// The middleware, backends and state of both sides, written once.
//! fn my_app(app: AppBuilder) -> Result<AppBuilder, dq_cli::BoxError> {
//!     Ok(app.middleware(dq_middleware::CurrentMessage).state(String::from("settings")))
//! }
//!
//! /// The producer (a web server, say).
//! async fn producer() -> Result<(), Box<dyn std::error::Error>> {
//!     let app = dq_cli::Cli::new().app(my_app).build_app().await?;
//!     app.set_global();
//!     greet::send("Ann".to_owned()).await?;
//!     app.close().await?;
//!     Ok(())
//! }
//!
//! /// The worker binary.
//! fn main() {
//!     dq_cli::Cli::new().app(my_app).main()
//! }
//! ```
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `redis` | yes | `redis://` and `rediss://` broker URLs |
//! | `amqp` | yes | `amqp://` and `amqps://` broker URLs |
//! | `prometheus` | yes | each worker process records Dramatiq's Prometheus series (dq-metrics) and the main process serves them, added up, on `dramatiq_prom_host:dramatiq_prom_port` (default `0.0.0.0:9191`; `--prometheus-host`, `--prometheus-port`, `--no-prometheus`), with `dq_` gauges for autoscaling |
//!
//! The `dq` facade turns these on with its own `redis`, `amqp` and `prometheus` features: `dq`
//! with `features = ["cli", "redis"]` builds no RabbitMQ client and serves no metrics.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};
use dq_core::{App, AppBuilder, Broker, BrokerError};
use tracing::{debug, error, info};

pub mod admin;
mod args;
mod broker;
mod child;
mod error;
#[cfg(feature = "prometheus")]
mod exposition;
mod logging;
mod pidfile;
mod supervisor;
mod watch;

pub use broker::{AMQP_URL_ENV, DEFAULT_BROKER_URL, REDIS_NAMESPACE_ENV, REDIS_URL_ENV};
pub use error::{BoxError, Error};

use crate::broker::{connect, namespace_from, url_from, url_variable, BrokerFactory, BrokerFuture};
use crate::logging::{Sink, PROCESS};

/// The exit codes of the worker command and of `dq`, Dramatiq's.
pub mod exit {
    /// Stopped gracefully, or the command did what was asked.
    pub const OK: i32 = 0;
    /// Killed (a second INT or TERM), or a worker process crashed while stopping.
    pub const KILLED: i32 = 1;
    /// A command line argument is invalid, or an actor definition is (Dramatiq: an import
    /// error).
    pub const USAGE: i32 = 2;
    /// The broker could not be reached at startup (the worker does not retry: wrap it in a
    /// retry loop, see the README).
    pub const BROKER: i32 = 3;
    /// The pid file names a process that is running (or cannot be written).
    pub const PID_FILE: i32 = 4;
}

/// The version the boot line announces.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One step of the app's definition: an app function, or a `configure` closure.
type AppFn = Arc<dyn Fn(AppBuilder) -> Result<AppBuilder, BoxError> + Send + Sync>;

/// The worker command, with what a binary may set in code: the broker, and the app's
/// definition (middleware, backends, state), which producers can build too
/// ([`Cli::build_app`]).
///
/// ```no_run
/// use dq_broker_redis::RedisBroker;
/// use dq_core::AppBuilder;
///
/// fn my_app(app: AppBuilder) -> Result<AppBuilder, dq_cli::BoxError> {
///     Ok(app.middleware(dq_middleware::CurrentMessage))
/// }
///
/// fn main() {
///     dq_cli::Cli::new()
///         // Used unless --broker-url is given.
///         .broker(|| RedisBroker::builder().url("redis://cache:6379").namespace("shop").build())
///         .app(my_app)
///         .main()
/// }
/// ```
#[derive(Clone, Default)]
pub struct Cli {
    broker: Option<BrokerFactory>,
    app_fns: Vec<AppFn>,
    /// Set in a worker process whose main process serves metrics: the app gets the
    /// `Prometheus` middleware, last.
    prometheus: bool,
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("broker", &self.broker.is_some())
            .field("app_fns", &self.app_fns.len())
            .finish()
    }
}

impl Cli {
    /// The worker command with nothing set in code.
    pub fn new() -> Cli {
        Cli::default()
    }

    /// Sets the broker in code. Each worker process calls `make` once at startup.
    ///
    /// The broker is chosen in this order: `--broker-url`; then this; then the URL in
    /// `DQ_REDIS_URL`, then in `DQ_AMQP_URL`; then [`DEFAULT_BROKER_URL`] (Redis on
    /// localhost, where Dramatiq would try RabbitMQ: Redis needs no setup, and `dq queues` can
    /// list its queues). A Redis broker chosen by URL uses the namespace of `--namespace`, else
    /// of `DQ_REDIS_NAMESPACE`, else Dramatiq's `dramatiq`; this broker sets its own. An error of
    /// kind `Connection` or `Timeout` from `make` exits with code 3, one of kind `Rejected` (a
    /// bad setting) with code 2. [`Cli::build_app`] chooses the same way, without the flags.
    pub fn broker<F, Fut, B, E>(mut self, make: F) -> Cli
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<B, E>> + Send + 'static,
        B: Broker,
        E: Into<BrokerError>,
    {
        let make = Arc::new(make);
        self.broker = Some(Arc::new(move || -> BrokerFuture {
            let fut = make();
            Box::pin(async move {
                match fut.await {
                    Ok(b) => Ok(Arc::new(b) as Arc<dyn Broker>),
                    Err(e) => Err(e.into()),
                }
            })
        }));
        self
    }

    /// Sets the function that defines the app: it gets the [`AppBuilder`] dq-cli starts (the
    /// chosen broker, Dramatiq's default middleware, every linked actor) and adds middleware
    /// (results, rate limits, Prometheus), backends, [state](AppBuilder::state) or actors. Each
    /// worker process runs it once at startup, and [`Cli::build_app`] runs it for a producer, so
    /// a worker binary and a producer that share the function share the app.
    ///
    /// An error from `f` (any error type) stops the worker process with exit code 2 and a log
    /// line saying why, and is [`Error::AppFn`] from [`Cli::build_app`]. State that needs async
    /// set-up goes in [`AppBuilder::state_with`], which only the worker runs, as it starts.
    /// Several calls, and [`Cli::configure`], run in the order given.
    ///
    /// ```no_run
    /// use dq_core::AppBuilder;
    ///
    /// #[derive(Debug)]
    /// struct Settings { greeting: String }
    ///
    /// fn my_app(app: AppBuilder) -> Result<AppBuilder, std::env::VarError> {
    ///     let greeting = std::env::var("GREETING")?;
    ///     Ok(app.state(Settings { greeting }))
    /// }
    ///
    /// fn main() {
    ///     dq_cli::Cli::new().app(my_app).main()
    /// }
    /// ```
    pub fn app<F, E>(mut self, f: F) -> Cli
    where
        F: Fn(AppBuilder) -> Result<AppBuilder, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        self.app_fns
            .push(Arc::new(move |builder| f(builder).map_err(Into::into)));
        self
    }

    /// Adjusts each worker process's app before it is built, like [`Cli::app`] with a function
    /// that cannot fail. Prefer [`Cli::app`]: a producer can build the same app with
    /// [`Cli::build_app`], and a definition that needs a fallible step (a backend from the
    /// environment) returns its error instead of panicking.
    pub fn configure<F>(self, f: F) -> Cli
    where
        F: Fn(AppBuilder) -> AppBuilder + Send + Sync + 'static,
    {
        self.app(move |builder| Ok::<_, BoxError>(f(builder)))
    }

    /// Builds the app a worker process of this command would build, for a producer: the same
    /// broker, chosen as a worker command without `--broker-url` and `--namespace` chooses it
    /// (the broker set in code, else `DQ_REDIS_URL` with the namespace in `DQ_REDIS_NAMESPACE`,
    /// else `DQ_AMQP_URL`, else [`DEFAULT_BROKER_URL`]), connected and answering, with
    /// Dramatiq's default middleware, every linked actor, and the [app functions](Cli::app).
    ///
    /// It does not make the app global (call [`App::set_global`], or send with
    /// `my_actor::send_to(&app, ...)`), and does not build [`AppBuilder::state_with`] states:
    /// those are the worker's. Call [`App::close`] before the producer exits.
    ///
    /// ```no_run
    /// use dq_core::AppBuilder;
    ///
    /// fn my_app(app: AppBuilder) -> Result<AppBuilder, dq_cli::BoxError> {
    ///     Ok(app.middleware(dq_middleware::CurrentMessage))
    /// }
    ///
    /// #[tokio::main]
    /// async fn main() {
    ///     let app = match dq_cli::Cli::new().app(my_app).build_app().await {
    ///         Ok(app) => app,
    ///         Err(e) => {
    ///             eprintln!("error: {e}");
    ///             std::process::exit(e.exit_code()); // 3 when the broker is unreachable
    ///         }
    ///     };
    ///     app.set_global();
    ///     // ... my_actor::send(...).await ...
    ///     let _ = app.close().await;
    /// }
    /// ```
    pub async fn build_app(&self) -> Result<App, Error> {
        self.connect_app(None, None).await
    }

    /// The broker, chosen as documented on [`Cli::broker`] from `--broker-url` and `--namespace`
    /// (`None` when not given), checked to answer, and the app built on it.
    pub(crate) async fn connect_app(
        &self,
        broker_url: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<App, Error> {
        let broker = self.choose_broker(broker_url, namespace).await?;
        broker.ping().await.map_err(|e| Error::from_broker(&e))?;
        self.build_on(broker)
    }

    pub(crate) async fn choose_broker(
        &self,
        broker_url: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Arc<dyn Broker>, Error> {
        if let (None, Some(make)) = (broker_url, &self.broker) {
            return make().await.map_err(|e| Error::from_broker(&e));
        }
        let url = url_from(broker_url).unwrap_or_else(|| DEFAULT_BROKER_URL.to_owned());
        debug!(target: logging::PROCESS, url = %dq_core::redact_url(&url), "connecting to the broker");
        let variable = url_variable(broker_url);
        connect(&url, variable, namespace_from(namespace).as_deref()).await
    }

    /// The app on `broker`: default middleware, linked actors, then the app functions in order.
    fn build_on(&self, broker: Arc<dyn Broker>) -> Result<App, Error> {
        let mut builder =
            App::builder_shared(broker).middleware_arcs(dq_middleware::default_middleware());
        for f in &self.app_fns {
            builder = f(builder).map_err(Error::AppFn)?;
        }
        #[cfg(feature = "prometheus")]
        if self.prometheus {
            builder = builder.middleware(dq_metrics::Prometheus::default());
        }
        let app = builder.build().map_err(Error::App)?;
        if self.prometheus
            && app
                .middleware()
                .iter()
                .filter(|m| m.name() == "Prometheus")
                .count()
                > 1
        {
            return Err(Error::AppFn(
                "the app function adds the Prometheus middleware, which the worker command adds \
                 itself (feature `prometheus`): remove it from the app function, or run with \
                 --no-prometheus"
                    .into(),
            ));
        }
        Ok(app)
    }

    /// Runs the command with this process's arguments and exits with its [`exit`] code.
    pub fn main(self) -> ! {
        let code = self.run();
        std::process::exit(code)
    }

    /// Runs the command with this process's arguments and returns its [`exit`] code.
    pub fn run(self) -> i32 {
        self.run_with(std::env::args_os())
    }

    /// Runs the command with `args` (the first one is the program name) and returns its
    /// [`exit`] code.
    pub fn run_with<I, T>(self, args: I) -> i32
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let raw: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let program = raw
            .first()
            .and_then(|p| Path::new(p).file_name())
            .map_or_else(|| "worker".to_owned(), |n| n.to_string_lossy().into_owned());
        let matches = args::WorkerArgs::command()
            .name(program.clone())
            .bin_name(program)
            .version(VERSION)
            .try_get_matches_from(&raw);
        let parsed = matches.and_then(|m| args::WorkerArgs::from_arg_matches(&m));
        let args = match parsed {
            Ok(a) => a,
            Err(e) => {
                // Help and --version go to stdout with code 0, usage errors to stderr with 2.
                let _ = e.print();
                return e.exit_code();
            }
        };
        let index = std::env::var(child::INDEX_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok());
        let process = match index {
            Some(i) => format!("dq.WorkerProcess({i})"),
            None => "dq.MainProcess".to_owned(),
        };
        // The main process writes the log file; worker processes write to their stderr, which
        // the main process pointed at that same file.
        let log_file = match (&args.log_file, index) {
            (Some(path), None) => match OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => Some(Arc::new(f)),
                Err(e) => {
                    eprintln!("error: cannot open log file {}: {e}", path.display());
                    return exit::USAGE;
                }
            },
            _ => None,
        };
        let sink = log_file.clone().map_or(Sink::Stderr, Sink::File);
        if args.skip_logging {
            if !tracing::dispatcher::has_been_set() {
                logging::init_last_resort(process, sink);
            }
        } else {
            // Fails only when the binary installed a subscriber itself: it is kept.
            if let Ok(Some(why)) = logging::init(process, args.verbose, sink) {
                // Once, from the main process: the worker processes read the same variable.
                if index.is_none() {
                    tracing::warn!(target: PROCESS, "{why}: using the default levels.");
                }
            }
        }
        match index {
            Some(i) => child::run(self, args, i),
            None => run_main_process(self, args, raw, log_file),
        }
    }
}

/// Runs the worker command of a binary that sets nothing in code, with this process's
/// arguments, and exits with its [`exit`] code. See [`Cli`] to set the broker in code.
pub fn main() -> ! {
    Cli::new().main()
}

fn run_main_process(
    #[cfg_attr(not(feature = "prometheus"), allow(unused_variables))] cli: Cli,
    args: args::WorkerArgs,
    raw: Vec<OsString>,
    log_file: Option<Arc<std::fs::File>>,
) -> i32 {
    info!(target: PROCESS, "Dq '{VERSION}' is booting up.");
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            error!(target: PROCESS, "Cannot find this binary to start worker processes: {e}");
            return exit::KILLED;
        }
    };
    let pid_file = match args.pid_file.as_deref().map(pidfile::PidFile::acquire) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            error!(target: PROCESS, "{}", dq_core::ErrorChain(&e));
            return exit::PID_FILE;
        }
    };
    let watch = match &args.watch {
        None => None,
        Some(dir) => match dir.canonicalize().and_then(|dir| {
            if dir.is_dir() {
                Ok(dir)
            } else {
                Err(std::io::Error::other("not a directory"))
            }
        }) {
            Ok(dir) => Some(supervisor::WatchConfig {
                build_command: args
                    .watch_build_command
                    .clone()
                    .unwrap_or_else(|| watch::default_build_command(&exe)),
                filter: watch::Filter::new(&args.watch_include, &args.watch_exclude),
                dir,
            }),
            Err(e) => {
                error!(target: PROCESS, "Cannot watch {}: {e}", dir.display());
                if let Some(p) = pid_file {
                    p.remove();
                }
                return exit::USAGE;
            }
        },
    };
    #[cfg(feature = "prometheus")]
    let (exposition, listener) = if args.no_prometheus {
        (None, None)
    } else {
        match exposition::Exposition::prepare(cli, &args) {
            Ok((e, listener)) => (Some(Arc::new(e)), Some(listener)),
            Err(why) => {
                error!(target: PROCESS, "{why}");
                if let Some(p) = pid_file {
                    p.remove();
                }
                return exit::USAGE;
            }
        }
    };
    let config = supervisor::Config {
        exe,
        args: raw.into_iter().skip(1).collect(),
        processes: args.processes(),
        log_file,
        watch,
        #[cfg(feature = "prometheus")]
        exposition: exposition.clone(),
    };
    // One thread: worker processes are started from it, and the kernel's parent-death signal
    // follows the thread that started a process, so it must live as long as this process.
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async {
            #[cfg(feature = "prometheus")]
            if let (Some(e), Some(listener)) = (&exposition, listener) {
                if let Err(err) = e.serve(listener) {
                    error!(target: PROCESS, "Cannot serve Prometheus metrics: {err}");
                    return exit::USAGE;
                }
            }
            supervisor::run(config).await
        }),
        Err(e) => {
            error!(target: PROCESS, "Cannot start the Tokio runtime: {e}");
            exit::KILLED
        }
    };
    #[cfg(feature = "prometheus")]
    if let Some(e) = &exposition {
        e.remove();
    }
    if let Some(p) = pid_file {
        p.remove();
    }
    info!(target: PROCESS, "Dq is shutting down (exit code {code}).");
    code
}
