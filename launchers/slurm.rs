//! Slurm: `sbatch --test-only` to ask whether a job could ever start, `sbatch --parsable` to
//! submit, `scontrol -o show job` for the state (no `sacct`: clusters without accounting have
//! none), `scancel` to cancel, `sinfo` for the sizes of a partition's nodes.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::scheduler::{
    JobFiles, JobState, Reported, Scheduler, SchedulerError, SchedulerKind, missing_tool, one_line, run_tool,
};

/// Slurm.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slurm;

impl Scheduler for Slurm {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Slurm
    }

    fn builtin_template(&self) -> &'static str {
        include_str!("../templates/slurm.sh.j2")
    }

    fn directive_prefix(&self) -> &'static str {
        "#SBATCH"
    }

    /// mpirun: Slurm's PMIx plugin ends the whole step when one rank dies, so under srun a lost
    /// rank ends the job; mpirun with recovery lets the other ranks finish the work.
    fn default_launcher(&self) -> &'static str {
        "mpirun"
    }

    /// `sbatch --parsable SCRIPT` (the `#SBATCH` lines carry every option).
    fn submit_program(&self) -> &'static str {
        "sbatch"
    }

    fn submit_argv(&self, files: JobFiles<'_>) -> Vec<String> {
        vec!["sbatch".into(), "--parsable".into(), files.script.display().to_string()]
    }

    /// `ID` or `ID;CLUSTER`.
    fn parse_job_id(&self, stdout: &str) -> Option<String> {
        let line = stdout.lines().map(str::trim).find(|l| !l.is_empty())?;
        let id = line.split(';').next()?.trim();
        (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '_')).then(|| id.to_string())
    }

    /// `scancel ID`.
    fn cancel_argv(&self, job_id: &str) -> Vec<String> {
        vec!["scancel".into(), job_id.into()]
    }

    /// From `scontrol -o show job ID`.
    fn status(&self, job_id: &str) -> Result<Option<Reported>, SchedulerError> {
        let out = run_tool(&["scontrol", "-o", "show", "job", job_id], None)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if stderr.contains("Invalid job id") {
                return Ok(None);
            }
            return Err(SchedulerError::Query(format!(
                "scontrol show job {} failed: {}",
                job_id,
                one_line(&stderr, &stdout)
            )));
        }
        let line = stdout.lines().next().unwrap_or("");
        parse_scontrol(line).map(Some).ok_or_else(|| {
            SchedulerError::Query(format!("cannot read the state of job {} from scontrol: {:?}", job_id, line))
        })
    }
}

/// Why `sbatch --test-only` did not accept a job script.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Refusal {
    /// Slurm would never start the job as asked (its words).
    Rejected(String),
    /// Slurm could not be asked (sbatch missing, controller unreachable).
    Unreachable(String),
}

/// Asks Slurm whether the job script `script` could run, submitting nothing
/// (`sbatch --test-only`, script on stdin). Slurm accepts, then leaves pending for ever, a job
/// asking for more than its partition has; `--test-only` refuses it.
pub(crate) fn test_only(script: &str) -> Result<(), Refusal> {
    let child = Command::new("sbatch")
        .arg("--test-only")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Refusal::Unreachable(missing_tool("sbatch")),
            _ => Refusal::Unreachable(format!("cannot run sbatch --test-only: {}", e)),
        });
    let mut child = child?;
    // A write error means sbatch exited early; its status and stderr say why.
    let _ = child.stdin.take().expect("piped stdin").write_all(script.as_bytes());
    let out = child.wait_with_output().map_err(|e| Refusal::Unreachable(format!("sbatch --test-only: {}", e)))?;
    if out.status.success() {
        return Ok(());
    }
    let msg = one_line(&String::from_utf8_lossy(&out.stderr), &String::from_utf8_lossy(&out.stdout));
    let msg = if msg.is_empty() { format!("sbatch --test-only failed ({})", out.status) } else { msg };
    if ["Unable to contact", "Socket timed out", "Zero Bytes were transmitted", "Connection refused"]
        .iter()
        .any(|m| msg.contains(m))
    {
        Err(Refusal::Unreachable(msg))
    } else {
        Err(Refusal::Rejected(msg))
    }
}

/// Nodes of one size in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSize {
    /// How many nodes have this size.
    pub count: u32,
    /// CPUs per node.
    pub cpus: u32,
    /// Memory per node in MB (Slurm's `RealMemory`).
    pub memory_mb: u64,
}

/// A partition and the sizes of its nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// The partition's name.
    pub name: String,
    /// Its nodes, grouped by size.
    pub nodes: Vec<NodeSize>,
}

impl Partition {
    /// Nodes in all.
    pub(crate) fn node_count(&self) -> u32 {
        self.nodes.iter().map(|n| n.count).sum()
    }

    /// The most CPUs any node has.
    pub(crate) fn max_cpus(&self) -> u32 {
        self.nodes.iter().map(|n| n.cpus).max().unwrap_or(0)
    }

    /// The smallest node: fewest CPUs, least memory (each over all nodes).
    pub fn smallest(&self) -> Option<NodeSize> {
        let cpus = self.nodes.iter().map(|n| n.cpus).min()?;
        let memory_mb = self.nodes.iter().map(|n| n.memory_mb).min()?;
        Some(NodeSize { count: self.node_count(), cpus, memory_mb })
    }

    /// One line: `debug: 1 node of 2 CPUs and 22899 MB`.
    pub fn describe(&self) -> String {
        let sizes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{} node{} of {} CPUs and {} MB",
                    n.count,
                    if n.count == 1 { "" } else { "s" },
                    n.cpus,
                    n.memory_mb
                )
            })
            .collect();
        format!("partition {}: {}", self.name, sizes.join(", "))
    }
}

/// Parses `sinfo -h -o '%P|%D|%c|%m'`: the named partition, or the default one (marked `*`).
pub fn parse_sinfo(text: &str, partition: Option<&str>) -> Option<Partition> {
    let mut found: Option<Partition> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split('|').collect();
        let [name, count, cpus, mem] = f[..] else { continue };
        let (name, default) = match name.strip_suffix('*') {
            Some(n) => (n, true),
            None => (name, false),
        };
        if partition.map_or(!default, |p| p != name) {
            continue;
        }
        // `2+` means "2 or more" where nodes differ: the lower bound.
        let num = |s: &str| s.trim_end_matches('+').parse::<u64>().ok();
        let (Some(count), Some(cpus), Some(memory_mb)) = (num(count), num(cpus), num(mem)) else { continue };
        let size = NodeSize { count: count as u32, cpus: cpus as u32, memory_mb };
        let p = found.get_or_insert_with(|| Partition { name: name.to_string(), nodes: Vec::new() });
        match p.nodes.iter_mut().find(|n| n.cpus == size.cpus && n.memory_mb == size.memory_mb) {
            Some(n) => n.count += size.count,
            None => p.nodes.push(size),
        }
    }
    found
}

/// The sizes of the nodes of `partition` (None: the default partition), from `sinfo`.
pub(crate) fn partition_nodes(partition: Option<&str>) -> Result<Partition, SchedulerError> {
    let mut argv = vec!["sinfo", "-h", "-o", "%P|%D|%c|%m"];
    if let Some(p) = partition {
        argv.extend(["-p", p]);
    }
    let out = run_tool(&argv, None)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(SchedulerError::Query(format!(
            "sinfo failed: {}",
            one_line(&String::from_utf8_lossy(&out.stderr), &stdout)
        )));
    }
    parse_sinfo(&stdout, partition).ok_or_else(|| {
        SchedulerError::Query(match partition {
            Some(p) => format!("Slurm has no partition {:?} (sinfo -s lists them)", p),
            None => "Slurm has no default partition: choose one with --partition (sinfo -s lists them)".to_string(),
        })
    })
}

/// Maps a Slurm `JobState` to ours.
pub(crate) fn map_state(state: &str) -> JobState {
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
pub(crate) fn parse_scontrol(line: &str) -> Option<Reported> {
    let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
    let state = field("JobState=")?;
    let mut detail = format!("JobState={}", state);
    let exit = field("ExitCode=");
    let mut mapped = map_state(&state);
    match mapped {
        JobState::Queued => {
            if let Some(r) = field("Reason=") {
                detail.push_str(&format!(" Reason={}", r));
                if state == "PENDING" {
                    let (s, words) = pending_reason(&r);
                    mapped = s;
                    detail = format!("{}; {}", words, detail);
                }
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
    Some(Reported { state: mapped, detail, exit_status })
}

/// What to do about a job that can never start.
const RESUBMIT: &str = "cancel it (taps cancel RUN_DIR) and submit again";

/// Says in words why a job is pending: [`JobState::Stuck`] with why and what to do for the
/// reasons that never resolve by waiting (squeue(1), "JOB REASON CODES"), else
/// [`JobState::Queued`] with what it waits for. `reason` is scontrol's, e.g. `Resources` or
/// `ReqNodeNotAvail,_UnavailableNodes:n1`.
pub(crate) fn pending_reason(reason: &str) -> (JobState, String) {
    let code = reason.split([',', ':', '(']).next().unwrap_or(reason);
    let stuck = |why: &str, todo: &str| (JobState::Stuck, format!("can never start: {}; {}", why, todo));
    let queued = |what: &str| (JobState::Queued, format!("waiting for {}", what));
    match code {
        "PartitionConfig" => stuck(
            "it asks for more CPUs, memory or other resources per node than the partition's nodes have",
            &format!(
                "{} with fewer ranks per node (--ranks-per-node, see sinfo -o '%P %c %m'), or with --directive \
                 --overcommit to run more ranks than cores",
                RESUBMIT
            ),
        ),
        "PartitionNodeLimit" => stuck(
            "it asks for more nodes than the partition allows (or its nodes are down or drained)",
            &format!("{} with fewer --nodes, or to another --partition", RESUBMIT),
        ),
        "PartitionTimeLimit" => stuck(
            "its walltime exceeds the partition's time limit",
            &format!("{} with a shorter --walltime (sinfo -o '%P %l' shows the limits)", RESUBMIT),
        ),
        "BadConstraints" => stuck(
            "its constraints (features, GRES, --constraint) can never be met",
            &format!("{} without the directives that ask for them", RESUBMIT),
        ),
        "ReqNodeNotAvail" | "NodeDown" => stuck(
            "nodes it needs are down, drained or reserved",
            &format!("ask the site to return them to service, or {} to another --partition", RESUBMIT),
        ),
        "PartitionDown" | "PartitionInactive" => {
            stuck("its partition is not running jobs", &format!("ask the site, or {} to another --partition", RESUBMIT))
        }
        "InvalidAccount" | "InvalidQOS" => stuck(
            "its account or QOS is not valid",
            &format!("{} with a valid --account/--qos (sacctmgr show assoc user=$USER)", RESUBMIT),
        ),
        "DependencyNeverSatisfied" => stuck(
            "a job it depends on ended in a way that never satisfies the dependency",
            "cancel it (taps cancel RUN_DIR)",
        ),
        "JobHeldAdmin" => stuck("an administrator holds it", "ask the site why, or cancel it (taps cancel RUN_DIR)"),
        "JobLaunchFailure" | "SystemFailure" | "FrontEndDown" => {
            stuck("Slurm failed to launch it", &format!("ask the site, or {}", RESUBMIT))
        }
        c if (c.starts_with("AssocMax") || c.starts_with("QOSMax")) && c.contains("PerJob")
            || c.starts_with("QOSMin") =>
        {
            stuck(
                "it asks for more than a per-job limit of its account or QOS allows",
                &format!("{} asking for less (nodes, ranks, walltime), or with another --qos/--account", RESUBMIT),
            )
        }
        "Priority" => queued("jobs of higher priority to start first"),
        "Resources" => queued("nodes to become free"),
        "None" | "WaitingForScheduling" | "" => queued("the scheduler"),
        "BeginTime" => queued("its start time"),
        "Dependency" => queued("the jobs it depends on"),
        "JobHeldUser" => queued("a release: it is held (scontrol release JOBID)"),
        "Licenses" => queued("a license"),
        "Reservation" => queued("its reservation"),
        "Prolog" | "Cleaning" | "Configuring" => queued("its nodes to be prepared"),
        c if c.starts_with("Assoc") || c.starts_with("QOS") => {
            queued("running jobs of its account or QOS to free their share")
        }
        c => queued(&format!("Slurm ({})", c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_from_parsable_output() {
        assert_eq!(Slurm.parse_job_id("42\n").as_deref(), Some("42"));
        assert_eq!(Slurm.parse_job_id("42;cluster\n").as_deref(), Some("42"));
        assert_eq!(Slurm.parse_job_id("\n"), None);
        assert_eq!(Slurm.parse_job_id("Submitted batch job 42"), None);
    }

    #[test]
    fn states_from_scontrol() {
        let r = parse_scontrol("JobId=3 JobName=x JobState=PENDING Reason=JobHeldUser Dependency=(null) ExitCode=0:0")
            .unwrap();
        assert_eq!(
            (r.state, r.detail.as_str()),
            (
                JobState::Queued,
                "waiting for a release: it is held (scontrol release JOBID); JobState=PENDING Reason=JobHeldUser"
            )
        );
        let r = parse_scontrol("JobId=3 JobState=PENDING Reason=PartitionConfig ExitCode=0:0").unwrap();
        assert_eq!(r.state, JobState::Stuck);
        assert!(
            r.detail.starts_with("can never start: it asks for more CPUs")
                && r.detail.ends_with("; JobState=PENDING Reason=PartitionConfig"),
            "{}",
            r.detail
        );
        let r = parse_scontrol("JobId=3 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0").unwrap();
        assert_eq!((r.state, r.exit_status), (JobState::Failed, Some(3)));
        assert_eq!(r.detail, "JobState=FAILED ExitCode=3:0");
        assert_eq!(parse_scontrol("JobId=3 JobState=TIMEOUT ExitCode=0:15").unwrap().state, JobState::Failed);
        assert_eq!(parse_scontrol("JobId=3 JobState=CANCELLED ExitCode=0:15").unwrap().state, JobState::Cancelled);
        assert_eq!(parse_scontrol("JobId=3 JobState=RUNNING").unwrap().state, JobState::Running);
        assert_eq!(parse_scontrol("JobId=3 JobState=COMPLETED ExitCode=0:0").unwrap().state, JobState::Finished);
        assert!(parse_scontrol("garbage").is_none());
    }

    #[test]
    fn pending_reasons_in_words() {
        for r in [
            "PartitionConfig",
            "PartitionNodeLimit",
            "PartitionTimeLimit",
            "BadConstraints",
            "ReqNodeNotAvail,_UnavailableNodes:n[1-2]",
            "NodeDown",
            "PartitionDown",
            "InvalidAccount",
            "InvalidQOS",
            "DependencyNeverSatisfied",
            "JobHeldAdmin",
            "QOSMaxCpuPerJobLimit",
            "AssocMaxWallDurationPerJobLimit",
            "QOSMinGRES",
        ] {
            let (state, words) = pending_reason(r);
            assert_eq!(state, JobState::Stuck, "{}", r);
            assert!(words.starts_with("can never start: ") && words.contains("; "), "{}: {}", r, words);
        }
        assert!(pending_reason("PartitionConfig").1.contains("--overcommit"));
        assert!(pending_reason("PartitionNodeLimit").1.contains("fewer --nodes"));
        assert!(pending_reason("PartitionTimeLimit").1.contains("shorter --walltime"));
        for (r, want) in [
            ("Priority", "waiting for jobs of higher priority to start first"),
            ("Resources", "waiting for nodes to become free"),
            ("None", "waiting for the scheduler"),
            ("BeginTime", "waiting for its start time"),
            ("QOSMaxJobsPerUserLimit", "waiting for running jobs of its account or QOS to free their share"),
            ("AssocGrpCpuLimit", "waiting for running jobs of its account or QOS to free their share"),
            ("SomethingNew", "waiting for Slurm (SomethingNew)"),
        ] {
            assert_eq!(pending_reason(r), (JobState::Queued, want.to_string()), "{}", r);
        }
    }

    #[test]
    fn partitions_from_sinfo() {
        let text = "debug*|1|2|22899\nbig|2|64|256000\nbig|1|128+|512000\nbig|1|64|256000\n";
        let d = parse_sinfo(text, None).unwrap();
        assert_eq!(
            d,
            Partition { name: "debug".into(), nodes: vec![NodeSize { count: 1, cpus: 2, memory_mb: 22899 }] }
        );
        assert_eq!(d.describe(), "partition debug: 1 node of 2 CPUs and 22899 MB");
        let b = parse_sinfo(text, Some("big")).unwrap();
        assert_eq!((b.node_count(), b.max_cpus()), (4, 128));
        assert_eq!(b.smallest(), Some(NodeSize { count: 4, cpus: 64, memory_mb: 256000 }));
        assert_eq!(b.describe(), "partition big: 3 nodes of 64 CPUs and 256000 MB, 1 node of 128 CPUs and 512000 MB");
        assert_eq!(parse_sinfo(text, Some("nosuch")), None);
        assert_eq!(parse_sinfo("big|1|2|3\n", None), None, "no default partition");
    }
}
