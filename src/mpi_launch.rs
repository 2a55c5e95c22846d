//! `taps run --engine.executor mpi` outside an MPI job: the run's side of starting the job
//! through a launch profile ([`crate::launchers::mpi`]): checks before the run directory exists,
//! `config.toml` for the ranks, the RUN log lines, and the outcome from rank 0's exit status and
//! the records it wrote.

use std::path::Path;

use crate::config::Config;
use crate::engine::EngineSummary;
use crate::executor::{Launch, MpiJob};
use crate::launchers::mpi::{self as launch};
use crate::run::RunOutcome;
use crate::run_info;

/// The MPI job `cfg` makes taps start, if any (the mpi executor, outside an MPI job).
pub fn job(cfg: &Config) -> Option<MpiJob> {
    match cfg.executor.options.launch() {
        Launch::MpiJob(j) => Some(j),
        Launch::Here => None,
    }
}

/// Before the run directory exists: the launcher, its profile and the worker program exist, and
/// mpirun accepts the launcher arguments (one line each, for the CLI).
pub fn preflight(cfg: &Config) -> Result<(), String> {
    let Some(o) = job(cfg) else { return Ok(()) };
    let any = Path::new("/");
    launch::prepare(&o, any, any, &cfg.run.env_vars).map_err(|e| e.to_string())?;
    launch::probe(&o).map_err(|e| e.to_string())
}

/// Runs the benchmark as the MPI job `o` started from here; returns when the job has ended.
pub(crate) fn run_launched(cfg: &Config, o: &MpiJob, run_dir: &Path) -> anyhow::Result<RunOutcome> {
    let config = run_dir.join("config.toml");
    crate::run::write_atomic(&config, cfg.to_toml().as_bytes())?;
    let l = launch::prepare(o, run_dir, &config, &cfg.run.env_vars)?;
    run_info!("Launching MPI job ({} ranks: rank 0 drives, {} run tasks): {}", o.ranks, o.ranks - 1, l.command);
    let ended = launch::run(&l)?;
    tracing::debug!(target: "taps.run", "MPI job ended: {} ({}), rank 0 status {:?}", l.command.program, ended.launcher, ended.rank0);

    let mut summary = EngineSummary::default();
    if let Some(f) = &cfg.engine.task_record_file_name
        && let Ok((total, failed)) = crate::record::count_records(&run_dir.join(f))
    {
        summary.submitted = total;
        summary.records = total;
        summary.failed = failed;
    }
    let error = match ended.rank0 {
        Some(0) => None,
        Some(130) => {
            summary.interrupted = true;
            None
        }
        Some(code) => Some(anyhow::anyhow!("the MPI job failed: rank 0 exited with code {} (see the log above)", code)),
        None if ended.signalled => {
            // mpirun, signalled while a rank is stopped, may kill rank 0 as it ends.
            tracing::warn!(
                target: "taps.run",
                "rank 0 of the interrupted MPI job left no exit status ({} ended with {}); its log and {} record(s) in {} are what it wrote",
                l.command.program,
                ended.launcher,
                summary.records,
                run_dir.display()
            );
            summary.interrupted = true;
            None
        }
        None => Some(anyhow::anyhow!(
            "rank 0 of the MPI job left no exit status ({} ended with {}): it was killed, or it never started; \
             its log and records in {} are what it wrote",
            l.command.program,
            ended.launcher,
            run_dir.display()
        )),
    };
    if let Some(e) = &error {
        tracing::error!(target: "taps.run", "{:#}", e);
    }
    Ok(RunOutcome { run_dir: run_dir.to_path_buf(), summary, error })
}
