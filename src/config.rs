//! The benchmark configuration: defaults < each `--config` TOML file in order < CLI flags.
//!
//! Sections and keys are the Python suite's: `[app]`, `[engine]`, `[engine.executor]`,
//! `[engine.filter]`, `[engine.transformer]`, `[logging]`, `[run]` (+ `[run.env_vars]`) and a
//! top-level `version`; plugins are chosen with `name` keys or `--app`, `--engine.executor`
//! (`--executor`), `--engine.filter` (`--filter`), `--engine.transformer` (`--transformer`).
//! Unknown keys are rejected with the valid ones and a did-you-mean.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::app::AppConfig;
use crate::data::{FilterConfig, TransformerConfig};
use crate::executor::ExecutorConfig;
pub(crate) use crate::limits::{Limits, check_limits};
use crate::logging::LogLevel;
use crate::options::{FieldSpec, Options, Validate, did_you_mean};
use crate::plugins::{Plugin, Selected};

/// A configuration error: the CLI prints it as one line, exits with code 2 and creates nothing.
/// Each message names the key, flag or file and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file that cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A config file that is not valid TOML.
    #[error("config file {}{}: {message}", path.display(), line.map(|l| format!(", line {}", l)).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line of the error, when known.
        line: Option<usize>,
        /// The TOML parser's message.
        message: String,
    },
    /// An argument of `taps run` that is not `-c FILE…` or `--key VALUE`.
    #[error("{0}")]
    Usage(String),
    /// A plugin (app, executor, filter, transformer) this build does not have.
    #[error("{0}")]
    UnknownPlugin(String),
    /// A key or flag that no selected section has.
    #[error("{0}")]
    UnknownOption(String),
    /// A value that is not allowed.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for ConfigError {
    /// An option set's own check (options, `Validate`): a value that is not allowed.
    fn from(s: String) -> Self {
        ConfigError::Invalid(s)
    }
}

crate::options! {
    /// `[engine]` options.
    pub struct EngineOptions {
        /// Task record file in the run directory (none = no records).
        task_record_file_name: Option<String> = Some("tasks.jsonl".into()),
    }
}

crate::options! {
    /// `[logging]` options.
    pub struct LoggingOptions {
        /// Level of log lines on stdout (TRACE, DEBUG, INFO, APP, RUN, WARNING, ERROR or a number).
        level: LogLevel = LogLevel::Name("INFO".into()),
        /// Level of log lines in the log file (none = same as level).
        file_level: Option<LogLevel> = None,
        /// Log file in the run directory (none = no log file).
        file_name: Option<String> = Some("log.txt".into()),
    }
}

crate::options! {
    /// `[run]` options.
    pub struct RunOptions {
        /// Run directory template; placeholders {name}, {executor}, {timestamp}.
        dir_format: String = "runs/{name}_{executor}_{timestamp}".into(),
        /// Environment variables set for the duration of the run (JSON object or KEY=VALUE,... on the CLI; repeated flags merge).
        #[skip_default] env_vars: BTreeMap<String, String> = BTreeMap::new(),
    }
}

impl Validate for EngineOptions {
    fn validate(&self) -> Result<(), String> {
        if let Some(f) = &self.task_record_file_name {
            check_file_name("engine.task_record_file_name", f)?;
        }
        Ok(())
    }
}

impl Validate for LoggingOptions {
    fn validate(&self) -> Result<(), String> {
        if let Some(f) = &self.file_name {
            check_file_name("logging.file_name", f)?;
        }
        Ok(())
    }
}

impl Validate for RunOptions {
    fn validate(&self) -> Result<(), String> {
        crate::rundir::check_format(&self.dir_format).map_err(|e| format!("run.dir_format: {}", e))?;
        for (k, v) in &self.env_vars {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!(
                    "run.env_vars: {:?} is not a valid environment variable name (it must be non-empty, without '=' or NUL)",
                    k
                ));
            }
            if v.contains('\0') {
                return Err(format!("run.env_vars: the value of {} contains a NUL byte", k));
            }
        }
        Ok(())
    }
}

/// The longest file name most filesystems take (NAME_MAX).
const NAME_MAX: usize = 255;

/// Checks a file name option: one non-empty component inside the run directory.
pub(crate) fn check_file_name(key: &str, f: &str) -> Result<(), String> {
    if f.is_empty() || f.contains('/') || f.contains('\0') || f == "." || f == ".." {
        return Err(format!("{}: expected a file name inside the run directory (or none), got {:?}", key, f));
    }
    if f.len() > NAME_MAX {
        return Err(format!("{}: the file name is {} bytes long, at most {} are allowed", key, f.len(), NAME_MAX));
    }
    Ok(())
}

/// Files every run writes in its run directory, besides those named by options (`taps submit`
/// adds its job files).
const RUN_FILES: &[&str] = {
    use crate::launchers::job::{EXIT, RECORD, SCRIPT, STDERR, STDOUT};
    &["config.toml", "config.tmp~", "environment.json", SCRIPT, RECORD, STDOUT, STDERR, EXIT]
};

/// Refuses two things written to the same name in the run directory: the log file, the task
/// records, the app's outputs, the file transformer's default `data/` and the run's own files.
fn check_run_dir_names(cfg: &Config) -> Result<(), String> {
    let mut names: Vec<(String, String)> = RUN_FILES.iter().map(|f| (format!("taps ({})", f), f.to_string())).collect();
    if let Some(t) = &cfg.transformer {
        for n in t.options.run_dir_names() {
            names.push((format!("the {} transformer (its default directory)", t.name), n));
        }
    }
    let mut options = cfg.app.options.footprint().files;
    if let Some(f) = &cfg.logging.file_name {
        options.push(("logging.file_name".to_string(), f.clone()));
    }
    if let Some(f) = &cfg.engine.task_record_file_name {
        options.push(("engine.task_record_file_name".to_string(), f.clone()));
    }
    for (key, f) in options {
        if let Some((other, _)) = names.iter().find(|(_, n)| *n == f) {
            return Err(format!(
                "{} = {:?} clashes with a file of the same name in the run directory, written by {}: choose another name",
                key, f, other
            ));
        }
        names.push((key, f));
    }
    Ok(())
}

/// A complete, validated benchmark configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// taps version the config was written for.
    pub version: String,
    /// The app.
    pub app: Selected<dyn AppConfig>,
    /// The executor.
    pub executor: Selected<dyn ExecutorConfig>,
    /// The filter (None = everything passes to the transformer).
    pub filter: Option<Selected<dyn FilterConfig>>,
    /// The transformer (None = everything inline).
    pub transformer: Option<Selected<dyn TransformerConfig>>,
    /// `[engine]`.
    pub engine: EngineOptions,
    /// `[logging]`.
    pub logging: LoggingOptions,
    /// `[run]`.
    pub run: RunOptions,
    /// `[submit]`, kept for `taps submit` (not validated by `taps run`).
    pub submit: Option<toml::Table>,
}

/// `taps run` arguments before validation.
#[derive(Clone, Debug, Default)]
pub struct RawArgs {
    /// `-c/--config` files, in order.
    pub config_files: Vec<PathBuf>,
    /// `--key value` pairs in order (keys dotted, underscores).
    pub sets: Vec<(String, String)>,
    /// `-h/--help` was given.
    pub help: bool,
}

const SELECTORS: &[(&str, &str)] = &[
    ("app", "app.name"),
    ("app.name", "app.name"),
    ("engine.executor", "engine.executor.name"),
    ("executor", "engine.executor.name"),
    ("engine.filter", "engine.filter.name"),
    ("filter", "engine.filter.name"),
    ("engine.transformer", "engine.transformer.name"),
    ("transformer", "engine.transformer.name"),
];

/// Splits `taps run` arguments into config files, `--key value` pairs and help.
pub(crate) fn parse_args(args: &[String]) -> Result<RawArgs, ConfigError> {
    let mut out = RawArgs::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "-h" || a == "--help" {
            out.help = true;
            continue;
        }
        if a == "-c" || a == "--config" {
            let start = i;
            while i < args.len() && !args[i].starts_with('-') {
                out.config_files.push(PathBuf::from(&args[i]));
                i += 1;
            }
            if i == start {
                return Err(ConfigError::Usage(format!("{} needs at least one TOML file", a)));
            }
            continue;
        }
        if let Some(f) = a.strip_prefix("--config=") {
            out.config_files.push(PathBuf::from(f));
            continue;
        }
        let Some(flag) = a.strip_prefix("--") else {
            return Err(ConfigError::Usage(format!(
                "unexpected argument {:?}: options are given as --section.key VALUE (see taps run --help)",
                a
            )));
        };
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                if i >= args.len() {
                    return Err(ConfigError::Usage(format!("--{} needs a value", flag)));
                }
                i += 1;
                (flag.to_string(), args[i - 1].clone())
            }
        };
        out.sets.push((normalize_key(&key), value));
    }
    Ok(out)
}

/// Flag names accept dashes or underscores: `app.matrix-size` → `app.matrix_size`.
fn normalize_key(k: &str) -> String {
    k.replace('-', "_")
}

/// Whether `key` (normalised) selects a plugin: `app`, `engine.executor`, `filter`, ...
pub(crate) fn is_selector(key: &str) -> bool {
    selector(key).is_some()
}

fn selector(key: &str) -> Option<&'static str> {
    let k = key.replace('_', "-");
    SELECTORS.iter().find(|(s, _)| *s == k).map(|(_, t)| *t)
}

/// A plugin as help and flag parsing see it, whatever its kind.
struct Entry {
    name: &'static str,
    about: &'static str,
    fields: fn() -> Vec<FieldSpec>,
}

fn entries<K: ?Sized + 'static>(list: impl IntoIterator<Item = Plugin<K>>) -> Vec<Entry> {
    list.into_iter().map(|p| Entry { name: p.name, about: p.about, fields: p.fields }).collect()
}

/// The plugin tables of the catalogue: (path, kind, plugins).
fn plugin_sections() -> Vec<(&'static str, &'static str, Vec<Entry>)> {
    let c = &crate::catalogue::CATALOGUE;
    vec![
        ("app", "app", entries(c.apps.iter().map(|a| a.plugin))),
        ("engine.executor", "executor", entries(c.executors.iter().copied())),
        ("engine.filter", "filter", entries(c.filters.iter().copied())),
        ("engine.transformer", "transformer", entries(c.transformers.iter().copied())),
    ]
}

pub(crate) fn get_path<'a>(t: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

fn table_at<'a>(t: &'a mut toml::Table, path: &str) -> Result<&'a mut toml::Table, ConfigError> {
    let mut cur = t;
    for p in path.split('.') {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid(format!("{} must be a table", path)))?;
    }
    Ok(cur)
}

/// Sets the plugin at `section` to `name`; a different plugin than the files named drops the old
/// plugin's options (they belong to it, not to the new one). Options of a table that names no
/// plugin are kept for the one selected.
fn select(t: &mut toml::Table, section: &str, name: &str) -> Result<(), ConfigError> {
    let cur = get_path(t, &format!("{}.name", section)).and_then(|v| v.as_str()).map(str::to_string);
    // An executor table without a name configures the default executor.
    let cur = cur.or_else(|| (section == "engine.executor").then(|| crate::executor::DEFAULT_EXECUTOR.to_string()));
    let tab = table_at(t, section)?;
    if cur.as_deref().is_some_and(|c| c != name) {
        tab.clear();
    }
    tab.insert("name".into(), toml::Value::String(name.into()));
    Ok(())
}

/// Deep-merges `over` into `base`; a plugin table naming a different plugin replaces the old one.
pub(crate) fn merge(base: &mut toml::Table, over: toml::Table, path: &str) {
    for (k, v) in over {
        let p = if path.is_empty() { k.clone() } else { format!("{}.{}", path, k) };
        let is_plugin = matches!(p.as_str(), "app" | "engine.executor" | "engine.filter" | "engine.transformer");
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                let switched = is_plugin && o.get("name").is_some() && o.get("name") != b.get("name");
                if switched {
                    *b = o;
                } else {
                    merge(b, o, &p);
                }
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Reads a TOML config file; errors name the file.
pub(crate) fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_string();
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        ConfigError::Parse { path: path.to_path_buf(), line, message: msg }
    })
}

/// Merges the config files and CLI flags into one table (not yet validated).
pub(crate) fn layered_table(raw: &RawArgs) -> Result<toml::Table, ConfigError> {
    let mut t = toml::Table::new();
    for f in &raw.config_files {
        merge(&mut t, read_file(f)?, "");
    }
    // Selectors first, so option flags are checked against the final plugins.
    for (k, v) in &raw.sets {
        if let Some(target) = selector(k) {
            let section = target.trim_end_matches(".name");
            select(&mut t, section, v)?;
        }
    }
    // Then the plugins themselves: an unknown one is named before any of its options.
    check_plugin_names(&t)?;
    let mut seen = std::collections::HashSet::new();
    for (k, v) in &raw.sets {
        if selector(k).is_none() {
            let repeated = !seen.insert(k.as_str());
            set_cli_value(&mut t, k, v, repeated)?;
        }
    }
    Ok(t)
}

/// Checks that every selected plugin exists (before its options are read, so a plugin taps does
/// not have is reported as such, not as an unknown option).
fn check_plugin_names(t: &toml::Table) -> Result<(), ConfigError> {
    let c = &crate::catalogue::CATALOGUE;
    for (path, _, _) in plugin_sections() {
        let Some(v) = get_path(t, &format!("{}.name", path)) else { continue };
        let Some(name) = v.as_str() else {
            return Err(ConfigError::Invalid(format!(
                "{}.name: expected string, got {}",
                path,
                crate::options::describe(v)
            )));
        };
        let none = |e: String| ConfigError::UnknownPlugin(format!("{}, none", e));
        match path {
            "app" => crate::apps::find(name).map(|_| ()).map_err(ConfigError::UnknownPlugin)?,
            "engine.executor" => crate::executor::find(name).map(|_| ()).map_err(ConfigError::UnknownPlugin)?,
            _ if name.eq_ignore_ascii_case("none") => {}
            "engine.filter" => crate::plugins::find("filter", c.filters, name).map(|_| ()).map_err(none)?,
            _ => crate::plugins::find("transformer", c.transformers, name).map(|_| ()).map_err(none)?,
        }
    }
    Ok(())
}

/// Field specs of the section owning `key`, and the key within it.
fn field_for(t: &toml::Table, key: &str) -> Result<(String, crate::options::FieldSpec), ConfigError> {
    let mut sections: Vec<(String, Vec<crate::options::FieldSpec>)> = vec![
        ("engine".into(), EngineOptions::fields()),
        ("logging".into(), LoggingOptions::fields()),
        ("run".into(), RunOptions::fields()),
    ];
    for (path, _, list) in plugin_sections() {
        let name = get_path(t, &format!("{}.name", path)).and_then(|v| v.as_str());
        let name = name.or((path == "engine.executor").then_some(crate::executor::DEFAULT_EXECUTOR));
        if let Some(name) = name
            && let Some(p) = list.iter().find(|p| p.name == name)
        {
            sections.push((path.to_string(), (p.fields)()));
        }
    }
    if key == "version" {
        let spec = crate::options::FieldSpec {
            name: "version",
            ty: "string".into(),
            default: None,
            doc: "",
            parse_cli: crate::options::parse_cli_value::<String>,
        };
        return Ok((String::new(), spec));
    }
    sections.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    for (path, fields) in &sections {
        if let Some(rest) = key.strip_prefix(path.as_str()).and_then(|r| r.strip_prefix('.'))
            && let Some(f) = fields.iter().find(|f| f.name == rest)
        {
            return Ok((path.clone(), f.clone()));
        }
    }
    // Unknown: suggest the nearest valid flag.
    let mut all: Vec<String> = vec![
        "app".into(),
        "engine.executor".into(),
        "engine.filter".into(),
        "engine.transformer".into(),
        "config".into(),
    ];
    for (path, fields) in &sections {
        all.extend(fields.iter().map(|f| format!("{}.{}", path, f.name)));
    }
    let flag = |k: &str| format!("--{}", k.replace('_', "-"));
    let mut msg = format!("unknown option {}", flag(key));
    if let Some(s) = did_you_mean(key, all.iter().map(String::as_str)) {
        msg.push_str(&format!(" (did you mean {}?)", flag(s)));
    }
    let section = key.rsplit_once('.').map(|(s, _)| s).unwrap_or("");
    if let Some((path, fields)) = sections.iter().find(|(p, _)| p == section) {
        let names: Vec<String> = fields.iter().map(|f| flag(&format!("{}.{}", path, f.name))).collect();
        if names.is_empty() {
            msg.push_str(&format!("; {} takes no options", path));
        } else {
            msg.push_str(&format!("; valid options of {}: {}", path, names.join(", ")));
        }
    } else {
        msg.push_str("; see taps run --app NAME [--engine.executor NAME] --help for every option");
    }
    Err(ConfigError::UnknownOption(msg))
}

/// Sets `--key value` in the table. A repeated list flag appends and a repeated map flag merges;
/// a map flag also merges into the map of the config files (flag keys win).
fn set_cli_value(t: &mut toml::Table, key: &str, value: &str, repeated: bool) -> Result<(), ConfigError> {
    for (path, kind, list) in plugin_sections() {
        let selected = get_path(t, &format!("{}.name", path)).is_some() || path == "engine.executor";
        if !selected && key.starts_with(&format!("{}.", path)) {
            let names: Vec<&str> = list.iter().map(|p| p.name).collect();
            let flag = if path == "app" { "--app".to_string() } else { format!("--{}", path) };
            return Err(ConfigError::Invalid(format!(
                "--{} is set but no {} is selected: add {} NAME ({}s: {})",
                key.replace('_', "-"),
                kind,
                flag,
                kind,
                names.join(", ")
            )));
        }
    }
    let (section, spec) = field_for(t, key)?;
    let flag = format!("--{}", key.replace('_', "-"));
    let v = (spec.parse_cli)(value).map_err(|e| ConfigError::Invalid(format!("{}: {}", flag, e)))?;
    let tab = if section.is_empty() { t } else { table_at(t, &section)? };
    let v = match tab.remove(spec.name) {
        Some(old) if repeated || (old.is_table() && v.is_table()) => crate::options::combine(old, v),
        _ => v,
    };
    tab.insert(spec.name.to_string(), v);
    Ok(())
}

/// Loads, merges and validates a configuration from `taps run` arguments.
pub fn load(raw: &RawArgs) -> Result<Config, ConfigError> {
    from_table(layered_table(raw)?)
}

/// Validates a merged table into a [`Config`].
pub fn from_table(mut t: toml::Table) -> Result<Config, ConfigError> {
    let version = match t.remove("version") {
        None => env!("CARGO_PKG_VERSION").to_string(),
        Some(toml::Value::String(s)) => s,
        Some(v) => {
            return Err(ConfigError::Invalid(format!(
                "version: expected string, got {}",
                crate::options::describe(&v)
            )));
        }
    };
    let submit = match t.remove("submit") {
        None => None,
        Some(toml::Value::Table(s)) => Some(s),
        Some(_) => return Err(ConfigError::Invalid("submit must be a table".into())),
    };
    let mut app = take_table(&mut t, "app")?;
    let mut engine = take_table(&mut t, "engine")?;
    let logging = take_table(&mut t, "logging")?;
    let run = take_table(&mut t, "run")?;
    if let Some(k) = t.keys().next() {
        let known = ["version", "app", "engine", "logging", "run", "submit"];
        return Err(ConfigError::UnknownOption(crate::options::unknown_key("", k, &known)));
    }
    let app_name = match app.get("name") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(ConfigError::Invalid(format!(
                "app.name: expected string, got {}",
                crate::options::describe(v)
            )));
        }
        None => {
            let names: Vec<&str> = crate::apps::ALL.iter().map(|a| a.plugin.name).collect();
            return Err(ConfigError::Invalid(format!(
                "no app selected: pass --app NAME or set name in the [app] table of a --config file; apps: {}",
                names.join(", ")
            )));
        }
    };
    app.remove("name");
    let app = crate::apps::find(&app_name).map_err(ConfigError::UnknownPlugin)?.plugin.select(&app, "app")?;

    let mut executor = take_table(&mut engine, "executor")?;
    let exec_name = match executor.remove("name") {
        None => crate::executor::DEFAULT_EXECUTOR.to_string(),
        Some(toml::Value::String(s)) => s,
        Some(v) => {
            return Err(ConfigError::Invalid(format!(
                "engine.executor.name: expected string, got {}",
                crate::options::describe(&v)
            )));
        }
    };
    let executor =
        crate::executor::find(&exec_name).map_err(ConfigError::UnknownPlugin)?.select(&executor, "engine.executor")?;

    let filter = optional_plugin(&mut engine, "filter", crate::data::FILTERS)?;
    let transformer = optional_plugin(&mut engine, "transformer", crate::data::TRANSFORMERS)?;
    let engine_opts = EngineOptions::from_table(&engine, "engine")?;
    let logging = LoggingOptions::from_table(&logging, "logging")?;
    let run = RunOptions::from_table(&run, "run")?;
    let cfg = Config { version, app, executor, filter, transformer, engine: engine_opts, logging, run, submit };
    check_run_dir_names(&cfg)?;
    Ok(cfg)
}

fn take_table(t: &mut toml::Table, key: &str) -> Result<toml::Table, ConfigError> {
    match t.remove(key) {
        None => Ok(toml::Table::new()),
        Some(toml::Value::Table(t)) => Ok(t),
        Some(v) => Err(ConfigError::Invalid(format!("{} must be a table, got {}", key, crate::options::describe(&v)))),
    }
}

fn optional_plugin<K: ?Sized>(
    engine: &mut toml::Table,
    kind: &str,
    list: &[Plugin<K>],
) -> Result<Option<Selected<K>>, ConfigError> {
    let mut t = take_table(engine, kind)?;
    let name = match t.remove("name") {
        None => None,
        Some(toml::Value::String(s)) if s.eq_ignore_ascii_case("none") => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(v) => {
            return Err(ConfigError::Invalid(format!(
                "engine.{}.name: expected string, got {}",
                kind,
                crate::options::describe(&v)
            )));
        }
    };
    let section = format!("engine.{}", kind);
    match name {
        None => {
            if let Some(k) = t.keys().next() {
                return Err(ConfigError::Invalid(format!(
                    "{}.{} is set but no {} is selected: add --{} NAME or name = \"...\" in [{}]",
                    section, k, kind, section, section
                )));
            }
            Ok(None)
        }
        Some(name) => {
            let p = crate::plugins::find(kind, list, &name)
                .map_err(|e| ConfigError::UnknownPlugin(format!("{}, none", e)))?;
            Ok(Some(p.select(&t, &section)?))
        }
    }
}

impl Config {
    /// The complete configuration as a TOML table (feed it back with `--config`).
    pub fn to_table(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("version".into(), toml::Value::String(self.version.clone()));
        t.insert("app".into(), toml::Value::Table(self.app.to_table()));
        let mut engine = self.engine.to_table();
        engine.insert("executor".into(), toml::Value::Table(self.executor.to_table()));
        if let Some(f) = &self.filter {
            engine.insert("filter".into(), toml::Value::Table(f.to_table()));
        }
        if let Some(tr) = &self.transformer {
            engine.insert("transformer".into(), toml::Value::Table(tr.to_table()));
        }
        t.insert("engine".into(), toml::Value::Table(engine));
        t.insert("logging".into(), toml::Value::Table(self.logging.to_table()));
        t.insert("run".into(), toml::Value::Table(self.run.to_table()));
        if let Some(s) = &self.submit {
            t.insert("submit".into(), toml::Value::Table(s.clone()));
        }
        t
    }

    /// The TOML text of [`to_table`](Self::to_table).
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.to_table()).expect("config tables serialise")
    }

    /// Pretty form for the log: keys sorted with `name` first, 2-space indent.
    pub(crate) fn pretty(&self) -> String {
        fn walk(t: &toml::Table, indent: usize, out: &mut String) {
            let mut keys: Vec<&String> = t.keys().collect();
            keys.sort_by_key(|k| (k.as_str() != "name", k.as_str()));
            for k in keys {
                match &t[k] {
                    toml::Value::Table(sub) => {
                        let _ = writeln!(out, "{:indent$}{}:", "", k, indent = indent);
                        walk(sub, indent + 2, out);
                    }
                    v => {
                        let _ = writeln!(out, "{:indent$}{}: {}", "", k, crate::options::render(v), indent = indent);
                    }
                }
            }
        }
        let mut out = String::new();
        walk(&self.to_table(), 0, &mut out);
        out.trim_end().to_string()
    }
}

fn section_help(out: &mut String, title: &str, prefix: &str, fields: &[crate::options::FieldSpec]) {
    let _ = writeln!(out, "\n{}:", title);
    if fields.is_empty() {
        let _ = writeln!(out, "  (no options)");
    }
    for f in fields {
        let flag = format!("--{}.{} {}", prefix, f.name.replace('_', "-"), f.ty);
        let default = match &f.default {
            None => "required".to_string(),
            Some(d) => format!("default: {}", d),
        };
        let _ = writeln!(out, "  {}\n      {} [{}]", flag, f.doc, default);
    }
}

/// `taps run --help`: the plugins, or (with selections) their options.
pub fn help(t: &toml::Table) -> String {
    let mut out = String::new();
    out.push_str(
        "Run a benchmark app on an executor.\n\n\
         Usage: taps run --app NAME [--app.OPTION VALUE]... [--engine.executor NAME [--engine.executor.OPTION VALUE]...]\n\
         \x20               [--engine.filter NAME ...] [--engine.transformer NAME ...] [-c/--config FILE...] [--help]\n\n\
         Options are --section.key VALUE (dashes or underscores); booleans are true/false, `none` unsets an\n\
         optional value, maps and lists take JSON. Precedence: defaults < each --config file in order < flags.\n",
    );
    let sel = |path: &str| get_path(t, &format!("{}.name", path)).and_then(|v| v.as_str()).map(str::to_string);
    let app = sel("app");
    for (path, kind, list) in plugin_sections() {
        let chosen =
            sel(path).or_else(|| (path == "engine.executor").then(|| crate::executor::DEFAULT_EXECUTOR.to_string()));
        match chosen.as_deref().and_then(|n| list.iter().find(|p| p.name == n)) {
            Some(p) if app.is_some() => {
                let title = format!("{} options (selected: {} — {})", path, p.name, p.about);
                section_help(&mut out, &title, path, &(p.fields)());
            }
            _ => {
                let flag = if path == "app" { "--app".to_string() } else { format!("--{}", path) };
                let _ = writeln!(out, "\n{}s ({} NAME):", kind, flag);
                for p in &list {
                    let _ = writeln!(out, "  {:<14} {}", p.name, p.about);
                }
                if path == "engine.filter" || path == "engine.transformer" {
                    let _ = writeln!(out, "  {:<14} {}", "none", "no ".to_string() + kind + " (default)");
                }
                if path == "engine.executor" {
                    for (n, why) in crate::executor::NOT_COMPILED {
                        let _ = writeln!(out, "  {:<14} (not in this build: {})", n, why);
                    }
                }
            }
        }
    }
    if app.is_some() {
        section_help(&mut out, "engine options", "engine", &EngineOptions::fields());
        section_help(&mut out, "logging options", "logging", &LoggingOptions::fields());
        section_help(&mut out, "run options", "run", &RunOptions::fields());
    } else {
        out.push_str("\nPass --app NAME --help (and --engine.executor NAME) to list that selection's options.\n");
    }
    out
}
