"""The engine's own per-task cost, for comparison with taps through the bridge: a plain Python
no-op submitted through the engine's API (the bridge's engine set-up, same options), with
``inflight`` tasks in flight, as taps' synthetic bag does.

    python -m taps_bridge.native_bench ENGINE TASKS INFLIGHT '{"workers": 2, ...}'

prints ``tasks/s`` after 8 warm-up tasks, and the median time between two completions (robust
to the bursts of other load on a shared machine), ``N tasks/s median M us``; with
``TAPS_BENCH_TIMES=FILE``, the completion times too (for scripts/cpu-per-task.py). HyperQueue runs programs, not Python functions: its
plain task is ``cp`` of an empty frame into the task's result file (:func:`hq_bag`), or, with
``"native": "wait"`` in the options, ``true`` waited for through ``Client.wait_for_jobs``.

    python -m taps_bridge.native_bench glue CALLS

times the frame glue of one in-process task on Ray and Parsl, side by side in one process: an
``echo`` task with a 10-byte argument through the Python functions (``frames.ray_spec``,
``run_header``, ``Runner.run``, ``pack_done``) and through ``taps_native.Runner.task``; prints the
median µs per call of each over rounds of CALLS calls, and their ratio.
"""

import json
import os
import queue
import struct
import sys
import time
import uuid

from . import engines


# Names a file: each bag writes its completion times there, one epoch time per line.
TIMES_ENV = "TAPS_BENCH_TIMES"


def noop(x):
    """The task: returns its argument."""
    return x


def bag(engine, n, inflight):
    done = queue.Queue()

    def submit():
        f = engine.submit("noop-%s" % uuid.uuid4(), noop, b"", [])
        engine.on_done(f, lambda f: done.put(engine.value(f)))

    return run_bag(submit, done, n, inflight)


def hq_bag(runner, n, inflight):
    """HyperQueue's own cost for a plain program task: ``cp`` of an 8-byte empty frame into the
    task's result file, seen to end as taps' tasks are (the result file is complete)."""
    empty = os.path.join(runner.frames, "empty.frame")
    with open(empty, "wb") as f:
        f.write(struct.pack("<II", 0, 0))
    done = queue.Queue()

    def submit():
        t = runner.task("true-%s" % uuid.uuid4())
        runner.launch(t, ["cp", empty, t.out]).on_done(done.put)

    return run_bag(submit, done, n, inflight)


def hq_wait(client, n, inflight):
    """HyperQueue's Python API alone: ``inflight`` jobs of one ``true`` task, then
    ``Client.wait_for_jobs`` (which polls the server once a second)."""
    from hyperqueue import Job

    start = time.perf_counter()
    for _ in range(0, n, inflight):
        jobs = []
        for _ in range(inflight):
            job = Job()
            job.program(["true"], stdout=None, stderr=None)
            jobs.append(client.submit(job))
        client.wait_for_jobs(jobs)
    return n / (time.perf_counter() - start)


def run_bag(submit, done, n, inflight):
    """Runs ``n`` tasks, ``inflight`` at a time: (tasks/s, median µs between completions)."""
    start = time.perf_counter()
    sent = 0
    ends = [start]
    for _ in range(min(inflight, n)):
        submit()
        sent += 1
    for _ in range(n):
        done.get()
        ends.append(time.perf_counter())
        if sent < n:
            submit()
            sent += 1
    gaps = sorted(b - a for a, b in zip(ends, ends[1:]))
    if os.environ.get(TIMES_ENV):
        # Completion times as epoch seconds, for scripts/cpu-per-task.py (the last bag's).
        offset = time.time() - time.perf_counter()
        with open(os.environ[TIMES_ENV], "w") as f:
            f.writelines("%.6f\n" % (t + offset) for t in ends[1:])
    return n / (ends[-1] - start), gaps[len(gaps) // 2] * 1e6


def glue(calls, rounds=7):
    """Median µs per call of the Python frame glue and of ``Runner.task`` (see the module's doc)."""
    import statistics

    import taps_native

    from . import frames

    hello, echo = taps_native.frames_for("echo")
    r = taps_native.Runner(hello, [])
    spec = [("seg", frames.varint(10) + b"v" * 10)]

    def python():
        args = frames.ray_args(echo, spec, [])
        h, s, parents = frames.ray_spec(args[0], args[1:])
        header, segments = frames.run_header(h, s, lambda i: frames.unpack_done(parents[i]))
        header, segments = r.run(bytes(header), [bytes(x) for x in segments])
        return frames.pack_done(header, segments, os.getpid(), True)

    def native():
        args = frames.ray_args(echo, spec, [])
        return r.task(args[0], list(args[1:]))

    def value(done):
        slot, segments = frames.result_slot(frames.unpack_done(done)[:2])
        return bytes(slot), [bytes(s) for s in segments]

    assert value(python()) == value(native()) == (b"\x00", [spec[0][1]]), "both ways give the echoed value"
    times = {python: [], native: []}
    for _ in range(rounds):
        for f in (python, native):
            start = time.perf_counter()
            for _ in range(calls):
                f()
            times[f].append((time.perf_counter() - start) / calls * 1e6)
    p, n = statistics.median(times[python]), statistics.median(times[native])
    print("python %.1f us  native %.1f us  ratio %.2f" % (p, n, p / n))


def main():
    if sys.argv[1] == "glue":
        glue(int(sys.argv[2]))
        return
    name, n, inflight, opts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
    engine = engines.build(name, opts)
    if name == "hyperqueue":
        # HQ runs programs, not Python functions: the plain task is a program (see hq_bag).
        try:
            if opts.get("native") == "wait":
                print("%.1f tasks/s" % hq_wait(engine.hq.client, n, inflight))
            else:
                hq_bag(engine.hq, 8, 8)
                print("%.1f tasks/s median %.0f us" % hq_bag(engine.hq, n, inflight))
        finally:
            engine.close()
        return
    try:
        bag(engine, 8, 8)
        print("%.1f tasks/s median %.0f us" % bag(engine, n, inflight))
    finally:
        engine.close()


if __name__ == "__main__":
    main()
