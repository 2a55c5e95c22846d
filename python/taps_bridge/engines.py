"""The engines the bridge drives, each through its own client API, with the Python TaPS suite's
options (``[engine.executor]``). Local clusters listen on loopback only."""

import os
import time


def build(name, o):
    """Starts (or joins) the engine ``name`` with options ``o``."""
    return {"dask": Dask, "ray": Ray, "parsl-local": ParslLocal}[name](o)


class FutureEngine:
    """An engine whose submissions return concurrent.futures-style futures (Dask, Parsl): a
    future is itself a child's argument and has done callbacks. A child may be submitted before
    its parents finished: the engine runs it once they have (and fails it if one failed)."""

    pending_parents = True

    def on_done(self, fut, cb):
        fut.add_done_callback(cb)

    def done(self, fut):
        return fut.done()

    def arg(self, fut):
        """A task's future as a child's argument."""
        return fut

    def result(self, fut):
        return fut.result()


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

    def describe(self):
        return "ray(cpus=%s)" % self.ray.cluster_resources().get("CPU")

    def submit(self, key, fn, *args):
        *first, deps = args
        f = self.remote.get(fn)
        if f is None:
            f = self.remote[fn] = self.ray.remote(fn)
        ref = f.options(name=key).remote(*first, *deps)
        return (ref, ref.future())

    def on_done(self, fut, cb):
        fut[1].add_done_callback(lambda _: cb(fut))

    def done(self, fut):
        return fut[1].done()

    def arg(self, fut):
        """A task's future as a child's argument: its object reference."""
        return fut[0]

    def result(self, fut):
        return fut[1].result()

    def close(self):
        self.ray.shutdown()


class ParslLocal(FutureEngine):
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
