//! `taps submit`, `taps status` and `taps cancel`: a benchmark run as a Slurm or PBS batch job.
//!
//! `taps submit` checks the benchmark configuration exactly as `taps run` does, creates the run
//! directory at once, writes `config.toml` and the job script `job.sh` into it (rendered from
//! `templates/slurm.sh.j2` or `templates/pbs.sh.j2`, or a template of the user's:
//! [`crate::launchers::job`]), submits it through the scheduler
//! ([`crate::launchers::scheduler`]) and records the job in `job.json` ([`JobRecord`]). The job
//! runs `taps run -c RUN/config.toml --run-dir RUN` on its first node, or, for the MPI executor,
//! starts `nodes × ranks_per_node` ranks of `taps worker` with a launch profile
//! ([`crate::launchers::profiles`], the same as `taps run --engine.executor mpi` uses); rank 0
//! writes the results into the same directory. The job's stdout and stderr go to `job.out` and
//! `job.err` there, and its exit code to `job.exit`.
//!
//! `taps submit [SUBMIT OPTIONS] sweep SWEEP-ARGUMENTS` submits a whole [`crate::sweep`] as one
//! job ([`submit_sweep`]): the sweep directory takes the run directory's place, and the job runs
//! `taps sweep` once on its first node, its MPI cells on the allocation's ranks.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::usage_error;
use crate::launchers::job::{self, JobSpec, RECORD, SCRIPT, SubmitOptions, check_script_syntax, render};
use crate::launchers::scheduler::{JobState, SchedulerError, SchedulerKind, missing_tool};
use crate::launchers::slurm::{self, NodeSize, Refusal};
use crate::options::{OptValue, Options};
use crate::shell::{join as shell_join, quote as shell_quote};

/// Why `taps submit` stopped: bad input (exit 2, nothing created) or a failure (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Bad input: nothing was created.
    #[error("{0}")]
    BadInput(String),
    /// Something failed (the message says what was left behind).
    #[error("{0}")]
    Failed(String),
}

impl SubmitError {
    /// The exit code.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            SubmitError::BadInput(_) => 2,
            SubmitError::Failed(_) => 1,
        }
    }
}

impl From<job::JobError> for SubmitError {
    fn from(e: job::JobError) -> Self {
        SubmitError::BadInput(e.to_string())
    }
}

/// Asks Slurm whether it could ever run `script` (it accepts, and leaves pending for ever, a job
/// its partition can never hold), then returns the limits of the partition's smallest node, which
/// the run must fit rather than this login node.
fn slurm_preflight(
    opts: &SubmitOptions,
    script: &str,
    overcommit: bool,
) -> Result<Option<crate::config::Limits>, SubmitError> {
    let failed = |e: String| SubmitError::Failed(e);
    match slurm::test_only(script) {
        Ok(()) => {}
        Err(Refusal::Rejected(why)) => return Err(bad(explain_refusal(opts, overcommit, &why))),
        Err(Refusal::Unreachable(why)) => {
            return Err(failed(format!("cannot ask Slurm whether the job could run (nothing was created): {}", why)));
        }
    }
    let Some(node) = partition_limits(opts).map_err(|e| failed(e.to_string()))? else { return Ok(None) };
    Ok(Some(crate::config::Limits {
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
    }))
}

fn bad(e: impl std::fmt::Display) -> SubmitError {
    SubmitError::BadInput(e.to_string())
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
    flag("--launcher", "launcher", false, "PROFILE"),
    flag("--launcher-arg", "launcher_args", true, "ARG"),
    flag("--taps-bin", "taps_bin", false, "DIR"),
];

/// `taps submit` arguments, split.
#[derive(Clone, Debug, Default)]
pub(crate) struct SubmitArgs {
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
pub(crate) fn split_args(args: &[String]) -> Result<SubmitArgs, String> {
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
    let hint = match slurm::partition_nodes(opts.partition.as_deref()) {
        Err(e) => e.to_string(),
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
pub(crate) fn partition_limits(opts: &SubmitOptions) -> Result<Option<NodeSize>, SchedulerError> {
    match opts.scheduler {
        SchedulerKind::Slurm => Ok(slurm::partition_nodes(opts.partition.as_deref())?.smallest()),
        SchedulerKind::Pbs => Ok(None),
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

/// Help for `taps submit`.
pub fn help() -> String {
    let mut out = String::from(
        "Submit a benchmark run as a Slurm or PBS batch job.\n\n\
         Usage: taps submit --scheduler slurm|pbs [SUBMIT OPTIONS] [--] TAPS-RUN-ARGUMENTS\n\
         \x20      taps submit --scheduler slurm|pbs [SUBMIT OPTIONS] sweep TAPS-SWEEP-ARGUMENTS\n\
         \x20      e.g. taps submit --scheduler slurm --nodes 1 --walltime 00:10:00 -- --app synthetic ...\n\
         \x20           taps submit -c apps/synthetic/config.toml -c slurm/site-example.toml\n\
         \x20           taps submit --scheduler slurm --ranks-per-node 3 sweep -c base.toml --vary executor=thread-pool,mpi --out DIR\n\n\
         The benchmark options are those of `taps run` (taps run --app NAME --help lists them); they are\n\
         checked now. The run directory is created at once and holds config.toml, the job script job.sh,\n\
         job.json (scheduler, job id, submit time, command) and later job.out/job.err (the job's stdout and\n\
         stderr), job.exit and the run's records. The job runs `taps run -c RUN/config.toml --run-dir RUN` on\n\
         its first node; with --engine.executor mpi it starts nodes x ranks-per-node ranks of\n\
         `taps worker -c RUN/config.toml --run-dir RUN` with the launch profile of --launcher (rank 0 writes\n\
         the results), the same profiles as taps run --engine.executor mpi uses; the default for Slurm is\n\
         mpirun with recovery, so that a lost rank's task is recorded and the other ranks finish the work.\n\n\
         With `sweep`, the whole sweep is one job: every cell is checked now, DIR (--out) holds sweep.json,\n\
         job.sh, job.json and the cells, and the job runs `taps sweep` once on its first node; the cells on the\n\
         mpi executor start nodes x ranks-per-node ranks (or their own engine.executor.ranks, never more) with\n\
         the launch profile of --launcher. Submit the same command again to resume it; taps status DIR.\n\n\
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
pub(crate) fn main_submit(args: &[String]) -> i32 {
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
    if parsed.run_args[0] == SWEEP {
        return main_submit_sweep(&parsed);
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
        Err(e @ SubmitError::BadInput(_)) => usage_error(e),
        Err(e) => {
            eprintln!("taps: error: {}", e.to_string().split_whitespace().collect::<Vec<_>>().join(" "));
            e.exit_code()
        }
    }
}

/// Prepares the run directory and submits (or, dry, only writes) the job; before the run
/// directory exists every error is bad input.
pub fn submit(cfg: &crate::config::Config, opts: &SubmitOptions, dry_run: bool) -> Result<(), SubmitError> {
    let failed = |e: String| SubmitError::Failed(e);
    let mpi = matches!(cfg.executor.options.launch(), crate::executor::Launch::MpiJob(_));
    if mpi && u64::from(opts.nodes) * u64::from(opts.ranks_per_node) < 2 {
        return Err(bad(format!(
            "the mpi executor needs at least 2 ranks in all (rank 0 runs the app, the others run tasks), got \
             --nodes {} x --ranks-per-node {}: pass --ranks-per-node 2 or more",
            opts.nodes, opts.ranks_per_node
        )));
    }
    let scheduler = opts.scheduler.get();
    let bin = bin_dir(opts).map_err(bad)?;
    if !dry_run && crate::shell::find_program(scheduler.submit_program()).is_none() {
        return Err(bad(missing_tool(scheduler.submit_program())));
    }
    let cwd = std::env::current_dir().map_err(|e| bad(format!("cannot read the current directory: {}", e)))?;
    let planned =
        cwd.join(crate::rundir::render(&cfg.run.dir_format, &cfg.app.name, &cfg.executor.name, "2000-01-01-00-00-00"));
    check_job_path(&std::path::absolute(&planned).unwrap_or(planned)).map_err(bad)?;
    let (tname, ttext) = job::template(opts)?;
    let env = &cfg.run.env_vars;
    // Render once before anything exists, so a broken template leaves nothing behind.
    let trial_spec = JobSpec::new(opts, &cfg.app.name, &cfg.executor.name, mpi, &cwd.join("runs/x"), &bin, env)?;
    let trial = render(&trial_spec, &tname, &ttext)?;
    check_script_syntax(&trial, &opts.setup)?;
    // Slurm accepts, and leaves pending for ever, a job its partition can never hold: ask first.
    if !dry_run
        && opts.scheduler == SchedulerKind::Slurm
        && let Some(limits) = slurm_preflight(opts, &trial, trial_spec.overcommit)?
    {
        // The run must fit the partition's nodes, not this login node.
        crate::config::check_limits(cfg, &limits).map_err(bad)?;
    }

    let run_dir = crate::run::create_run_dir(cfg, &cwd)
        .map_err(|e| bad(format!("cannot create the run directory from {:?}: {}", cfg.run.dir_format, e)))?;
    let script_path = run_dir.join(SCRIPT);
    let written = (|| -> Result<(JobSpec, String), String> {
        let spec = JobSpec::new(opts, &cfg.app.name, &cfg.executor.name, mpi, &run_dir, &bin, env)
            .map_err(|e| e.to_string())?;
        let script = render(&spec, &tname, &ttext).map_err(|e| e.to_string())?;
        let mut cfg = cfg.clone();
        cfg.submit = Some(opts.to_table());
        let io = |e: std::io::Error| format!("cannot write into {}: {}", run_dir.display(), e);
        crate::run::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes()).map_err(io)?;
        crate::run::write_atomic(&script_path, script.as_bytes()).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        Ok((spec, script))
    })();
    let (spec, script) = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&run_dir);
            return Err(failed(e));
        }
    };
    send(opts, &spec, &script, &run_dir, dry_run, "Run directory")
}

/// Submits `script` (written to `dir/job.sh`), or, dry, only says how; records the job in
/// `dir/job.json` either way.
fn send(
    opts: &SubmitOptions,
    spec: &JobSpec,
    script: &str,
    run_dir: &Path,
    dry_run: bool,
    dir_label: &str,
) -> Result<(), SubmitError> {
    let failed = |e: String| SubmitError::Failed(e);
    let scheduler = opts.scheduler.get();
    let script_path = run_dir.join(SCRIPT);
    let argv = spec.submit_argv(&script_path);
    let mut record = JobRecord {
        scheduler: opts.scheduler,
        submitted: false,
        job_id: None,
        submit_time: crate::record::now(),
        command: argv.clone(),
        run_dir: run_dir.to_path_buf(),
        script: script_path.clone(),
        nodes: opts.nodes,
        ranks_per_node: opts.ranks_per_node,
        error: None,
        cancel_time: None,
    };
    let save = |r: &JobRecord| {
        r.write(run_dir).map_err(|e| failed(format!("cannot write {}: {}", run_dir.join(RECORD).display(), e)))
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
    match scheduler.submit(&argv, run_dir) {
        Ok(id) => {
            record.submitted = true;
            record.job_id = Some(id);
        }
        Err(e) => {
            let msg = e.to_string();
            record.error = Some(msg.clone());
            save(&record)?;
            return Err(failed(format!(
                "{}; nothing was submitted ({} is marked not submitted in {})",
                msg,
                run_dir.display(),
                RECORD
            )));
        }
    }
    let id = record.job_id.as_deref().unwrap_or("?");
    save(&record).map_err(|e| {
        failed(format!(
            "submitted {} job {}, but {}; cancel it with `{}` if unwanted",
            opts.scheduler,
            id,
            e,
            shell_join(&scheduler.cancel_argv(id), &[])
        ))
    })?;
    println!("Submitted {} job {}", opts.scheduler, id);
    println!("{}: {}", dir_label, run_dir.display());
    println!("Check it with: taps status {}", run_dir.display());
    Ok(())
}

/// The word after the submit options that submits a sweep: `taps submit [OPTIONS] sweep ARGS`.
const SWEEP: &str = "sweep";

/// The arguments of `taps submit [SUBMIT OPTIONS] sweep SWEEP-ARGUMENTS` after `sweep`.
#[derive(clap::Parser, Debug)]
#[command(name = "taps submit [SUBMIT OPTIONS] sweep", no_binary_name = true)]
struct SweepCommand {
    #[command(flatten)]
    args: crate::sweep::SweepArgs,
}

/// `taps submit [SUBMIT OPTIONS] sweep SWEEP-ARGUMENTS`; returns the exit code.
fn main_submit_sweep(parsed: &SubmitArgs) -> i32 {
    use clap::Parser;
    let args = match SweepCommand::try_parse_from(&parsed.run_args[1..]) {
        Ok(c) => c.args,
        Err(e) if e.use_stderr() => {
            return usage_error(crate::cli::clap_error_line(&e).replace("(taps --help)", "(taps sweep --help)"));
        }
        Err(e) => {
            let _ = e.print();
            return 0;
        }
    };
    let dry_run = parsed.dry_run || args.dry_run;
    match submit_sweep(&args, &parsed.flags, dry_run) {
        Ok(()) => 0,
        Err(e @ SubmitError::BadInput(_)) => usage_error(e),
        Err(e) => {
            eprintln!("taps: error: {}", e.to_string().split_whitespace().collect::<Vec<_>>().join(" "));
            e.exit_code()
        }
    }
}

/// Checks a sweep as `taps sweep` would run it inside the job, then writes the sweep directory
/// (`sweep.json`, `job.sh`) and submits (or, dry, only writes) one job that runs `taps sweep` on
/// its first node; the cells on the MPI executor start their ranks inside the allocation
/// (`--mpi-ranks` nodes x ranks-per-node, `--mpi-launcher` and, for PBS, the host file). Before
/// the directory is touched every error is bad input.
pub(crate) fn submit_sweep(
    args: &crate::sweep::SweepArgs,
    flags: &[(String, SubmitFlag, String)],
    dry_run: bool,
) -> Result<(), SubmitError> {
    let failed = |e: String| SubmitError::Failed(e);
    for (flag, given) in [
        ("--mpi-ranks", args.mpi_ranks.is_some()),
        ("--mpi-launcher", args.mpi_launcher.is_some()),
        ("--mpi-launcher-args", args.mpi_launcher_args.is_some()),
    ] {
        if given {
            return Err(bad(format!(
                "{} is set by taps submit from the batch job (--nodes x --ranks-per-node, --launcher, --launcher-arg); \
                 leave it out",
                flag
            )));
        }
    }
    for v in &args.vary {
        if let Ok(a) = crate::sweep::parse_vary(v)
            && (a.key == "submit" || a.key.starts_with("submit."))
        {
            return Err(bad(format!(
                "--vary {}: the whole sweep is one batch job; give the [submit] options as flags of taps submit",
                v
            )));
        }
    }
    // The [submit] table of the base files, the flags over it.
    let files: Vec<PathBuf> =
        args.config.iter().map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone())).collect();
    let raw = crate::config::RawArgs { config_files: files, sets: vec![], help: false };
    let base = crate::config::layered_table(&raw).map_err(bad)?;
    let opts = effective_options(base.get("submit").and_then(toml::Value::as_table), flags).map_err(bad)?;
    let scheduler = opts.scheduler.get();
    let ntasks = u64::from(opts.nodes) * u64::from(opts.ranks_per_node);
    let launcher = opts.launcher().to_string();
    let user_args = shell_join(&opts.launcher_args, &[]);
    let mut checked = args.clone();
    checked.mpi_ranks = (ntasks >= 2).then_some(ntasks);
    checked.mpi_launcher = Some(launcher.clone());
    checked.mpi_launcher_args = (!user_args.is_empty()).then(|| user_args.clone());
    // The cells are checked here against no machine: against the partition's nodes below.
    let anywhere =
        crate::config::Limits { place: String::new(), memory_bytes: None, max_processes: None, max_threads: None };
    let plan = crate::sweep::plan(&checked, &anywhere).map_err(bad)?;
    let mpi: Vec<&str> =
        plan.cells.iter().filter(|c| crate::sweep::runs_on_mpi(&c.config)).map(|c| c.name.as_str()).collect();
    if !mpi.is_empty() && ntasks < 2 {
        return Err(bad(format!(
            "cell {} runs on the mpi executor, which needs at least 2 ranks in all (rank 0 runs the app, the others \
             run tasks), got --nodes {} x --ranks-per-node {}: pass --ranks-per-node 2 or more",
            mpi[0], opts.nodes, opts.ranks_per_node
        )));
    }
    let bin = bin_dir(&opts).map_err(bad)?;
    if !dry_run && crate::shell::find_program(scheduler.submit_program()).is_none() {
        return Err(bad(missing_tool(scheduler.submit_program())));
    }
    let dir = plan.dir.clone();
    check_job_path(&dir).map_err(bad)?;
    // Two jobs must not run one sweep.
    if dir.join(RECORD).is_file() {
        let (rec, st) =
            status(&dir).map_err(|e| failed(format!("cannot tell whether the sweep's job still runs: {}", e)))?;
        if rec.submitted && !st.state.is_final() {
            return Err(bad(format!(
                "--out {}: its {} job {} is {}; wait until it ends, or cancel it with taps cancel {}",
                dir.display(),
                rec.scheduler,
                rec.job_id.as_deref().unwrap_or("?"),
                st.state.as_str(),
                shell_quote(&dir.display().to_string())
            )));
        }
    }

    // The job script: `taps sweep` with the same matrix, and the allocation for the MPI cells.
    let distinct = |names: Vec<&str>| {
        let mut v: Vec<&str> = Vec::new();
        for n in names {
            if !v.contains(&n) {
                v.push(n);
            }
        }
        v.join(",")
    };
    let apps = distinct(plan.cells.iter().map(|c| c.config.app.name.as_str()).collect());
    let executors = distinct(plan.cells.iter().map(|c| c.config.executor.name.as_str()).collect());
    let mut spec = JobSpec::new(&opts, &apps, &executors, false, &dir, &bin, &Default::default())?;
    spec.sweep = true;
    spec.mpi = !mpi.is_empty();
    spec.config = dir.join("sweep.json").display().to_string();
    if opts.job_name.is_none() {
        spec.job_name = "taps-sweep".into();
    }
    let mut words: Vec<String> = vec![spec.taps.clone(), SWEEP.into(), "-c".into()];
    words.extend(plan.config_files().iter().map(|f| f.display().to_string()));
    for v in &args.vary {
        words.extend(["--vary".to_string(), v.clone()]);
    }
    words.extend(["--repeat".into(), args.repeat.to_string(), "--out".into(), dir.display().to_string()]);
    if !mpi.is_empty() {
        words.extend(["--mpi-ranks".into(), ntasks.to_string(), "--mpi-launcher".into(), launcher.clone()]);
    }
    let mut launch = shell_join(&words, &[]);
    if !mpi.is_empty() {
        // The host file is known when the job runs: the script quotes its path for the launcher.
        match scheduler.hostfile().filter(|_| launcher != "srun") {
            Some(h) => {
                let rest = if user_args.is_empty() { String::new() } else { shell_quote(&format!(" {}", user_args)) };
                let _ = write!(launch, " --mpi-launcher-args \"--hostfile $(printf %q {})\"{}", h, rest);
            }
            None if !user_args.is_empty() => {
                let _ = write!(launch, " --mpi-launcher-args {}", shell_quote(&user_args));
            }
            None => {}
        }
    }
    // `taps sweep` plans the cells again in the job: relative paths of the base files and the
    // --vary values resolve against the directory taps submit ran in, as they did here.
    let here = std::env::current_dir().map_err(|e| bad(format!("cannot read the current directory: {}", e)))?;
    let gone = shell_quote(&format!(
        "taps: error: cannot enter {}, the directory taps submit ran in (the sweep's relative paths resolve there)",
        here.display()
    ));
    let here = shell_quote(&here.display().to_string());
    spec.launch = format!("{{ cd {here} 2>/dev/null || {{ echo {gone} >&2; false; }}; }} && {launch}");
    let (tname, ttext) = job::template(&opts)?;
    let script = render(&spec, &tname, &ttext)?;
    check_script_syntax(&script, &opts.setup)?;
    if !dry_run
        && opts.scheduler == SchedulerKind::Slurm
        && let Some(limits) = slurm_preflight(&opts, &script, spec.overcommit)?
    {
        // Every cell must fit the partition's nodes, not this login node.
        for c in &plan.cells {
            crate::config::check_limits(&c.config, &limits).map_err(|e| bad(format!("cell {}: {}", c.name, e)))?;
        }
    }

    let existed = dir.exists();
    let written = (|| -> Result<(), String> {
        let io = |e: std::io::Error| format!("cannot write into {}: {}", dir.display(), e);
        plan.create().map_err(|e| format!("cannot create the sweep in {}: {:#}", dir.display(), e))?;
        // An earlier job's exit code is not this job's.
        match std::fs::remove_file(dir.join(job::EXIT)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let script_path = dir.join(SCRIPT);
        crate::run::write_atomic(&script_path, script.as_bytes()).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        Ok(())
    })();
    if let Err(e) = written {
        if !existed {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return Err(failed(e));
    }
    send(&opts, &spec, &script, &dir, dry_run, "Sweep directory")
}

/// `job.json`: what `taps submit` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The scheduler.
    pub scheduler: SchedulerKind,
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

    fn write(&self, run_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("job records serialise") + "\n";
        crate::run::write_atomic(&run_dir.join(RECORD), text.as_bytes())
    }
}

/// The state of the job of a run directory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobStatus {
    /// The state.
    pub state: JobState,
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// The job id (None if not submitted).
    pub job_id: Option<String>,
    /// The scheduler's or the run directory's words.
    pub detail: String,
    /// A failed job's run says why (the last error of its log, e.g. the worker ranks it lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_error: Option<String>,
    /// The run directory.
    pub run_dir: PathBuf,
}

/// The state of the job submitted from `run_dir`.
pub fn status(run_dir: &Path) -> Result<(JobRecord, JobStatus), String> {
    let rec = JobRecord::read(run_dir)?;
    let mut st = JobStatus {
        state: JobState::NotSubmitted,
        scheduler: rec.scheduler,
        job_id: rec.job_id.clone(),
        detail: rec.error.clone().unwrap_or_default(),
        run_error: None,
        run_dir: std::path::absolute(run_dir).unwrap_or(run_dir.to_path_buf()),
    };
    let Some(id) = rec.job_id.clone().filter(|_| rec.submitted) else { return Ok((rec, st)) };
    let reported = rec.scheduler.get().status(&id);
    // After the query: a job the scheduler reports ended has written job.exit by then.
    let exit = job::exit_code(run_dir);
    let reported = match reported {
        Ok(r) => r,
        // The run directory answers for a finished job even where the scheduler is out of reach.
        Err(_) if exit.is_some() => None,
        Err(e) => return Err(e.to_string()),
    };
    (st.state, st.detail) = job::resolve(reported, exit, rec.cancel_time.is_some());
    if st.state == JobState::Failed {
        st.run_error = job::run_error(run_dir);
    }
    // What to do about a waiting job names the job and the run directory: fill them in.
    st.detail = st
        .detail
        .replace("taps cancel RUN_DIR", &format!("taps cancel {}", shell_quote(&run_dir.display().to_string())))
        .replace("scontrol release JOBID", &format!("scontrol release {}", id));
    Ok((rec, st))
}

fn status_error(run_dir: &Path, e: &str) -> i32 {
    eprintln!("taps: error: {}", e.split_whitespace().collect::<Vec<_>>().join(" "));
    if run_dir.join(RECORD).is_file() { 1 } else { 2 }
}

/// `taps status RUN_DIR [--json]`.
pub(crate) fn main_status(run_dir: &Path, json: bool) -> i32 {
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
                let run = st.run_error.as_ref().map(|e| format!(": {}", e)).unwrap_or_default();
                println!("{}: {}{}{}", st.state.as_str(), job, detail, run);
            }
            0
        }
        Err(e) => status_error(run_dir, &e),
    }
}

/// `taps cancel RUN_DIR`.
pub(crate) fn main_cancel(run_dir: &Path) -> i32 {
    let (mut rec, st) = match status(run_dir) {
        Ok(x) => x,
        Err(e) => return status_error(run_dir, &e),
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
    match rec.scheduler.get().cancel(&id) {
        Ok(()) => {
            rec.cancel_time = Some(crate::record::now());
            if let Err(e) = rec.write(run_dir) {
                eprintln!("taps: warning: cannot update {}: {}", run_dir.join(RECORD).display(), e);
            }
            println!("Cancelled {} job {} ({})", rec.scheduler, id, run_dir.display());
            0
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
}
