//! Executors: where tasks run. One module per executor; each registers a [`ExecutorPlugin`].

use std::path::PathBuf;

use crate::engine::Executor;
use crate::plugins::{Plugin, PluginOptions};

pub mod bridge;
pub mod engines;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod process_pool;
pub mod remote;
pub mod thread_pool;

/// What an executor is told about the run it serves.
#[derive(Clone, Debug, Default)]
pub struct ExecutorContext {
    /// Environment variables of the run (`[run.env_vars]`), for every worker process it starts
    /// (in-process executors get them from the harness at start-up).
    pub env_vars: Vec<(String, String)>,
}

/// What kind of workers an executor starts, for the limits check before a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerKind {
    /// Worker processes on this node.
    Processes,
    /// Threads of the driver.
    Threads,
}

/// The workers an executor will start: the option that sets their number, the number, the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workers {
    /// The option's key in `[engine.executor]`.
    pub key: &'static str,
    /// How many.
    pub count: u64,
    /// Processes or threads.
    pub kind: WorkerKind,
}

/// How a run with this executor starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Launch {
    /// The driver starts what it needs (threads, child processes) itself.
    Here,
    /// The run must become an MPI job: `taps run` starts it through a launch profile, and its
    /// rank 0 runs the benchmark.
    MpiJob(MpiJob),
}

/// An MPI job to start for a run.
#[derive(Clone, Debug, PartialEq)]
pub struct MpiJob {
    /// Ranks in all, rank 0 (the driver) included.
    pub ranks: usize,
    /// Launch profile name.
    pub launcher: String,
    /// Extra launcher arguments (shell words).
    pub launcher_args: String,
    /// A TOML file of extra launch profiles.
    pub launcher_profile: Option<PathBuf>,
    /// The worker program, if not the running taps.
    pub worker_path: Option<PathBuf>,
}

/// An executor's typed options: they build the executor and say what it needs (the Python
/// suite's `ExecutorConfig.get_executor()`).
pub trait ExecutorConfig: PluginOptions {
    /// Builds the executor.
    fn get_executor(&self, ctx: &ExecutorContext) -> anyhow::Result<Box<dyn Executor>>;
    /// Checks the environment before the run directory is created (e.g. mpirun on PATH).
    fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
    /// The workers it will start on this node, when their number is set explicitly.
    fn workers(&self) -> Option<Workers> {
        None
    }

    /// How the run starts.
    fn launch(&self) -> Launch {
        Launch::Here
    }
}

/// An executor plugin: its name and options.
pub(crate) type ExecutorPlugin = Plugin<dyn ExecutorConfig>;

/// Executor used when none is given (the Python suite's default).
pub(crate) const DEFAULT_EXECUTOR: &str = "process-pool";

/// Every executor compiled into this binary.
pub static EXECUTORS: &[ExecutorPlugin] = &[
    process_pool::PLUGIN,
    thread_pool::PLUGIN,
    #[cfg(feature = "mpi")]
    mpi::PLUGIN,
    engines::DASK,
    engines::RAY,
    engines::PARSL_LOCAL,
    engines::PARSL_HTEX,
    engines::HYPERQUEUE,
];

/// Names of executors known to taps but not compiled into this binary, with the reason.
pub(crate) static NOT_COMPILED: &[(&str, &str)] = &[
    #[cfg(not(feature = "mpi"))]
    (
        "mpi",
        "this taps was built without MPI (--no-default-features): rebuild with the default features, cargo build --release",
    ),
];

/// Finds an executor plugin by name.
pub fn find(name: &str) -> Result<&'static ExecutorPlugin, String> {
    if let Some((_, why)) = NOT_COMPILED.iter().find(|(n, _)| *n == name) {
        return Err(format!("executor {:?} is not available in this build: {}", name, why));
    }
    crate::plugins::find("executor", EXECUTORS, name)
}

/// Number of cores available to this process.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The MPI library's version string, when built with MPI.
pub(crate) fn mpi_library_version() -> Option<String> {
    #[cfg(feature = "mpi")]
    return mpi::library_version();
    #[cfg(not(feature = "mpi"))]
    None
}
