//! `SendOptions`: per-message settings for `send_with_options` and `message_with_options`.

use std::time::Duration;

use serde_json::Value;

use crate::options::Options;

/// Per-message settings: a delay, and options that override the actor's (`max_retries`,
/// `time_limit`, callbacks, ...). Any key is allowed; keys unknown to dq pass through to the wire.
///
/// ```
/// use std::time::Duration;
/// use dq_core::SendOptions;
///
/// let opts = SendOptions::new()
///     .delay(Duration::from_secs(10))
///     .max_retries(3)
///     .on_success("print_result")
///     .on_failure("print_error");
/// assert_eq!(opts.options.max_retries(), Some(Some(3)));
/// assert_eq!(opts.options.on_success(), Some("print_result"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct SendOptions {
    /// Enqueue after this delay (through the delay queue).
    pub delay: Option<Duration>,
    /// Options merged into the message's `options`.
    pub options: Options,
}

impl SendOptions {
    /// No delay, no options.
    pub fn new() -> SendOptions {
        SendOptions::default()
    }

    /// Delays the message.
    pub fn delay(mut self, delay: Duration) -> SendOptions {
        self.delay = Some(delay);
        self
    }

    /// Sets any option.
    pub fn option(mut self, key: &str, value: impl Into<Value>) -> SendOptions {
        self.options.insert(key.to_owned(), value.into());
        self
    }

    /// `max_retries` for this message.
    pub fn max_retries(self, n: u32) -> SendOptions {
        self.option("max_retries", n)
    }

    /// Retry this message forever (`max_retries: null`).
    pub fn unlimited_retries(self) -> SendOptions {
        self.option("max_retries", Value::Null)
    }

    /// `min_backoff` for this message.
    pub fn min_backoff(self, d: Duration) -> SendOptions {
        self.option("min_backoff", d.as_millis() as u64)
    }

    /// `max_backoff` for this message.
    pub fn max_backoff(self, d: Duration) -> SendOptions {
        self.option("max_backoff", d.as_millis() as u64)
    }

    /// `max_age` for this message.
    pub fn max_age(self, d: Duration) -> SendOptions {
        self.option("max_age", d.as_millis() as u64)
    }

    /// `time_limit` for this message.
    pub fn time_limit(self, d: Duration) -> SendOptions {
        self.option("time_limit", d.as_millis() as u64)
    }

    /// `on_success`: actor called with `[message_dict, result]` when this message succeeds.
    pub fn on_success(self, actor_name: &str) -> SendOptions {
        self.option("on_success", actor_name)
    }

    /// `on_failure`: actor called with `[message_dict, {"type", "message"}]` on every failure.
    pub fn on_failure(self, actor_name: &str) -> SendOptions {
        self.option("on_failure", actor_name)
    }

    /// `on_retry_exhausted`: actor told when retries run out.
    pub fn on_retry_exhausted(self, actor_name: &str) -> SendOptions {
        self.option("on_retry_exhausted", actor_name)
    }

    /// `pipe_ignore`: in a pipeline, do not append the previous result to this message's args.
    pub fn pipe_ignore(self, yes: bool) -> SendOptions {
        self.option("pipe_ignore", yes)
    }

    /// `store_results` for this message.
    pub fn store_results(self, yes: bool) -> SendOptions {
        self.option("store_results", yes)
    }

    /// `notify_shutdown` for this message.
    pub fn notify_shutdown(self, yes: bool) -> SendOptions {
        self.option("notify_shutdown", yes)
    }

    /// `broker_priority`: higher is fetched sooner, across the whole queue, on a broker with a
    /// `max_priority` (RabbitMQ's AMQP priority; on Redis dq's priority set; the stub's
    /// `with_max_priority`). Values above the broker's `max_priority` count as it; without one,
    /// the option is carried and ignored. Overrides the actor's `broker_priority`.
    ///
    /// ```
    /// let opts = dq_core::SendOptions::default().broker_priority(9);
    /// assert_eq!(opts.options.broker_priority(), Some(9));
    /// ```
    pub fn broker_priority(self, p: u8) -> SendOptions {
        self.option("broker_priority", p)
    }

    /// Makes this a unique send: while a message of the same key holds its lock (at most
    /// `ttl`), another send is refused, and [`Sent::outcome`](crate::Sent::outcome) says
    /// [`Duplicate`](crate::SendOutcome::Duplicate) with the holder's id. The key defaults to
    /// a digest of the queue, actor and arguments ([`unique_key`](SendOptions::unique_key)
    /// sets one); the lock is released when the message finishes, unless
    /// [`unique_until`](SendOptions::unique_until) says otherwise. The TTL is mandatory so
    /// that a lock whose worker died expires. Needs a broker that can lock atomically with
    /// the enqueue (Redis, the stub broker).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dq_core::{SendOptions, UniqueUntil};
    ///
    /// let opts = SendOptions::new()
    ///     .unique_for(Duration::from_secs(600))
    ///     .unique_until(UniqueUntil::Started)
    ///     .unique_key("report:42");
    /// assert_eq!(opts.options.get_str("dq_unique_key"), Some("report:42"));
    /// ```
    pub fn unique_for(self, ttl: Duration) -> SendOptions {
        self.option(
            crate::UNIQUE_MODE_OPTION,
            crate::UniqueMode::Unique.as_str(),
        )
        .option(crate::UNIQUE_TTL_OPTION, millis(ttl))
    }

    /// When a unique message's lock is released before its TTL: when it starts, when it
    /// finishes (the default), or only by the TTL.
    pub fn unique_until(self, until: crate::UniqueUntil) -> SendOptions {
        self.option(crate::UNIQUE_UNTIL_OPTION, until.as_str())
    }

    /// The key of a unique, debounced or throttled send, instead of the digest of its call.
    /// Keys are per queue.
    pub fn unique_key(self, key: impl Into<String>) -> SendOptions {
        self.option(crate::UNIQUE_KEY_OPTION, key.into())
    }

    /// At most one message of this key per `window`: a send inside the window is refused
    /// ([`Duplicate`](crate::SendOutcome::Duplicate)), whatever became of the first one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dq_core::SendOptions;
    ///
    /// let opts = SendOptions::new().throttle(Duration::from_secs(60)).unique_key("user:7");
    /// assert_eq!(opts.options.get_str("dq_unique_mode"), Some("throttle"));
    /// ```
    pub fn throttle(self, window: Duration) -> SendOptions {
        self.option(
            crate::UNIQUE_MODE_OPTION,
            crate::UniqueMode::Throttle.as_str(),
        )
        .option(crate::UNIQUE_TTL_OPTION, millis(window))
    }

    /// Only the last of these within `window` runs: the message waits `window` (or its own
    /// [`delay`](SendOptions::delay)), and a newer send of the same key in the meantime
    /// replaces it ([`Replaced`](crate::SendOutcome::Replaced)); the replaced message is
    /// skipped, with a log line, when it comes up. Once a message has started, a newer send is
    /// queued as usual.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dq_core::SendOptions;
    ///
    /// let opts = SendOptions::new().debounce(Duration::from_secs(2)).unique_key("search:42");
    /// assert_eq!(opts.options.get_str("dq_unique_mode"), Some("debounce"));
    /// ```
    pub fn debounce(self, window: Duration) -> SendOptions {
        self.option(
            crate::UNIQUE_MODE_OPTION,
            crate::UniqueMode::Debounce.as_str(),
        )
        .option(crate::UNIQUE_TTL_OPTION, millis(window))
    }

    /// Applies these options to a message built for `message_with_options`: options merged, and
    /// a delay recorded as the `delay` option (which pipelines honour), as Dramatiq does.
    pub fn apply_to_message(&self, message: &mut crate::Message) {
        for (k, v) in self.options.iter() {
            message.options.insert(k.clone(), v.clone());
        }
        if let Some(d) = self.delay {
            message
                .options
                .insert("delay".into(), Value::from(d.as_millis() as u64));
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
