//! The `taps` command line.

use std::io::Write;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config;

/// taps: benchmark task-execution frameworks with real scientific workloads.
#[derive(Parser, Debug)]
#[command(name = "taps", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a benchmark app on an executor (taps run --help for the options).
    #[command(disable_help_flag = true)]
    Run {
        /// --app NAME, --app.OPTION VALUE, --engine.executor NAME, -c FILE, ... (see taps run --help)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Submit a run as a Slurm or PBS batch job (taps submit --help for the options).
    #[command(disable_help_flag = true)]
    Submit {
        /// --scheduler slurm|pbs [--nodes N] ... [--] then the arguments of taps run
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show the state of a submitted job: queued, stuck (can never start, and why), running, finished, failed or cancelled.
    Status {
        /// Run directory created by taps submit.
        run_dir: std::path::PathBuf,
        /// Print one JSON object (state, scheduler, job_id, detail, run_dir).
        #[arg(long)]
        json: bool,
    },
    /// Cancel a submitted job.
    Cancel {
        /// Run directory created by taps submit.
        run_dir: std::path::PathBuf,
    },
    /// List apps, executors, filters and transformers.
    List,
    /// Measure dispatch overhead and throughput of executors (writes a report).
    Bench(crate::bench::BenchArgs),
    /// Summarise run directories (taps's or the Python suite's): tables, CSV, JSON, HTML, charts.
    Report(crate::report::ReportArgs),
    /// Run a matrix of configurations (--vary KEY=V1,V2 ... --repeat N --out DIR), resumable, and write sweep.csv and the report.
    Sweep(crate::sweep::SweepArgs),
    /// Print a shell completion script.
    Completions {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
}

/// Prints one error line and returns exit code 2 (bad input).
pub(crate) fn usage_error(e: impl std::fmt::Display) -> i32 {
    let msg = e.to_string();
    let one_line: Vec<&str> = msg.split_whitespace().collect();
    eprintln!("taps: error: {}", one_line.join(" "));
    2
}

/// A clap error as one line: its message, and for an unknown subcommand the valid ones.
pub(crate) fn clap_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let body = text.split("Usage:").next().unwrap_or("");
    let mut msg = String::new();
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let sep = if msg.is_empty() {
            ""
        } else if line.starts_with("tip:") {
            "; "
        } else {
            " "
        };
        msg.push_str(sep);
        msg.push_str(line.strip_prefix("error: ").unwrap_or(line));
    }
    if e.kind() == clap::error::ErrorKind::InvalidSubcommand {
        let names: Vec<String> = Cli::command().get_subcommands().map(|c| c.get_name().to_string()).collect();
        msg.push_str(&format!("; commands: {} (taps --help)", names.join(", ")));
    } else {
        msg.push_str(" (taps --help)");
    }
    msg
}

/// Runs the CLI; returns the process exit code.
pub fn main(argv: Vec<String>) -> i32 {
    crate::apps::cholesky::kernels::use_best_blas_kernels();
    if crate::worker::is_worker_invocation(&argv) {
        crate::catalogue::install();
        return match mpi_job_args(argv) {
            Ok(argv) => mpi_job(&argv),
            Err(argv) => crate::worker::main(argv),
        };
    }
    crate::catalogue::install();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) if e.use_stderr() && e.kind() != clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return usage_error(clap_error_line(&e));
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match cli.command {
        Command::Run { args } => cmd_run(&args, &argv),
        Command::Submit { args } => crate::submit::main_submit(&args),
        Command::Status { run_dir, json } => crate::submit::main_status(&run_dir, json),
        Command::Cancel { run_dir } => crate::submit::main_cancel(&run_dir),
        Command::List => {
            print!("{}", list());
            0
        }
        Command::Bench(b) => crate::bench::main(b),
        Command::Report(r) => crate::report::main(r),
        Command::Sweep(s) => crate::sweep::main(s),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "taps", &mut std::io::stdout());
            0
        }
    }
}

/// `taps-worker -c FILE … [taps run options]` (the MPI job's form, under mpirun or srun) as
/// `taps-worker ARGS`; any other worker invocation (a process-pool worker, `--help`, a worker
/// subcommand) is given back.
fn mpi_job_args(mut argv: Vec<String>) -> Result<Vec<String>, Vec<String>> {
    // `taps worker ARGS` and `taps-worker worker ARGS` are `taps-worker ARGS`.
    let named =
        if argv.get(1).is_some_and(|a| a == crate::worker::WORKER_COMMAND) { argv.remove(1) } else { String::new() };
    let own = ["--pipe-fd", "--help", "-h", "--version", "-V", "--protocol-version"];
    let job = argv.get(1).is_some_and(|a| a.starts_with('-'))
        && !argv[1..].iter().any(|a| own.iter().any(|o| a == o || a.starts_with(&format!("{}=", o))));
    if job {
        return Ok(argv);
    }
    if !named.is_empty() {
        argv.insert(1, named);
    }
    Err(argv)
}

fn mpi_job(argv: &[String]) -> i32 {
    #[cfg(feature = "mpi")]
    return crate::mpi_job::worker_main(argv);
    #[cfg(not(feature = "mpi"))]
    {
        let _ = argv;
        eprintln!(
            "taps-worker: error: this taps was built without MPI (--no-default-features), so taps-worker cannot \
             serve an MPI job: rebuild with the default features, cargo build --release"
        );
        2
    }
}

/// `taps list`.
pub fn list() -> String {
    let mut out = String::new();
    let mut section = |title: &str, items: Vec<(&str, &str)>| {
        out.push_str(&format!("{}:\n", title));
        for (n, a) in items {
            out.push_str(&format!("  {:<14} {}\n", n, a));
        }
    };
    let c = &crate::catalogue::CATALOGUE;
    section("apps", c.apps.iter().map(|a| (a.plugin.name, a.plugin.about)).collect());
    let mut ex: Vec<(&str, &str)> = c.executors.iter().map(|e| (e.name, e.about)).collect();
    ex.extend(crate::executor::NOT_COMPILED.iter().copied());
    section("executors", ex);
    let mut f: Vec<(&str, &str)> = c.filters.iter().map(|p| (p.name, p.about)).collect();
    f.push(("none", "no filter: every value goes to the transformer (default)"));
    section("filters", f);
    let mut t: Vec<(&str, &str)> = c.transformers.iter().map(|p| (p.name, p.about)).collect();
    t.push(("none", "no transformer: every value inline (default)"));
    section("transformers", t);
    out
}

/// Loads and checks a configuration from `taps run` arguments; `Err` carries the exit code
/// (0 after printing help, 2 after printing an error).
pub(crate) fn load_config(args: &[String]) -> Result<config::Config, i32> {
    let raw = config::parse_args(args).map_err(usage_error)?;
    if raw.help || args.is_empty() {
        // Help for whatever could be selected, even if some option is wrong.
        let sel = config::RawArgs {
            config_files: raw.config_files.clone(),
            sets: raw.sets.iter().filter(|(k, _)| config::is_selector(k)).cloned().collect(),
            help: true,
        };
        // An unknown plugin is an error, not a reason to show the generic help.
        let t = config::layered_table(&sel).map_err(usage_error)?;
        let _ = std::io::stdout().write_all(config::help(&t).as_bytes());
        return Err(0);
    }
    let cfg = config::load(&raw).map_err(usage_error)?;
    crate::run::preflight(&cfg).map_err(usage_error)?;
    Ok(cfg)
}

/// Takes `--NAME VALUE` (also `--NAME=VALUE`, and underscores for dashes) out of arguments; the
/// last one given wins. The error names the flag and what it needs (`what`).
pub(crate) fn take_flag(args: &[String], name: &str, what: &str) -> Result<(Vec<String>, Option<String>), String> {
    let flag = format!("--{}", name);
    let alt = flag.replace('-', "_").replacen("__", "--", 1);
    let mut rest = Vec::with_capacity(args.len());
    let mut value = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == flag || *a == alt {
            value = Some(it.next().ok_or_else(|| format!("{} needs {}", flag, what))?.clone());
        } else if let Some(v) = a.strip_prefix(&flag).or_else(|| a.strip_prefix(&alt)).and_then(|r| r.strip_prefix('='))
        {
            value = Some(v.to_string());
        } else {
            rest.push(a.clone());
        }
    }
    Ok((rest, value))
}

/// Takes `--run-dir DIR` out of `taps run` arguments: run in a directory prepared earlier (by
/// `taps submit`) instead of creating one.
pub(crate) fn take_run_dir(args: &[String]) -> Result<(Vec<String>, Option<std::path::PathBuf>), String> {
    take_flag(args, "run-dir", "a directory").map(|(rest, d)| (rest, d.map(Into::into)))
}

/// Checks a prepared run directory: it exists and holds no records of an earlier run.
pub(crate) fn check_prepared_run_dir(
    dir: &std::path::Path,
    cfg: &config::Config,
) -> Result<std::path::PathBuf, String> {
    if !dir.is_dir() {
        return Err(format!("--run-dir {}: not a directory (taps submit creates it)", dir.display()));
    }
    if let Some(f) = &cfg.engine.task_record_file_name
        && dir.join(f).exists()
    {
        return Err(format!(
            "--run-dir {}: already holds {} from an earlier run; use a new directory",
            dir.display(),
            f
        ));
    }
    std::path::absolute(dir).map_err(|e| e.to_string())
}

fn cmd_run(args: &[String], argv: &[String]) -> i32 {
    let (args, prepared) = match take_run_dir(args) {
        Ok(x) => x,
        Err(e) => return usage_error(e),
    };
    let cfg = match load_config(&args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = config::check_limits(&cfg, &config::Limits::here()) {
        return usage_error(e);
    }
    if let Err(e) = crate::run::apply_env_vars(&cfg.run.env_vars) {
        return usage_error(format!("cannot set run.env_vars (re-executing taps failed): {}", e));
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let run_dir = match prepared {
        Some(d) => match check_prepared_run_dir(&d, &cfg) {
            Ok(d) => d,
            Err(e) => return usage_error(e),
        },
        None => match crate::run::create_run_dir(&cfg, &cwd) {
            Ok(d) => d,
            Err(e) => {
                return usage_error(format!("cannot create the run directory from {:?}: {}", cfg.run.dir_format, e));
            }
        },
    };
    if let Err(e) = crate::run::init_logging(&cfg, &run_dir) {
        return usage_error(format!("cannot open the log file in {}: {}", run_dir.display(), e));
    }
    crate::run::install_signal_handler();
    match crate::run::run_in(&cfg, &run_dir, argv) {
        Ok(o) => {
            crate::logging::close();
            o.exit_code()
        }
        Err(e) => {
            tracing::error!(target: "taps.run", "Caught unhandled exception: {:#}", e);
            crate::logging::close();
            1
        }
    }
}
