//! A batch scheduler behind one trait: [`Scheduler`] submits a job script, reports a job's state
//! and cancels it. Slurm ([`super::slurm`]) and PBS ([`super::pbs`]) implement it;
//! [`SchedulerKind::get`] (in `mod.rs`, so that this file names neither) picks one by name.

use std::path::Path;
use std::process::{Command, Output};

use serde::{Deserialize, Serialize};

crate::opt_enum! {
    /// A batch scheduler, by name.
    pub enum SchedulerKind {
        /// Slurm: sbatch, scontrol, scancel.
        Slurm = "slurm",
        /// PBS Pro / OpenPBS: qsub, qstat, qdel.
        Pbs = "pbs",
    }
}

/// What a scheduler command did wrong, or why it could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The command is not on PATH.
    #[error("{}", missing_tool(.0))]
    Missing(String),
    /// The command cannot be run.
    #[error("cannot run {program}: {source}")]
    Run {
        /// The command.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The submit command refused the job.
    #[error("{program} rejected the job ({status}): {message}")]
    Rejected {
        /// The command.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said (stderr and stdout), or `no message`.
        message: String,
    },
    /// The submit command succeeded but printed no job id.
    #[error("{program} printed no job id: {said}")]
    NoJobId {
        /// The command.
        program: String,
        /// What it said.
        said: String,
    },
    /// The cancel command failed.
    #[error("{program} {job_id} failed ({status}): {said}")]
    Cancel {
        /// The command.
        program: String,
        /// The job.
        job_id: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        said: String,
    },
    /// A query failed, or its answer cannot be read (the message names the command).
    #[error("{0}")]
    Query(String),
}

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
    pub(crate) fn is_final(&self) -> bool {
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

/// The files of a job in its run directory that the submit command names.
#[derive(Clone, Copy, Debug)]
pub struct JobFiles<'a> {
    /// The job script.
    pub script: &'a Path,
    /// The job's stdout.
    pub stdout: &'a Path,
    /// The job's stderr.
    pub stderr: &'a Path,
}

/// A batch scheduler: submit, status, cancel, and what its job scripts look like.
pub trait Scheduler: Sync {
    /// Its name.
    fn kind(&self) -> SchedulerKind;

    /// The built-in job-script template.
    fn builtin_template(&self) -> &'static str;

    /// The directive prefix of job-script lines: `#SBATCH` or `#PBS`.
    fn directive_prefix(&self) -> &'static str;

    /// The launch profile the MPI executor's ranks start with when none is configured.
    fn default_launcher(&self) -> &'static str;

    /// The host file launchers other than srun take, as a shell word (`"$PBS_NODEFILE"`).
    fn hostfile(&self) -> Option<&'static str> {
        None
    }

    /// The program that submits jobs (`sbatch`, `qsub`).
    fn submit_program(&self) -> &'static str;

    /// The command that submits a job script (as `job.json` records it).
    fn submit_argv(&self, files: JobFiles<'_>) -> Vec<String>;

    /// The job id in the submit command's stdout.
    fn parse_job_id(&self, stdout: &str) -> Option<String>;

    /// The command that cancels a job.
    fn cancel_argv(&self, job_id: &str) -> Vec<String>;

    /// The job's state; `None` if the scheduler does not know the id (any more).
    fn status(&self, job_id: &str) -> Result<Option<Reported>, SchedulerError>;

    /// Runs the submit command `argv` (from [`submit_argv`](Self::submit_argv)) in `cwd`; the job id.
    fn submit(&self, argv: &[String], cwd: &Path) -> Result<String, SchedulerError> {
        let out = run_tool(argv, Some(cwd))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // Slurm's qsub wrapper complains on stdout; show both.
            let msg = [stderr.trim(), stdout.trim()].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>();
            let message = if msg.is_empty() { "no message".to_string() } else { msg.join(" ") };
            return Err(SchedulerError::Rejected { program: argv[0].clone(), status: out.status, message });
        }
        self.parse_job_id(&stdout)
            .ok_or_else(|| SchedulerError::NoJobId { program: argv[0].clone(), said: one_line(&stderr, &stdout) })
    }

    /// Cancels the job.
    fn cancel(&self, job_id: &str) -> Result<(), SchedulerError> {
        let argv = self.cancel_argv(job_id);
        let out = run_tool(&argv, None)?;
        if out.status.success() {
            return Ok(());
        }
        Err(SchedulerError::Cancel {
            program: argv[0].clone(),
            job_id: job_id.to_string(),
            status: out.status,
            said: one_line(&String::from_utf8_lossy(&out.stderr), &String::from_utf8_lossy(&out.stdout)),
        })
    }
}

/// Runs an external tool; a missing one is [`SchedulerError::Missing`].
pub(crate) fn run_tool<S: AsRef<str>>(argv: &[S], cwd: Option<&Path>) -> Result<Output, SchedulerError> {
    let program = argv[0].as_ref();
    let mut cmd = Command::new(program);
    cmd.args(argv[1..].iter().map(|a| a.as_ref()));
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    cmd.output().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SchedulerError::Missing(program.to_string()),
        _ => SchedulerError::Run { program: program.to_string(), source },
    })
}

/// "X not found on PATH" with where to get it.
pub(crate) fn missing_tool(program: &str) -> String {
    let hint = match program {
        "sbatch" | "scontrol" | "scancel" | "squeue" | "sinfo" => {
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

/// A command's complaint on one line (stderr, else stdout).
pub(crate) fn one_line(stderr: &str, stdout: &str) -> String {
    let s = if stderr.trim().is_empty() { stdout } else { stderr };
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
