//! `taps sweep`: a matrix of runs (the cartesian product of `--vary` values, `--repeat` times),
//! each cell a `taps run` child process in its own run directory under `--out`, resumable, then
//! `sweep.csv` and the report of the whole matrix.
//!
//! The sweep directory holds `sweep.json` (the matrix, to refuse a different one), and per cell
//! `cells/NAME/` (the run directory), `cells/NAME.toml` (the cell's overrides, the last `-c` file
//! of its run), `cells/NAME.log` (the run's stdout and stderr) and `cells/NAME.json` (how it
//! ended, written atomically after the run exited). A cell is finished when that file says `ok`:
//! the run exited 0 and every line of its task records is a complete record.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cli::usage_error;
use crate::config::{self, Config, RawArgs};

/// `taps sweep` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// Base configuration files (TOML), merged in order as by `taps run -c`.
    #[arg(short = 'c', long = "config", num_args = 1..)]
    pub config: Vec<PathBuf>,
    /// KEY=V1,V2,...: a TOML key path and the TOML values it takes (repeat for more keys; bare
    /// words are strings; commas inside [..], {..} or quotes do not split).
    #[arg(long = "vary", value_name = "KEY=VALUES", allow_hyphen_values = true)]
    pub vary: Vec<String>,
    /// Runs of every combination (interleaved: all combinations once, then again).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
    /// Directory of the sweep (created; an existing sweep there is resumed).
    #[arg(long)]
    pub out: PathBuf,
    /// List the cells and their overrides; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Ranks of the cells on the MPI executor that do not set engine.executor.ranks, and the most
    /// any may set: the ranks of the batch job (`taps submit ... sweep` passes nodes x ranks-per-node).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    pub mpi_ranks: Option<u64>,
    /// Launch profile of the MPI cells that do not set engine.executor.launcher.
    #[arg(long, value_name = "PROFILE")]
    pub mpi_launcher: Option<String>,
    /// Launcher arguments of the MPI cells that do not set engine.executor.launcher_args.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub mpi_launcher_args: Option<String>,
}

/// Settings of the cells on the MPI executor that the cells do not set themselves: those of the
/// batch job the sweep runs in (`--mpi-ranks`, `--mpi-launcher`, `--mpi-launcher-args`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MpiDefaults {
    /// Ranks in all, and the most a cell may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<u64>,
    /// Launch profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<String>,
    /// Launcher arguments (not recorded in `sweep.json`: a job's host file differs per job).
    #[serde(skip)]
    pub launcher_args: Option<String>,
}

impl MpiDefaults {
    fn is_empty(&self) -> bool {
        *self == MpiDefaults::default()
    }

    /// Adds the settings a cell on the MPI executor does not set (`merged`: base and overrides)
    /// to its overrides; refuses more ranks than [`Self::ranks`].
    fn apply(&self, merged: &toml::Table, over: &mut toml::Table) -> Result<(), String> {
        let set = |k: &str| config::get_path(merged, &format!("engine.executor.{}", k)).is_some();
        let mut add = |k: &str, v: toml::Value| {
            if !set(k) {
                let engine = over.entry("engine").or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let executor = engine
                    .as_table_mut()
                    .map(|t| t.entry("executor").or_insert_with(|| toml::Value::Table(toml::Table::new())));
                if let Some(t) = executor.and_then(toml::Value::as_table_mut) {
                    t.insert(k.to_string(), v);
                }
            }
        };
        if let Some(n) = self.ranks {
            add("ranks", toml::Value::Integer(n as i64));
        }
        if let Some(l) = &self.launcher {
            add("launcher", toml::Value::String(l.clone()));
        }
        if let Some(a) = &self.launcher_args {
            add("launcher_args", toml::Value::String(a.clone()));
        }
        if let (Some(max), Some(asked)) =
            (self.ranks, config::get_path(merged, "engine.executor.ranks").and_then(toml::Value::as_integer))
            && asked > max as i64
        {
            return Err(format!(
                "engine.executor.ranks = {} is more than the {} rank(s) of the batch job (--nodes x --ranks-per-node, \
                 --mpi-ranks): ask for more ranks per node or nodes, or fewer ranks",
                asked, max
            ));
        }
        Ok(())
    }
}

/// One varied key and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// Dotted TOML key path (plugin short forms resolved: `engine.executor` → `engine.executor.name`).
    pub key: String,
    /// Its values, in the order given.
    pub values: Vec<toml::Value>,
}

/// The plugin tables whose `name` the CLI's short forms select.
const PLUGIN_TABLES: &[&str] = &["app", "engine.executor", "engine.filter", "engine.transformer"];

/// The key path a `--vary` key stands for: dashes as underscores, the CLI's plugin short forms
/// (`app`, `executor`, `engine.executor`, `filter`, ...) as the `name` key of their table.
fn canonical_key(key: &str) -> String {
    let k = key.replace('-', "_");
    let table = k.strip_suffix(".name").unwrap_or(&k);
    if config::is_selector(table) || config::is_selector(&k) {
        let suffix = format!(".{}", table);
        if let Some(t) = PLUGIN_TABLES.iter().find(|t| **t == table || t.ends_with(&suffix)) {
            return format!("{}.name", t);
        }
    }
    k
}

/// Splits `V1,V2,...` at the commas that are outside brackets, braces and quotes.
fn split_values(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut quote, mut escaped, mut start) = (Vec::new(), 0i32, None, false, 0);
    for (i, c) in s.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    out.push(&s[start..]);
    out
}

/// One value: TOML, or a bare word (no spaces, quotes, brackets, `=`, `#`) taken as a string.
fn parse_value(s: &str) -> Result<toml::Value, String> {
    if let Ok(mut t) = toml::from_str::<toml::Table>(&format!("v = {}", s))
        && t.len() == 1
        && let Some(v) = t.remove("v")
    {
        return Ok(v);
    }
    let bare = s.chars().all(|c| !c.is_whitespace() && !c.is_control() && !"[]{}\"'=#,".contains(c));
    if bare {
        Ok(toml::Value::String(s.to_string()))
    } else {
        Err(format!("{:?} is not a TOML value (quote strings that hold spaces or special characters)", s))
    }
}

/// Parses one `--vary KEY=V1,V2,...`.
pub fn parse_vary(arg: &str) -> Result<Axis, String> {
    let usage = "expected KEY=V1,V2,... (a TOML key path such as app.task_count, and comma-separated TOML values)";
    let Some((key, values)) = arg.split_once('=') else {
        return Err(format!("--vary {}: {}", arg, usage));
    };
    let key = key.trim();
    let valid_part = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !key.split('.').all(valid_part) {
        return Err(format!("--vary {}: {:?} is not a key path; {}", arg, key, usage));
    }
    let key = canonical_key(key);
    let mut parsed: Vec<toml::Value> = Vec::new();
    for v in split_values(values) {
        let v = v.trim();
        if v.is_empty() {
            return Err(format!("--vary {}: an empty value; {}", arg, usage));
        }
        let v = parse_value(v).map_err(|e| format!("--vary {}: {}", arg, e))?;
        if parsed.contains(&v) {
            return Err(format!("--vary {}: the value {} is given twice", arg, crate::options::render(&v)));
        }
        parsed.push(v);
    }
    Ok(Axis { key, values: parsed })
}

/// One run of the matrix.
#[derive(Clone, Debug)]
pub struct Cell {
    /// The value of every axis, in axis order.
    pub values: Vec<toml::Value>,
    /// Repeat index, from 1.
    pub repeat: u32,
    /// Name of its run directory under `cells/`.
    pub name: String,
    /// The overrides on top of the base config (its `cells/NAME.toml`).
    pub overrides: toml::Table,
    /// Its validated configuration.
    pub config: Config,
}

/// A value as a cell name and CSV show it: strings bare, the rest as TOML.
fn show_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        v => crate::options::render(v),
    }
}

/// `KEY=VALUE_..._rK` with characters other than letters, digits and `._+=-` as `_`.
fn cell_name(axes: &[Axis], values: &[toml::Value], repeat: u32) -> String {
    let mut parts: Vec<String> = axes
        .iter()
        .zip(values)
        .map(|(a, v)| format!("{}={}", a.key.strip_suffix(".name").unwrap_or(&a.key), show_value(v)))
        .collect();
    parts.push(format!("r{}", repeat));
    parts.join("_").chars().map(|c| if c.is_ascii_alphanumeric() || "._+=-".contains(c) { c } else { '_' }).collect()
}

/// The overrides of one combination as a TOML table.
fn overrides(axes: &[Axis], values: &[toml::Value]) -> Result<toml::Table, String> {
    let mut t = toml::Table::new();
    for (a, v) in axes.iter().zip(values) {
        let parts: Vec<&str> = a.key.split('.').collect();
        let mut cur = &mut t;
        for p in &parts[..parts.len() - 1] {
            let e = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = e.as_table_mut().ok_or_else(|| format!("--vary {} overlaps another --vary key", a.key))?;
        }
        if cur.insert(parts[parts.len() - 1].to_string(), v.clone()).is_some() {
            return Err(format!("--vary {} is given twice (or overlaps another --vary key)", a.key));
        }
    }
    Ok(t)
}

/// Every cell of the matrix, validated as `taps run` would validate it (against `limits`, and
/// cells on the MPI executor with the settings of `mpi` they do not set); the error names the cell.
pub(crate) fn cells(
    base: &toml::Table,
    axes: &[Axis],
    repeat: u32,
    mpi: &MpiDefaults,
    limits: &config::Limits,
) -> Result<Vec<Cell>, String> {
    let mut combos: Vec<Vec<toml::Value>> = vec![vec![]];
    for a in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| a.values.iter().map(move |v| [c.clone(), vec![v.clone()]].concat()))
            .collect();
    }
    let mut checked = Vec::with_capacity(combos.len());
    for values in combos {
        let mut over = overrides(axes, &values)?;
        let what = || {
            let kv: Vec<String> =
                axes.iter().zip(&values).map(|(a, v)| format!("{}={}", a.key, show_value(v))).collect();
            if kv.is_empty() { "the base configuration".to_string() } else { format!("cell {}", kv.join(" ")) }
        };
        let merged = |over: &toml::Table| {
            let mut t = base.clone();
            config::merge(&mut t, over.clone(), "");
            t
        };
        let mut cfg = config::from_table(merged(&over)).map_err(|e| format!("{}: {}", what(), e))?;
        if runs_on_mpi(&cfg) && !mpi.is_empty() {
            mpi.apply(&merged(&over), &mut over).map_err(|e| format!("{}: {}", what(), e))?;
            cfg = config::from_table(merged(&over)).map_err(|e| format!("{}: {}", what(), e))?;
        }
        crate::run::preflight(&cfg).map_err(|e| format!("{}: {}", what(), e))?;
        config::check_limits(&cfg, limits).map_err(|e| format!("{}: {}", what(), e))?;
        checked.push((values, over, cfg));
    }
    let mut out = Vec::new();
    for r in 1..=repeat {
        for (values, over, cfg) in &checked {
            let name = cell_name(axes, values, r);
            out.push(Cell { values: values.clone(), repeat: r, name, overrides: over.clone(), config: cfg.clone() });
        }
    }
    // Names that clash once sanitised, or are too long for a file name, get the cell's number.
    for i in 0..out.len() {
        let clash = out.iter().enumerate().any(|(j, c)| j != i && c.name == out[i].name);
        if clash || out[i].name.len() > 200 {
            out[i].name = format!("cell{:03}_r{}", i % checked.len().max(1) + 1, out[i].repeat);
        }
    }
    Ok(out)
}

/// The matrix as recorded in `sweep.json`: a second call must give the same one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Manifest {
    /// Base config files (absolute).
    config_files: Vec<PathBuf>,
    /// The merged base configuration (TOML).
    base: String,
    /// Varied keys and their values (TOML).
    vary: Vec<(String, Vec<String>)>,
    /// Runs of every combination.
    repeat: u32,
    /// The settings of the MPI cells from the batch job (`--mpi-ranks`, `--mpi-launcher`).
    #[serde(default, skip_serializing_if = "MpiDefaults::is_empty")]
    mpi: MpiDefaults,
}

impl Manifest {
    /// Says what differs from `other` (the recorded one).
    fn difference(&self, recorded: &Manifest) -> String {
        if self.vary != recorded.vary {
            let show = |m: &Manifest| {
                let vary = m.vary.iter().map(|(k, v)| format!("--vary {}={}", k, v.join(",")));
                vary.collect::<Vec<_>>().join(" ")
            };
            format!("it was made with {}, not {}", show(recorded), show(self))
        } else if self.repeat != recorded.repeat {
            format!("it was made with --repeat {}, not {}", recorded.repeat, self.repeat)
        } else if self.mpi != recorded.mpi {
            let show = |m: &MpiDefaults| {
                let r = m.ranks.map(|r| format!("--mpi-ranks {}", r));
                let l = m.launcher.as_ref().map(|l| format!("--mpi-launcher {}", l));
                r.into_iter().chain(l).collect::<Vec<_>>().join(" ")
            };
            match (recorded.mpi.is_empty(), self.mpi.is_empty()) {
                (false, true) => format!(
                    "it was made for a batch job ({}); resume it by submitting it again with taps submit ... sweep",
                    show(&recorded.mpi)
                ),
                (true, _) => format!("it was made without the batch job's {}", show(&self.mpi)),
                _ => format!(
                    "it was made with the batch job's {}, not {} (submit it with the same --nodes, \
                     --ranks-per-node and --launcher)",
                    show(&recorded.mpi),
                    show(&self.mpi)
                ),
            }
        } else if self.config_files != recorded.config_files {
            let show =
                |m: &Manifest| m.config_files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" ");
            format!("it was made with -c {}, not -c {}", show(recorded), show(self))
        } else {
            "the base configuration files changed since".to_string()
        }
    }
}

/// How a cell's run ended (its `cells/NAME.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CellStatus {
    /// ok, failed or interrupted.
    status: String,
    /// The run's exit code (128 + signal if it was killed).
    exit_code: i32,
    /// Wall time of the run in seconds.
    wall_s: f64,
    /// Task records written.
    records: Option<u64>,
    /// Records of failed tasks.
    failed_tasks: Option<u64>,
    /// Why it is not ok.
    detail: String,
}

/// The first signal the sweep received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The running cell's process id (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// The running cell's output (`cells/NAME.log`).
static CHILD_LOG: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
/// The first signal has been passed to the running cell.
static FORWARDED: AtomicBool = AtomicBool::new(false);

/// How long the first signal waits for the running cell to say it got the signal itself.
const GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Passes SIGINT, SIGTERM and SIGHUP on to the running cell, which runs in its own process group
/// (a terminal's Ctrl-C reaches the sweep only), and remembers the first.
///
/// A batch system's cancel (Slurm's scancel) signals every process of the job, the cell too, and
/// `taps run` takes a second SIGINT or SIGTERM as "exit at once, unrecorded". So the first
/// signal is passed on only if the cell has not logged within [`GRACE`] that it was interrupted,
/// and as SIGHUP, which `taps run` takes like SIGTERM but ignores when it is already stopping.
/// A second signal is passed on as it is: the user insists.
fn install_signal_forwarding() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
    let _ = std::thread::Builder::new().name("taps-sweep-signals".into()).spawn(move || {
        for sig in signals.forever() {
            if SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                pass_first_signal();
            } else if CHILD.load(Ordering::SeqCst) > 0 {
                // SAFETY: a plain syscall on the cell process this sweep started.
                unsafe { libc::kill(CHILD.load(Ordering::SeqCst), sig) };
            }
        }
    });
}

/// Passes the first signal to the running cell as SIGHUP unless it got one itself.
fn pass_first_signal() {
    let pid = CHILD.load(Ordering::SeqCst);
    let log = CHILD_LOG.lock().unwrap().clone();
    if pid <= 0 || FORWARDED.swap(true, Ordering::SeqCst) {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < GRACE && CHILD.load(Ordering::SeqCst) == pid {
        let told = log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .is_some_and(|t| t.contains("Interrupted by signal"));
        if told {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if CHILD.load(Ordering::SeqCst) == pid {
        // SAFETY: a plain syscall on the cell process this sweep started (still running: the
        // main thread clears CHILD before it reaps it).
        unsafe { libc::kill(pid, libc::SIGHUP) };
    }
}

/// Lines for the user: above a progress bar over cells on a terminal, plain lines otherwise.
struct Ui {
    bar: Option<indicatif::ProgressBar>,
}

impl Ui {
    fn new(total: u64, done: u64) -> Ui {
        if !std::io::stderr().is_terminal() {
            return Ui { bar: None };
        }
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} cells {pos}/{len} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_position(done);
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Ui { bar: Some(bar) }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{}", s),
        }
    }

    fn start(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.set_message(msg.to_string()),
            None => eprintln!("{}", msg),
        }
    }

    fn inc(&self) {
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// `taps sweep`: returns the exit code (0 every cell ok, 1 a cell failed, 2 bad input, 128 +
/// signal when interrupted).
pub fn main(args: SweepArgs) -> i32 {
    let plan = match plan(&args, &config::Limits::here()) {
        Ok(p) => p,
        Err(e) => return usage_error(e),
    };
    if args.dry_run {
        print!("{}", plan.listing());
        return 0;
    }
    match plan.run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("taps: error: sweep in {}: {:#}", plan.dir.display(), e);
            1
        }
    }
}

/// A checked sweep, before anything is created.
pub(crate) struct Plan {
    /// The sweep directory (absolute).
    pub dir: PathBuf,
    axes: Vec<Axis>,
    /// Every cell, in the order they run.
    pub cells: Vec<Cell>,
    manifest: Manifest,
    /// `sweep.json` is already there (a resumed sweep).
    pub resumed: bool,
    argv: String,
}

/// Checks the arguments, every cell's configuration (against `limits`) and the sweep directory.
pub(crate) fn plan(args: &SweepArgs, limits: &config::Limits) -> Result<Plan, String> {
    let mut axes: Vec<Axis> = Vec::new();
    for v in &args.vary {
        let a = parse_vary(v)?;
        if axes.iter().any(|b| b.key == a.key) {
            return Err(format!("--vary {}: the key {} is varied twice; give all its values in one --vary", v, a.key));
        }
        axes.push(a);
    }
    let config_files: Vec<PathBuf> =
        args.config.iter().map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone())).collect();
    let raw = RawArgs { config_files: config_files.clone(), sets: vec![], help: false };
    let base = config::layered_table(&raw).map_err(|e| e.to_string())?;
    let mpi = MpiDefaults {
        ranks: args.mpi_ranks,
        launcher: args.mpi_launcher.clone(),
        launcher_args: args.mpi_launcher_args.clone(),
    };
    let cells = cells(&base, &axes, args.repeat, &mpi, limits)?;
    let manifest = Manifest {
        config_files,
        base: toml::to_string(&base).map_err(|e| e.to_string())?,
        vary: axes.iter().map(|a| (a.key.clone(), a.values.iter().map(|v| v.to_string()).collect())).collect(),
        repeat: args.repeat,
        // Recorded where it matters: a sweep without MPI cells may resume in or out of a job.
        mpi: if cells.iter().any(|c| runs_on_mpi(&c.config)) {
            MpiDefaults { launcher_args: None, ..mpi }
        } else {
            MpiDefaults::default()
        },
    };
    let dir = std::path::absolute(&args.out).map_err(|e| format!("--out {}: {}", args.out.display(), e))?;
    let recorded_path = dir.join("sweep.json");
    let mut resumed = false;
    if dir.exists() {
        if !dir.is_dir() {
            return Err(format!("--out {}: exists and is not a directory", dir.display()));
        }
        if recorded_path.exists() {
            let text =
                std::fs::read_to_string(&recorded_path).map_err(|e| format!("{}: {}", recorded_path.display(), e))?;
            let recorded: Manifest = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a sweep record ({}); use another --out", recorded_path.display(), e))?;
            if recorded != manifest {
                return Err(format!(
                    "--out {} holds a different sweep: {}; resume it with its own arguments or use another --out",
                    dir.display(),
                    manifest.difference(&recorded)
                ));
            }
            resumed = true;
        } else if std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
            return Err(format!(
                "--out {}: a non-empty directory that holds no sweep (no sweep.json); use a new or empty directory",
                dir.display()
            ));
        }
    }
    let argv = std::env::args().map(|a| crate::shell::quote(&a)).collect::<Vec<_>>().join(" ");
    Ok(Plan { dir, axes, cells, manifest, resumed, argv })
}

impl Plan {
    /// The absolute base configuration files.
    pub fn config_files(&self) -> &[PathBuf] {
        &self.manifest.config_files
    }

    /// Creates the sweep directory and records the matrix in `sweep.json` (a resumed sweep has it).
    pub fn create(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.dir.join("cells"))?;
        if !self.resumed {
            crate::run::write_atomic(
                &self.dir.join("sweep.json"),
                serde_json::to_string_pretty(&self.manifest)?.as_bytes(),
            )?;
        }
        Ok(())
    }

    fn cell_dir(&self, c: &Cell) -> PathBuf {
        self.dir.join("cells").join(&c.name)
    }

    fn sibling(&self, c: &Cell, ext: &str) -> PathBuf {
        self.dir.join("cells").join(format!("{}.{}", c.name, ext))
    }

    /// A cell's recorded status, if it ran and its run directory is still there.
    fn status(&self, c: &Cell) -> Option<CellStatus> {
        let text = std::fs::read_to_string(self.sibling(c, "json")).ok()?;
        let s: CellStatus = serde_json::from_str(&text).ok()?;
        self.cell_dir(c).is_dir().then_some(s)
    }

    fn finished(&self, c: &Cell) -> bool {
        self.status(c).is_some_and(|s| s.status == "ok")
    }

    /// `taps sweep --dry-run`: one line per cell.
    fn listing(&self) -> String {
        let mut out = format!(
            "{} cell(s): {} combination(s) x {} repeat(s), in {}\n",
            self.cells.len(),
            self.cells.len() / self.manifest.repeat as usize,
            self.manifest.repeat,
            self.dir.display()
        );
        for (i, c) in self.cells.iter().enumerate() {
            let state = if self.resumed && self.finished(c) { "done" } else { "to run" };
            let kv: Vec<String> = self.axes.iter().zip(&c.values).map(|(a, v)| format!("{}={}", a.key, v)).collect();
            out.push_str(&format!("{:>4}  {:<6}  r{}  {}  cells/{}\n", i + 1, state, c.repeat, kv.join(" "), c.name));
        }
        out
    }

    /// Runs every unfinished cell, then writes `sweep.csv` and the report.
    fn run(&self) -> anyhow::Result<i32> {
        self.create()?;
        install_signal_forwarding();
        let exe = std::env::current_exe()?;
        let total = self.cells.len();
        let done_before = self.cells.iter().filter(|c| self.finished(c)).count();
        if done_before > 0 {
            eprintln!("taps: sweep: resuming: {} of {} cell(s) already finished, skipped", done_before, total);
        }
        let ui = Ui::new(total as u64, done_before as u64);
        for (i, c) in self.cells.iter().enumerate() {
            if SIGNAL.load(Ordering::SeqCst) != 0 {
                break;
            }
            if self.finished(c) {
                continue;
            }
            ui.start(&format!("[{}/{}] cells/{}", i + 1, total, c.name));
            let s = self.run_cell(&exe, c)?;
            let line = match s.status.as_str() {
                "ok" => format!("[{}/{}] cells/{}: ok in {:.1} s", i + 1, total, c.name, s.wall_s),
                _ => format!(
                    "[{}/{}] cells/{}: {} (exit {}) after {:.1} s: {}; see {}",
                    i + 1,
                    total,
                    c.name,
                    s.status,
                    s.exit_code,
                    s.wall_s,
                    s.detail,
                    self.sibling(c, "log").display()
                ),
            };
            ui.line(&line);
            ui.inc();
        }
        ui.finish();
        let statuses: Vec<Option<CellStatus>> = self.cells.iter().map(|c| self.status(c)).collect();
        let ok = statuses.iter().filter(|s| s.as_ref().is_some_and(|s| s.status == "ok")).count();
        let sig = SIGNAL.load(Ordering::SeqCst);
        let report = if sig == 0 { self.report(&exe, &statuses) } else { None };
        self.write_csv(&statuses, report.as_ref())?;
        if sig != 0 {
            eprintln!(
                "taps: sweep interrupted by signal {}: {} of {} cell(s) finished, sweep.csv written; resume with: {}",
                sig, ok, total, self.argv
            );
            return Ok(128 + sig);
        }
        println!("Sweep of {} cell(s) in {}: {} ok, {} failed", total, self.dir.display(), ok, total - ok);
        println!("Results: {}", self.dir.join("sweep.csv").display());
        if ok < total {
            eprintln!(
                "taps: sweep: {} cell(s) failed; rerun the same command to run them again: {}",
                total - ok,
                self.argv
            );
            return Ok(1);
        }
        Ok(0)
    }

    /// Runs one cell as `taps run -c BASE... cells/NAME.toml --run-dir cells/NAME` in a fresh
    /// run directory (what an earlier attempt left is removed first) and records how it ended.
    fn run_cell(&self, exe: &Path, c: &Cell) -> anyhow::Result<CellStatus> {
        let dir = self.cell_dir(c);
        let status_file = self.sibling(c, "json");
        let _ = std::fs::remove_file(&status_file);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let over = self.sibling(c, "toml");
        crate::run::write_atomic(&over, toml::to_string(&c.overrides)?.as_bytes())?;
        std::fs::create_dir(&dir)?;
        let log = std::fs::File::create(self.sibling(c, "log"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("run")
            .arg("-c")
            .args(&self.manifest.config_files)
            .arg(&over)
            .arg("--run-dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let start = Instant::now();
        FORWARDED.store(false, Ordering::SeqCst);
        *CHILD_LOG.lock().unwrap() = Some(self.sibling(c, "log"));
        let mut child = cmd.spawn()?;
        CHILD.store(child.id() as i32, Ordering::SeqCst);
        if SIGNAL.load(Ordering::SeqCst) != 0 && !FORWARDED.swap(true, Ordering::SeqCst) {
            // A signal came while the cell was starting: it cannot have had it itself.
            // SAFETY: a plain syscall on the child just started.
            unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
        }
        wait_unreaped(child.id());
        CHILD.store(0, Ordering::SeqCst);
        let exit = child.wait()?;
        let wall_s = start.elapsed().as_secs_f64();
        use std::os::unix::process::ExitStatusExt;
        let exit_code = exit.code().unwrap_or_else(|| 128 + exit.signal().unwrap_or(0));
        let records =
            c.config.engine.task_record_file_name.as_ref().map(|f| crate::record::count_records(&dir.join(f)));
        let (n, failed) = match &records {
            Some(Ok((n, f))) => (Some(*n), Some(*f)),
            _ => (None, None),
        };
        let (status, detail) = match (&records, exit_code) {
            (Some(Err(e)), 0) => ("failed", format!("incomplete task records: {:#}", e)),
            (_, 0) => ("ok", String::new()),
            _ if SIGNAL.load(Ordering::SeqCst) != 0 => ("interrupted", "interrupted by a signal".to_string()),
            _ => ("failed", last_error_line(&self.sibling(c, "log"))),
        };
        let s = CellStatus { status: status.into(), exit_code, wall_s, records: n, failed_tasks: failed, detail };
        crate::run::write_atomic(&status_file, serde_json::to_string_pretty(&s)?.as_bytes())?;
        Ok(s)
    }

    /// Runs `taps report` on the finished cells: writes `report.md` and `report.html` and returns
    /// its CSV columns (without `run_dir`) and rows by run directory, or `None` after a warning
    /// when this taps has no `taps report` or it failed.
    fn report(&self, exe: &Path, statuses: &[Option<CellStatus>]) -> Option<ReportColumns> {
        use clap::CommandFactory;
        if crate::cli::Cli::command().find_subcommand("report").is_none() {
            eprintln!(
                "taps: warning: this taps has no `taps report`: sweep.csv has no report columns, and report.md and report.html are not written"
            );
            return None;
        }
        let dirs: Vec<PathBuf> = self
            .cells
            .iter()
            .zip(statuses)
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.status == "ok"))
            .map(|(c, _)| self.cell_dir(c))
            .collect();
        if dirs.is_empty() {
            return None;
        }
        let report = |args: &[&str], stdout: Stdio| -> Result<Vec<u8>, String> {
            let out = Command::new(exe)
                .arg("report")
                .args(args)
                .args(&dirs)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(format!("taps report {} failed ({}): {}", args.join(" "), out.status, err.trim()));
            }
            Ok(out.stdout)
        };
        let warn = |e: String| eprintln!("taps: warning: {}", e.split_whitespace().collect::<Vec<_>>().join(" "));
        match report(&["--format", "markdown"], Stdio::piped()) {
            Ok(md) => {
                if let Err(e) = crate::run::write_atomic(&self.dir.join("report.md"), &md) {
                    warn(format!("cannot write report.md: {}", e));
                }
            }
            Err(e) => warn(e),
        }
        let html = self.dir.join("report.html");
        if let Err(e) = report(&["--html", &html.to_string_lossy()], Stdio::null()) {
            warn(e);
        }
        match report(&["--format", "csv"], Stdio::piped()).and_then(|csv| ReportColumns::parse(&csv)) {
            Ok(r) => Some(r),
            Err(e) => {
                warn(format!("{}; sweep.csv has no report columns", e));
                None
            }
        }
    }

    /// Writes `sweep.csv`: one row per cell.
    fn write_csv(&self, statuses: &[Option<CellStatus>], report: Option<&ReportColumns>) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header: Vec<String> = self.axes.iter().map(|a| a.key.clone()).collect();
        for h in ["repeat", "status", "run_dir", "exit_code", "wall_s", "records", "failed_tasks"] {
            header.push(h.into());
        }
        if let Some(r) = report {
            let ours = header.clone();
            header.extend(r.header.iter().map(|h| if ours.contains(h) { format!("report_{}", h) } else { h.clone() }));
        }
        w.write_record(&header)?;
        for (c, s) in self.cells.iter().zip(statuses) {
            let mut row: Vec<String> = c.values.iter().map(show_value).collect();
            row.push(c.repeat.to_string());
            let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
            match s {
                Some(s) => row.extend([
                    s.status.clone(),
                    self.cell_dir(c).display().to_string(),
                    s.exit_code.to_string(),
                    format!("{:.3}", s.wall_s),
                    opt(s.records),
                    opt(s.failed_tasks),
                ]),
                None => row.extend([
                    "pending".into(),
                    self.cell_dir(c).display().to_string(),
                    "".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                ]),
            }
            if let Some(r) = report {
                row.extend(r.row(&self.cell_dir(c)));
            }
            w.write_record(&row)?;
        }
        let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{}", e))?;
        crate::run::write_atomic(&self.dir.join("sweep.csv"), &bytes)?;
        Ok(())
    }
}

/// The columns of `taps report --format csv` after its first, `run_dir`, and the first row of
/// every run directory.
#[derive(Debug)]
struct ReportColumns {
    header: Vec<String>,
    rows: std::collections::HashMap<PathBuf, Vec<String>>,
}

impl ReportColumns {
    fn parse(bytes: &[u8]) -> Result<ReportColumns, String> {
        let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
        let header: Vec<String> = r.headers().map_err(|e| e.to_string())?.iter().map(str::to_string).collect();
        if header.first().map(String::as_str) != Some("run_dir") {
            return Err(format!("taps report --format csv: its first column is {:?}, not run_dir", header.first()));
        }
        let mut rows = std::collections::HashMap::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| format!("taps report --format csv: {}", e))?;
            let dir = PathBuf::from(rec.get(0).unwrap_or_default());
            let key = dir.canonicalize().unwrap_or(dir);
            let mut cols: Vec<String> = rec.iter().skip(1).map(str::to_string).collect();
            cols.resize(header.len() - 1, String::new());
            rows.entry(key).or_insert(cols);
        }
        Ok(ReportColumns { header: header[1..].to_vec(), rows })
    }

    /// The report's columns for a run directory (empty when the report has no row for it).
    fn row(&self, dir: &Path) -> Vec<String> {
        let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        self.rows.get(&key).cloned().unwrap_or_else(|| vec![String::new(); self.header.len()])
    }
}

/// Waits until process `pid` (a child) has exited, leaving it unreaped: its pid cannot be reused
/// while [`CHILD`] names it.
fn wait_unreaped(pid: u32) {
    loop {
        // SAFETY: waitid on our own child with a zeroed siginfo_t to fill; WNOWAIT leaves it a
        // zombie for Child::wait.
        let r = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// The last line of a cell's output that reports an error (else its last line).
fn last_error_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|l| l.contains("error"))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "no output".into())
}

/// Whether `cfg` runs as an MPI job (never in a build without the mpi feature).
pub(crate) fn runs_on_mpi(cfg: &crate::config::Config) -> bool {
    #[cfg(feature = "mpi")]
    return crate::mpi_launch::job(cfg).is_some();
    #[cfg(not(feature = "mpi"))]
    {
        let _ = cfg;
        false
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_at_top_level_commas_only() {
        assert_eq!(split_values("a,b,c"), ["a", "b", "c"]);
        assert_eq!(split_values("[1,2],[3,4]"), ["[1,2]", "[3,4]"]);
        assert_eq!(split_values(r#""a,b",'c,d',{x = 1, y = 2}"#), [r#""a,b""#, "'c,d'", "{x = 1, y = 2}"]);
        assert_eq!(split_values(r#""a\",b",c"#), [r#""a\",b""#, "c"]);
    }

    #[test]
    fn vary_values_are_toml_or_bare_words() {
        let a = parse_vary("engine.executor=thread-pool,process-pool").unwrap();
        assert_eq!(a.key, "engine.executor.name");
        assert_eq!(a.values, [toml::Value::String("thread-pool".into()), toml::Value::String("process-pool".into())]);
        let a = parse_vary("app.task-data-bytes=10000,1e6,true,[1,2]").unwrap();
        assert_eq!(a.key, "app.task_data_bytes");
        assert_eq!(a.values[0], toml::Value::Integer(10000));
        assert_eq!(a.values[1], toml::Value::Float(1e6));
        assert_eq!(a.values[2], toml::Value::Boolean(true));
        assert!(a.values[3].is_array());
        assert_eq!(parse_vary("executor=mpi").unwrap().key, "engine.executor.name");
        assert_eq!(parse_vary("app=synthetic").unwrap().key, "app.name");
        assert_eq!(parse_vary("filter=null").unwrap().key, "engine.filter.name");
        for bad in ["app.x", "app.x=", "app.x=1,,2", "app.x=1,1", "app x=1", "app.x=[1,2", "app.x=a b", "=1"] {
            assert!(parse_vary(bad).is_err(), "{} should be refused", bad);
        }
    }

    #[test]
    fn report_columns_join_on_the_run_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        // The report may name a run as given or through another path to it; its first row wins.
        let text = format!(
            "run_dir,makespan_s,status\n{}/../a,1.5,x\n{},2.5,y\n{},9,z\n",
            b.display(),
            b.display(),
            b.display()
        );
        let r = ReportColumns::parse(text.as_bytes()).unwrap();
        assert_eq!(r.header, ["makespan_s", "status"]);
        assert_eq!(r.row(&a), ["1.5", "x"]);
        assert_eq!(r.row(&b), ["2.5", "y"]);
        assert_eq!(r.row(&tmp.path().join("c")), ["", ""]);
        assert!(ReportColumns::parse(b"app,makespan\nx,1\n").unwrap_err().contains("not run_dir"));
    }

    #[test]
    fn cell_names_are_file_names() {
        let axes = vec![
            Axis { key: "engine.executor.name".into(), values: vec![] },
            Axis { key: "app.x".into(), values: vec![] },
        ];
        let v = [toml::Value::String("thread-pool".into()), toml::Value::Array(vec![1.into(), 2.into()])];
        assert_eq!(cell_name(&axes, &v, 2), "engine.executor=thread-pool_app.x=_1__2__r2");
    }
}
