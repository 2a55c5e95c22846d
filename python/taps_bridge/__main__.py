"""``python -m taps_bridge``: serves one taps run (see the package's doc)."""

import json
import os
import signal
import struct
import sys
import threading
import traceback

from . import engines
from .frames import native_status


# At most this many buffers per writev (Linux's IOV_MAX).
IOV_MAX = 1024


class Channel:
    """Messages to and from the driver over the process's original stdin and stdout."""

    def __init__(self):
        self.rd = os.fdopen(os.dup(0), "rb", buffering=1 << 16)
        self.wr = os.fdopen(os.dup(1), "wb", buffering=0)
        # Engines print: what they print goes to stderr, never into the protocol.
        os.dup2(2, 1)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        self.lock = threading.Lock()
        self.sent = 0

    def recv(self):
        head = self.rd.read(8)
        if len(head) < 8:
            return None, []
        jlen, nblobs = struct.unpack("<II", head)
        lens = struct.unpack("<%dQ" % nblobs, self.rd.read(8 * nblobs)) if nblobs else ()
        msg = json.loads(self.rd.read(jlen))
        return msg, [self.rd.read(n) for n in lens]

    def send(self, msg, blobs=()):
        j = json.dumps(msg).encode()
        head = struct.pack("<II", len(j), len(blobs)) + b"".join(struct.pack("<Q", len(b)) for b in blobs)
        parts = [memoryview(head + j)] + [memoryview(b) for b in blobs if len(b)]
        fd = self.wr.fileno()
        with self.lock:
            # One system call for the whole message (the driver's reader wakes once).
            while parts:
                n = os.writev(fd, parts[:IOV_MAX])
                while parts and n >= len(parts[0]):
                    n -= len(parts[0])
                    parts.pop(0)
                if n:
                    parts[0] = parts[0][n:]
            self.sent += 8 + 8 * len(blobs) + len(j) + sum(len(b) for b in blobs)


def error_of(e):
    """A taps TaskError for an engine-side failure."""
    return {"type": "EngineError", "message": "%s: %s" % (type(e).__name__, e), "traceback": traceback.format_exc()}


class Server:
    """One run's engine, driven by the driver's messages (:meth:`handle`); answers go through
    ``ch.send(msg, blobs)``. :meth:`handle` returns False once the driver said ``shutdown``;
    :meth:`close` ends the engine and says ``bye``."""

    def __init__(self, ch):
        self.ch = ch
        self.engine = None
        # taps key -> engine future, kept until the driver releases it: the engine keeps a
        # task's value while its future lives (and while a task that takes it has not run).
        self.futures = {}
        self.peak = self.early = 0
        self.counts = {"in_process": 0}
        self.inline = 0
        self.pending = False
        self.ctx = None

    def handle(self, msg, blobs):
        ch, engine, futures = self.ch, self.engine, self.futures
        op = msg["op"]
        if op == "start":
            try:
                self.engine = engines.build(msg["engine"], msg["options"])
                self.inline = msg.get("inline", 0)
                # Tasks run inside the engine's workers (taps_native) when the module is of
                # the driver's build, unless the driver said not to.
                build = msg.get("build")
                native, where = native_status(build) if build else (False, "turned off (TAPS_IN_PROCESS=0)")
                self.ctx = (msg["worker"], blobs[0], build if native else None)
                # An engine that resolves futures as arguments itself takes a child before its
                # parents finished (the driver then sends it at once).
                self.pending = getattr(self.engine, "pending_parents", False)
                ch.send(
                    {
                        "op": "ready",
                        "describe": self.engine.describe(),
                        "pending_parents": self.pending,
                        "in_process": native,
                        "runner": where,
                    }
                )
            except Exception as e:
                ch.send({"op": "error", "message": "%s: %s" % (type(e).__name__, e)})
                return False
        elif op == "submit":
            seq, key = msg["seq"], msg["key"]
            spec, deps, named = [], [], set()
            rel = msg.get("release", ())
            try:
                for a in msg["args"]:
                    if "blob" in a:
                        spec.append(("seg", blobs[a["blob"]]))
                    elif "slot" in a:
                        spec.append(("slot", blobs[a["slot"]]))
                    else:
                        spec.append(("dep", len(deps)))
                        deps.append(futures[a["dep"]])
                        named.add(a["dep"])
                # Keys this submission does not name are released before it: Dask's client sends
                # both in one batch then, the submission first (released after it, the release
                # went out alone and held the next submission for the client's 10 ms batch
                # interval, and reached the scheduler before it, whose free-keys then held the
                # task back for the worker stream's 5 ms: 1 in flight 76-82 -> 92-94 tasks/s, as Dask
                # alone). The ones it names go after it (HyperQueue would delete their results).
                release(engine, futures, [k for k in rel if k not in named])
                rel = [k for k in rel if k in named]
                # A parent not finished yet: the engine runs the child once it has.
                self.early += self.pending and any(not engine.done(d) for d in deps)
                fut = engine.submit_task(key, self.ctx, blobs[0], spec, [engine.arg(d) for d in deps])
            except Exception as e:
                ch.send({"op": "done", "seq": seq, "error": error_of(e)})
            else:
                futures[key] = fut
                self.peak = max(self.peak, len(futures))
                inline, counts = self.inline, self.counts
                engine.on_done(fut, lambda f, seq=seq: report(ch, engine, f, seq, inline, counts))
            release(engine, futures, rel)
        elif op == "release":
            release(engine, futures, msg["keys"])
        elif op == "fetch":
            try:
                header, segments = engine.result(futures[msg["key"]])[:2]
                ch.send({"op": "value", "id": msg["id"]}, [header] + list(segments))
            except Exception as e:
                ch.send({"op": "value", "id": msg["id"], "error": "%s: %s" % (type(e).__name__, e)})
        elif op == "stats":
            ch.send({"op": "stats", "id": msg["id"], "sent": ch.sent})
        elif op == "shutdown":
            return False
        return True

    def close(self):
        """Ends the engine (if it started) and says ``bye`` with the run's counts."""
        bye = {
            "op": "bye",
            "held": len(self.futures),
            "peak": self.peak,
            "early": self.early,
            "in_process": self.counts["in_process"],
        }
        if self.engine is not None:
            try:
                # What the engine itself still holds (Dask: its scheduler's tasks), if it says.
                if hasattr(self.engine, "tasks"):
                    bye["engine_tasks"] = self.engine.tasks()
            except Exception:
                traceback.print_exc()
            try:
                self.engine.close()
            except Exception:
                traceback.print_exc()
        try:
            self.ch.send(dict(bye, sent=self.ch.sent))
        except Exception:
            pass


def main():
    # The driver died (its death signal): end every process of the engine, which all run in
    # this process's group.
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    server = Server(Channel())
    try:
        while True:
            msg, blobs = server.ch.recv()
            if msg is None or not server.handle(msg, blobs):
                break
    finally:
        server.close()
        # Whatever the engine left running (its workers are in this process group) ends here.
        os.killpg(0, signal.SIGKILL)


def release(engine, futures, keys):
    """Drops the engine futures of ``keys``: nothing will take them as an argument or fetch them.
    An engine that keeps results of its own (HyperQueue's result files) frees them then."""
    free = getattr(engine, "release", None)
    for k in keys:
        f = futures.pop(k, None)
        if f is not None and free is not None:
            free(f)


def report(ch, engine, fut, seq, inline, counts):
    """Tells the driver how a task ended: its Done header, the result's bytes only when small.
    Counts the tasks that ran inside the engine's workers (``counts["in_process"]``)."""
    try:
        header, segments, worker, *how = engine.result(fut)
        if how and how[0]:
            with ch.lock:  # callbacks may run on several threads
                counts["in_process"] += 1
    except BaseException as e:  # the engine lost the task (worker died, cancelled...)
        ch.send({"op": "done", "seq": seq, "error": error_of(e)})
        return
    size = sum(len(s) for s in segments)
    if size <= inline:
        ch.send({"op": "done", "seq": seq, "size": size, "inline": True, "worker": worker}, [header] + list(segments))
    else:
        ch.send({"op": "done", "seq": seq, "size": size, "worker": worker}, [header] + [b"" for _ in segments])


if __name__ == "__main__":
    main()
