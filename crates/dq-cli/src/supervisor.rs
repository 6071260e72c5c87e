//! The main process: starts the worker processes by re-executing this binary, restarts one that
//! dies, forwards signals, reloads on HUP and on a successful `--watch` build.

use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::child::{INDEX_ENV, MASTER_ENV, RESPAWN_ENV};
use crate::exit;
use crate::logging::PROCESS;
use crate::watch;

/// A worker process that lived at least this long was healthy: if it dies, it is restarted at
/// once. One that dies sooner is restarted after a pause that doubles each time, so a worker
/// that cannot run does not spin a core.
const HEALTHY_UPTIME: Duration = Duration::from_secs(10);
const FIRST_RESTART_PAUSE: Duration = Duration::from_millis(500);
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(30);

/// What the main process was told to run.
pub(crate) struct Config {
    /// This binary, as it was found at startup: a rebuild replaces the file, after which
    /// `/proc/self/exe` would say "(deleted)", while this path names the new build.
    pub(crate) exe: PathBuf,
    /// The arguments, without the program name, handed to every worker process as they are.
    pub(crate) args: Vec<OsString>,
    pub(crate) processes: usize,
    /// `--log-file`, which also becomes the worker processes' stdout and stderr.
    pub(crate) log_file: Option<Arc<File>>,
    pub(crate) watch: Option<WatchConfig>,
    /// The Prometheus endpoint, told which worker processes run.
    #[cfg(feature = "prometheus")]
    pub(crate) exposition: Option<Arc<crate::exposition::Exposition>>,
}

/// `--watch` and its companions.
pub(crate) struct WatchConfig {
    pub(crate) dir: PathBuf,
    pub(crate) filter: watch::Filter,
    pub(crate) build_command: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Waiting for every worker process to stop, then starting new ones.
    Reloading,
    /// Waiting for every worker process to stop, then exiting.
    Stopping,
}

#[derive(Default)]
struct Slot {
    /// The running process, if any.
    pid: Option<u32>,
    /// Tells this process's exit from an earlier one's in the same slot.
    generation: u64,
    started: Option<Instant>,
    /// Whether it was sent TERM: a second TERM would make it exit at once, killing its work.
    termed: bool,
    /// Consecutive deaths soon after starting.
    quick_deaths: u32,
    restart_at: Option<Instant>,
}

struct Exit {
    index: usize,
    generation: u64,
    status: std::io::Result<ExitStatus>,
}

struct Master {
    config: Config,
    slots: Vec<Slot>,
    phase: Phase,
    /// What to exit with once every worker process is gone, in `Stopping`.
    code: i32,
    stop_signals: u32,
    exits_tx: mpsc::UnboundedSender<Exit>,
    builds_tx: mpsc::UnboundedSender<watch::BuildOutcome>,
    building: bool,
    /// Sources that changed while a build ran: build once more after it.
    rebuild: Vec<PathBuf>,
}

/// Runs the main process until it stops; returns its exit code.
pub(crate) async fn run(config: Config) -> i32 {
    let (exits_tx, mut exits_rx) = mpsc::unbounded_channel();
    let (builds_tx, mut builds_rx) = mpsc::unbounded_channel();
    let mut watch_rx = config
        .watch
        .as_ref()
        .map(|w| watch::spawn(w.dir.clone(), w.filter.clone()));
    let (mut int, mut term, mut hup) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(i), Ok(t), Ok(h)) => (i, t, h),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            error!(target: PROCESS, "Cannot listen for signals: {e}");
            return exit::KILLED;
        }
    };
    let mut m = Master {
        slots: (0..config.processes).map(|_| Slot::default()).collect(),
        config,
        phase: Phase::Running,
        code: exit::OK,
        stop_signals: 0,
        exits_tx,
        builds_tx,
        building: false,
        rebuild: Vec::new(),
    };
    if let Some(w) = &m.config.watch {
        info!(
            target: PROCESS,
            "Watching {} for changes; the build command is `{}`.",
            w.dir.display(),
            w.build_command
        );
    }
    for i in 0..m.slots.len() {
        m.spawn(i);
    }
    loop {
        if m.slots.iter().all(|s| s.pid.is_none()) {
            match m.phase {
                Phase::Stopping => return m.code,
                Phase::Reloading => {
                    m.phase = Phase::Running;
                    for i in 0..m.slots.len() {
                        m.slots[i].restart_at = None;
                        m.spawn(i);
                    }
                }
                Phase::Running => {}
            }
        }
        let next_restart = m.slots.iter().filter_map(|s| s.restart_at).min();
        tokio::select! {
            _ = int.recv() => m.on_stop_signal("SIGINT"),
            _ = term.recv() => m.on_stop_signal("SIGTERM"),
            _ = hup.recv() => m.reload("SIGHUP received"),
            Some(e) = exits_rx.recv() => m.on_exit(e),
            _ = tokio::time::sleep_until(next_restart.unwrap_or_else(Instant::now)),
                if next_restart.is_some() => m.restart_due(),
            Some(files) = async { watch_rx.as_mut()?.recv().await }, if watch_rx.is_some() => {
                m.on_change(&files)
            }
            Some(outcome) = builds_rx.recv() => m.on_build(outcome),
        }
    }
}

impl Master {
    fn spawn(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.generation += 1;
        slot.termed = false;
        slot.restart_at = None;
        let mut cmd = tokio::process::Command::new(&self.config.exe);
        cmd.args(&self.config.args)
            .env(INDEX_ENV, index.to_string())
            .env(MASTER_ENV, std::process::id().to_string())
            .stdin(Stdio::null());
        #[cfg(feature = "prometheus")]
        match &self.config.exposition {
            Some(e) => cmd.env(crate::exposition::METRICS_DIR_ENV, e.dir()),
            None => cmd.env_remove(crate::exposition::METRICS_DIR_ENV),
        };
        // Only the command's first start of each slot may fail fast on an unreachable broker.
        if slot.generation > 1 {
            cmd.env(RESPAWN_ENV, "1");
        } else {
            cmd.env_remove(RESPAWN_ENV);
        }
        if let Some(f) = &self.config.log_file {
            match (f.try_clone(), f.try_clone()) {
                (Ok(out), Ok(err)) => {
                    cmd.stdout(out).stderr(err);
                }
                (Err(e), _) | (_, Err(e)) => {
                    warn!(target: PROCESS, "Cannot share the log file with worker process {index}: {e}")
                }
            }
        }
        match cmd.spawn() {
            Ok(mut child) => {
                slot.pid = child.id();
                slot.started = Some(Instant::now());
                #[cfg(feature = "prometheus")]
                if let (Some(e), Some(pid)) = (&self.config.exposition, slot.pid) {
                    e.process_started(pid);
                }
                debug!(target: PROCESS, index, pid = ?slot.pid, "started worker process");
                let tx = self.exits_tx.clone();
                let generation = slot.generation;
                tokio::spawn(async move {
                    let status = child.wait().await;
                    let _ = tx.send(Exit {
                        index,
                        generation,
                        status,
                    });
                });
            }
            Err(e) => {
                error!(
                    target: PROCESS,
                    "Cannot start worker process {index} ({}): {e}",
                    self.config.exe.display()
                );
                slot.pid = None;
                slot.started = None;
                schedule_restart(slot);
            }
        }
    }

    /// Sends `sig` to every running worker process; with TERM, only to those not sent it yet.
    fn signal_all(&mut self, sig: Signal) {
        for slot in &mut self.slots {
            let Some(pid) = slot.pid else { continue };
            if sig == Signal::SIGTERM {
                if slot.termed {
                    continue;
                }
                slot.termed = true;
            }
            // ESRCH: it exited and its exit is on the way to us.
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    fn on_stop_signal(&mut self, name: &str) {
        self.stop_signals += 1;
        if self.stop_signals > 1 {
            warn!(target: PROCESS, "{name} received again: killing worker processes.");
            self.signal_all(Signal::SIGKILL);
            self.code = exit::KILLED;
            self.phase = Phase::Stopping;
            return;
        }
        info!(target: PROCESS, "{name} received: stopping worker processes gracefully (send it again to kill them).");
        self.stop(exit::OK);
    }

    fn stop(&mut self, code: i32) {
        self.phase = Phase::Stopping;
        self.code = code;
        for slot in &mut self.slots {
            slot.restart_at = None;
        }
        self.signal_all(Signal::SIGTERM);
    }

    fn reload(&mut self, why: &str) {
        if self.phase != Phase::Running {
            debug!(target: PROCESS, "{why}: ignored while {:?}", self.phase);
            return;
        }
        info!(target: PROCESS, "{why}: reloading worker processes.");
        self.phase = Phase::Reloading;
        self.signal_all(Signal::SIGTERM);
    }

    fn on_exit(&mut self, e: Exit) {
        let slot = &mut self.slots[e.index];
        if slot.generation != e.generation || slot.pid.is_none() {
            return;
        }
        let pid = slot.pid.take().unwrap_or_default();
        #[cfg(feature = "prometheus")]
        if let Some(x) = &self.config.exposition {
            x.process_ended(pid);
        }
        let (code, how) = match &e.status {
            Ok(s) => describe(s),
            Err(err) => (None, format!("could not be waited for ({err})")),
        };
        let index = e.index;
        match self.phase {
            Phase::Stopping | Phase::Reloading => {
                debug!(target: PROCESS, index, pid, "worker process {how}");
                if self.phase == Phase::Stopping && self.code != exit::KILLED {
                    self.code = self.code.max(code.unwrap_or(exit::KILLED));
                }
            }
            Phase::Running => {
                // A restarted process waits for the broker itself; should one still exit
                // with 3, it is restarted like any crash, not a reason to stop every worker.
                let first_start = slot.generation == 1;
                if let Some(c @ (exit::USAGE | exit::BROKER)) =
                    code.filter(|&c| c == exit::USAGE || first_start)
                {
                    error!(
                        target: PROCESS,
                        "Worker process {index} (PID {pid}) {how}: stopping (see its log lines above)."
                    );
                    self.stop(c);
                    return;
                }
                let quick = slot.started.is_some_and(|t| t.elapsed() < HEALTHY_UPTIME);
                if quick {
                    slot.quick_deaths += 1;
                } else {
                    slot.quick_deaths = 0;
                }
                let pause = schedule_restart(slot);
                warn!(
                    target: PROCESS,
                    "Worker process {index} (PID {pid}) {how} unexpectedly: restarting it{}.",
                    if pause.is_zero() {
                        String::new()
                    } else {
                        format!(" in {} ms", pause.as_millis())
                    }
                );
            }
        }
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].restart_at.is_some_and(|t| t <= now) {
                self.slots[i].restart_at = None;
                if self.phase == Phase::Running && self.slots[i].pid.is_none() {
                    self.spawn(i);
                }
            }
        }
    }

    fn on_change(&mut self, files: &[PathBuf]) {
        if self.phase == Phase::Stopping {
            return;
        }
        if self.building {
            self.rebuild.extend_from_slice(files);
            return;
        }
        let Some(w) = &self.config.watch else { return };
        let shown: Vec<String> = files
            .iter()
            .take(3)
            .map(|p| p.strip_prefix(&w.dir).unwrap_or(p).display().to_string())
            .collect();
        let more = files.len().saturating_sub(shown.len());
        info!(
            target: PROCESS,
            "Changes detected in {}{}: running `{}`.",
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() },
            w.build_command
        );
        self.building = true;
        let (command, dir, tx) = (
            w.build_command.clone(),
            w.dir.clone(),
            self.builds_tx.clone(),
        );
        tokio::spawn(async move {
            let _ = tx.send(watch::build(&command, &dir).await);
        });
    }

    fn on_build(&mut self, outcome: watch::BuildOutcome) {
        self.building = false;
        if self.phase == Phase::Stopping {
            return;
        }
        if outcome.ok {
            self.reload("Build succeeded");
        } else {
            error!(
                target: PROCESS,
                "Build failed ({}); the worker processes keep running the previous build:\n{}",
                outcome.status,
                outcome.output.trim_end()
            );
        }
        let again = std::mem::take(&mut self.rebuild);
        if !again.is_empty() {
            self.on_change(&again);
        }
    }
}

/// Sets when `slot` restarts, from how often it died young; returns the pause.
fn schedule_restart(slot: &mut Slot) -> Duration {
    let pause = match slot.quick_deaths {
        0 => Duration::ZERO,
        n => FIRST_RESTART_PAUSE
            .saturating_mul(1 << (n - 1).min(16))
            .min(MAX_RESTART_PAUSE),
    };
    slot.restart_at = Some(Instant::now() + pause);
    pause
}

/// The exit code, if any, and words for how a process ended.
fn describe(status: &ExitStatus) -> (Option<i32>, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => (Some(c), format!("exited with code {c}")),
        (None, Some(s)) => {
            let name = Signal::try_from(s).map_or_else(|_| s.to_string(), |s| s.to_string());
            (None, format!("was killed by {name}"))
        }
        (None, None) => (None, "ended".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_pauses_double_and_are_capped() {
        let mut slot = Slot::default();
        let pauses: Vec<u128> = [0, 1, 2, 3, 7, 40]
            .into_iter()
            .map(|n| {
                slot.quick_deaths = n;
                schedule_restart(&mut slot).as_millis()
            })
            .collect();
        assert_eq!(pauses, [0, 500, 1000, 2000, 30_000, 30_000]);
    }

    #[test]
    fn exit_statuses_are_described() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            describe(&ExitStatus::from_raw(3 << 8)),
            (Some(3), "exited with code 3".to_owned())
        );
        assert_eq!(
            describe(&ExitStatus::from_raw(9)),
            (None, "was killed by SIGKILL".to_owned())
        );
    }
}
