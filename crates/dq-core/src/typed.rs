//! Messages that know what their actor returns: [`TypedMessage`] (built, not sent), [`Sent`] (sent,
//! its result readable as that type), and pipelines whose stages are checked against each other
//! at compile time ([`pipe`], [`Stage`], [`TypedPipeline`], [`SentPipeline`]).
//!
//! `#[dq::actor]` makes these: `add::message(1, 2)` is a `TypedMessage<i64>`, `add::send(1, 2)`
//! gives a `Sent<i64>`, `add::piped(1)` a `Stage<i64, i64>`. They are the untyped [`Message`] and
//! [`Pipeline`] underneath, with the type as a marker only, so what goes on the wire is exactly
//! what the untyped APIs send, and each converts into its untyped self where one is wanted.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::app::App;
use crate::composition::{GroupChild, Pipeline, PipelineStep};
use crate::error::{Result, ResultError};
use crate::message::Message;
use crate::result::{read, ResultSource};
use crate::unique::SendOutcome;

/// A message built for an actor whose successful result is a `T`, not sent yet: what
/// `my_actor::message(...)` returns.
///
/// It derefs to [`Message`] and converts into one (`.into()`, [`into_message`]), and goes
/// wherever messages go: [`group`](crate::group), [`pipeline`](crate::pipeline), `|`. Start a
/// typed pipeline with [`pipe`].
///
/// [`into_message`]: TypedMessage::into_message
///
/// ```
/// use dq_core::{group, Message, TypedMessage};
///
/// // `#[dq::actor] fn add(a: i64, b: i64) -> i64` makes these with `add::message(1, 2)?`.
/// let add = |a: i64, b: i64| -> Result<TypedMessage<i64>, dq_core::Error> {
///     Ok(TypedMessage::from_message(Message::new("default", "add", &(a, b), &())?))
/// };
/// let m = add(1, 2)?;
/// assert_eq!(m.args.get(), "[1,2]"); // a `Message` underneath
/// let g = group([add(1, 2)?, add(3, 4)?]);
/// assert_eq!(g.len(), 2);
/// let untyped: Message = m.into();
/// assert_eq!(untyped.actor_name, "add");
/// # Ok::<(), dq_core::Error>(())
/// ```
pub struct TypedMessage<T> {
    message: Message,
    output: PhantomData<fn() -> T>,
}

impl<T> TypedMessage<T> {
    /// Wraps `message`, taking your word that its actor returns a `T` (nothing checks it; a
    /// wrong `T` shows up as [`ResultError::Decode`] when the result is read). The generated
    /// `my_actor::message(...)` is the checked way; this one is for actors dq cannot see, such as
    /// Python ones.
    ///
    /// ```
    /// # use dq_core::{Message, TypedMessage};
    /// let m = Message::new("default", "count_words", &("http://example.com",), &())?;
    /// let typed: TypedMessage<usize> = TypedMessage::from_message(m);
    /// assert_eq!(typed.actor_name, "count_words");
    /// # Ok::<(), dq_core::Error>(())
    /// ```
    pub fn from_message(message: Message) -> TypedMessage<T> {
        TypedMessage {
            message,
            output: PhantomData,
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message, without its type.
    pub fn into_message(self) -> Message {
        self.message
    }
}

/// The impls [`TypedMessage`] and [`Sent`] share: each is a [`Message`] plus a marker of its
/// actor's output type, cloned, shown, compared, borrowed and unwrapped as the message.
macro_rules! message_wrapper {
    ($ty:ident) => {
        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("output", &std::any::type_name::<T>())
                    .field("message", &self.message)
                    .finish()
            }
        }

        /// Compares as the messages do, so a test can compare what it built or sent with what
        /// the broker holds.
        impl<T> PartialEq for $ty<T> {
            fn eq(&self, other: &$ty<T>) -> bool {
                self.message == other.message
            }
        }

        impl<T> PartialEq<Message> for $ty<T> {
            fn eq(&self, other: &Message) -> bool {
                self.message == *other
            }
        }

        impl<T> PartialEq<$ty<T>> for Message {
            fn eq(&self, other: &$ty<T>) -> bool {
                *self == other.message
            }
        }

        impl<T> Deref for $ty<T> {
            type Target = Message;
            fn deref(&self) -> &Message {
                &self.message
            }
        }

        impl<T> AsRef<Message> for $ty<T> {
            fn as_ref(&self) -> &Message {
                &self.message
            }
        }

        impl<T> From<$ty<T>> for Message {
            fn from(m: $ty<T>) -> Message {
                m.message
            }
        }
    };
}

message_wrapper!(TypedMessage);
message_wrapper!(Sent);

impl<T> Clone for TypedMessage<T> {
    fn clone(&self) -> TypedMessage<T> {
        TypedMessage::from_message(self.message.clone())
    }
}

impl<T> Clone for Sent<T> {
    fn clone(&self) -> Sent<T> {
        Sent::with_outcome(self.message.clone(), self.outcome.clone())
    }
}

/// Options and the like may be changed; the actor, and so `T`, stays.
impl<T> DerefMut for TypedMessage<T> {
    fn deref_mut(&mut self) -> &mut Message {
        &mut self.message
    }
}

impl<T> From<TypedMessage<T>> for PipelineStep {
    fn from(m: TypedMessage<T>) -> PipelineStep {
        PipelineStep::Message(m.message)
    }
}

impl<T> From<TypedMessage<T>> for GroupChild {
    fn from(m: TypedMessage<T>) -> GroupChild {
        GroupChild::Message(m.message)
    }
}

/// A message as the broker got it, from an actor whose successful result is a `T`: what
/// `my_actor::send(...)` returns.
///
/// It derefs to the [`Message`] (`sent.message_id`), and reads the actor's result as a `T`
/// from a result store (a [`ResultSource`]: `dq-results`' `RedisBackend` or `MemoryBackend`,
/// with the `Results` middleware storing what the actor returns):
///
/// - [`result`](Sent::result) looks once: [`ResultError::Missing`] if nothing is stored yet;
/// - [`wait_result`](Sent::wait_result) waits up to a timeout: [`ResultError::Timeout`] if
///   nothing came.
///
/// Either gives [`ResultError::Failed`] when the actor failed for good.
///
/// ```
/// use std::time::Duration;
/// use dq_core::{App, ResultSource, Sent};
///
/// // `add::send(1, 2).await?` for `#[dq::actor] fn add(a: i64, b: i64) -> i64` gives the same.
/// # async fn demo(app: &App, backend: &impl ResultSource) -> Result<(), dq_core::Error> {
/// let message = dq_core::Message::new("default", "add", &(1, 2), &())?;
/// let sent: Sent<i64> = Sent::from_message(app.enqueue(message, None).await?);
/// println!("sent {}", sent.message_id);
/// let sum = sent.wait_result(backend, Duration::from_secs(5)).await?; // an i64
/// # let _ = sum;
/// # Ok(()) }
/// ```
pub struct Sent<T> {
    message: Message,
    outcome: SendOutcome,
    output: PhantomData<fn() -> T>,
}

impl<T> Sent<T> {
    /// Wraps a sent `message`, taking your word that its actor returns a `T` (see
    /// [`TypedMessage::from_message`]).
    ///
    /// ```
    /// # use dq_core::{Message, Sent};
    /// let sent: Sent<i64> = Sent::from_message(Message::new("default", "add", &(1, 2), &())?);
    /// assert_eq!(sent.actor_name, "add");
    /// # Ok::<(), dq_core::Error>(())
    /// ```
    pub fn from_message(message: Message) -> Sent<T> {
        Sent::with_outcome(message, SendOutcome::Enqueued)
    }

    /// Wraps a `message` whose send had this `outcome` (what the generated sends return for a
    /// unique, debounced or throttled message; see [`App::send`]).
    ///
    /// ```
    /// # use dq_core::{Message, Sent, SendOutcome};
    /// let m = Message::new("default", "add", &(1, 2), &())?;
    /// let sent: Sent<i64> = Sent::with_outcome(m, SendOutcome::Duplicate { holder: "m0".into() });
    /// assert_eq!(sent.duplicate_of(), Some("m0"));
    /// # Ok::<(), dq_core::Error>(())
    /// ```
    pub fn with_outcome(message: Message, outcome: SendOutcome) -> Sent<T> {
        Sent {
            message,
            outcome,
            output: PhantomData,
        }
    }

    /// What came of the send: [`SendOutcome::Enqueued`] for any send that is not unique;
    /// for a unique, debounced or throttled one, whether its key was free
    /// ([`Enqueued`](SendOutcome::Enqueued)), held by another message that stays
    /// ([`Duplicate`](SendOutcome::Duplicate): this message was **not** enqueued, and its
    /// result never comes; read the holder's instead), or taken from an older message that will
    /// be skipped ([`Replaced`](SendOutcome::Replaced)).
    ///
    /// ```
    /// # use dq_core::{Message, Sent, SendOutcome};
    /// # let sent: Sent<i64> = Sent::from_message(Message::new("default", "add", &(1, 2), &())?);
    /// match sent.outcome() {
    ///     SendOutcome::Enqueued => println!("queued as {}", sent.message_id),
    ///     SendOutcome::Duplicate { holder } => println!("{holder} is already queued"),
    ///     SendOutcome::Replaced { previous } => println!("replaced {previous}"),
    /// }
    /// # Ok::<(), dq_core::Error>(())
    /// ```
    pub fn outcome(&self) -> &SendOutcome {
        &self.outcome
    }

    /// The id of the message holding the key, when this send was a
    /// [`Duplicate`](SendOutcome::Duplicate) and enqueued nothing.
    pub fn duplicate_of(&self) -> Option<&str> {
        match &self.outcome {
            SendOutcome::Duplicate { holder } => Some(holder),
            SendOutcome::Enqueued | SendOutcome::Replaced { .. } => None,
        }
    }

    /// The message as sent.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message as sent, without its type.
    pub fn into_message(self) -> Message {
        self.message
    }

    /// The actor's result, if one is stored now: [`ResultError::Missing`] if not yet,
    /// [`ResultError::Failed`] if the actor failed for good.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use dq_core::{Message, ResultError, ResultSource, Sent};
    /// # struct Empty;
    /// # impl ResultSource for Empty {
    /// #     fn fetch_result<'a>(&'a self, m: &'a Message, _: Option<Duration>)
    /// #         -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, ResultError>> + Send + 'a>> {
    /// #         Box::pin(async move { Err(ResultError::Missing { message_id: m.message_id.clone() }) })
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let backend = Empty;
    /// # let sent = Sent::<i64>::from_message(Message::new("default", "add", &(1, 2), &())?);
    /// match sent.result(&backend).await {
    ///     Ok(sum) => println!("done: {sum}"),
    ///     Err(e) if e.is_missing() => println!("not done yet"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn result(&self, source: &(impl ResultSource + ?Sized)) -> Result<T, ResultError>
    where
        T: DeserializeOwned,
    {
        read(source, &self.message, None).await
    }

    /// The actor's result, waiting up to `timeout` for it: [`ResultError::Timeout`] if none
    /// came, [`ResultError::Failed`] if the actor failed for good.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use dq_core::{Message, ResultError, ResultSource, Sent};
    /// # struct Failing;
    /// # impl ResultSource for Failing {
    /// #     fn fetch_result<'a>(&'a self, m: &'a Message, _: Option<Duration>)
    /// #         -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, ResultError>> + Send + 'a>> {
    /// #         Box::pin(async move { Err(ResultError::Failed {
    /// #             message_id: m.message_id.clone(), type_name: "Overflow".into(), message: "too big".into() }) })
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let backend = Failing;
    /// # let sent = Sent::<i64>::from_message(Message::new("default", "add", &(1, 2), &())?);
    /// match sent.wait_result(&backend, Duration::from_secs(5)).await {
    ///     Ok(sum) => println!("{sum}"),
    ///     Err(ResultError::Failed { type_name, message, .. }) => {
    ///         assert_eq!((type_name.as_str(), message.as_str()), ("Overflow", "too big"));
    ///     }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_result(
        &self,
        source: &(impl ResultSource + ?Sized),
        timeout: Duration,
    ) -> Result<T, ResultError>
    where
        T: DeserializeOwned,
    {
        read(source, &self.message, Some(timeout)).await
    }
}

/// A pipeline stage that takes an `In` (the previous stage's result) and returns an `Out`: what
/// `my_actor::piped(...)` returns, for [`TypedPipeline::then`].
///
/// Its message carries every argument but the last; the Pipelines middleware appends the
/// previous stage's result as the last positional argument when it enqueues the stage, as
/// Dramatiq does. For `#[dq::actor] fn scale(factor: i64, x: i64) -> i64`, `scale::piped(10)`
/// is a `Stage<i64, i64>` whose message has `args` `[10]`.
///
/// ```
/// use dq_core::{Message, Stage};
///
/// let stage: Stage<i64, i64> =
///     Stage::from_message(Message::new("default", "scale", &(10,), &())?);
/// assert_eq!(stage.message().args.get(), "[10]");
/// # Ok::<(), dq_core::Error>(())
/// ```
pub struct Stage<In, Out> {
    message: Message,
    types: PhantomData<fn(In) -> Out>,
}

impl<In, Out> Stage<In, Out> {
    /// Wraps `message`, taking your word that its actor's last parameter is an `In` that the
    /// message leaves out, and that it returns an `Out` (see [`TypedMessage::from_message`]).
    pub fn from_message(message: Message) -> Stage<In, Out> {
        Stage {
            message,
            types: PhantomData,
        }
    }

    /// The message, without the argument the previous stage fills in.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message, without its types.
    pub fn into_message(self) -> Message {
        self.message
    }
}

impl<In, Out> Clone for Stage<In, Out> {
    fn clone(&self) -> Stage<In, Out> {
        Stage::from_message(self.message.clone())
    }
}

impl<In, Out> fmt::Debug for Stage<In, Out> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage")
            .field("input", &std::any::type_name::<In>())
            .field("output", &std::any::type_name::<Out>())
            .field("message", &self.message)
            .finish()
    }
}

/// Starts a typed pipeline with `first`: add stages with [`TypedPipeline::then`], send it with
/// [`TypedPipeline::run`].
///
/// ```
/// use dq_core::{pipe, Message, Stage, TypedMessage};
///
/// // What `#[dq::actor]` makes for `fn add(a: i64, b: i64) -> i64` and
/// // `fn describe(label: String, x: i64) -> String`: `add::message(1, 2)?`, `describe::piped(..)?`.
/// let add = TypedMessage::<i64>::from_message(Message::new("default", "add", &(1, 2), &())?);
/// let describe: Stage<i64, String> =
///     Stage::from_message(Message::new("default", "describe", &("total",), &())?);
///
/// let pipeline = pipe(add).then(describe); // a TypedPipeline<String>
/// let untyped = pipeline.into_pipeline();
/// assert_eq!(untyped.len(), 2);
/// assert_eq!(untyped.messages()[0].options.pipe_target().unwrap()["actor_name"], "describe");
/// # Ok::<(), dq_core::Error>(())
/// ```
///
/// A stage that takes something other than the previous stage's result does not compile:
///
/// ```compile_fail,E0308
/// # use dq_core::{pipe, Message, Stage, TypedMessage};
/// let add = TypedMessage::<i64>::from_message(Message::new("default", "add", &(1, 2), &())?);
/// let shout: Stage<String, String> =
///     Stage::from_message(Message::new("default", "shout", &(), &())?);
/// let pipeline = pipe(add).then(shout); // expected `Stage<i64, _>`, found `Stage<String, String>`
/// # Ok::<(), dq_core::Error>(())
/// ```
pub fn pipe<T>(first: TypedMessage<T>) -> TypedPipeline<T> {
    TypedPipeline {
        messages: vec![first.message],
        output: PhantomData,
    }
}

/// A pipeline whose last stage returns a `T`, each stage checked at compile time to take what
/// the one before returns. Start one with [`pipe`].
///
/// It is built and sent exactly as [`Pipeline`] is (each message carries the next in its
/// `pipe_target`), so Python workers run its stages too; [`into_pipeline`] gives that
/// [`Pipeline`], and it goes into a [`Group`](crate::Group) as one child.
///
/// [`into_pipeline`]: TypedPipeline::into_pipeline
pub struct TypedPipeline<T> {
    messages: Vec<Message>,
    output: PhantomData<fn() -> T>,
}

impl<T> TypedPipeline<T> {
    /// Adds `stage`, which is given this pipeline's result as its last argument.
    ///
    /// A `pipe_ignore` option on the stage's message is dropped: the stage needs the result.
    ///
    /// ```
    /// use dq_core::{pipe, Message, Stage, TypedMessage, TypedPipeline};
    ///
    /// // `count::message("a b".into())?` and `double::piped()?` with `#[dq::actor]`.
    /// let count = TypedMessage::<usize>::from_message(Message::new("default", "count", &("a b",), &())?);
    /// let double: Stage<usize, usize> =
    ///     Stage::from_message(Message::new("default", "double", &(), &())?);
    /// let pipeline: TypedPipeline<usize> = pipe(count).then(double);
    /// assert_eq!(pipeline.into_pipeline().len(), 2);
    /// # Ok::<(), dq_core::Error>(())
    /// ```
    pub fn then<U>(mut self, stage: Stage<T, U>) -> TypedPipeline<U> {
        let mut message = stage.message;
        message.options.remove("pipe_ignore");
        self.messages.push(message);
        TypedPipeline {
            messages: self.messages,
            output: PhantomData,
        }
    }

    /// Adds `message` as a stage that runs after this pipeline's last one but is not given its
    /// result: it is sent with `pipe_ignore`, Dramatiq's option for that.
    ///
    /// ```
    /// use dq_core::{pipe, Message, TypedMessage};
    ///
    /// let bust = TypedMessage::<()>::from_message(Message::new("default", "bust_caches", &(), &())?);
    /// let prepare =
    ///     TypedMessage::<u32>::from_message(Message::new("default", "prepare_codes", &(), &())?);
    /// let pipeline = pipe(bust).then_message(prepare).into_pipeline(); // result: a u32
    /// assert_eq!(pipeline.messages()[1].options.pipe_ignore(), Some(true));
    /// # Ok::<(), dq_core::Error>(())
    /// ```
    pub fn then_message<U>(mut self, message: TypedMessage<U>) -> TypedPipeline<U> {
        let mut message = message.message;
        message
            .options
            .insert("pipe_ignore".into(), Value::Bool(true));
        self.messages.push(message);
        TypedPipeline {
            messages: self.messages,
            output: PhantomData,
        }
    }

    /// The untyped [`Pipeline`]: the same messages, linked.
    pub fn into_pipeline(self) -> Pipeline {
        Pipeline::new(self.messages)
    }

    /// Sends the first message through the current app ([`App::current`]: the app entered with
    /// `app.scope(..)`, the worker's app inside an actor, else the global one); the others follow
    /// as stages succeed. Returns the pipeline, to read its result.
    ///
    /// ```
    /// use dq_core::{pipe, App, TypedMessage};
    ///
    /// # async fn demo(app: &App) -> Result<(), dq_core::Error> {
    /// # let first = TypedMessage::<u64>::from_message(dq_core::Message::new("default", "count", &(), &())?);
    /// // In an actor, or under `app.scope(..)`, this goes through that app.
    /// let sent = app.scope(pipe(first).run()).await?;
    /// println!("the result will be {}'s", sent.last_message().actor_name);
    /// # Ok(()) }
    /// ```
    pub async fn run(self) -> Result<SentPipeline<T>> {
        let app = App::current()?;
        self.run_with(&app, None).await
    }

    /// Sends the first message through `app`, after `delay` if given (the larger of `delay` and
    /// the first message's `delay` option, as [`Pipeline::run_with`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use dq_core::{pipe, App, ResultSource, Stage, TypedMessage};
    ///
    /// // With `#[dq::actor]`: `pipe(add::message(1, 2)?).then(describe::piped("total".into())?)`.
    /// # async fn demo(app: &App, backend: &impl ResultSource) -> Result<(), dq_core::Error> {
    /// # let add = TypedMessage::<i64>::from_message(dq_core::Message::new("default", "add", &(1, 2), &())?);
    /// # let describe = Stage::<i64, String>::from_message(dq_core::Message::new("default", "describe", &("total",), &())?);
    /// let sent = pipe(add)
    ///     .then(describe)
    ///     .run_with(app, Some(Duration::from_secs(1)))
    ///     .await?;
    /// let text: String = sent.wait_result(backend, Duration::from_secs(5)).await?;
    /// # let _ = text;
    /// # Ok(()) }
    /// ```
    pub async fn run_with(self, app: &App, delay: Option<Duration>) -> Result<SentPipeline<T>> {
        let pipeline = self.into_pipeline().run_with(app, delay).await?;
        Ok(SentPipeline {
            pipeline,
            output: PhantomData,
        })
    }
}

impl<T> Clone for TypedPipeline<T> {
    fn clone(&self) -> TypedPipeline<T> {
        TypedPipeline {
            messages: self.messages.clone(),
            output: PhantomData,
        }
    }
}

impl<T> fmt::Debug for TypedPipeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedPipeline")
            .field("output", &std::any::type_name::<T>())
            .field("messages", &self.messages)
            .finish()
    }
}

impl<T> From<TypedPipeline<T>> for Pipeline {
    fn from(p: TypedPipeline<T>) -> Pipeline {
        p.into_pipeline()
    }
}

impl<T> From<TypedPipeline<T>> for PipelineStep {
    fn from(p: TypedPipeline<T>) -> PipelineStep {
        PipelineStep::Pipeline(p.into_pipeline())
    }
}

impl<T> From<TypedPipeline<T>> for GroupChild {
    fn from(p: TypedPipeline<T>) -> GroupChild {
        GroupChild::Pipeline(p.into_pipeline())
    }
}

/// A typed pipeline as sent, whose last stage returns a `T`: what [`TypedPipeline::run`]
/// returns. It derefs to the [`Pipeline`]; [`result`](SentPipeline::result) and
/// [`wait_result`](SentPipeline::wait_result) read the last stage's result as
/// [`Sent`]'s do (a stage that failed for good means the last one never runs: waiting ends in
/// [`ResultError::Timeout`]).
///
/// ```
/// use std::time::Duration;
/// use dq_core::{pipe, App, ResultSource, TypedMessage};
///
/// # async fn demo(app: &App, backend: &impl ResultSource) -> Result<(), dq_core::Error> {
/// # let first = TypedMessage::<u64>::from_message(dq_core::Message::new("default", "count", &(), &())?);
/// let sent = pipe(first).run_with(app, None).await?;
/// assert_eq!(sent.len(), 1); // a `Pipeline` underneath
/// match sent.result(backend).await {
///     Ok(count) => println!("{count}"),
///     Err(e) if e.is_missing() => println!("still running"),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok(()) }
/// ```
pub struct SentPipeline<T> {
    pipeline: Pipeline,
    output: PhantomData<fn() -> T>,
}

impl<T> SentPipeline<T> {
    /// The pipeline as sent.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The pipeline as sent, without its type.
    pub fn into_pipeline(self) -> Pipeline {
        self.pipeline
    }

    /// The last stage's message, whose result is the pipeline's.
    pub fn last_message(&self) -> &Message {
        // A typed pipeline starts with a message and only grows.
        self.pipeline
            .last()
            .expect("a typed pipeline has at least one stage")
    }

    /// The last stage's result, if one is stored now (see [`Sent::result`]).
    pub async fn result(&self, source: &(impl ResultSource + ?Sized)) -> Result<T, ResultError>
    where
        T: DeserializeOwned,
    {
        read(source, self.last_message(), None).await
    }

    /// The last stage's result, waiting up to `timeout` for it (see [`Sent::wait_result`]).
    pub async fn wait_result(
        &self,
        source: &(impl ResultSource + ?Sized),
        timeout: Duration,
    ) -> Result<T, ResultError>
    where
        T: DeserializeOwned,
    {
        read(source, self.last_message(), Some(timeout)).await
    }
}

impl<T> Clone for SentPipeline<T> {
    fn clone(&self) -> SentPipeline<T> {
        SentPipeline {
            pipeline: self.pipeline.clone(),
            output: PhantomData,
        }
    }
}

impl<T> fmt::Debug for SentPipeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentPipeline")
            .field("output", &std::any::type_name::<T>())
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

impl<T> Deref for SentPipeline<T> {
    type Target = Pipeline;
    fn deref(&self) -> &Pipeline {
        &self.pipeline
    }
}

impl<T> From<SentPipeline<T>> for Pipeline {
    fn from(p: SentPipeline<T>) -> Pipeline {
        p.pipeline
    }
}

/// The `T` of `Result<T, E>`: the type an actor returning a `Result` gives when it succeeds,
/// for the `Output` alias `#[dq::actor]` generates. A trait rather than the macro reading the
/// type's generics, so that aliases such as `io::Result<T>` work too.
#[doc(hidden)]
pub trait ResultOk {
    /// `T`.
    type Ok;
}

impl<T, E> ResultOk for std::result::Result<T, E> {
    type Ok = T;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::composition::{group, pipeline};

    /// Results by message id; with a wait, a missing one is a timeout. Records each wait asked.
    #[derive(Default)]
    struct Stored {
        values: HashMap<String, std::result::Result<Value, (String, String)>>,
        waits: Mutex<Vec<Option<Duration>>>,
    }

    impl ResultSource for Stored {
        fn fetch_result<'a>(
            &'a self,
            message: &'a Message,
            wait: Option<Duration>,
        ) -> Pin<Box<dyn Future<Output = std::result::Result<Value, ResultError>> + Send + 'a>>
        {
            Box::pin(async move {
                self.waits.lock().unwrap().push(wait);
                let message_id = message.message_id.clone();
                match self.values.get(&message.message_id) {
                    Some(Ok(v)) => Ok(v.clone()),
                    Some(Err((type_name, text))) => Err(ResultError::Failed {
                        message_id,
                        type_name: type_name.clone(),
                        message: text.clone(),
                    }),
                    None if wait.is_some() => Err(ResultError::Timeout { message_id }),
                    None => Err(ResultError::Missing { message_id }),
                }
            })
        }
    }

    fn m(actor: &str, args: Value) -> Message {
        Message::new("default", actor, &args, &()).unwrap()
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn sent_reads_its_type_and_tells_errors_apart() {
        let ok = Sent::<Vec<i64>>::from_message(m("a", json!([])));
        let failed = Sent::<i64>::from_message(m("b", json!([])));
        let missing = Sent::<i64>::from_message(m("c", json!([])));
        let mistyped = Sent::<String>::from_message(ok.message().clone());
        let mut store = Stored::default();
        store
            .values
            .insert(ok.message_id.clone(), Ok(json!([1, 2])));
        store.values.insert(
            failed.message_id.clone(),
            Err(("ValueError".into(), "boom".into())),
        );
        block_on(async {
            assert_eq!(ok.result(&store).await.unwrap(), [1, 2]);
            let wait = Duration::from_millis(5);
            assert_eq!(ok.wait_result(&store, wait).await.unwrap(), [1, 2]);
            match failed.result(&store).await.unwrap_err() {
                ResultError::Failed {
                    type_name, message, ..
                } => assert_eq!(
                    (type_name.as_str(), message.as_str()),
                    ("ValueError", "boom")
                ),
                other => panic!("{other}"),
            }
            assert!(missing.result(&store).await.unwrap_err().is_missing());
            assert!(missing
                .wait_result(&store, wait)
                .await
                .unwrap_err()
                .is_timeout());
            let e = mistyped.result(&store).await.unwrap_err();
            assert!(matches!(e, ResultError::Decode { .. }), "{e}");
            // Through a `dyn` and an `Arc`.
            let dynamic: &dyn ResultSource = &store;
            assert_eq!(ok.result(dynamic).await.unwrap(), [1, 2]);
            let shared = std::sync::Arc::new(store);
            assert_eq!(ok.result(&shared).await.unwrap(), [1, 2]);
            assert_eq!(
                *shared.waits.lock().unwrap(),
                [None, Some(wait), None, None, Some(wait), None, None, None]
            );
        });
    }

    #[test]
    fn unit_results_read_from_null() {
        let sent = Sent::<()>::from_message(m("a", json!([])));
        let mut store = Stored::default();
        store
            .values
            .insert(sent.message_id.clone(), Ok(Value::Null));
        block_on(async { sent.result(&store).await.unwrap() });
    }

    #[test]
    fn typed_pipelines_build_what_untyped_ones_do() {
        let a = TypedMessage::<i64>::from_message(m("add", json!([1, 2])));
        let b = Stage::<i64, i64>::from_message(m("scale", json!([10])));
        let c = Stage::<i64, String>::from_message(m("describe", json!(["total"])));
        let untyped = pipeline([
            a.message().clone(),
            b.message().clone(),
            c.message().clone(),
        ]);
        let typed: TypedPipeline<String> = pipe(a).then(b).then(c);
        assert_eq!(typed.into_pipeline(), untyped);
    }

    #[test]
    fn then_message_ignores_the_result_and_then_needs_it() {
        let first = TypedMessage::<i64>::from_message(m("a", json!([])));
        let mut ignoring = m("b", json!([]));
        ignoring
            .options
            .insert("pipe_ignore".into(), Value::Bool(true));
        let stage = Stage::<u8, u8>::from_message(ignoring);
        let p = pipe(first)
            .then_message(TypedMessage::<u8>::from_message(m("c", json!([]))))
            .then(stage)
            .into_pipeline();
        let msgs = p.messages();
        assert_eq!(msgs[1].options.pipe_ignore(), Some(true));
        assert_eq!(msgs[2].options.pipe_ignore(), None);
        assert_eq!(
            msgs[0].options.pipe_target().unwrap()["options"]["pipe_ignore"],
            true
        );
    }

    #[test]
    fn typed_messages_go_where_messages_go() {
        let a = TypedMessage::<i64>::from_message(m("a", json!([])));
        let b = TypedMessage::<String>::from_message(m("b", json!([])));
        let names = |p: &Pipeline| {
            p.messages()
                .iter()
                .map(|m| m.actor_name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&(a.clone() | b.clone())), ["a", "b"]);
        assert_eq!(names(&(a.message().clone() | b.clone())), ["a", "b"]);
        assert_eq!(
            names(&((a.clone() | b.clone()) | a.clone())),
            ["a", "b", "a"]
        );
        let g = group([
            GroupChild::from(a.clone()),
            pipe(a.clone()).into(),
            b.clone().into(),
        ])
        .with_completion_callback(&b)
        .with_completion_callback(b.message());
        assert_eq!(g.len(), 3);
        assert!(matches!(&g.children()[1], GroupChild::Pipeline(p) if p.len() == 1));
        assert_eq!(g.completion_callbacks().len(), 2);
        assert_eq!(g.completion_callbacks()[0]["actor_name"], "b");
    }
}
