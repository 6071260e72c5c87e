//! Golden wire fixtures: messages encoded by the real Python Dramatiq 2.2.1.
//!
//! `fixtures/python_messages.json` is written by `fixtures/make_fixtures.py` (regenerate with
//! `cargo xtask fixtures`; `cargo xtask interop` checks the committed file is what the script
//! writes). Each fixture holds Python's exact bytes (`encoded`) and the fields Python's own
//! `Message.decode` sees in them (`expected`), where integers beyond 64 bits are tagged
//! `{"$bigint": "<digits>"}` and NaN / infinities `{"$float": "nan" | "inf" | "-inf"}` so the
//! fixture file stays strict JSON.

use dq_core::Message;
use serde::Deserialize;
use serde_json::Value;

const FIXTURES: &str = include_str!("fixtures/python_messages.json");

#[derive(Deserialize)]
struct Fixture {
    name: String,
    encoded: String,
    expected: Value,
}

fn fixtures() -> Vec<Fixture> {
    serde_json::from_str(FIXTURES).expect("python_messages.json is strict JSON")
}

fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture named {name:?}"))
}

fn decode(f: &Fixture) -> Message {
    Message::decode(f.encoded.as_bytes())
        .unwrap_or_else(|e| panic!("fixture {}: decode failed: {e}", f.name))
}

/// Compares `actual` with the Python view `expected`, recursively and in key order (Dramatiq
/// writes dicts in insertion order, and so must we). Big integers are checked as text in `raw`,
/// the JSON `actual` was parsed from, since `serde_json::Value` holds them only approximately.
/// Mismatches are pushed to `errors` with their JSON path, so one run reports all of them.
fn check(path: &str, expected: &Value, actual: &Value, raw: &str, errors: &mut Vec<String>) {
    if let Some(digits) = tagged(expected, "$bigint") {
        let as_f64: f64 = digits.parse().expect("bigint tag holds digits");
        if !raw.contains(digits) {
            errors.push(format!("{path}: big integer {digits} not found verbatim"));
        }
        // Without arbitrary precision serde_json reads such a number as an f64, and not always
        // correctly rounded: the text above is the exact check, this one only the value's place.
        let close = actual
            .as_f64()
            .is_some_and(|a| ((a - as_f64) / as_f64).abs() < 1e-12);
        if !close {
            errors.push(format!(
                "{path}: expected the number {digits}, got {actual}"
            ));
        }
        return;
    }
    if let Some(kind) = tagged(expected, "$float") {
        // Message::decode's documented lenient reading of Python's bare NaN and infinities.
        let want = match kind {
            "nan" => Value::Null,
            "inf" => Value::from(f64::MAX),
            "-inf" => Value::from(f64::MIN),
            other => panic!("unknown $float tag {other:?}"),
        };
        if *actual != want {
            errors.push(format!(
                "{path}: Python {kind} should read as {want}, got {actual}"
            ));
        }
        return;
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let ek: Vec<&String> = e.keys().collect();
            let ak: Vec<&String> = a.keys().collect();
            if ek != ak {
                errors.push(format!(
                    "{path}: keys {ak:?}, expected {ek:?} in this order"
                ));
                return;
            }
            for (k, ev) in e {
                check(&format!("{path}.{k}"), ev, &a[k], raw, errors);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                errors.push(format!("{path}: {} items, expected {}", a.len(), e.len()));
                return;
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                check(&format!("{path}[{i}]"), ev, av, raw, errors);
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            // `1.0` stays a float and `1` an integer: Python tells them apart after decoding.
            let same = if e.is_f64() || a.is_f64() {
                e.is_f64() == a.is_f64() && e.as_f64() == a.as_f64()
            } else {
                e == a
            };
            if !same {
                errors.push(format!("{path}: {a}, expected {e}"));
            }
        }
        (e, a) => {
            if e != a {
                errors.push(format!("{path}: {a}, expected {e}"));
            }
        }
    }
}

/// The payload of a one-key tag object such as `{"$bigint": "123"}`.
fn tagged<'a>(v: &'a Value, tag: &str) -> Option<&'a str> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get(tag).and_then(Value::as_str),
        _ => None,
    }
}

fn report(name: &str, errors: Vec<String>) -> Vec<String> {
    errors.into_iter().map(|e| format!("{name}: {e}")).collect()
}

fn assert_no_errors(errors: Vec<String>) {
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn golden_fixtures_cover_the_wire_features() {
    let names: Vec<String> = fixtures().into_iter().map(|f| f.name).collect();
    for required in [
        "args_every_json_type",
        "kwargs_every_json_type",
        "empty_args_kwargs_options",
        "non_string_dict_keys",
        "non_finite_floats",
        "float_eta",
        "redis_enqueued",
        "delayed",
        "retried",
        "pipeline",
        "callbacks",
        "group_completion_1",
        "group_completion_2",
        "unknown_and_builtin_options",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "fixture {required} is missing: {names:?}"
        );
    }
    let all = FIXTURES;
    assert!(
        all.contains("$bigint") && all.contains("$float"),
        "tags for big ints and NaN are exercised"
    );
}

#[test]
fn golden_fixtures_decode_as_python_reads_them() {
    let mut errors = Vec::new();
    for f in fixtures() {
        let msg = decode(&f);
        let e = &f.expected;
        let mut errs = Vec::new();
        check(
            "queue_name",
            &e["queue_name"],
            &Value::from(msg.queue_name.as_str()),
            "",
            &mut errs,
        );
        check(
            "actor_name",
            &e["actor_name"],
            &Value::from(msg.actor_name.as_str()),
            "",
            &mut errs,
        );
        let args = msg.args_value().expect("args parse");
        check("args", &e["args"], &args, msg.args.get(), &mut errs);
        let kwargs = msg.kwargs_value().expect("kwargs parse");
        check("kwargs", &e["kwargs"], &kwargs, msg.kwargs.get(), &mut errs);
        let options = Value::Object(msg.options.0.clone());
        check("options", &e["options"], &options, &f.encoded, &mut errs);
        check(
            "message_id",
            &e["message_id"],
            &Value::from(msg.message_id.as_str()),
            "",
            &mut errs,
        );
        check(
            "message_timestamp",
            &e["message_timestamp"],
            &Value::from(msg.message_timestamp),
            "",
            &mut errs,
        );
        errors.extend(report(&f.name, errs));
    }
    assert_no_errors(errors);
}

#[test]
fn golden_fixtures_reencode_to_what_python_wrote() {
    let mut errors = Vec::new();
    for f in fixtures() {
        let ours = decode(&f).encode();
        let ours_text = String::from_utf8(ours).expect("encode writes UTF-8");
        // Strict parse: we must never write the bare NaN / Infinity Python allows.
        let ours_value: Value = match serde_json::from_str(&ours_text) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!(
                    "{}: our encoding is not strict JSON: {e}: {ours_text}",
                    f.name
                ));
                continue;
            }
        };
        let mut errs = Vec::new();
        // Against Python's decoded view: same values, same key order everywhere, top level
        // included, and big integers verbatim.
        check("$", &f.expected, &ours_value, &ours_text, &mut errs);
        // Against Python's bytes, parsed, wherever those are strict JSON.
        if let Ok(python) = serde_json::from_str::<Value>(&f.encoded) {
            check("$", &python, &ours_value, &ours_text, &mut errs);
        }
        errors.extend(report(&f.name, errs));
    }
    assert_no_errors(errors);
}

#[test]
fn golden_reencoding_is_stable() {
    for f in fixtures() {
        let once = decode(&f).encode();
        let again = Message::decode(&once)
            .expect("our own encoding decodes")
            .encode();
        assert_eq!(
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&again),
            "fixture {}",
            f.name
        );
    }
}

#[test]
fn golden_args_keep_python_number_text() {
    let msg = decode(&fixture("args_every_json_type"));
    let raw = msg.args.get();
    for text in [
        "18446744073709551616",
        "1180591620717411315769",
        "-9223372036854775809",
        "-1267650600228229401496703205376",
        "1.0,",
        "-0.0,",
        "1e+20",
        "1e-07",
        "1.5e+300",
        r"\ud83d\ude00",
    ] {
        assert!(raw.contains(text), "{text} not kept verbatim in {raw}");
    }
}

#[test]
fn golden_non_finite_floats_decode_leniently() {
    let msg = decode(&fixture("non_finite_floats"));
    let args = msg.args_value().unwrap();
    assert_eq!(args[0], Value::Null);
    assert_eq!(args[1].as_f64(), Some(f64::MAX));
    assert_eq!(args[2].as_f64(), Some(f64::MIN));
    assert_eq!(args[3], serde_json::json!([null]));
    let kwargs = msg.kwargs_value().unwrap();
    assert_eq!(kwargs["x"], Value::Null);
    assert_eq!(kwargs["y"].as_f64(), Some(f64::MIN));
}

#[test]
fn golden_delayed_and_retried_options_read_through_typed_accessors() {
    let delayed = decode(&fixture("delayed"));
    assert_eq!(delayed.queue_name, "default.DQ");
    assert_eq!(delayed.canonical_queue(), "default");
    assert_eq!(delayed.options.eta(), Some(1_795_397_619_180));
    assert_eq!(
        delayed.options.redis_message_id(),
        Some("f69d17d3-8a27-410f-88b2-695eb5bc964d")
    );

    let retried = decode(&fixture("retried"));
    assert_eq!(retried.options.retries(), 3);
    assert_eq!(
        retried.options.max_retries(),
        Some(None),
        "explicit null means unlimited"
    );
    assert_eq!(
        retried.options.get_i64("requeue_timestamp"),
        Some(1_795_397_559_194)
    );
    assert!(retried
        .options
        .get_str("traceback")
        .is_some_and(|t| t.ends_with("ZeroDivisionError: division by zero\n")));
    assert!(retried.options.eta().is_some());

    let float_eta = decode(&fixture("float_eta"));
    assert_eq!(float_eta.options.eta(), Some(1_795_397_560_659));
}

#[test]
fn golden_pipeline_targets_nest_as_full_messages() {
    let first = decode(&fixture("pipeline"));
    assert_eq!(first.actor_name, "add");
    let second = Message::from_value(first.options.pipe_target().expect("pipe_target")).unwrap();
    assert_eq!(second.actor_name, "mul");
    assert_eq!(second.options.delay(), Some(250));
    assert_eq!(second.args_value().unwrap(), serde_json::json!([10]));
    let third =
        Message::from_value(second.options.pipe_target().expect("nested pipe_target")).unwrap();
    assert_eq!(third.actor_name, "report");
    assert_eq!(third.queue_name, "reports");
    assert_eq!(third.options.pipe_ignore(), Some(true));
    assert!(third.options.pipe_target().is_none());
}

#[test]
fn golden_callbacks_and_other_options() {
    let cb = decode(&fixture("callbacks"));
    assert_eq!(cb.options.on_success(), Some("report"));
    assert_eq!(cb.options.on_failure(), Some("report_failure"));

    let o = decode(&fixture("unknown_and_builtin_options")).options;
    assert_eq!(o.broker_priority(), Some(5));
    assert_eq!(o.store_results(), Some(true));
    assert_eq!(o.result_ttl(), Some(60_000));
    assert_eq!(o.max_age(), Some(3_600_000));
    assert_eq!(o.time_limit(), Some(1_000));
    assert_eq!(o.notify_shutdown(), Some(true));
    assert_eq!(o.max_backoff(), Some(None));
    assert_eq!(o.on_retry_exhausted(), Some("report_failure"));
    assert_eq!(o.get_str("tenant"), Some("acme"));
    assert_eq!(
        o.get("x_custom"),
        Some(&serde_json::json!({"nested": [1, 2.5, "é", null], "flag": false}))
    );
}

#[test]
fn golden_group_children_carry_completion_callbacks() {
    let plain = decode(&fixture("group_completion_1"));
    let in_pipeline = decode(&fixture("group_completion_2"));
    let uuid = plain
        .options
        .group_completion_uuid()
        .expect("group_completion_uuid");
    // A child pipeline carries the group's options on its last message only.
    assert!(in_pipeline.options.group_completion_uuid().is_none());
    let last = Message::from_value(in_pipeline.options.pipe_target().unwrap()).unwrap();
    assert_eq!(last.options.group_completion_uuid(), Some(uuid));
    for m in [&plain, &last] {
        let callbacks = m.options.group_completion_callbacks().expect("callbacks");
        assert_eq!(callbacks.len(), 1);
        let cb = Message::from_value(&callbacks[0]).unwrap();
        assert_eq!(cb.actor_name, "report");
        assert_eq!(cb.args_value().unwrap(), serde_json::json!(["group done"]));
    }
}

#[test]
fn golden_python_key_order_is_kept_in_options() {
    let msg = decode(&fixture("retried"));
    let keys: Vec<&str> = msg.options.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "retries",
            "traceback",
            "requeue_timestamp",
            "max_retries",
            "redis_message_id",
            "eta"
        ]
    );
}
