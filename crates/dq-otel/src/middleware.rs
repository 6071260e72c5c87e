//! The `OpenTelemetry` middleware: producer spans at enqueue, consumer spans around the run.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dq_core::{
    async_trait, App, Control, Hooks, Invocation, Job, Message, Middleware, MiddlewareError,
    Outcome,
};
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{FutureExt, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

use crate::carrier::{extract_parent, inject, TRACE_CTX};
use crate::MESSAGING_SYSTEM;

/// A producer span whose enqueue has not returned yet: ended by `after_enqueue`, or, when the
/// broker refused the message (no after-hook runs then), by the next `before_enqueue` once it is
/// this old.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// OpenTelemetry context propagation through `options["trace_ctx"]`, with PRODUCER spans at
/// enqueue and CONSUMER spans around each run (see the [crate docs](crate)).
///
/// Add it to the producer's and the worker's apps. It takes its tracer from the global tracer
/// provider ([`OpenTelemetry::new`]) or from one you give ([`OpenTelemetry::with_tracer`]), and
/// writes the W3C `traceparent`, `tracestate` and `baggage` fields, as Python's default global
/// propagator does, unless you give another propagator.
///
/// ```
/// use dq_otel::OpenTelemetry;
/// use opentelemetry::trace::TracerProvider;
/// use opentelemetry_sdk::trace::SdkTracerProvider;
///
/// let provider = SdkTracerProvider::builder().build();
/// let otel = OpenTelemetry::with_tracer(provider.tracer("my-service"));
/// let app = dq_core::App::builder(dq_broker_stub::StubBroker::new())
///     .middleware(otel)
///     .build()
///     .unwrap();
/// # drop(app);
/// ```
pub struct OpenTelemetry {
    tracer: BoxedTracer,
    propagator: Box<dyn TextMapPropagator + Send + Sync>,
    /// Producer spans between `before_enqueue` and `after_enqueue`, by message id.
    sending: Mutex<HashMap<String, (Instant, Context)>>,
}

impl fmt::Debug for OpenTelemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenTelemetry")
            .field("propagator", &self.propagator)
            .finish_non_exhaustive()
    }
}

impl Default for OpenTelemetry {
    fn default() -> OpenTelemetry {
        OpenTelemetry::new()
    }
}

/// The consumer span's context, kept on the job from `before_process` to `after_process`.
struct Consuming(Context);

impl OpenTelemetry {
    /// The middleware with a tracer of the global tracer provider
    /// ([`opentelemetry::global::set_tracer_provider`]), scope `dq`.
    pub fn new() -> OpenTelemetry {
        let scope = InstrumentationScope::builder("dq")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        OpenTelemetry::with_boxed(opentelemetry::global::tracer_provider().tracer_with_scope(scope))
    }

    /// The middleware with `tracer`, for an application that does not set a global provider.
    pub fn with_tracer<T>(tracer: T) -> OpenTelemetry
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        OpenTelemetry::with_boxed(BoxedTracer::new(Box::new(tracer)))
    }

    fn with_boxed(tracer: BoxedTracer) -> OpenTelemetry {
        OpenTelemetry {
            tracer,
            propagator: Box::new(TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ])),
            sending: Mutex::new(HashMap::new()),
        }
    }

    /// Uses `propagator` to write and read `trace_ctx` instead of W3C trace context and baggage
    /// (for instance the global one, `opentelemetry::global::get_text_map_propagator`, if your
    /// fleet agreed on another format).
    ///
    /// ```
    /// use opentelemetry_sdk::propagation::TraceContextPropagator;
    ///
    /// let otel = dq_otel::OpenTelemetry::new().propagator(TraceContextPropagator::new());
    /// # drop(otel);
    /// ```
    pub fn propagator(
        mut self,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> OpenTelemetry {
        self.propagator = Box::new(propagator);
        self
    }

    fn attributes(message: &Message, operation: &'static str, kind: &'static str) -> Vec<KeyValue> {
        vec![
            KeyValue::new("messaging.system", MESSAGING_SYSTEM),
            KeyValue::new("messaging.operation.name", operation),
            KeyValue::new("messaging.operation.type", kind),
            KeyValue::new(
                "messaging.destination.name",
                message.canonical_queue().to_owned(),
            ),
            KeyValue::new("messaging.message.id", message.message_id.clone()),
            KeyValue::new("dramatiq.actor_name", message.actor_name.clone()),
        ]
    }

    fn sending(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Context)>> {
        self.sending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Middleware for OpenTelemetry {
    fn name(&self) -> &str {
        "OpenTelemetry"
    }

    fn hooks(&self) -> Hooks {
        Hooks::BEFORE_ENQUEUE
            | Hooks::AFTER_ENQUEUE
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
        let current = Context::current();
        // A message re-enqueued outside any span (a retry, a delayed message moved to its
        // queue) keeps the context it was sent with: every attempt continues the one trace.
        if !current.has_active_span() && message.options.contains_key(TRACE_CTX) {
            return Ok(());
        }
        let span = self
            .tracer
            .span_builder(format!("send {}", message.canonical_queue()))
            .with_kind(SpanKind::Producer)
            .with_attributes(OpenTelemetry::attributes(message, "send", "send"))
            .start_with_context(&self.tracer, &current);
        let cx = current.with_span(span);
        inject(&*self.propagator, &cx, &mut message.options);
        let now = Instant::now();
        let mut sending = self.sending();
        sending.retain(|_, (at, cx)| {
            let abandoned = now.duration_since(*at) > ABANDONED_AFTER;
            if abandoned {
                cx.span()
                    .set_status(Status::error("the broker did not take the message"));
                cx.span().end();
            }
            !abandoned
        });
        if let Some((_, earlier)) = sending.insert(message.message_id.clone(), (now, cx)) {
            // The same message enqueued twice at once: the earlier span ends here.
            earlier.span().end();
        }
        Ok(())
    }

    async fn after_enqueue(
        &self,
        _app: &App,
        message: &Message,
        _delay: Option<Duration>,
    ) -> Result<(), MiddlewareError> {
        if let Some((_, cx)) = self.sending().remove(&message.message_id) {
            cx.span().end();
        }
        Ok(())
    }

    async fn before_process(&self, _app: &App, job: &mut Job) -> Result<Control, MiddlewareError> {
        let message = &job.message;
        let parent = extract_parent(&*self.propagator, &message.options).unwrap_or_default();
        let mut attributes = OpenTelemetry::attributes(message, "process", "process");
        attributes.push(KeyValue::new(
            "dramatiq.retries",
            i64::from(message.options.retries()),
        ));
        let span = self
            .tracer
            .span_builder(format!("process {}", message.canonical_queue()))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        job.extensions.insert(Consuming(parent.with_span(span)));
        Ok(Control::Continue)
    }

    fn around_process(&self, job: &Job, call: Invocation) -> Invocation {
        let Some(Consuming(cx)) = job.extensions.get::<Consuming>() else {
            return call;
        };
        let cx = cx.clone();
        match call {
            Invocation::Sync(f) => Invocation::Sync(Box::new(move || {
                let _attached = cx.attach();
                f()
            })),
            Invocation::Async(fut) => Invocation::Async(Box::pin(fut.with_context(cx))),
        }
    }

    async fn after_process(
        &self,
        _app: &App,
        job: &mut Job,
        outcome: &Outcome,
    ) -> Result<(), MiddlewareError> {
        if let Some(Consuming(cx)) = job.extensions.remove::<Consuming>() {
            let span = cx.span();
            match outcome {
                Outcome::Success(_) => span.set_status(Status::Ok),
                Outcome::Failure(e) => {
                    span.record_error(e);
                    span.set_attribute(KeyValue::new("error.type", e.type_name().to_owned()));
                    span.set_status(Status::error(e.to_string()));
                }
            }
            span.end();
        }
        Ok(())
    }

    async fn after_skip(&self, _app: &App, job: &mut Job) -> Result<(), MiddlewareError> {
        if let Some(Consuming(cx)) = job.extensions.remove::<Consuming>() {
            cx.span()
                .set_attribute(KeyValue::new("dramatiq.skipped", true));
            cx.span().end();
        }
        Ok(())
    }
}
