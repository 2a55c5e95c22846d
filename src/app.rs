//! The app interface: a benchmark workload that submits tasks to an [`Engine`].

use std::path::Path;

use crate::engine::Engine;
use crate::plugins::{Plugin, PluginOptions};
use crate::task::Registry;

/// A benchmark application.
pub trait App: Send {
    /// Runs the workload; outputs go into `run_dir`.
    fn run(&mut self, engine: &Engine, run_dir: &Path) -> anyhow::Result<()>;
    /// Checks and writes the outputs into `run_dir` after the timed part (`run`), as the
    /// reference times only the workflow; logs what it does with its own times.
    fn save(&mut self, _run_dir: &Path) -> anyhow::Result<()> {
        Ok(())
    }
    /// Cleans up after the engine has shut down (e.g. removes generated inputs).
    fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// An app's typed options: they build the app and say what it needs (the Python suite's
/// `AppConfig.get_app()`).
pub trait AppConfig: PluginOptions {
    /// Builds the app, inside the run directory.
    fn get_app(&self, run_dir: &Path) -> anyhow::Result<Box<dyn App>>;
    /// Checks inputs and external programs before the run directory is created.
    fn preflight(&self) -> Result<(), String> {
        Ok(())
    }
    /// What a run with these options takes: memory and files in the run directory.
    fn footprint(&self) -> Footprint {
        Footprint::default()
    }
}

/// An app plugin: its name and options, and its tasks.
pub struct AppPlugin {
    /// Name and options.
    pub plugin: Plugin<dyn AppConfig>,
    /// Adds the app's tasks to the registry (so every worker can run them).
    pub register_tasks: fn(&mut Registry),
}

/// What a run of an app takes, estimated from its options before it starts (see
/// `taps::limits`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Footprint {
    /// Memory the run needs at least, in bytes: a lower bound, so that only runs that provably
    /// cannot fit are refused.
    pub memory_bytes: u64,
    /// What that memory is for, naming the options that drive it (for the error message).
    pub memory_for: String,
    /// Files the app writes in the run directory: (the option naming it, file name).
    pub files: Vec<(String, String)>,
}

/// Checks that `program` is on PATH; the error names it and how to get it.
pub fn require_program(program: &str, package_hint: &str) -> Result<(), String> {
    match crate::shell::find_program(program) {
        Some(_) => Ok(()),
        None => Err(format!("{} not found on PATH: {}", program, package_hint)),
    }
}
