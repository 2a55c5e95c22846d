//! Reading a run directory (taps's or the Python suite's) for the report.

use std::path::Path;

use serde::Serialize;

use crate::record::{TaskRecord, read_records};

/// Which suite wrote a run directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// taps (records carry `worker` and bytes).
    Taps,
    /// The Python TaPS suite (its `environment.json` has a `python` section).
    Python,
}

/// A run directory read for the report.
#[derive(Clone, Debug)]
pub struct Run {
    /// The directory as given.
    pub dir: String,
    /// Which suite wrote it.
    pub suite: Suite,
    /// App name.
    pub app: String,
    /// Executor name.
    pub executor: String,
    /// `filter/transformer`.
    pub data: String,
    /// The app's options, name left out.
    pub app_options: toml::Table,
    /// `app_options` as `key=value` joined by spaces.
    pub options: String,
    /// What makes two runs the same configuration: `[app]` and `[engine]` without the record file name.
    pub config_key: toml::Table,
    /// The driver's host (`environment.json`), if known.
    pub driver_host: Option<String>,
    /// The task records.
    pub records: Vec<TaskRecord>,
    /// `Finished app (elapsed=…s)` from the log.
    pub app_elapsed: Option<f64>,
    /// `finished`, `interrupted`, `failed`, or `unknown` (no log file).
    pub status: String,
}

/// A TOML value as written in `key=value` (strings unquoted).
pub fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn str_at<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a str> {
    let (last, head) = path.split_last()?;
    let mut t = t;
    for k in head {
        t = t.get(*k)?.as_table()?;
    }
    t.get(*last)?.as_str()
}

/// Reads a run directory; the error is one line saying why it cannot be reported.
pub fn load_run(dir: &Path) -> Result<Run, String> {
    if !dir.exists() {
        return Err("no such directory".into());
    }
    if !dir.is_dir() {
        return Err("not a directory (give a run directory, e.g. runs/synthetic_thread-pool_…)".into());
    }
    let cfg_path = dir.join("config.toml");
    if !cfg_path.is_file() {
        return Err("not a run directory (no config.toml)".into());
    }
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| format!("cannot read config.toml: {}", e))?;
    let cfg: toml::Table =
        text.parse().map_err(|e: toml::de::Error| format!("config.toml is not valid TOML: {}", e.message()))?;
    let app = str_at(&cfg, &["app", "name"]).ok_or("config.toml has no app.name: not a run directory")?.to_string();
    let executor = str_at(&cfg, &["engine", "executor", "name"]).unwrap_or("process-pool").to_string();
    let filter = str_at(&cfg, &["engine", "filter", "name"]).unwrap_or("none");
    let transformer = str_at(&cfg, &["engine", "transformer", "name"]).unwrap_or("none");
    let log_name = match cfg.get("logging").and_then(|l| l.as_table()) {
        Some(l) => l.get("file_name").and_then(|v| v.as_str()).map(str::to_string),
        None => Some("log.txt".to_string()),
    }
    .filter(|n| n != "none");
    let log = log_name.as_ref().and_then(|n| std::fs::read_to_string(dir.join(n)).ok());
    if log.is_none() && dir.join("job.sh").is_file() {
        return Err("a submitted job that has not started yet (no log; see taps status)".into());
    }
    let status = match &log {
        None => "unknown",
        Some(l) if l.contains("> Finished benchmark (") => "finished",
        Some(l) if l.contains("> Run interrupted") => "interrupted",
        Some(l) if l.contains("> Caught unhandled exception") || l.contains("] ERROR ") => "failed",
        Some(_) => {
            return Err(format!(
                "still running, or killed before it ended ({} has no 'Finished benchmark' line); report it once it ends",
                log_name.as_deref().unwrap_or("the log")
            ));
        }
    };
    let rec_name = str_at(&cfg, &["engine", "task_record_file_name"]).unwrap_or("tasks.jsonl").to_string();
    if rec_name == "none" {
        return Err("the run wrote no task records (engine.task_record_file_name = \"none\")".into());
    }
    let rec_path = dir.join(&rec_name);
    if !rec_path.is_file() {
        return Err(format!("no {}: the run ended before its first task", rec_name));
    }
    let records = read_records(&rec_path).map_err(|e| {
        let msg = e.to_string();
        msg.strip_prefix(&format!("{}:", rec_path.display()))
            .map(|rest| format!("{}:{}", rec_name, rest))
            .unwrap_or(msg)
    })?;
    let env: Option<serde_json::Value> =
        std::fs::read_to_string(dir.join("environment.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
    let suite = if env.as_ref().is_some_and(|e| e.get("python").is_some()) { Suite::Python } else { Suite::Taps };
    let driver_host = env.as_ref().and_then(|e| e.pointer("/system/hostname")?.as_str().map(str::to_string));
    let mut app_options = cfg.get("app").and_then(|a| a.as_table()).cloned().unwrap_or_default();
    app_options.remove("name");
    let options = app_options.iter().map(|(k, v)| format!("{}={}", k, value_text(v))).collect::<Vec<_>>().join(" ");
    let mut config_key = toml::Table::new();
    config_key.insert("app".into(), cfg.get("app").cloned().unwrap_or(toml::Value::Table(Default::default())));
    let mut engine = cfg.get("engine").and_then(|e| e.as_table()).cloned().unwrap_or_default();
    engine.remove("task_record_file_name");
    config_key.insert("engine".into(), toml::Value::Table(engine));
    let app_elapsed = log.as_deref().and_then(finished_app_elapsed);
    Ok(Run {
        dir: dir.display().to_string(),
        suite,
        app,
        executor,
        data: format!("{}/{}", filter, transformer),
        app_options,
        options,
        config_key,
        driver_host,
        records,
        app_elapsed,
        status: status.into(),
    })
}

/// The seconds of the last `Finished app (elapsed=…s)` line of a log.
pub fn finished_app_elapsed(log: &str) -> Option<f64> {
    log.lines().rev().find_map(|l| {
        let rest = l.split("> Finished app (elapsed=").nth(1)?;
        rest.split('s').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_elapsed_is_read_from_either_suites_log_line() {
        let log = "[2026-12-01 17:04:24.472] RUN   (taps.run) > Finished app (elapsed=0.361s)\n\
                   [2026-12-01 17:04:24.481] RUN   (taps.run) > Finished benchmark (app=cholesky, elapsed=0.378s, tasks=30)\n";
        assert_eq!(finished_app_elapsed(log), Some(0.361));
        assert_eq!(finished_app_elapsed("nothing"), None);
    }
}
