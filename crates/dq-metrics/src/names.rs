//! The series' names: Python Dramatiq 2.2.1's, and dq's own for autoscaling.

/// Counter: messages processed or skipped (Dramatiq).
pub const MESSAGES_TOTAL: &str = "dramatiq_messages_total";
/// Counter: messages whose actor failed (Dramatiq).
pub const MESSAGE_ERRORS_TOTAL: &str = "dramatiq_message_errors_total";
/// Counter: retries put on the delay queue (Dramatiq).
pub const MESSAGE_RETRIES_TOTAL: &str = "dramatiq_message_retries_total";
/// Counter: messages dead-lettered (Dramatiq).
pub const MESSAGE_REJECTS_TOTAL: &str = "dramatiq_message_rejects_total";
/// Gauge: messages being processed (Dramatiq).
pub const MESSAGES_INPROGRESS: &str = "dramatiq_messages_inprogress";
/// Gauge: delayed messages the worker holds until their `eta` (Dramatiq).
pub const DELAYED_MESSAGES_INPROGRESS: &str = "dramatiq_delayed_messages_inprogress";
/// Histogram: how long processing took, in milliseconds (Dramatiq).
pub const MESSAGE_DURATION_MILLISECONDS: &str = "dramatiq_message_duration_milliseconds";

/// Gauge: worker threads (message slots) of the running worker processes (dq).
pub const WORKER_THREADS: &str = "dq_worker_threads";
/// Gauge: worker threads running a message (dq).
pub const WORKER_THREADS_BUSY: &str = "dq_worker_threads_busy";
/// Gauge: messages waiting on a queue, label `queue_name` (dq).
pub const QUEUE_READY: &str = "dq_queue_ready_messages";
/// Gauge: messages waiting on a queue's delay queue, label `queue_name` (dq).
pub const QUEUE_DELAYED: &str = "dq_queue_delayed_messages";
/// Gauge: messages in a queue's dead-letter queue, label `queue_name` (dq).
pub const QUEUE_DEAD: &str = "dq_queue_dead_messages";

/// The buckets of `dramatiq_message_duration_milliseconds`, in ms, as Python's middleware sets
/// them (`+Inf` is implied).
pub const DURATION_BUCKETS: [f64; 18] = [
    5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0, 30000.0, 60000.0, 600_000.0, 900_000.0,
];
