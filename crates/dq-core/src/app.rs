//! `App`: a broker, its middleware and its actors, the thing producers send through.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::actor::{Actor, Registry};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::error::{Error, Result};
use crate::message::{delay_queue_name, now_ms, Message};
use crate::middleware::{Hooks, Middleware};
use crate::options::BUILTIN_ACTOR_OPTIONS;

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
}

impl AppBuilder {
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
            }),
        })
    }
}

fn clone_registry_error(e: &Error) -> Error {
    match e {
        Error::DuplicateActor { name } => Error::DuplicateActor { name: name.clone() },
        Error::InvalidQueueName(q) => Error::InvalidQueueName(q.clone()),
        other => Error::UnknownActor(other.to_string()),
    }
}

static GLOBAL: RwLock<Option<App>> = RwLock::new(None);

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
    pub async fn enqueue(&self, mut message: Message, delay: Option<Duration>) -> Result<Message> {
        for m in &self.inner.before_enqueue {
            m.before_enqueue(self, &mut message, delay).await?;
        }
        if let Some(d) = delay {
            message.queue_name = delay_queue_name(&message.queue_name);
            message.options.set_eta(now_ms() + d.as_millis() as i64);
        }
        self.check_size(&message)?;
        self.inner.broker.enqueue(&mut message).await?;
        for m in &self.inner.after_enqueue {
            m.after_enqueue(self, &message, delay).await?;
        }
        Ok(message)
    }

    /// Enqueues many messages without delay, pipelined where the broker allows.
    pub async fn enqueue_many(&self, mut messages: Vec<Message>) -> Result<Vec<Message>> {
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
