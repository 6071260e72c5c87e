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

/// One value of a queue argument, with the AMQP field type Python Dramatiq (pika) sends it as.
/// The variants are the field types of AMQP 0-9-1's field tables, so any client maps them one to
/// one; a tool declaring a dq queue must keep the type, not only the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgumentValue {
    /// A long string (field type `S`).
    LongString(String),
    /// A signed 32-bit integer (field type `I`): pika's encoding of an int that fits.
    LongInt(i32),
    /// A signed 64-bit integer (field type `l`): pika's encoding of a larger int.
    LongLongInt(i64),
}

/// The arguments of a queue declaration, in the order dq declares them.
///
/// dq's own type rather than the client's field table, so the RabbitMQ client stays out of this
/// crate's API; a tool that declares queues with its own client converts each
/// [`ArgumentValue`] to that client's value of the same field type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueArguments {
    args: Vec<(&'static str, ArgumentValue)>,
}

impl QueueArguments {
    /// The arguments, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArgumentValue)> {
        self.args.iter().map(|(k, v)| (*k, v))
    }

    /// The value of the argument `name` (`x-max-priority`, say).
    pub fn get(&self, name: &str) -> Option<&ArgumentValue> {
        self.args.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// How many arguments there are.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// The field table lapin sends.
    pub(crate) fn to_field_table(&self) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in &self.args {
            let value = match value {
                ArgumentValue::LongString(s) => AMQPValue::LongString(LongString::from(s.as_str())),
                ArgumentValue::LongInt(i) => AMQPValue::LongInt(*i),
                ArgumentValue::LongLongInt(i) => AMQPValue::LongLongInt(*i),
            };
            table.insert((*name).into(), value);
        }
        table
    }
}

/// pika encodes a Python int as a signed 32-bit field when it fits and as 64-bit otherwise; we do
/// the same, although RabbitMQ compares these arguments by value.
fn int(v: u64) -> ArgumentValue {
    match i32::try_from(v) {
        Ok(small) => ArgumentValue::LongInt(small),
        Err(_) => ArgumentValue::LongLongInt(i64::try_from(v).unwrap_or(i64::MAX)),
    }
}

/// The arguments dq (and Python Dramatiq) declare `q` and `q.DQ` with: dead letters go through
/// the default exchange to `q.XQ`, and `x-max-priority` when the broker has a max priority.
/// For tools that declare a queue themselves and must match dq's declaration byte for byte
/// (RabbitMQ refuses a second declaration with other arguments).
///
/// ```
/// use dq_broker_amqp::{queue_arguments, ArgumentValue};
///
/// let args = queue_arguments("default", None);
/// assert_eq!(args.len(), 2);
/// assert_eq!(
///     args.get("x-dead-letter-routing-key"),
///     Some(&ArgumentValue::LongString("default.XQ".into()))
/// );
/// let args = queue_arguments("default", Some(10));
/// assert_eq!(args.get("x-max-priority"), Some(&ArgumentValue::LongInt(10)));
/// ```
pub fn queue_arguments(canonical: &str, max_priority: Option<u8>) -> QueueArguments {
    let mut args = vec![
        (
            "x-dead-letter-exchange",
            ArgumentValue::LongString(String::new()),
        ),
        (
            "x-dead-letter-routing-key",
            ArgumentValue::LongString(dq_core::dead_letter_queue_name(canonical)),
        ),
    ];
    if let Some(p) = max_priority {
        args.push(("x-max-priority", int(u64::from(p))));
    }
    QueueArguments { args }
}

/// Arguments of `q.XQ`: dead letters expire after `ttl_ms`.
pub(crate) fn dead_letter_arguments(ttl_ms: u64) -> QueueArguments {
    QueueArguments {
        args: vec![("x-message-ttl", int(ttl_ms))],
    }
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
            &queue_arguments("default", None).to_field_table(),
            &[
                ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
                (
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString("default.XQ".into()),
                ),
            ],
        );
        check(
            &queue_arguments("default.DQ", Some(10)).to_field_table(),
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
            &dead_letter_arguments(DEFAULT_DEAD_MESSAGE_TTL_MS).to_field_table(),
            &[("x-message-ttl", AMQPValue::LongInt(604_800_000))],
        );
        check(
            &dead_letter_arguments(1 << 40).to_field_table(),
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
