//! Unique, debounced and throttled messages: the lock a send takes in the broker, what came of
//! the send, and the message options that carry the lock to whichever dq worker runs it.
//!
//! **Key design decision:** the lock is taken by the broker in the same step as the enqueue
//! ([`Broker::enqueue_unique`](crate::Broker::enqueue_unique); on Redis one script call), so
//! there is never a lock without its message nor a message that should have been refused.
//! Every lock has a TTL, so a worker that dies holding one never blocks its key for longer
//! than that. The lock's key, mode and release point travel in the message's options
//! (`dq_unique_key`, `dq_unique_mode`, `dq_unique_until`), so any dq worker releases it;
//! a Python Dramatiq worker keeps unknown options and ignores them, and the lock expires.
//!
//! Three modes share one mechanism, a key holding the id of the message that owns it:
//!
//! | mode | a send while the key is held | released |
//! |---|---|---|
//! | unique ([`SendOptions::unique_for`](crate::SendOptions::unique_for)) | refused: [`SendOutcome::Duplicate`] | after the TTL, when the holder starts, or when it finishes ([`UniqueUntil`]) |
//! | debounce ([`SendOptions::debounce`](crate::SendOptions::debounce)) | replaces the holder: [`SendOutcome::Replaced`]; the older message is skipped when it comes up | when the holder starts |
//! | throttle ([`SendOptions::throttle`](crate::SendOptions::throttle)) | refused: [`SendOutcome::Duplicate`] | after the window only |

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::options::Options;

/// The message option naming the lock's key (within the message's queue).
pub const UNIQUE_KEY_OPTION: &str = "dq_unique_key";
/// The message option naming when the lock is released: `"ttl"`, `"started"` or `"finished"`.
pub const UNIQUE_UNTIL_OPTION: &str = "dq_unique_until";
/// The message option naming the mode: `"unique"`, `"debounce"` or `"throttle"`.
pub const UNIQUE_MODE_OPTION: &str = "dq_unique_mode";
/// The message option holding the lock's TTL (or the debounce / throttle window), in ms.
pub const UNIQUE_TTL_OPTION: &str = "dq_unique_ttl";

/// The actor options of unique messages: `unique_for` (ms), `unique_until` (`"ttl"`,
/// `"started"`, `"finished"`), `debounce` (ms) and `throttle` (ms).
pub const UNIQUE_ACTOR_OPTIONS: &[&str] = &["unique_for", "unique_until", "debounce", "throttle"];

/// When a unique message's lock is released (before its TTL runs out, which always releases
/// it).
///
/// ```
/// use dq_core::UniqueUntil;
///
/// assert_eq!(UniqueUntil::parse("finished"), Some(UniqueUntil::Finished));
/// assert_eq!(UniqueUntil::Started.as_str(), "started");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UniqueUntil {
    /// Only when the TTL runs out: at most one such message per TTL.
    Ttl,
    /// When the message starts running: at most one waiting in the queue.
    Started,
    /// When the message finishes for good (it succeeded, or was dead-lettered), not after a
    /// failure that is retried: at most one queued or running. The default.
    #[default]
    Finished,
}

impl UniqueUntil {
    /// Its name in the `dq_unique_until` option.
    pub fn as_str(self) -> &'static str {
        match self {
            UniqueUntil::Ttl => "ttl",
            UniqueUntil::Started => "started",
            UniqueUntil::Finished => "finished",
        }
    }

    /// Reads a name written by [`as_str`](UniqueUntil::as_str).
    pub fn parse(s: &str) -> Option<UniqueUntil> {
        match s {
            "ttl" => Some(UniqueUntil::Ttl),
            "started" => Some(UniqueUntil::Started),
            "finished" => Some(UniqueUntil::Finished),
            _ => None,
        }
    }
}

/// What a send does when its key is held: refuse it (unique, throttle) or replace the holder
/// (debounce).
///
/// ```
/// use dq_core::UniqueMode;
///
/// assert_eq!(UniqueMode::parse("debounce"), Some(UniqueMode::Debounce));
/// assert_eq!(UniqueMode::Throttle.as_str(), "throttle");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UniqueMode {
    /// A send while the key is held is refused.
    #[default]
    Unique,
    /// A send while the key is held replaces the holder, which is skipped when it comes up.
    Debounce,
    /// At most one message per window; a send inside it is refused.
    Throttle,
}

impl UniqueMode {
    /// Its name in the `dq_unique_mode` option.
    pub fn as_str(self) -> &'static str {
        match self {
            UniqueMode::Unique => "unique",
            UniqueMode::Debounce => "debounce",
            UniqueMode::Throttle => "throttle",
        }
    }

    /// Reads a name written by [`as_str`](UniqueMode::as_str).
    pub fn parse(s: &str) -> Option<UniqueMode> {
        match s {
            "unique" => Some(UniqueMode::Unique),
            "debounce" => Some(UniqueMode::Debounce),
            "throttle" => Some(UniqueMode::Throttle),
            _ => None,
        }
    }
}

/// The lock a unique send asks the broker for, in
/// [`Broker::enqueue_unique`](crate::Broker::enqueue_unique). Locks are per canonical queue:
/// the same key on two queues is two locks.
///
/// ```
/// use std::time::Duration;
/// use dq_core::{UniqueLock, UniqueMode, UniqueUntil};
///
/// let lock = UniqueLock {
///     key: "report:42".into(),
///     mode: UniqueMode::Unique,
///     until: UniqueUntil::Finished,
///     ttl: Duration::from_secs(60),
/// };
/// assert_eq!(lock.ttl_ms(), 60_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueLock {
    /// The key, within the message's canonical queue.
    pub key: String,
    /// What a send does when the key is held.
    pub mode: UniqueMode,
    /// When a dq worker releases the lock before its TTL.
    pub until: UniqueUntil,
    /// How long the lock lives at most.
    pub ttl: Duration,
}

impl UniqueLock {
    /// The TTL in whole milliseconds, at least 1.
    pub fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The lock a message's options describe (as [`App::send`](crate::App::send) wrote them),
    /// if they describe one completely.
    pub fn from_options(options: &Options) -> Option<UniqueLock> {
        let key = options.get_str(UNIQUE_KEY_OPTION)?;
        let ttl = options.get_i64(UNIQUE_TTL_OPTION)?;
        let mode = options
            .get_str(UNIQUE_MODE_OPTION)
            .map_or(Some(UniqueMode::Unique), UniqueMode::parse)?;
        let until = options
            .get_str(UNIQUE_UNTIL_OPTION)
            .map_or(Some(UniqueUntil::Finished), UniqueUntil::parse)?;
        Some(UniqueLock {
            key: key.to_owned(),
            mode,
            until,
            ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        })
    }
}

/// What came of a send: [`Sent::outcome`](crate::Sent::outcome) for the typed sends,
/// [`App::send`](crate::App::send) for the untyped one. A send that is not unique is always
/// `Enqueued`.
///
/// ```
/// use dq_core::SendOutcome;
///
/// let o = SendOutcome::Duplicate { holder: "5029b3a5-3be4-4a04-a9a0-56e2a5e4e8b9".into() };
/// assert!(!o.is_enqueued());
/// assert_eq!(o.to_string(), "duplicate of 5029b3a5-3be4-4a04-a9a0-56e2a5e4e8b9");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SendOutcome {
    /// The message was enqueued (and, if unique, holds its key).
    #[default]
    Enqueued,
    /// Nothing was enqueued: the key is held by the message `holder` (its `message_id`).
    Duplicate {
        /// The `message_id` of the message that holds the key.
        holder: String,
    },
    /// The message was enqueued and took the key from `previous` (debounce), which will be
    /// skipped when it comes up, unless it has started already.
    Replaced {
        /// The `message_id` of the message replaced.
        previous: String,
    },
}

impl SendOutcome {
    /// Whether the message went to the broker (`Enqueued` or `Replaced`).
    pub fn is_enqueued(&self) -> bool {
        !matches!(self, SendOutcome::Duplicate { .. })
    }
}

impl fmt::Display for SendOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendOutcome::Enqueued => f.write_str("enqueued"),
            SendOutcome::Duplicate { holder } => write!(f, "duplicate of {holder}"),
            SendOutcome::Replaced { previous } => write!(f, "enqueued, replacing {previous}"),
        }
    }
}

/// What [`Broker::release_unique`](crate::Broker::release_unique) found.
///
/// ```
/// use dq_core::ReleaseOutcome;
///
/// assert_eq!(ReleaseOutcome::HeldBy("m2".into()).holder(), Some("m2"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// The message held the key; it is free now.
    Released,
    /// Nobody holds the key (it expired, or was released).
    Absent,
    /// Another message, this `message_id`, holds the key; it was left alone.
    HeldBy(String),
    /// This (debounced) message was replaced by the newer message `message_id`, which took its
    /// key before it started: it is to be skipped. The broker remembers a replaced message for
    /// as long as its lock would have lived.
    Replaced(String),
}

impl ReleaseOutcome {
    /// The other holder, for [`HeldBy`](ReleaseOutcome::HeldBy) and
    /// [`Replaced`](ReleaseOutcome::Replaced).
    pub fn holder(&self) -> Option<&str> {
        match self {
            ReleaseOutcome::HeldBy(h) | ReleaseOutcome::Replaced(h) => Some(h),
            ReleaseOutcome::Released | ReleaseOutcome::Absent => None,
        }
    }
}

/// The default key of a unique message: the SHA-256 (hex) of its queue, its actor and the
/// canonical JSON of its arguments (object keys sorted, no spaces), so two sends of one call
/// share a key whatever the order of their keyword arguments.
///
/// ```
/// use dq_core::default_unique_key;
///
/// let a = default_unique_key("default", "report", "[1]", r#"{"a":1,"b":2}"#)?;
/// let b = default_unique_key("default", "report", "[1]", r#"{"b":2, "a":1}"#)?;
/// assert_eq!(a, b);
/// assert_eq!(a.len(), 64);
/// assert_ne!(a, default_unique_key("default", "report", "[2]", "{}")?);
/// # Ok::<(), dq_core::Error>(())
/// ```
pub fn default_unique_key(
    queue: &str,
    actor: &str,
    args: &str,
    kwargs: &str,
) -> Result<String, Error> {
    let parse = |what: &str, text: &str| -> Result<Value, Error> {
        serde_json::from_str(text).map_err(|e| Error::InvalidUniqueOption {
            option: UNIQUE_KEY_OPTION,
            reason: format!("the {what} are not JSON: {e}"),
        })
    };
    let mut canonical = String::with_capacity(args.len() + kwargs.len() + 2);
    write_canonical(&mut canonical, &parse("args", args)?);
    canonical.push('\n');
    write_canonical(&mut canonical, &parse("kwargs", kwargs)?);
    let mut h = Sha256::new();
    // Lengths first, so no two (queue, actor) pairs run into each other.
    h.update(queue.len().to_le_bytes());
    h.update(queue.as_bytes());
    h.update(actor.len().to_le_bytes());
    h.update(actor.as_bytes());
    h.update(canonical.as_bytes());
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

/// JSON with object keys sorted, recursively (serde_json keeps insertion order here).
fn write_canonical(out: &mut String, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(out, &m[k]);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, x);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn millis_option(options: &Options, key: &'static str) -> Result<Option<u64>, Error> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(0) | None => Err(Error::InvalidUniqueOption {
                option: key,
                reason: format!("must be a positive number of milliseconds, not {v}"),
            }),
            Some(n) => Ok(Some(n)),
        },
    }
}

/// The lock a send asks for, from the message's options (set through
/// [`SendOptions`](crate::SendOptions)) over the actor's (`unique_for`, `unique_until`,
/// `debounce`, `throttle`), and the delay the send gets (a debounced send without a delay waits
/// its window). Writes the lock into the message's options. `None` when the send is not unique.
pub(crate) fn plan(
    message: &mut crate::Message,
    actor_extra: Option<&serde_json::Map<String, Value>>,
    delay: Option<Duration>,
) -> Result<Option<(UniqueLock, Option<Duration>)>, Error> {
    let opts = &message.options;
    let requested = opts.contains_key(UNIQUE_TTL_OPTION)
        || opts.contains_key(UNIQUE_MODE_OPTION)
        || opts.contains_key(UNIQUE_KEY_OPTION)
        || opts.contains_key(UNIQUE_UNTIL_OPTION);
    let from_actor =
        actor_extra.filter(|x| UNIQUE_ACTOR_OPTIONS.iter().any(|k| x.contains_key(*k)));
    if !requested && from_actor.is_none() {
        return Ok(None);
    }
    // The actor's settings, then the message's over them.
    let mut mode = UniqueMode::Unique;
    let mut until = None;
    let mut ttl_ms = None;
    if let Some(x) = from_actor {
        let x = Options(x.clone());
        if let Some(ms) = millis_option(&x, "unique_for")? {
            ttl_ms = Some(ms);
        }
        if let Some(ms) = millis_option(&x, "throttle")? {
            mode = UniqueMode::Throttle;
            ttl_ms = Some(ms);
        }
        if let Some(ms) = millis_option(&x, "debounce")? {
            mode = UniqueMode::Debounce;
            ttl_ms = Some(ms);
        }
        if let Some(u) = x.get("unique_until") {
            until = Some(u.as_str().and_then(UniqueUntil::parse).ok_or_else(|| {
                Error::InvalidUniqueOption {
                    option: "unique_until",
                    reason: format!("must be \"ttl\", \"started\" or \"finished\", not {u}"),
                }
            })?);
        }
    }
    if let Some(m) = opts.get(UNIQUE_MODE_OPTION) {
        mode =
            m.as_str()
                .and_then(UniqueMode::parse)
                .ok_or_else(|| Error::InvalidUniqueOption {
                    option: UNIQUE_MODE_OPTION,
                    reason: format!("must be \"unique\", \"debounce\" or \"throttle\", not {m}"),
                })?;
    }
    if let Some(ms) = millis_option(opts, UNIQUE_TTL_OPTION)? {
        ttl_ms = Some(ms);
    }
    if let Some(u) = opts.get(UNIQUE_UNTIL_OPTION) {
        until = Some(u.as_str().and_then(UniqueUntil::parse).ok_or_else(|| {
            Error::InvalidUniqueOption {
                option: UNIQUE_UNTIL_OPTION,
                reason: format!("must be \"ttl\", \"started\" or \"finished\", not {u}"),
            }
        })?);
    }
    let Some(window_ms) = ttl_ms else {
        return Err(Error::InvalidUniqueOption {
            option: UNIQUE_TTL_OPTION,
            reason: "a unique message needs a TTL (unique_for, debounce or throttle), so that \
                     a lock whose worker died expires"
                .into(),
        });
    };
    let until = match mode {
        // Throttle: one per window, whatever happens to the message.
        UniqueMode::Throttle => UniqueUntil::Ttl,
        // Debounce: the newest waiting message runs; once it starts, a newer one may queue.
        UniqueMode::Debounce => UniqueUntil::Started,
        UniqueMode::Unique => until.unwrap_or_default(),
    };
    let window = Duration::from_millis(window_ms);
    let (delay, ttl) = match mode {
        UniqueMode::Debounce => {
            // The lock must outlive the wait, so that a later send finds the one it replaces.
            let d = delay.unwrap_or(window);
            (Some(d), d.saturating_add(window))
        }
        UniqueMode::Unique | UniqueMode::Throttle => (delay, window),
    };
    let key = match message.options.get_str(UNIQUE_KEY_OPTION) {
        Some(k) if !k.is_empty() => k.to_owned(),
        Some(_) => {
            return Err(Error::InvalidUniqueOption {
                option: UNIQUE_KEY_OPTION,
                reason: "cannot be empty".into(),
            })
        }
        None => default_unique_key(
            crate::message::base_queue_name(&message.queue_name),
            &message.actor_name,
            message.args.get(),
            message.kwargs.get(),
        )?,
    };
    let lock = UniqueLock {
        key,
        mode,
        until,
        ttl,
    };
    let o = &mut message.options;
    o.insert(UNIQUE_KEY_OPTION.into(), Value::String(lock.key.clone()));
    o.insert(UNIQUE_MODE_OPTION.into(), Value::from(mode.as_str()));
    o.insert(UNIQUE_UNTIL_OPTION.into(), Value::from(until.as_str()));
    o.insert(UNIQUE_TTL_OPTION.into(), Value::from(window_ms));
    Ok(Some((lock, delay)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn check(
        options: &[(&str, Value)],
        actor: &[(&str, Value)],
        delay: Option<u64>,
    ) -> Result<Option<(UniqueLock, Option<Duration>)>, Error> {
        let mut m = Message::new("q", "a", &(1,), &()).unwrap();
        for (k, v) in options {
            m.options.insert((*k).into(), v.clone());
        }
        let extra: serde_json::Map<String, Value> = actor
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        plan(&mut m, Some(&extra), delay.map(Duration::from_millis))
    }

    #[test]
    fn not_unique_without_options() {
        assert!(check(&[], &[], None).unwrap().is_none());
    }

    #[test]
    fn actor_defaults_and_message_overrides() {
        let (lock, delay) = check(&[], &[("unique_for", 5000.into())], None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (lock.mode, lock.until, lock.ttl_ms(), delay),
            (UniqueMode::Unique, UniqueUntil::Finished, 5000, None)
        );
        let (lock, _) = check(
            &[
                (UNIQUE_TTL_OPTION, 100.into()),
                (UNIQUE_UNTIL_OPTION, "started".into()),
                (UNIQUE_KEY_OPTION, "k".into()),
            ],
            &[("unique_for", 5000.into()), ("unique_until", "ttl".into())],
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (lock.key.as_str(), lock.until, lock.ttl_ms()),
            ("k", UniqueUntil::Started, 100)
        );
    }

    #[test]
    fn debounce_waits_its_window_and_throttle_releases_by_ttl() {
        let (lock, delay) = check(&[], &[("debounce", 1000.into())], None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (lock.mode, lock.until, lock.ttl_ms(), delay),
            (
                UniqueMode::Debounce,
                UniqueUntil::Started,
                2000,
                Some(Duration::from_secs(1))
            )
        );
        let (lock, delay) = check(&[], &[("debounce", 1000.into())], Some(300))
            .unwrap()
            .unwrap();
        assert_eq!(
            (lock.ttl_ms(), delay),
            (1300, Some(Duration::from_millis(300)))
        );
        let (lock, _) = check(
            &[(UNIQUE_MODE_OPTION, "throttle".into())],
            &[
                ("unique_for", 700.into()),
                ("unique_until", "finished".into()),
            ],
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!((lock.until, lock.ttl_ms()), (UniqueUntil::Ttl, 700));
    }

    #[test]
    fn bad_options_are_refused() {
        for (opts, actor) in [
            (vec![(UNIQUE_KEY_OPTION, Value::from("k"))], vec![]),
            (vec![], vec![("unique_for", Value::from(0))]),
            (vec![], vec![("unique_for", Value::from("1s"))]),
            (
                vec![(UNIQUE_UNTIL_OPTION, Value::from("later"))],
                vec![("unique_for", Value::from(1))],
            ),
            (
                vec![(UNIQUE_KEY_OPTION, Value::from(""))],
                vec![("unique_for", Value::from(1))],
            ),
        ] {
            let e = check(&opts, &actor, None).unwrap_err();
            assert!(
                matches!(e, Error::InvalidUniqueOption { .. }),
                "{opts:?} {actor:?}: {e}"
            );
        }
    }

    #[test]
    fn the_plan_travels_in_the_options() {
        let mut m = Message::new("q.DQ", "a", &(1,), &()).unwrap();
        let extra: serde_json::Map<String, Value> =
            [("unique_for".to_owned(), Value::from(60_000))]
                .into_iter()
                .collect();
        let (lock, _) = plan(&mut m, Some(&extra), None).unwrap().unwrap();
        assert_eq!(
            UniqueLock::from_options(&m.options),
            Some(lock.clone()).map(|mut l| {
                l.ttl = Duration::from_millis(60_000);
                l
            })
        );
        // The default key is the canonical queue's, so a delayed send shares it.
        let mut plain = Message::new("q", "a", &(1,), &()).unwrap();
        let (plain_lock, _) = plan(&mut plain, Some(&extra), None).unwrap().unwrap();
        assert_eq!(lock.key, plain_lock.key);
    }
}
