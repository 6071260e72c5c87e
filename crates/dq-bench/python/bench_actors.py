"""The Python Dramatiq side of `cargo xtask bench`: the same actors as dq-bench-worker.

Each worker process measures itself, as the Rust one does (see crates/dq-bench/src/lib.rs):
a daemon thread writes `count first_start_ns last_finish_ns` and the latency samples to
`$DQ_BENCH_OUT/<pid>.txt` every 20 ms. The thread starts with the first message a process
runs, so a forked worker process never inherits a parent's counters or a dead thread.

Run by the bench as:
  python -m dramatiq bench_actors --path crates/dq-bench/python -p 1 -t 8 -Q QUEUE
with DQ_BENCH_BROKER_URL, DQ_BENCH_QUEUE, DQ_BENCH_NAMESPACE and DQ_BENCH_OUT set, and
DQ_BENCH_PROMETHEUS=1 (with dramatiq_prom_port and dramatiq_prom_db) for the Prometheus case.
DQ_BENCH_ABORTABLE=1 to add dramatiq-abort's Abortable middleware.
"""

import os
import threading
import time

import dramatiq

URL = os.environ.get("DQ_BENCH_BROKER_URL", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("DQ_BENCH_QUEUE", "dq-bench")

if URL.startswith("amqp"):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=URL)
else:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=URL, namespace=os.environ.get("DQ_BENCH_NAMESPACE", "dramatiq"))
if os.environ.get("DQ_BENCH_PROMETHEUS") == "1":
    from dramatiq.middleware.prometheus import Prometheus

    broker.add_middleware(Prometheus())
if os.environ.get("DQ_BENCH_ABORTABLE") == "1":
    # dramatiq-abort's middleware, events on the broker's Redis (the bench's Abortable case).
    from dramatiq_abort import Abortable
    from dramatiq_abort.backends import RedisBackend as AbortBackend

    broker.add_middleware(Abortable(backend=AbortBackend.from_url(URL)))
dramatiq.set_broker(broker)

_lock = threading.Lock()
_state = {"count": 0, "first": 0, "last": 0, "pid": None}
_latencies = []


def _writer(out):
    pid = os.getpid()
    path = os.path.join(out, f"{pid}.txt")
    tmp = os.path.join(out, f".{pid}.tmp")
    while True:
        with _lock:
            text = "%d %d %d\n" % (_state["count"], _state["first"], _state["last"])
            text += "".join("%d\n" % l for l in _latencies)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        time.sleep(0.02)


def _started():
    now = time.time_ns()
    with _lock:
        if _state["pid"] != os.getpid():
            _state.update(count=0, first=0, last=0, pid=os.getpid())
            _latencies.clear()
            out = os.environ.get("DQ_BENCH_OUT")
            if out:
                threading.Thread(target=_writer, args=(out,), daemon=True).start()
        if not _state["first"]:
            _state["first"] = now
    return now


def _finished():
    now = time.time_ns()
    with _lock:
        _state["count"] += 1
        if now > _state["last"]:
            _state["last"] = now


@dramatiq.actor(queue_name=QUEUE)
def noop():
    _started()
    _finished()


@dramatiq.actor(queue_name=QUEUE)
def sleep_sync(ms):
    _started()
    time.sleep(ms / 1000)
    _finished()


@dramatiq.actor(queue_name=QUEUE)
def latency(sent_ns):
    now = _started()
    with _lock:
        _latencies.append(now - sent_ns)
    _finished()
