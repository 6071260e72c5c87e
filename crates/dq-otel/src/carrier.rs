//! The `trace_ctx` carrier in a message's options, and the fallbacks a worker reads.

use std::collections::HashMap;

use dq_core::Options;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use serde_json::{Map, Value};

/// The message option that carries the W3C trace context: `{"traceparent": ..., "tracestate":
/// ..., "baggage": ...}`, as the OpenTelemetry instrumentations for Dramatiq-style brokers
/// write it.
pub const TRACE_CTX: &str = "trace_ctx";

/// Where Python's sentry-sdk Dramatiq integration puts its trace headers.
const SENTRY_HEADERS: &str = "_sentry_headers";

/// Writes the context `cx` into `options["trace_ctx"]` with `propagator`, replacing what was
/// there. Writes nothing when the propagator writes no field (no span in `cx`).
///
/// ```
/// use dq_core::Options;
/// use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
/// use opentelemetry::Context;
/// use opentelemetry_sdk::propagation::TraceContextPropagator;
///
/// let span = SpanContext::new(
///     TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
///     SpanId::from_hex("00f067aa0ba902b7").unwrap(),
///     TraceFlags::SAMPLED,
///     true,
///     TraceState::default(),
/// );
/// let cx = Context::new().with_remote_span_context(span);
/// let mut options = Options::default();
/// dq_otel::inject(&TraceContextPropagator::new(), &cx, &mut options);
/// assert_eq!(
///     serde_json::Value::from(options.0),
///     serde_json::json!({"trace_ctx": {
///         "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
///     }})
/// );
/// ```
pub fn inject(propagator: &dyn TextMapPropagator, cx: &Context, options: &mut Options) {
    let mut fields: HashMap<String, String> = HashMap::new();
    propagator.inject_context(cx, &mut fields);
    // The W3C propagator writes an empty `tracestate` when there is none: leave it out, as
    // Python does.
    fields.retain(|_, v| !v.is_empty());
    if fields.is_empty() {
        return;
    }
    let mut sorted: Vec<(String, String)> = fields.into_iter().collect();
    sorted.sort();
    let map: Map<String, Value> = sorted
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    options.insert(TRACE_CTX.to_owned(), Value::Object(map));
}

/// The remote parent a worker continues for a message with `options`: from `trace_ctx`, else
/// from the Sentry header `_sentry_headers["sentry-trace"]`, else from
/// `options["options"]["trace_context"]`. `None` when none holds a valid trace context.
///
/// ```
/// use dq_core::Options;
/// use opentelemetry::trace::TraceContextExt;
/// use opentelemetry_sdk::propagation::TraceContextPropagator;
///
/// let mut options = Options::default();
/// options.insert(
///     "trace_ctx".into(),
///     serde_json::json!({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}),
/// );
/// let cx = dq_otel::extract_parent(&TraceContextPropagator::new(), &options).unwrap();
/// assert_eq!(
///     cx.span().span_context().trace_id().to_string(),
///     "4bf92f3577b34da6a3ce929d0e0e4736"
/// );
/// ```
pub fn extract_parent(propagator: &dyn TextMapPropagator, options: &Options) -> Option<Context> {
    let from_carrier = |v: Option<&Value>| -> Option<Context> {
        let fields = string_fields(v?)?;
        let cx = propagator.extract_with_context(&Context::new(), &fields);
        cx.span().span_context().is_valid().then_some(cx)
    };
    from_carrier(options.get(TRACE_CTX))
        .or_else(|| from_sentry(options.get(SENTRY_HEADERS)))
        .or_else(|| from_carrier(options.get("options").and_then(|o| o.get("trace_context"))))
}

/// The string fields of a JSON object (a carrier); `None` for anything else.
fn string_fields(v: &Value) -> Option<HashMap<String, String>> {
    let obj = v.as_object()?;
    Some(
        obj.iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.to_ascii_lowercase(), s.to_owned())))
            .collect(),
    )
}

/// A remote parent from `{"sentry-trace": "<32 hex trace id>-<16 hex span id>[-<0|1>]"}`.
fn from_sentry(headers: Option<&Value>) -> Option<Context> {
    let trace = headers?.get("sentry-trace")?.as_str()?.trim();
    let mut parts = trace.split('-');
    let trace_id = parts.next().filter(|s| s.len() == 32)?;
    let span_id = parts.next().filter(|s| s.len() == 16)?;
    let sampled = parts.next() == Some("1");
    let span = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    );
    span.is_valid()
        .then(|| Context::new().with_remote_span_context(span))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use serde_json::json;

    fn trace_id(options: Value) -> Option<String> {
        let Value::Object(map) = options else {
            panic!("options are an object")
        };
        extract_parent(&TraceContextPropagator::new(), &Options(map))
            .map(|cx| cx.span().span_context().trace_id().to_string())
    }

    #[test]
    fn reads_trace_ctx_then_sentry_then_the_nested_carrier() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            trace_id(json!({"trace_ctx": {"traceparent": tp}})).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(
            trace_id(json!({"_sentry_headers": {"sentry-trace": "771a43a4192642f0b136d5159a501700-b7ad6b7169203331-1", "baggage": null}})).as_deref(),
            Some("771a43a4192642f0b136d5159a501700")
        );
        assert_eq!(
            trace_id(json!({"options": {"trace_context": {"traceparent": tp}}})).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(
            trace_id(json!({"trace_ctx": {"traceparent": "garbage"}})),
            None
        );
        assert_eq!(trace_id(json!({"trace_ctx": "not a map"})), None);
        assert_eq!(trace_id(json!({})), None);
    }
}
