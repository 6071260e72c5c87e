//! The wire envelope: Dramatiq's seven-key JSON message.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::DecodeError;
use crate::options::Options;

/// Milliseconds since the Unix epoch, read from this machine's wall clock, as Dramatiq's `now_ms`.
///
/// ```
/// assert!(dq_core::now_ms() > 1_600_000_000_000);
/// ```
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh lowercase UUID4 string, the form Dramatiq uses for `message_id` and `redis_message_id`.
pub fn new_message_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// One message, exactly as Python Dramatiq puts it on the wire.
///
/// `args` and `kwargs` are kept as raw JSON text: the worker decodes them once, straight into the
/// actor's typed parameters, and numbers a Python producer wrote (huge integers included) survive a
/// retry byte for byte. `options` is a JSON object whose keys middleware read and write through the
/// typed accessors of [`Options`]; keys nobody knows pass through untouched.
///
/// ```
/// use dq_core::Message;
///
/// let msg = Message::new("default", "add", &(1, 2), &serde_json::json!({})).unwrap();
/// let bytes = msg.encode();
/// let back = Message::decode(&bytes).unwrap();
/// assert_eq!(back.actor_name, "add");
/// assert_eq!(back.args_value().unwrap(), serde_json::json!([1, 2]));
/// ```
#[derive(Clone, Debug)]
pub struct Message {
    /// The physical queue: `q`, or `q.DQ` while the message is delayed.
    pub queue_name: String,
    /// The actor the worker dispatches to.
    pub actor_name: String,
    /// Positional arguments, a JSON array.
    pub args: Box<RawValue>,
    /// Keyword arguments, a JSON object with string keys.
    pub kwargs: Box<RawValue>,
    /// Options read by middleware and brokers (see [`Options`]).
    pub options: Options,
    /// UUID4 string; stable across retries, delays and pipelines.
    pub message_id: String,
    /// Milliseconds since the epoch when the message was built; stable across retries.
    pub message_timestamp: i64,
}

fn empty_array() -> Box<RawValue> {
    RawValue::from_string("[]".to_owned()).expect("valid json")
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("valid json")
}

impl Message {
    /// Builds a message for `actor_name` on `queue_name`, serializing `args` (which must encode as a
    /// JSON array: a tuple, a `Vec`, or `()` for none) and `kwargs` (which must encode as an object).
    ///
    /// ```
    /// # use dq_core::Message;
    /// let m = Message::new("emails", "send_welcome", &("ann@example.com",), &()).unwrap();
    /// assert_eq!(m.args.get(), r#"["ann@example.com"]"#);
    /// assert_eq!(m.kwargs.get(), "{}");
    /// ```
    pub fn new<A: Serialize + ?Sized, K: Serialize + ?Sized>(
        queue_name: &str,
        actor_name: &str,
        args: &A,
        kwargs: &K,
    ) -> Result<Message, DecodeError> {
        let args = encode_args(args)?;
        let kwargs = encode_kwargs(kwargs)?;
        Ok(Message::from_raw(queue_name, actor_name, args, kwargs))
    }

    /// Builds a message from already-encoded arguments (a JSON array and a JSON object).
    pub fn from_raw(
        queue_name: &str,
        actor_name: &str,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
    ) -> Message {
        Message {
            queue_name: queue_name.to_owned(),
            actor_name: actor_name.to_owned(),
            args,
            kwargs,
            options: Options::default(),
            message_id: new_message_id(),
            message_timestamp: now_ms(),
        }
    }

    /// Decodes a message from its wire bytes, the way Python Dramatiq does: unknown top-level keys
    /// and missing required keys are errors, a missing `message_id` or `message_timestamp` is
    /// regenerated, and the bare `NaN` / `Infinity` Python may write are accepted (as `null` and
    /// the largest finite float, since JSON proper has neither).
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        match serde_json::from_slice::<Message>(bytes) {
            Ok(m) => Ok(m),
            Err(first) => {
                // Only pay for the lenient pass when the strict one failed.
                match sanitize_non_finite(bytes) {
                    Some(clean) => serde_json::from_slice::<Message>(&clean)
                        .map_err(|e| DecodeError::Json { source: e }),
                    None => Err(DecodeError::Json { source: first }),
                }
            }
        }
    }

    /// Encodes the message as compact JSON with Dramatiq's key order.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing owned strings and already-valid raw JSON cannot fail.
        serde_json::to_vec(self).expect("message serializes")
    }

    /// Encodes into a caller-provided buffer (cleared first), to reuse allocations on hot paths.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.clear();
        serde_json::to_writer(&mut *buf, self).expect("message serializes");
    }

    /// The message as a JSON object (the `message_dict` Dramatiq hands to callbacks).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("message serializes")
    }

    /// Rebuilds a message from a JSON object such as an `options.pipe_target`.
    pub fn from_value(value: &Value) -> Result<Message, DecodeError> {
        Message::deserialize(value).map_err(|e| DecodeError::Json { source: e })
    }

    /// `args` parsed into a JSON value.
    pub fn args_value(&self) -> Result<Value, DecodeError> {
        serde_json::from_str(self.args.get()).map_err(|e| DecodeError::Json { source: e })
    }

    /// `kwargs` parsed into a JSON value.
    pub fn kwargs_value(&self) -> Result<Value, DecodeError> {
        serde_json::from_str(self.kwargs.get()).map_err(|e| DecodeError::Json { source: e })
    }

    /// Appends one positional argument (a pipeline passes each result on this way).
    pub fn push_arg(&mut self, value: &Value) -> Result<(), DecodeError> {
        let mut args: Vec<Box<RawValue>> =
            serde_json::from_str(self.args.get()).map_err(|e| DecodeError::Json { source: e })?;
        args.push(
            serde_json::value::to_raw_value(value).map_err(|e| DecodeError::Json { source: e })?,
        );
        self.args =
            serde_json::value::to_raw_value(&args).map_err(|e| DecodeError::Json { source: e })?;
        Ok(())
    }

    /// The canonical queue this message belongs to (its `queue_name` without `.DQ` / `.XQ`).
    pub fn canonical_queue(&self) -> &str {
        base_queue_name(&self.queue_name)
    }

    /// A copy with the same id and timestamp, and `options` merged over the existing ones, as
    /// Dramatiq's `Message.copy(options=...)` does for retries, delays and pipelines.
    pub fn copy_with_options(&self, options: &Options) -> Message {
        let mut m = self.clone();
        for (k, v) in options.iter() {
            m.options.insert(k.clone(), v.clone());
        }
        m
    }

    /// A short human form for logs: `actor(args, kwargs)`.
    pub fn display_call(&self) -> String {
        let args = self.args.get();
        let inner = args
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(args);
        let kwargs = self.kwargs.get();
        if kwargs == "{}" {
            format!("{}({})", self.actor_name, inner)
        } else if inner.is_empty() {
            format!("{}(**{})", self.actor_name, kwargs)
        } else {
            format!("{}({}, **{})", self.actor_name, inner, kwargs)
        }
    }
}

/// So that APIs taking `impl AsRef<Message>` take a [`Message`] as they take a
/// [`TypedMessage`](crate::TypedMessage) or a [`Sent`](crate::Sent).
impl AsRef<Message> for Message {
    fn as_ref(&self) -> &Message {
        self
    }
}

impl PartialEq for Message {
    /// Messages are equal when every field is; `args` and `kwargs` are compared as JSON values, not
    /// as text, so `[1,2]` equals `[1, 2]`.
    fn eq(&self, other: &Message) -> bool {
        self.queue_name == other.queue_name
            && self.actor_name == other.actor_name
            && self.message_id == other.message_id
            && self.message_timestamp == other.message_timestamp
            && self.options == other.options
            && self.args_value().ok() == other.args_value().ok()
            && self.kwargs_value().ok() == other.kwargs_value().ok()
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_call())
    }
}

/// Serializes positional arguments, checking they form a JSON array.
pub fn encode_args<A: Serialize + ?Sized>(args: &A) -> Result<Box<RawValue>, DecodeError> {
    let raw = serde_json::value::to_raw_value(args).map_err(|e| DecodeError::Json { source: e })?;
    match raw.get().as_bytes().first() {
        Some(b'[') => Ok(raw),
        // `()` serializes as `null`: no arguments.
        _ if raw.get() == "null" => Ok(empty_array()),
        _ => Err(DecodeError::Shape {
            field: "args",
            expected: "a JSON array",
        }),
    }
}

/// Serializes keyword arguments, checking they form a JSON object.
pub fn encode_kwargs<K: Serialize + ?Sized>(kwargs: &K) -> Result<Box<RawValue>, DecodeError> {
    let raw =
        serde_json::value::to_raw_value(kwargs).map_err(|e| DecodeError::Json { source: e })?;
    match raw.get().as_bytes().first() {
        Some(b'{') => Ok(raw),
        _ if raw.get() == "null" => Ok(empty_object()),
        _ => Err(DecodeError::Shape {
            field: "kwargs",
            expected: "a JSON object",
        }),
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Message", 7)?;
        st.serialize_field("queue_name", &self.queue_name)?;
        st.serialize_field("actor_name", &self.actor_name)?;
        st.serialize_field("args", &self.args)?;
        st.serialize_field("kwargs", &self.kwargs)?;
        st.serialize_field("options", &self.options)?;
        st.serialize_field("message_id", &self.message_id)?;
        st.serialize_field("message_timestamp", &self.message_timestamp)?;
        st.end()
    }
}

const FIELDS: &[&str] = &[
    "queue_name",
    "actor_name",
    "args",
    "kwargs",
    "options",
    "message_id",
    "message_timestamp",
];

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Message, D::Error> {
        d.deserialize_struct("Message", FIELDS, MessageVisitor)
    }
}

struct MessageVisitor;

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Dramatiq message object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Message, M::Error> {
        let mut queue_name: Option<String> = None;
        let mut actor_name: Option<String> = None;
        let mut args: Option<Box<RawValue>> = None;
        let mut kwargs: Option<Box<RawValue>> = None;
        let mut options: Option<Options> = None;
        let mut message_id: Option<String> = None;
        let mut message_timestamp: Option<i64> = None;
        // Python's json.loads keeps the last of duplicate keys; so do we.
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "queue_name" => queue_name = Some(map.next_value()?),
                "actor_name" => actor_name = Some(map.next_value()?),
                "args" => {
                    let raw: Box<RawValue> = map.next_value()?;
                    if !raw.get().starts_with('[') {
                        return Err(de::Error::custom("args must be a JSON array"));
                    }
                    args = Some(raw);
                }
                "kwargs" => {
                    let raw: Box<RawValue> = map.next_value()?;
                    if !raw.get().starts_with('{') {
                        return Err(de::Error::custom("kwargs must be a JSON object"));
                    }
                    kwargs = Some(raw);
                }
                "options" => options = Some(map.next_value()?),
                "message_id" => message_id = Some(map.next_value()?),
                "message_timestamp" => {
                    let v: Value = map.next_value()?;
                    message_timestamp = match &v {
                        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
                        Value::Null => None,
                        _ => return Err(de::Error::custom("message_timestamp must be a number")),
                    };
                }
                other => return Err(de::Error::unknown_field(other, FIELDS)),
            }
        }
        Ok(Message {
            queue_name: queue_name.ok_or_else(|| de::Error::missing_field("queue_name"))?,
            actor_name: actor_name.ok_or_else(|| de::Error::missing_field("actor_name"))?,
            args: args.ok_or_else(|| de::Error::missing_field("args"))?,
            kwargs: kwargs.ok_or_else(|| de::Error::missing_field("kwargs"))?,
            options: options.ok_or_else(|| de::Error::missing_field("options"))?,
            message_id: message_id.unwrap_or_else(new_message_id),
            message_timestamp: message_timestamp.unwrap_or_else(now_ms),
        })
    }
}

/// Rewrites the bare `NaN`, `Infinity` and `-Infinity` tokens Python's encoder emits (outside
/// strings) into JSON: `null` and +/- the largest finite double. Returns `None` when there was
/// nothing to rewrite, so the caller reports the original parse error.
fn sanitize_non_finite(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        let rest = &bytes[i..];
        if b == b'"' {
            in_string = true;
            out.push(b);
            i += 1;
        } else if rest.starts_with(b"NaN") {
            out.extend_from_slice(b"null");
            i += 3;
            changed = true;
        } else if rest.starts_with(b"-Infinity") {
            out.extend_from_slice(b"-1.7976931348623157e308");
            i += 9;
            changed = true;
        } else if rest.starts_with(b"Infinity") {
            out.extend_from_slice(b"1.7976931348623157e308");
            i += 8;
            changed = true;
        } else {
            out.push(b);
            i += 1;
        }
    }
    changed.then_some(out)
}

/// The canonical queue name: strips a trailing `.DQ` or `.XQ`.
///
/// ```
/// assert_eq!(dq_core::base_queue_name("default.DQ"), "default");
/// assert_eq!(dq_core::base_queue_name("default"), "default");
/// ```
pub fn base_queue_name(queue: &str) -> &str {
    queue
        .strip_suffix(".DQ")
        .or_else(|| queue.strip_suffix(".XQ"))
        .unwrap_or(queue)
}

/// The delay queue of a queue: keeps `.DQ`, maps `.XQ` to `.DQ`, else appends `.DQ`.
///
/// ```
/// assert_eq!(dq_core::delay_queue_name("default"), "default.DQ");
/// assert_eq!(dq_core::delay_queue_name("default.XQ"), "default.DQ");
/// ```
pub fn delay_queue_name(queue: &str) -> String {
    format!("{}.DQ", base_queue_name(queue))
}

/// The dead-letter queue of a queue: `q.XQ`.
///
/// ```
/// assert_eq!(dq_core::dead_letter_queue_name("default.DQ"), "default.XQ");
/// ```
pub fn dead_letter_queue_name(queue: &str) -> String {
    format!("{}.XQ", base_queue_name(queue))
}

/// Whether `name` is a valid Dramatiq queue name (`[a-zA-Z_][a-zA-Z0-9._-]*`).
///
/// ```
/// assert!(dq_core::is_valid_queue_name("reports.high"));
/// assert!(!dq_core::is_valid_queue_name("9lives"));
/// ```
pub fn is_valid_queue_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

/// Serializes a map of keyword arguments; a convenience for hand-built messages.
pub fn kwargs_from_map(map: Map<String, Value>) -> Box<RawValue> {
    serde_json::value::to_raw_value(&map).expect("map serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check_roundtrip(input: &str) {
        let m = Message::decode(input.as_bytes()).unwrap();
        let again = Message::decode(&m.encode()).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn encodes_seven_keys_in_dramatiq_order() {
        let mut m = Message::new("default", "add", &(1, 2), &json!({})).unwrap();
        m.message_id = "5029".into();
        m.message_timestamp = 17;
        m.options.insert("eta".into(), json!(5));
        let s = String::from_utf8(m.encode()).unwrap();
        assert_eq!(
            s,
            r#"{"queue_name":"default","actor_name":"add","args":[1,2],"kwargs":{},"options":{"eta":5},"message_id":"5029","message_timestamp":17}"#
        );
    }

    #[test]
    fn rejects_unknown_top_level_key_and_missing_fields() {
        let bad =
            r#"{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{},"extra":1}"#;
        assert!(Message::decode(bad.as_bytes()).is_err());
        let missing = r#"{"queue_name":"q","actor_name":"a","args":[],"kwargs":{}}"#;
        let err = Message::decode(missing.as_bytes()).unwrap_err();
        let text = crate::ErrorChain(&err).to_string();
        assert!(text.starts_with("invalid message json: "), "{text}");
        assert!(text.contains("options"), "{text}");
    }

    #[test]
    fn regenerates_missing_id_and_timestamp() {
        let m = Message::decode(
            br#"{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{}}"#,
        )
        .unwrap();
        assert_eq!(m.message_id.len(), 36);
        assert!(m.message_timestamp > 0);
    }

    #[test]
    fn accepts_python_non_finite_floats() {
        let m = Message::decode(
            br#"{"queue_name":"q","actor_name":"a","args":[NaN,Infinity,-Infinity,"NaN"],"kwargs":{},"options":{},"message_id":"x","message_timestamp":1}"#,
        )
        .unwrap();
        let args = m.args_value().unwrap();
        assert_eq!(args[0], Value::Null);
        assert_eq!(args[1].as_f64(), Some(f64::MAX));
        assert_eq!(args[2].as_f64(), Some(f64::MIN));
        assert_eq!(args[3], json!("NaN"));
    }

    #[test]
    fn keeps_big_integers_verbatim_in_args() {
        let input = r#"{"queue_name":"q","actor_name":"a","args":[123456789012345678901234567890],"kwargs":{},"options":{},"message_id":"x","message_timestamp":1}"#;
        let m = Message::decode(input.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(m.encode()).unwrap(), input);
    }

    #[test]
    fn last_duplicate_key_wins() {
        let m = Message::decode(
            br#"{"queue_name":"a","queue_name":"b","actor_name":"x","args":[],"kwargs":{},"options":{}}"#,
        )
        .unwrap();
        assert_eq!(m.queue_name, "b");
    }

    #[test]
    fn roundtrips_unicode_and_surrogates() {
        check_roundtrip(
            r#"{"queue_name":"q","actor_name":"a","args":["\u00e9\ud83d\ude00"],"kwargs":{"k":"\u65e5"},"options":{},"message_id":"x","message_timestamp":1}"#,
        );
    }

    #[test]
    fn push_arg_appends() {
        let mut m = Message::new("q", "a", &(1,), &()).unwrap();
        m.push_arg(&json!({"x": [1]})).unwrap();
        assert_eq!(m.args_value().unwrap(), json!([1, {"x": [1]}]));
    }

    #[test]
    fn queue_names() {
        assert_eq!(base_queue_name("a.b.DQ"), "a.b");
        assert_eq!(delay_queue_name("a.DQ"), "a.DQ");
        assert_eq!(dead_letter_queue_name("a"), "a.XQ");
        assert!(is_valid_queue_name("_x-1.y"));
        assert!(!is_valid_queue_name(""));
        assert!(!is_valid_queue_name("a b"));
    }

    #[test]
    fn display_call_shows_args() {
        let m = Message::new("q", "count_words", &("foo",), &json!({"x": 1})).unwrap();
        assert_eq!(m.display_call(), r#"count_words("foo", **{"x":1})"#);
    }

    #[test]
    fn args_must_be_array() {
        assert!(Message::new("q", "a", &5, &()).is_err());
        assert!(Message::new("q", "a", &(), &[1]).is_err());
    }
}
