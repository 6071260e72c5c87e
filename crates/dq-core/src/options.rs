//! Message `options` with typed accessors, and per-actor options with Dramatiq's defaults.

use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::message::Message;

/// The `options` object of a message. It derefs to a JSON map, so any key can be read or written;
/// the typed accessors below cover every key Dramatiq 2.2.1 and its middleware use.
///
/// ```
/// use dq_core::Options;
///
/// let mut o = Options::default();
/// o.set_retries(2);
/// o.set_max_retries(None); // explicit null: retry forever
/// assert_eq!(o.retries(), 2);
/// assert_eq!(o.max_retries(), Some(None));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Options(pub Map<String, Value>);

impl Deref for Options {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl DerefMut for Options {
    fn deref_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.0
    }
}

impl From<Map<String, Value>> for Options {
    fn from(m: Map<String, Value>) -> Options {
        Options(m)
    }
}

/// Reads an integer option, accepting floats (Python may send `1.5e3`) by truncation.
fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    }
}

impl Options {
    /// An integer option, if present and numeric.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(as_i64)
    }

    /// A string option, if present and a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    /// A boolean option, if present and a bool.
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(Value::as_bool)
    }

    /// Key-present lookup of a nullable integer: `None` when absent, `Some(None)` for an explicit
    /// `null`, `Some(Some(n))` for a number (Dramatiq's Retries reads `max_retries` this way).
    pub fn get_nullable_i64(&self, key: &str) -> Option<Option<i64>> {
        self.0.get(key).map(as_i64)
    }

    /// `redis_message_id`: the Redis broker's per-enqueue id.
    pub fn redis_message_id(&self) -> Option<&str> {
        self.get_str("redis_message_id")
    }
    /// Sets `redis_message_id`.
    pub fn set_redis_message_id(&mut self, id: String) {
        self.0.insert("redis_message_id".into(), Value::String(id));
    }

    /// `eta` in ms since the epoch. As in Dramatiq 2.x, a present but non-numeric `eta` means
    /// "now" and `null` means no eta.
    pub fn eta(&self) -> Option<i64> {
        match self.0.get("eta") {
            None | Some(Value::Null) => None,
            Some(v) => Some(as_i64(v).unwrap_or_else(crate::now_ms)),
        }
    }
    /// Sets `eta`.
    pub fn set_eta(&mut self, eta_ms: i64) {
        self.0.insert("eta".into(), Value::from(eta_ms));
    }
    /// Removes `eta` (when a delayed message moves back to its canonical queue).
    pub fn remove_eta(&mut self) {
        self.0.shift_remove("eta");
    }

    /// `retries`: how many times the message has failed so far (0 when absent).
    pub fn retries(&self) -> u32 {
        self.get_i64("retries").unwrap_or(0).max(0) as u32
    }
    /// Sets `retries`.
    pub fn set_retries(&mut self, n: u32) {
        self.0.insert("retries".into(), Value::from(n));
    }

    /// `max_retries`, key-present: `Some(None)` is an explicit null (unlimited).
    pub fn max_retries(&self) -> Option<Option<i64>> {
        self.get_nullable_i64("max_retries")
    }
    /// Sets `max_retries`; `None` writes `null` (unlimited).
    pub fn set_max_retries(&mut self, n: Option<u32>) {
        self.0.insert(
            "max_retries".into(),
            n.map(Value::from).unwrap_or(Value::Null),
        );
    }

    /// `min_backoff` in ms, key-present.
    pub fn min_backoff(&self) -> Option<Option<i64>> {
        self.get_nullable_i64("min_backoff")
    }
    /// `max_backoff` in ms, key-present.
    pub fn max_backoff(&self) -> Option<Option<i64>> {
        self.get_nullable_i64("max_backoff")
    }
    /// `max_age` in ms (0 or null count as unset, as Dramatiq's `or` lookup does).
    pub fn max_age(&self) -> Option<i64> {
        self.get_i64("max_age").filter(|v| *v != 0)
    }
    /// `time_limit` in ms (0 or null count as unset).
    pub fn time_limit(&self) -> Option<i64> {
        self.get_i64("time_limit").filter(|v| *v != 0)
    }
    /// `notify_shutdown` (null counts as unset).
    pub fn notify_shutdown(&self) -> Option<bool> {
        self.get_bool("notify_shutdown")
    }
    /// `on_success`: the name of the actor to call with `[message_dict, result]`.
    pub fn on_success(&self) -> Option<&str> {
        self.get_str("on_success")
    }
    /// `on_failure`: the name of the actor to call with `[message_dict, {type, message}]`.
    pub fn on_failure(&self) -> Option<&str> {
        self.get_str("on_failure")
    }
    /// `on_retry_exhausted`: the actor told when retries run out.
    pub fn on_retry_exhausted(&self) -> Option<&str> {
        self.get_str("on_retry_exhausted")
    }
    /// `pipe_target`: the next message of a pipeline, if any.
    pub fn pipe_target(&self) -> Option<&Value> {
        self.0.get("pipe_target").filter(|v| v.is_object())
    }
    /// Sets `pipe_target` to the full message object of the next stage.
    pub fn set_pipe_target(&mut self, next: &Message) {
        self.0.insert("pipe_target".into(), next.to_value());
    }
    /// `pipe_ignore`: do not pass the previous stage's result to this message.
    pub fn pipe_ignore(&self) -> Option<bool> {
        self.get_bool("pipe_ignore")
    }
    /// `delay` in ms, read by Pipelines when enqueueing the next stage.
    pub fn delay(&self) -> Option<i64> {
        self.get_i64("delay")
    }
    /// `store_results`, key-present.
    pub fn store_results(&self) -> Option<bool> {
        self.get_bool("store_results")
    }
    /// `result_ttl` in ms.
    pub fn result_ttl(&self) -> Option<i64> {
        self.get_i64("result_ttl")
    }
    /// `group_completion_uuid`, set on the children of a group with completion callbacks.
    pub fn group_completion_uuid(&self) -> Option<&str> {
        self.get_str("group_completion_uuid")
    }
    /// `group_completion_callbacks`: message objects to enqueue when the group completes.
    pub fn group_completion_callbacks(&self) -> Option<&Vec<Value>> {
        self.0
            .get("group_completion_callbacks")
            .and_then(Value::as_array)
    }
    /// `broker_priority`: higher is fetched sooner on a broker with a `max_priority` (RabbitMQ's
    /// AMQP priority, dq's priority set on Redis); clamped to 0..=255.
    pub fn broker_priority(&self) -> Option<u8> {
        self.get_i64("broker_priority")
            .map(|p| p.clamp(0, 255) as u8)
    }
}

/// Per-actor settings, with Dramatiq's defaults. Absent (`None`) fields fall back to the
/// middleware's defaults; `extra` holds options a middleware declared through
/// [`Middleware::actor_options`](crate::Middleware::actor_options).
///
/// ```
/// use dq_core::ActorOptions;
///
/// let o = ActorOptions::default();
/// assert_eq!(o.queue_name, "default");
/// assert_eq!(o.priority, 0);
/// assert_eq!(o.max_retries, None); // not set: Retries uses 20
/// ```
#[derive(Clone, Debug)]
pub struct ActorOptions {
    /// The queue the actor's messages go to (default `"default"`).
    pub queue_name: String,
    /// Worker-local priority: lower runs sooner (default 0).
    pub priority: i32,
    /// The default `broker_priority` of the actor's messages (higher is fetched sooner, on
    /// RabbitMQ with `max_priority` and on Redis with `max_priority`); a message's own option
    /// overrides it. `#[dq::actor(broker_priority = 5)]` sets it on the messages it builds.
    pub broker_priority: Option<u8>,
    /// Retries allowed; `Some(None)` means unlimited, `None` means the middleware default (20).
    pub max_retries: Option<Option<u32>>,
    /// Minimum backoff in ms (default 15 000).
    pub min_backoff: Option<u64>,
    /// Maximum backoff in ms (default 7 days).
    pub max_backoff: Option<u64>,
    /// Messages older than this (ms since `message_timestamp`) are dead-lettered.
    pub max_age: Option<u64>,
    /// Time limit in ms (default 600 000).
    pub time_limit: Option<u64>,
    /// Store return values with the Results middleware.
    pub store_results: Option<bool>,
    /// How long stored results live, in ms.
    pub result_ttl: Option<u64>,
    /// Tell the actor at worker shutdown (its message fails with `Shutdown` and is retried).
    pub notify_shutdown: Option<bool>,
    /// Error type names that fail the message at once instead of retrying.
    pub throws: Vec<String>,
    /// Decides whether to retry: `(retries_so_far, error) -> retry?`. Replaces `max_retries`.
    pub retry_when: Option<fn(u32, &crate::ActorError) -> bool>,
    /// Actor called when retries are exhausted.
    pub on_retry_exhausted: Option<String>,
    /// Options declared by middleware, by name.
    pub extra: Map<String, Value>,
}

impl ActorOptions {
    /// Whether an error of type `type_name` is one these actor options `throw` for the message with
    /// `options`: the message's `throws` option (a type name or a list of them) when it is set,
    /// else the actor's list. A configured name matches by its last path segment, so
    /// `my_app::errors::BadInput` and `BadInput` are the same. Retries fails such a message at
    /// once; error reporters leave it out, as Dramatiq's Sentry integration does.
    ///
    /// ```
    /// # use dq_core::{ActorOptions, Options};
    /// let mut actor = ActorOptions::default();
    /// actor.throws = vec!["my_app::BadInput".into()];
    /// assert!(actor.throws_type(&Options::default(), "BadInput"));
    /// assert!(!actor.throws_type(&Options::default(), "Timeout"));
    /// ```
    pub fn throws_type(&self, options: &Options, type_name: &str) -> bool {
        let matches = |name: &str| {
            let base = name.split('<').next().unwrap_or(name);
            base.rsplit("::").next().unwrap_or(base) == type_name
        };
        match options.get("throws") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => matches(s),
            Some(serde_json::Value::Array(names)) if !names.is_empty() => names
                .iter()
                .filter_map(serde_json::Value::as_str)
                .any(matches),
            // Any other truthy value names no type; a falsy one falls back to the actor's.
            Some(v) if truthy(v) => false,
            _ => self.throws.iter().any(|s| matches(s)),
        }
    }
}

impl Default for ActorOptions {
    fn default() -> ActorOptions {
        ActorOptions {
            queue_name: "default".to_owned(),
            priority: 0,
            broker_priority: None,
            max_retries: None,
            min_backoff: None,
            max_backoff: None,
            max_age: None,
            time_limit: None,
            store_results: None,
            result_ttl: None,
            notify_shutdown: None,
            throws: Vec::new(),
            retry_when: None,
            on_retry_exhausted: None,
            extra: Map::new(),
        }
    }
}

/// The names of the options `ActorOptions` knows natively.
pub const BUILTIN_ACTOR_OPTIONS: &[&str] = &[
    "actor_name",
    "queue_name",
    "priority",
    "broker_priority",
    "max_retries",
    "min_backoff",
    "max_backoff",
    "max_age",
    "time_limit",
    "store_results",
    "result_ttl",
    "notify_shutdown",
    "throws",
    "retry_when",
    "on_retry_exhausted",
    // Unique messages (`App::send` reads them; dq_core::UNIQUE_ACTOR_OPTIONS).
    "unique_for",
    "unique_until",
    "debounce",
    "throttle",
];

/// Python's truthiness of a JSON value.
fn truthy(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eta_semantics() {
        let mut o = Options::default();
        assert_eq!(o.eta(), None);
        o.insert("eta".into(), Value::Null);
        assert_eq!(o.eta(), None);
        o.insert("eta".into(), json!(1795397619159.0));
        assert_eq!(o.eta(), Some(1795397619159));
        o.insert("eta".into(), json!("soon"));
        assert!(o.eta().unwrap() > 0);
        o.remove_eta();
        assert_eq!(o.eta(), None);
    }

    #[test]
    fn or_lookups_treat_zero_as_unset() {
        let mut o = Options::default();
        o.insert("max_age".into(), json!(0));
        o.insert("time_limit".into(), Value::Null);
        assert_eq!(o.max_age(), None);
        assert_eq!(o.time_limit(), None);
    }

    #[test]
    fn key_present_lookups() {
        let mut o = Options::default();
        assert_eq!(o.max_retries(), None);
        o.set_max_retries(Some(3));
        assert_eq!(o.max_retries(), Some(Some(3)));
    }
}
