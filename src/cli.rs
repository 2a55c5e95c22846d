//! The `taps` command line.

use std::io::Write;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{self, ConfigError};

/// taps: benchmark task-execution frameworks with real scientific workloads.
#[derive(Parser, Debug)]
#[command(name = "taps", version, about, long_about = None)]
pub struct Cli {
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
    /// Print a shell completion script.
    Completions {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
}

/// Prints one error line and returns exit code 2 (bad input).
pub fn usage_error(e: impl std::fmt::Display) -> i32 {
    let msg = e.to_string();
    let one_line: Vec<&str> = msg.split_whitespace().collect();
    eprintln!("taps: error: {}", one_line.join(" "));
    2
}

/// A clap error as one line: its message, and for an unknown subcommand the valid ones.
fn clap_error_line(e: &clap::Error) -> String {
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
    if crate::worker::is_worker_invocation(&argv) {
        return crate::worker::main(argv);
    }
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
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "taps", &mut std::io::stdout());
            0
        }
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
    section("apps", crate::apps::ALL.iter().map(|a| (a.info.name, a.info.about)).collect());
    let mut ex: Vec<(&str, &str)> = crate::executor::EXECUTORS.iter().map(|e| (e.info.name, e.info.about)).collect();
    ex.extend(crate::executor::NOT_COMPILED.iter().copied());
    section("executors", ex);
    let mut f: Vec<(&str, &str)> = crate::data::FILTERS.iter().map(|p| (p.name, p.about)).collect();
    f.push(("none", "no filter: every value goes to the transformer (default)"));
    section("filters", f);
    let mut t: Vec<(&str, &str)> = crate::data::TRANSFORMERS.iter().map(|p| (p.name, p.about)).collect();
    t.push(("none", "no transformer: every value inline (default)"));
    section("transformers", t);
    out
}

/// Loads and checks a configuration from `taps run` arguments; `Err` carries the exit code
/// (0 after printing help, 2 after printing an error).
pub fn load_config(args: &[String]) -> Result<config::Config, i32> {
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
    crate::run::preflight(&cfg).map_err(|e| usage_error(ConfigError(e)))?;
    Ok(cfg)
}

/// Takes `--run-dir DIR` out of `taps run` arguments: run in a directory prepared earlier (by
/// `taps submit`) instead of creating one.
pub fn take_run_dir(args: &[String]) -> Result<(Vec<String>, Option<std::path::PathBuf>), String> {
    let mut rest = Vec::with_capacity(args.len());
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--run-dir" || a == "--run_dir" {
            dir = Some(it.next().ok_or("--run-dir needs a directory")?.into());
        } else if let Some(d) = a.strip_prefix("--run-dir=") {
            dir = Some(d.into());
        } else {
            rest.push(a.clone());
        }
    }
    Ok((rest, dir))
}

/// Checks a prepared run directory: it exists and holds no records of an earlier run.
pub fn check_prepared_run_dir(dir: &std::path::Path, cfg: &config::Config) -> Result<std::path::PathBuf, String> {
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
