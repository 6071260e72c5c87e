"""Python Dramatiq's enqueue throughput for `cargo xtask bench`: one producer, one message at a
time, the way `actor.send()` is used.

  python producer.py send N ACTOR [ARG]

prints {"count": N, "secs": S}, like dq-bench-producer's `send`.
"""

import json
import sys
import time

import bench_actors


def main():
    if len(sys.argv) < 4 or sys.argv[1] != "send":
        sys.exit("usage: producer.py send N ACTOR [ARG]")
    n = int(sys.argv[2])
    actor = getattr(bench_actors, sys.argv[3])
    args = [int(a) for a in sys.argv[4:]]
    start = time.perf_counter()
    for _ in range(n):
        actor.send(*args)
    secs = time.perf_counter() - start
    print(json.dumps({"count": n, "secs": secs}))


if __name__ == "__main__":
    main()
