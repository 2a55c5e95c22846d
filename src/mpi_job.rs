//! The MPI job's entry point (harness side of the `mpi` executor): `taps-worker -c FILE…` under
//! mpirun or srun. Every rank initialises MPI; rank 0 runs the benchmark as `taps run` does, the
//! other ranks serve tasks. See [`crate::executor::mpi`] for the executor itself.

use std::path::PathBuf;

use crate::executor::mpi::{self, Session};

/// `taps-worker -c FILE... [--run-dir DIR] [taps run options]` under mpirun/srun: every rank
/// initialises MPI, rank 0 runs the benchmark, the others serve tasks. Returns the exit code.
pub(crate) fn worker_main(argv: &[String]) -> i32 {
    let (args, status_file) = match crate::cli::take_flag(&argv[1..], "status-file", "a file") {
        Ok(x) => x,
        Err(e) => {
            eprintln!("taps-worker: error: {}", e);
            return 2;
        }
    };
    let session = match Session::init() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("taps-worker: error: {}", e);
            return 2;
        }
    };
    if session.rank() > 0 {
        return session.serve();
    }
    session.become_driver();
    let code = run_rank0(&args, argv, &session);
    if let Some(f) = &status_file
        && let Err(e) = mpi::launch::write_status(std::path::Path::new(f), code)
    {
        eprintln!("taps-worker: error: cannot write rank 0's exit status to {}: {}", f, e);
    }
    session.finish_driver(code)
}

/// The signal that stopped rank 0, if one did.
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Rank 0's exit code and the line that says why, when the run lost worker ranks (`lost`, as
/// [`Session::lost_ranks`] words them) and ended with `code`. A run that lost ranks failed (1),
/// unless the user interrupted it (130 after SIGINT, SIGHUP, or SIGUSR1 from `taps run`): a
/// SIGTERM after a loss is the launcher stopping the job, as mpirun does when a node and its MPI
/// daemon are lost with the rank, and the line names that node.
fn lost_ranks_outcome(lost: &[String], code: i32, signal: i32) -> (i32, String) {
    let mut line = format!("The run lost {} worker rank(s): {}", lost.len(), lost.join("; "));
    if code != 130 {
        return (1, line);
    }
    if signal != libc::SIGTERM {
        line.push_str(&format!(", and was then interrupted by signal {}", signal));
        return (130, line);
    }
    let mut nodes: Vec<&str> = lost.iter().filter_map(|l| l.split(" on ").nth(1)?.split(')').next()).collect();
    nodes.dedup();
    line.push_str(&format!(
        "; then the launcher stopped the job (signal {}), as mpirun does when it loses a node's MPI daemon: node(s) {} \
         are likely down",
        signal,
        nodes.join(", ")
    ));
    (1, line)
}

/// Rank 0's signals: SIGINT, SIGTERM, SIGHUP and SIGUSR1 (from `taps run` through mpirun) all
/// interrupt the run. A repeated signal changes nothing: mpirun follows its SIGTERM with SIGKILL
/// anyway, and rank 0 must not die between the two while it records.
fn install_rank0_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]) else { return };
    let _ = std::thread::Builder::new().name("taps-signals".into()).spawn(move || {
        let mut first = true;
        for sig in signals.forever() {
            if !first {
                tracing::debug!(target: "taps.run", "Signal {} while interrupted: already stopping", sig);
                continue;
            }
            first = false;
            STOP_SIGNAL.store(sig, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(target: "taps.run", "Interrupted by signal {}: recording unfinished tasks and stopping", sig);
            // The engine first (it fails the tasks still waiting for their inputs), then the
            // executor, whose failures reach the engine after its interrupt.
            crate::run::interrupt_current();
            mpi::interrupt();
        }
    });
}

/// Rank 0: `taps run` with the mpi executor, in `--run-dir` or a new run directory.
fn run_rank0(args: &[String], argv: &[String], session: &Session) -> i32 {
    let code = match prepare_rank0(args) {
        Ok((cfg, run_dir)) => {
            install_rank0_signals();
            warn_without_recovery();
            match crate::run::run_in(&cfg, &run_dir, argv) {
                Ok(o) => {
                    let lost = session.lost_ranks();
                    if lost.is_empty() {
                        o.exit_code()
                    } else {
                        let signal = STOP_SIGNAL.load(std::sync::atomic::Ordering::Relaxed);
                        let (code, line) = lost_ranks_outcome(&lost, o.exit_code(), signal);
                        tracing::error!(target: "taps.run", "{}", line);
                        code
                    }
                }
                Err(e) => {
                    tracing::error!(target: "taps.run", "Caught unhandled exception: {:#}", e);
                    1
                }
            }
        }
        Err(code) => code,
    };
    crate::logging::close();
    code
}

fn prepare_rank0(args: &[String]) -> Result<(crate::config::Config, PathBuf), i32> {
    let (mut args, prepared) = crate::cli::take_run_dir(args).map_err(crate::cli::usage_error)?;
    let raw = crate::config::parse_args(&args).map_err(crate::cli::usage_error)?;
    if let Some((_, other)) = raw
        .sets
        .iter()
        .find(|(k, v)| matches!(k.as_str(), "engine.executor" | "executor" | "engine.executor.name") && v != "mpi")
    {
        return Err(crate::cli::usage_error(format!(
            "taps-worker under MPI runs the mpi executor, but the arguments select {:?}; drop --engine.executor",
            other
        )));
    }
    args.extend(["--engine.executor".to_string(), "mpi".to_string()]);
    let cfg = crate::cli::load_config(&args)?;
    let cwd = std::env::current_dir().unwrap_or_default();
    let run_dir = match prepared {
        Some(d) => crate::cli::check_prepared_run_dir(&d, &cfg).map_err(crate::cli::usage_error)?,
        None => crate::run::create_run_dir(&cfg, &cwd).map_err(|e| {
            crate::cli::usage_error(format!("cannot create the run directory from {:?}: {}", cfg.run.dir_format, e))
        })?,
    };
    crate::run::init_logging(&cfg, &run_dir)
        .map_err(|e| crate::cli::usage_error(format!("cannot open the log file in {}: {}", run_dir.display(), e)))?;
    Ok((cfg, run_dir))
}

/// Under OpenMPI without recovery, a dead rank makes mpirun kill the whole job: say so once.
fn warn_without_recovery() {
    if mpi::launch::launcher_kills_job() {
        tracing::warn!(
            "mpi: mpirun runs without --enable-recovery: if a worker rank dies, mpirun kills every rank about a \
             second later, so taps then fails every unfinished task at once; add --enable-recovery (taps run \
             --engine.executor mpi does) to finish the work on the other ranks"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::lost_ranks_outcome;

    #[test]
    fn a_lost_rank_fails_the_run_and_a_sigterm_after_it_names_the_lost_node() {
        let lost = ["MPI rank 2 (pid 17 on node2) died".to_string()];
        let (code, line) = lost_ranks_outcome(&lost, 1, 0);
        assert_eq!((code, line.as_str()), (1, "The run lost 1 worker rank(s): MPI rank 2 (pid 17 on node2) died"));
        let (code, line) = lost_ranks_outcome(&lost, 130, libc::SIGTERM);
        assert_eq!(code, 1);
        assert!(line.ends_with("node(s) node2 are likely down"), "{}", line);
        // The user's interrupt stays an interrupt.
        let (code, line) = lost_ranks_outcome(&lost, 130, libc::SIGUSR1);
        assert_eq!(code, 130);
        assert!(line.ends_with(&format!("interrupted by signal {}", libc::SIGUSR1)), "{}", line);
    }
}
