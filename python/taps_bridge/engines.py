"""The engines the bridge drives, each through its own client API, with the Python TaPS suite's
options (``[engine.executor]``). Local clusters listen on loopback only."""

import os
import time

from . import frames


# Set to ``null``, the bridge runs :class:`Null` whatever engine the driver names (for
# ``scripts/bench-engines.sh``: what taps and the bridge add per task, with no engine at all).
ENGINE_ENV = "TAPS_BRIDGE_ENGINE"


def build(name, o):
    """Starts (or joins) the engine ``name`` with options ``o`` (:data:`ENGINE_ENV` may say ``null``)."""
    override = os.environ.get(ENGINE_ENV)
    if override == "null":
        return Null(o)
    if override:
        raise ValueError("%s=%s: the only value it takes is null (unset it to run %s)" % (ENGINE_ENV, override, name))
    return {"dask": Dask, "ray": Ray, "parsl-local": ParslLocal, "parsl-htex": ParslHtex, "hyperqueue": HyperQueue}[name](o)


def check(name, o):
    """Builds what ``name`` would start with options ``o`` without starting it: raises a
    ``ValueError`` naming the first problem (``taps`` asks before it creates the run directory)."""
    if name == "parsl-htex":
        htex_config(o)


class FutureEngine:
    """An engine whose submissions return concurrent.futures-style futures (Dask, Parsl): a
    future is itself a child's argument and has done callbacks. A child may be submitted before
    its parents finished: the engine runs it once they have (and fails it if one failed)."""

    pending_parents = True

    def submit_task(self, key, ctx, head, spec, deps):
        """Submits the taps task ``key`` (:func:`frames.run_task`'s arguments; ``deps`` the
        parents' futures as arguments)."""
        return self.submit(key, frames.run_task, ctx, head, spec, deps)

    def on_done(self, fut, cb):
        fut.add_done_callback(cb)

    def done(self, fut):
        return fut.done()

    def arg(self, fut):
        """A task's future as a child's argument."""
        return fut

    def value(self, fut):
        """What the task returned."""
        return fut.result()

    def result(self, fut):
        """A taps task's outcome: (``Done`` header, segments, worker, in process)."""
        return fut.result()


class Null:
    """No engine: the bridge runs each task itself, at once, in the thread that submits it
    (``taps_native`` in this process, as an engine's worker would), and reports it from there.
    What a run through it costs per task is what taps and the bridge add to any engine: the
    driver, the pipe both ways and the bridge's Python. Futures are the tasks' results."""

    pending_parents = False

    def __init__(self, o):
        pass

    def describe(self):
        return "null (no engine: tasks run in the bridge)"

    def submit_task(self, key, ctx, head, spec, deps):
        packed, *rest = frames.ray_args(head, spec, deps)
        return frames.packed_task(ctx, packed, rest)

    def on_done(self, fut, cb):
        cb(fut)

    def done(self, fut):
        return True

    def arg(self, fut):
        return fut

    def result(self, fut):
        return frames.unpack_done(fut)

    def close(self):
        pass


class Dask(FutureEngine):
    """dask.distributed: a LocalCluster, or the scheduler at ``scheduler``."""

    def __init__(self, o):
        import dask
        import distributed

        if o.get("scheduler"):
            self.client = distributed.Client(o["scheduler"])
        else:
            dask.config.set({"distributed.worker.daemon": o["daemon_workers"]})
            self.client = distributed.Client(
                n_workers=o.get("workers"),
                processes=not o["use_threads"],
                dashboard_address=None,
                host="127.0.0.1",
            )
        if o.get("wait_for_workers"):
            self.client.wait_for_workers(o["wait_for_workers"], timeout=o.get("wait_for_workers_timeout"))

    def describe(self):
        info = self.client.scheduler_info()
        threads = sum(w.get("nthreads", 0) for w in info["workers"].values())
        return "dask(scheduler=%s, workers=%d, threads=%d)" % (info.get("address"), len(info["workers"]), threads)

    def submit(self, key, fn, *args):
        *first, deps = args
        # A unique key: two equal calls are two tasks (never merged as pure calls would be).
        return self.client.submit(fn, *first, *deps, key=key, pure=False)

    def tasks(self):
        """How many tasks the scheduler holds (their results among them)."""
        return self.client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))

    def close(self):
        self.client.close()


class Ray:
    """Ray: a new local cluster (``address = "local"``), or the cluster at ``address``. Object
    references of unfinished tasks are arguments too (``pending_parents``)."""

    pending_parents = True

    def __init__(self, o):
        import ray

        self.ray = ray
        address = o.get("address")
        kw = {}
        if address in (None, "local"):
            kw = {"_node_ip_address": "127.0.0.1", "include_dashboard": False}
        ray.init(address=address, configure_logging=False, num_cpus=o.get("num_cpus"), **kw)
        self.remote = {}
        self.task = None

    def describe(self):
        return "ray(cpus=%s)" % self.ray.cluster_resources().get("CPU")

    def submit(self, key, fn, *args):
        *first, deps = args
        f = self.remote.get(fn)
        if f is None:
            f = self.remote[fn] = self.ray.remote(fn)
        ref = f.options(name=key).remote(*first, *deps)
        return (ref, ref.future())

    def submit_task(self, key, ctx, head, spec, deps):
        """Submits the taps task ``key``: ``ctx`` goes to Ray's workers once, inside the remote
        function (:func:`frames.ray_task`), and every argument and result is ``bytes``, which Ray
        passes as they are (a tuple or list is msgpacked and pickled: +15 % on a no-op task)."""
        if self.task is None:
            self.task = self.ray.remote(frames.ray_task(ctx))
        ref = self.task.options(name=key).remote(*frames.ray_args(head, spec, deps))
        return (ref, ref.future())

    def on_done(self, fut, cb):
        fut[1].add_done_callback(lambda _: cb(fut))

    def done(self, fut):
        return fut[1].done()

    def arg(self, fut):
        """A task's future as a child's argument: its object reference."""
        return fut[0]

    def value(self, fut):
        """What the task returned."""
        return fut[1].result()

    def result(self, fut):
        """A taps task's outcome (see :meth:`FutureEngine.result`) from its ``bytes``."""
        return frames.unpack_done(fut[1].result())

    def close(self):
        self.ray.shutdown()


class ParslEngine(FutureEngine):
    """Parsl's engines: each taps task is one Parsl app call of :func:`frames.bytes_task`, whose
    arguments and result are ``bytes`` (and parents' futures): Parsl serializes every argument of
    every task with dill, a pure-Python pickler, on both sides, and a tuple of tuples costs it
    several times one ``bytes`` value."""

    ctx = None

    def submit_task(self, key, ctx, head, spec, deps):
        if self.ctx is None:
            self.ctx = frames.pack_ctx(ctx)
        packed, *rest = frames.ray_args(head, spec, deps)
        return self.submit(key, frames.bytes_task, self.ctx, packed, rest)

    def result(self, fut):
        """A taps task's outcome (see :meth:`FutureEngine.result`) from its ``bytes``."""
        return frames.unpack_done(fut.result())


class ParslLocal(ParslEngine):
    """Parsl: a HighThroughputExecutor on the LocalProvider (one block on this node)."""

    def __init__(self, o):
        import parsl
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        htex = HighThroughputExecutor(
            label="taps-htex-local",
            max_workers_per_node=o.get("workers") or os.cpu_count(),
            address="127.0.0.1",
            loopback_address="127.0.0.1",
            cores_per_worker=1,
            provider=LocalProvider(init_blocks=1, max_blocks=1),
        )
        self.dfk = parsl.load(parsl.Config(executors=[htex], run_dir=o["run_dir"], initialize_logging=False))
        self.apps = {}
        # The block starts in the background: the engine is ready once its workers are there.
        deadline = time.monotonic() + 120
        while not htex.connected_managers():
            if time.monotonic() > deadline:
                raise RuntimeError("no Parsl worker pool connected within 120 s")
            time.sleep(0.05)

    def describe(self):
        return "parsl-local(htex)"

    def submit(self, key, fn, *args):
        import parsl

        *first, deps = args
        app = self.apps.get(fn)
        if app is None:
            app = self.apps[fn] = parsl.python_app(fn, executors=["taps-htex-local"])
        return app(*first, *deps)

    def close(self):
        self.dfk.cleanup()


class HyperQueue:
    """HyperQueue: a local cluster (server and ``workers`` workers of ``cpus`` cores, threads of
    this process), or the running server whose access file is in ``server_dir``. Each taps task
    is one HQ job of one program task, ``taps worker run-frame --input IN --output OUT``, with
    its frames in files of ``work_dir`` (the run's own ``hyperqueue/`` directory, removed at the
    end). See :mod:`taps_bridge.hq`."""

    def __init__(self, o):
        from . import hq

        self.hq = hq.Runner(o)

    def describe(self):
        return self.hq.describe()

    def submit_task(self, key, ctx, head, spec, deps):
        """Submits the taps task ``key`` (see :meth:`FutureEngine.submit_task`): HQ runs the
        taps worker program."""
        return self.hq.submit(key, ctx, head, spec, deps)

    def on_done(self, fut, cb):
        fut.on_done(cb)

    def arg(self, fut):
        """A task's future as a child's argument: its result frame file stays where it is."""
        return fut

    def result(self, fut):
        return fut.result()

    def release(self, fut):
        """Nothing needs the task's result any more: its result file goes."""
        self.hq.release(fut)

    def close(self):
        self.hq.close()


# Fields of the reference's HTExConfig (the rest of an [engine.executor.htex] table are keyword
# arguments of HighThroughputExecutor).
HTEX_FIELDS = ("label", "provider", "address", "manager_selector", "worker_port", "worker_port_range", "interchange_port_range")


def _kind(module, kind, what):
    """The object ``kind`` (a dotted path keeps its last part) of ``module``, as the reference looks it up."""
    name = str(kind).rsplit(".", 1)[-1]
    obj = getattr(module, name, None)
    if obj is None:
        raise ValueError("The module %s does not contain a %s named %s." % (module.__name__, what, name))
    return obj


def _table(t, where):
    if not isinstance(t, dict):
        raise ValueError("%s: expected a table, got %r" % (where, t))
    if "kind" not in t:
        raise ValueError("%s.kind is required" % where)
    rest = {k: v for k, v in t.items() if k != "kind"}
    return t["kind"], rest


def _address(a, where):
    """An address: a string as it is, or {kind = "address_by_…", …} called with the other keys."""
    import parsl.addresses

    if a is None or isinstance(a, str):
        return a
    kind, rest = _table(a, where)
    return _kind(parsl.addresses, kind, "provider")(**rest)


def _htex(c, where):
    import parsl.executors.high_throughput.manager_selector as selectors
    import parsl.launchers
    import parsl.providers
    from parsl.executors import HighThroughputExecutor

    if not isinstance(c, dict):
        raise ValueError("%s: expected a table, got %r" % (where, c))
    kw = {k: v for k, v in c.items() if v is not None}
    kw.setdefault("label", "taps-htex")
    if "provider" in kw:
        kind, rest = _table(kw["provider"], where + ".provider")
        if rest.get("launcher") is not None:
            lk, lrest = _table(rest["launcher"], where + ".provider.launcher")
            rest["launcher"] = _kind(parsl.launchers, lk, "provider")(**lrest)
        kw["provider"] = _kind(parsl.providers, kind, "provider")(**rest)
    if "address" in kw:
        kw["address"] = _address(kw["address"], where + ".address")
    if "manager_selector" in kw:
        kind, rest = _table(kw["manager_selector"], where + ".manager_selector")
        kw["manager_selector"] = _kind(selectors, kind, "type")(**rest)
    for r in ("worker_port_range", "interchange_port_range"):
        if r in kw:
            kw[r] = tuple(kw[r])
    try:
        return HighThroughputExecutor(**kw)
    except TypeError as e:
        raise ValueError("%s: %s" % (where, e)) from None


def htex_config(o):
    """The ``parsl.Config`` of executor ``parsl-htex`` (the reference's ParslHTExConfig): one
    HighThroughputExecutor per ``htex`` entry (a single HTExConfig table, or tables by label),
    None values left out, the warmup keys kept for taps."""
    import parsl

    htex = o.get("htex")
    if not isinstance(htex, dict) or not htex:
        raise ValueError("engine.executor.htex is required: an [engine.executor.htex] table (HTExConfig)")
    several = all(isinstance(v, dict) for v in htex.values()) and not any(k in HTEX_FIELDS for k in htex)
    if several:
        executors = [_htex(dict(c, label=c.get("label", label)), "engine.executor.htex." + label) for label, c in htex.items()]
    else:
        executors = [_htex(htex, "engine.executor.htex")]
    labels = [e.label for e in executors]
    if len(set(labels)) != len(labels):
        raise ValueError("engine.executor.htex: executor labels must be unique, got %s" % labels)
    kw = {k: o.get(k) for k in ("retries", "strategy", "max_idletime", "run_dir") if o.get(k) is not None}
    if o.get("monitoring") is not None:
        from parsl.monitoring import MonitoringHub

        m = dict(o["monitoring"])
        if "hub_address" in m:
            m["hub_address"] = _address(m["hub_address"], "engine.executor.monitoring.hub_address")
        if "hub_port_range" in m:
            m["hub_port_range"] = tuple(m["hub_port_range"])
        kw["monitoring"] = MonitoringHub(**m)
    return parsl.Config(executors=executors, initialize_logging=False, **kw)


class ParslHtex(ParslEngine):
    """Parsl with the HighThroughputExecutors of ``[engine.executor.htex]`` (any provider: Slurm,
    PBS, local…). With ``warmup``, no-op tasks go out in batches until ``min_connected_nodes``
    worker pools have connected (the reference's warmup)."""

    def __init__(self, o):
        import parsl

        config = htex_config(o)
        self.executors = config.executors
        self.dfk = parsl.load(config)
        self.apps = {}
        if o.get("warmup"):
            self.warmup(o)

    def connected(self):
        return sum(len(e.connected_managers()) for e in self.executors)

    def warmup(self, o):
        import parsl

        noop = parsl.python_app(_noop)
        for _ in range(o.get("max_warmup_batches", 1)):
            for f in [noop() for _ in range(o.get("warmup_batch_size", 1))]:
                f.result()
            if self.connected() >= o.get("min_connected_nodes", 1):
                return
            time.sleep(o.get("warmup_sleep", 1))

    def describe(self):
        return "parsl-htex(%s)" % ", ".join(e.label for e in self.executors)

    def submit(self, key, fn, *args):
        import parsl

        *first, deps = args
        app = self.apps.get(fn)
        if app is None:
            app = self.apps[fn] = parsl.python_app(fn)
        return app(*first, *deps)

    def close(self):
        self.dfk.cleanup()


def _noop():
    return None
