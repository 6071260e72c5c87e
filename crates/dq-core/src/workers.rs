//! What a running worker publishes about itself through its broker: [`WorkerInfo`] and the
//! [`ActorInfo`] of each actor it runs, so that tools (the `dq` admin tool, a dashboard) can tell
//! which actors the fleet runs, on which queues, and where.
//!
//! This is dq's own record, not part of Dramatiq's wire format: brokers keep it under names no
//! Dramatiq process reads or writes, and Python workers publish none.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::actor::Actor;

/// One worker process, as it publishes itself with
/// [`Broker::publish_worker`](crate::Broker::publish_worker) every few seconds while it runs.
///
/// Its JSON form (what [`encode`](WorkerInfo::encode) writes and the brokers store) has these
/// keys; times are ms since the epoch, by the worker's clock:
///
/// ```json
/// {"worker_id":"0b6d…","hostname":"web-1","pid":4101,"started_at":1714557600000,
///  "last_seen":1714557610000,"version":"0.1.0","threads":8,"queues":["default","emails"],
///  "actors":[{"actor_name":"send_email","queue_name":"emails","priority":0,
///             "options":{"max_retries":3}}]}
/// ```
///
/// Decoding is lenient: a missing key takes its default and an unknown key is ignored, so
/// workers of different dq versions can share a registry.
///
/// ```
/// use dq_core::{ActorInfo, WorkerInfo};
///
/// let info = WorkerInfo {
///     worker_id: "w-1".into(),
///     hostname: "web-1".into(),
///     pid: 4101,
///     queues: vec!["emails".into()],
///     actors: vec![ActorInfo {
///         actor_name: "send_email".into(),
///         queue_name: "emails".into(),
///         ..Default::default()
///     }],
///     ..Default::default()
/// };
/// let back = WorkerInfo::decode(&info.encode()).unwrap();
/// assert_eq!(back, info);
/// assert_eq!(back.display_name(), "web-1:4101");
/// assert_eq!(back.actor("send_email").unwrap().queue_name, "emails");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerInfo {
    /// A unique id of this worker (a UUID4, new at every start).
    pub worker_id: String,
    /// The host the worker process runs on.
    pub hostname: String,
    /// Its process id on that host.
    pub pid: u32,
    /// When the worker started (ms since the epoch).
    pub started_at: i64,
    /// When the worker last published this record (ms since the epoch).
    pub last_seen: i64,
    /// The dq version of the worker.
    pub version: String,
    /// How many messages it runs at once.
    pub threads: usize,
    /// The canonical queues it consumes, sorted.
    pub queues: Vec<String>,
    /// The actors it runs: those whose queue it consumes.
    pub actors: Vec<ActorInfo>,
}

impl WorkerInfo {
    /// The record as the brokers store it: compact JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a WorkerInfo always serializes")
    }

    /// Reads a record [`encode`](WorkerInfo::encode) wrote (or a later dq version wrote).
    pub fn decode(body: &[u8]) -> Result<WorkerInfo, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// How to name the process to a person: `hostname:pid`, or the worker id when the record
    /// has no hostname.
    pub fn display_name(&self) -> String {
        if self.hostname.is_empty() {
            self.worker_id.clone()
        } else {
            format!("{}:{}", self.hostname, self.pid)
        }
    }

    /// The order [`Broker::workers`](crate::Broker::workers) lists workers in: by hostname,
    /// then pid, then worker id. For `list.sort_by(WorkerInfo::listing_order)`.
    pub fn listing_order(&self, other: &WorkerInfo) -> std::cmp::Ordering {
        (&self.hostname, self.pid, &self.worker_id).cmp(&(
            &other.hostname,
            other.pid,
            &other.worker_id,
        ))
    }

    /// The actor named `name`, if this worker runs it.
    pub fn actor(&self, name: &str) -> Option<&ActorInfo> {
        self.actors.iter().find(|a| a.actor_name == name)
    }
}

/// One actor of a [`WorkerInfo`]: what a sender needs to address its messages, and the options
/// it declares.
///
/// ```
/// use dq_core::{Actor, ActorInfo, ActorOptions, Invocation};
///
/// let options = ActorOptions {
///     queue_name: "emails".into(),
///     max_retries: Some(Some(3)),
///     time_limit: Some(60_000),
///     ..Default::default()
/// };
/// let actor = Actor::new("send_email", options, |_, _| {
///     Ok(Invocation::Sync(Box::new(|| Ok(serde_json::Value::Null))))
/// });
/// let info = ActorInfo::from_actor(&actor);
/// assert_eq!(info.queue_name, "emails");
/// assert_eq!(info.options["max_retries"], 3);
/// assert_eq!(info.options["time_limit"], 60_000);
/// assert!(!info.options.contains_key("max_age")); // not set: not published
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActorInfo {
    /// The actor's name, as messages name it.
    pub actor_name: String,
    /// The canonical queue its messages go to.
    pub queue_name: String,
    /// Its worker-local priority (lower runs sooner). It is not sent with messages: a sender
    /// has nothing to do with it, but it tells how the worker orders what it prefetched.
    pub priority: i32,
    /// The options the actor sets, under Dramatiq's names (`max_retries`, `min_backoff`,
    /// `max_backoff`, `max_age`, `time_limit`, `store_results`, `result_ttl`,
    /// `notify_shutdown`, `throws`, `on_retry_exhausted`, and those middleware declared).
    /// An option the actor leaves to its middleware's default is absent; `max_retries: null`
    /// means unlimited retries.
    pub options: Map<String, Value>,
}

impl ActorInfo {
    /// What `actor` publishes.
    pub fn from_actor(actor: &Actor) -> ActorInfo {
        let o = &actor.options;
        let mut options = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(v) = value {
                options.insert(key.to_owned(), v);
            }
        };
        put(
            "max_retries",
            o.max_retries.map(|m| m.map_or(Value::Null, Value::from)),
        );
        put("min_backoff", o.min_backoff.map(Value::from));
        put("max_backoff", o.max_backoff.map(Value::from));
        put("max_age", o.max_age.map(Value::from));
        put("time_limit", o.time_limit.map(Value::from));
        put("store_results", o.store_results.map(Value::from));
        put("result_ttl", o.result_ttl.map(Value::from));
        put("notify_shutdown", o.notify_shutdown.map(Value::from));
        put(
            "throws",
            (!o.throws.is_empty()).then(|| Value::from(o.throws.clone())),
        );
        put(
            "on_retry_exhausted",
            o.on_retry_exhausted.clone().map(Value::from),
        );
        for (k, v) in &o.extra {
            options.entry(k.clone()).or_insert_with(|| v.clone());
        }
        ActorInfo {
            actor_name: actor.name.clone(),
            queue_name: o.queue_name.clone(),
            priority: o.priority,
            options,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_lenient() {
        let info = WorkerInfo::decode(br#"{"worker_id":"w","future_key":1}"#).unwrap();
        assert_eq!(info.worker_id, "w");
        assert!(info.actors.is_empty());
        assert_eq!(info.display_name(), "w");
        assert!(WorkerInfo::decode(b"[1]").is_err());
    }

    #[test]
    fn unlimited_retries_publish_as_null() {
        let options = crate::ActorOptions {
            max_retries: Some(None),
            throws: vec!["ValueError".into()],
            ..Default::default()
        };
        let actor = Actor::new("a", options, |_, _| {
            Ok(crate::Invocation::Sync(Box::new(|| Ok(Value::Null))))
        });
        let info = ActorInfo::from_actor(&actor);
        assert_eq!(
            serde_json::to_string(&info.options).unwrap(),
            r#"{"max_retries":null,"throws":["ValueError"]}"#
        );
    }
}
