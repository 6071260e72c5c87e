//! Scenarios 1 and 2: a producer of one language, a worker of the other, on Redis and on
//! RabbitMQ. Every JSON type in args and kwargs, a delayed message, a failing actor retried
//! until it succeeds, and one that ends in the dead-letter queue.

use std::time::Duration;

use dq_interop::{BrokerKind, Lang, Scenario};
use serde_json::value::RawValue;
use serde_json::{json, Value};

const DQ_WORKER: &str = env!("CARGO_BIN_EXE_dq-interop-worker");

/// What every test sends: text, so integers beyond 64 bits reach the producer intact. Written
/// with UTF-8 as is; Python's producer escapes it (`ensure_ascii`), dq's sends it raw.
const TYPES_ARGS: &str = r#"[null,true,42,18446744073709551615,-9223372036854775808,1267650600228229401496703205376,0.30000000000000004,"héllo wörld ✓ 😀 \"q\" \\ \n\t",[1,"two",[3.5,null,false],{"k":[]},1e+20,-0.25]]"#;
const TYPES_KWARGS: &str = r#"{"obj":{"a":{"b":[true,null,-0.5]},"ünï":"日本語","🎉":"🐍","":0},"kw_float":-2.5e-300,"kw_int":-7,"kw_none":null,"kw_list":[]}"#;
const HUGE: &str = "1267650600228229401496703205376";
const DELAY_MS: u64 = 1_500;

/// One message to send: actor, args (after the path and tag the test prepends), kwargs, delay.
struct Send {
    actor: &'static str,
    file: &'static str,
    tag: &'static str,
    rest_args: String,
    kwargs: String,
    delay: Option<u64>,
    /// Extra message options, as a JSON object.
    options: serde_json::Value,
}

impl Send {
    fn args(&self, sc: &Scenario) -> String {
        let head = format!("{},{}", json!(sc.path_str(self.file)), json!(self.tag));
        let rest = self
            .rest_args
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .expect("rest_args is a JSON array");
        if rest.is_empty() {
            format!("[{head}]")
        } else {
            format!("[{head},{rest}]")
        }
    }
}

fn sends() -> Vec<Send> {
    vec![
        Send {
            actor: "types",
            file: "types",
            tag: "types",
            rest_args: TYPES_ARGS.to_owned(),
            kwargs: TYPES_KWARGS.to_owned(),
            delay: None,
            options: json!({}),
        },
        Send {
            actor: "record",
            file: "delayed",
            tag: "delayed",
            rest_args: "[]".to_owned(),
            kwargs: r#"{"value":{"when":"later"}}"#.to_owned(),
            delay: Some(DELAY_MS),
            options: json!({}),
        },
        Send {
            actor: "flaky",
            file: "flaky",
            tag: "flaky",
            rest_args: "[2]".to_owned(),
            kwargs: "{}".to_owned(),
            delay: None,
            options: json!({ "x_custom": {"n": [1, "ü"], "none": null} }),
        },
        Send {
            actor: "doomed",
            file: "doomed",
            tag: "doomed",
            rest_args: "[]".to_owned(),
            kwargs: "{}".to_owned(),
            delay: None,
            options: json!({}),
        },
    ]
}

/// Sends `sends` with the producer of `lang`; returns the messages as enqueued.
fn produce(
    sc: &Scenario,
    rt: &tokio::runtime::Runtime,
    lang: Lang,
    sends: &[Send],
) -> Vec<dq::Message> {
    match lang {
        Lang::Python => {
            let items: Vec<String> = sends
                .iter()
                .map(|s| {
                    format!(
                        r#"{{"actor":{},"args":{},"kwargs":{},"delay":{},"options":{}}}"#,
                        json!(s.actor),
                        s.args(sc),
                        s.kwargs,
                        json!(s.delay),
                        s.options
                    )
                })
                .collect();
            sc.python_send(&format!("[{}]", items.join(",")))
        }
        Lang::Dq => rt.block_on(async {
            let app = sc.dq_app().await;
            let mut out = Vec::new();
            for s in sends {
                let mut m = dq::Message::from_raw(
                    &sc.queue,
                    s.actor,
                    RawValue::from_string(s.args(sc)).expect("args JSON"),
                    RawValue::from_string(s.kwargs.clone()).expect("kwargs JSON"),
                );
                if let serde_json::Value::Object(o) = &s.options {
                    m.options.0.extend(o.clone());
                }
                let delay = s.delay.map(Duration::from_millis);
                out.push(app.enqueue(m, delay).await.expect("dq enqueues"));
            }
            out
        }),
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("valid JSON")
}

fn roundtrip(kind: BrokerKind, producer: Lang, worker_lang: Lang) {
    let sc = Scenario::new(kind, "roundtrip");
    let rt = dq_interop::runtime();
    let mut worker = sc.spawn_worker(worker_lang, DQ_WORKER, worker_lang.label(), 4);
    worker.wait_ready(Duration::from_secs(30));

    let sends = sends();
    let sent = produce(&sc, &rt, producer, &sends);
    assert_eq!(sent.len(), sends.len());
    let (types_msg, delayed_msg, flaky_msg, doomed_msg) = (&sent[0], &sent[1], &sent[2], &sent[3]);
    for m in &sent {
        assert_eq!(
            dq::broker::base_queue_name(&m.queue_name),
            sc.queue,
            "{m:?}"
        );
    }
    assert_eq!(delayed_msg.queue_name, format!("{}.DQ", sc.queue));
    let eta = delayed_msg
        .options
        .eta()
        .expect("a delayed message has an eta");

    let timeout = Duration::from_secs(30);
    let w = [&worker];

    // Every JSON type, positional and by keyword.
    let rec = sc.wait_records("types", timeout, &w, |r| !r.is_empty());
    assert_eq!(rec.len(), 1, "{rec:?}");
    let rec = &rec[0];
    assert_eq!(rec["who"], worker_lang.label());
    assert_eq!(rec["actor"], "types");
    assert_eq!(rec["queue"], sc.queue.as_str());
    assert_eq!(rec["message_id"], types_msg.message_id.as_str());
    assert_eq!(rec["args"], parse(&sends[0].args(&sc)));
    assert_eq!(rec["kwargs"], parse(TYPES_KWARGS));
    // `Value` holds 2**100 only as a float: the digits are checked on the exact text.
    let raw = rec["args_raw"].as_str().expect("args_raw");
    assert!(raw.contains(HUGE), "{raw}");
    match worker_lang {
        Lang::Dq => assert_eq!(
            rec["typed"],
            json!({
                "nothing": null, "yes": true, "small": 42, "big": u64::MAX,
                "neg_big": i64::MIN, "huge": HUGE, "float": 0.30000000000000004,
                "text": "héllo wörld ✓ 😀 \"q\" \\ \n\t",
                "list": [1, "two", [3.5, null, false], {"k": []}, 1e20, -0.25],
                "obj": {"a": {"b": [true, null, -0.5]}, "ünï": "日本語", "🎉": "🐍", "": 0},
                "kw_float": -2.5e-300, "kw_int": -7, "kw_none": null, "kw_list": [],
            })
        ),
        Lang::Python => {
            assert_eq!(
                rec["arg_types"],
                json!(["NoneType", "bool", "int", "int", "int", "int", "float", "str", "list"])
            );
            assert_eq!(
                rec["kwarg_types"],
                json!({"obj": "dict", "kw_float": "float", "kw_int": "int",
                       "kw_none": "NoneType", "kw_list": "list"})
            );
        }
    }

    // The delayed message ran once, on the canonical queue, not before its eta.
    let rec = sc.wait_records("delayed", timeout, &w, |r| !r.is_empty());
    assert_eq!(rec.len(), 1, "{rec:?}");
    let rec = &rec[0];
    assert_eq!(rec["message_id"], delayed_msg.message_id.as_str());
    assert_eq!(rec["queue"], sc.queue.as_str());
    assert_eq!(rec["kwargs"], json!({"value": {"when": "later"}}));
    assert!(rec["options"].get("eta").is_none(), "{rec}");
    let at = rec["at_ms"].as_i64().expect("at_ms");
    assert!(
        at >= eta,
        "ran at {at}, {} ms before its eta {eta}",
        eta - at
    );

    // Failed twice, retried by the worker's own Retries with the actor's backoff, then passed.
    let rec = sc.wait_records("flaky", timeout, &w, |r| r.len() >= 3);
    let attempts: Vec<i64> = rec.iter().map(|r| r["attempt"].as_i64().unwrap()).collect();
    assert_eq!(attempts, [0, 1, 2], "{rec:?}");
    for r in &rec {
        assert_eq!(r["message_id"], flaky_msg.message_id.as_str());
        assert_eq!(r["queue"], sc.queue.as_str());
        // An option neither side knows survives every retry, whoever enqueued it.
        assert_eq!(
            r["options"]["x_custom"],
            json!({"n": [1, "ü"], "none": null}),
            "{r}"
        );
    }

    // Failed, retried once, dead-lettered.
    let rec = sc.wait_records("doomed", timeout, &w, |r| r.len() >= 2);
    let retries: Vec<i64> = rec.iter().map(|r| r["retries"].as_i64().unwrap()).collect();
    assert_eq!(retries, [0, 1], "{rec:?}");
    let letters = rt.block_on(async {
        let broker = sc.dq_broker().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let letters = broker
                .dead_letters(&sc.queue, 10)
                .await
                .expect("dead letters");
            if !letters.is_empty() || std::time::Instant::now() > deadline {
                break letters;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(
        !letters.is_empty(),
        "no dead letter on {}.XQ; worker log:\n{}",
        sc.queue,
        worker.log()
    );
    assert_eq!(letters.len(), 1, "{letters:?}");
    let dead = dq::Message::decode(&letters[0].body).expect("dead letter decodes");
    assert_eq!(dead.message_id, doomed_msg.message_id);
    assert_eq!(dead.actor_name, "doomed");
    if kind == BrokerKind::Redis {
        // Dramatiq's keys, looked at directly: the id scored in `ns:q.XQ`, the body beside it.
        let mut con = sc.redis();
        let xq = format!("{}:{}.XQ", sc.namespace, sc.queue);
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&xq)
            .arg(0)
            .arg(-1)
            .query(&mut con)
            .unwrap();
        assert_eq!(ids, [letters[0].id.clone()]);
        let body: String = redis::cmd("HGET")
            .arg(format!("{xq}.msgs"))
            .arg(&ids[0])
            .query(&mut con)
            .unwrap();
        assert_eq!(parse(&body)["message_id"], doomed_msg.message_id.as_str());
    }

    // Nothing left behind: no message waiting, delayed or in flight.
    let stats = rt.block_on(async {
        let broker = sc.dq_broker().await;
        broker.stats(&sc.queue).await.expect("stats")
    });
    assert_eq!(
        (stats.ready, stats.delayed, stats.dead),
        (0, 0, 1),
        "{stats:?}"
    );
    sc.assert_redis_drained();
    assert!(
        worker.stop(Duration::from_secs(20)),
        "no graceful stop; log:\n{}",
        worker.log()
    );
}

#[test]
fn redis_python_producer_dq_worker() {
    roundtrip(BrokerKind::Redis, Lang::Python, Lang::Dq);
}

#[test]
fn redis_dq_producer_python_worker() {
    roundtrip(BrokerKind::Redis, Lang::Dq, Lang::Python);
}

#[test]
fn amqp_python_producer_dq_worker() {
    roundtrip(BrokerKind::Amqp, Lang::Python, Lang::Dq);
}

#[test]
fn amqp_dq_producer_python_worker() {
    roundtrip(BrokerKind::Amqp, Lang::Dq, Lang::Python);
}
