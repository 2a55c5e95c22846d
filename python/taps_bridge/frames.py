"""taps protocol frames, worker side: what an engine's worker process runs for each taps task.

A task reaches the engine's worker as the pieces of a taps ``Run`` frame (built by the driver)
plus the results of its parents (engine futures the engine resolved to their values). The
worker builds the ``Run`` frame and runs it in its own process with ``taps_native`` (the PyO3
module of python/taps-native, built by scripts/install-engines.sh) when that module is of the
driver's build; otherwise it hands the frame to a ``taps-worker`` process it keeps (one per
thread, started on first use, over a Unix socket: ``taps-worker worker --pipe-fd N``). It returns
the ``Done`` frame as ``(header, segments, worker, in_process)``: that is the engine's value of
the task, which children receive without it passing through the driver.

Frame layout (src/protocol.rs): u32 LE header length, u32 LE segment count, u64 LE per segment
(top bit: the segment is a shared-memory descriptor passed with SCM_RIGHTS), header, segments.
"""

import array
import os
import socket
import struct
import subprocess
import threading

SHARED = 1 << 63
_local = threading.local()


def varint(n):
    """postcard's unsigned varint."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(buf, at):
    """Decodes a varint at ``at``; returns (value, next position)."""
    n = shift = 0
    while True:
        b = buf[at]
        at += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, at
        shift += 7


def encode(header, segments):
    """A frame's bytes, as a list of buffers."""
    prefix = struct.pack("<II", len(header), len(segments))
    prefix += b"".join(struct.pack("<Q", len(s)) for s in segments)
    return [prefix + header] + list(segments)


class Conn:
    """Reads frames from a Unix socket, keeping descriptors passed with the bytes."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.fds = []

    def _fill(self, n):
        while len(self.buf) < n:
            data, anc, _, _ = self.sock.recvmsg(max(1 << 16, n - len(self.buf)), socket.CMSG_SPACE(32 * 4))
            for level, kind, d in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(d[: len(d) - len(d) % a.itemsize])
                    self.fds.extend(a)
            if not data:
                raise EOFError("taps-worker closed its connection (it died)")
            self.buf += data

    def take(self, n):
        self._fill(n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_frame(self):
        hlen, nseg = struct.unpack("<II", self.take(8))
        lens = struct.unpack("<%dQ" % nseg, self.take(8 * nseg)) if nseg else ()
        header = self.take(hlen)
        segments = []
        for raw in lens:
            if raw & SHARED:
                n, fd = raw & ~SHARED, self.fds.pop(0)
                try:
                    parts, got = [], 0
                    while got < n:
                        b = os.pread(fd, n - got, got)
                        if not b:
                            raise EOFError("short shared-memory segment")
                        parts.append(b)
                        got += len(b)
                    segments.append(b"".join(parts))
                finally:
                    os.close(fd)
            else:
                segments.append(self.take(raw))
        return header, segments

    def write_frame(self, header, segments):
        for b in encode(header, segments):
            self.sock.sendall(b)


class Worker:
    """A taps-worker process serving this thread."""

    def __init__(self, program, hello):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [program, "worker", "--pipe-fd", str(theirs.fileno()), "--parent-pid", str(os.getpid())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.conn = Conn(ours)
        self.conn.write_frame(*split(hello))
        header, _ = self.conn.read_frame()
        tag, at = read_varint(header, 0)
        if tag != 0:  # Ready
            n, at = read_varint(header, at)
            raise RuntimeError("taps-worker refused to start: " + header[at : at + n].decode(errors="replace"))

    def run(self, header, segments):
        self.conn.write_frame(header, segments)
        return self.conn.read_frame()

    def close(self):
        try:
            self.conn.sock.close()
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()


def split(frame):
    """A frame's (header, segments) from its bytes (no shared segments); the segments are slices
    of ``frame`` (memoryviews when ``frame`` is one: no copy)."""
    hlen, nseg = struct.unpack_from("<II", frame, 0)
    lens = struct.unpack_from("<%dQ" % nseg, frame, 8)
    at = 8 + 8 * nseg
    header = frame[at : at + hlen]
    at += hlen
    segments = []
    for n in lens:
        segments.append(frame[at : at + n])
        at += n
    return bytes(header), segments


# A task's outcome as one ``bytes`` value (:func:`pack_done`): whether it ran in the engine's
# worker process, the pid of the process that ran it, then its ``Done`` frame.
DONE_PREFIX = struct.Struct("<BI")


def pack_done(header, segments, pid, in_process):
    """The ``Done`` frame ``header`` + ``segments`` of a task run by process ``pid`` as one
    ``bytes`` value: Ray stores and passes ``bytes`` as they are (anything else is msgpacked and
    pickled, which costs a tenth of a no-op task's time on each side)."""
    return b"".join([DONE_PREFIX.pack(in_process, pid)] + encode(header, segments))


def unpack_done(value):
    """A :func:`pack_done` value as ``(header, segments, worker, in_process)``; the segments are
    memoryviews of ``value`` (no copy)."""
    in_process, pid = DONE_PREFIX.unpack_from(value, 0)
    header, segments = split(memoryview(value)[DONE_PREFIX.size :])
    return header, segments, "pid-%d" % pid, bool(in_process)


# A task's arguments as Ray gets them (:func:`ray_args`): one ``bytes`` value holding the
# ``Run`` header's start and every argument of at most ``RAY_INLINE`` bytes, then the larger ones
# and the parents' object references as arguments of their own. Each kind is one byte: a
# segment "s" or slot "l" inside, "S" or "L" in an argument of its own, a parent "d".
RAY_INLINE = 64 << 10
_PACK = struct.Struct("<II")


def ray_args(head, spec, deps):
    """A task's arguments as Ray takes them: ``bytes`` values (Ray passes them as they are; a
    tuple or a list is msgpacked and pickled, and every argument costs Ray time of its own) and
    the parents' object references (``deps[i]``). See :data:`RAY_INLINE`."""
    kinds, lens, inline, rest = bytearray(), [], [], []
    for k, v in spec:
        if k == "dep":
            kinds += b"d"
            rest.append(deps[v])
        elif len(v) > RAY_INLINE:
            kinds += b"S" if k == "seg" else b"L"
            rest.append(v)
        else:
            kinds += b"s" if k == "seg" else b"l"
            lens.append(len(v))
            inline.append(v)
    packed = [_PACK.pack(len(head), len(kinds)), head, bytes(kinds), struct.pack("<%dI" % len(lens), *lens)]
    return (b"".join(packed + inline), *rest)


def ray_spec(packed, rest):
    """:func:`ray_args`' arguments back as (``Run`` header start, spec, parents' values)."""
    m = memoryview(packed)
    hlen, n = _PACK.unpack_from(m, 0)
    at = _PACK.size
    head = m[at : at + hlen]
    at += hlen
    kinds = bytes(m[at : at + n])
    at += n
    ninline = sum(k in b"sl" for k in kinds)
    lens = struct.unpack_from("<%dI" % ninline, m, at)
    at += 4 * ninline
    spec, parents, rest, lens = [], [], iter(rest), iter(lens)
    for k in kinds:
        if k == 100:  # "d"
            spec.append(("dep", len(parents)))
            parents.append(next(rest))
            continue
        if k in b"sl":
            size = next(lens)
            v = m[at : at + size]
            at += size
        else:
            v = next(rest)
        spec.append(("seg" if k in b"sS" else "slot", v))
    return bytes(head), spec, parents


def ray_task(ctx):
    """The function Ray runs for each taps task, with ``ctx`` (see :func:`run_task`) inside it:
    Ray ships a remote function to its workers once, its arguments with every task. Takes
    :func:`ray_args`' arguments (a parent's object reference arrives as the parent's value) and
    returns a :func:`pack_done` value."""

    def taps_task(packed, *rest):
        return packed_task(ctx, packed, rest)

    return taps_task


# The run's context (:func:`run_task`'s ``ctx``) as one ``bytes`` value (:func:`pack_ctx`), for
# engines that serialize every argument of every task themselves (Parsl: with dill, a pure-Python
# pickler, whose cost grows with the number of objects).
_CTX = struct.Struct("<III")
_ctx_seen = (None, None)


def pack_ctx(ctx):
    """``ctx`` = (taps-worker program, Hello frame, build id or None) as one ``bytes`` value."""
    program, hello, build = ctx[0].encode(), bytes(ctx[1]), (ctx[2] or "").encode()
    return b"".join([_CTX.pack(len(program), len(hello), len(build)), program, hello, build])


def ctx_of(packed):
    """:func:`pack_ctx`'s value back as ``ctx``: the same tuple object as long as the same run's
    tasks come (this process's last one is kept; :func:`for_run` then finds it at once)."""
    global _ctx_seen
    seen, ctx = _ctx_seen
    if seen == packed:
        return ctx
    a, b, c = _CTX.unpack_from(packed, 0)
    at = _CTX.size
    program = bytes(packed[at : at + a]).decode()
    hello = bytes(packed[at + a : at + a + b])
    build = bytes(packed[at + a + b : at + a + b + c]).decode() or None
    ctx = (program, hello, build)
    _ctx_seen = (bytes(packed), ctx)
    return ctx


def bytes_task(ctx, packed, *rest):
    """The function Parsl runs for each taps task: every argument and the result are ``bytes``
    (:func:`pack_ctx`, then :func:`ray_args`' arguments, a parent's :func:`pack_done` value in
    place of its future), which dill serializes as one object each; returns a :func:`pack_done`
    value."""
    return packed_task(ctx_of(ctx), packed, rest)


def packed_task(ctx, packed, rest):
    """Runs the task of :func:`ray_args`' arguments (``rest``: a parent's :func:`pack_done`
    value in place of its future) for the run of ``ctx``; returns its :func:`pack_done` value.
    In this process, ``taps_native.Runner.task`` does it all in Rust (a ``bytes`` argument is
    passed as it is); else the frame goes to this thread's taps-worker."""
    r = native_runner(ctx)
    if r is not None:
        return r.task(_as_bytes(packed), [_as_bytes(v) for v in rest])
    head, spec, parents = ray_spec(packed, rest)
    header, segments, pid, in_process = execute(ctx, head, spec, lambda i: unpack_done(parents[i]))
    return pack_done(header, segments, pid, in_process)


def _as_bytes(v):
    """``v`` as ``bytes`` (itself when it is)."""
    return v if type(v) is bytes else bytes(v)


class ParentFailed(Exception):
    """A parent of the task failed: the task does not run (the driver records it as
    ``ParentFailed``, naming the parent)."""


def result_slot(done):
    """The result of a successful ``Done`` frame as (slot bytes, segments) to put in a child's
    ``Run`` (a child goes to the engine before its parents finish: one may have failed)."""
    header, segments = done[0], done[1]
    tag, at = read_varint(header, 0)
    _, at = read_varint(header, at)  # seq
    if tag != 2:
        raise RuntimeError("a parent's result is not a Done frame")
    if header[at] != 0:
        raise ParentFailed("a parent task failed")
    at += 1
    start = at
    slot, at = read_varint(header, at)
    if slot == 0:
        return header[start:at], segments[:1]
    n, at = read_varint(header, at)  # Ref(DataRef { key, size })
    at += n
    _, at = read_varint(header, at)
    return header[start:at], []


def run_header(head, spec, result_of):
    """A ``Run`` frame's header and segments: ``head`` = the header without its argument list,
    ``spec`` = one ("seg", bytes) / ("slot", bytes) / ("dep", parent index) per argument;
    ``result_of(i)`` is parent ``i``'s ``Done`` frame (header, segments)."""
    header = bytearray(head)
    header += varint(len(spec))
    segments = []
    for kind, v in spec:
        if kind == "seg":
            header.append(0)
            segments.append(v)
        elif kind == "slot":
            header += v
        else:
            slot, segs = result_slot(result_of(v))
            header += slot
            segments += segs
    return header, segments


def for_run(ctx):
    """Makes this thread's cached runner and taps-worker those of the run of ``ctx``: an engine
    worker may outlive a run (a running Dask scheduler or Ray cluster that several taps runs join
    in turn), and another run's ``Hello`` has another run directory, data layer, build. Both are
    dropped (the taps-worker closed) when ``ctx`` differs from the one they were made for.
    ``ctx`` is the very same object for every task of a run on Ray (inside the remote function);
    Dask and Parsl unpickle an equal copy per task: a tuple comparison."""
    old = getattr(_local, "ctx", None)
    if old is ctx:
        return
    if old is not None and old == ctx:
        _local.ctx = ctx
        return
    w = getattr(_local, "worker", None)
    _local.worker = None
    _local.runner = None
    _local.ctx = ctx
    if w is not None:
        w.close()


def native_runner(ctx):
    """This thread's in-process runner (``taps_native.Runner``) for the run of ``ctx``, or None:
    the driver did not ask for one (``ctx[2]`` is None), or ``taps_native`` is missing here or of
    another build."""
    for_run(ctx)
    r = getattr(_local, "runner", None)
    if r is None:
        r = False
        if ctx[2] is not None:
            try:
                import taps_native
            except ImportError:
                taps_native = None
            if taps_native is not None and taps_native.build_id() == ctx[2]:
                r = taps_native.Runner(*split(ctx[1]))
        _local.runner = r
    return r or None


def native_status(build):
    """Whether the driver of build ``build`` can have its tasks run in process: (True, where) or
    (False, why not)."""
    try:
        import taps_native
    except ImportError as e:
        return False, "no taps_native module (%s)" % e
    if taps_native.build_id() != build:
        return False, "%s is of build %s, not of the driver's %s" % (taps_native.__file__, taps_native.build_id(), build)
    return True, taps_native.__file__


def run_task(ctx, head, spec, *parents):
    """Runs one taps task: ``ctx`` = (taps-worker program, Hello frame, build id of the driver
    for ``taps_native`` or None), ``head`` and ``spec`` as :func:`run_header` takes them,
    ``parents`` the parents' ``Done`` frames. Returns the ``Done`` frame (header, segments), the
    worker's name and whether it ran in this process."""
    header, segments, pid, in_process = execute(ctx, head, spec, lambda i: parents[i])
    return header, segments, "pid-%d" % pid, in_process


def execute(ctx, head, spec, result_of):
    """Runs the task of :func:`run_header`'s arguments in this process (``taps_native``) or in
    this thread's taps-worker: (``Done`` header, segments, pid that ran it, in this process)."""
    header, segments = run_header(head, spec, result_of)
    segments = [s if isinstance(s, bytes) else bytes(s) for s in segments]
    r = native_runner(ctx)
    if r is not None:
        header, segments = r.run(bytes(header), segments)
        return header, segments, os.getpid(), True
    w = getattr(_local, "worker", None)
    if w is not None and w.proc.poll() is not None:
        w = None
    if w is None:
        w = _local.worker = Worker(*ctx[:2])
    try:
        header, segments = w.run(bytes(header), segments)
        return header, segments, w.proc.pid, False
    except Exception:
        _local.worker = None
        w.close()
        raise
