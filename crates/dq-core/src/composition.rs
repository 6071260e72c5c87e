//! Groups and pipelines: Dramatiq's `group` and `pipeline`, the half that builds and sends
//! messages. Reading their results lives with the result store (the `dq-results` crate).
//!
//! A [`Pipeline`] is a list of messages where each one carries the next, whole, in its
//! `pipe_target` option; the Pipelines middleware enqueues that next message when a stage
//! succeeds, with the stage's result appended to its arguments unless it has `pipe_ignore`.
//! A [`Group`] is a list of messages, pipelines and groups sent at once. A group with completion
//! callbacks tags each child with `group_completion_uuid` and `group_completion_callbacks` and
//! creates a barrier of that uuid through the middleware that provides one
//! ([`Middleware::group_barrier`]: `GroupCallbacks`), exactly as Python Dramatiq 2.2.1 does, so
//! workflows may mix Rust and Python actors on one broker.

use std::future::Future;
use std::ops::BitOr;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::app::App;
use crate::error::{MiddlewareError, Result};
use crate::message::{new_message_id, Message};
#[cfg(doc)]
use crate::middleware::Middleware;
use crate::typed::TypedMessage;

/// Creates the barrier a group with completion callbacks waits on: `GroupCallbacks` provides
/// one through [`Middleware::group_barrier`].
#[async_trait]
pub trait GroupBarrier: Send + Sync {
    /// Creates barrier `key` for `parties` children. Each child that succeeds passes it once;
    /// the last one enqueues the group's completion callbacks.
    async fn create_barrier(&self, key: &str, parties: usize) -> Result<(), MiddlewareError>;
}

/// One step of a [`Pipeline`]: a message, or a pipeline whose messages are spliced in.
#[derive(Clone, Debug)]
pub enum PipelineStep {
    /// One message.
    Message(Message),
    /// A pipeline, flattened into the one being built.
    Pipeline(Pipeline),
}

impl From<Message> for PipelineStep {
    fn from(m: Message) -> PipelineStep {
        PipelineStep::Message(m)
    }
}

impl From<Pipeline> for PipelineStep {
    fn from(p: Pipeline) -> PipelineStep {
        PipelineStep::Pipeline(p)
    }
}

/// Actors chained together: each stage's result is passed to the next as its last positional
/// argument (unless the next message has `pipe_ignore`). Dramatiq's `pipeline`.
///
/// Building a pipeline sets `options.pipe_target` of every message but the last to the next
/// message, fully nested, as Dramatiq does. Messages keep their ids, so results can be read per
/// stage. `|` builds pipelines too.
///
/// ```
/// use dq_core::{pipeline, Message};
///
/// let get = Message::new("default", "get_uri_contents", &("http://example.com",), &())?;
/// let count = Message::new("default", "count_words", &("http://example.com",), &())?;
/// let pipe = pipeline([get.clone(), count.clone()]);
/// assert_eq!(pipe.len(), 2);
/// let target = pipe.messages()[0].options.pipe_target().unwrap();
/// assert_eq!(target["message_id"], count.message_id.as_str());
///
/// // The same with pipe notation.
/// let piped = get | count;
/// assert_eq!(piped.messages(), pipe.messages());
/// # Ok::<(), dq_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pipeline {
    messages: Vec<Message>,
}

/// Builds a [`Pipeline`] from messages and pipelines (flattened), in order.
///
/// ```
/// # use dq_core::{pipeline, Message, PipelineStep};
/// let a = Message::new("default", "a", &(), &())?;
/// let b = Message::new("default", "b", &(), &())?;
/// let c = Message::new("default", "c", &(), &())?;
/// // Mixed steps need `PipelineStep`s.
/// let pipe = pipeline([PipelineStep::from(pipeline([a, b])), c.into()]);
/// assert_eq!(pipe.len(), 3);
/// # Ok::<(), dq_core::Error>(())
/// ```
pub fn pipeline<S: Into<PipelineStep>>(steps: impl IntoIterator<Item = S>) -> Pipeline {
    Pipeline::new(steps)
}

impl Pipeline {
    /// Builds a pipeline from messages and pipelines (flattened), in order.
    pub fn new<S: Into<PipelineStep>>(steps: impl IntoIterator<Item = S>) -> Pipeline {
        let mut messages = Vec::new();
        for step in steps {
            match step.into() {
                PipelineStep::Message(m) => messages.push(m),
                PipelineStep::Pipeline(p) => messages.extend(p.messages),
            }
        }
        Pipeline::link(messages)
    }

    /// Sets each message's `pipe_target` to the next one. Going backwards means each target
    /// already holds its own target, so the chain nests fully, as Dramatiq's shared option dicts
    /// make it.
    fn link(mut messages: Vec<Message>) -> Pipeline {
        for i in (0..messages.len().saturating_sub(1)).rev() {
            let next = messages[i + 1].to_value();
            messages[i].options.insert("pipe_target".into(), next);
        }
        Pipeline { messages }
    }

    /// The messages, in order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// How many stages there are.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The last message: the pipeline's result is its result.
    pub fn last(&self) -> Option<&Message> {
        self.messages.last()
    }

    /// Sends the first message through the global app (see [`App::set_global`]); the others
    /// follow as stages succeed. Returns the pipeline, to read its results.
    pub async fn run(self) -> Result<Pipeline> {
        let app = App::global()?;
        self.run_with(&app, None).await
    }

    /// Sends the first message through `app`, after `delay` if given. As in Dramatiq, the delay
    /// used is the larger of `delay` and the first message's `delay` option. An empty pipeline
    /// sends nothing.
    pub async fn run_with(self, app: &App, delay: Option<Duration>) -> Result<Pipeline> {
        self.send(app, delay).await?;
        Ok(self)
    }

    async fn send(&self, app: &App, delay: Option<Duration>) -> Result<()> {
        let Some(first) = self.messages.first() else {
            return Ok(());
        };
        let own = first
            .options
            .delay()
            .map(|ms| Duration::from_millis(ms.max(0) as u64));
        // Dramatiq: `max(delay or 0, first.delay or 0) or None`, so a zero delay means none.
        let delay = delay.max(own).filter(|d| !d.is_zero());
        app.enqueue(first.clone(), delay).await?;
        Ok(())
    }
}

/// `a | b`: a pipeline of `a` and then `b`, where `b` is a message (typed or not) or a pipeline,
/// whose messages are spliced in.
impl<R: Into<PipelineStep>> BitOr<R> for Message {
    type Output = Pipeline;
    fn bitor(self, rhs: R) -> Pipeline {
        Pipeline::new([PipelineStep::Message(self), rhs.into()])
    }
}

/// `pipe | b`: the pipeline's messages and then `b`, a message (typed or not) or a pipeline.
impl<R: Into<PipelineStep>> BitOr<R> for Pipeline {
    type Output = Pipeline;
    fn bitor(self, rhs: R) -> Pipeline {
        Pipeline::new([PipelineStep::Pipeline(self), rhs.into()])
    }
}

/// `a | b` with a typed message on the left: an untyped [`Pipeline`], as with a [`Message`]. For
/// a pipeline whose stages are checked against each other, see [`pipe`](crate::pipe).
impl<T, R: Into<PipelineStep>> BitOr<R> for TypedMessage<T> {
    type Output = Pipeline;
    fn bitor(self, rhs: R) -> Pipeline {
        Pipeline::new([PipelineStep::Message(self.into_message()), rhs.into()])
    }
}

/// One child of a [`Group`].
#[derive(Clone, Debug)]
pub enum GroupChild {
    /// A message.
    Message(Message),
    /// A pipeline: its result is its last message's.
    Pipeline(Pipeline),
    /// A nested group: its result is the list of its children's.
    Group(Group),
}

impl From<Message> for GroupChild {
    fn from(m: Message) -> GroupChild {
        GroupChild::Message(m)
    }
}

impl From<Pipeline> for GroupChild {
    fn from(p: Pipeline) -> GroupChild {
        GroupChild::Pipeline(p)
    }
}

impl From<Group> for GroupChild {
    fn from(g: Group) -> GroupChild {
        GroupChild::Group(g)
    }
}

/// Messages, pipelines and groups run in parallel. Dramatiq's `group`.
///
/// Results come back in the order the children were added, whatever order they complete in
/// (read them with the result store's `get_results`). Completion callbacks are messages enqueued
/// once every child has succeeded; they need the `GroupCallbacks` middleware.
///
/// ```
/// use dq_core::{group, Message};
///
/// let g = group([
///     Message::new("default", "frobnicate", &(1, 2), &())?,
///     Message::new("default", "frobnicate", &(2, 3), &())?,
/// ])
/// .with_completion_callback(&Message::new("default", "all_done", &(), &())?);
/// assert_eq!(g.len(), 2);
/// assert_eq!(g.completion_callbacks()[0]["actor_name"], "all_done");
/// # Ok::<(), dq_core::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Group {
    children: Vec<GroupChild>,
    completion_callbacks: Vec<Value>,
}

/// Builds a [`Group`] of messages, pipelines or groups.
///
/// ```
/// # use dq_core::{group, pipeline, GroupChild, Message};
/// let m = |a: &str| Message::new("default", a, &(), &()).unwrap();
/// let g = group([GroupChild::from(m("a")), pipeline([m("b"), m("c")]).into()]);
/// assert_eq!(g.len(), 2);
/// ```
pub fn group<C: Into<GroupChild>>(children: impl IntoIterator<Item = C>) -> Group {
    Group::new(children)
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Group {
    /// A group of these children, in order.
    pub fn new<C: Into<GroupChild>>(children: impl IntoIterator<Item = C>) -> Group {
        Group {
            children: children.into_iter().map(Into::into).collect(),
            completion_callbacks: Vec::new(),
        }
    }

    /// The children, in order.
    pub fn children(&self) -> &[GroupChild] {
        &self.children
    }

    /// How many children there are.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }

    /// Adds a message (a [`Message`] or a [`TypedMessage`]) to enqueue once every child has
    /// succeeded (Dramatiq's `add_completion_callback`). It is enqueued as built: same id, no
    /// delay.
    pub fn add_completion_callback(&mut self, message: &impl AsRef<Message>) {
        self.completion_callbacks.push(message.as_ref().to_value());
    }

    /// [`add_completion_callback`](Group::add_completion_callback), builder style.
    pub fn with_completion_callback(mut self, message: &impl AsRef<Message>) -> Group {
        self.add_completion_callback(message);
        self
    }

    /// The completion callbacks, as message objects.
    pub fn completion_callbacks(&self) -> &[Value] {
        &self.completion_callbacks
    }

    /// Sends every child through the global app (see [`App::set_global`]). Returns the group,
    /// to wait for it or read its results.
    pub async fn run(self) -> Result<Group> {
        let app = App::global()?;
        self.run_with(&app, None).await
    }

    /// Sends every child through `app`, each after `delay` if given: messages are enqueued,
    /// pipelines and groups run.
    ///
    /// With completion callbacks, a barrier named by a fresh uuid is created first for as many
    /// parties as there are children, and each child (a pipeline's last message) is sent with
    /// `group_completion_uuid` and `group_completion_callbacks`. That needs a middleware that
    /// provides the barrier (`GroupCallbacks`), and, as in Dramatiq, no nested groups: either
    /// missing is a [`MiddlewareError`] and nothing is sent.
    pub async fn run_with(self, app: &App, delay: Option<Duration>) -> Result<Group> {
        self.send(app, delay).await?;
        Ok(self)
    }

    fn send<'a>(&'a self, app: &'a App, delay: Option<Duration>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.completion_callbacks.is_empty() {
                return send_children(app, self.children.iter(), delay).await;
            }
            let tagged = self.tag_children(app).await?;
            send_children(app, tagged.iter(), delay).await
        })
    }

    /// The children as sent when the group has completion callbacks: barrier created, each
    /// child carrying the group's completion options.
    async fn tag_children(&self, app: &App) -> Result<Vec<GroupChild>> {
        const MW: &str = "GroupCallbacks";
        if self
            .children
            .iter()
            .any(|c| matches!(c, GroupChild::Group(_)))
        {
            return Err(MiddlewareError::new(
                MW,
                "a group with completion callbacks cannot contain groups",
            )
            .into());
        }
        let barrier = app
            .middleware()
            .iter()
            .find_map(|m| m.group_barrier())
            .ok_or_else(|| {
                MiddlewareError::new(
                    MW,
                    "group completion callbacks need the GroupCallbacks middleware, which this \
                     app does not have",
                )
            })?;
        // A fresh barrier on every run: re-running a group must not reuse a cleared one.
        let uuid = new_message_id();
        barrier.create_barrier(&uuid, self.children.len()).await?;
        let tag = |m: &Message| {
            let mut m = m.clone();
            m.options
                .insert("group_completion_uuid".into(), Value::String(uuid.clone()));
            m.options.insert(
                "group_completion_callbacks".into(),
                Value::Array(self.completion_callbacks.clone()),
            );
            m
        };
        Ok(self
            .children
            .iter()
            .map(|child| match child {
                GroupChild::Message(m) => GroupChild::Message(tag(m)),
                GroupChild::Pipeline(p) => {
                    let mut messages = p.messages.clone();
                    if let Some(last) = messages.last_mut() {
                        *last = tag(last);
                    }
                    GroupChild::Pipeline(Pipeline::link(messages))
                }
                GroupChild::Group(g) => GroupChild::Group(g.clone()),
            })
            .collect())
    }
}

async fn send_children(
    app: &App,
    children: impl Iterator<Item = &GroupChild>,
    delay: Option<Duration>,
) -> Result<()> {
    let mut batch = Vec::new();
    for child in children {
        match child {
            // Undelayed messages go in one batch, pipelined where the broker allows.
            GroupChild::Message(m) if delay.is_none() => batch.push(m.clone()),
            GroupChild::Message(m) => {
                app.enqueue(m.clone(), delay).await?;
            }
            GroupChild::Pipeline(p) => p.send(app, delay).await?,
            GroupChild::Group(g) => g.send(app, delay).await?,
        }
    }
    if !batch.is_empty() {
        app.enqueue_many(batch).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(actor: &str, args: Value) -> Message {
        Message::new("default", actor, &args, &()).unwrap()
    }

    #[test]
    fn pipe_targets_nest_fully() {
        let (a, b, c) = (m("a", json!([1])), m("b", json!([])), m("c", json!([])));
        let pipe = pipeline([a.clone(), b.clone(), c.clone()]);
        let msgs = pipe.messages();
        assert_eq!(msgs[0].message_id, a.message_id);
        let t1 = msgs[0].options.pipe_target().unwrap();
        assert_eq!(t1["message_id"], b.message_id.as_str());
        assert_eq!(
            t1["options"]["pipe_target"]["message_id"],
            c.message_id.as_str()
        );
        assert_eq!(t1, &msgs[1].to_value());
        assert!(msgs[2].options.pipe_target().is_none());
    }

    #[test]
    fn pipe_operator_flattens() {
        let (a, b, c, d) = (
            m("a", json!([])),
            m("b", json!([])),
            m("c", json!([])),
            m("d", json!([])),
        );
        let ids = |p: &Pipeline| {
            p.messages()
                .iter()
                .map(|m| m.actor_name.clone())
                .collect::<Vec<_>>()
        };
        let p = a.clone() | b.clone() | c.clone();
        assert_eq!(ids(&p), ["a", "b", "c"]);
        let q = (a.clone() | b.clone()) | (c.clone() | d.clone());
        assert_eq!(ids(&q), ["a", "b", "c", "d"]);
        let r = d | p;
        assert_eq!(ids(&r), ["d", "a", "b", "c"]);
        assert_eq!(
            r.messages()[2].options.pipe_target().unwrap()["actor_name"],
            "c"
        );
    }

    #[test]
    fn relinking_replaces_stale_targets() {
        let p = pipeline([m("a", json!([])), m("b", json!([]))]);
        let mut msgs = p.messages.clone();
        msgs[1].options.insert("x".into(), json!(1));
        let relinked = Pipeline::link(msgs);
        assert_eq!(
            relinked.messages()[0].options.pipe_target().unwrap()["options"]["x"],
            1
        );
    }
}
