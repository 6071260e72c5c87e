"""The Python side of dq's interop scenarios: real Dramatiq 2.2.1 actors, worker and producer.

The same module is the worker (`python -m dramatiq dq_interop_actors`) and the producer and
result reader (`python dq_interop_actors.py send|get-result ...`). Every setting comes from the
environment the Rust test sets, so both sides agree on the broker, the queue and the timeouts:

  DQ_INTEROP_BROKER       redis://... or amqp://... (required)
  DQ_INTEROP_QUEUE        the queue every actor uses (required)
  DQ_INTEROP_NAMESPACE    the Redis key namespace (default "dramatiq")
  DQ_INTEROP_HEARTBEAT_MS Redis heartbeat_timeout (default Dramatiq's 60000)
  DQ_INTEROP_MAINTENANCE  Redis maintenance_chance out of 1,000,000 (default Dramatiq's 1000)
  DQ_INTEROP_RESULTS_URL  with DQ_INTEROP_RESULTS_NS: store results in this Redis
  DQ_INTEROP_RESULTS_NS   the results namespace
  DQ_INTEROP_RESULTS_PREFIX_KEYS  "1": result keys are the namespaced strings, not their MD5
  DQ_INTEROP_MAX_PRIORITY RabbitMQ max_priority (x-max-priority) of the queues (on Redis only
                          the dq side reads it: Python's Redis broker has no priority)
  DQ_INTEROP_GROUPS_URL   run group completion callbacks, with barriers in this Redis
  DQ_INTEROP_ABORTS_URL   with DQ_INTEROP_ABORTS_NS: run dramatiq-abort's Abortable, events in this Redis
  DQ_INTEROP_ABORTS_NS    the events' namespace (dramatiq-abort's RedisBackend(namespace=...))
  DQ_INTEROP_WHO          the label records carry (default "py")
  DQ_INTEROP_PROMETHEUS   "1": add Dramatiq's Prometheus middleware (it reads dramatiq_prom_*)

The actors mirror those of the dq worker binary (src/bin/dq-interop-worker.rs), name for name:
each appends one JSON line per run to the file named by its first argument.
"""

import json
import os
import sys
import time

import dramatiq
from dramatiq.middleware import CurrentMessage

BROKER_URL = os.environ["DQ_INTEROP_BROKER"]
QUEUE = os.environ["DQ_INTEROP_QUEUE"]
WHO = os.environ.get("DQ_INTEROP_WHO", "py")

if BROKER_URL.startswith("redis"):
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(
        url=BROKER_URL,
        namespace=os.environ.get("DQ_INTEROP_NAMESPACE", "dramatiq"),
        heartbeat_timeout=int(os.environ.get("DQ_INTEROP_HEARTBEAT_MS", "60000")),
        maintenance_chance=int(os.environ.get("DQ_INTEROP_MAINTENANCE", "1000")),
    )
else:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    max_priority = os.environ.get("DQ_INTEROP_MAX_PRIORITY")
    broker = RabbitmqBroker(url=BROKER_URL, max_priority=int(max_priority) if max_priority else None)

broker.add_middleware(CurrentMessage())
if os.environ.get("DQ_INTEROP_RESULTS_NS"):
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    result_backend = RedisBackend(
        url=os.environ["DQ_INTEROP_RESULTS_URL"],
        namespace=os.environ["DQ_INTEROP_RESULTS_NS"],
        use_namespace_prefix_keys=os.environ.get("DQ_INTEROP_RESULTS_PREFIX_KEYS") == "1",
    )
    broker.add_middleware(Results(backend=result_backend))
if os.environ.get("DQ_INTEROP_GROUPS_URL"):
    from dramatiq.middleware import GroupCallbacks
    from dramatiq.rate_limits.backends import RedisBackend as RateLimiterRedisBackend

    broker.add_middleware(
        GroupCallbacks(RateLimiterRedisBackend(url=os.environ["DQ_INTEROP_GROUPS_URL"]), barrier_ttl=600_000)
    )
if os.environ.get("DQ_INTEROP_PERIODIQ_SKIP_DELAY"):
    from periodiq import PeriodiqMiddleware

    broker.add_middleware(PeriodiqMiddleware(skip_delay=int(os.environ["DQ_INTEROP_PERIODIQ_SKIP_DELAY"])))
if os.environ.get("DQ_INTEROP_PROMETHEUS") == "1":
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())
abortable = None
if os.environ.get("DQ_INTEROP_ABORTS_NS"):
    from dramatiq_abort import Abortable
    from dramatiq_abort import backends as abort_backends

    abortable = Abortable(
        backend=abort_backends.RedisBackend.from_url(
            os.environ["DQ_INTEROP_ABORTS_URL"], namespace=os.environ["DQ_INTEROP_ABORTS_NS"]
        )
    )
    broker.add_middleware(abortable)
dramatiq.set_broker(broker)


def compact(value):
    return json.dumps(value, separators=(",", ":"))


def record(path, tag, **extra):
    """Appends one JSON line: who ran what, with the message as this worker saw it."""
    message = CurrentMessage.get_current_message()
    line = {
        "who": WHO,
        "pid": os.getpid(),
        "tag": tag,
        "actor": message.actor_name,
        "queue": message.queue_name,
        "message_id": message.message_id,
        "args": list(message.args),
        "kwargs": message.kwargs,
        "args_raw": compact(list(message.args)),
        "kwargs_raw": compact(message.kwargs),
        "options": message.options,
        "retries": message.options.get("retries", 0),
        "at_ms": int(time.time() * 1000),
    }
    line.update(extra)
    # One write of one line on an O_APPEND file: lines of concurrent writers never interleave.
    with open(path, "a", encoding="utf-8") as f:
        f.write(compact(line) + "\n")


def python_types(values):
    return [type(v).__name__ for v in values]


@dramatiq.actor(queue_name=QUEUE, actor_name="types")
def types_(path, tag, *args, **kwargs):
    record(
        path,
        tag,
        arg_types=python_types(args),
        kwarg_types={k: type(v).__name__ for k, v in kwargs.items()},
    )


@dramatiq.actor(queue_name=QUEUE, actor_name="record")
def record_(path, tag, *args, **kwargs):
    record(path, tag)


@dramatiq.actor(queue_name=QUEUE)
def count(path, i):
    record(path, "count", i=i)


@dramatiq.actor(queue_name=QUEUE, max_retries=5, min_backoff=50, max_backoff=200)
def flaky(path, tag, failures):
    attempt = CurrentMessage.get_current_message().options.get("retries", 0)
    record(path, tag, attempt=attempt)
    if attempt < failures:
        raise RuntimeError(f"attempt {attempt} fails on purpose")


@dramatiq.actor(queue_name=QUEUE, max_retries=1, min_backoff=50, max_backoff=100)
def doomed(path, tag):
    record(path, tag)
    raise RuntimeError("always fails")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def gate(path, tag, gate_file):
    """Fails, straight to the dead letters, until the file `gate_file` exists."""
    record(path, tag, open=os.path.exists(gate_file))
    if not os.path.exists(gate_file):
        raise RuntimeError("the gate is closed")


@dramatiq.actor(queue_name=QUEUE, time_limit=120_000)
def hold(path, tag, release):
    record(path, tag, phase="started")
    deadline = time.time() + 60
    while not os.path.exists(release):
        if time.time() > deadline:
            raise RuntimeError("never released")
        time.sleep(0.02)
    record(path, tag, phase="done")


class Boom(Exception):
    pass


# Dramatiq refuses store_results without the Results middleware: these exist only with it.
if os.environ.get("DQ_INTEROP_RESULTS_NS"):

    @dramatiq.actor(queue_name=QUEUE, store_results=True)
    def add(a, b):
        return a + b

    @dramatiq.actor(queue_name=QUEUE, store_results=True, max_retries=0)
    def boom(text):
        raise Boom(text)


if os.environ.get("DQ_INTEROP_PERIODIQ_SKIP_DELAY"):
    from periodiq import cron

    # A periodiq actor (its own schedule never fires in a test: once a year): its middleware
    # skips its messages whose `scheduled_at` is older than the skip delay.
    @dramatiq.actor(queue_name=QUEUE, actor_name="periodic_record", periodic=cron("0 0 1 1 *"))
    def periodic_record(path, tag):
        message = CurrentMessage.get_current_message()
        record(path, tag, scheduled_at=message.options.get("scheduled_at"))
# An abortable sleeper needs the Results middleware (its outcome is read as a result) and Abortable.
if os.environ.get("DQ_INTEROP_RESULTS_NS") and abortable is not None:
    from dramatiq_abort import Abort

    @dramatiq.actor(queue_name=QUEUE, store_results=True, max_retries=0)
    def sleeper(path, tag):
        """Records "started", sleeps a minute in small steps unless aborted ("aborted")."""
        record(path, tag, phase="started")
        try:
            for _ in range(3000):
                time.sleep(0.02)
        except Abort:
            record(path, tag, phase="aborted")
            raise
        record(path, tag, phase="done")
        return "slept"


def abort_message(message_id, mode, timeout_ms):
    """dramatiq-abort's abort(message_id, mode=..., abort_timeout=...) through this broker's Abortable."""
    from dramatiq_abort import abort
    from dramatiq_abort.middleware import AbortMode

    abort(message_id, middleware=abortable, mode=AbortMode(mode), abort_timeout=int(timeout_ms))


def send(spec_path):
    """Sends each message of the JSON list in `spec_path` ({actor, args, kwargs, options, delay})
    through its actor, as an application would, and prints each enqueued message as one JSON line."""
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    for item in spec:
        actor = broker.get_actor(item["actor"])
        message = actor.send_with_options(
            args=tuple(item.get("args", [])),
            kwargs=item.get("kwargs", {}),
            delay=item.get("delay"),
            **item.get("options", {}),
        )
        sys.stdout.write(message.encode().decode("utf-8") + "\n")
    sys.stdout.flush()


def send_count(path, start, n):
    """Sends `count(path, i)` for i in start..start+n, as fast as the broker takes them."""
    for i in range(start, start + n):
        count.send(path, i)


def get_result(body, timeout_ms):
    """Reads the result of the message `body` (its JSON) the way an application would, blocking,
    and prints {"ok": value} or {"failure": {...}} or {"error": "..."}."""
    from dramatiq.results import ResultFailure

    message = dramatiq.Message.decode(body.encode("utf-8"))
    try:
        value = message.get_result(backend=result_backend, block=True, timeout=timeout_ms)
        out = {"ok": value}
    except ResultFailure as e:
        out = {"failure": {"type": e.orig_exc_type, "msg": e.orig_exc_msg, "str": str(e)}}
    except Exception as e:  # noqa: BLE001 - the test prints whatever went wrong
        out = {"error": f"{type(e).__name__}: {e}"}
    print(compact(out))


def send_pipeline():
    """Runs the pipeline add(1, 2) | add(10) and prints its last message."""
    p = dramatiq.pipeline([add.message(1, 2), add.message(10)]).run()
    print(p.messages[-1].encode().decode("utf-8"))


def send_group(path, n, release):
    """Runs a group of `n` hold(path, "child<i>", release) messages with one completion
    callback, record(path, "callback")."""
    g = dramatiq.group([hold.message(path, f"child{i}", release) for i in range(n)])
    g.add_completion_callback(record_.message(path, "callback"))
    g.run()


def delete_queues(names):
    """Deletes RabbitMQ queues, for the tests' cleanup."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(BROKER_URL))
    channel = connection.channel()
    for name in names:
        channel.queue_delete(name)
    connection.close()


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "send":
        send(sys.argv[2])
    elif command == "send-count":
        send_count(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif command == "send-pipeline":
        send_pipeline()
    elif command == "send-group":
        send_group(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif command == "abort":
        abort_message(sys.argv[2], sys.argv[3], sys.argv[4])
    elif command == "delete-queues":
        delete_queues(sys.argv[2:])
    elif command == "get-result":
        get_result(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"unknown command {command!r}")
    broker.close()
