//! `App`: a broker, its middleware and its actors, the thing producers send through.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tracing::Instrument;

use crate::actor::{Actor, Registry};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::error::{Error, Result};
use crate::message::{delay_queue_name, now_ms, Message};
use crate::middleware::{Hooks, Middleware};
use crate::options::BUILTIN_ACTOR_OPTIONS;
use crate::state::{StateBuildError, StateBuilder, StateKey, States};
use crate::unique::{SendOutcome, UniqueLock};

/// The default limit on an encoded message: 8 MiB. Larger messages are refused at send and
/// dead-lettered by the worker.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 8 * 1024 * 1024;

/// A broker with its middleware stack and actors: Dramatiq's `Broker` object. Cheap to clone.
///
/// Producers send through an `App` (usually the global one set with [`App::set_global`]); the
/// worker runs one. Enqueueing runs the `before_enqueue` hooks, routes a delayed message to the
/// delay queue with its `eta`, enforces the size limit, hands it to the broker and runs the
/// `after_enqueue` hooks.
///
/// ```
/// # use dq_core::{App, Message};
/// # async fn demo(broker: impl dq_core::Broker) -> Result<(), dq_core::Error> {
/// let app = App::builder(broker).build()?;
/// let msg = Message::new("default", "add", &(1, 2), &())?;
/// let sent = app.enqueue(msg, None).await?;
/// println!("sent {}", sent.message_id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Arc<dyn Broker>,
    middleware: Vec<Arc<dyn Middleware>>,
    before_enqueue: Vec<Arc<dyn Middleware>>,
    after_enqueue: Vec<Arc<dyn Middleware>>,
    registry: Registry,
    max_message_size: usize,
    states: States,
    state_builders: Vec<StateBuilder>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("broker", &self.inner.broker.kind())
            .field(
                "middleware",
                &self
                    .inner
                    .middleware
                    .iter()
                    .map(|m| m.name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .field("actors", &self.inner.registry.len())
            .field("states", &self.inner.states)
            .finish()
    }
}

/// Builds an [`App`].
pub struct AppBuilder {
    broker: Arc<dyn Broker>,
    middleware: Vec<Arc<dyn Middleware>>,
    actors: Vec<Actor>,
    include_linked: bool,
    max_message_size: usize,
    states: States,
    state_builders: Vec<StateBuilder>,
}

impl AppBuilder {
    /// Adds application state that actors take as a [`State<T>`](crate::State) parameter: a
    /// database pool, an HTTP client, settings. One value per type (a later one replaces an
    /// earlier one); wrap values in a newtype to hold two of one type.
    ///
    /// ```
    /// #[derive(Clone)]
    /// struct Mailer { from: String }
    ///
    /// # fn demo(broker: impl dq_core::Broker) -> Result<(), dq_core::Error> {
    /// let app = dq_core::App::builder(broker)
    ///     .state(Mailer { from: "shop@example.com".into() })
    ///     .build()?;
    /// assert!(app.states().get::<Mailer>().is_some());
    /// # Ok(()) }
    /// ```
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> AppBuilder {
        self.states.insert(value);
        self
    }

    /// Like [`AppBuilder::state`], for a value shared already (the test or the producer keeps a
    /// handle on it too).
    pub fn state_arc<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> AppBuilder {
        self.states.insert_arc(value);
        self
    }

    /// Adds state built by `make` when a worker of this app starts, before it consumes: a pool
    /// that needs async set-up. A producer never runs it. The worker does not start when `make`
    /// fails, and says which state failed and why.
    ///
    /// ```
    /// struct Db { url: String }
    ///
    /// async fn connect(url: &str) -> Result<Db, std::io::Error> {
    ///     Ok(Db { url: url.to_owned() })
    /// }
    ///
    /// # fn demo(broker: impl dq_core::Broker) -> Result<(), dq_core::Error> {
    /// let app = dq_core::App::builder(broker)
    ///     .state_with(|| connect("postgres://localhost/shop"))
    ///     .build()?;
    /// assert!(app.states().get::<Db>().is_none()); // built by the worker at boot
    /// # Ok(()) }
    /// ```
    pub fn state_with<T, F, Fut, E>(mut self, make: F) -> AppBuilder
    where
        T: Send + Sync + 'static,
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<StateBuildError>,
    {
        self.state_builders.push(StateBuilder::new(make));
        self
    }

    /// Adds a middleware at the end of the stack.
    pub fn middleware(mut self, m: impl Middleware) -> AppBuilder {
        self.middleware.push(Arc::new(m));
        self
    }

    /// Adds already-shared middleware at the end of the stack, in order.
    pub fn middleware_arcs(
        mut self,
        ms: impl IntoIterator<Item = Arc<dyn Middleware>>,
    ) -> AppBuilder {
        self.middleware.extend(ms);
        self
    }

    /// Registers an actor by hand (actors made with `#[dq::actor]` are registered already).
    pub fn actor(mut self, actor: Actor) -> AppBuilder {
        self.actors.push(actor);
        self
    }

    /// Leaves out the `#[dq::actor]`s linked into the binary, which an app includes by default:
    /// the app then knows only the actors given to [`AppBuilder::actor`] (an admin tool, or a
    /// producer that must not see the worker's actors).
    pub fn without_linked_actors(mut self) -> AppBuilder {
        self.include_linked = false;
        self
    }

    /// The largest encoded message allowed (default [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub fn max_message_size(mut self, bytes: usize) -> AppBuilder {
        self.max_message_size = bytes;
        self
    }

    /// Builds the app, checking that actor names are unique and that every actor option is known
    /// to dq or declared by a middleware.
    pub fn build(self) -> Result<App> {
        let mut registry = if self.include_linked {
            Registry::linked().map_err(clone_registry_error)?.clone()
        } else {
            Registry::default()
        };
        for a in self.actors {
            registry.register(a)?;
        }
        for actor in registry.iter() {
            for key in actor.options.extra.keys() {
                let known = BUILTIN_ACTOR_OPTIONS.contains(&key.as_str())
                    || self
                        .middleware
                        .iter()
                        .any(|m| m.actor_options().contains(&key.as_str()));
                if !known {
                    return Err(Error::UnknownActorOption {
                        actor: actor.name.clone(),
                        option: key.clone(),
                    });
                }
            }
        }
        let with = |h: Hooks| -> Vec<Arc<dyn Middleware>> {
            self.middleware
                .iter()
                .filter(|m| m.hooks().contains(h))
                .cloned()
                .collect()
        };
        let before_enqueue = with(Hooks::BEFORE_ENQUEUE);
        let mut after_enqueue = with(Hooks::AFTER_ENQUEUE);
        after_enqueue.reverse();
        Ok(App {
            inner: Arc::new(Inner {
                broker: self.broker,
                middleware: self.middleware,
                before_enqueue,
                after_enqueue,
                registry,
                max_message_size: self.max_message_size,
                states: self.states,
                state_builders: self.state_builders,
            }),
        })
    }
}

/// Why an app's states are not complete: what stops a worker from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// An actor takes a state the app does not hold.
    #[error(
        "actor {actor:?} takes State<{type_name}>, but the app holds no {type_name}: add it \
         with AppBuilder::state(...) or state_with(...)"
    )]
    Missing {
        /// The actor.
        actor: String,
        /// The state's type.
        type_name: &'static str,
    },
    /// A state given to [`AppBuilder::state_with`] could not be built.
    #[error("building state {type_name} failed")]
    Build {
        /// The state's type.
        type_name: &'static str,
        /// Why.
        #[source]
        source: StateBuildError,
    },
}

fn clone_registry_error(e: &Error) -> Error {
    match e {
        Error::DuplicateActor { name } => Error::DuplicateActor { name: name.clone() },
        Error::InvalidQueueName(q) => Error::InvalidQueueName(q.clone()),
        other => Error::UnknownActor(other.to_string()),
    }
}

static GLOBAL: RwLock<Option<App>> = RwLock::new(None);

thread_local! {
    /// The app entered on this thread ([`App::enter`], or [`App::scope`] while its future is
    /// polled), innermost first.
    static ENTERED: RefCell<Option<App>> = const { RefCell::new(None) };
}

/// Restores the previously entered app when dropped, also on a panic.
pub(crate) struct Entered(Option<App>);

impl Entered {
    pub(crate) fn set(app: App) -> Entered {
        Entered(ENTERED.with(|c| c.replace(Some(app))))
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let prev = self.0.take();
        ENTERED.with(|c| *c.borrow_mut() = prev);
    }
}

/// A future that runs with an app entered: what [`App::scope`] returns.
#[must_use = "futures do nothing unless awaited"]
pub struct AppScope<F> {
    app: App,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for AppScope<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let _entered = Entered::set(this.app.clone());
        this.fut.as_mut().poll(cx)
    }
}

impl<F> std::fmt::Debug for AppScope<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppScope").field("app", &self.app).finish()
    }
}

impl App {
    /// Starts building an app on `broker`, with no middleware.
    pub fn builder(broker: impl Broker) -> AppBuilder {
        App::builder_shared(Arc::new(broker))
    }

    /// Like [`App::builder`], for a broker that is already shared (an `Arc<dyn Broker>`).
    pub fn builder_shared(broker: Arc<dyn Broker>) -> AppBuilder {
        AppBuilder {
            broker,
            middleware: Vec::new(),
            actors: Vec::new(),
            include_linked: true,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            states: States::default(),
            state_builders: Vec::new(),
        }
    }

    /// Makes this the app that `my_actor::send(...)` uses, replacing any earlier one.
    pub fn set_global(&self) {
        *GLOBAL.write().unwrap_or_else(|p| p.into_inner()) = Some(self.clone());
    }

    /// The global app, if one was set.
    pub fn global() -> Result<App> {
        GLOBAL
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::NoGlobalApp)
    }

    /// The app that `my_actor::send(...)` sends through here: the innermost one entered with
    /// [`App::scope`] or [`App::enter`]; inside an actor, the app of the worker running it; else
    /// the global app ([`App::set_global`]).
    ///
    /// So two tests in one binary, each with its own app entered, never send through each
    /// other's broker, and an actor's follow-up messages go to its own worker's broker.
    ///
    /// ```
    /// # fn demo(broker: impl dq_core::Broker) -> Result<(), dq_core::Error> {
    /// let app = dq_core::App::builder(broker).build()?;
    /// app.enter(|| assert!(dq_core::App::current().unwrap().same_as(&app)));
    /// # Ok(()) }
    /// ```
    pub fn current() -> Result<App> {
        match ENTERED.with(|c| c.borrow().clone()) {
            Some(app) => Ok(app),
            None => App::global(),
        }
    }

    /// Runs `fut` with this app entered: every poll of it, on whatever thread, sees this app as
    /// [`App::current`]. Tasks it spawns do not inherit the scope; wrap them too.
    ///
    /// ```
    /// # async fn demo(broker: impl dq_core::Broker) -> Result<(), dq_core::Error> {
    /// let app = dq_core::App::builder(broker).build()?;
    /// app.scope(async {
    ///     // my_actor::send(...).await? goes through `app` here
    ///     assert!(dq_core::App::current().unwrap().same_as(&app));
    /// })
    /// .await;
    /// # Ok(()) }
    /// ```
    pub fn scope<F: Future>(&self, fut: F) -> AppScope<F> {
        AppScope {
            app: self.clone(),
            fut: Box::pin(fut),
        }
    }

    /// Runs `f` with this app entered on this thread (see [`App::scope`] for async code).
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _entered = Entered::set(self.clone());
        f()
    }

    /// Whether `self` and `other` are handles on the same app.
    pub fn same_as(&self, other: &App) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The states given to [`AppBuilder::state`]. A worker adds those of
    /// [`AppBuilder::state_with`] when it starts ([`App::build_states`]).
    pub fn states(&self) -> &States {
        &self.inner.states
    }

    /// Every state: those given to [`AppBuilder::state`], then those of
    /// [`AppBuilder::state_with`], built in the order given. Then checks that every actor on
    /// one of `queues` has its states (a worker for other queues does not need theirs). A
    /// worker calls this once as it starts, with the queues it consumes.
    pub async fn build_states(&self, queues: &[String]) -> std::result::Result<States, StateError> {
        let mut states = self.inner.states.clone();
        for b in &self.inner.state_builders {
            b.build_into(&mut states)
                .await
                .map_err(|source| StateError::Build {
                    type_name: b.key().type_name(),
                    source,
                })?;
        }
        let mut actors: Vec<&Arc<Actor>> = self
            .inner
            .registry
            .iter()
            .filter(|a| queues.iter().any(|q| *q == a.options.queue_name))
            .collect();
        actors.sort_by(|a, b| a.name.cmp(&b.name));
        for actor in actors {
            if let Some(key) = actor.states.iter().find(|k| !states.contains(k)) {
                return Err(StateError::Missing {
                    actor: actor.name.clone(),
                    type_name: key.type_name(),
                });
            }
        }
        Ok(states)
    }

    /// Whether any actor takes a state of this key (for tools listing what an app needs).
    pub fn needs_state(&self, key: &StateKey) -> bool {
        self.inner.registry.iter().any(|a| a.states.contains(key))
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Closes the broker ([`Broker::close`]): what it still buffers is delivered first. Call it
    /// before a producer exits.
    ///
    /// ```no_run
    /// # async fn demo(app: dq_core::App) -> Result<(), dq_core::BrokerError> {
    /// // ... send messages ...
    /// app.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) -> Result<(), BrokerError> {
        self.inner.broker.close().await
    }

    /// The middleware stack, in the order before-hooks run.
    pub fn middleware(&self) -> &[Arc<dyn Middleware>] {
        &self.inner.middleware
    }

    /// The first middleware of type `T`, among those that expose themselves through
    /// [`Middleware::as_any`].
    ///
    /// ```
    /// # fn demo(app: dq_core::App) {
    /// struct Mine;
    /// assert!(app.find_middleware::<Mine>().is_none());
    /// # }
    /// ```
    pub fn find_middleware<T: std::any::Any>(&self) -> Option<&T> {
        self.inner
            .middleware
            .iter()
            .find_map(|m| m.as_any().and_then(|a| a.downcast_ref::<T>()))
    }

    /// The middleware implementing hook `h`, in before-hook order.
    pub fn middleware_with(&self, h: Hooks) -> Vec<Arc<dyn Middleware>> {
        self.inner
            .middleware
            .iter()
            .filter(|m| m.hooks().contains(h))
            .cloned()
            .collect()
    }

    /// The actors.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// One actor by name.
    pub fn actor(&self, name: &str) -> Option<&Arc<Actor>> {
        self.inner.registry.get(name)
    }

    /// The encoded-size limit.
    pub fn max_message_size(&self) -> usize {
        self.inner.max_message_size
    }

    /// Enqueues `message`, after `delay` if given (even a zero delay goes through the delay queue,
    /// as in Dramatiq). Returns the message as the broker got it.
    ///
    /// The hooks and the broker call run in a `dq.enqueue` span (`tracing`, level INFO) with
    /// the message id, actor and queue, and the OpenTelemetry messaging fields
    /// (`otel.kind = "producer"`) a `tracing-opentelemetry` layer understands.
    pub async fn enqueue(&self, message: Message, delay: Option<Duration>) -> Result<Message> {
        let span = enqueue_span(&message, delay);
        self.enqueue_inner(message, delay).instrument(span).await
    }

    /// Sends `message` as a producer's send does (`my_actor::send(..)` comes here): like
    /// [`enqueue`](App::enqueue), and when the message or its actor asks for it (the
    /// `unique_for` / `debounce` / `throttle` of [`SendOptions`](crate::SendOptions) or of the
    /// actor's options), as a unique, debounced or throttled message through
    /// [`Broker::enqueue_unique`], the lock written into the message's options so that the
    /// worker releases it. Returns the message and what came of the send: a
    /// [`SendOutcome::Duplicate`] enqueued nothing (and ran no `after_enqueue` hook).
    ///
    /// Only a send takes a lock: a retry, a pipeline's next stage or a requeued dead letter is
    /// enqueued with [`enqueue`](App::enqueue) and keeps the lock its message holds.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dq_core::{App, Message, SendOptions, SendOutcome};
    ///
    /// # async fn demo(app: App) -> Result<(), dq_core::Error> {
    /// let opts = SendOptions::new().unique_for(Duration::from_secs(60));
    /// let mut message = Message::new("default", "report", &(42,), &())?;
    /// opts.apply_to_message(&mut message);
    /// match app.send(message, opts.delay).await? {
    ///     (m, SendOutcome::Enqueued) => println!("sent {}", m.message_id),
    ///     (_, SendOutcome::Duplicate { holder }) => println!("already queued as {holder}"),
    ///     (m, outcome) => println!("sent {}: {outcome}", m.message_id),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn send(
        &self,
        mut message: Message,
        delay: Option<Duration>,
    ) -> Result<(Message, SendOutcome)> {
        let extra = self
            .inner
            .registry
            .get(&message.actor_name)
            .map(|a| &a.options.extra)
            .filter(|x| !x.is_empty());
        let Some((lock, delay)) = crate::unique::plan(&mut message, extra, delay)? else {
            return Ok((self.enqueue(message, delay).await?, SendOutcome::Enqueued));
        };
        let span = enqueue_span(&message, delay);
        self.send_unique_inner(message, delay, lock)
            .instrument(span)
            .await
    }

    async fn send_unique_inner(
        &self,
        mut message: Message,
        delay: Option<Duration>,
        lock: UniqueLock,
    ) -> Result<(Message, SendOutcome)> {
        self.prepare(&mut message, delay).await?;
        let outcome = self
            .inner
            .broker
            .enqueue_unique(&lock, &mut message)
            .await?;
        tracing::Span::current().record("dq.unique", tracing::field::display(&outcome));
        if outcome.is_enqueued() {
            for m in &self.inner.after_enqueue {
                m.after_enqueue(self, &message, delay).await?;
            }
        }
        Ok((message, outcome))
    }

    /// The `before_enqueue` hooks, the routing of a delayed message to its delay queue and the
    /// size check: what every enqueue does before the broker call.
    async fn prepare(&self, message: &mut Message, delay: Option<Duration>) -> Result<()> {
        for m in &self.inner.before_enqueue {
            m.before_enqueue(self, message, delay).await?;
        }
        if let Some(d) = delay {
            message.queue_name = delay_queue_name(&message.queue_name);
            // A delay past i64 milliseconds (292 million years) means never, not an overflow.
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            message.options.set_eta(now_ms().saturating_add(ms));
        }
        self.check_size(message)
    }

    async fn enqueue_inner(
        &self,
        mut message: Message,
        delay: Option<Duration>,
    ) -> Result<Message> {
        for m in &self.inner.before_enqueue {
            m.before_enqueue(self, &mut message, delay).await?;
        }
        if let Some(d) = delay {
            message.queue_name = delay_queue_name(&message.queue_name);
            // A delay past i64 milliseconds (292 million years) means never, not an overflow.
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            message.options.set_eta(now_ms().saturating_add(ms));
        }
        self.check_size(&message)?;
        self.inner.broker.enqueue(&mut message).await?;
        for m in &self.inner.after_enqueue {
            m.after_enqueue(self, &message, delay).await?;
        }
        Ok(message)
    }

    /// Enqueues `message` as the run of a periodic schedule's tick, through
    /// [`Broker::enqueue_tick`] (the claim of the tick and the enqueue in one step): with the
    /// enqueue hooks, as [`enqueue`](App::enqueue) does, when this call claims the tick.
    pub async fn enqueue_tick(
        &self,
        message: Message,
        claim: &crate::TickClaim<'_>,
    ) -> Result<(crate::TickOutcome, Message)> {
        let span = tracing::info_span!(
            "dq.enqueue",
            otel.name = %format_args!("send {}", message.queue_name),
            otel.kind = "producer",
            messaging.system = "dramatiq",
            messaging.operation.name = "send",
            messaging.destination.name = %message.queue_name,
            messaging.message.id = %message.message_id,
            dq.actor = %message.actor_name,
            dq.schedule = claim.schedule,
        );
        self.enqueue_tick_inner(message, claim)
            .instrument(span)
            .await
    }

    async fn enqueue_tick_inner(
        &self,
        mut message: Message,
        claim: &crate::TickClaim<'_>,
    ) -> Result<(crate::TickOutcome, Message)> {
        for m in &self.inner.before_enqueue {
            m.before_enqueue(self, &mut message, None).await?;
        }
        self.check_size(&message)?;
        let outcome = self.inner.broker.enqueue_tick(claim, &mut message).await?;
        if outcome == crate::TickOutcome::Enqueued {
            for m in &self.inner.after_enqueue {
                m.after_enqueue(self, &message, None).await?;
            }
        }
        Ok((outcome, message))
    }

    /// Enqueues many messages without delay, pipelined where the broker allows, in one
    /// `dq.enqueue_many` span (`tracing`, level INFO) that counts them.
    pub async fn enqueue_many(&self, messages: Vec<Message>) -> Result<Vec<Message>> {
        let span = tracing::info_span!(
            "dq.enqueue_many",
            otel.kind = "producer",
            messaging.system = "dramatiq",
            messaging.operation.name = "send",
            messaging.batch.message_count = messages.len(),
        );
        self.enqueue_many_inner(messages).instrument(span).await
    }

    async fn enqueue_many_inner(&self, mut messages: Vec<Message>) -> Result<Vec<Message>> {
        for message in messages.iter_mut() {
            for m in &self.inner.before_enqueue {
                m.before_enqueue(self, message, None).await?;
            }
            self.check_size(message)?;
        }
        self.inner.broker.enqueue_many(&mut messages).await?;
        for message in &messages {
            for m in &self.inner.after_enqueue {
                m.after_enqueue(self, message, None).await?;
            }
        }
        Ok(messages)
    }

    fn check_size(&self, message: &Message) -> Result<()> {
        // The envelope around args and kwargs is small; only measure exactly when close.
        let rough = message.args.get().len() + message.kwargs.get().len();
        let nested = message.options.contains_key("pipe_target")
            || message.options.contains_key("group_completion_callbacks");
        if nested || rough + 4096 > self.inner.max_message_size {
            let size = message.encode().len();
            if size > self.inner.max_message_size {
                return Err(Error::MessageTooLarge {
                    message_id: message.message_id.clone(),
                    size,
                    limit: self.inner.max_message_size,
                });
            }
        }
        Ok(())
    }
}

/// The `dq.enqueue` span of a send (see [`App::enqueue`]); `dq.unique` is recorded by a unique
/// send with its outcome.
fn enqueue_span(message: &Message, delay: Option<Duration>) -> tracing::Span {
    tracing::info_span!(
        "dq.enqueue",
        otel.name = %format_args!("send {}", message.queue_name),
        otel.kind = "producer",
        messaging.system = "dramatiq",
        messaging.operation.name = "send",
        messaging.destination.name = %message.queue_name,
        messaging.message.id = %message.message_id,
        dq.actor = %message.actor_name,
        dq.delay_ms = delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        dq.unique = tracing::field::Empty,
    )
}
