//! A submitted job: `job.json`, its state (`taps status`) and `taps cancel`.
//!
//! The state combines what the scheduler reports with the run directory: the job script writes
//! its launch command's exit code to `job.exit`, which decides between finished and failed where
//! the scheduler does not say (Slurm's PBS wrappers report `C` for both), and answers once the
//! scheduler has forgotten the job.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::{Deserialize, Serialize};

use super::profile::shell_quote;
use super::submit::{EXIT, RECORD, Scheduler};

/// A job's state, as `taps status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// `--dry-run`, or the scheduler rejected the job.
    NotSubmitted,
    /// Waiting (or held) in the queue.
    Queued,
    /// Pending for a reason that waiting never resolves (it asks for more than the partition or
    /// queue has, its nodes are down, ...): the detail says why and what to do.
    Stuck,
    /// Running.
    Running,
    /// Ended with exit code 0.
    Finished,
    /// Ended with a non-zero exit code, killed, out of time or memory.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Ended, outcome not reported by the scheduler (PBS `C`); resolved with `job.exit`.
    Ended,
    /// The scheduler no longer knows the job, and it left no exit code.
    Unknown,
}

impl JobState {
    /// The state's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::NotSubmitted => "not-submitted",
            JobState::Queued => "queued",
            JobState::Stuck => "stuck",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Ended => "ended",
            JobState::Unknown => "unknown",
        }
    }

    /// The job will not change any more.
    pub fn is_final(&self) -> bool {
        matches!(self, JobState::Finished | JobState::Failed | JobState::Cancelled | JobState::NotSubmitted)
    }
}

/// What a scheduler says about a job.
#[derive(Clone, Debug, PartialEq)]
pub struct Reported {
    /// The state, mapped.
    pub state: JobState,
    /// The scheduler's own words, e.g. `JobState=PENDING Reason=JobHeldUser`.
    pub detail: String,
    /// The exit status, when reported.
    pub exit_status: Option<i64>,
}

/// `job.json`: what `taps submit` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The scheduler.
    pub scheduler: Scheduler,
    /// The job was accepted by the scheduler.
    pub submitted: bool,
    /// Scheduler job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// When the submit command ran (Unix seconds).
    pub submit_time: f64,
    /// The submit command (or the one a dry run would have run).
    pub command: Vec<String>,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The job script.
    pub script: PathBuf,
    /// Nodes asked for.
    pub nodes: u32,
    /// Tasks per node asked for.
    pub ranks_per_node: u32,
    /// Why the job was not submitted (`dry run`, or the scheduler's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When `taps cancel` asked the scheduler to cancel the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_time: Option<f64>,
}

impl JobRecord {
    /// Reads `RUN/job.json`.
    pub fn read(run_dir: &Path) -> Result<JobRecord, String> {
        let path = run_dir.join(RECORD);
        if !run_dir.is_dir() {
            return Err(format!("{}: not a directory (give a run directory made by taps submit)", run_dir.display()));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: cannot read {} ({}); is this a run directory made by taps submit?",
                run_dir.display(),
                RECORD,
                e
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e))
    }

    pub(crate) fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("job records serialise") + "\n";
        crate::run::write_atomic(&run_dir.join(RECORD), text.as_bytes())
    }
}

/// Runs an external tool; a missing one is one line naming it and how to get it.
pub fn run_tool(argv: &[&str], cwd: Option<&Path>) -> Result<Output, String> {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => missing_tool(argv[0]),
        _ => format!("cannot run {}: {}", argv[0], e),
    })
}

/// "X not found on PATH" with where to get it.
pub fn missing_tool(program: &str) -> String {
    let hint = match program {
        "sbatch" | "scontrol" | "scancel" | "squeue" => {
            "run taps on a Slurm login node (or `module load slurm`); on Debian/Ubuntu install slurm-client \
             (scripts/install-deps.sh installs Slurm)"
        }
        _ => {
            "run taps on a PBS login node (or `module load pbs`); on Debian/Ubuntu, slurm-wlm-torque provides \
             PBS-style commands over Slurm (scripts/install-deps.sh)"
        }
    };
    let dry =
        if matches!(program, "sbatch" | "qsub") { "; --dry-run writes the job script without submitting" } else { "" };
    format!("{} not found on PATH: {}{}", program, hint, dry)
}

/// Now, in Unix seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The state of the job of a run directory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobStatus {
    /// The state.
    pub state: JobState,
    /// The scheduler.
    pub scheduler: Scheduler,
    /// The job id (None if not submitted).
    pub job_id: Option<String>,
    /// The scheduler's or the run directory's words.
    pub detail: String,
    /// The run directory.
    pub run_dir: PathBuf,
}

fn read_exit(run_dir: &Path) -> Option<i64> {
    std::fs::read_to_string(run_dir.join(EXIT)).ok()?.trim().parse().ok()
}

/// Combines what the scheduler reports with `job.exit` and whether a cancel was requested.
pub fn resolve(reported: Option<Reported>, exit: Option<i64>, cancel_requested: bool) -> (JobState, String) {
    let by_exit = |code: i64, prefix: &str| {
        let state = if code == 0 { JobState::Finished } else { JobState::Failed };
        (state, format!("{}{} {}", prefix, EXIT, code))
    };
    match reported {
        Some(r) if r.state.is_final() => {
            if r.state == JobState::Failed && cancel_requested && exit.is_none() {
                (JobState::Cancelled, r.detail)
            } else {
                (r.state, r.detail)
            }
        }
        Some(r) if matches!(r.state, JobState::Queued | JobState::Stuck | JobState::Running | JobState::Unknown) => {
            match exit {
                Some(code) => by_exit(code, &format!("{}, ", r.detail)),
                None => (r.state, r.detail),
            }
        }
        Some(r) => match exit {
            Some(code) => by_exit(code, &format!("{}, ", r.detail)),
            None if cancel_requested => (JobState::Cancelled, r.detail),
            None => (JobState::Failed, format!("{}, ended without writing {}: killed or out of time", r.detail, EXIT)),
        },
        None => match exit {
            Some(code) => by_exit(code, "no longer known to the scheduler, "),
            None => (JobState::Unknown, format!("the scheduler no longer knows the job and it wrote no {}", EXIT)),
        },
    }
}

/// The state of the job submitted from `run_dir`.
pub fn status(run_dir: &Path) -> Result<(JobRecord, JobStatus), String> {
    let rec = JobRecord::read(run_dir)?;
    let mut st = JobStatus {
        state: JobState::NotSubmitted,
        scheduler: rec.scheduler,
        job_id: rec.job_id.clone(),
        detail: rec.error.clone().unwrap_or_default(),
        run_dir: std::path::absolute(run_dir).unwrap_or(run_dir.to_path_buf()),
    };
    let Some(id) = rec.job_id.clone().filter(|_| rec.submitted) else { return Ok((rec, st)) };
    let reported = match rec.scheduler {
        Scheduler::Slurm => super::slurm::query(&id),
        Scheduler::Pbs => super::pbs::query(&id),
    };
    // After the query: a job the scheduler reports ended has written job.exit by then.
    let exit = read_exit(run_dir);
    let reported = match reported {
        Ok(r) => r,
        // The run directory answers for a finished job even where the scheduler is out of reach.
        Err(_) if exit.is_some() => None,
        Err(e) => return Err(e),
    };
    (st.state, st.detail) = resolve(reported, exit, rec.cancel_time.is_some());
    // What to do about a waiting job names the job and the run directory: fill them in.
    st.detail = st
        .detail
        .replace("taps cancel RUN_DIR", &format!("taps cancel {}", shell_quote(&run_dir.display().to_string())))
        .replace("scontrol release JOBID", &format!("scontrol release {}", id));
    Ok((rec, st))
}

/// `taps status RUN_DIR [--json]`.
pub fn main_status(run_dir: &Path, json: bool) -> i32 {
    match status(run_dir) {
        Ok((_, st)) => {
            if json {
                println!("{}", serde_json::to_string(&st).expect("status serialises"));
            } else {
                let job = match &st.job_id {
                    Some(id) => format!("{} job {}", st.scheduler, id),
                    None => format!("{} job", st.scheduler),
                };
                let detail = if st.detail.is_empty() { String::new() } else { format!(" ({})", st.detail) };
                println!("{}: {}{}", st.state.as_str(), job, detail);
            }
            0
        }
        Err(e) => {
            eprintln!("taps: error: {}", e.split_whitespace().collect::<Vec<_>>().join(" "));
            if run_dir.join(RECORD).is_file() { 1 } else { 2 }
        }
    }
}

/// `taps cancel RUN_DIR`.
pub fn main_cancel(run_dir: &Path) -> i32 {
    let (mut rec, st) = match status(run_dir) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("taps: error: {}", e.split_whitespace().collect::<Vec<_>>().join(" "));
            return if run_dir.join(RECORD).is_file() { 1 } else { 2 };
        }
    };
    let Some(id) = rec.job_id.clone().filter(|_| rec.submitted) else {
        eprintln!(
            "taps: error: {} was not submitted ({}); nothing to cancel",
            run_dir.display(),
            rec.error.as_deref().unwrap_or("no job id")
        );
        return 1;
    };
    if st.state.is_final() {
        println!("{} job {} already {}; nothing to cancel", rec.scheduler, id, st.state.as_str());
        return 0;
    }
    let argv = match rec.scheduler {
        Scheduler::Slurm => super::slurm::cancel_argv(&id),
        Scheduler::Pbs => super::pbs::cancel_argv(&id),
    };
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    match run_tool(&argv, None) {
        Ok(out) if out.status.success() => {
            rec.cancel_time = Some(now());
            if let Err(e) = rec.write(run_dir) {
                eprintln!("taps: warning: cannot update {}: {}", run_dir.join(RECORD).display(), e);
            }
            println!("Cancelled {} job {} ({})", rec.scheduler, id, run_dir.display());
            0
        }
        Ok(out) => {
            let msg =
                super::slurm::one_line(&String::from_utf8_lossy(&out.stderr), &String::from_utf8_lossy(&out.stdout));
            eprintln!("taps: error: {} {} failed ({}): {}", argv[0], id, out.status, msg);
            1
        }
        Err(e) => {
            eprintln!("taps: error: {}", e);
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_of_states() {
        let r = |state, detail: &str| Some(Reported { state, detail: detail.into(), exit_status: None });
        assert_eq!(resolve(r(JobState::Ended, "job_state=C"), Some(0), false).0, JobState::Finished);
        assert_eq!(resolve(r(JobState::Ended, "job_state=C"), Some(2), false).0, JobState::Failed);
        assert_eq!(resolve(r(JobState::Ended, "job_state=C"), None, true).0, JobState::Cancelled);
        assert_eq!(resolve(r(JobState::Ended, "job_state=C"), None, false).0, JobState::Failed);
        assert_eq!(resolve(r(JobState::Running, "R"), None, false).0, JobState::Running);
        assert_eq!(resolve(r(JobState::Stuck, "can never start"), None, false).0, JobState::Stuck);
        assert_eq!(resolve(r(JobState::Stuck, "can never start"), None, true).0, JobState::Stuck);
        assert!(!JobState::Stuck.is_final(), "a stuck job can still be cancelled");
        assert_eq!(resolve(r(JobState::Running, "COMPLETING"), Some(0), false).0, JobState::Finished);
        assert_eq!(resolve(r(JobState::Failed, "F"), None, true).0, JobState::Cancelled);
        assert_eq!(resolve(None, Some(0), false).0, JobState::Finished);
        assert_eq!(resolve(None, None, false).0, JobState::Unknown);
    }
}
