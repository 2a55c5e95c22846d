//! PBS (PBS Pro / OpenPBS): `qsub` to submit, `qstat -f -F json -x` for the state (falling back to
//! the text of `qstat -f` where `-F json` is unknown, e.g. Torque or Slurm's `slurm-wlm-torque`
//! wrappers), `qdel` to cancel.

use super::scheduler::{JobFiles, JobState, Reported, Scheduler, SchedulerError, SchedulerKind, one_line, run_tool};

/// PBS Pro / OpenPBS (and Torque-style `qsub`/`qstat`/`qdel`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pbs;

impl Scheduler for Pbs {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Pbs
    }

    fn builtin_template(&self) -> &'static str {
        include_str!("../templates/pbs.sh.j2")
    }

    fn directive_prefix(&self) -> &'static str {
        "#PBS"
    }

    fn default_launcher(&self) -> &'static str {
        "mpiexec"
    }

    /// `"$PBS_NODEFILE"`: one line per rank (the job script makes one under Slurm's wrappers).
    fn hostfile(&self) -> Option<&'static str> {
        Some("\"$PBS_NODEFILE\"")
    }

    /// `qsub -o OUT -e ERR SCRIPT`: `-o/-e` repeat the script's `#PBS -o/-e` on the command line,
    /// because Slurm's qsub wrapper ignores them in the script (PBS Pro honours both).
    fn submit_program(&self) -> &'static str {
        "qsub"
    }

    fn submit_argv(&self, files: JobFiles<'_>) -> Vec<String> {
        vec![
            "qsub".into(),
            "-o".into(),
            files.stdout.display().to_string(),
            "-e".into(),
            files.stderr.display().to_string(),
            files.script.display().to_string(),
        ]
    }

    /// The whole first line `qsub` prints (`1234.server` on PBS Pro).
    fn parse_job_id(&self, stdout: &str) -> Option<String> {
        let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
        (!line.contains(char::is_whitespace)).then(|| line.to_string())
    }

    /// `qdel ID`.
    fn cancel_argv(&self, job_id: &str) -> Vec<String> {
        vec!["qdel".into(), job_id.into()]
    }

    /// From `qstat -f -F json -x ID`, or the text of `qstat -f ID` where there is no JSON.
    fn status(&self, job_id: &str) -> Result<Option<Reported>, SchedulerError> {
        query(job_id)
    }
}

/// Maps a PBS `job_state` (and `Exit_status`, when finished) to ours.
pub(crate) fn map_state(state: &str, exit_status: Option<i64>) -> JobState {
    match state {
        "Q" | "H" | "W" | "T" | "M" => JobState::Queued,
        "R" | "E" | "S" | "U" | "B" => JobState::Running,
        "F" | "X" => match exit_status {
            Some(0) => JobState::Finished,
            Some(_) => JobState::Failed,
            None => JobState::Ended,
        },
        // Torque (and Slurm's wrappers): completed, whether it succeeded, failed or was deleted.
        "C" => JobState::Ended,
        _ => JobState::Unknown,
    }
}

fn reported(state: &str, exit_status: Option<i64>, comment: Option<&str>) -> Reported {
    let mut detail = format!("job_state={}", state);
    if let Some(e) = exit_status {
        detail.push_str(&format!(" Exit_status={}", e));
    }
    let mut mapped = map_state(state, exit_status);
    if mapped == JobState::Queued
        && let Some(c) = comment.map(str::trim).filter(|c| !c.is_empty())
    {
        let (s, words) = queued_comment(c);
        mapped = s;
        detail = format!("{}; {}", words, detail);
    }
    Reported { state: mapped, detail, exit_status }
}

/// Says in words why a queued job waits, from the scheduler's `comment`: PBS Pro writes
/// `Can Never Run: WHY` for a job that asks for more than the queue or server can ever give
/// ([`JobState::Stuck`]), and `Not Running: WHY` for an ordinary wait.
pub(crate) fn queued_comment(comment: &str) -> (JobState, String) {
    let after = |prefix: &str| {
        comment
            .get(..prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(prefix))
            .map(|_| comment[prefix.len()..].trim().to_string())
    };
    if let Some(why) = after("Can Never Run:") {
        return (
            JobState::Stuck,
            format!(
                "can never start: {}; cancel it (taps cancel RUN_DIR) and submit again asking for less (fewer \
                 --nodes or --ranks-per-node, a shorter --walltime) or to another --queue",
                why
            ),
        );
    }
    match after("Not Running:") {
        Some(why) => (JobState::Queued, format!("waiting: {}", why)),
        None => (JobState::Queued, format!("waiting: {}", comment)),
    }
}

/// Reads `qstat -f -F json` output; `None` if the job is not in it.
pub(crate) fn parse_json(text: &str, job_id: &str) -> Result<Option<Reported>, SchedulerError> {
    let query = |m: String| SchedulerError::Query(m);
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| query(format!("cannot read the JSON of qstat -f -F json: {}", e)))?;
    let Some(jobs) = v.get("Jobs").and_then(|j| j.as_object()) else { return Ok(None) };
    // PBS may print the id with a longer server name than qsub did.
    let job = jobs.get(job_id).or_else(|| {
        let short = job_id.split('.').next().unwrap_or(job_id);
        jobs.iter().find(|(k, _)| k.split('.').next() == Some(short)).map(|(_, j)| j)
    });
    let Some(job) = job else { return Ok(None) };
    let state =
        job.get("job_state").and_then(|s| s.as_str()).ok_or_else(|| query("qstat JSON has no job_state".into()))?;
    let comment = job.get("comment").and_then(|c| c.as_str());
    Ok(Some(reported(state, job.get("Exit_status").and_then(|e| e.as_i64()), comment)))
}

/// Reads the `key = value` text of `qstat -f`.
pub(crate) fn parse_text(text: &str) -> Option<Reported> {
    let field = |k: &str| {
        text.lines().find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == k).then(|| value.trim().to_string())
        })
    };
    let state = field("job_state")?;
    Some(reported(&state, field("Exit_status").and_then(|e| e.parse().ok()), field("comment").as_deref()))
}

fn unknown_job(code: Option<i32>, msg: &str) -> bool {
    code == Some(153) || msg.contains("Unknown Job Id")
}

/// The job's state as PBS reports it; `None` if PBS does not know the id (any more).
fn query(job_id: &str) -> Result<Option<Reported>, SchedulerError> {
    let out = run_tool(&["qstat", "-f", "-F", "json", "-x", job_id], None)?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        return parse_json(&stdout, job_id);
    }
    if unknown_job(out.status.code(), &stderr) {
        return Ok(None);
    }
    // No JSON (Torque, Slurm's qstat wrapper): the text form.
    let out = run_tool(&["qstat", "-f", job_id], None)?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        return parse_text(&stdout).map(Some).ok_or_else(|| {
            SchedulerError::Query(format!(
                "cannot read job_state of job {} from qstat -f: {}",
                job_id,
                one_line("", &stdout)
            ))
        });
    }
    if unknown_job(out.status.code(), &stderr) {
        return Ok(None);
    }
    Err(SchedulerError::Query(format!("qstat -f {} failed: {}", job_id, one_line(&stderr, &stdout))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert_eq!(Pbs.parse_job_id("1234.pbs01\n").as_deref(), Some("1234.pbs01"));
        assert_eq!(Pbs.parse_job_id("7\n").as_deref(), Some("7"));
        assert_eq!(Pbs.parse_job_id(""), None);
    }

    #[test]
    fn states_from_json_and_text() {
        let json = r#"{"timestamp":1,"pbs_version":"2022.1.1","pbs_server":"pbs01",
            "Jobs":{"12.pbs01.cluster":{"Job_Name":"taps","job_state":"F","Exit_status":0}}}"#;
        let r = parse_json(json, "12.pbs01").unwrap().unwrap();
        assert_eq!((r.state, r.detail.as_str()), (JobState::Finished, "job_state=F Exit_status=0"));
        assert_eq!(parse_json(json, "13.pbs01").unwrap(), None);
        let failed = json.replace("\"Exit_status\":0", "\"Exit_status\":271");
        assert_eq!(parse_json(&failed, "12.pbs01.cluster").unwrap().unwrap().state, JobState::Failed);
        assert!(parse_json("not json", "1").is_err());
        let text = "Job Id:\t2\n\tJob_Name = x\n\tjob_state = C\n\tqueue = debug\n";
        assert_eq!(parse_text(text).unwrap().state, JobState::Ended);
        for (s, want) in [("Q", JobState::Queued), ("H", JobState::Queued), ("R", JobState::Running)] {
            assert_eq!(map_state(s, None), want);
        }
        assert_eq!(map_state("E", None), JobState::Running);
        assert_eq!(map_state("F", Some(1)), JobState::Failed);
    }

    #[test]
    fn scheduler_comments_say_why_a_job_waits() {
        let json = r#"{"Jobs":{"7.pbs01":{"job_state":"Q",
            "comment":"Can Never Run: Insufficient amount of queue resource: ncpus (R: 64 A: 32 T: 32)"}}}"#;
        let r = parse_json(json, "7.pbs01").unwrap().unwrap();
        assert_eq!(r.state, JobState::Stuck);
        assert!(
            r.detail.starts_with("can never start: Insufficient amount of queue resource: ncpus (R: 64 A: 32 T: 32); ")
                && r.detail.ends_with("; job_state=Q"),
            "{}",
            r.detail
        );
        let json = json.replace("Can Never Run", "Not Running");
        let r = parse_json(&json, "7.pbs01").unwrap().unwrap();
        assert_eq!(
            (r.state, r.detail.as_str()),
            (
                JobState::Queued,
                "waiting: Insufficient amount of queue resource: ncpus (R: 64 A: 32 T: 32); job_state=Q"
            )
        );
        // Only a queued job is stuck; a running one with an old comment runs.
        let json =
            r#"{"Jobs":{"7.pbs01":{"job_state":"R","comment":"Job run at Mon Dec 01 at 10:00 on (n1:ncpus=2)"}}}"#;
        assert_eq!(parse_json(json, "7.pbs01").unwrap().unwrap().detail, "job_state=R");
        let text = "Job Id: 2\n\tjob_state = Q\n\tcomment = Can Never Run: Job exceeds queue resource limits\n";
        assert_eq!(parse_text(text).unwrap().state, JobState::Stuck);
    }
}
