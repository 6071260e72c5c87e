//! Reading the results of messages, pipelines and groups, in Dramatiq's order and with its
//! timeout rules.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use dq_core::{Group, GroupChild, Message, Pipeline};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use crate::backend::{get_value, typed, ResultBackend};
use crate::error::{Error, Result};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `message.get_result(...)`, as in Dramatiq.
///
/// ```no_run
/// use dq_results::{MessageResult, RedisBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let message = dq_core::Message::new("default", "add", &(1, 2), &())?;
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// let sum: i64 = message.get_result(&backend, true, None).await?;
/// println!("{sum}");
/// # Ok(()) }
/// ```
pub trait MessageResult {
    /// This message's result as a `T`. Without `block`, a result not stored yet is
    /// [`Error::Missing`]; with it, the read waits up to `timeout` (default 10 s) and then fails
    /// with [`Error::Timeout`]. A message that failed for good gives [`Error::Failure`].
    fn get_result<T: DeserializeOwned>(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        block: bool,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<T>> + Send;
}

impl MessageResult for Message {
    async fn get_result<T: DeserializeOwned>(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let value = get_value(backend, self, block, timeout).await?;
        typed(&self.message_id, value)
    }
}

/// A total timeout shared by several reads, as Dramatiq's `get_results` spends it: each read
/// gets what is left.
struct Budget {
    deadline: Option<Instant>,
}

impl Budget {
    fn new(timeout: Option<Duration>) -> Budget {
        // Dramatiq: `if timeout:`, so a zero timeout is no shared deadline.
        Budget {
            deadline: timeout.filter(|t| !t.is_zero()).map(|t| Instant::now() + t),
        }
    }

    /// The timeout for the next read: what is left of the deadline, or the caller's own.
    fn next(&self, timeout: Option<Duration>) -> Option<Duration> {
        match self.deadline {
            Some(d) => Some(d.saturating_duration_since(Instant::now())),
            None => timeout,
        }
    }
}

/// Results of a [`Pipeline`]: the last stage's (`get_result`) or every stage's (`get_results`).
///
/// ```no_run
/// use std::time::Duration;
/// use dq_results::{PipelineResults, RedisBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let pipe = dq_core::pipeline([dq_core::Message::new("default", "count_words", &(), &())?]);
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// let words: usize = pipe.get_result(&backend, true, Some(Duration::from_secs(5))).await?;
/// let each: Vec<serde_json::Value> = pipe.get_results(&backend, true, None).await?;
/// println!("{words} words; every stage's result: {each:?}");
/// # Ok(()) }
/// ```
pub trait PipelineResults {
    /// The result of the last message, the pipeline's result (see
    /// [`MessageResult::get_result`]). An empty pipeline has none: [`Error::Missing`].
    fn get_result<T: DeserializeOwned>(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        block: bool,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<T>> + Send;

    /// The result of every message, in order. With `block`, `timeout` bounds the whole read;
    /// without one, each message may take the default 10 s. The first missing, late or failed
    /// result is the error.
    fn get_results<T: DeserializeOwned>(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        block: bool,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<T>>> + Send;

    /// How many stages completed successfully, counting from the first until one is missing or
    /// failed (a failed stage ends the pipeline, so nothing after it ever runs). Stages whose
    /// actors do not store results never count.
    fn completed_count(
        &self,
        backend: &(impl ResultBackend + ?Sized),
    ) -> impl Future<Output = Result<usize>> + Send;
}

impl PipelineResults for Pipeline {
    async fn get_result<T: DeserializeOwned>(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let Some(last) = self.last() else {
            return Err(Error::Missing {
                message_id: String::new(),
            });
        };
        last.get_result(backend, block, timeout).await
    }

    async fn get_results<T: DeserializeOwned>(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<Vec<T>> {
        let budget = Budget::new(timeout);
        let mut values = Vec::with_capacity(self.len());
        for m in self.messages() {
            values.push(get_value(backend, m, block, budget.next(timeout)).await?);
        }
        self.messages()
            .iter()
            .zip(values)
            .map(|(m, v)| typed(&m.message_id, v))
            .collect()
    }

    async fn completed_count(&self, backend: &(impl ResultBackend + ?Sized)) -> Result<usize> {
        let mut count = 0;
        for m in self.messages() {
            match get_value(backend, m, false, None).await {
                Ok(_) => count += 1,
                Err(Error::Missing { .. } | Error::Failure { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(count)
    }
}

/// Results of a [`Group`], in the order its children were added whatever order they finished
/// in: a message's result, a pipeline's last result, a nested group's list of results.
///
/// ```no_run
/// use std::time::Duration;
/// use dq_results::{GroupResults, RedisBackend};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let g = dq_core::group([dq_core::Message::new("default", "frobnicate", &(1, 2), &())?]);
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// g.wait(&backend, Some(Duration::from_secs(10))).await?;
/// for r in g.get_results::<i64>(&backend, true, Some(Duration::from_secs(5))).await? {
///     println!("{r}");
/// }
/// # Ok(()) }
/// ```
pub trait GroupResults {
    /// Every child's result, in order, each converted to `T` (a nested group's as a list).
    /// With `block`, `timeout` bounds the whole read; without one, each child may take the
    /// default 10 s. The first missing, late or failed result is the error.
    fn get_results<T: DeserializeOwned>(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        block: bool,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Vec<T>>> + Send;

    /// Waits until every child has a result, up to `timeout` in all (each child up to 10 s
    /// without one): [`Error::Timeout`] when they do not, [`Error::Failure`] when one failed.
    fn wait(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// How many children have a result now. Children whose actors do not store results never
    /// count.
    fn completed_count(
        &self,
        backend: &(impl ResultBackend + ?Sized),
    ) -> impl Future<Output = Result<usize>> + Send;
}

/// One child's result as JSON; boxed because groups nest.
fn child_value<'a, B: ResultBackend + ?Sized>(
    backend: &'a B,
    child: &'a GroupChild,
    block: bool,
    timeout: Option<Duration>,
) -> BoxFuture<'a, Result<Value>> {
    Box::pin(async move {
        match child {
            GroupChild::Message(m) => get_value(backend, m, block, timeout).await,
            GroupChild::Pipeline(p) => match p.last() {
                Some(last) => get_value(backend, last, block, timeout).await,
                None => Ok(Value::Array(Vec::new())),
            },
            GroupChild::Group(g) => group_values(backend, g, block, timeout)
                .await
                .map(Value::Array),
        }
    })
}

async fn group_values<B: ResultBackend + ?Sized>(
    backend: &B,
    group: &Group,
    block: bool,
    timeout: Option<Duration>,
) -> Result<Vec<Value>> {
    let budget = Budget::new(timeout);
    let mut values = Vec::with_capacity(group.len());
    for child in group.children() {
        values.push(child_value(backend, child, block, budget.next(timeout)).await?);
    }
    Ok(values)
}

/// The id reported when a child's result does not decode.
fn child_id(child: &GroupChild) -> String {
    match child {
        GroupChild::Message(m) => m.message_id.clone(),
        GroupChild::Pipeline(p) => p.last().map(|m| m.message_id.clone()).unwrap_or_default(),
        GroupChild::Group(_) => String::new(),
    }
}

impl GroupResults for Group {
    async fn get_results<T: DeserializeOwned>(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        block: bool,
        timeout: Option<Duration>,
    ) -> Result<Vec<T>> {
        let values = group_values(backend, self, block, timeout).await?;
        self.children()
            .iter()
            .zip(values)
            .map(|(c, v)| typed(&child_id(c), v))
            .collect()
    }

    async fn wait(
        &self,
        backend: &(impl ResultBackend + ?Sized),
        timeout: Option<Duration>,
    ) -> Result<()> {
        group_values(backend, self, true, timeout).await?;
        Ok(())
    }

    async fn completed_count(&self, backend: &(impl ResultBackend + ?Sized)) -> Result<usize> {
        let mut count = 0;
        for child in self.children() {
            match child_value(backend, child, false, None).await {
                Ok(_) => count += 1,
                Err(Error::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(count)
    }
}
