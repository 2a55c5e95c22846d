//! One benchmark run: the sequence of the Python suite's `taps.run`, with its RUN log lines.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::Config;
use crate::data::DataLayer;
use crate::engine::{Engine, EngineSummary, Interrupter};
use crate::executor::{ExecutorContext, Launch};
use crate::record::RecordWriter;
use crate::run_info;

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// What the engine did.
    pub summary: EngineSummary,
    /// The app's error, if it failed.
    pub error: Option<anyhow::Error>,
}

impl RunOutcome {
    /// Process exit code: 0 ok, 1 failed, 130 interrupted.
    pub(crate) fn exit_code(&self) -> i32 {
        if self.summary.interrupted {
            130
        } else if self.error.is_some() || self.summary.error.is_some() {
            1
        } else {
            0
        }
    }
}

/// Checks what must exist before any work starts (inputs, executables).
pub(crate) fn preflight(cfg: &Config) -> Result<(), String> {
    cfg.app.options.preflight()?;
    cfg.executor.options.preflight()?;
    #[cfg(feature = "mpi")]
    crate::mpi_launch::preflight(cfg)?;
    cfg.transformer.as_ref().map_or(Ok(()), |t| t.options.preflight())
}

/// Creates the run directory for `cfg` below `base` (the launch directory).
pub(crate) fn create_run_dir(cfg: &Config, base: &Path) -> std::io::Result<PathBuf> {
    crate::rundir::create(&cfg.run.dir_format, &cfg.app.name, &cfg.executor.name, base)
}

static CURRENT: Mutex<Option<Interrupter>> = Mutex::new(None);

/// Installs SIGINT/SIGTERM/SIGHUP handling once: the first signal interrupts the running engine
/// (every unfinished task is recorded as failed), a second SIGINT or SIGTERM exits at once. SIGHUP
/// (a closed terminal, a dropped ssh session) interrupts like SIGTERM; as a hang-up often comes
/// twice (from the kernel and from the shell), a repeated one is ignored.
pub(crate) fn install_signal_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
        std::thread::Builder::new()
            .name("taps-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if crate::engine::INTERRUPTED.swap(true, Ordering::SeqCst) {
                        if sig == SIGHUP {
                            continue;
                        }
                        std::process::exit(128 + sig);
                    }
                    tracing::error!(target: "taps.run", "Interrupted by signal {}: recording unfinished tasks and stopping", sig);
                    interrupt_current();
                }
            })
            .ok();
    });
}

/// Interrupts the running benchmark, if any, as a first signal does (for signal handlers of
/// their own, such as MPI rank 0's): every unfinished task is recorded as failed.
pub(crate) fn interrupt_current() {
    crate::engine::INTERRUPTED.store(true, Ordering::SeqCst);
    if let Some(i) = CURRENT.lock().unwrap().as_ref() {
        i.interrupt();
    }
}

/// Whether this process's environment already holds every variable of `vars` with its value.
fn env_vars_in_effect(vars: &std::collections::BTreeMap<String, String>) -> bool {
    vars.iter().all(|(k, v)| std::env::var_os(k).is_some_and(|x| x == v.as_str()))
}

/// Sets `[run.env_vars]` in this process's environment, before any thread starts: the tasks of
/// in-process executors (thread-pool) run in this process, and every worker process inherits
/// it. `set_var` is sound only while this is the only thread, so when another thread already
/// runs, taps re-executes itself with the variables set instead. Returns an error only if
/// that re-execution fails.
pub(crate) fn apply_env_vars(vars: &std::collections::BTreeMap<String, String>) -> std::io::Result<()> {
    if env_vars_in_effect(vars) {
        return Ok(());
    }
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(usize::MAX);
    if threads == 1 {
        for (k, v) in vars {
            // SAFETY: this is the only thread of the process (counted just above), so nothing
            // reads the environment concurrently.
            unsafe { std::env::set_var(k, v) };
        }
        return Ok(());
    }
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    Err(std::process::Command::new(exe).arg0(arg0).args(args).envs(vars).exec())
}

/// Runs `f`, turning a panic (a bug, not bad input) into an error so the run still shuts down
/// cleanly and records every task.
fn catch_panic<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    crate::engine::install_panic_hook();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = crate::engine::panic_message(&*p);
            Err(anyhow::anyhow!("{} panicked: {} (a bug in taps; please report it)", what, msg))
        }
    }
}

fn secs(t: Instant) -> String {
    format!("{:.3}", t.elapsed().as_secs_f64())
}

/// Runs the benchmark in `run_dir` (already created). Logging must be set up by the caller
/// ([`init_logging`]). Never panics on user errors: they end up in [`RunOutcome::error`].
pub(crate) fn run_in(cfg: &Config, run_dir: &Path, argv: &[String]) -> anyhow::Result<RunOutcome> {
    // Outside an MPI job, the mpi executor starts one whose rank 0 runs the benchmark here.
    crate::catalogue::install();
    if let Launch::MpiJob(job) = cfg.executor.options.launch() {
        #[cfg(feature = "mpi")]
        return crate::mpi_launch::run_launched(cfg, &job, run_dir);
        #[cfg(not(feature = "mpi"))]
        anyhow::bail!("cannot start an MPI job of {} ranks: this taps was built without MPI", job.ranks);
    }
    let start = Instant::now();
    run_info!("CLI Arguments: {}", argv.join(" "));
    run_info!("Runtime directory: {}", run_dir.display());
    let mut env = crate::environment::collect();
    if !cfg.run.env_vars.is_empty() {
        // What the run's processes see of `[run.env_vars]` (the driver's own environment, which
        // thread-pool tasks share and worker processes inherit).
        let seen: serde_json::Map<String, serde_json::Value> =
            cfg.run.env_vars.keys().map(|k| (k.clone(), std::env::var(k).ok().into())).collect();
        env["run_env_vars"] = seen.into();
    }
    run_info!("Environment:\n{}", crate::environment::pretty(&env));
    std::fs::write(run_dir.join("environment.json"), serde_json::to_string_pretty(&env)? + "\n")?;
    tracing::debug!(target: "taps.run", "Wrote environment to environment.json");
    run_info!("Configuration:\n{}", cfg.pretty());
    if cfg.version != env!("CARGO_PKG_VERSION") {
        tracing::warn!(target: "taps.run",
            "The configuration specifies taps version {}, but the current version of taps is {}. Application behavior can differ across versions",
            cfg.version, env!("CARGO_PKG_VERSION"));
    }
    write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    tracing::debug!(target: "taps.run", "Wrote config to config.toml");
    let vars = &cfg.run.env_vars;
    if env_vars_in_effect(vars) {
        if !vars.is_empty() {
            tracing::debug!(target: "taps.run", "Updated {} environment variable(s): {}", vars.len(), vars.keys().cloned().collect::<Vec<_>>().join(", "));
        }
    } else {
        tracing::warn!(target: "taps.run", "run.env_vars reach the worker processes only: this process was started without them (taps run sets them at start-up)");
    }
    run_info!("Starting benchmark...");

    let t = Instant::now();
    let mut app = catch_panic("building the app", || cfg.app.options.get_app(run_dir))?;
    run_info!("Initialized app (name={}, elapsed={}s)", cfg.app.name, secs(t));

    let t = Instant::now();
    let ctx = ExecutorContext { env_vars: cfg.run.env_vars.clone().into_iter().collect() };
    let executor = cfg.executor.options.get_executor(&ctx)?;
    let data =
        DataLayer::for_run(cfg.filter.as_ref(), cfg.transformer.as_ref(), run_dir).map_err(anyhow::Error::msg)?;
    let records = match &cfg.engine.task_record_file_name {
        Some(f) => RecordWriter::create(&run_dir.join(f))?,
        None => RecordWriter::null(),
    };
    let engine = Engine::builder(executor).data(data).records(records).try_build()?;
    run_info!("Initialized engine (executor={}, elapsed={}s)", engine.executor_name(), secs(t));
    tracing::debug!(target: "taps.run", "Engine(executor={})", engine.executor_name());
    *CURRENT.lock().unwrap() = Some(engine.interrupter());
    if crate::engine::INTERRUPTED.load(Ordering::SeqCst) {
        engine.interrupt();
    }
    let progress = crate::progress::Progress::start(engine.counters());

    run_info!("Running app...");
    let t = Instant::now();
    let mut result = catch_panic("the app", || app.run(&engine, run_dir));
    if result.is_ok() {
        run_info!("Finished app (elapsed={}s)", secs(t));
        let t = Instant::now();
        result = catch_panic("saving the app's outputs", || app.save(run_dir));
        if result.is_ok() {
            tracing::debug!(target: "taps.run", "Saved outputs (elapsed={}s)", secs(t));
        }
    }
    let summary = engine.shutdown();
    *CURRENT.lock().unwrap() = None;
    progress.finish();
    tracing::debug!(target: "taps.run", "Engine shutdown");
    let close = catch_panic("closing the app", || app.close());
    let tasks = engine.tasks_executed();
    drop(engine);

    let error = match (result, close) {
        (Err(e), _) => Some(e),
        (Ok(()), Err(e)) => Some(e),
        _ => None,
    };
    if let Some(e) = &summary.error {
        tracing::error!(target: "taps.run", "{}", e);
        eprintln!("taps: error: {}", e);
    }
    if summary.interrupted {
        tracing::error!(target: "taps.run", "Run interrupted: {} task(s) recorded, {} failed or cancelled", summary.records, summary.failed);
    } else if let Some(e) = &error {
        tracing::error!(target: "taps.run", "Caught unhandled exception: {:#}", e);
    } else if summary.error.is_none() {
        run_info!("Results saved to {}", run_dir.display());
        run_info!("Finished benchmark (app={}, elapsed={}s, tasks={})", cfg.app.name, secs(start), tasks);
    }
    Ok(RunOutcome { run_dir: run_dir.to_path_buf(), summary, error })
}

/// Sets up logging for a run in `run_dir`.
pub(crate) fn init_logging(cfg: &Config, run_dir: &Path) -> std::io::Result<()> {
    let level = cfg.logging.level.value();
    let file_level = cfg.logging.file_level.as_ref().map_or(level, |l| l.value());
    let file = cfg.logging.file_name.as_ref().map(|f| run_dir.join(f));
    crate::logging::init(level, file.as_deref().map(|f| (f, file_level)))
}

/// Writes a file via a temporary name, so it is never seen half-written.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_app_becomes_an_error() {
        let e = catch_panic("the app", || -> anyhow::Result<()> { panic!("boom {}", 1) }).unwrap_err();
        assert_eq!(e.to_string(), "the app panicked: boom 1 (a bug in taps; please report it)");
        assert_eq!(catch_panic("x", || Ok(3)).unwrap(), 3);
    }
}
