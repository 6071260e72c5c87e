//! The dq side of the interop scenarios: a real dq worker binary, with the same actors, under
//! the same names, as the Python module `python/dq_interop_actors.py`.
//!
//! It is an ordinary worker command (`dq::cli`, Dramatiq's flags). What the test decides per run
//! comes from the environment, as for the Python worker: `DQ_INTEROP_BROKER` (a `redis://` or
//! `amqp://` URL), `DQ_INTEROP_QUEUE` (the queue of every actor), `DQ_INTEROP_NAMESPACE`,
//! `DQ_INTEROP_HEARTBEAT_MS` and `DQ_INTEROP_MAINTENANCE` (Redis), `DQ_INTEROP_MAX_PRIORITY`
//! (RabbitMQ), `DQ_INTEROP_RESULTS_URL` with `DQ_INTEROP_RESULTS_NS` and
//! `DQ_INTEROP_RESULTS_PREFIX_KEYS` (store results in Redis), `DQ_INTEROP_GROUPS_URL` (group
//! completion callbacks, barriers in that Redis), `DQ_INTEROP_ABORTS_URL` with
//! `DQ_INTEROP_ABORTS_NS` (the Abortable middleware, events in that Redis under that namespace),
//! `DQ_INTEROP_WHO` (the label of its records).
//! Each actor appends one JSON line per run to the file its first argument names.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// Appends one JSON line: who ran what, with the message as this worker saw it, plus `extra`.
fn record(path: &str, tag: &str, extra: Value) -> Result<(), String> {
    let m = dq::current_message().ok_or("no current message: CurrentMessage is not installed")?;
    let mut line = json!({
        "who": std::env::var("DQ_INTEROP_WHO").unwrap_or_else(|_| "dq".to_owned()),
        "pid": std::process::id(),
        "tag": tag,
        "actor": m.actor_name,
        "queue": m.queue_name,
        "message_id": m.message_id,
        "args": serde_json::from_str::<Value>(m.args.get()).map_err(|e| e.to_string())?,
        "kwargs": serde_json::from_str::<Value>(m.kwargs.get()).map_err(|e| e.to_string())?,
        // The exact text on the wire: `Value` cannot hold integers beyond 64 bits.
        "args_raw": m.args.get(),
        "kwargs_raw": m.kwargs.get(),
        "options": m.options.0,
        "retries": m.options.retries(),
        "at_ms": dq::broker::now_ms(),
    });
    if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), extra) {
        line.extend(extra);
    }
    let mut text = line.to_string();
    text.push('\n');
    // One write of one line on an O_APPEND file: lines of concurrent writers never interleave.
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {path}: {e}"))
}

/// Every JSON type, decoded into typed parameters (11 positional, 5 by keyword), and recorded
/// re-encoded under `typed`: what a Rust actor really gets out of a Python message.
#[dq::actor]
// `huge` is a boxed `RawValue` because that is the owned form serde decodes an unsized raw
// value into: it keeps the digits of an integer no Rust number holds.
#[allow(clippy::too_many_arguments, clippy::boxed_local)]
fn types(
    path: String,
    tag: String,
    nothing: Option<i64>,
    yes: bool,
    small: i64,
    big: u64,
    neg_big: i64,
    huge: Box<RawValue>,
    float: f64,
    text: String,
    list: Vec<Value>,
    obj: Map<String, Value>,
    kw_float: f64,
    kw_int: i64,
    kw_none: Option<String>,
    kw_list: Vec<Value>,
) -> Result<(), String> {
    let typed = json!({
        "nothing": nothing, "yes": yes, "small": small, "big": big, "neg_big": neg_big,
        "huge": huge.get(), "float": float, "text": text, "list": list, "obj": obj,
        "kw_float": kw_float, "kw_int": kw_int, "kw_none": kw_none, "kw_list": kw_list,
    });
    record(&path, &tag, json!({ "typed": typed }))
}

/// Records any message: a positional value and keyword arguments of any kind.
#[dq::actor(actor_name = "record")]
fn record_any(path: String, tag: String, value: Option<Box<RawValue>>) -> Result<(), String> {
    let _ = value;
    record(&path, &tag, json!({}))
}

/// One of many numbered messages, for the mixed-worker and kill scenarios.
#[dq::actor]
fn count(path: String, i: u64) -> Result<(), String> {
    record(&path, "count", json!({ "i": i }))
}

/// Fails while its retry count is below `failures`, then succeeds.
#[dq::actor(max_retries = 5, min_backoff = 50, max_backoff = 200)]
fn flaky(path: String, tag: String, failures: u32) -> Result<(), String> {
    let attempt = dq::current_message().map_or(0, |m| m.options.retries());
    record(&path, &tag, json!({ "attempt": attempt }))?;
    if attempt < failures {
        return Err(format!("attempt {attempt} fails on purpose"));
    }
    Ok(())
}

/// Always fails: retried once, then dead-lettered.
#[dq::actor(max_retries = 1, min_backoff = 50, max_backoff = 100)]
fn doomed(path: String, tag: String) -> Result<(), String> {
    record(&path, &tag, json!({}))?;
    Err("always fails".to_owned())
}

/// Fails, straight to the dead letters, until the file `gate_file` exists.
#[dq::actor(max_retries = 0)]
fn gate(path: String, tag: String, gate_file: String) -> Result<(), String> {
    let open = Path::new(&gate_file).exists();
    record(&path, &tag, json!({ "open": open }))?;
    if !open {
        return Err("the gate is closed".to_owned());
    }
    Ok(())
}

/// Records `started`, waits until the file `release` exists, records `done`: a message held in
/// flight for as long as the test needs.
#[dq::actor(time_limit = 120_000)]
fn hold(path: String, tag: String, release: String) -> Result<(), String> {
    record(&path, &tag, json!({ "phase": "started" }))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(&release).exists() {
        if Instant::now() > deadline {
            return Err("never released".to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    record(&path, &tag, json!({ "phase": "done" }))
}

/// Stores `a + b` as its result.
#[dq::actor(store_results = true)]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// The error `boom` fails with; its type name travels in failure results.
#[derive(Debug)]
struct Boom(String);

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fails at once with [`Boom`], storing the failure as its result.
#[dq::actor(store_results = true, max_retries = 0)]
fn boom(text: String) -> Result<(), Boom> {
    Err(Boom(text))
}

/// Records `started`, then sleeps a minute in small steps; when an abort drops its future
/// first, records `dropped`. Async, so an abort stops it at once.
#[dq::actor(store_results = true, max_retries = 0)]
async fn sleeper(path: String, tag: String) -> Result<String, String> {
    /// Records `dropped` unless disarmed: the future was dropped before it finished.
    struct Dropped(String, String, bool);
    impl Drop for Dropped {
        fn drop(&mut self) {
            if self.2 {
                return;
            }
            let line = json!({"tag": self.1, "phase": "dropped", "pid": std::process::id()});
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&self.0) {
                let _ = f.write_all(format!("{line}\n").as_bytes());
            }
        }
    }
    record(&path, &tag, json!({ "phase": "started" }))?;
    let mut guard = Dropped(path.clone(), tag.clone(), false);
    for _ in 0..3000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    guard.2 = true;
    record(&path, &tag, json!({ "phase": "done" }))?;
    Ok("slept".to_owned())
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn env_u64(key: &str, default: u64) -> u64 {
    env(key).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let url = env("DQ_INTEROP_BROKER").expect("DQ_INTEROP_BROKER is not set");
    let queue = env("DQ_INTEROP_QUEUE").expect("DQ_INTEROP_QUEUE is not set");
    let results = env("DQ_INTEROP_RESULTS_URL").zip(env("DQ_INTEROP_RESULTS_NS"));
    let groups = env("DQ_INTEROP_GROUPS_URL");
    let prefix_keys = env("DQ_INTEROP_RESULTS_PREFIX_KEYS").as_deref() == Some("1");
    let aborts = env("DQ_INTEROP_ABORTS_URL").zip(env("DQ_INTEROP_ABORTS_NS"));
    let mut cli = dq::cli::Cli::new();
    // The broker is made in code: the heartbeat, maintenance and priority settings the
    // scenarios need have no flag.
    if url.starts_with("redis") {
        cli = cli.broker(move || {
            dq::redis::RedisBroker::builder()
                .url(url.clone())
                .namespace(env("DQ_INTEROP_NAMESPACE").unwrap_or_else(|| "dramatiq".to_owned()))
                .heartbeat_timeout(Duration::from_millis(env_u64(
                    "DQ_INTEROP_HEARTBEAT_MS",
                    60_000,
                )))
                .maintenance_chance(env_u64("DQ_INTEROP_MAINTENANCE", 1_000) as u32)
                .max_priority(env("DQ_INTEROP_MAX_PRIORITY").and_then(|p| p.parse().ok()))
                .build()
        });
    } else {
        cli = cli.broker(move || {
            dq::amqp::AmqpBroker::builder()
                .url(url.clone())
                .max_priority(env("DQ_INTEROP_MAX_PRIORITY").and_then(|p| p.parse().ok()))
                .build()
        });
    }
    let code = cli
        .configure(move |app| {
            let mut app = app
                .without_linked_actors()
                .middleware(dq::middleware::CurrentMessage);
            for mut actor in [
                types::actor(),
                record_any::actor(),
                count::actor(),
                flaky::actor(),
                doomed::actor(),
                gate::actor(),
                hold::actor(),
                add::actor(),
                boom::actor(),
                sleeper::actor(),
            ] {
                actor.options.queue_name = queue.clone();
                app = app.actor(actor);
            }
            if env("DQ_INTEROP_PERIODIC").is_some() {
                app = app.middleware(
                    dq::periodic::Periodic::new().skip_delay(Some(Duration::from_secs(10))),
                );
            }
            if let Some(url) = &groups {
                let backend = dq::ratelimit::RedisBackend::builder()
                    .url(url)
                    .build()
                    .expect("a valid group barrier Redis URL");
                app = app.middleware(
                    dq::ratelimit::GroupCallbacks::new(backend)
                        .with_barrier_ttl(Duration::from_secs(600)),
                );
            }
            if let Some((url, ns)) = &aborts {
                let backend = dq::abort::RedisBackend::builder()
                    .url(url)
                    .namespace(ns)
                    .build()
                    .expect("a valid aborts Redis URL");
                app = app.middleware(dq::abort::Abortable::new(backend));
            }
            if let Some((url, ns)) = &results {
                let backend = dq::results::RedisBackend::builder()
                    .url(url)
                    .namespace(ns)
                    .namespace_prefix_keys(prefix_keys)
                    .build()
                    .expect("a valid results Redis URL");
                app = app.middleware(dq::results::Results::new(backend));
            }
            app
        })
        .run();
    std::process::exit(code)
}
