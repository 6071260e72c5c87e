//! The backends as dq-core's [`ResultSource`], so that the typed handles `#[dq::actor]` sends
//! return (`Sent<T>`, `SentPipeline<T>`) read their results from them, and dq-core's
//! [`ResultError`] made from ours.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use dq_core::{Message, ResultError, ResultSource};
use serde_json::Value;

use crate::backend::{get_value, ResultBackend};
use crate::error::Error;
use crate::memory::MemoryBackend;
use crate::redis_backend::RedisBackend;

type Fetch<'a> = Pin<Box<dyn Future<Output = Result<Value, ResultError>> + Send + 'a>>;

/// `wait` is Dramatiq's `block` and `timeout` in one: none looks once, some blocks that long.
fn fetch<'a, B: ResultBackend + ?Sized>(
    backend: &'a B,
    message: &'a Message,
    wait: Option<Duration>,
) -> Fetch<'a> {
    Box::pin(async move {
        get_value(backend, message, wait.is_some(), wait)
            .await
            .map_err(ResultError::from)
    })
}

/// Reads results for `Sent::result` and `Sent::wait_result`.
///
/// ```
/// use std::time::Duration;
/// use dq_core::{Message, Sent};
/// use dq_results::{MemoryBackend, ResultBackendExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = MemoryBackend::default();
/// let sent = Sent::<i64>::from_message(Message::new("default", "add", &(1, 2), &())?);
/// assert!(sent.result(&backend).await.unwrap_err().is_missing());
/// backend.store_result(&sent, &serde_json::json!(3), Duration::from_secs(60)).await?;
/// assert_eq!(sent.wait_result(&backend, Duration::from_secs(1)).await?, 3);
/// # Ok(()) }
/// ```
impl ResultSource for MemoryBackend {
    fn fetch_result<'a>(&'a self, message: &'a Message, wait: Option<Duration>) -> Fetch<'a> {
        fetch(self, message, wait)
    }
}

/// Reads results for `Sent::result` and `Sent::wait_result`.
impl ResultSource for RedisBackend {
    fn fetch_result<'a>(&'a self, message: &'a Message, wait: Option<Duration>) -> Fetch<'a> {
        fetch(self, message, wait)
    }
}

/// Any backend behind a `dyn` (an `Arc<dyn ResultBackend>` too, through dq-core's impl for
/// `Arc`).
impl ResultSource for dyn ResultBackend {
    fn fetch_result<'a>(&'a self, message: &'a Message, wait: Option<Duration>) -> Fetch<'a> {
        fetch(self, message, wait)
    }
}

/// Dramatiq's `ResultMissing`, `ResultTimeout` and `ResultFailure` keep their meaning.
impl From<Error> for ResultError {
    fn from(e: Error) -> ResultError {
        match e {
            Error::Missing { message_id } => ResultError::Missing { message_id },
            Error::Timeout { message_id } => ResultError::Timeout { message_id },
            Error::Failure {
                message_id,
                type_name,
                message,
            } => ResultError::Failed {
                message_id,
                type_name,
                message,
            },
            Error::Decode { message_id, source } => ResultError::Decode { message_id, source },
            Error::Backend { operation, source } => ResultError::Backend { operation, source },
            e @ Error::InvalidConfig(_) => ResultError::Backend {
                operation: "configuring the backend",
                source: Box::new(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dq_core::Sent;
    use serde_json::json;

    use super::*;
    use crate::backend::{failure_value, ResultBackendExt};

    fn sent<T>() -> Sent<T> {
        Sent::from_message(Message::new("default", "add", &(1, 2), &()).unwrap())
    }

    #[tokio::test]
    async fn backends_are_result_sources() {
        let memory = MemoryBackend::default();
        let shared: Arc<dyn ResultBackend> = Arc::new(memory.clone());
        let (ok, failed) = (sent::<i64>(), sent::<i64>());
        let ttl = Duration::from_secs(60);
        memory.store_result(&ok, &json!(3), ttl).await.unwrap();
        let key = memory.message_key(&failed);
        let failure = failure_value("ValueError", "boom").to_string();
        memory.store(&key, &failure, ttl).await.unwrap();

        assert_eq!(ok.result(&memory).await.unwrap(), 3);
        assert_eq!(ok.result(&shared).await.unwrap(), 3);
        assert_eq!(ok.result(&*shared).await.unwrap(), 3);
        let e = failed.result(&memory).await.unwrap_err();
        assert!(e.is_failed(), "{e}");
        assert_eq!(e.to_string(), "actor raised ValueError: boom");
        let missing = sent::<i64>();
        assert!(missing.result(&memory).await.unwrap_err().is_missing());
        let wait = Duration::from_millis(20);
        assert!(missing
            .wait_result(&memory, wait)
            .await
            .unwrap_err()
            .is_timeout());
        let e = Sent::<String>::from_message(ok.message().clone())
            .result(&memory)
            .await
            .unwrap_err();
        assert!(matches!(e, ResultError::Decode { .. }), "{e}");
    }
}
