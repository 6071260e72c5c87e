//! Reading results back: the [`ResultSource`] trait a result store implements, so that the typed
//! handles of this crate ([`Sent`](crate::Sent), [`SentPipeline`](crate::SentPipeline)) can read
//! results without dq-core knowing any store.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ResultError;
use crate::message::Message;

/// A place results of messages can be read from: `dq-results`' `RedisBackend` and
/// `MemoryBackend` implement it.
///
/// The trait lives here, below the result stores, because the typed handles that read through
/// it ([`Sent`](crate::Sent)) are made by every send, and dq-core depends on no store (stores
/// depend on dq-core). It deals in JSON; the handles decode it into the actor's return type.
/// The future is boxed so that `&dyn ResultSource` works.
///
/// ```
/// use std::collections::HashMap;
/// use std::future::Future;
/// use std::pin::Pin;
/// use std::time::Duration;
///
/// use dq_core::{Message, ResultError, ResultSource, Sent};
/// use serde_json::Value;
///
/// /// Results kept in a map by message id (a real store also waits when asked to).
/// struct Stored(HashMap<String, Value>);
///
/// impl ResultSource for Stored {
///     fn fetch_result<'a>(
///         &'a self,
///         message: &'a Message,
///         _wait: Option<Duration>,
///     ) -> Pin<Box<dyn Future<Output = Result<Value, ResultError>> + Send + 'a>> {
///         Box::pin(async move {
///             self.0.get(&message.message_id).cloned().ok_or_else(|| ResultError::Missing {
///                 message_id: message.message_id.clone(),
///             })
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sent = Sent::<i64>::from_message(Message::new("default", "add", &(1, 2), &())?);
/// let store = Stored(HashMap::from([(sent.message_id.clone(), Value::from(3))]));
/// assert_eq!(sent.result(&store).await?, 3);
/// # Ok(()) }
/// ```
pub trait ResultSource: Send + Sync {
    /// The result of `message` as JSON: its actor's return value, or [`ResultError::Failed`]
    /// when the actor failed for good.
    ///
    /// With `wait` `None`, looks once: a result not stored yet is [`ResultError::Missing`].
    /// With `Some(timeout)`, waits up to `timeout` for one, then fails with
    /// [`ResultError::Timeout`].
    fn fetch_result<'a>(
        &'a self,
        message: &'a Message,
        wait: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ResultError>> + Send + 'a>>;
}

impl<S: ResultSource + ?Sized> ResultSource for &S {
    fn fetch_result<'a>(
        &'a self,
        message: &'a Message,
        wait: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ResultError>> + Send + 'a>> {
        (**self).fetch_result(message, wait)
    }
}

impl<S: ResultSource + ?Sized> ResultSource for Arc<S> {
    fn fetch_result<'a>(
        &'a self,
        message: &'a Message,
        wait: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ResultError>> + Send + 'a>> {
        (**self).fetch_result(message, wait)
    }
}

/// Reads `message`'s result from `source` and decodes it as a `T`.
pub(crate) async fn read<T: DeserializeOwned, S: ResultSource + ?Sized>(
    source: &S,
    message: &Message,
    wait: Option<Duration>,
) -> Result<T, ResultError> {
    let value = source.fetch_result(message, wait).await?;
    serde_json::from_value(value).map_err(|source| ResultError::Decode {
        message_id: message.message_id.clone(),
        source,
    })
}
