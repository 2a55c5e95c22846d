//! `taps run --engine.executor mpi` outside an MPI job: start the job through a launch profile.
//!
//! This process does not join MPI. It writes `config.toml` into the run directory it created,
//! runs the launcher (`mpirun … taps-worker -c RUN/config.toml --run-dir RUN --status-file …`)
//! with its output streamed to ours, and waits. Rank 0 of the job writes `log.txt`,
//! `environment.json` and `tasks.jsonl` into the same run directory (which must therefore be
//! on a filesystem that rank 0's node sees), then writes its exit status to the status file:
//! mpirun with recovery enabled exits 0 whatever the ranks return, so that file is the truth.
//! This process creates the status file blank before the job starts and rank 0 overwrites it
//! in place, so the status arrives even when the run filled its filesystem.
//!
//! A SIGINT, SIGTERM or SIGHUP to this process is passed on to the launcher as SIGUSR1, which
//! mpirun and srun forward to every rank: rank 0 records every task and ends the job, and this
//! process exits 130. Should the job still run [`ESCALATE_AFTER`] later, the launcher gets
//! SIGTERM (mpirun then stops the job itself).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::engine::EngineSummary;
use crate::launchers::profiles::{LaunchCommand, LaunchSpec, Profiles, split_args};
use crate::options::Options;
use crate::run::RunOutcome;
use crate::run_info;

use super::MpiOptions;

/// Status file rank 0 writes in the run directory (removed once read).
pub const STATUS_FILE: &str = ".taps-mpi-status";
/// Length of the status record: the exit code, padded with blanks, and a newline.
const STATUS_LEN: usize = 16;
/// After passing a signal on to the job, how long to wait before sending the launcher SIGTERM.
pub const ESCALATE_AFTER: Duration = Duration::from_secs(5);
/// When the launcher ends before rank 0 has written its status (mpirun, signalled while a rank
/// is stopped, may quit before its ranks), how long to wait for rank 0 to write it.
const STATUS_WAIT: Duration = Duration::from_secs(5);
/// How long the probe of a launch command may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes rank 0's exit `code` into the status file: in place when `taps run` created it blank
/// (no new disk space needed), else as a new file (removed again if it cannot be written whole).
pub fn write_status(path: &Path, code: i32) -> std::io::Result<()> {
    let record = format!("{:<width$}\n", code, width = STATUS_LEN - 1);
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(mut f) => f.write_all(record.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(path, record.as_bytes()).inspect_err(|_| {
                let _ = std::fs::remove_file(path);
            })
        }
        Err(e) => Err(e),
    }
}

/// Rank 0's exit code from the status file (`None` while it is blank or missing).
fn read_status(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok())
}

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
    let o = MpiOptions::from_table(&cfg.executor.options.to_table(), "engine.executor").map_err(anyhow::Error::msg)?;
    let config = run_dir.join("config.toml");
    crate::run::write_atomic(&config, cfg.to_toml().as_bytes())?;
    let (program, cmd) = prepare(&o, run_dir, &config).map_err(anyhow::Error::msg)?;
    let status_file = run_dir.join(STATUS_FILE);
    std::fs::write(&status_file, format!("{:width$}\n", "", width = STATUS_LEN - 1))?;
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
    let child = c.spawn().map_err(|e| {
        let _ = std::fs::remove_file(&status_file);
        anyhow::anyhow!("cannot start {}: {}", program.display(), e)
    })?;
    let (status, signalled) = wait_passing_signals(child)?;
    let waited = Instant::now();
    let mut rank0 = read_status(&status_file);
    while rank0.is_none() && waited.elapsed() < STATUS_WAIT {
        std::thread::sleep(Duration::from_millis(20));
        rank0 = read_status(&status_file);
    }
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
        None if signalled => {
            // mpirun, signalled while a rank is stopped, may kill rank 0 as it ends.
            tracing::warn!(
                target: "taps.run",
                "rank 0 of the interrupted MPI job left no exit status ({} ended with {}); its log and {} record(s) in {} are what it wrote",
                cmd.program,
                launcher,
                summary.records,
                run_dir.display()
            );
            summary.interrupted = true;
            None
        }
        None => Some(anyhow::anyhow!(
            "rank 0 of the MPI job left no exit status ({} ended with {}): it was killed, or it never started; \
             its log and records in {} are what it wrote",
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

/// Waits for the launcher `child`; a SIGINT, SIGTERM or SIGHUP meanwhile is passed on to it as
/// SIGUSR1, and followed by SIGTERM if the job still runs [`ESCALATE_AFTER`] later. Only this
/// thread signals and reaps the child, so a signal never reaches a reused pid. Returns the exit
/// status and whether a signal came.
fn wait_passing_signals(mut child: std::process::Child) -> std::io::Result<(std::process::ExitStatus, bool)> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let got = Arc::new(AtomicI32::new(0));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let handle = signals.handle();
    let g = got.clone();
    let thread = std::thread::Builder::new().name("taps-mpi-forward".into()).spawn(move || {
        for sig in signals.forever() {
            g.store(sig, Ordering::SeqCst);
        }
    })?;
    let pid = child.id() as libc::pid_t;
    let mut passed: Option<Instant> = None;
    let mut escalated = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        let sig = got.load(Ordering::SeqCst);
        if sig != 0 && passed.is_none() {
            tracing::debug!(target: "taps.run", "Passing signal {} on to the MPI job as SIGUSR1", sig);
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGUSR1) };
            passed = Some(Instant::now());
        }
        if let Some(at) = passed
            && !escalated
            && at.elapsed() >= ESCALATE_AFTER
        {
            tracing::warn!(target: "taps.run", "The MPI job still runs {} s after the signal: stopping the launcher", ESCALATE_AFTER.as_secs());
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            escalated = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    handle.close();
    let _ = thread.join();
    Ok((status, got.load(Ordering::SeqCst) != 0))
}

/// Whether `program` is OpenMPI's launcher (which a probe can run cheaply on this node).
fn is_mpirun(program: &Path) -> bool {
    program.file_name().is_some_and(|n| matches!(n.to_str(), Some("mpirun" | "mpiexec" | "orterun")))
}

/// Checks a launch command that holds what the user wrote (launcher arguments, a profile of
/// their own) before the run directory exists: mpirun runs it with `true` in place of
/// taps-worker, and a rejection becomes one line quoting mpirun. Other launchers (srun would
/// queue a job) are not probed.
pub fn probe(o: &MpiOptions) -> Result<(), String> {
    let profiles = Profiles::load(o.launcher_profile.as_deref())?;
    let profile = profiles.find(&o.launcher)?;
    let program = profile.locate()?;
    let own_profile = Profiles::builtin().get(&o.launcher) != Some(profile);
    if !is_mpirun(&program) || (o.launcher_args.trim().is_empty() && !own_profile) {
        return Ok(());
    }
    let what = if o.launcher_args.trim().is_empty() {
        format!("launch profile {:?}", o.launcher)
    } else {
        format!("engine.executor.launcher_args {:?}", o.launcher_args)
    };
    let truth = crate::launchers::profiles::find_program("true").ok_or("no `true` program on PATH")?;
    let spec = LaunchSpec {
        ranks: o.ranks,
        worker: truth,
        launcher_args: split_args(&o.launcher_args).map_err(|e| format!("engine.executor.launcher_args: {}", e))?,
        // SAFETY: plain syscall.
        root: unsafe { libc::geteuid() } == 0,
        oversubscribed: o.ranks > crate::executor::available_cores(),
        ..Default::default()
    };
    let cmd = profile.probe_command(&spec).map_err(|e| format!("launch profile {:?}: {}", o.launcher, e))?;
    let mut child = Command::new(&program)
        .args(&cmd.args)
        .envs(&cmd.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {}", program.display(), e))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{}: `{}` (a probe of the launch command, with `true` for taps-worker) did not finish within {} s",
                what,
                cmd,
                PROBE_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let said: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("---") && !l.starts_with("Type '"))
        .take(2)
        .collect();
    let mut said = said.join(" ");
    if said.len() > 300 {
        let cut = (0..=300).rev().find(|&i| said.is_char_boundary(i)).unwrap_or(0);
        said.truncate(cut);
        said.push_str("...");
    }
    Err(format!("{}: {} rejects the launch command ({}): {}", what, cmd.program, out.status, said))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_written_in_place_or_as_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(STATUS_FILE);
        std::fs::write(&f, format!("{:width$}\n", "", width = STATUS_LEN - 1)).unwrap();
        assert_eq!(read_status(&f), None, "blank until rank 0 writes it");
        write_status(&f, 130).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().len(), STATUS_LEN as u64);
        assert_eq!(read_status(&f), Some(130));
        std::fs::remove_file(&f).unwrap();
        write_status(&f, 1).unwrap();
        assert_eq!(read_status(&f), Some(1));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file");
    }
}
