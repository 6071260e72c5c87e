//! The chaos run: several faults at once, under load, and a ledger that proves nothing was lost.
//!
//! On a broker of its own (a private `redis-server` with an append-only file, or a private
//! RabbitMQ node), a worker command with two processes runs `record`, `flaky` (fails its first
//! run) and `slow` (overruns its time limit on its first run) while a dq producer and a Python
//! Dramatiq 2.2.1 producer send at once, about 1 % of garbage goes straight into the queue (every
//! kind a worker must dead-letter), worker processes are SIGKILLed throughout and the broker is
//! restarted mid-run. The supervisor is then stopped with SIGTERM and a fresh worker drains what
//! is left. The run proves, and prints as a table: every good message ran at least once (the
//! ledger, a set in a Redis the run never touches), every garbage message is a dead letter,
//! nothing is left in any queue, delay queue or ack set, and how many runs were repeats.
//!
//! Sizes come from the environment: `DQ_CHAOS_MESSAGES` (default 3,000, the test command's short
//! run), `DQ_CHAOS_KILLS` (3), `DQ_CHAOS_RESTARTS` (1), `DQ_CHAOS_BROKERS` (`redis,amqp`).
//! `cargo xtask chaos` runs it long.

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dq::broker::{Broker, QueueStats};
use dq::Message;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::reliability_util::{
    children_of, PrivateRabbit, PrivateRedis, Recorder, TempDir, Worker,
};

/// The worker's message size limit in this run, so the oversized garbage stays small.
const MAX_MESSAGE_SIZE: usize = 64 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn wanted(broker: &str) -> bool {
    std::env::var("DQ_CHAOS_BROKERS")
        .map(|v| v.split(',').any(|b| b.trim() == broker))
        .unwrap_or(true)
}

/// The actor a good message `n` goes to: mostly `record`, some that fail once or overrun once.
fn actor_of(n: u64) -> &'static str {
    match n % 50 {
        7 => "slow",
        3 | 13 | 23 | 33 | 43 => "flaky",
        _ => "record",
    }
}

/// The garbage a worker must dead-letter, one of each kind per round: invalid JSON, an unknown
/// actor, arguments of the wrong types, too many arguments, a body over the size limit, a body
/// that is not UTF-8, a JSON array, `options` that is not an object.
fn garbage(queue: &str, round: u64) -> Vec<Vec<u8>> {
    let message = |actor: &str, args: &str, options: &str| {
        format!(
            r#"{{"queue_name":"{queue}","actor_name":"{actor}","args":{args},"kwargs":{{}},"options":{options},"message_id":"{}","message_timestamp":{}}}"#,
            dq_test::unique_name("garbage"),
            dq::broker::now_ms()
        )
        .into_bytes()
    };
    let mut oversized = message(
        "record",
        &format!(r#"["{}",{round}]"#, "x".repeat(MAX_MESSAGE_SIZE)),
        "{}",
    );
    oversized.shrink_to_fit();
    vec![
        b"{not json".to_vec(),
        message("no_such_actor", r#"["k",1]"#, "{}"),
        message("record", r#"[1,"not a number"]"#, "{}"),
        message("record", r#"["k",1,2,3]"#, "{}"),
        oversized,
        vec![0xff, 0xfe, b'{', 0x80, b'}'],
        br#"["record",["k",1]]"#.to_vec(),
        message("record", r#"["k",1]"#, r#"[1,2]"#),
    ]
}

/// The broker under test: a private server, restartable.
enum Server {
    Redis(PrivateRedis),
    /// The node, and the URL of the run's own vhost on it.
    Amqp(PrivateRabbit, String),
}

impl Server {
    fn name(&self) -> &'static str {
        match self {
            Server::Redis(_) => "redis",
            Server::Amqp(..) => "amqp",
        }
    }

    fn url(&self) -> String {
        match self {
            Server::Redis(r) => r.url(),
            Server::Amqp(_, url) => url.clone(),
        }
    }

    async fn restart(&mut self) {
        match self {
            Server::Redis(r) => {
                r.shutdown();
                tokio::time::sleep(Duration::from_secs(1)).await;
                r.restart();
            }
            // As an operator restarts the service: the application stops (every connection
            // closes, durable queues and persistent messages stay), the VM stays up.
            Server::Amqp(r, _) => {
                r.stop_app();
                tokio::time::sleep(Duration::from_secs(1)).await;
                r.start_app().await;
            }
        }
    }
}

/// What the run saw and proved.
#[derive(Debug, Default)]
struct Ledger {
    good: u64,
    garbage: u64,
    runs: u64,
    distinct: u64,
    dead_letters: u64,
    kills: u32,
    restarts: u32,
    dq_send_errors: u64,
    python_send_errors: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_redis() {
    if !wanted("redis") {
        return;
    }
    let server = Server::Redis(PrivateRedis::start(true));
    run(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_amqp() {
    if !wanted("amqp") {
        return;
    }
    let rabbit = PrivateRabbit::start().await;
    let url = rabbit.vhost("dq-chaos");
    let server = Server::Amqp(rabbit, url);
    run(server).await;
}

async fn connect(server: &Server, namespace: &str) -> Box<dyn Broker> {
    let url = server.url();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let made: Result<Box<dyn Broker>, dq::BrokerError> = match server {
            Server::Redis(_) => dq::redis::RedisBroker::builder()
                .url(&url)
                .namespace(namespace)
                .build()
                .await
                .map(|b| Box::new(b) as Box<dyn Broker>)
                .map_err(Into::into),
            Server::Amqp(..) => dq::amqp::AmqpBroker::builder()
                .url(&url)
                .build()
                .await
                .map(|b| Box::new(b) as Box<dyn Broker>)
                .map_err(Into::into),
        };
        match made {
            Ok(b) => return b,
            Err(e) if Instant::now() < deadline => {
                eprintln!("chaos: connecting: {}", dq::ErrorChain(&e));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!(
                "cannot connect to the {} broker: {}",
                server.name(),
                dq::ErrorChain(&e)
            ),
        }
    }
}

/// Sends good messages `range` from dq, in batches of 100 `pace` apart (so that sends meet the
/// faults), every tenth through the delay queue; a batch that fails is counted and sent again (a
/// batch that half-landed runs twice: at least once).
async fn dq_producer(
    broker: Box<dyn Broker>,
    queue: String,
    key: String,
    range: std::ops::Range<u64>,
    pace: Duration,
) -> u64 {
    let mut errors = 0;
    let ids: Vec<u64> = range.collect();
    for chunk in ids.chunks(100) {
        let now = dq::broker::now_ms();
        loop {
            let mut batch: Vec<Message> = chunk
                .iter()
                .map(|&n| {
                    if n % 10 == 0 {
                        let dq_name = dq::broker::delay_queue_name(&queue);
                        let mut m =
                            Message::new(&dq_name, actor_of(n), &(&key, n), &()).expect("message");
                        m.options.set_eta(now + (n % 20) as i64 * 100);
                        m
                    } else {
                        Message::new(&queue, actor_of(n), &(&key, n), &()).expect("message")
                    }
                })
                .collect();
            match broker.enqueue_many(&mut batch).await {
                Ok(()) => {
                    tokio::time::sleep(pace).await;
                    break;
                }
                Err(e) => {
                    errors += 1;
                    if errors % 20 == 1 {
                        eprintln!("chaos: dq send failed (retrying): {}", dq::ErrorChain(&e));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let _ = broker.close().await;
    errors
}

/// Python Dramatiq 2.2.1 sends good messages `range`, retrying each send that raises (with
/// publisher confirms on RabbitMQ, so a send that returned has landed). Returns its errors.
fn python_producer(
    server: &Server,
    namespace: &str,
    queue: &str,
    key: &str,
    range: std::ops::Range<u64>,
) -> std::process::Child {
    let script = r#"
import os, sys, time
import dramatiq
from dramatiq import Message
url, kind, ns, queue, key = sys.argv[1:6]
start, end = int(sys.argv[6]), int(sys.argv[7])
if kind == "redis":
    from dramatiq.brokers.redis import RedisBroker
    make = lambda: RedisBroker(url=url, namespace=ns)
else:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    make = lambda: RabbitmqBroker(url=url, confirm_delivery=True)
def actor_of(n):
    r = n % 50
    return "slow" if r == 7 else "flaky" if r in (3, 13, 23, 33, 43) else "record"
broker, errors = None, 0
for n in range(start, end):
    while True:
        try:
            if broker is None:
                broker = make()
                broker.declare_queue(queue)
            broker.enqueue(Message(queue_name=queue, actor_name=actor_of(n), args=(key, n), kwargs={}, options={}))
            break
        except Exception as e:
            errors += 1
            if errors % 20 == 1:
                print("python send failed (retrying):", repr(e), file=sys.stderr, flush=True)
            broker = None
            time.sleep(0.2)
print(errors, flush=True)
"#;
    std::process::Command::new(dq_interop::python())
        .args(["-c", script])
        .args([
            server.url(),
            server.name().to_owned(),
            namespace.to_owned(),
            queue.to_owned(),
            key.to_owned(),
            range.start.to_string(),
            range.end.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python producer")
}

/// Puts raw `bodies` on `queue`, as a producer that writes anything would.
async fn inject(server: &Server, namespace: &str, queue: &str, bodies: &[Vec<u8>]) -> bool {
    match server {
        Server::Redis(_) => {
            let Ok(client) = redis::Client::open(server.url()) else {
                return false;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return false;
            };
            let mut pipe = redis::pipe();
            for body in bodies {
                let id = dq_test::unique_name("g");
                pipe.cmd("HSET")
                    .arg(format!("{namespace}:{queue}.msgs"))
                    .arg(&id)
                    .arg(body.as_slice())
                    .ignore();
                pipe.cmd("RPUSH")
                    .arg(format!("{namespace}:{queue}"))
                    .arg(&id)
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await.is_ok()
        }
        Server::Amqp(..) => {
            let Ok(conn) =
                lapin::Connection::connect(&server.url(), lapin::ConnectionProperties::default())
                    .await
            else {
                return false;
            };
            let Ok(ch) = conn.create_channel().await else {
                return false;
            };
            if ch.confirm_select(Default::default()).await.is_err() {
                return false;
            }
            for body in bodies {
                let props = lapin::BasicProperties::default().with_delivery_mode(2);
                let Ok(confirm) = ch
                    .basic_publish("".into(), queue.into(), Default::default(), body, props)
                    .await
                else {
                    return false;
                };
                if confirm.await.is_err() {
                    return false;
                }
            }
            let _ = conn.close(200, "done".into()).await;
            true
        }
    }
}

fn worker_env(server: &Server, queue: &str, namespace: &str) -> HashMap<&'static str, String> {
    let mut env = HashMap::from([
        ("DQ_RELIABILITY_QUEUE", queue.to_owned()),
        ("DQ_RELIABILITY_RECORD_URL", dq_test::redis_url()),
        (
            "DQ_RELIABILITY_MAX_MESSAGE_SIZE",
            MAX_MESSAGE_SIZE.to_string(),
        ),
    ]);
    if let Server::Redis(_) = server {
        env.insert("DQ_RELIABILITY_REDIS_URL", server.url());
        env.insert("DQ_RELIABILITY_NAMESPACE", namespace.to_owned());
        env.insert("DQ_RELIABILITY_HEARTBEAT_MS", "2000".to_owned());
        env.insert("DQ_RELIABILITY_MAINTENANCE", "1000000".to_owned());
    }
    env
}

fn worker_args(server: &Server) -> Vec<String> {
    match server {
        Server::Redis(_) => Vec::new(),
        Server::Amqp(..) => vec!["--broker-url".to_owned(), server.url()],
    }
}

async fn run(mut server: Server) {
    let total = env_u64("DQ_CHAOS_MESSAGES", 3_000);
    let kills = env_u64("DQ_CHAOS_KILLS", 3) as u32;
    let restarts = env_u64("DQ_CHAOS_RESTARTS", 1) as u32;
    let started = Instant::now();
    let name = server.name();
    let queue = dq_test::unique_name("chaos");
    let namespace = dq_test::unique_name("dq-chaos");
    let dir = TempDir::new("dq-chaos");
    let mut rec = Recorder::new();
    let env = worker_env(&server, &queue, &namespace);
    let args = worker_args(&server);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // The queues exist before anyone sends: the worker declares them.
    let mut worker = Worker::start_processes(2, &args, &env, dir.path().join("worker.log"));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Faults spread over the run: `DQ_CHAOS_SECONDS`, else its expected length (a few thousand
    // messages a second), at least 1.5 s apart.
    let expected = match std::env::var("DQ_CHAOS_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        Some(s) => s,
        None => total as f64 / 4_000.0,
    };
    // Spread over the run, interleaved: kill, restart, kill, restart, ... then the rest.
    let mut order = Vec::new();
    for i in 0..kills.max(restarts) {
        if i < kills {
            order.push("kill");
        }
        if i < restarts {
            order.push("restart");
        }
    }
    let gap = Duration::from_secs_f64((expected / (order.len() + 1) as f64).max(1.5));
    let half = total / 2;
    // The dq producer's batches spread over the faults, so that some sends meet a restart.
    let span = gap.as_secs_f64() * order.len() as f64;
    let pace = Duration::from_secs_f64(span / (half / 100).max(1) as f64);
    let dq_send = tokio::spawn(dq_producer(
        connect(&server, &namespace).await,
        queue.clone(),
        rec.key.clone(),
        0..half,
        pace,
    ));
    let python = python_producer(&server, &namespace, &queue, &rec.key, half..total);

    // About 1 % garbage, in rounds of eight kinds.
    let rounds = (total / 100 / 8).max(1);
    let mut garbage_sent = 0u64;
    let mut ledger = Ledger {
        good: total,
        ..Ledger::default()
    };
    let mut next_fault = Instant::now() + Duration::from_millis(500);
    let mut round = 0;
    for fault in order {
        while Instant::now() < next_fault {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if round < rounds && inject(&server, &namespace, &queue, &garbage(&queue, round)).await {
            garbage_sent += 8;
            round += 1;
        }
        match fault {
            "kill" => {
                if let Some(&pid) = children_of(worker.pid()).first() {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    ledger.kills += 1;
                }
            }
            _ => {
                server.restart().await;
                ledger.restarts += 1;
            }
        }
        assert!(
            worker.status().is_none(),
            "the worker command stopped during the chaos:\n{}",
            worker.log_tail()
        );
        next_fault = Instant::now() + gap;
    }
    while round < rounds {
        if inject(&server, &namespace, &queue, &garbage(&queue, round)).await {
            garbage_sent += 8;
            round += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    ledger.garbage = garbage_sent;
    ledger.dq_send_errors = dq_send.await.expect("the dq producer");
    let out = tokio::task::spawn_blocking(move || python.wait_with_output())
        .await
        .expect("join")
        .expect("the Python producer");
    assert!(out.status.success(), "the Python producer failed: {out:?}");
    ledger.python_send_errors = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);

    // The supervisor stops gracefully; a fresh worker drains what is left, including what the
    // killed processes held (recovered after the heartbeat timeout on Redis, redelivered on
    // RabbitMQ).
    let status = worker.stop(Duration::from_secs(60));
    assert!(
        status.is_some(),
        "the worker command did not stop:\n{}",
        worker.log_tail()
    );
    let mut worker = Worker::start_processes(1, &args, &env, dir.path().join("drain.log"));
    let broker = connect(&server, &namespace).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let count = rec.count();
        let stats = broker.stats(&queue).await.unwrap_or_default();
        if count >= total && stats.ready == 0 && stats.delayed == 0 && stats.in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {count} of {total} good messages ran; queue {stats:?}; missing (first 20): \
             {:?}\n{}",
            &rec.missing(total)[..rec.missing(total).len().min(20)],
            worker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the last acks land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = worker.stop(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "the draining worker did not stop cleanly:\n{}",
        worker.log_tail()
    );

    ledger.distinct = rec.count();
    ledger.runs = rec.runs();
    let missing: BTreeSet<u64> = rec.missing(total).into_iter().collect();
    assert!(
        missing.is_empty(),
        "{name}: good messages never ran: {missing:?}"
    );
    let stats = broker.stats(&queue).await.expect("stats");
    ledger.dead_letters = stats.dead;
    assert_eq!(
        QueueStats { dead: 0, ..stats },
        QueueStats::default(),
        "{name}: messages left behind"
    );
    assert_eq!(
        stats.dead, garbage_sent,
        "{name}: every garbage message, and only those, is a dead letter"
    );
    let _ = broker.close().await;

    // Repeats come from deliveries a killed process held (its prefetch, 2 per thread, and its
    // running messages), from what a broker restart cut off (the same, for every process), and
    // from sends that failed and were sent again (a dq batch of 100, a Python message).
    let repeats = ledger.runs - ledger.distinct;
    let held = 8 * 2 + 8;
    let bound = u64::from(ledger.kills) * held
        + u64::from(ledger.restarts) * 2 * held
        + ledger.dq_send_errors * 100
        + ledger.python_send_errors;
    assert!(
        repeats <= bound,
        "{name}: {repeats} repeated runs, more than the kills, restarts and resends explain ({bound})"
    );
    println!(
        "\nchaos run on {name}, {:.1} s\n\n| measure | value |\n|---|---:|\n\
         | good messages (dq + Python producers) | {} |\n\
         | ran at least once | {} |\n\
         | runs in all | {} |\n\
         | repeated runs (at-least-once after kills and restarts) | {repeats} (at most {bound}) |\n\
         | garbage messages injected | {} |\n\
         | dead letters | {} |\n\
         | worker processes SIGKILLed | {} |\n\
         | broker restarts | {} |\n\
         | dq sends that failed and were retried | {} |\n\
         | Python sends that failed and were retried | {} |\n",
        started.elapsed().as_secs_f64(),
        ledger.good,
        ledger.distinct,
        ledger.runs,
        ledger.garbage,
        ledger.dead_letters,
        ledger.kills,
        ledger.restarts,
        ledger.dq_send_errors,
        ledger.python_send_errors,
    );
}
