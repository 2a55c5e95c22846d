//! A batch job of taps: the `[submit]` options ([`SubmitOptions`]), the job script rendered from
//! a template ([`JobSpec`], [`render`]) with the launch of a profile ([`super::profiles`]), the
//! files a job leaves in its run directory, and how a job's state follows from the scheduler's
//! report and those files ([`resolve`]). `taps submit`, `taps status` and `taps cancel` are in
//! the harness (`src/submit.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::profiles::{LaunchError, LaunchSpec, Profiles, STATUS_FILE};
use super::scheduler::{JobFiles, JobState, Reported, SchedulerKind};
use crate::options::Validate;
use crate::shell::quote;

/// The job script in the run directory.
pub const SCRIPT: &str = "job.sh";
/// What `taps submit` recorded about the job.
pub(crate) const RECORD: &str = "job.json";
/// The job's stdout.
pub(crate) const STDOUT: &str = "job.out";
/// The job's stderr.
pub(crate) const STDERR: &str = "job.err";
/// The exit code of the job's launch command, written by the job script when it ends.
pub(crate) const EXIT: &str = "job.exit";

crate::options! {
    /// `[submit]`: the batch job `taps submit` asks for. Every key is also a flag of `taps submit`.
    pub struct SubmitOptions {
        /// Batch scheduler: slurm (sbatch/scontrol/scancel) or pbs (qsub/qstat/qdel).
        #[required] scheduler: SchedulerKind = SchedulerKind::Slurm,
        /// Nodes to allocate.
        nodes: u32 = 1,
        /// Tasks per node: MPI ranks for the MPI executor (rank 0 drives), else cores per node.
        ranks_per_node: u32 = 1,
        /// Wall-clock limit, HH:MM:SS (hours may exceed 24) or D-HH:MM:SS.
        walltime: String = "01:00:00".into(),
        /// Slurm partition or PBS queue (none = the site's default).
        partition: Option<String> = None,
        /// Account / project charged for the job (none = your default).
        account: Option<String> = None,
        /// Slurm quality of service (PBS has none: use a queue or a directive).
        qos: Option<String> = None,
        /// Job name shown by squeue/qstat (none = taps-APP).
        job_name: Option<String> = None,
        /// Extra scheduler lines after the generated ones: "#SBATCH --exclusive" or just "--exclusive".
        directives: Vec<String> = Vec::new(),
        /// Environment modules to `module load`, in order, before anything else runs (names of letters, digits and ._+/@-, several per entry separated by spaces).
        modules: Vec<String> = Vec::new(),
        /// Shell lines run after the modules, before the launch (e.g. exports); job.sh must pass bash -n.
        setup: Vec<String> = Vec::new(),
        /// Job-script template (minijinja) to use instead of the built-in one.
        template: Option<PathBuf> = None,
        /// Launch profile that starts the MPI executor's ranks: mpirun, mpiexec, srun or one of your own in ~/.config/taps/launchers.toml (none = mpirun for slurm, mpiexec for pbs).
        launcher: Option<String> = None,
        /// Extra launcher arguments before the program, e.g. "--mpi=pmi2" for MPICH under srun.
        launcher_args: Vec<String> = Vec::new(),
        /// Directory with taps and taps-worker as the compute nodes see it (none = this taps's).
        taps_bin: Option<PathBuf> = None,
    }
}

/// Parses a walltime into seconds: `HH:MM:SS` (any number of hours), `MM:SS`, or `D-HH:MM:SS`.
pub(crate) fn parse_walltime(s: &str) -> Result<u64, String> {
    let bad = || format!("submit.walltime (--walltime): expected HH:MM:SS or D-HH:MM:SS, got {:?}", s);
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().map_err(|_| bad())?, r),
        None => (0, s),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.len() < 2
        || parts.len() > 3
        || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let nums: Vec<u64> = parts.iter().map(|p| p.parse::<u64>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let (h, m, sec) = if nums.len() == 3 { (nums[0], nums[1], nums[2]) } else { (0, nums[0], nums[1]) };
    if m >= 60 || sec >= 60 || (days > 0 && h >= 24) {
        return Err(bad());
    }
    let total = days
        .checked_mul(86400)
        .and_then(|d| d.checked_add(h.checked_mul(3600)?))
        .and_then(|t| t.checked_add(m * 60 + sec))
        .ok_or_else(bad)?;
    if total == 0 {
        return Err(format!("submit.walltime (--walltime) must be longer than 0, got {:?}", s));
    }
    Ok(total)
}

/// Formats seconds as `HH:MM:SS` (what both Slurm and PBS accept).
pub(crate) fn format_walltime(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Characters a one-word value (partition, account, qos, job name) may hold: exactly those a
/// shell takes literally, so the value means the same in a directive and anywhere in a script.
const WORD_CHARS: &str = "letters, digits and ._-+@%:=,/";

fn one_word(key: &str, flag: &str, v: &Option<String>) -> Result<(), String> {
    if let Some(v) = v
        && (v.is_empty() || quote(v) != *v)
    {
        return Err(format!("submit.{} ({}): expected one word of {}, got {:?}", key, flag, WORD_CHARS, v));
    }
    Ok(())
}

/// Checks a `--module` entry: one or more names separated by spaces, each of letters, digits and
/// `._+/@-` (`PrgEnv-gnu cray-hdf5`), so that `module load ENTRY` runs nothing else.
pub(crate) fn check_module(entry: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "._+/@-".contains(c);
    let names: Vec<&str> = entry.split(' ').filter(|n| !n.is_empty()).collect();
    if names.is_empty() || names.iter().any(|n| !n.chars().all(ok)) {
        return Err(format!(
            "submit.modules (--module): {:?} is not a list of module names (each of letters, digits and ._+/@-, \
             several separated by spaces)",
            entry
        ));
    }
    Ok(())
}

impl SubmitOptions {
    /// The directives as job-script lines (`--x` becomes `#SBATCH --x` / `#PBS --x`).
    pub(crate) fn directive_lines(&self) -> Result<Vec<String>, String> {
        let prefix = self.scheduler.get().directive_prefix();
        let other = match self.scheduler {
            SchedulerKind::Slurm => SchedulerKind::Pbs,
            SchedulerKind::Pbs => SchedulerKind::Slurm,
        };
        self.directives
            .iter()
            .map(|d| {
                let d = d.trim();
                let bad = |why: &str| format!("submit.directives (--directive): {:?} {}", d, why);
                if d.contains(['\n', '\r']) {
                    return Err(bad("spans several lines; give one directive per entry"));
                }
                if d.contains(|c: char| c.is_control() && c != '\t') {
                    return Err(bad("holds a control character"));
                }
                if d.starts_with('-') {
                    return Ok(format!("{} {}", prefix, d));
                }
                if !d.starts_with('#') {
                    return Err(bad(&format!(
                        "is not a directive: write \"{} --option\" or just \"--option\"",
                        prefix
                    )));
                }
                if d.starts_with(other.get().directive_prefix()) {
                    return Err(bad(&format!("is a {} directive but the scheduler is {}", other, self.scheduler)));
                }
                Ok(d.to_string())
            })
            .collect()
    }

    /// The launch profile for the MPI executor.
    pub fn launcher(&self) -> &str {
        self.launcher.as_deref().unwrap_or(self.scheduler.get().default_launcher())
    }
}

impl Validate for SubmitOptions {
    fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 {
            return Err("submit.nodes (--nodes) must be at least 1, got 0".into());
        }
        if self.ranks_per_node == 0 {
            return Err("submit.ranks_per_node (--ranks-per-node) must be at least 1, got 0".into());
        }
        parse_walltime(&self.walltime)?;
        one_word("partition", "--partition/--queue", &self.partition)?;
        one_word("account", "--account", &self.account)?;
        one_word("qos", "--qos", &self.qos)?;
        one_word("job_name", "--job-name", &self.job_name)?;
        if self.scheduler == SchedulerKind::Pbs {
            if let Some(q) = &self.qos {
                return Err(format!(
                    "submit.qos (--qos) {:?} is a Slurm option; PBS has no QoS: choose a queue (--queue) or add a directive",
                    q
                ));
            }
            if let Some(n) = &self.job_name
                && !n.starts_with(|c: char| c.is_ascii_alphabetic())
            {
                return Err(format!("submit.job_name (--job-name): PBS job names start with a letter, got {:?}", n));
            }
            if self.launcher.as_deref() == Some("srun") {
                return Err(
                    "submit.launcher (--launcher) srun needs Slurm; with scheduler pbs use mpiexec or mpirun".into()
                );
            }
        }
        if let Some(l) = &self.launcher {
            Profiles::load(None)
                .and_then(|p| p.find(l).map(|_| ()))
                .map_err(|e| format!("submit.launcher (--launcher): {}", e))?;
        }
        for m in &self.modules {
            check_module(m)?;
        }
        self.directive_lines()?;
        Ok(())
    }
}

/// Everything a job-script template sees.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobSpec {
    /// `slurm` or `pbs`.
    pub scheduler: SchedulerKind,
    /// Job name.
    pub job_name: String,
    /// Nodes.
    pub nodes: u32,
    /// Tasks (MPI ranks) per node.
    pub ranks_per_node: u32,
    /// nodes × ranks_per_node.
    pub ntasks: u64,
    /// `HH:MM:SS`.
    pub walltime: String,
    /// Partition / queue.
    pub partition: Option<String>,
    /// Account / project.
    pub account: Option<String>,
    /// Slurm QoS.
    pub qos: Option<String>,
    /// Directive lines, prefixed.
    pub directives: Vec<String>,
    /// Modules to load.
    pub modules: Vec<String>,
    /// Setup lines.
    pub setup: Vec<String>,
    /// The run directory (absolute).
    pub run_dir: String,
    /// `RUN/config.toml`.
    pub config: String,
    /// `RUN/job.out`.
    pub stdout: String,
    /// `RUN/job.err`.
    pub stderr: String,
    /// `RUN/job.exit`.
    pub exit_file: String,
    /// The app.
    pub app: String,
    /// The executor.
    pub executor: String,
    /// The executor is `mpi`: the job starts `ntasks` ranks of taps-worker (for a sweep: some
    /// cell runs on it, and starts its ranks itself).
    pub mpi: bool,
    /// The job runs `taps sweep` (`taps submit ... sweep`): `run_dir` is the sweep directory.
    pub sweep: bool,
    /// A directive asks Slurm for `--overcommit` (more tasks than cores): the allocation then
    /// asks for `--ntasks`, as Slurm refuses `--ntasks-per-node` above the core count.
    pub overcommit: bool,
    /// The launch profile of the MPI executor's ranks.
    pub launcher: String,
    /// Absolute path of `taps`.
    pub taps: String,
    /// Absolute path of `taps-worker`.
    pub taps_worker: String,
    /// Shell lines before the launch (MPI: the profile's environment, the root and
    /// oversubscription checks, `run.env_vars`, the blank status file of rank 0); may be empty.
    pub launch_setup: String,
    /// The launch command line, quoted for the shell.
    pub launch: String,
    /// Shell lines after `status=$?` (MPI: `$status` becomes rank 0's exit status, as mpirun
    /// with recovery exits 0 whatever the ranks return); may be empty.
    pub launch_status: String,
}

impl JobSpec {
    /// The job for `app` on `executor` with `opts` (checked again here), run in `run_dir`, with
    /// taps from `bin_dir`; with `mpi` (an executor whose run is an MPI job) the job starts the
    /// ranks through the launch profile, and they see the variables `env_vars`.
    pub fn new(
        opts: &SubmitOptions,
        app: &str,
        executor: &str,
        mpi: bool,
        run_dir: &Path,
        bin_dir: &Path,
        env_vars: &BTreeMap<String, String>,
    ) -> Result<JobSpec, JobError> {
        // Options built in code, not parsed, get the same checks: nothing unchecked reaches job.sh.
        opts.validate().map_err(JobError::Options)?;
        let s = |p: PathBuf| p.display().to_string();
        let scheduler = opts.scheduler.get();
        let launcher = opts.launcher().to_string();
        let taps = s(bin_dir.join("taps"));
        let config = s(run_dir.join("config.toml"));
        let run = s(run_dir.to_path_buf());
        let (launch_setup, launch, launch_status) = if mpi {
            let profiles = Profiles::load(None)?;
            let mut launcher_args = Vec::new();
            if let Some(h) = scheduler.hostfile()
                && launcher != "srun"
            {
                launcher_args.extend(["--hostfile".to_string(), h.to_string()]);
            }
            launcher_args.extend(opts.launcher_args.iter().cloned());
            let spec = LaunchSpec {
                ranks: u64::from(opts.nodes) * u64::from(opts.ranks_per_node),
                // `taps worker`: the ranks run the very taps that checked this job.
                worker: bin_dir.join("taps"),
                config: run_dir.join("config.toml"),
                run_dir: run_dir.to_path_buf(),
                status_file: run_dir.join(STATUS_FILE),
                launcher_args,
                env: env_vars.clone(),
                ..Default::default()
            };
            let raw: Vec<&str> = scheduler.hostfile().into_iter().collect();
            let l = profiles.find(&launcher)?.script(&spec, opts.ranks_per_node, &raw).map_err(|e| match e {
                LaunchError::BadProfile(m) => LaunchError::BadProfile(format!("launch profile {:?}: {}", launcher, m)),
                e => e,
            })?;
            (l.setup, l.command, l.status)
        } else {
            let argv = [taps.clone(), "run".into(), "-c".into(), config.clone(), "--run-dir".into(), run.clone()];
            (String::new(), argv.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "), String::new())
        };
        let directives = opts.directive_lines().map_err(JobError::Options)?;
        let overcommit = opts.scheduler == SchedulerKind::Slurm
            && directives.iter().any(|d| {
                d.strip_prefix("#SBATCH").is_some_and(|rest| {
                    rest.split_whitespace().any(|w| w == "--overcommit" || w == "-O" || w.starts_with("--overcommit="))
                })
            });
        Ok(JobSpec {
            scheduler: opts.scheduler,
            job_name: opts.job_name.clone().unwrap_or_else(|| format!("taps-{}", app)),
            nodes: opts.nodes,
            ranks_per_node: opts.ranks_per_node,
            ntasks: u64::from(opts.nodes) * u64::from(opts.ranks_per_node),
            walltime: format_walltime(parse_walltime(&opts.walltime).map_err(JobError::Options)?),
            partition: opts.partition.clone(),
            account: opts.account.clone(),
            qos: opts.qos.clone(),
            directives,
            modules: opts
                .modules
                .iter()
                .map(|m| m.split(' ').filter(|n| !n.is_empty()).collect::<Vec<_>>().join(" "))
                .collect(),
            setup: opts.setup.clone(),
            stdout: s(run_dir.join(STDOUT)),
            stderr: s(run_dir.join(STDERR)),
            exit_file: s(run_dir.join(EXIT)),
            run_dir: run,
            config,
            app: app.into(),
            executor: executor.into(),
            mpi,
            sweep: false,
            overcommit,
            launcher,
            taps_worker: s(bin_dir.join("taps-worker")),
            taps,
            launch_setup,
            launch,
            launch_status,
        })
    }

    /// The command that submits `script` (as `job.json` records it).
    pub(crate) fn submit_argv(&self, script: &Path) -> Vec<String> {
        let files = JobFiles { script, stdout: Path::new(&self.stdout), stderr: Path::new(&self.stderr) };
        self.scheduler.get().submit_argv(files)
    }
}

/// Renders a job-script template (`name` is shown in errors).
pub fn render(spec: &JobSpec, name: &str, template: &str) -> Result<String, JobError> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter("shell", |s: String| quote(&s));
    let err = |e: minijinja::Error| {
        let mut msg = format!("job-script template {}: {}", name, e.kind());
        if let Some(d) = e.detail() {
            let _ = write!(msg, ": {}", d);
        }
        if let Some(l) = e.line() {
            let _ = write!(msg, " (line {})", l);
        }
        JobError::Template(msg)
    };
    let tmpl = env.template_from_named_str(name, template).map_err(err)?;
    tmpl.render(spec).map_err(err)
}

/// What `bash -n` says about a script: `None` when it parses without a warning, or when there
/// is no bash on this machine to ask.
fn bash_n(script: &str) -> Option<String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // A write error means bash exited early; its status says why.
    let _ = child.stdin.take().expect("piped stdin").write_all(script.as_bytes());
    let out = child.wait_with_output().ok()?;
    let said = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && said.trim().is_empty() {
        return None;
    }
    let said: Vec<&str> = said.lines().map(|l| l.trim().trim_start_matches("bash: ")).collect();
    Some(if said.is_empty() { format!("exit status {}", out.status) } else { said.join(" / ") })
}

/// Checks a rendered job script with `bash -n`, so that a script the shell cannot parse (a
/// `--setup` line with an open quote, an unterminated here-document that would swallow the
/// launch, a broken template) is refused now rather than failing when the job starts. Names the
/// first `setup` line that does not parse on its own.
pub(crate) fn check_script_syntax(script: &str, setup: &[String]) -> Result<(), JobError> {
    let Some(said) = bash_n(script) else { return Ok(()) };
    if let Some((line, why)) = setup.iter().find_map(|l| Some((l, bash_n(l)?))) {
        return Err(JobError::Script(format!(
            "submit.setup (--setup): {:?} is not a whole shell line: bash -n says {}",
            line, why
        )));
    }
    Err(JobError::Script(format!(
        "the job script would not run: bash -n says {}; check the --setup lines and the --template",
        said
    )))
}

/// The template of `opts` and its name for errors: the file of `--template`, or the scheduler's.
pub fn template(opts: &SubmitOptions) -> Result<(String, String), JobError> {
    match &opts.template {
        Some(p) => std::fs::read_to_string(p).map(|t| (p.display().to_string(), t)).map_err(|e| {
            JobError::Options(format!("submit.template (--template): cannot read {}: {}", p.display(), e))
        }),
        None => Ok((format!("built-in {}", opts.scheduler), opts.scheduler.get().builtin_template().to_string())),
    }
}

/// What is wrong with a job before it is submitted: each is bad input.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A `[submit]` option (the message names it).
    #[error("{0}")]
    Options(String),
    /// The launch profile of the MPI executor.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The template does not render.
    #[error("{0}")]
    Template(String),
    /// The rendered script does not parse (`bash -n`).
    #[error("{0}")]
    Script(String),
}

/// The exit code the job script wrote into `RUN/job.exit`, if it has.
pub(crate) fn exit_code(run_dir: &Path) -> Option<i64> {
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

/// Why the run of a job went wrong, in its own words: the last ERROR line of the run's log in
/// the job's stdout (such as `The run lost 1 worker rank(s): …`), else the last `taps: …` line of
/// its stderr (a sweep's `taps: sweep: 1 cell(s) failed; …`, an error before the run), if any.
pub fn run_error(run_dir: &Path) -> Option<String> {
    let read = |f: &str| std::fs::read_to_string(run_dir.join(f)).unwrap_or_default();
    let out = read(STDOUT);
    let logged = out.lines().rev().find_map(|l| l.split_once("ERROR (taps.run) > ").map(|(_, m)| m.trim().to_string()));
    logged.or_else(|| {
        let err = read(STDERR);
        err.lines().rev().find_map(|l| l.strip_prefix("taps: ").map(|m| m.trim().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_run_error_is_its_logged_error_else_its_last_taps_line_on_stderr() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run_error(dir.path()), None);
        std::fs::write(dir.path().join(STDERR), "noise\ntaps: sweep: 1 cell(s) failed; rerun …\nmore noise\n").unwrap();
        assert_eq!(run_error(dir.path()).as_deref(), Some("sweep: 1 cell(s) failed; rerun …"));
        std::fs::write(dir.path().join(STDOUT), "[t] ERROR (taps.run) > The run lost 1 worker rank(s): x\n[t] INFO\n")
            .unwrap();
        assert_eq!(run_error(dir.path()).as_deref(), Some("The run lost 1 worker rank(s): x"));
    }

    #[test]
    fn walltimes() {
        assert_eq!(parse_walltime("01:00:00"), Ok(3600));
        assert_eq!(parse_walltime("48:00:00"), Ok(48 * 3600));
        assert_eq!(parse_walltime("1-02:03:04"), Ok(86400 + 2 * 3600 + 3 * 60 + 4));
        assert_eq!(parse_walltime("10:00"), Ok(600));
        for bad in
            ["", "1h", "00:60:00", "00:00:60", "1-25:00:00", "a:b:c", "1:2:3:4", "-01:00:00", "00:00:00", "1:-1:00"]
        {
            assert!(parse_walltime(bad).is_err(), "{:?} should be rejected", bad);
        }
        assert_eq!(format_walltime(26 * 3600 + 61), "26:01:01");
    }

    #[test]
    fn module_entries_are_names_only() {
        for ok in ["openmpi/4.1", "PrgEnv-gnu cray-hdf5", "gcc@12.2.0+cuda", "a  b", "py3.11_x"] {
            assert_eq!(check_module(ok), Ok(()), "{}", ok);
        }
        for bad in ["", " ", "foo; touch x", "$(touch x)", "`x`", "a&&b", "a|b", "a>b", "a\tb", "a\nb", "'a'", "a*"] {
            assert!(check_module(bad).unwrap_err().contains("letters, digits and ._+/@-"), "{:?}", bad);
        }
        // Options built in code are checked before they are rendered.
        let opts = SubmitOptions { modules: vec!["x; touch canary".into()], ..Default::default() };
        let e =
            JobSpec::new(&opts, "synthetic", "thread-pool", false, Path::new("/r"), Path::new("/b"), &BTreeMap::new())
                .unwrap_err()
                .to_string();
        assert!(e.contains("submit.modules"), "{}", e);
        let opts = SubmitOptions { job_name: Some("a|b".into()), ..Default::default() };
        assert!(
            JobSpec::new(&opts, "synthetic", "thread-pool", false, Path::new("/r"), Path::new("/b"), &BTreeMap::new())
                .is_err()
        );
    }

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
