//! Executors: where tasks run. One module per executor; each registers a [`ExecutorPlugin`].

use std::path::PathBuf;

use crate::engine::Executor;
use crate::plugins::PluginInfo;

#[cfg(feature = "mpi")]
pub mod mpi;
pub mod process_pool;
pub mod thread_pool;

/// What an executor needs to know about the run it serves.
#[derive(Clone, Debug, Default)]
pub struct ExecutorEnv {
    /// The run directory (absolute).
    pub run_dir: PathBuf,
    /// The run's `config.toml` (for executors that start remote workers).
    pub config_file: Option<PathBuf>,
}

/// An executor plugin: its name, options and constructor.
pub struct ExecutorPlugin {
    /// Name and options.
    pub info: PluginInfo,
    /// Builds the executor from its normalised options table.
    pub build: fn(&toml::Table, &ExecutorEnv) -> anyhow::Result<Box<dyn Executor>>,
    /// Checks the environment before the run directory is created (e.g. mpirun on PATH).
    pub preflight: fn(&toml::Table) -> Result<(), String>,
}

/// Executor used when none is given (the Python suite's default).
pub const DEFAULT_EXECUTOR: &str = "process-pool";

/// Every executor compiled into this binary.
pub static EXECUTORS: &[ExecutorPlugin] = &[
    process_pool::PLUGIN,
    thread_pool::PLUGIN,
    #[cfg(feature = "mpi")]
    mpi::PLUGIN,
];

/// Names of executors known to taps but not compiled into this binary, with the reason.
pub static NOT_COMPILED: &[(&str, &str)] = &[
    #[cfg(not(feature = "mpi"))]
    (
        "mpi",
        "this taps was built without MPI (--no-default-features): rebuild with the default features, cargo build --release",
    ),
];

/// The executors' plugin infos (for help and lookup).
pub fn infos() -> Vec<PluginInfo> {
    EXECUTORS.iter().map(|e| e.info).collect()
}

/// Finds an executor plugin by name.
pub fn find(name: &str) -> Result<&'static ExecutorPlugin, String> {
    if let Some(e) = EXECUTORS.iter().find(|e| e.info.name == name) {
        return Ok(e);
    }
    if let Some((_, why)) = NOT_COMPILED.iter().find(|(n, _)| *n == name) {
        return Err(format!("executor {:?} is not available in this build: {}", name, why));
    }
    crate::plugins::find("executor", &infos(), name).map(|_| unreachable!())
}

/// Number of cores available to this process.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

use crate::app::no_preflight;

/// The MPI library's version string, when built with MPI.
pub fn mpi_library_version() -> Option<String> {
    #[cfg(feature = "mpi")]
    return mpi::library_version();
    #[cfg(not(feature = "mpi"))]
    None
}
