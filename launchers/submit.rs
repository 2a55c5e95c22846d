//! `taps submit`: a benchmark run as a Slurm or PBS batch job (`taps status` and `taps cancel`
//! are in [`super::job`]).
//!
//! `taps submit` checks the benchmark configuration exactly as `taps run` does, creates the run
//! directory at once, writes `config.toml` and the job script `job.sh` into it (rendered from
//! `templates/slurm.sh.j2` or `templates/pbs.sh.j2`, or a template of the user's), submits it and
//! records the job in `job.json`. The job runs `taps run -c RUN/config.toml --run-dir RUN` on its
//! first node, or, for the MPI executor, starts `nodes × ranks_per_node` ranks of `taps worker`
//! with a launch profile ([`super::profile`]); rank 0 writes the results into the same directory.
//! The job's stdout and stderr go to `job.out` and `job.err` there, and its exit code to `job.exit`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::job::{JobRecord, missing_tool, now, run_tool};
use super::profile::{LaunchSpec, Launcher, shell_join, shell_quote};
use super::slurm::{NodeSize, Refusal};
use crate::cli::usage_error;
use crate::options::{OptValue, Options, Validate};

/// The job script in the run directory.
pub const SCRIPT: &str = "job.sh";
/// What `taps submit` recorded about the job.
pub const RECORD: &str = "job.json";
/// The job's stdout.
pub const STDOUT: &str = "job.out";
/// The job's stderr.
pub const STDERR: &str = "job.err";
/// The exit code of the job's launch command, written by the job script when it ends.
pub const EXIT: &str = "job.exit";

crate::opt_enum! {
    /// A batch scheduler.
    pub enum Scheduler {
        /// Slurm: sbatch, scontrol, scancel.
        Slurm = "slurm",
        /// PBS Pro / OpenPBS: qsub, qstat, qdel.
        Pbs = "pbs",
    }
}

impl Scheduler {
    /// The built-in job-script template.
    pub fn builtin_template(&self) -> &'static str {
        match self {
            Scheduler::Slurm => include_str!("../templates/slurm.sh.j2"),
            Scheduler::Pbs => include_str!("../templates/pbs.sh.j2"),
        }
    }

    /// The launcher used when none is configured.
    pub fn default_launcher(&self) -> Launcher {
        match self {
            Scheduler::Slurm => Launcher::Srun,
            Scheduler::Pbs => Launcher::Mpiexec,
        }
    }

    /// The directive prefix of job-script lines: `#SBATCH` or `#PBS`.
    pub fn directive_prefix(&self) -> &'static str {
        match self {
            Scheduler::Slurm => "#SBATCH",
            Scheduler::Pbs => "#PBS",
        }
    }

    /// The command that submits a job.
    pub fn submit_program(&self) -> &'static str {
        match self {
            Scheduler::Slurm => "sbatch",
            Scheduler::Pbs => "qsub",
        }
    }
}

crate::options! {
    /// `[submit]`: the batch job `taps submit` asks for. Every key is also a flag of `taps submit`.
    pub struct SubmitOptions {
        /// Batch scheduler: slurm (sbatch/scontrol/scancel) or pbs (qsub/qstat/qdel).
        #[required] scheduler: Scheduler = Scheduler::Slurm,
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
        /// How the MPI executor's ranks start: srun, mpirun or mpiexec (none = srun / mpiexec for pbs).
        launcher: Option<Launcher> = None,
        /// Extra launcher arguments before the program, e.g. "--mpi=pmi2" for MPICH under srun.
        launcher_args: Vec<String> = Vec::new(),
        /// Directory with taps and taps-worker as the compute nodes see it (none = this taps's).
        taps_bin: Option<PathBuf> = None,
    }
}

/// Parses a walltime into seconds: `HH:MM:SS` (any number of hours), `MM:SS`, or `D-HH:MM:SS`.
pub fn parse_walltime(s: &str) -> Result<u64, String> {
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
pub fn format_walltime(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Characters a one-word value (partition, account, qos, job name) may hold: exactly those a
/// shell takes literally, so the value means the same in a directive and anywhere in a script.
const WORD_CHARS: &str = "letters, digits and ._-+@%:=,/";

fn one_word(key: &str, flag: &str, v: &Option<String>) -> Result<(), String> {
    if let Some(v) = v
        && (v.is_empty() || shell_quote(v) != *v)
    {
        return Err(format!("submit.{} ({}): expected one word of {}, got {:?}", key, flag, WORD_CHARS, v));
    }
    Ok(())
}

/// Checks a `--module` entry: one or more names separated by spaces, each of letters, digits and
/// `._+/@-` (`PrgEnv-gnu cray-hdf5`), so that `module load ENTRY` runs nothing else.
pub fn check_module(entry: &str) -> Result<(), String> {
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
    pub fn directive_lines(&self) -> Result<Vec<String>, String> {
        let prefix = self.scheduler.directive_prefix();
        let other = match self.scheduler {
            Scheduler::Slurm => Scheduler::Pbs,
            Scheduler::Pbs => Scheduler::Slurm,
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
                if d.starts_with(other.directive_prefix()) {
                    return Err(bad(&format!("is a {} directive but the scheduler is {}", other, self.scheduler)));
                }
                Ok(d.to_string())
            })
            .collect()
    }

    /// The launcher for the MPI executor.
    pub fn launcher(&self) -> Launcher {
        self.launcher.unwrap_or(self.scheduler.default_launcher())
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
        if self.scheduler == Scheduler::Pbs {
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
            if self.launcher == Some(Launcher::Srun) {
                return Err(
                    "submit.launcher (--launcher) srun needs Slurm; with scheduler pbs use mpiexec or mpirun".into()
                );
            }
        }
        for m in &self.modules {
            check_module(m)?;
        }
        self.directive_lines()?;
        Ok(())
    }
}

/// One flag of `taps submit` and the `[submit]` key it sets.
#[derive(Clone, Copy, Debug)]
pub struct SubmitFlag {
    /// The flag, e.g. `--ranks-per-node`.
    pub flag: &'static str,
    /// The `[submit]` key.
    pub key: &'static str,
    /// The flag adds one entry to a list (repeat it) instead of setting a value.
    pub append: bool,
    /// Value placeholder for help.
    pub value: &'static str,
}

const fn flag(flag: &'static str, key: &'static str, append: bool, value: &'static str) -> SubmitFlag {
    SubmitFlag { flag, key, append, value }
}

/// Every submit flag.
pub const FLAGS: &[SubmitFlag] = &[
    flag("--scheduler", "scheduler", false, "slurm|pbs"),
    flag("--nodes", "nodes", false, "N"),
    flag("--ranks-per-node", "ranks_per_node", false, "K"),
    flag("--walltime", "walltime", false, "HH:MM:SS"),
    flag("--partition", "partition", false, "NAME"),
    flag("--queue", "partition", false, "NAME"),
    flag("--account", "account", false, "NAME"),
    flag("--qos", "qos", false, "NAME"),
    flag("--job-name", "job_name", false, "NAME"),
    flag("--directive", "directives", true, "LINE"),
    flag("--module", "modules", true, "MODULE"),
    flag("--setup", "setup", true, "LINE"),
    flag("--template", "template", false, "FILE"),
    flag("--launcher", "launcher", false, "srun|mpirun|mpiexec"),
    flag("--launcher-arg", "launcher_args", true, "ARG"),
    flag("--taps-bin", "taps_bin", false, "DIR"),
];

/// `taps submit` arguments, split.
#[derive(Clone, Debug, Default)]
pub struct SubmitArgs {
    /// Submit flags in order: (flag as given, its spec, value).
    pub flags: Vec<(String, SubmitFlag, String)>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `-h/--help` before `--`.
    pub help: bool,
    /// Everything else: the `taps run` arguments.
    pub run_args: Vec<String>,
}

/// Splits `taps submit` arguments into submit flags and `taps run` arguments. Submit flags may
/// come anywhere before a `--`; everything after `--` belongs to `taps run`.
pub fn split_args(args: &[String]) -> Result<SubmitArgs, String> {
    let mut out = SubmitArgs::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => {
                out.run_args.extend(it.by_ref().cloned());
                break;
            }
            "-h" | "--help" => out.help = true,
            "--dry-run" | "--dry_run" => out.dry_run = true,
            _ => {
                let (name, inline) = match a.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (a.as_str(), None),
                };
                let norm = name.replace('_', "-");
                if norm == "--run-dir" {
                    return Err("--run-dir is for taps run; taps submit creates the run directory itself".into());
                }
                match FLAGS.iter().find(|f| f.flag == norm) {
                    Some(f) if name.starts_with("--") => {
                        let value = match inline {
                            Some(v) => v,
                            None => it
                                .next()
                                .filter(|v| *v != "--")
                                .cloned()
                                .ok_or_else(|| format!("{} needs a value ({})", norm, f.value))?,
                        };
                        out.flags.push((norm, *f, value));
                    }
                    _ => out.run_args.push(a.clone()),
                }
            }
        }
    }
    Ok(out)
}

/// The submit options: the `[submit]` table of the config files, then the flags over it
/// (list flags add to the table's lists).
pub fn effective_options(
    table: Option<&toml::Table>,
    flags: &[(String, SubmitFlag, String)],
) -> Result<SubmitOptions, String> {
    let mut t = table.cloned().unwrap_or_default();
    let fields = SubmitOptions::fields();
    for (name, f, value) in flags {
        if f.append {
            let entry = t.entry(f.key.to_string()).or_insert_with(|| toml::Value::Array(Vec::new()));
            if let toml::Value::String(_) = entry {
                let list = Vec::<String>::from_toml(entry).map_err(|e| format!("submit.{}: {}", f.key, e))?;
                *entry = list.to_toml();
            }
            if let toml::Value::Array(a) = entry {
                a.push(toml::Value::String(value.clone()));
            }
        } else {
            let spec = fields.iter().find(|s| s.name == f.key).expect("every flag names a field");
            let v = (spec.parse_cli)(value).map_err(|e| format!("{}: {}", name, e))?;
            t.insert(f.key.to_string(), v);
        }
    }
    if !t.contains_key("scheduler") {
        return Err(
            "no scheduler: pass --scheduler slurm|pbs or set scheduler = \"slurm\" (or \"pbs\") in a [submit] table"
                .into(),
        );
    }
    SubmitOptions::from_table(&t, "submit")
}

/// Everything a job-script template sees.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobSpec {
    /// `slurm` or `pbs`.
    pub scheduler: Scheduler,
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
    /// The executor is `mpi`: the job starts `ntasks` ranks of taps-worker.
    pub mpi: bool,
    /// A directive asks Slurm for `--overcommit` (more tasks than cores): the allocation then
    /// asks for `--ntasks`, as Slurm refuses `--ntasks-per-node` above the core count.
    pub overcommit: bool,
    /// The MPI launcher.
    pub launcher: Launcher,
    /// Absolute path of `taps`.
    pub taps: String,
    /// Absolute path of `taps-worker`.
    pub taps_worker: String,
    /// The launch command line, quoted for the shell.
    pub launch: String,
}

/// The host file word in PBS launch lines.
const PBS_NODEFILE: &str = "\"$PBS_NODEFILE\"";

impl JobSpec {
    /// The job for `app` on `executor` with `opts` (checked again here), run in `run_dir`, with
    /// taps from `bin_dir`.
    pub fn new(
        opts: &SubmitOptions,
        app: &str,
        executor: &str,
        run_dir: &Path,
        bin_dir: &Path,
    ) -> Result<JobSpec, String> {
        // Options built in code, not parsed, get the same checks: nothing unchecked reaches job.sh.
        opts.validate()?;
        let s = |p: PathBuf| p.display().to_string();
        let mpi = executor == "mpi";
        let launcher = opts.launcher();
        let taps = s(bin_dir.join("taps"));
        let taps_worker = s(bin_dir.join("taps-worker"));
        let config = s(run_dir.join("config.toml"));
        let run = s(run_dir.to_path_buf());
        let launch = if mpi {
            let spec = LaunchSpec {
                nodes: opts.nodes,
                ranks_per_node: opts.ranks_per_node,
                hostfile: (opts.scheduler == Scheduler::Pbs).then(|| PBS_NODEFILE.to_string()),
                extra_args: opts.launcher_args.clone(),
                // `taps worker`: the ranks run the very taps that checked this job.
                program: vec![
                    taps.clone(),
                    crate::worker::WORKER_COMMAND.into(),
                    "-c".into(),
                    config.clone(),
                    "--run-dir".into(),
                    run.clone(),
                ],
            };
            shell_join(&launcher.command(&spec), &[PBS_NODEFILE])
        } else {
            shell_join(&[taps.clone(), "run".into(), "-c".into(), config.clone(), "--run-dir".into(), run.clone()], &[])
        };
        let directives = opts.directive_lines()?;
        let overcommit = opts.scheduler == Scheduler::Slurm
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
            walltime: format_walltime(parse_walltime(&opts.walltime)?),
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
            overcommit,
            launcher,
            taps,
            taps_worker,
            launch,
        })
    }

    /// The command that submits `script` (as `job.json` records it).
    pub fn submit_argv(&self, script: &Path) -> Vec<String> {
        match self.scheduler {
            Scheduler::Slurm => super::slurm::submit_argv(script),
            Scheduler::Pbs => super::pbs::submit_argv(script, Path::new(&self.stdout), Path::new(&self.stderr)),
        }
    }
}

/// Renders a job-script template (`name` is shown in errors).
pub fn render(spec: &JobSpec, name: &str, template: &str) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter("shell", |s: String| shell_quote(&s));
    let err = |e: minijinja::Error| {
        let mut msg = format!("job-script template {}: {}", name, e.kind());
        if let Some(d) = e.detail() {
            let _ = write!(msg, ": {}", d);
        }
        if let Some(l) = e.line() {
            let _ = write!(msg, " (line {})", l);
        }
        msg
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
pub fn check_script_syntax(script: &str, setup: &[String]) -> Result<(), String> {
    let Some(said) = bash_n(script) else { return Ok(()) };
    if let Some((line, why)) = setup.iter().find_map(|l| Some((l, bash_n(l)?))) {
        return Err(format!("submit.setup (--setup): {:?} is not a whole shell line: bash -n says {}", line, why));
    }
    Err(format!("the job script would not run: bash -n says {}; check the --setup lines and the --template", said))
}

/// The one line for a job Slurm would never start: Slurm's words, what was asked, and what the
/// partition's nodes have (from `sinfo`) with the way out.
fn explain_refusal(opts: &SubmitOptions, overcommit: bool, why: &str) -> String {
    let asked = format!(
        "{} node{} x {} task{} per node",
        opts.nodes,
        if opts.nodes == 1 { "" } else { "s" },
        opts.ranks_per_node,
        if opts.ranks_per_node == 1 { "" } else { "s" }
    );
    let hint = match super::slurm::partition_nodes(opts.partition.as_deref()) {
        Err(e) => e,
        Ok(p) if opts.nodes > p.node_count() => {
            format!("{}: ask for --nodes {} or fewer, or another --partition", p.describe(), p.node_count())
        }
        Ok(p) if !overcommit && opts.ranks_per_node > p.max_cpus() => format!(
            "{}: ask for --ranks-per-node {} or fewer, or run {} ranks on {} CPUs with --directive --exclusive \
             --directive --overcommit",
            p.describe(),
            p.max_cpus(),
            opts.ranks_per_node,
            p.max_cpus()
        ),
        Ok(p) => format!("{}; check the --directive lines against it", p.describe()),
    };
    format!("Slurm would never start this job ({}): {}; {}", asked, why, hint)
}

/// The size of the smallest node of the partition the job would run in (CPUs and memory in MB,
/// from `sinfo`), whose memory a run under `taps submit` must fit; `None` for PBS, whose queues
/// `qstat` does not size.
pub fn partition_limits(opts: &SubmitOptions) -> Result<Option<NodeSize>, String> {
    match opts.scheduler {
        Scheduler::Slurm => Ok(super::slurm::partition_nodes(opts.partition.as_deref())?.smallest()),
        Scheduler::Pbs => Ok(None),
    }
}

/// Characters a run directory may contain to be written into `#SBATCH`/`#PBS` lines unquoted.
fn check_job_path(p: &Path) -> Result<(), String> {
    let s = p.display().to_string();
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "/._-+,:@=~".contains(*c))) {
        return Err(format!(
            "the run directory {:?} contains {:?}, which job-script directives cannot carry; submit from a \
             directory whose path has only letters, digits and /._-+,:@=~ (or change run.dir_format)",
            s, c
        ));
    }
    Ok(())
}

/// The directory with `taps` for the job (its MPI ranks run `taps worker`).
fn bin_dir(opts: &SubmitOptions) -> Result<PathBuf, String> {
    let dir = match &opts.taps_bin {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the taps executable: {}", e))?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("cannot find the directory of the taps executable")?,
    };
    if !dir.join("taps").is_file() {
        return Err(format!(
            "taps not found in {} (the job runs it from there): build it with `cargo build --release`, or point \
             --taps-bin at the directory holding taps",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The template text and its name for errors.
fn template(opts: &SubmitOptions) -> Result<(String, String), String> {
    match &opts.template {
        Some(p) => std::fs::read_to_string(p)
            .map(|t| (p.display().to_string(), t))
            .map_err(|e| format!("submit.template (--template): cannot read {}: {}", p.display(), e)),
        None => Ok((format!("built-in {}", opts.scheduler), opts.scheduler.builtin_template().to_string())),
    }
}

/// Help for `taps submit`.
pub fn help() -> String {
    let mut out = String::from(
        "Submit a benchmark run as a Slurm or PBS batch job.\n\n\
         Usage: taps submit --scheduler slurm|pbs [SUBMIT OPTIONS] [--] TAPS-RUN-ARGUMENTS\n\
         \x20      e.g. taps submit --scheduler slurm --nodes 1 --walltime 00:10:00 -- --app synthetic ...\n\
         \x20           taps submit -c apps/synthetic/config.toml -c slurm/site-example.toml\n\n\
         The benchmark options are those of `taps run` (taps run --app NAME --help lists them); they are\n\
         checked now. The run directory is created at once and holds config.toml, the job script job.sh,\n\
         job.json (scheduler, job id, submit time, command) and later job.out/job.err (the job's stdout and\n\
         stderr), job.exit and the run's records. The job runs `taps run -c RUN/config.toml --run-dir RUN` on\n\
         its first node; with --engine.executor mpi it starts nodes x ranks-per-node ranks of\n\
         `taps worker -c RUN/config.toml --run-dir RUN` with the launcher (rank 0 writes the results).\n\n\
         Every option can also be set in a [submit] table of a -c file, under the key named in brackets\n\
         (slurm/site-example.toml is one). Flags override the table; --directive, --module, --setup and\n\
         --launcher-arg add entries to its lists. A directive asking Slurm for --overcommit makes the\n\
         script ask for --ntasks=N*K instead of --ntasks-per-node=K (Slurm refuses more per node than cores).\n\n\
         Submit options:\n",
    );
    let fields = SubmitOptions::fields();
    for f in FLAGS {
        let spec = fields.iter().find(|s| s.name == f.key).expect("flag field");
        let default = match &spec.default {
            None => "required".to_string(),
            Some(_) if f.append => "repeatable, adds to the list".to_string(),
            Some(d) => format!("default: {}", d),
        };
        let doc = if f.flag == "--queue" { "Same as --partition (the PBS word)." } else { spec.doc };
        let _ = writeln!(out, "  {} {}\n      {} [{}; key {}]", f.flag, f.value, doc, default, f.key);
    }
    out.push_str(
        "  --dry-run\n      Write the run directory and job script and print the script; submit nothing.\n\n\
         Then: taps status RUN_DIR (queued, stuck, running, finished, failed, cancelled), taps cancel RUN_DIR.\n",
    );
    out
}

/// `taps submit ARGS`; returns the exit code.
pub fn main_submit(args: &[String]) -> i32 {
    let parsed = match split_args(args) {
        Ok(p) => p,
        Err(e) => return usage_error(e),
    };
    if parsed.help || args.is_empty() {
        print!("{}", help());
        return 0;
    }
    if parsed.run_args.is_empty() {
        return usage_error(
            "nothing to submit: add the benchmark as for taps run (--app NAME ... or -c FILE) after the submit options",
        );
    }
    let cfg = match crate::cli::load_config(&parsed.run_args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let opts = match effective_options(cfg.submit.as_ref(), &parsed.flags) {
        Ok(o) => o,
        Err(e) => return usage_error(e),
    };
    match submit(&cfg, &opts, parsed.dry_run) {
        Ok(()) => 0,
        Err((code, msg)) => {
            if code == 2 {
                usage_error(msg)
            } else {
                eprintln!("taps: error: {}", msg.split_whitespace().collect::<Vec<_>>().join(" "));
                code
            }
        }
    }
}

/// Prepares the run directory and submits (or, dry, only writes) the job. Errors are
/// (exit code, message); before the run directory exists they are bad input (2).
fn submit(cfg: &crate::config::Config, opts: &SubmitOptions, dry_run: bool) -> Result<(), (i32, String)> {
    let bad = |e: String| (2, e);
    let mpi = cfg.executor.name == "mpi";
    if mpi && u64::from(opts.nodes) * u64::from(opts.ranks_per_node) < 2 {
        return Err(bad(format!(
            "the mpi executor needs at least 2 ranks in all (rank 0 runs the app, the others run tasks), got \
             --nodes {} x --ranks-per-node {}: pass --ranks-per-node 2 or more",
            opts.nodes, opts.ranks_per_node
        )));
    }
    let bin = bin_dir(opts).map_err(bad)?;
    if !dry_run {
        crate::app::require_program(opts.scheduler.submit_program(), "")
            .map_err(|_| bad(missing_tool(opts.scheduler.submit_program())))?;
    }
    let cwd = std::env::current_dir().map_err(|e| bad(format!("cannot read the current directory: {}", e)))?;
    let planned =
        cwd.join(crate::rundir::render(&cfg.run.dir_format, &cfg.app.name, &cfg.executor.name, "2000-01-01-00-00-00"));
    check_job_path(&std::path::absolute(&planned).unwrap_or(planned)).map_err(bad)?;
    let (tname, ttext) = template(opts).map_err(bad)?;
    // Render once before anything exists, so a broken template leaves nothing behind.
    let trial_spec = JobSpec::new(opts, &cfg.app.name, &cfg.executor.name, &cwd.join("runs/x"), &bin).map_err(bad)?;
    let trial = render(&trial_spec, &tname, &ttext).map_err(bad)?;
    check_script_syntax(&trial, &opts.setup).map_err(bad)?;
    // Slurm accepts, and leaves pending for ever, a job its partition can never hold: ask first.
    if !dry_run && opts.scheduler == Scheduler::Slurm {
        match super::slurm::test_only(&trial) {
            Ok(()) => {}
            Err(Refusal::Rejected(why)) => return Err(bad(explain_refusal(opts, trial_spec.overcommit, &why))),
            Err(Refusal::Unreachable(why)) => {
                return Err((1, format!("cannot ask Slurm whether the job could run (nothing was created): {}", why)));
            }
        }
        // The run must fit the partition's nodes, not this login node.
        if let Some(node) = partition_limits(opts).map_err(|e| (1, e))? {
            let limits = crate::config::Limits {
                place: match &opts.partition {
                    Some(p) => format!("a node of partition {}", p),
                    None => "a node of the default partition".into(),
                },
                memory_bytes: Some(crate::limits::Limit::new(
                    node.memory_mb.saturating_mul(1 << 20),
                    "the RealMemory of its smallest node (sinfo)",
                )),
                max_processes: None,
                max_threads: None,
            };
            crate::config::check_limits(cfg, &limits).map_err(bad)?;
        }
    }

    let run_dir = crate::run::create_run_dir(cfg, &cwd)
        .map_err(|e| bad(format!("cannot create the run directory from {:?}: {}", cfg.run.dir_format, e)))?;
    let script_path = run_dir.join(SCRIPT);
    let spec = JobSpec::new(opts, &cfg.app.name, &cfg.executor.name, &run_dir, &bin).map_err(bad)?;
    let written = (|| -> Result<String, String> {
        let script = render(&spec, &tname, &ttext)?;
        let mut cfg = cfg.clone();
        cfg.submit = Some(opts.to_table());
        let io = |e: std::io::Error| format!("cannot write into {}: {}", run_dir.display(), e);
        crate::run::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes()).map_err(io)?;
        crate::run::write_atomic(&script_path, script.as_bytes()).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        Ok(script)
    })();
    let script = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err((1, e));
        }
    };
    let argv = spec.submit_argv(&script_path);
    let mut record = JobRecord {
        scheduler: opts.scheduler,
        submitted: false,
        job_id: None,
        submit_time: now(),
        command: argv.clone(),
        run_dir: run_dir.clone(),
        script: script_path.clone(),
        nodes: opts.nodes,
        ranks_per_node: opts.ranks_per_node,
        error: None,
        cancel_time: None,
    };
    let save = |r: &JobRecord| {
        r.write(&run_dir).map_err(|e| (1, format!("cannot write {}: {}", run_dir.join(RECORD).display(), e)))
    };
    if dry_run {
        record.error = Some("dry run".into());
        save(&record)?;
        print!("{}", script);
        eprintln!(
            "taps: dry run: wrote {} (not submitted; submit it with: {})",
            script_path.display(),
            shell_join(&argv, &[])
        );
        return Ok(());
    }
    let argv_ref: Vec<&str> = argv.iter().map(String::as_str).collect();
    let result = run_tool(&argv_ref, Some(&run_dir));
    let failure = match result {
        Err(e) => Some(e),
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let id = match opts.scheduler {
                Scheduler::Slurm => super::slurm::parse_job_id(&stdout),
                Scheduler::Pbs => super::pbs::parse_job_id(&stdout),
            };
            match (out.status.success(), id) {
                (true, Some(id)) => {
                    record.submitted = true;
                    record.job_id = Some(id);
                    None
                }
                (true, None) => {
                    Some(format!("{} printed no job id: {}", argv[0], super::slurm::one_line(&stderr, &stdout)))
                }
                (false, _) => {
                    // Slurm's qsub wrapper complains on stdout; show both.
                    let msg = [stderr.trim(), stdout.trim()]
                        .iter()
                        .filter(|s| !s.is_empty())
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" ");
                    Some(format!(
                        "{} rejected the job ({}): {}",
                        argv[0],
                        out.status,
                        if msg.is_empty() { "no message" } else { &msg }
                    ))
                }
            }
        }
    };
    if let Some(msg) = failure {
        record.error = Some(msg.clone());
        save(&record)?;
        return Err((
            1,
            format!("{}; nothing was submitted ({} is marked not submitted in {})", msg, run_dir.display(), RECORD),
        ));
    }
    let id = record.job_id.as_deref().unwrap_or("?");
    save(&record).map_err(|(code, e)| {
        let cancel = match opts.scheduler {
            Scheduler::Slurm => "scancel",
            Scheduler::Pbs => "qdel",
        };
        (
            code,
            format!(
                "submitted {} job {}, but {}; cancel it with `{} {}` if unwanted",
                opts.scheduler, id, e, cancel, id
            ),
        )
    })?;
    println!("Submitted {} job {}", opts.scheduler, id);
    println!("Run directory: {}", run_dir.display());
    println!("Check it with: taps status {}", run_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn flags_and_run_arguments_split() {
        let a: Vec<String> =
            ["--nodes", "2", "-c", "a.toml", "--directive=--exclusive", "--app.x", "1", "--", "--nodes", "3"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let s = split_args(&a).unwrap();
        assert_eq!(s.flags.len(), 2);
        assert_eq!(s.flags[1].2, "--exclusive");
        assert_eq!(s.run_args, ["-c", "a.toml", "--app.x", "1", "--nodes", "3"]);
        assert!(split_args(&["--nodes".to_string()]).unwrap_err().contains("--nodes needs a value"));
    }

    #[test]
    fn flags_override_the_table_and_lists_add_up() {
        let t: toml::Table = toml::from_str("scheduler = \"slurm\"\nnodes = 4\nsetup = [\"a\"]\n").unwrap();
        let a: Vec<String> = ["--nodes", "2", "--setup", "b", "--queue", "q"].iter().map(|s| s.to_string()).collect();
        let o = effective_options(Some(&t), &split_args(&a).unwrap().flags).unwrap();
        assert_eq!((o.nodes, o.setup.clone(), o.partition.as_deref()), (2, vec!["a".into(), "b".into()], Some("q")));
        let t: toml::Table = toml::from_str("scheduler = \"slurm\"\nnodez = 4\n").unwrap();
        let e = effective_options(Some(&t), &[]).unwrap_err();
        assert!(e.contains("submit.nodez") && e.contains("did you mean submit.nodes"), "{}", e);
        assert!(effective_options(None, &[]).unwrap_err().contains("--scheduler"));
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
        let e = JobSpec::new(&opts, "synthetic", "thread-pool", Path::new("/r"), Path::new("/b")).unwrap_err();
        assert!(e.contains("submit.modules"), "{}", e);
        let opts = SubmitOptions { job_name: Some("a|b".into()), ..Default::default() };
        assert!(JobSpec::new(&opts, "synthetic", "thread-pool", Path::new("/r"), Path::new("/b")).is_err());
    }
}
