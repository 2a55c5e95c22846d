"""HyperQueue through its Python API (``pip install hyperqueue``: the runtime is inside, no ``hq``).

Each taps task is one HQ job of one *program* task: ``taps-frame --input IN --output OUT`` (the
one-frame runner beside the taps binary, which links neither MPI nor HDF5 and so starts fast),
or ``PROGRAM worker run-frame --input IN --output OUT`` (the taps worker's one-shot mode, the same
code) when there is no ``taps-frame``. ``IN`` holds the task's ``Hello`` and ``Run``
frames, ``OUT`` receives its ``Done`` frame; both are files in ``frames/`` of the run's own
``hyperqueue/`` directory (a shared filesystem when the workers are on other nodes).

Data between tasks: HQ moves no data between tasks (its Python API has program tasks with
files, and dependencies only inside one job). A child is sent once its parents finished, so its
input file is assembled from the parents' result files: their result segments are copied file to
file by the kernel (``copy_file_range``), never through the driver nor through Python memory.

Completion: HQ's client can only wait for whole jobs, polling the server once a second while
holding the GIL (``wait_for_jobs``), which would cost every task up to a second. A task is done
when its complete ``Done`` frame is in ``OUT``: an inotify watch on ``frames/`` sees it at once
(local workers), and a scan every 0.2 s catches what inotify cannot see (workers on other
nodes). A task that HQ itself fails (the program could not start, exited non-zero, its worker was
lost) is found by asking HQ for the failed tasks of the pending jobs every 0.5 s.
"""

import ctypes
import ctypes.util
import mmap
import os
import shutil
import struct
import tempfile
import threading
import time

from .frames import run_header

IN_CLOSE_WRITE = 0x8
IN_MOVED_TO = 0x80


def frame_layout(fd):
    """(header, [(offset, length)] of the segments) of the frame file ``fd`` when it is complete,
    else None (still being written)."""
    size = os.fstat(fd).st_size
    if size < 8:
        return None
    hlen, nseg = struct.unpack("<II", os.pread(fd, 8, 0))
    if size < 8 + 8 * nseg + hlen:
        return None
    lens = struct.unpack("<%dQ" % nseg, os.pread(fd, 8 * nseg, 8)) if nseg else ()
    at = 8 + 8 * nseg
    header = os.pread(fd, hlen, at)
    at += hlen
    segs = []
    for n in lens:
        segs.append((at, n))
        at += n
    return (header, segs) if at == size else None


class Task:
    """One submitted taps task: its HQ job, its frame files and how it ended."""

    def __init__(self, key, inp, out, err):
        self.key, self.inp, self.out, self.err = key, inp, out, err
        self.job = None
        self.error = None
        self.ended = False
        self.callbacks = []
        self.lock = threading.Lock()

    def on_done(self, cb):
        with self.lock:
            if not self.ended:
                self.callbacks.append(cb)
                return
        cb(self)

    def end(self, error=None):
        """Marks the task ended (once); runs its callbacks."""
        with self.lock:
            if self.ended:
                return False
            self.ended, self.error = True, error
            cbs, self.callbacks = self.callbacks, []
        for cb in cbs:
            cb(self)
        return True

    def result(self):
        """The ``Done`` frame as (header, segments, worker); segments map the file (read only
        when sent)."""
        if self.error is not None:
            raise RuntimeError(self.error)
        fd = os.open(self.out, os.O_RDONLY)
        try:
            layout = frame_layout(fd)
            if layout is None:
                raise RuntimeError("the result frame %s is incomplete" % self.out)
            header, segs = layout
            view = memoryview(mmap.mmap(fd, 0, prot=mmap.PROT_READ)) if any(n for _, n in segs) else None
            return header, [view[a : a + n] if n else b"" for a, n in segs], None
        finally:
            os.close(fd)


class Runner:
    """The HQ cluster (started or joined), the submitted tasks and the threads that see them end."""

    def __init__(self, o):
        import hyperqueue
        from hyperqueue.cluster import LocalCluster, WorkerConfig

        self.hyperqueue = hyperqueue
        work = o.get("run_dir")
        if not work or not os.path.isabs(work):
            work = tempfile.mkdtemp(prefix="taps-hyperqueue-")
        self.work = work
        # taps-frame (the one-frame runner, fast to start) when the driver found it, else taps.
        self.frame_program = o.get("frame_program")
        self.frames = os.path.join(work, "frames")
        os.makedirs(self.frames, exist_ok=True)
        self.lock = threading.Lock()  # the client connection is not shared between threads
        self.pending = {}  # name of the result file -> Task
        self.closing = False
        self.cluster = None
        self.workers = self.cpus = 0
        if o.get("server_dir"):
            self.client = hyperqueue.Client(o["server_dir"])
        else:
            self.workers = o.get("workers") or 1
            self.cpus = o.get("cpus") or max(1, (os.cpu_count() or 1) // self.workers)
            # The server prints its access table on stdout (stderr in the bridge): keep it out.
            saved = os.dup(1)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            try:
                self.cluster = LocalCluster(server_dir=os.path.join(work, "server"))
                for _ in range(self.workers):
                    self.cluster.start_worker(WorkerConfig(cores=self.cpus))
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                os.close(null)
            self.client = self.cluster.client()
        threading.Thread(target=self._watch, name="taps-hq-watch", daemon=True).start()
        threading.Thread(target=self._poll, name="taps-hq-poll", daemon=True).start()

    def describe(self):
        where = "local %d worker(s) x %d cpus" % (self.workers, self.cpus) if self.cluster else "joined server"
        program = self.frame_program or "the worker program's run-frame"
        return "hyperqueue(%s, %s, program %s)" % (self.hyperqueue.get_version(), where, program)

    def submit(self, key, ctx, head, spec, deps):
        """Submits a taps task: writes its input frames, runs the worker program on them."""
        program, hello = ctx[:2]
        t = self.task(key)
        write_input(t.inp, hello, head, spec, deps)
        argv = [self.frame_program] if self.frame_program else [program, "worker", "run-frame"]
        return self.launch(t, argv + ["--input", t.inp, "--output", t.out])

    def task(self, key):
        """A new task's files: ``frames/KEY.in``, ``.out``, ``.err`` (KEY is unique: name-uuid)."""
        base = os.path.join(self.frames, key.replace(os.sep, "_"))
        return Task(key, base + ".in", base + ".out", base + ".err")

    def launch(self, t, argv):
        """Submits ``argv`` as the one program task of a new HQ job; ``t`` ends once the program
        wrote a complete frame to ``t.out`` (or HQ failed the task)."""
        from hyperqueue import Job
        from hyperqueue.output import StdioDef

        job = Job(name=t.key)
        job.program(argv, cwd=self.frames, stdout=None, stderr=StdioDef.remove_if_finished(t.err))
        self.pending[os.path.basename(t.out)] = t
        try:
            with self.lock:
                t.job = self.client.submit(job).id
        except BaseException:
            self.pending.pop(os.path.basename(t.out), None)
            raise
        return t

    def _finish(self, name):
        """The task whose result file is ``name`` if that file holds a complete frame."""
        t = self.pending.get(name)
        if t is None:
            return
        try:
            fd = os.open(t.out, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            complete = frame_layout(fd) is not None
        finally:
            os.close(fd)
        if complete and self.pending.pop(name, None) is not None:
            _unlink(t.inp)
            t.end()

    def _watch(self):
        """Sees result files as they are closed (inotify; without it the scan does the work)."""
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(os.O_CLOEXEC)
            if fd < 0 or libc.inotify_add_watch(fd, self.frames.encode(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
                return
        except (OSError, AttributeError):
            return
        while not self.closing:
            buf = os.read(fd, 1 << 16)
            at = 0
            while at + 16 <= len(buf):
                _, _, _, n = struct.unpack_from("iIII", buf, at)
                name = buf[at + 16 : at + 16 + n].split(b"\0", 1)[0].decode(errors="replace")
                at += 16 + n
                if name.endswith(".out"):
                    self._finish(name)

    def _poll(self):
        """Every 0.2 s: result files inotify did not report; every 0.5 s: tasks HQ failed."""
        last = 0.0
        while not self.closing:
            time.sleep(0.2)
            for name in list(self.pending):
                self._finish(name)
            if time.monotonic() - last < 0.5:
                continue
            last = time.monotonic()
            by_job = {t.job: t for t in list(self.pending.values()) if t.job is not None}
            if not by_job:
                continue
            try:
                with self.lock:
                    failed = self.client.connection.get_failed_tasks(list(by_job))
            except Exception:
                continue
            for job, tasks in failed.items():
                t = by_job.get(job)
                if t is None or not tasks or self.pending.pop(os.path.basename(t.out), None) is None:
                    continue
                ctx = next(iter(tasks.values()))
                t.end("HyperQueue job %d failed: %s%s" % (job, ctx.error.strip(), _tail(t.err)))

    def release(self, t):
        """Removes ``t``'s result file once the task has ended (nothing reads it any more)."""
        t.on_done(lambda t: _unlink(t.out))

    def close(self):
        self.closing = True
        if self.cluster is not None:
            self.cluster.stop()
        for t in list(self.pending.values()):
            t.end("the run ended before this task did")
        shutil.rmtree(self.work, ignore_errors=True)


def write_input(path, hello, head, spec, parents):
    """Writes a task's input file: ``hello`` (a whole frame), then its ``Run`` frame from ``head``
    (the header without the argument list) and ``spec`` (see :func:`frames.run_task`); a parent's
    result segments are copied from its result file by the kernel."""
    fds = []

    def result_of(i):
        # The parent's result frame, its segments as (fd, offset, length) in its result file.
        fd = os.open(parents[i].out, os.O_RDONLY)
        fds.append(fd)
        layout = frame_layout(fd)
        if layout is None:
            raise RuntimeError("the result of %s is incomplete" % parents[i].key)
        return layout[0], [(fd, a, n) for a, n in layout[1]]

    try:
        # segments: bytes, or (fd, offset, length) in a parent's result file
        header, segments = run_header(head, spec, result_of)
        lens = [len(s) if isinstance(s, (bytes, bytearray, memoryview)) else s[2] for s in segments]
        prefix = struct.pack("<II", len(header), len(segments)) + b"".join(struct.pack("<Q", n) for n in lens)
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(out, bytes(hello) + prefix + bytes(header))
            for s in segments:
                if isinstance(s, tuple):
                    src, at, n = s
                    while n:
                        k = os.copy_file_range(src, out, n, at)
                        if k <= 0:
                            raise RuntimeError("short parent result in %s" % path)
                        at, n = at + k, n - k
                else:
                    _write_all(out, s)
        finally:
            os.close(out)
    finally:
        for fd in fds:
            os.close(fd)


def _write_all(fd, b):
    view = memoryview(b)
    while view:
        view = view[os.write(fd, view) :]


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _tail(path):
    """The last lines of a failed task's stderr, for its error."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()[-2000:].strip()
    except OSError:
        return ""
    return ("; stderr: " + text) if text else ""
