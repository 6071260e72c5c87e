//! One Prometheus endpoint per worker command (feature `prometheus`): the worker processes'
//! numbers added up by the main process, as Python Dramatiq's multiprocess mode does, plus `dq_`
//! gauges for autoscaling.
//!
//! The channel: the main process makes a private directory (mode 0700) and names it to each
//! worker process in [`METRICS_DIR_ENV`]. A worker process installs a [`Recorder`], adds the
//! `Prometheus` middleware to its app, and writes its [`Snapshot`] to `<dir>/<pid>.json` every
//! [`SNAPSHOT_INTERVAL`] and once more as it stops (atomically: a temporary file, then a
//! rename). A scrape adds up every file: gauges only from the processes that run, counters and
//! histograms from all of them. When a worker process ends, the main process folds its
//! counters and histograms into `ended.json` and deletes its file, so a restarted process
//! starts from zero without resetting or doubling the totals, and the directory does not grow.
//!
//! What a SIGKILLed worker process loses: what it counted since its last snapshot, at most
//! [`SNAPSHOT_INTERVAL`] of work. Its gauges go away with it.

use std::collections::HashSet;
use std::fs::DirBuilder;
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dq_core::Broker;
use dq_metrics::{names, Family, Kind, Recorder, Snapshot, Value};
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use crate::logging::PROCESS;
use crate::Cli;

/// Names the directory a worker process writes its snapshots to; set by the main process.
pub(crate) const METRICS_DIR_ENV: &str = "DQ_METRICS_DIR";

/// How often a worker process writes its snapshot: the most a SIGKILL can lose.
pub(crate) const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// How long a scrape waits for the broker's queue counts before serving without them.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// The file the counters and histograms of ended worker processes are folded into.
const ENDED: &str = "ended.json";

/// The main process's side: the directory, the running worker processes, the broker for queue
/// depths.
pub(crate) struct Exposition {
    dir: PathBuf,
    live: Mutex<HashSet<u32>>,
    queues: Vec<String>,
    cli: Cli,
    broker_url: Option<String>,
    namespace: Option<String>,
    broker: OnceCell<Arc<dyn Broker>>,
}

impl Exposition {
    /// Makes the private directory and binds `host:port`, before any worker process starts, so
    /// that a port in use stops the command with a clear message.
    pub(crate) fn prepare(
        cli: Cli,
        args: &crate::args::WorkerArgs,
    ) -> Result<(Exposition, TcpListener), String> {
        let address = format!("{}:{}", args.prometheus_host, args.prometheus_port);
        let listener = TcpListener::bind(&address)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| {
                format!(
                    "Cannot serve Prometheus metrics on {address}: {e}. Choose another address with \
                     --prometheus-host / --prometheus-port (dramatiq_prom_host / dramatiq_prom_port), \
                     or turn the endpoint off with --no-prometheus."
                )
            })?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("dq-metrics-{}-{nanos:08x}", std::process::id()));
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("Cannot make the metrics directory {}: {e}", dir.display()))?;
        let mut queues: Vec<String> = if args.queues.is_empty() {
            dq_core::Registry::linked()
                .map(|r| r.queues())
                .unwrap_or_default()
        } else {
            args.queues
                .iter()
                .map(|q| dq_core::base_queue_name(q).to_owned())
                .collect()
        };
        queues.sort();
        queues.dedup();
        Ok((
            Exposition {
                dir,
                live: Mutex::new(HashSet::new()),
                queues,
                cli,
                broker_url: args.broker_url.clone(),
                namespace: args.namespace.clone(),
                broker: OnceCell::new(),
            },
            listener,
        ))
    }

    /// The directory worker processes write to.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Serves every GET (any path, as Python's server does) on `listener` until the runtime
    /// ends.
    pub(crate) fn serve(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(target: PROCESS, "Serving Prometheus metrics on http://{}/metrics.", listener.local_addr()?);
        let me = self.clone();
        let router = axum::Router::new().fallback(move || {
            let me = me.clone();
            async move {
                let body = me.render().await;
                (
                    [(axum::http::header::CONTENT_TYPE, dq_metrics::CONTENT_TYPE)],
                    body,
                )
            }
        });
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                warn!(target: PROCESS, "The Prometheus endpoint stopped: {e}");
            }
        });
        Ok(())
    }

    /// Worker process `pid` started.
    pub(crate) fn process_started(&self, pid: u32) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pid);
    }

    /// Worker process `pid` ended: its counters and histograms join those of ended processes.
    pub(crate) fn process_ended(&self, pid: u32) {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
        let path = self.dir.join(format!("{pid}.json"));
        let Ok(snapshot) = Snapshot::read_file(&path) else {
            // It died before its first snapshot: nothing to keep.
            return;
        };
        let ended_path = self.dir.join(ENDED);
        let mut ended = Snapshot::read_file(&ended_path).unwrap_or_default();
        ended.merge(&snapshot, false);
        match ended.write_file(&ended_path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            // Its file stays, and is still counted (without gauges) on every scrape.
            Err(e) => {
                warn!(target: PROCESS, "Cannot keep the metrics of worker process {pid}: {}", dq_core::ErrorChain(&e))
            }
        }
    }

    /// Removes the directory, as the command exits.
    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Every worker process's numbers added up, the `dq_` gauges, as text.
    async fn render(&self) -> String {
        let mut total = self.collect();
        self.add_utilisation(&mut total);
        self.add_queue_depths(&mut total).await;
        total.render()
    }

    fn collect(&self) -> Snapshot {
        let live = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut total = Snapshot::default();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return total;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let running = stem.parse::<u32>().is_ok_and(|pid| live.contains(&pid));
            match Snapshot::read_file(&path) {
                Ok(s) => total.merge(&s, running),
                Err(e) => {
                    debug!(target: PROCESS, error = %dq_core::ErrorChain(&e), "skipping a metrics snapshot")
                }
            }
        }
        total
    }

    /// `dq_worker_threads_busy`: the running messages of the running processes.
    fn add_utilisation(&self, total: &mut Snapshot) {
        let busy: f64 = total
            .families
            .get(names::MESSAGES_INPROGRESS)
            .map_or(0.0, |f| {
                f.series
                    .iter()
                    .map(|(_, v)| match v {
                        Value::Scalar(x) => *x,
                        Value::Histogram(_) => 0.0,
                    })
                    .sum()
            });
        total.families.insert(
            names::WORKER_THREADS_BUSY.to_owned(),
            Family {
                kind: Kind::Gauge,
                help: "The number of worker threads running a message.".to_owned(),
                series: vec![(Vec::new(), Value::Scalar(busy))],
            },
        );
        total
            .families
            .entry(names::WORKER_THREADS.to_owned())
            .or_insert_with(|| Family {
                kind: Kind::Gauge,
                help: "The number of worker threads (message slots).".to_owned(),
                series: vec![(Vec::new(), Value::Scalar(0.0))],
            });
    }

    /// `dq_queue_{ready,delayed,dead}_messages` per queue, from the broker's counts; left out
    /// when the broker does not answer in time.
    async fn add_queue_depths(&self, total: &mut Snapshot) {
        if self.queues.is_empty() {
            return;
        }
        let counts = tokio::time::timeout(STATS_TIMEOUT, async {
            let broker = self
                .broker
                .get_or_try_init(|| {
                    self.cli
                        .choose_broker(self.broker_url.as_deref(), self.namespace.as_deref())
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut counts = Vec::with_capacity(self.queues.len());
            for q in &self.queues {
                let s = broker
                    .stats(q)
                    .await
                    .map_err(|e| dq_core::ErrorChain(&e).to_string())?;
                counts.push((q.clone(), s));
            }
            Ok::<_, String>(counts)
        })
        .await;
        let counts = match counts {
            Ok(Ok(c)) => c,
            Ok(Err(why)) => {
                warn!(target: PROCESS, "Queue depths are left out of this scrape: {why}");
                return;
            }
            Err(_) => {
                warn!(target: PROCESS, "Queue depths are left out of this scrape: the broker did not answer within {} s", STATS_TIMEOUT.as_secs());
                return;
            }
        };
        for (name, help, pick) in [
            (
                names::QUEUE_READY,
                "The number of messages waiting on the queue.",
                (|s: &dq_core::QueueStats| s.ready) as fn(&dq_core::QueueStats) -> u64,
            ),
            (
                names::QUEUE_DELAYED,
                "The number of messages waiting on the queue's delay queue.",
                |s| s.delayed,
            ),
            (
                names::QUEUE_DEAD,
                "The number of messages in the queue's dead-letter queue.",
                |s| s.dead,
            ),
        ] {
            total.families.insert(
                name.to_owned(),
                Family {
                    kind: Kind::Gauge,
                    help: help.to_owned(),
                    series: counts
                        .iter()
                        .map(|(q, s)| {
                            (
                                vec![("queue_name".to_owned(), q.clone())],
                                Value::Scalar(pick(s) as f64),
                            )
                        })
                        .collect(),
                },
            );
        }
    }
}

/// A worker process's side: the recorder it installed, and where its snapshots go.
pub(crate) struct Reporter {
    recorder: Recorder,
    path: PathBuf,
}

impl Reporter {
    /// Installs the recorder if the main process serves metrics (it named a directory).
    pub(crate) fn from_env(threads: usize) -> Option<Reporter> {
        let dir = PathBuf::from(std::env::var_os(METRICS_DIR_ENV)?);
        let recorder = Recorder::default();
        if let Err(e) = recorder.clone().install() {
            warn!(target: PROCESS, "Prometheus metrics are off in this worker process: {e}");
            return None;
        }
        metrics::gauge!(names::WORKER_THREADS).set(threads as f64);
        Some(Reporter {
            recorder,
            path: dir.join(format!("{}.json", std::process::id())),
        })
    }

    /// Writes the snapshot now.
    pub(crate) fn write(&self) {
        if let Err(e) = self.recorder.snapshot().write_file(&self.path) {
            debug!(target: PROCESS, error = %dq_core::ErrorChain(&e), "cannot write the metrics snapshot");
        }
    }

    /// Writes the snapshot every [`SNAPSHOT_INTERVAL`] until the runtime ends.
    pub(crate) fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SNAPSHOT_INTERVAL);
            loop {
                tick.tick().await;
                me.write();
            }
        });
    }
}
