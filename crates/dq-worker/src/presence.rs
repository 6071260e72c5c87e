//! The worker's record in its broker's worker registry ([`WorkerInfo`]): published once its
//! queues are declared, refreshed every `registry_interval`, withdrawn when it stops, so that
//! `dq send` and `dq actors` know which actors run where. A worker that dies stops refreshing
//! and its record expires after `registry_ttl`.
//!
//! The record is a convenience for operators, never needed to process messages: a failure to
//! publish is a DEBUG line (an outage is already reported once by the worker's consumers) and
//! the next refresh tries again.

use std::sync::Arc;
use std::time::Duration;

use dq_core::{now_ms, ActorInfo, App, Broker, WorkerInfo};
use tokio::sync::watch;
use tracing::debug;

/// How long one publish or withdrawal may take before it is given up (until the next refresh,
/// or for good at stop, when the record is left to expire): a broker that slow is away.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What this worker publishes: who it is, the queues it consumes and the actors on them.
pub(crate) fn worker_info(
    app: &App,
    worker_id: &str,
    queues: &[String],
    threads: usize,
) -> WorkerInfo {
    let mut actors: Vec<ActorInfo> = app
        .registry()
        .iter()
        .filter(|a| queues.iter().any(|q| q == a.queue_name()))
        .map(|a| ActorInfo::from_actor(a))
        .collect();
    actors.sort_by(|a, b| a.actor_name.cmp(&b.actor_name));
    let now = now_ms();
    WorkerInfo {
        worker_id: worker_id.to_owned(),
        hostname: hostname(),
        pid: std::process::id(),
        started_at: now,
        last_seen: now,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        threads,
        queues: queues.to_vec(),
        actors,
    }
}

/// The host's name, as the kernel has it; empty when it cannot be read (the record then names
/// the worker by its id).
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Publishes `info` with a fresh `last_seen`; failures are DEBUG lines.
pub(crate) async fn publish(broker: &dyn Broker, info: &mut WorkerInfo, ttl: Duration) {
    info.last_seen = now_ms();
    match tokio::time::timeout(CALL_TIMEOUT, broker.publish_worker(info, ttl)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "could not publish this worker to the registry"),
        Err(_) => debug!("publishing this worker to the registry timed out"),
    }
}

/// Publishes `info` every `every` until `stop` turns true. The first publish is the caller's.
pub(crate) async fn refresh_loop(
    broker: Arc<dyn Broker>,
    mut info: WorkerInfo,
    every: Duration,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An interval's first tick is immediate: the record was just published.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // A publish waiting on a broker that is away must not hold up the worker's stop.
        tokio::select! {
            _ = publish(&*broker, &mut info, ttl) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Removes this worker's record; failures are DEBUG lines (the record then expires).
pub(crate) async fn withdraw(broker: &dyn Broker, worker_id: &str) {
    match tokio::time::timeout(CALL_TIMEOUT, broker.withdraw_worker(worker_id)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            debug!(error = %e, "could not withdraw this worker from the registry; it expires instead")
        }
        Err(_) => debug!("withdrawing this worker from the registry timed out; it expires instead"),
    }
}
