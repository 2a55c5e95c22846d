//! Starting an MPI job of taps workers from this process through a launch profile: what
//! `taps run --engine.executor mpi` does outside an MPI job.
//!
//! This process does not join MPI. It runs the launcher (`mpirun … taps-worker -c RUN/config.toml
//! --run-dir RUN --status-file …`) with its output streamed to ours, and waits. Rank 0 of the job
//! writes `log.txt`, `environment.json` and `tasks.jsonl` into the same run directory (which must
//! therefore be on a filesystem that rank 0's node sees), then writes its exit status to the
//! status file: mpirun with recovery enabled exits 0 whatever the ranks return, so that file is
//! the truth. [`run`] creates the status file blank before the job starts and rank 0 overwrites
//! it in place, so the status arrives even when the run filled its filesystem.
//!
//! A SIGINT, SIGTERM or SIGHUP to this process is passed on to the launcher as SIGUSR1, which
//! mpirun and srun forward to every rank: rank 0 records every task and ends the job. Should the
//! job still run [`ESCALATE_AFTER`] later, the launcher gets SIGTERM (mpirun then stops the job).

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::profiles::{LaunchCommand, LaunchError, LaunchSpec, Profiles, STATUS_FILE};
use crate::executor::MpiJob;
use crate::executor::mpi::launch::{create_blank, read_status};

/// After passing a signal on to the job, how long to wait before sending the launcher SIGTERM.
pub(crate) const ESCALATE_AFTER: Duration = Duration::from_secs(5);
/// How long the launcher may outlive rank 0's exit status before it is stopped: mpirun that lost
/// a node's daemon may wait for it for ever after every rank has ended.
pub(crate) const LINGER_AFTER_RANK0: Duration = Duration::from_secs(10);
/// When the launcher ends before rank 0 has written its status (mpirun, signalled while a rank
/// is stopped, may quit before its ranks), how long to wait for rank 0 to write it.
const STATUS_WAIT: Duration = Duration::from_secs(5);
/// How long the probe of a launch command may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// A launch, ready to run.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The launcher's full path.
    pub program: PathBuf,
    /// The command (program name as the profile gives it, arguments, environment).
    pub command: LaunchCommand,
    /// Where rank 0 writes its exit status.
    pub status_file: PathBuf,
}

/// How a launched job ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    /// Rank 0's exit status, if it wrote one.
    pub rank0: Option<i32>,
    /// How the launcher ended, in words (`exit code 0`, `signal 9`).
    pub launcher: String,
    /// A signal came while the job ran (and was passed on).
    pub signalled: bool,
}

fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

fn launcher_args(o: &MpiJob) -> Result<Vec<String>, LaunchError> {
    Ok(crate::shell::split(&o.launcher_args)?)
}

/// How many ranks the launch places without oversubscribing, by OpenMPI's rules: the slots of
/// the hostfile (`--hostfile`, `--machinefile`, `--default-hostfile`) or `--host` list in
/// `launcher_args`, else the cores of this node. A hostfile line without `slots=N` has one slot
/// per core of its node (this node's count is taken, as for a cluster of like nodes); a `--host`
/// entry without `:N` has one. A hostfile that cannot be read counts as this node: the launcher's
/// probe names the problem.
pub(crate) fn slots(launcher_args: &[String]) -> u64 {
    let cores = crate::executor::available_cores() as u64;
    let mut hosts: Option<u64> = None;
    let mut args = launcher_args.iter();
    while let Some(a) = args.next() {
        let Some((kind, inline)) = host_flag(a) else { continue };
        let Some(value) = inline.map(str::to_string).or_else(|| args.next().cloned()) else { break };
        let n = match kind {
            Hosts::File => match std::fs::read_to_string(&value) {
                Ok(text) => hostfile_slots(&text, cores),
                Err(_) => return cores,
            },
            Hosts::List => value
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| h.rsplit_once(':').map_or(1, |(_, n)| n.parse().unwrap_or(1)))
                .sum(),
        };
        *hosts.get_or_insert(0) += n;
    }
    hosts.unwrap_or(cores)
}

/// How an OpenMPI flag names hosts.
enum Hosts {
    /// `--hostfile`, `--machinefile`, `--default-hostfile`: a file of hosts.
    File,
    /// `--host`, `-H`: a comma-separated list.
    List,
}

/// Whether the launcher argument `a` is an OpenMPI flag naming hosts: its kind and its value
/// when given inline (`--hostfile=h`).
fn host_flag(a: &str) -> Option<(Hosts, Option<&str>)> {
    if !a.starts_with('-') {
        return None;
    }
    let (flag, inline) = a.split_once('=').map_or((a, None), |(f, v)| (f, Some(v)));
    match flag.trim_start_matches('-') {
        "hostfile" | "machinefile" | "default-hostfile" => Some((Hosts::File, inline)),
        "host" | "H" => Some((Hosts::List, inline)),
        _ => None,
    }
}

/// Whether OpenMPI `launcher_args` name hosts to run on (a host list or a hostfile).
fn names_hosts(launcher_args: &[String]) -> bool {
    launcher_args.iter().any(|a| host_flag(a).is_some())
}

/// The slots of an OpenMPI hostfile's `text`; a line without `slots=N` has `cores`.
fn hostfile_slots(text: &str, cores: u64) -> u64 {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .find_map(|w| w.strip_prefix("slots=").and_then(|n| n.parse().ok()))
                .unwrap_or(cores)
        })
        .sum()
}

/// The launch of a run in `run_dir` with `config`, whose ranks see the variables `env`; every
/// error names the missing program, file or bad option.
pub(crate) fn prepare(
    o: &MpiJob,
    run_dir: &Path,
    config: &Path,
    env: &BTreeMap<String, String>,
) -> Result<Launch, LaunchError> {
    let profiles = Profiles::load(o.launcher_profile.as_deref())?;
    let profile = profiles.find(&o.launcher)?;
    let program = profile.locate()?;
    let worker = crate::executor::process_pool::locate_worker(o.worker_path.as_deref())
        .map_err(|e| LaunchError::Worker(e.to_string()))?;
    let status_file = run_dir.join(STATUS_FILE);
    let spec = LaunchSpec {
        ranks: o.ranks as u64,
        worker,
        config: config.to_path_buf(),
        run_dir: run_dir.to_path_buf(),
        status_file: status_file.clone(),
        launcher_args: launcher_args(o)?,
        env: env.clone(),
        root: is_root(),
        oversubscribed: o.ranks as u64 > slots(&launcher_args(o)?),
    };
    let command = profile.command(&spec).map_err(|e| in_profile(&o.launcher, e))?;
    Ok(Launch { program, command, status_file })
}

fn in_profile(name: &str, e: LaunchError) -> LaunchError {
    match e {
        LaunchError::BadProfile(m) => LaunchError::BadProfile(format!("launch profile {:?}: {}", name, m)),
        e => e,
    }
}

/// Runs the launch and waits for the job, passing signals on; removes the status file.
pub fn run(l: &Launch) -> Result<Ended, LaunchError> {
    let session = SessionBase::for_launch(&l.program, &l.command.env, &l.command.args)?;
    create_blank(&l.status_file)?;
    // Rank 0 names its shared-memory files with this prefix; whatever is left of them when the
    // job has ended (every rank killed) is removed here.
    let shm_prefix = crate::shm::new_prefix();
    let mut c = Command::new(&l.program);
    c.args(&l.command.args).envs(&l.command.env).env(crate::shm::PREFIX_ENV, &shm_prefix).stdin(Stdio::null());
    session.apply(&mut c);
    // SAFETY: only an async-signal-safe call between fork and exec.
    unsafe {
        c.pre_exec(|| {
            // The job ends with this process.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            Ok(())
        });
    }
    let child = c.spawn().map_err(|source| {
        let _ = std::fs::remove_file(&l.status_file);
        LaunchError::Start { program: l.program.display().to_string(), source }
    })?;
    let waited = wait_passing_signals(child, &l.status_file);
    crate::shm::remove_run_files(&shm_prefix);
    let (status, signalled) = waited?;
    let waited = Instant::now();
    let mut rank0 = read_status(&l.status_file);
    while rank0.is_none() && waited.elapsed() < STATUS_WAIT {
        std::thread::sleep(Duration::from_millis(20));
        rank0 = read_status(&l.status_file);
    }
    let _ = std::fs::remove_file(&l.status_file);
    let launcher = match (status.code(), std::os::unix::process::ExitStatusExt::signal(&status)) {
        (Some(c), _) => format!("exit code {}", c),
        (None, Some(s)) => format!("signal {}", s),
        _ => "unknown status".into(),
    };
    Ok(Ended { rank0, launcher, signalled })
}

/// Waits for the launcher `child`; a SIGINT, SIGTERM or SIGHUP meanwhile is passed on to it as
/// SIGUSR1, and followed by SIGTERM if the job still runs [`ESCALATE_AFTER`] later. A launcher
/// still running [`LINGER_AFTER_RANK0`] after rank 0 wrote its status to `status_file` gets
/// SIGTERM too (then SIGKILL). Only this thread signals and reaps the child, so a signal never
/// reaches a reused pid. Returns the exit status and whether a signal came.
fn wait_passing_signals(
    mut child: std::process::Child,
    status_file: &Path,
) -> std::io::Result<(std::process::ExitStatus, bool)> {
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
    let mut rank0_done: Option<Instant> = None;
    let mut polls = 0u32;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        polls = polls.wrapping_add(1);
        if rank0_done.is_none() && polls.is_multiple_of(10) && read_status(status_file).is_some() {
            rank0_done = Some(Instant::now());
        }
        if let Some(at) = rank0_done {
            let waited = at.elapsed();
            if waited >= LINGER_AFTER_RANK0 + ESCALATE_AFTER {
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            } else if waited >= LINGER_AFTER_RANK0 && !escalated {
                tracing::warn!(target: "taps.run", "The launcher still runs {} s after rank 0 ended: stopping it", LINGER_AFTER_RANK0.as_secs());
                // SAFETY: our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                escalated = true;
            }
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

/// The MCA variables that choose where OpenMPI keeps its session directories.
const TMPDIR_BASE_VARS: [&str; 3] =
    ["OMPI_MCA_orte_tmpdir_base", "OMPI_MCA_orte_local_tmpdir_base", "OMPI_MCA_orte_remote_tmpdir_base"];

/// A directory of one launch for mpirun's session files. mpirun keeps them in
/// `$TMPDIR/ompi.HOST.UID`, which it creates when it starts and removes when it ends, so two
/// jobs of one user that start and end at the same moment on one node can race there, and the
/// one starting fails ("A call to mkdir was unable to create the desired directory … File
/// exists", open-mpi/ompi#8510). A job that taps starts on this node alone therefore gets a
/// directory of its own in the temporary directory (`orte_tmpdir_base`), removed when the launch
/// has ended. Not made when the launcher is not OpenMPI's, when the user chose the place
/// (`OMPI_MCA_orte_*tmpdir_base` set here or by the profile), or when the job may reach other
/// nodes (a host list or hostfile in the launcher arguments, or inside a batch allocation): their
/// daemons would create the directory there too and leave it behind. (Only the global base
/// works: ranks that see both it and a local base, which mpirun passes on, refuse to start.)
struct SessionBase(Option<PathBuf>);

impl SessionBase {
    fn for_launch(
        program: &Path,
        env: &BTreeMap<String, String>,
        launcher_args: &[String],
    ) -> std::io::Result<SessionBase> {
        let chosen = TMPDIR_BASE_VARS.iter().any(|v| env.contains_key(*v) || std::env::var_os(v).is_some());
        let allocation =
            ["SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "FLUX_JOB_ID"].iter().any(|v| std::env::var_os(v).is_some());
        if !is_mpirun(program) || chosen || allocation || names_hosts(launcher_args) {
            return Ok(SessionBase(None));
        }
        let dir = std::env::temp_dir().join(format!("{}-ompi", crate::shm::new_prefix()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(SessionBase(Some(dir)))
    }

    fn apply(&self, c: &mut Command) {
        if let Some(dir) = &self.0 {
            c.env(TMPDIR_BASE_VARS[0], dir);
        }
    }
}

impl Drop for SessionBase {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether `program` is OpenMPI's launcher (which a probe can run cheaply on this node).
fn is_mpirun(program: &Path) -> bool {
    program.file_name().is_some_and(|n| matches!(n.to_str(), Some("mpirun" | "mpiexec" | "orterun")))
}

/// Checks a launch command that holds what the user wrote (launcher arguments, a profile of
/// their own) before the run directory exists: mpirun runs it with `true` in place of
/// taps-worker, and a rejection becomes one line quoting mpirun. Other launchers (srun would
/// queue a job) are not probed.
pub fn probe(o: &MpiJob) -> Result<(), LaunchError> {
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
    let probe_err = |problem: String| LaunchError::Probe { what: what.clone(), problem };
    let truth = crate::shell::find_program("true")
        .ok_or_else(|| LaunchError::Missing { program: "true".into(), hint: String::new() })?;
    let spec = LaunchSpec {
        ranks: o.ranks as u64,
        worker: truth,
        launcher_args: launcher_args(o)?,
        root: is_root(),
        oversubscribed: o.ranks as u64 > slots(&launcher_args(o)?),
        ..Default::default()
    };
    let cmd = profile.probe_command(&spec).map_err(|e| in_profile(&o.launcher, e))?;
    let session = SessionBase::for_launch(&program, &cmd.env, &cmd.args)?;
    let mut c = Command::new(&program);
    c.args(&cmd.args).envs(&cmd.env).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    session.apply(&mut c);
    let mut child =
        c.spawn().map_err(|source| LaunchError::Start { program: program.display().to_string(), source })?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(probe_err(format!(
                "`{}` (a probe of the launch command, with `true` for taps-worker) did not finish within {} s",
                cmd,
                PROBE_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output()?;
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
    Err(probe_err(format!("{} rejects the launch command ({}): {}", cmd.program, out.status, said)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn slots_come_from_the_hostfile_or_host_list_else_this_node() {
        let cores = crate::executor::available_cores() as u64;
        assert_eq!(slots(&[]), cores);
        assert_eq!(slots(&words("--bind-to none")), cores);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("hosts");
        std::fs::write(&f, "# nodes\nnode1 slots=4\n\nnode2 slots=2 max_slots=8  # small\nnode3\n").unwrap();
        let f = f.display();
        assert_eq!(slots(&words(&format!("--hostfile {}", f))), 6 + cores);
        assert_eq!(slots(&words(&format!("-machinefile {}", f))), 6 + cores);
        assert_eq!(slots(&words(&format!("--hostfile={}", f))), 6 + cores);
        assert_eq!(slots(&words("--host a:3,b")), 4);
        assert_eq!(slots(&words("-H a,b,c")), 3);
        // An unreadable hostfile counts as this node (the launcher's probe names the problem).
        assert_eq!(slots(&words("--hostfile /nonexistent/hosts")), cores);
    }

    #[test]
    fn a_job_names_other_hosts_through_a_host_list_or_a_hostfile() {
        for args in ["--hostfile h", "-hostfile h", "--hostfile=h", "--machinefile h", "-H a,b", "--host a:2"] {
            assert!(names_hosts(&words(args)), "{}", args);
        }
        for args in ["", "--bind-to none", "-np 3 ./host", "--map-by node"] {
            assert!(!names_hosts(&words(args)), "{}", args);
        }
    }
}
