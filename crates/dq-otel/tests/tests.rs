//! dq-otel's tests, one binary (STYLE.md): a real worker on a real Redis broker, the real
//! OpenTelemetry SDK with its in-memory exporter.

mod otel_redis;
