//! One worker process: connect, build the app from the linked actors, run a [`Worker`] until
//! TERM, stop it gracefully.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dq_worker::{Worker, WorkerError, WorkerOptions};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{debug, error, info, warn};

use crate::args::WorkerArgs;
use crate::broker::error_chain;
use crate::exit;
use crate::logging::PROCESS;
use crate::{Cli, Error};

/// Marks a worker process and carries its index (`0..processes`).
pub(crate) const INDEX_ENV: &str = "DQ_WORKER_PROCESS";
/// The main process's pid, so that a worker can tell it was orphaned before it could ask to
/// be told.
pub(crate) const MASTER_ENV: &str = "DQ_MAIN_PROCESS_PID";

/// Set for a worker process the main process starts again after the command has been running
/// (a restart after a crash, a reload): it waits for an unreachable broker instead of exiting
/// with code 3, which is the rule for the command's own first start only. One broker blip and
/// one crashed process must not stop every worker.
pub(crate) const RESPAWN_ENV: &str = "DQ_WORKER_RESPAWN";

/// The pause before trying the broker again, doubling from half a second up to this.
const RESPAWN_MAX_PAUSE: Duration = Duration::from_secs(30);

/// Runs worker process `index` to its end and returns its exit code.
pub(crate) fn run(
    #[cfg_attr(not(feature = "prometheus"), allow(unused_mut))] mut cli: Cli,
    args: WorkerArgs,
    index: usize,
) -> i32 {
    if let Some(code) = follow_the_main_process() {
        return code;
    }
    #[cfg(feature = "prometheus")]
    let reporter = crate::exposition::Reporter::from_env(args.threads as usize).map(Arc::new);
    #[cfg(feature = "prometheus")]
    {
        cli.prometheus = reporter.is_some();
    }
    #[cfg(not(feature = "prometheus"))]
    let reporter: Option<Arc<NoReporter>> = None;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(target: PROCESS, "Cannot start the Tokio runtime: {e}");
            return exit::KILLED;
        }
    };
    let code = rt.block_on(async {
        if let Some(r) = &reporter {
            r.spawn();
        }
        let code = serve(cli, args, index).await;
        // The last numbers, counted up to the end; the main process keeps them.
        if let Some(r) = &reporter {
            r.write();
        }
        code
    });
    // Threads of sync actors still running past the shutdown timeout must not hold the exit.
    rt.shutdown_background();
    code
}

/// Stands in for the metrics reporter when the `prometheus` feature is off.
#[cfg(not(feature = "prometheus"))]
struct NoReporter;

#[cfg(not(feature = "prometheus"))]
impl NoReporter {
    fn spawn(self: &Arc<Self>) {}
    fn write(&self) {}
}

/// Asks the kernel to TERM this process when the main process dies (even by SIGKILL), so no
/// worker is left consuming without a supervisor; it then stops gracefully like any other
/// time. Returns an exit code if the main process is gone already.
fn follow_the_main_process() -> Option<i32> {
    let master = std::env::var(MASTER_ENV).ok()?.parse::<i32>().ok()?;
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        warn!(target: PROCESS, "Cannot ask to be stopped with the main process: {e}");
    }
    if nix::unistd::getppid().as_raw() != master {
        error!(target: PROCESS, "The main process {master} is gone: not starting.");
        return Some(exit::KILLED);
    }
    None
}

fn signals() -> std::io::Result<(Signal, Signal)> {
    // INT is ignored: Ctrl-C in a terminal reaches every process of the group, and the main
    // process decides what it means (it sends TERM). Listening for it is what ignores it.
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move { while int.recv().await.is_some() {} });
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    ))
}

/// A TERM or HUP: both stop a worker process, as in Dramatiq.
async fn stop_signal(term: &mut Signal, hup: &mut Signal) {
    tokio::select! {
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

/// A stop signal this soon after the first one is the same stop, not a request to kill.
///
/// A signal sent to the whole process group (systemd's default `KillMode=control-group`, a
/// terminal hanging up) reaches a worker process directly and again through the main process,
/// milliseconds apart; taken as "stop, then kill", it would kill running messages on every
/// ordinary `systemctl stop`. An operator's second Ctrl-C is unaffected: the main process
/// handles it, with SIGKILL.
const SAME_STOP_WITHIN: Duration = Duration::from_secs(1);

/// Waits for a stop signal that asks to kill: one at least [`SAME_STOP_WITHIN`] after the
/// first, which came at `first`.
async fn second_stop_signal(term: &mut Signal, hup: &mut Signal, first: Instant) {
    loop {
        stop_signal(term, hup).await;
        if first.elapsed() >= SAME_STOP_WITHIN {
            return;
        }
        debug!(target: PROCESS, "stop signal received again at once: the same stop");
    }
}

async fn serve(cli: Cli, args: WorkerArgs, index: usize) -> i32 {
    let (mut term, mut hup) = match signals() {
        Ok(s) => s,
        Err(e) => {
            error!(target: PROCESS, "Cannot listen for signals: {e}");
            return exit::KILLED;
        }
    };
    let respawned = std::env::var_os(RESPAWN_ENV).is_some();
    let started = tokio::select! {
        r = start_patiently(&cli, &args, respawned) => r,
        _ = stop_signal(&mut term, &mut hup) => {
            info!(target: PROCESS, "Stopped before the worker was ready.");
            return exit::OK;
        }
    };
    let worker = match started {
        Ok(w) => w,
        Err(code) => return code,
    };
    debug!(target: PROCESS, index, "worker process started");
    info!(target: PROCESS, "Worker process is ready for action.");

    stop_signal(&mut term, &mut hup).await;
    let first = Instant::now();
    info!(target: PROCESS, "Stopping worker process...");
    tokio::select! {
        r = worker.stop() => match r {
            Ok(()) => {}
            Err(WorkerError::ShutdownTimeout(n)) => warn!(
                target: PROCESS,
                "{n} message(s) were still running after --worker-shutdown-timeout; the broker \
                 will redeliver them."
            ),
            Err(e) => warn!(target: PROCESS, "Worker did not stop cleanly: {}", error_chain(&e)),
        },
        _ = second_stop_signal(&mut term, &mut hup, first) => {
            warn!(target: PROCESS, "Killing worker process...");
            return exit::KILLED;
        }
    }
    // Retries and pipeline stages the last messages enqueued must reach the broker before
    // the process exits; a broker that does not answer does not hold the exit for long.
    match tokio::time::timeout(Duration::from_secs(5), worker.app().close()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(target: PROCESS, "Closing the broker: {}", error_chain(&e)),
        Err(_) => warn!(target: PROCESS, "Closing the broker took over 5 s; giving up."),
    }
    info!(target: PROCESS, "Worker process stopped.");
    exit::OK
}

/// Why [`start`] failed: the exit code it deserves and the line that says why.
struct StartFailure {
    code: i32,
    why: String,
}

/// [`start`], tried again with backoff while the broker cannot be reached when this process was
/// `respawned` (see [`RESPAWN_ENV`]): one WARNING, then DEBUG lines, then one INFO when it is
/// reached. Otherwise (the command's first start) once: the failure is an ERROR and the code.
async fn start_patiently(cli: &Cli, args: &WorkerArgs, respawned: bool) -> Result<Worker, i32> {
    let mut pause = Duration::from_millis(500);
    let mut since: Option<Instant> = None;
    loop {
        match start(cli, args).await {
            Ok(worker) => {
                if let Some(first) = since {
                    info!(
                        target: PROCESS,
                        "Reached the broker after {:.1} s.",
                        first.elapsed().as_secs_f64()
                    );
                }
                return Ok(worker);
            }
            Err(f) if f.code == exit::BROKER && respawned => {
                if since.is_none() {
                    since = Some(Instant::now());
                    warn!(
                        target: PROCESS,
                        "{}. This worker process was restarted while the command runs, so it keeps \
                         trying (every {} s at most) instead of exiting.",
                        f.why,
                        RESPAWN_MAX_PAUSE.as_secs()
                    );
                } else {
                    debug!(target: PROCESS, "{}; trying again in {} ms", f.why, pause.as_millis());
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RESPAWN_MAX_PAUSE);
            }
            Err(f) => {
                error!(target: PROCESS, "{}", f.why);
                return Err(f.code);
            }
        }
    }
}

/// Connects, checks the broker answers, builds the app and starts the worker; on failure,
/// returns why and the exit code.
async fn start(cli: &Cli, args: &WorkerArgs) -> Result<Worker, StartFailure> {
    let app = cli
        .connect_app(args.broker_url.as_deref(), args.namespace.as_deref())
        .await
        .map_err(|e| {
            let why = match &e {
                Error::BrokerUnreachable(why) => format!("Cannot reach the broker: {why}"),
                Error::BrokerSettings(why) => format!("Invalid broker settings: {why}"),
                Error::AppFn(why) => {
                    format!("The app function failed: {}", error_chain(why.as_ref()))
                }
                Error::App(why) => format!("Invalid actor definitions: {}", error_chain(why)),
            };
            StartFailure {
                code: e.exit_code(),
                why,
            }
        })?;
    app.set_global();

    let known = app.registry().queues();
    for q in &args.queues {
        if !known.iter().any(|k| k == dq_core::base_queue_name(q)) {
            warn!(target: PROCESS, "No actor uses queue {q:?} (the actors' queues: {known:?}).");
        }
    }
    let options = WorkerOptions {
        threads: args.threads as usize,
        queues: (!args.queues.is_empty()).then(|| args.queues.clone()),
        shutdown_timeout: Duration::from_millis(args.worker_shutdown_timeout),
        ..WorkerOptions::default()
    };
    let worker = Worker::new(app, options);
    match worker.start().await {
        Ok(()) => Ok(worker),
        Err(e) => {
            let code = match &e {
                WorkerError::NoQueues { .. } => exit::USAGE,
                // The app is missing a state an actor takes: fixed in code, not by a restart.
                WorkerError::State(dq_core::StateError::Missing { .. }) => exit::USAGE,
                WorkerError::Broker(b) => Error::from_broker(b).exit_code(),
                _ => exit::KILLED,
            };
            Err(StartFailure {
                code,
                why: format!("Worker failed to start: {}", error_chain(&e)),
            })
        }
    }
}
