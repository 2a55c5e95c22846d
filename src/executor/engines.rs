//! Executors `dask`, `ray`, `parsl-local`, `parsl-htex` and `hyperqueue`: the Python engines, driven through the
//! [bridge](super::bridge) with the Python TaPS suite's options and defaults.

use std::path::{Path, PathBuf};

use crate::engine::Executor;
use crate::options::Validate;

use super::bridge::{Bridge, check_installed};
use super::process_pool::locate_worker;
use super::{ExecutorConfig, ExecutorContext, ExecutorPlugin, WorkerKind, Workers};

crate::options! {
    /// Options of the `dask` executor.
    pub(crate) struct DaskOptions {
        /// Address of a running Dask scheduler to join (none = start a LocalCluster on loopback).
        scheduler: Option<String> = None,
        /// Workers are threads of one process (else processes).
        use_threads: bool = false,
        /// Number of workers of the LocalCluster (none = Dask's choice from the cores).
        workers: Option<usize> = None,
        /// LocalCluster worker processes are daemons (dask's distributed.worker.daemon).
        daemon_workers: bool = true,
        /// Wait for this many workers to connect before the app starts.
        wait_for_workers: Option<usize> = None,
        /// Seconds to wait for them (none = no limit).
        wait_for_workers_timeout: Option<f64> = None,
        /// The worker program, taps or taps-worker (default: $TAPS_WORKER, else the running taps itself).
        worker_path: Option<PathBuf> = None,
    }
}

impl Validate for DaskOptions {
    fn validate(&self) -> Result<(), String> {
        if self.workers == Some(0) {
            return Err("engine.executor.workers must be at least 1".into());
        }
        if self.wait_for_workers_timeout.is_some_and(|t| !(t.is_finite() && t > 0.0)) {
            return Err("engine.executor.wait_for_workers_timeout must be a positive number of seconds".into());
        }
        Ok(())
    }
}

/// The `dask` plugin entry.
pub const DASK: ExecutorPlugin = crate::plugin!(
    dyn ExecutorConfig,
    DaskOptions,
    "dask",
    "Dask distributed: a LocalCluster or a running scheduler (needs scripts/install-engines.sh)"
);

impl ExecutorConfig for DaskOptions {
    fn get_executor(&self, ctx: &ExecutorContext) -> anyhow::Result<Box<dyn Executor>> {
        let worker = locate_worker(self.worker_path.as_deref()).map_err(anyhow::Error::msg)?;
        let o = serde_json::json!({
            "scheduler": self.scheduler, "use_threads": self.use_threads, "workers": self.workers,
            "daemon_workers": self.daemon_workers, "wait_for_workers": self.wait_for_workers,
            "wait_for_workers_timeout": self.wait_for_workers_timeout,
        });
        Ok(Box::new(Bridge::new("dask", o, worker, ctx.env_vars.clone())))
    }

    fn preflight(&self) -> Result<(), String> {
        check_installed("dask", "distributed")?;
        locate_worker(self.worker_path.as_deref()).map(|_| ())
    }

    fn workers(&self) -> Option<Workers> {
        let kind = if self.use_threads { WorkerKind::Threads } else { WorkerKind::Processes };
        self.workers.filter(|_| self.scheduler.is_none()).map(|n| Workers { key: "workers", count: n as u64, kind })
    }
}

crate::options! {
    /// Options of the `ray` executor.
    pub(crate) struct RayOptions {
        /// Cluster to join (`auto`, `ray://host:port`, an address), or `local` to start one on loopback.
        address: Option<String> = Some("local".into()),
        /// CPUs of the local cluster (none = Ray's choice: the cores).
        num_cpus: Option<usize> = None,
        /// The worker program, taps or taps-worker (default: $TAPS_WORKER, else the running taps itself).
        worker_path: Option<PathBuf> = None,
    }
}

impl Validate for RayOptions {
    fn validate(&self) -> Result<(), String> {
        if self.num_cpus == Some(0) {
            return Err("engine.executor.num_cpus must be at least 1".into());
        }
        Ok(())
    }
}

/// The `ray` plugin entry.
pub const RAY: ExecutorPlugin = crate::plugin!(
    dyn ExecutorConfig,
    RayOptions,
    "ray",
    "Ray: a local cluster or a running one (needs scripts/install-engines.sh)"
);

impl ExecutorConfig for RayOptions {
    fn get_executor(&self, ctx: &ExecutorContext) -> anyhow::Result<Box<dyn Executor>> {
        let worker = locate_worker(self.worker_path.as_deref()).map_err(anyhow::Error::msg)?;
        let o = serde_json::json!({"address": self.address, "num_cpus": self.num_cpus});
        Ok(Box::new(Bridge::new("ray", o, worker, ctx.env_vars.clone())))
    }

    fn preflight(&self) -> Result<(), String> {
        check_installed("ray", "ray")?;
        locate_worker(self.worker_path.as_deref()).map(|_| ())
    }

    fn workers(&self) -> Option<Workers> {
        let local = matches!(self.address.as_deref(), None | Some("local"));
        self.num_cpus.filter(|_| local).map(|n| Workers {
            key: "num_cpus",
            count: n as u64,
            kind: WorkerKind::Processes,
        })
    }
}

crate::options! {
    /// Options of the `parsl-local` executor.
    pub(crate) struct ParslLocalOptions {
        /// Workers of the HighThroughputExecutor on this node (none = the cores).
        workers: Option<usize> = None,
        /// Parsl's run directory (relative: inside the run directory).
        run_dir: String = "parsl-runinfo".into(),
        /// The worker program, taps or taps-worker (default: $TAPS_WORKER, else the running taps itself).
        worker_path: Option<PathBuf> = None,
    }
}

impl Validate for ParslLocalOptions {
    fn validate(&self) -> Result<(), String> {
        if self.workers == Some(0) {
            return Err("engine.executor.workers must be at least 1".into());
        }
        Ok(())
    }
}

/// The `parsl-local` plugin entry.
pub const PARSL_LOCAL: ExecutorPlugin = crate::plugin!(
    dyn ExecutorConfig,
    ParslLocalOptions,
    "parsl-local",
    "Parsl: a HighThroughputExecutor on this node (needs scripts/install-engines.sh)"
);

impl ExecutorConfig for ParslLocalOptions {
    fn get_executor(&self, ctx: &ExecutorContext) -> anyhow::Result<Box<dyn Executor>> {
        let worker = locate_worker(self.worker_path.as_deref()).map_err(anyhow::Error::msg)?;
        let o = serde_json::json!({"workers": self.workers, "run_dir": self.run_dir});
        Ok(Box::new(Bridge::new("parsl-local", o, worker, ctx.env_vars.clone())))
    }

    fn preflight(&self) -> Result<(), String> {
        check_installed("parsl-local", "parsl")?;
        locate_worker(self.worker_path.as_deref()).map(|_| ())
    }

    fn workers(&self) -> Option<Workers> {
        self.workers.map(|n| Workers { key: "workers", count: n as u64, kind: WorkerKind::Processes })
    }
}

crate::options! {
    /// Options of the `hyperqueue` executor.
    pub(crate) struct HyperQueueOptions {
        /// Workers of the local cluster (threads of the bridge process, like `hq worker start`).
        workers: usize = 1,
        /// Cores of each local worker (none = the cores of this node / workers).
        cpus: Option<usize> = None,
        /// Directory of a running HyperQueue server to join (`hq server start --server-dir DIR`; none = a local cluster).
        server_dir: Option<PathBuf> = None,
        /// The worker program, taps or taps-worker (default: $TAPS_WORKER, else the running taps itself).
        worker_path: Option<PathBuf> = None,
    }
}

impl Validate for HyperQueueOptions {
    fn validate(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("engine.executor.workers must be at least 1".into());
        }
        if self.cpus == Some(0) {
            return Err("engine.executor.cpus must be at least 1".into());
        }
        Ok(())
    }
}

/// The `hyperqueue` plugin entry.
pub const HYPERQUEUE: ExecutorPlugin = crate::plugin!(
    dyn ExecutorConfig,
    HyperQueueOptions,
    "hyperqueue",
    "HyperQueue: a local cluster or a running server, one program task per taps task (needs scripts/install-engines.sh)"
);

/// The program HyperQueue runs for each task: `taps-frame` beside the worker program `worker`
/// (one build), which runs one task frame and starts several times faster than `taps` (it links
/// neither MPI nor HDF5); none if it is not there (then `WORKER worker run-frame`).
fn frame_program(worker: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = worker.with_file_name(format!("taps-frame{}", std::env::consts::EXE_SUFFIX));
    std::fs::metadata(&p).ok().filter(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).map(|_| p)
}

/// Checks that `dir` holds a running HyperQueue server's access file (`hq-current/access.json`).
fn check_server_dir(dir: &Path) -> Result<(), String> {
    let access = dir.join("hq-current").join("access.json");
    std::fs::File::open(&access).map(|_| ()).map_err(|e| {
        format!(
            "engine.executor.server_dir {}: no readable HyperQueue access file {} ({}); give the directory of \
             `hq server start --server-dir DIR`, or leave server_dir out to start a local cluster",
            dir.display(),
            access.display(),
            e
        )
    })
}

impl ExecutorConfig for HyperQueueOptions {
    fn get_executor(&self, ctx: &ExecutorContext) -> anyhow::Result<Box<dyn Executor>> {
        let worker = locate_worker(self.worker_path.as_deref()).map_err(anyhow::Error::msg)?;
        // `run_dir` (relative) is the run's own directory of frames and of the local server.
        let o = serde_json::json!({
            "workers": self.workers, "cpus": self.cpus, "server_dir": self.server_dir, "run_dir": "hyperqueue",
            "frame_program": frame_program(&worker),
        });
        Ok(Box::new(Bridge::new("hyperqueue", o, worker, ctx.env_vars.clone())))
    }

    fn preflight(&self) -> Result<(), String> {
        check_installed("hyperqueue", "hyperqueue")?;
        if let Some(dir) = &self.server_dir {
            check_server_dir(dir)?;
        }
        locate_worker(self.worker_path.as_deref()).map(|_| ())
    }

    fn workers(&self) -> Option<Workers> {
        self.server_dir.is_none().then_some(Workers {
            key: "workers",
            count: self.workers as u64,
            kind: WorkerKind::Threads,
        })
    }
}

crate::options! {
    /// Options of the `parsl-htex` executor (the reference's ParslHTExConfig).
    pub(crate) struct ParslHtexOptions {
        /// HighThroughputExecutor(s): one HTExConfig table (label, provider {kind, launcher {kind}, …}, address, manager_selector, worker_port(_range), interchange_port_range, other HighThroughputExecutor arguments), or such tables by label
        #[required]
        htex: toml::Table = toml::Table::new(),
        /// Parsl retries of a failed task (inside the engine: taps records the task once)
        retries: u64 = 0,
        /// Parsl's scaling strategy (none = Parsl's default)
        strategy: Option<String> = None,
        /// Seconds a block may idle before the strategy scales it in (none = Parsl's default)
        max_idletime: Option<f64> = None,
        /// MonitoringHub arguments (hub_address: string or {kind = "address_by_…"}, hub_port_range, …); needs `parsl[monitoring]`
        monitoring: Option<toml::Table> = None,
        /// Parsl's run directory (relative: inside the run directory).
        run_dir: String = "parsl-runinfo".into(),
        /// Send no-op tasks in batches before the app starts, until min_connected_nodes worker pools are connected
        warmup: bool = false,
        /// Worker pools (nodes) the warmup waits for
        min_connected_nodes: u64 = 1,
        /// No-op tasks per warmup batch
        warmup_batch_size: u64 = 1,
        /// Warmup batches at most
        max_warmup_batches: u64 = 1,
        /// Seconds between warmup batches
        warmup_sleep: u64 = 1,
        /// The worker program, taps or taps-worker (default: $TAPS_WORKER, else the running taps itself).
        worker_path: Option<PathBuf> = None,
    }
}

impl ParslHtexOptions {
    fn json(&self) -> serde_json::Value {
        let json = |t: &toml::Table| serde_json::to_value(t).unwrap_or_default();
        serde_json::json!({
            "htex": json(&self.htex), "retries": self.retries, "strategy": self.strategy,
            "max_idletime": self.max_idletime, "monitoring": self.monitoring.as_ref().map(json),
            "run_dir": self.run_dir, "warmup": self.warmup, "min_connected_nodes": self.min_connected_nodes,
            "warmup_batch_size": self.warmup_batch_size, "max_warmup_batches": self.max_warmup_batches,
            "warmup_sleep": self.warmup_sleep,
        })
    }
}

/// The `parsl-htex` plugin entry.
pub const PARSL_HTEX: ExecutorPlugin = crate::plugin!(
    dyn ExecutorConfig,
    ParslHtexOptions,
    "parsl-htex",
    "Parsl: HighThroughputExecutors on any Parsl provider (Slurm, PBS, local…) (needs scripts/install-engines.sh)"
);

impl ExecutorConfig for ParslHtexOptions {
    fn get_executor(&self, ctx: &ExecutorContext) -> anyhow::Result<Box<dyn Executor>> {
        let worker = locate_worker(self.worker_path.as_deref()).map_err(anyhow::Error::msg)?;
        Ok(Box::new(Bridge::new("parsl-htex", self.json(), worker, ctx.env_vars.clone())))
    }

    /// Parsl builds the executors, providers, launchers and addresses (without starting them):
    /// an unknown kind or argument is one line before the run directory exists.
    fn preflight(&self) -> Result<(), String> {
        check_installed("parsl-htex", "parsl")?;
        check_options("parsl-htex", &self.json())?;
        locate_worker(self.worker_path.as_deref()).map(|_| ())
    }
}

/// Asks the engine's Python code whether options `o` of `engine` build (without starting
/// anything); the problem it names is the error.
fn check_options(engine: &str, o: &serde_json::Value) -> Result<(), String> {
    const CHECK: &str = "import json, sys\nfrom taps_bridge import engines\ntry:\n    engines.check(sys.argv[1], \
                         json.loads(sys.argv[2]))\nexcept Exception as e:\n    msg = str(e) if isinstance(e, ValueError) \
                         else '%s: %s' % (type(e).__name__, e)\n    print(msg.replace(chr(10), ' '), file=sys.stderr)\n    \
                         sys.exit(3)\n";
    let out = std::process::Command::new(super::bridge::venv().join("bin/python"))
        .args(["-c", CHECK, engine, &o.to_string()])
        .env("PYTHONPATH", super::bridge::python_dir())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("executor {:?}: cannot run the engines' Python: {}", engine, e))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("the options do not build");
    Err(format!("executor {:?}: {}", engine, line.trim()))
}
