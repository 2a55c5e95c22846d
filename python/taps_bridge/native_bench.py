"""The engine's own per-task cost, for comparison with taps through the bridge: a plain Python
no-op submitted through the engine's API (the bridge's engine set-up, same options), with
``inflight`` tasks in flight, as taps' synthetic bag does.

    python -m taps_bridge.native_bench ENGINE TASKS INFLIGHT '{"workers": 2, ...}'

prints ``tasks/s`` after 8 warm-up tasks.
"""

import json
import queue
import sys
import time
import uuid

from . import engines


def noop(x):
    """The task: returns its argument."""
    return x


def bag(engine, n, inflight):
    done = queue.Queue()

    def submit():
        f = engine.submit("noop-%s" % uuid.uuid4(), noop, b"", [])
        engine.on_done(f, lambda f: done.put(engine.result(f)))

    start = time.perf_counter()
    sent = 0
    for _ in range(min(inflight, n)):
        submit()
        sent += 1
    for _ in range(n):
        done.get()
        if sent < n:
            submit()
            sent += 1
    return n / (time.perf_counter() - start)


def main():
    name, n, inflight, opts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
    engine = engines.build(name, opts)
    try:
        bag(engine, 8, 8)
        print("%.1f tasks/s" % bag(engine, n, inflight))
    finally:
        engine.close()


if __name__ == "__main__":
    main()
