//! Slurm: `sbatch --parsable` to submit, `scontrol -o show job` for the state (no `sacct`:
//! clusters without accounting have none), `scancel` to cancel.

use std::path::Path;

use super::job::{JobState, Reported, run_tool};

/// `sbatch --parsable SCRIPT` (the `#SBATCH` lines carry every option).
pub fn submit_argv(script: &Path) -> Vec<String> {
    vec!["sbatch".into(), "--parsable".into(), script.display().to_string()]
}

/// The job id in `sbatch --parsable` output: `ID` or `ID;CLUSTER`.
pub fn parse_job_id(stdout: &str) -> Option<String> {
    let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
    let id = line.split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '_')).then(|| id.to_string())
}

/// Maps a Slurm `JobState` to ours.
pub fn map_state(state: &str) -> JobState {
    match state {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" | "CONFIGURING" => JobState::Queued,
        "RUNNING" | "COMPLETING" | "SUSPENDED" | "STOPPED" | "SIGNALING" | "STAGE_OUT" | "RESIZING" => {
            JobState::Running
        }
        "COMPLETED" => JobState::Finished,
        "CANCELLED" => JobState::Cancelled,
        "FAILED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY" | "BOOT_FAIL" | "DEADLINE" | "PREEMPTED"
        | "SPECIAL_EXIT" | "REVOKED" => JobState::Failed,
        _ => JobState::Unknown,
    }
}

/// Parses one line of `scontrol -o show job ID`.
pub fn parse_scontrol(line: &str) -> Option<Reported> {
    let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
    let state = field("JobState=")?;
    let mut detail = format!("JobState={}", state);
    let exit = field("ExitCode=");
    match map_state(&state) {
        JobState::Queued => {
            if let Some(r) = field("Reason=") {
                detail.push_str(&format!(" Reason={}", r));
            }
        }
        JobState::Finished | JobState::Failed | JobState::Cancelled => {
            if let Some(e) = &exit {
                detail.push_str(&format!(" ExitCode={}", e));
            }
        }
        _ => {}
    }
    let exit_status = exit.and_then(|e| e.split(':').next()?.parse().ok());
    Some(Reported { state: map_state(&state), detail, exit_status })
}

/// The job's state as Slurm reports it; `None` if Slurm does not know the id (any more).
pub fn query(job_id: &str) -> Result<Option<Reported>, String> {
    let out = run_tool(&["scontrol", "-o", "show", "job", job_id], None)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("Invalid job id") {
            return Ok(None);
        }
        return Err(format!("scontrol show job {} failed: {}", job_id, one_line(&stderr, &stdout)));
    }
    let line = stdout.lines().next().unwrap_or("");
    parse_scontrol(line)
        .map(Some)
        .ok_or_else(|| format!("cannot read the state of job {} from scontrol: {:?}", job_id, line))
}

/// `scancel ID`.
pub fn cancel_argv(job_id: &str) -> Vec<String> {
    vec!["scancel".into(), job_id.into()]
}

/// A command's complaint on one line (stderr, else stdout).
pub fn one_line(stderr: &str, stdout: &str) -> String {
    let s = if stderr.trim().is_empty() { stdout } else { stderr };
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_from_parsable_output() {
        assert_eq!(parse_job_id("42\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("42;cluster\n").as_deref(), Some("42"));
        assert_eq!(parse_job_id("\n"), None);
        assert_eq!(parse_job_id("Submitted batch job 42"), None);
    }

    #[test]
    fn states_from_scontrol() {
        let r = parse_scontrol("JobId=3 JobName=x JobState=PENDING Reason=JobHeldUser Dependency=(null) ExitCode=0:0")
            .unwrap();
        assert_eq!((r.state, r.detail.as_str()), (JobState::Queued, "JobState=PENDING Reason=JobHeldUser"));
        let r = parse_scontrol("JobId=3 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0").unwrap();
        assert_eq!((r.state, r.exit_status), (JobState::Failed, Some(3)));
        assert_eq!(r.detail, "JobState=FAILED ExitCode=3:0");
        assert_eq!(parse_scontrol("JobId=3 JobState=TIMEOUT ExitCode=0:15").unwrap().state, JobState::Failed);
        assert_eq!(parse_scontrol("JobId=3 JobState=CANCELLED ExitCode=0:15").unwrap().state, JobState::Cancelled);
        assert_eq!(parse_scontrol("JobId=3 JobState=RUNNING").unwrap().state, JobState::Running);
        assert_eq!(parse_scontrol("JobId=3 JobState=COMPLETED ExitCode=0:0").unwrap().state, JobState::Finished);
        assert!(parse_scontrol("garbage").is_none());
    }
}
