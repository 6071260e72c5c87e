//! The `Sentry` middleware.

use std::sync::Arc;
use std::time::Duration;

use dq_core::{
    async_trait, App, Control, FailureKind, Hooks, Invocation, Job, Message, Middleware,
    MiddlewareError, Outcome,
};
use sentry_core::protocol::{Context, Event, Exception, Level, Mechanism, SpanStatus, Value};
use sentry_core::{Hub, SentryFutureExt, Transaction, TransactionContext};
use serde_json::Map;

/// The message option Python's sentry-sdk Dramatiq integration carries trace headers in.
pub const SENTRY_HEADERS: &str = "_sentry_headers";

/// The operation of a run's transaction, as Python names it.
const OP: &str = "queue.task.dramatiq";
/// The origin of a run's transaction, as Python names it.
const ORIGIN: &str = "auto.queue.dramatiq";

/// Reports failures to Sentry and continues Sentry traces across the queue (see the
/// [crate docs](crate)).
///
/// Add it to the producer's and the worker's apps, first, as Python's integration inserts
/// itself first. It reports through the main hub of the `sentry` your application initialised
/// ([`Sentry::new`]), or through a hub you give ([`Sentry::with_hub`]); each run gets a hub of
/// its own forked from it, bound while the actor runs, so the actor's own breadcrumbs, events
/// and sends belong to its run.
///
/// ```
/// use std::sync::Arc;
///
/// let hub = Arc::new(sentry_core::Hub::new_from_top(sentry_core::Hub::main()));
/// let app = dq_core::App::builder(dq_broker_stub::StubBroker::new())
///     .middleware(dq_sentry::Sentry::with_hub(hub))
///     .build()
///     .unwrap();
/// # drop(app);
/// ```
#[derive(Default)]
pub struct Sentry {
    hub: Option<Arc<Hub>>,
}

impl std::fmt::Debug for Sentry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentry")
            .field("own_hub", &self.hub.is_some())
            .finish()
    }
}

/// The run's hub and transaction, from `before_process` to `after_process`.
struct Run {
    hub: Arc<Hub>,
    transaction: Transaction,
}

impl Sentry {
    /// Reports through [`Hub::main`], the hub `sentry::init` configures.
    pub fn new() -> Sentry {
        Sentry::default()
    }

    /// Reports through `hub` (a test hub, or an application that keeps several clients).
    pub fn with_hub(hub: Arc<Hub>) -> Sentry {
        Sentry { hub: Some(hub) }
    }

    /// The hub a producer's headers come from: the thread's current one when it has a client
    /// (inside a run, the run's, bound while the actor runs), else this middleware's own.
    fn producer_hub(&self) -> Arc<Hub> {
        let current = Hub::current();
        match &self.hub {
            Some(own) if current.client().is_none() => own.clone(),
            _ => current,
        }
    }

    fn worker_hub(&self) -> Arc<Hub> {
        match &self.hub {
            Some(hub) => hub.clone(),
            None => Hub::main(),
        }
    }

    /// Whether Python's integration would report this failure of `job`.
    fn reported(job: &Job, error: &dq_core::ActorError) -> bool {
        let retry_style = matches!(
            error.kind(),
            FailureKind::Retry(_) | FailureKind::RateLimitExceeded
        );
        !retry_style
            && !job
                .actor
                .options
                .throws_type(&job.message.options, error.type_name())
    }

    fn event(hub: &Hub, job: &Job, error: &dq_core::ActorError) -> Event<'static> {
        let message = &job.message;
        let mut event = Event {
            level: Level::Error,
            transaction: Some(message.actor_name.clone()),
            ..Event::default()
        };
        event.exception = vec![Exception {
            ty: error.type_name().to_owned(),
            value: Some(error.message().to_owned()),
            mechanism: Some(Mechanism {
                ty: "dramatiq".to_owned(),
                handled: Some(false),
                ..Mechanism::default()
            }),
            ..Exception::default()
        }]
        .into();
        event.extra.insert(
            "dramatiq_message_id".to_owned(),
            Value::from(message.message_id.clone()),
        );
        let mut context = std::collections::BTreeMap::new();
        context.insert("type".to_owned(), Value::from("dramatiq"));
        // As Python: the message, unless it is past the client's request-body limit.
        let data = message.to_value();
        let size = message.encode().len();
        let within = hub
            .client()
            .is_some_and(|c| c.options().max_request_body_size.is_within_size_limit(size));
        if within {
            context.insert("data".to_owned(), data);
        }
        event
            .contexts
            .insert("dramatiq".to_owned(), Context::Other(context));
        event
    }
}

#[async_trait]
impl Middleware for Sentry {
    fn name(&self) -> &str {
        "Sentry"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_ENQUEUE
            | Hooks::BEFORE_PROCESS
            | Hooks::AROUND_PROCESS
            | Hooks::AFTER_PROCESS
            | Hooks::AFTER_SKIP
    }

    async fn before_enqueue(
        &self,
        _app: &App,
        message: &mut Message,
        _delay: Option<Duration>,
    ) -> Result<(), MiddlewareError> {
        let hub = self.producer_hub();
        if hub.client().is_none() {
            // As Python: without an initialised client, nothing is written.
            return Ok(());
        }
        let (in_span, headers): (bool, Vec<(&'static str, String)>) =
            hub.configure_scope(|scope| {
                (
                    scope.get_span().is_some(),
                    scope.iter_trace_propagation_headers().collect(),
                )
            });
        // A message re-enqueued outside any transaction (a delayed message the worker moves to
        // its queue, a retry) keeps the headers it was sent with. Python writes the worker's
        // own trace over them there, which loses a delayed message's trace.
        if !in_span && message.options.contains_key(SENTRY_HEADERS) {
            return Ok(());
        }
        let mut map = Map::new();
        // Python always writes both keys; its baggage may be null, and dq has none to give.
        map.insert("baggage".to_owned(), Value::Null);
        for (name, value) in headers {
            map.insert(name.to_owned(), Value::from(value));
        }
        message
            .options
            .insert(SENTRY_HEADERS.to_owned(), Value::Object(map));
        Ok(())
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        let hub = Arc::new(Hub::new_from_top(self.worker_hub()));
        if hub.client().is_none() {
            return Ok(Control::Continue);
        }
        let message = &job.message;
        // As Python: a retry starts a trace of its own.
        let headers: Vec<(String, String)> = if message.options.contains_key("retries") {
            Vec::new()
        } else {
            message
                .options
                .get(SENTRY_HEADERS)
                .and_then(Value::as_object)
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let ctx = TransactionContext::continue_from_headers(
            &message.actor_name,
            OP,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let transaction = hub.start_transaction(ctx);
        transaction.set_origin(ORIGIN);
        transaction.set_status(SpanStatus::Ok);
        transaction.set_data(
            "messaging.destination.name",
            Value::from(message.canonical_queue()),
        );
        let id = message.message_id.clone();
        hub.configure_scope(|scope| {
            scope.clear_breadcrumbs();
            scope.set_extra("dramatiq_message_id", Value::from(id));
            scope.set_span(Some(transaction.clone().into()));
        });
        job.extensions.insert(Run { hub, transaction });
        Ok(Control::Continue)
    }

    fn around_process(&self, job: &Job, call: Invocation) -> Invocation {
        let Some(run) = job.extensions.get::<Run>() else {
            return call;
        };
        let hub = run.hub.clone();
        match call {
            Invocation::Sync(f) => Invocation::Sync(Box::new(move || Hub::run(hub, f))),
            Invocation::Async(fut) => Invocation::Async(Box::pin(fut.bind_hub(hub))),
        }
    }

    async fn after_process(
        &self,
        _app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        let Some(Run { hub, transaction }) = job.extensions.remove::<Run>() else {
            return Ok(());
        };
        if let Some(error) = outcome.error() {
            if Sentry::reported(job, error) {
                hub.capture_event(Sentry::event(&hub, job, error));
                transaction.set_status(SpanStatus::InternalError);
            }
        }
        transaction.finish();
        Ok(())
    }

    async fn after_skip(&self, _app: &App, job: &mut Job) -> Result<(), MiddlewareError> {
        if let Some(Run { transaction, .. }) = job.extensions.remove::<Run>() {
            transaction.finish();
        }
        Ok(())
    }
}
