//! The actors the tests share. Actor names are global to the binary (the registry rejects
//! duplicates), so every actor of every module is declared here or has a unique name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An argument and return type of our own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Point {
    pub(crate) x: i64,
    pub(crate) y: i64,
}

/// An actor error of our own.
#[derive(Debug)]
pub(crate) struct BadInput(pub(crate) String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad input: {}", self.0)
    }
}

pub(crate) const EMAIL_QUEUE: &str = "emails";

pub(crate) fn retry_small(retries: u32, error: &dq::ActorError) -> bool {
    retries < 2 && error.type_name() != "BadInput"
}

#[dq::actor]
pub(crate) fn add(x: i64, y: i64) -> i64 {
    x + y
}

/// An actor whose messages carry `broker_priority` 7 unless a send says otherwise.
#[dq::actor(broker_priority = 7)]
pub(crate) fn urgent(n: u8) -> u8 {
    n
}

#[dq::actor(
    queue_name = "emails",
    priority = 10,
    max_retries = 3,
    min_backoff = 1000,
    max_backoff = 60_000,
    max_age = 3_600_000,
    time_limit = 60_000,
    store_results = true,
    result_ttl = 5000,
    notify_shutdown = true,
    throws = [BadInput, "OtherError"],
    retry_when = retry_small,
    on_retry_exhausted = "welcome_exhausted",
    rate_key = "welcome",
    weights = [1, -2, 2.5, "a", true, None]
)]
pub(crate) fn send_welcome(email: String, attempt: Option<u32>) -> Result<u64, BadInput> {
    if email.contains('@') {
        Ok(u64::from(attempt.unwrap_or(0)) + email.len() as u64)
    } else {
        Err(BadInput(email))
    }
}

#[dq::actor(actor_name = "slow_sum", max_retries = None, queue_name = EMAIL_QUEUE)]
pub(crate) async fn sum_later(values: Vec<i64>) -> Result<i64, BadInput> {
    tokio::task::yield_now().await;
    if values.is_empty() {
        return Err(BadInput("no values".into()));
    }
    Ok(values.iter().sum())
}

#[dq::actor(queue_name = "points", time_limit = 60 * 1000, priority = -5)]
pub(crate) async fn move_point(mut p: Point, r#type: String) -> Point {
    if r#type == "up" {
        p.y += 1;
    }
    p
}

#[dq::actor]
pub(crate) fn nothing() {}

#[dq::actor(retry_when = |retries, _| retries < 5)]
pub(crate) fn asks_for_retry(after_ms: Option<u64>) -> Result<(), dq::Retry> {
    Err(match after_ms {
        Some(ms) => dq::Retry::after(std::time::Duration::from_millis(ms)),
        None => dq::Retry::default(),
    })
}

/// A parameter type private to this module: the companion module sees it too.
#[derive(Debug, Serialize, Deserialize)]
struct Secret(String);

#[dq::actor]
fn private_actor(s: Secret) -> usize {
    s.0.len()
}

/// A path through `super::`, which the companion module (one level down) must rewrite.
pub(crate) mod nested {
    #[dq::actor(queue_name = "nested")]
    pub(crate) fn nested_actor(p: super::Point) -> i64 {
        p.x * p.y
    }
}

/// Compiled out: rustc applies `#[cfg]` before attribute macros, even written after them, so
/// neither the fn nor its module nor its registration exists.
#[dq::actor]
#[cfg(any())]
pub(crate) fn compiled_out() {}

/// Actors for typed sends and pipelines.
pub(crate) mod typed {
    use serde::{Deserialize, Serialize};

    /// A type of the user's named like the `Output` alias every companion module declares.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    pub(crate) struct Output(pub(crate) u8);

    #[dq::actor(queue_name = "typed")]
    pub(crate) fn wraps(o: Output) -> Output {
        Output(o.0 + 1)
    }

    /// Stands in for a connection pool.
    pub(crate) struct Db;

    /// A state parameter between the message arguments: the last message argument is piped.
    #[dq::actor(queue_name = "typed")]
    pub(crate) fn scale(factor: i64, _db: dq::State<Db>, x: i64) -> std::io::Result<i64> {
        Ok(factor * x)
    }

    #[dq::actor(queue_name = "typed")]
    pub(crate) fn label(prefix: String, width: usize, x: i64) -> String {
        format!("{prefix}{x:>width$}")
    }

    #[dq::actor(queue_name = "typed")]
    pub(crate) fn opaque(n: u8) -> impl Serialize {
        vec![n]
    }
}
