//! The queues Python Dramatiq declares for one canonical queue, with exactly its arguments.
//!
//! RabbitMQ compares the arguments of every declaration with those of the existing queue and
//! answers 406 PRECONDITION_FAILED (closing the channel) on any difference, so a mixed fleet of
//! Python and Rust workers only works if both declare byte for byte alike (WIRE.md section 3).

use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};

/// Python Dramatiq's default for `x-message-ttl` on `q.XQ`: 7 days, in ms.
pub const DEFAULT_DEAD_MESSAGE_TTL_MS: u64 = 604_800_000;

/// The environment variable Python Dramatiq reads the dead-letter TTL from.
pub(crate) const DEAD_MESSAGE_TTL_ENV: &str = "dramatiq_dead_message_ttl";

/// Durable, shared, kept when unused: what Dramatiq declares, and what RabbitMQ checks too.
pub(crate) fn options(passive: bool) -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive,
        durable: true,
        exclusive: false,
        auto_delete: false,
        nowait: false,
    }
}

/// pika encodes a Python int as a signed 32-bit field when it fits and as 64-bit otherwise; we do
/// the same, although RabbitMQ compares these arguments by value.
fn int(v: u64) -> AMQPValue {
    match i32::try_from(v) {
        Ok(small) => AMQPValue::LongInt(small),
        Err(_) => AMQPValue::LongLongInt(i64::try_from(v).unwrap_or(i64::MAX)),
    }
}

/// The arguments dq (and Python Dramatiq) declare `q` and `q.DQ` with: dead letters go through
/// the default exchange to `q.XQ`, and `x-max-priority` when the broker has a max priority.
/// For tools that declare a queue themselves and must match dq's declaration byte for byte
/// (RabbitMQ refuses a second declaration with other arguments).
///
/// ```
/// let args = dq_broker_amqp::queue_arguments("default", None);
/// assert_eq!(args.inner().len(), 2);
/// let args = dq_broker_amqp::queue_arguments("default", Some(10));
/// assert_eq!(args.inner().len(), 3);
/// ```
pub fn queue_arguments(canonical: &str, max_priority: Option<u8>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(dq_core::xq_name(canonical))),
    );
    if let Some(p) = max_priority {
        args.insert("x-max-priority".into(), int(u64::from(p)));
    }
    args
}

/// Arguments of `q.XQ`: dead letters expire after `ttl_ms`.
pub(crate) fn dead_letter_arguments(ttl_ms: u64) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), int(ttl_ms));
    args
}

/// The dead-letter TTL from `dramatiq_dead_message_ttl`'s value, as Python reads it.
pub(crate) fn dead_message_ttl_from_env(value: Option<&str>) -> Result<u64, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_DEAD_MESSAGE_TTL_MS),
        Some(v) => v.parse::<u64>().map_err(|_| {
            format!("{DEAD_MESSAGE_TTL_ENV}={v:?} is not a whole number of milliseconds")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(table: &FieldTable, expected: &[(&str, AMQPValue)]) {
        let got: Vec<(String, AMQPValue)> = table
            .inner()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let want: Vec<(String, AMQPValue)> = expected
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn arguments_match_python_dramatiq() {
        check(
            &queue_arguments("default", None),
            &[
                ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
                (
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString("default.XQ".into()),
                ),
            ],
        );
        check(
            &queue_arguments("default.DQ", Some(10)),
            &[
                ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
                (
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString("default.XQ".into()),
                ),
                ("x-max-priority", AMQPValue::LongInt(10)),
            ],
        );
        check(
            &dead_letter_arguments(DEFAULT_DEAD_MESSAGE_TTL_MS),
            &[("x-message-ttl", AMQPValue::LongInt(604_800_000))],
        );
        check(
            &dead_letter_arguments(1 << 40),
            &[("x-message-ttl", AMQPValue::LongLongInt(1 << 40))],
        );
    }

    #[test]
    fn dead_message_ttl_reads_the_environment_like_python() {
        assert_eq!(dead_message_ttl_from_env(None), Ok(604_800_000));
        assert_eq!(dead_message_ttl_from_env(Some("")), Ok(604_800_000));
        assert_eq!(dead_message_ttl_from_env(Some("60000")), Ok(60_000));
        let e = dead_message_ttl_from_env(Some("7d")).unwrap_err();
        assert!(e.contains("dramatiq_dead_message_ttl"), "{e}");
    }
}
