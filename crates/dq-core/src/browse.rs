//! Looking at the messages of a queue without taking them: what [`Broker::browse`] returns.
//!
//! [`Broker::browse`]: crate::Broker::browse

use std::fmt;
use std::str::FromStr;

/// Which of a queue's messages [`Broker::browse`](crate::Broker::browse) lists.
///
/// ```
/// use dq_core::MessageState;
///
/// let state: MessageState = "dead".parse().unwrap();
/// assert_eq!(state, MessageState::DeadLettered);
/// assert_eq!(state.as_str(), "dead");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Waiting on the queue itself (`q`), oldest first.
    Ready,
    /// Waiting on the delay queue (`q.DQ`) for their `eta`.
    Delayed,
    /// In the dead-letter queue (`q.XQ`), oldest first.
    DeadLettered,
}

impl MessageState {
    /// The word the dashboard and its JSON API use: `ready`, `delayed`, `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Ready => "ready",
            MessageState::Delayed => "delayed",
            MessageState::DeadLettered => "dead",
        }
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not `ready`, `delayed` or `dead`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown message state {0:?}: expected ready, delayed or dead")]
pub struct UnknownMessageState(pub String);

impl FromStr for MessageState {
    type Err = UnknownMessageState;

    fn from_str(s: &str) -> Result<MessageState, UnknownMessageState> {
        match s {
            "ready" => Ok(MessageState::Ready),
            "delayed" => Ok(MessageState::Delayed),
            "dead" | "dead_lettered" | "dead-lettered" => Ok(MessageState::DeadLettered),
            other => Err(UnknownMessageState(other.to_owned())),
        }
    }
}

/// One message [`Broker::browse`](crate::Broker::browse) found, still in the broker. `Debug`
/// shows the body as text.
///
/// ```
/// use dq_core::{BrowsedMessage, MessageState};
///
/// let m = BrowsedMessage {
///     id: "1".into(),
///     body: br#"{"actor_name":"add"}"#.to_vec(),
///     state: MessageState::Ready,
///     dead_lettered_at: None,
///     reason: None,
/// };
/// assert!(format!("{m:?}").contains(r#"{"actor_name":"add"}"#));
/// ```
#[derive(Clone)]
pub struct BrowsedMessage {
    /// The broker's id for it (Redis: the `redis_message_id`; for a dead letter, what
    /// [`DeadLetter::id`](crate::DeadLetter::id) says).
    pub id: String,
    /// The body as it sits in the broker.
    pub body: Vec<u8>,
    /// Where it was found.
    pub state: MessageState,
    /// When it was dead-lettered (ms since the epoch), for a dead letter whose broker records it.
    pub dead_lettered_at: Option<i64>,
    /// Why it was dead-lettered, if the broker records it.
    pub reason: Option<String>,
}

impl fmt::Debug for BrowsedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrowsedMessage")
            .field("id", &self.id)
            .field("body", &BodyText(&self.body))
            .field("state", &self.state)
            .field("dead_lettered_at", &self.dead_lettered_at)
            .field("reason", &self.reason)
            .finish()
    }
}

/// A body for `Debug`: its text (lossy, for bodies that are not UTF-8), unquoted.
struct BodyText<'a>(&'a [u8]);

impl fmt::Debug for BodyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

impl From<crate::DeadLetter> for BrowsedMessage {
    fn from(l: crate::DeadLetter) -> BrowsedMessage {
        BrowsedMessage {
            id: l.id,
            body: l.body,
            state: MessageState::DeadLettered,
            dead_lettered_at: l.dead_lettered_at,
            reason: l.reason,
        }
    }
}
