//! `taps run --engine.executor mpi` outside an MPI job: start the job through a launch profile.
//!
//! This process does not join MPI. It writes `config.toml` into the run directory it created,
//! runs the launcher (`mpirun … taps-worker -c RUN/config.toml --run-dir RUN --status-file …`)
//! with its output streamed to ours, and waits. Rank 0 of the job writes `log.txt`,
//! `environment.json` and `tasks.jsonl` into the same run directory (which must therefore be
//! on a filesystem that rank 0's node sees), then writes its exit status to the status file:
//! mpirun with recovery enabled exits 0 whatever the ranks return, so that file is the truth.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::Config;
use crate::engine::EngineSummary;
use crate::launchers::profiles::{LaunchCommand, LaunchSpec, Profiles, split_args};
use crate::options::Options;
use crate::run::RunOutcome;
use crate::run_info;

use super::MpiOptions;

/// Status file rank 0 writes in the run directory (removed once read).
pub const STATUS_FILE: &str = ".taps-mpi-status";

/// Builds the launcher command for a run in `run_dir` with `config`; every error is one line
/// naming the missing program, file or bad option.
pub fn prepare(o: &MpiOptions, run_dir: &Path, config: &Path) -> Result<(PathBuf, LaunchCommand), String> {
    let profiles = Profiles::load(o.launcher_profile.as_deref())?;
    let profile = profiles.find(&o.launcher)?;
    let program = profile.locate()?;
    let worker = crate::executor::process_pool::locate_worker(o.worker_path.as_deref())?;
    let spec = LaunchSpec {
        ranks: o.ranks,
        worker,
        config: config.to_path_buf(),
        run_dir: run_dir.to_path_buf(),
        status_file: run_dir.join(STATUS_FILE),
        launcher_args: split_args(&o.launcher_args).map_err(|e| format!("engine.executor.launcher_args: {}", e))?,
        // SAFETY: plain syscall.
        root: unsafe { libc::geteuid() } == 0,
        oversubscribed: o.ranks > crate::executor::available_cores(),
    };
    let cmd = profile.command(&spec).map_err(|e| format!("launch profile {:?}: {}", o.launcher, e))?;
    Ok((program, cmd))
}

/// Runs the benchmark as an MPI job started from here; returns when the job has ended.
pub fn run_launched(cfg: &Config, run_dir: &Path, _argv: &[String]) -> anyhow::Result<RunOutcome> {
    let o = MpiOptions::from_table(&cfg.executor.options, "engine.executor").map_err(anyhow::Error::msg)?;
    let config = run_dir.join("config.toml");
    crate::run::write_atomic(&config, cfg.to_toml().as_bytes())?;
    let (program, cmd) = prepare(&o, run_dir, &config).map_err(anyhow::Error::msg)?;
    let status_file = run_dir.join(STATUS_FILE);
    let _ = std::fs::remove_file(&status_file);
    run_info!("Launching MPI job ({} ranks: rank 0 drives, {} run tasks): {}", o.ranks, o.ranks - 1, cmd);
    let mut c = Command::new(&program);
    c.args(&cmd.args).envs(&cmd.env).envs(&cfg.run.env_vars).stdin(Stdio::null());
    // SAFETY: only an async-signal-safe call between fork and exec.
    unsafe {
        c.pre_exec(|| {
            // The job ends with this process.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            Ok(())
        });
    }
    let status = c.spawn().map_err(|e| anyhow::anyhow!("cannot start {}: {}", program.display(), e))?.wait()?;
    let rank0 = std::fs::read_to_string(&status_file).ok().and_then(|s| s.trim().parse::<i32>().ok());
    let _ = std::fs::remove_file(&status_file);
    let launcher = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(c), _) => format!("exit code {}", c),
        (None, Some(s)) => format!("signal {}", s),
        _ => "unknown status".into(),
    };
    tracing::debug!(target: "taps.run", "MPI job ended: {} ({}), rank 0 status {:?}", cmd.program, launcher, rank0);

    let mut summary = EngineSummary::default();
    if let Some(f) = &cfg.engine.task_record_file_name
        && let Ok((total, failed)) = crate::record::count_records(&run_dir.join(f))
    {
        summary.submitted = total;
        summary.records = total;
        summary.failed = failed;
    }
    let error = match rank0 {
        Some(0) => None,
        Some(130) => {
            summary.interrupted = true;
            None
        }
        Some(code) => Some(anyhow::anyhow!("the MPI job failed: rank 0 exited with code {} (see the log above)", code)),
        None => Some(anyhow::anyhow!(
            "the MPI job ended ({} {}) before rank 0 finished the run; its log and records in {} are what it wrote",
            cmd.program,
            launcher,
            run_dir.display()
        )),
    };
    if let Some(e) = &error {
        tracing::error!(target: "taps.run", "{:#}", e);
    }
    Ok(RunOutcome { run_dir: run_dir.to_path_buf(), summary, error })
}
