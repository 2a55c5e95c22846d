//! `failures`: runs another app (the base) with faults injected into its tasks — exceptions,
//! panics, missing libraries, timeouts, memory and descriptor exhaustion, failed dependencies,
//! and killed workers, managers or nodes — and reports how the run coped.
//!
//! The base app runs on an engine view ([`Engine::with_hook`]) whose hook replaces each task by
//! a registered wrapper (`failures.inject`) carrying an [`Injection`] and the base task's name;
//! on the worker the wrapper either fires the failure or calls the base task by name. Records
//! keep the base task names. For `dependency`, each base task gets an extra parent,
//! `injected_parent_task`, which fails when picked, so each base task becomes two tasks.
//!
//! Whether a task is picked is drawn by the driver at submission (`draw < failure-rate`, so a
//! rate of 0 never fires and 1 always does), which keeps the counts exact when the process that
//! would report a fault is killed by it, and makes runs with a `seed` repeatable.

pub mod inject;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};

use crate::app::{App, AppConfig, AppPlugin, Footprint};
use crate::app_info;
use crate::engine::{Engine, SubmitHook, TaskCell, TaskFuture};
use crate::options::{OptValue, Options, Validate};
use crate::plugins::{Plugin, PluginOptions, Selected};
use crate::task::{ErrorKind, Payload, Registry, Slot, Task, TaskDef, TaskError};

pub use inject::Injection;

/// A kind of injected failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FailureType {
    /// An extra parent task fails, so the task fails without running.
    Dependency,
    /// The task returns an error (`failure` is accepted as an alias).
    Exception,
    /// The task fails with a division by zero.
    ZeroDivision,
    /// The task panics.
    Panic,
    /// The task cannot load a shared library (a missing module).
    Import,
    /// The task runs past its deadline and is failed.
    Timeout,
    /// The task allocates memory up to a limit and fails.
    Memory,
    /// The task exhausts its process's file descriptors and fails.
    Ulimit,
    /// The worker process running the task is killed.
    WorkerKilled,
    /// The process that owns the worker (the taps driver) is sent SIGTERM.
    ManagerKilled,
    /// Every worker process of the run on the host is killed.
    NodeKilled,
    /// One of the others, drawn per task.
    Random,
}

impl FailureType {
    /// Every value, in order.
    pub const ALL: &'static [FailureType] = &[
        FailureType::Dependency,
        FailureType::Exception,
        FailureType::ZeroDivision,
        FailureType::Panic,
        FailureType::Import,
        FailureType::Timeout,
        FailureType::Memory,
        FailureType::Ulimit,
        FailureType::WorkerKilled,
        FailureType::ManagerKilled,
        FailureType::NodeKilled,
        FailureType::Random,
    ];

    /// The values `random` draws from (all but `random`).
    pub fn concrete() -> &'static [FailureType] {
        &Self::ALL[..Self::ALL.len() - 1]
    }

    /// The name used in configs.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureType::Dependency => "dependency",
            FailureType::Exception => "exception",
            FailureType::ZeroDivision => "zero-division",
            FailureType::Panic => "panic",
            FailureType::Import => "import",
            FailureType::Timeout => "timeout",
            FailureType::Memory => "memory",
            FailureType::Ulimit => "ulimit",
            FailureType::WorkerKilled => "worker-killed",
            FailureType::ManagerKilled => "manager-killed",
            FailureType::NodeKilled => "node-killed",
            FailureType::Random => "random",
        }
    }

    /// Reads a name (any case, `_` or `-`); `failure` is the Python suite's name for `exception`.
    pub fn parse(s: &str) -> Option<FailureType> {
        let t = s.trim().to_ascii_lowercase().replace('_', "-");
        if t == "failure" {
            return Some(FailureType::Exception);
        }
        Self::ALL.iter().copied().find(|f| f.as_str() == t)
    }

    /// The record's exception type for failures that refuse to fire.
    fn error_kind(&self) -> &'static str {
        match self {
            FailureType::WorkerKilled => "WorkerKilled",
            FailureType::NodeKilled => "NodeKilled",
            FailureType::ManagerKilled => "ManagerKilled",
            _ => "InjectionError",
        }
    }
}

impl std::fmt::Display for FailureType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl OptValue for FailureType {
    fn type_name() -> String {
        let mut names: Vec<&str> = Self::ALL.iter().map(|f| f.as_str()).collect();
        names.insert(2, "failure");
        names.join("|")
    }
    fn from_toml(v: &toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::String(s) => Self::from_cli(s),
            _ => Err(format!("expected one of {}, got {}", Self::type_name(), crate::options::describe(v))),
        }
    }
    /// `exception` is written as the Python suite's `failure`, so that suite can read the file.
    fn to_toml(&self) -> toml::Value {
        let name = if *self == FailureType::Exception { "failure" } else { self.as_str() };
        toml::Value::String(name.into())
    }
    fn from_cli(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            format!("expected one of {} (failure is an alias of exception), got {:?}", Self::type_name(), s)
        })
    }
}

crate::options! {
    /// Options of the `failures` app.
    pub(crate) struct FailuresOptions {
        /// The app to inject failures into (any app but failures).
        base: String,
        /// The base app's options (taps run --app BASE --help lists them): an [app.config] table, or a JSON object on the CLI.
        config: toml::Table = toml::Table::new(),
        /// Probability in [0, 1] that a task gets a failure (0 never, 1 always).
        failure_rate: f64 = 1.0,
        /// What fails.
        failure_type: FailureType = FailureType::Dependency,
        /// Seed for the draws (which tasks fail, and which type with random); none = fresh each run.
        seed: Option<u64> = None,
        /// timeout: seconds an injected task runs before it is failed.
        #[skip_default] timeout_seconds: f64 = 1.0,
        /// memory: bytes an injected task allocates before it fails (it stops early to keep half of the host's memory available).
        #[skip_default] memory_limit: u64 = 1 << 30,
        /// ulimit: file descriptors an injected task may open beyond those already open.
        #[skip_default] ulimit_files: u64 = 64,
    }
}

impl Validate for FailuresOptions {
    /// The base app and its options are checked by [`parse`], which reads them once.
    fn validate(&self) -> Result<(), String> {
        base_plugin(&self.base)?;
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(format!("app.failure_rate must be in the range [0, 1], got {}", self.failure_rate));
        }
        if !(self.timeout_seconds > 0.0 && self.timeout_seconds.is_finite()) {
            return Err(format!("app.timeout_seconds must be a finite number > 0, got {}", self.timeout_seconds));
        }
        crate::options::check_seconds("app.timeout_seconds", self.timeout_seconds, crate::options::MAX_SECONDS)?;
        if self.memory_limit == 0 {
            return Err("app.memory_limit must be at least 1 byte".into());
        }
        if self.ulimit_files == 0 {
            return Err("app.ulimit_files must be at least 1".into());
        }
        Ok(())
    }
}

/// The apps a failures run can wrap (every app but this one), sorted.
pub(crate) fn base_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = crate::apps::ALL.iter().map(|a| a.plugin.name).filter(|n| *n != NAME).collect();
    v.sort_unstable();
    v
}

fn base_plugin(name: &str) -> Result<&'static AppPlugin, String> {
    let names = base_names();
    if name == NAME {
        return Err(format!("app.base: the failures app cannot wrap itself; supported apps: {}", names.join(", ")));
    }
    crate::apps::ALL.iter().find(|a| a.plugin.name == name && name != NAME).ok_or_else(|| {
        let mut msg = format!("app.base: base app named {:?} is unknown", name);
        if let Some(s) = crate::options::did_you_mean(name, names.iter().copied()) {
            msg.push_str(&format!(" (did you mean {:?}?)", s));
        }
        msg.push_str(&format!("; supported apps: {}", names.join(", ")));
        msg
    })
}

/// The base app's options, read and checked by the base app itself; its errors, which name its
/// keys `app.<key>`, its flags `--app.<key> VALUE` and its table `[app]`, are rewritten to name
/// `app.config.<key>`, `--app.config '{"<key>": VALUE}'` and `[app.config]`.
fn base_config(base: &AppPlugin, config: &toml::Table) -> Result<Selected<dyn AppConfig>, String> {
    base.plugin.select(config, "app").map_err(|e| {
        let re = |r: &str| regex::Regex::new(r).expect("valid regex");
        let key = |c: &regex::Captures, i: usize| c[i].replace('-', "_");
        let e = re(r"(^|[^\w.\[-])app\.(\w)").replace_all(&e, "${1}app.config.${2}").into_owned();
        let e = re(r"--app\.([\w-]+) (VALUE|N)\b")
            .replace_all(&e, |c: &regex::Captures| format!("--app.config '{{\"{}\": {}}}'", key(c, 1), &c[2]))
            .into_owned();
        let e = re(r"--app\.([\w-]+)").replace_all(&e, |c: &regex::Captures| match &c[1] {
            "config" => c[0].to_string(),
            _ => format!("app.config.{}", key(c, 1)),
        });
        e.replace("[app]", "[app.config]")
    })
}

/// The app's name.
pub const NAME: &str = "failures";

/// The plugin entry.
pub const PLUGIN: AppPlugin = AppPlugin {
    plugin: Plugin {
        name: NAME,
        about: "inject failures (exceptions, timeouts, killed workers, ...) into another app's tasks",
        fields: FailuresOptions::fields,
        parse,
    },
    register_tasks,
};

/// The failures app's options and its base app's, parsed by the base app itself.
#[derive(Debug)]
pub(crate) struct FailuresConfig {
    /// The failures app's own options.
    pub opts: FailuresOptions,
    /// The base app.
    pub base: Selected<dyn AppConfig>,
}

fn parse(t: &toml::Table, section: &str) -> Result<Arc<dyn AppConfig>, String> {
    let opts = FailuresOptions::from_table(t, section)?;
    let base = base_config(base_plugin(&opts.base)?, &opts.config)?;
    Ok(Arc::new(FailuresConfig { opts, base }))
}

impl PluginOptions for FailuresConfig {
    /// The options with the base app's table complete (so `config.toml` shows all of it).
    fn to_table(&self) -> toml::Table {
        let mut out = Options::to_table(&self.opts);
        out.insert("config".into(), toml::Value::Table(self.base.options.to_table()));
        out
    }
}

impl AppConfig for FailuresConfig {
    fn get_app(&self, run_dir: &Path) -> anyhow::Result<Box<dyn App>> {
        let base = self.base.options.get_app(run_dir)?;
        Ok(Box::new(FailuresApp { opts: self.opts.clone(), base }))
    }

    fn preflight(&self) -> Result<(), String> {
        self.base.options.preflight()
    }

    /// The base app's footprint (its options named `app.config.<key>`).
    fn footprint(&self) -> Footprint {
        let mut f = self.base.options.footprint();
        f.memory_for = f.memory_for.replace("app.", "app.config.");
        for (key, _) in &mut f.files {
            *key = key.replacen("app.", "app.config.", 1);
        }
        f
    }
}

/// Name of the wrapper that fires a failure or runs the base task.
pub(crate) const INJECT: &str = "failures.inject";
/// Name of the wrapper that drops its injected parent's result and runs the base task.
pub(crate) const AFTER_PARENT: &str = "failures.after-parent";

/// `injected_parent_task(fire)`: the extra parent of the `dependency` failure.
pub(crate) struct InjectedParent;

impl Task for InjectedParent {
    const NAME: &'static str = "injected_parent_task";
    type Args = (bool,);
    type Output = ();
    fn run((fire,): (bool,)) -> Result<(), TaskError> {
        if fire {
            Err(TaskError::exception("ParentDependencyError", "Simulated failure in parent task.")
                .with_traceback("injected by the failures app"))
        } else {
            Ok(())
        }
    }
}

fn register_tasks(r: &mut Registry) {
    r.add::<InjectedParent>();
    r.add_def(TaskDef { name: INJECT, call: call_inject });
    r.add_def(TaskDef { name: AFTER_PARENT, call: call_after_parent });
}

fn next_arg(it: &mut std::vec::IntoIter<Payload>, what: &str) -> Result<Payload, TaskError> {
    it.next().ok_or_else(|| TaskError::new(ErrorKind::Argument, format!("{}: missing {}", INJECT, what)))
}

/// Slots: [injection, base task name, base task arguments...].
fn call_inject(args: Vec<Payload>) -> Result<Payload, TaskError> {
    let mut it = args.into_iter();
    let spec: Injection = next_arg(&mut it, "the injection")?.into_value()?;
    let name: String = next_arg(&mut it, "the task name")?.into_value()?;
    if spec.fire {
        return Err(inject::fire(&spec));
    }
    (crate::task::lookup(&name)?.call)(it.collect())
}

/// Slots: [injected parent's result, base task name, base task arguments...].
fn call_after_parent(args: Vec<Payload>) -> Result<Payload, TaskError> {
    let mut it = args.into_iter();
    next_arg(&mut it, "the parent's result")?;
    let name: String = next_arg(&mut it, "the task name")?.into_value()?;
    (crate::task::lookup(&name)?.call)(it.collect())
}

/// Counts for one failure type (or all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Base tasks submitted with this type.
    pub tasks: u64,
    /// Of those, picked by the draw.
    pub injected: u64,
    /// Of those, whose record says success=false (for any reason).
    pub failed: u64,
    /// Injected tasks whose record still says success=true.
    pub recovered: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.tasks += o.tasks;
        self.injected += o.injected;
        self.failed += o.failed;
        self.recovered += o.recovered;
    }
}

/// What the injection did, per type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Counts by the type each task was given.
    pub by_type: BTreeMap<FailureType, Counts>,
}

impl Summary {
    /// Totals over all types.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for c in self.by_type.values() {
            t.add(c);
        }
        t
    }

    /// The APP log line.
    pub fn line(&self) -> String {
        let t = self.total();
        let types: Vec<String> = self
            .by_type
            .iter()
            .map(|(k, c)| {
                format!(
                    "{}: tasks={} injected={} failed={} recovered={}",
                    k, c.tasks, c.injected, c.failed, c.recovered
                )
            })
            .collect();
        let types = if types.is_empty() { "none".to_string() } else { types.join("; ") };
        format!(
            "Failure injection summary: injected={} failed={} recovered={} by type: {}",
            t.injected, t.failed, t.recovered, types
        )
    }
}

/// A base task whose outcome is not known yet.
struct Pending {
    kind: FailureType,
    fired: bool,
    cell: Arc<TaskCell>,
}

#[derive(Default)]
struct Tally {
    pending: Vec<Pending>,
    prune_at: usize,
    summary: Summary,
}

impl Tally {
    fn settle(&mut self, kind: FailureType, fired: bool, ok: bool) {
        let c = self.summary.by_type.entry(kind).or_default();
        c.tasks += 1;
        c.injected += fired as u64;
        c.failed += !ok as u64;
        c.recovered += (fired && ok) as u64;
    }

    /// Folds finished tasks into the counts (so their results are not kept alive).
    fn prune(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let f = TaskFuture::<()>::from_cell(p.cell.clone());
            if f.done() {
                self.settle(p.kind, p.fired, f.exception().is_none());
            } else {
                self.pending.push(p);
            }
        }
        self.prune_at = (2 * self.pending.len()).max(64);
    }
}

/// The driver's draws, in submission order: the failure type of each task (a fresh one per
/// task for `random`) and whether it is picked (`draw < rate`: 0 never fires, 1 always does).
/// With a seed, the same submissions get the same draws.
///
/// ```
/// use taps::apps::failures::{Draws, FailureType};
/// let a: Vec<_> = Draws::new(FailureType::Random, 0.5, Some(7)).take(20).collect();
/// let b: Vec<_> = Draws::new(FailureType::Random, 0.5, Some(7)).take(20).collect();
/// assert_eq!(a, b);
/// assert!(Draws::new(FailureType::Exception, 0.0, None).take(1000).all(|(_, fire)| !fire));
/// assert!(Draws::new(FailureType::Exception, 1.0, None).take(1000).all(|(_, fire)| fire));
/// ```
pub struct Draws {
    rng: SmallRng,
    kind: FailureType,
    rate: f64,
}

impl Draws {
    /// Draws for `kind` at `rate`; `seed` none = a fresh seed.
    pub fn new(kind: FailureType, rate: f64, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        Draws { rng, kind, rate }
    }
}

impl Iterator for Draws {
    type Item = (FailureType, bool);
    fn next(&mut self) -> Option<(FailureType, bool)> {
        let kind = match self.kind {
            FailureType::Random => {
                let c = FailureType::concrete();
                c[self.rng.random_range(0..c.len())]
            }
            k => k,
        };
        // random() is in [0, 1).
        Some((kind, self.rng.random::<f64>() < self.rate))
    }
}

/// The submit hook: picks tasks and wraps them.
pub(crate) struct Injector {
    template: Injection,
    draws: Mutex<(Draws, u64)>,
    tally: Mutex<Tally>,
}

impl Injector {
    /// An injector for `opts`; `marker` is the once-per-run file of `manager-killed`.
    pub fn new(opts: &FailuresOptions, marker: PathBuf) -> Self {
        let template = Injection {
            kind: FailureType::Exception,
            fire: false,
            number: 0,
            driver_pid: std::process::id(),
            driver_host: crate::engine::hostname().to_string(),
            driver_token: inject::process_token(),
            timeout_seconds: opts.timeout_seconds,
            memory_limit: opts.memory_limit,
            ulimit_files: opts.ulimit_files,
            marker,
        };
        Injector {
            template,
            draws: Mutex::new((Draws::new(opts.failure_type, opts.failure_rate, opts.seed), 0)),
            tally: Mutex::new(Tally::default()),
        }
    }

    /// Waits for every base task to finish and returns the counts.
    pub fn finish(&self) -> Summary {
        let pending = std::mem::take(&mut self.tally.lock().unwrap().pending);
        let mut settled = Vec::with_capacity(pending.len());
        for p in pending {
            let ok = TaskFuture::<()>::from_cell(p.cell).exception().is_none();
            settled.push((p.kind, p.fired, ok));
        }
        let mut t = self.tally.lock().unwrap();
        for (k, f, ok) in settled {
            t.settle(k, f, ok);
        }
        t.summary.clone()
    }

    /// The type, pick and number of the next task.
    fn draw(&self) -> (FailureType, bool, u64) {
        let mut g = self.draws.lock().unwrap();
        let (kind, fire) = g.0.next().expect("endless");
        g.1 += 1;
        (kind, fire, g.1)
    }
}

impl SubmitHook for Injector {
    fn submit(&self, base: &Engine, def: &'static TaskDef, name: &'static str, slots: Vec<Slot>) -> Arc<TaskCell> {
        let (kind, fire, number) = self.draw();
        let wrapper = crate::task::lookup(if kind == FailureType::Dependency { AFTER_PARENT } else { INJECT });
        let Ok(wrapper) = wrapper else {
            tracing::warn!("failures: the wrapper tasks are not registered; {} runs without injection", name);
            return base.submit_named::<()>(def, name, slots).cell().clone();
        };
        let mut s = Vec::with_capacity(slots.len() + 2);
        if kind == FailureType::Dependency {
            let parent = base.submit::<InjectedParent>((fire.into(),));
            s.push(Slot::Future(parent.cell().clone()));
        } else {
            let spec = Injection { kind, fire, number, ..self.template.clone() };
            s.push(Slot::Value(Payload::local(spec)));
        }
        s.push(Slot::Value(Payload::local(def.name.to_string())));
        s.extend(slots);
        let cell = base.submit_named::<()>(wrapper, name, s).cell().clone();
        let mut t = self.tally.lock().unwrap();
        t.pending.push(Pending { kind, fired: fire, cell: cell.clone() });
        if t.pending.len() >= t.prune_at {
            t.prune();
        }
        cell
    }
}

/// The failures app: the base app, run through an [`Injector`].
pub(crate) struct FailuresApp {
    opts: FailuresOptions,
    base: Box<dyn App>,
}

/// File in the run directory created when `manager-killed` signals the driver.
pub(crate) const MARKER: &str = "failures-manager-killed.txt";

impl App for FailuresApp {
    fn run(&mut self, engine: &Engine, run_dir: &Path) -> anyhow::Result<()> {
        app_info!(
            "Injecting failures into the {} app (type={}, rate={})",
            self.opts.base,
            self.opts.failure_type,
            self.opts.failure_rate
        );
        let marker = std::path::absolute(run_dir.join(MARKER)).unwrap_or_else(|_| run_dir.join(MARKER));
        let injector = Arc::new(Injector::new(&self.opts, marker));
        let view = engine.with_hook(injector.clone());
        let result = self.base.run(&view, run_dir);
        drop(view);
        // Every base task has finished (and has its record) before the counts are final.
        app_info!("{}", injector.finish().line());
        result.with_context(|| {
            format!(
                "the {} app failed with failures injected (type={}, rate={})",
                self.opts.base, self.opts.failure_type, self.opts.failure_rate
            )
        })
    }

    fn save(&mut self, run_dir: &Path) -> anyhow::Result<()> {
        self.base.save(run_dir)
    }

    fn close(&mut self) -> anyhow::Result<()> {
        self.base.close()
    }
}
