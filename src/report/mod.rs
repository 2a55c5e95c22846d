//! `taps report RUN_DIR…`: makespan, throughput, per-task overhead split into its parts, bytes
//! moved, per task name, and a comparison of several runs; as a terminal table, CSV, JSON,
//! Markdown or a self-contained HTML page, with charts (PNG and SVG).
//!
//! Reads taps run directories and the Python suite's (same record fields; no `worker` or bytes
//! fields there). Each record's round trip `received_time − submit_time` is cut into five parts
//! ([`Parts`]); differences between a driver time and a worker time are split only when the task
//! ran on the driver's host, so clocks of different hosts are never subtracted.

pub mod charts;
mod load;
mod table;

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::bench::{Quantiles, quantiles};
use crate::record::TaskRecord;
pub use load::{Run, Suite, load_run};

/// Output formats of `taps report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text tables.
    Table,
    /// One row per run, first column `run_dir` (the path as given).
    Csv,
    /// Every figure of every run, per task name and per configuration.
    Json,
    /// The tables as GitHub Markdown.
    Markdown,
}

/// `taps report` arguments.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Run directories (of taps or of the Python suite).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub run_dirs: Vec<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Also write one self-contained HTML page (tables and SVG charts, no network) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write the charts as PNG and SVG into DIR (created if missing).
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
}

/// One task's round trip cut into parts, in seconds (see the README, "taps report").
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Parts {
    /// `ready − submit_time`, `ready` = the latest `received_time` of its parents (driver clock),
    /// or the task's start if that came first (an engine that passes values between its workers).
    pub wait: f64,
    /// `execution_start_time − ready`: dispatch and inline input transfer (None off the driver's host).
    pub queue: Option<f64>,
    /// `task_start_time − execution_start_time`: input resolution and transform (worker clock).
    pub input: f64,
    /// `task_end_time − task_start_time`: the task body (worker clock).
    pub body: f64,
    /// `received_time − task_end_time`: result transform and transfer (None off the driver's host).
    pub result: Option<f64>,
    /// `received_time − ready − body`: queue + input + result, exact on every host.
    pub overhead: f64,
}

/// Splits the round trip of `r` (None if it never ran or was never received); `parents` maps
/// task ids to their `received_time`, `same_host` says whether it ran on the driver's host.
pub fn parts(r: &TaskRecord, parents: &HashMap<&str, f64>, same_host: bool) -> Option<Parts> {
    let e = r.execution.as_ref()?;
    let received = r.received_time?;
    let mut ready =
        r.parent_task_ids.iter().filter_map(|p| parents.get(p.as_str()).copied()).fold(r.submit_time, f64::max);
    // Engines that pass parents' values between their own workers (dask, ray, parsl) start a
    // child before the driver has received its parents: it waited for them until it started.
    // One clock only: on another host the start cannot be compared with `ready`.
    if same_host && e.execution_start_time < ready {
        ready = e.execution_start_time.max(r.submit_time);
    }
    let body = e.task_end_time - e.task_start_time;
    Some(Parts {
        wait: ready - r.submit_time,
        queue: same_host.then_some(e.execution_start_time - ready),
        input: e.task_start_time - e.execution_start_time,
        body,
        result: same_host.then_some(received - e.task_end_time),
        overhead: (received - ready) - body,
    })
}

/// Median and p95 of each part over a set of tasks, in seconds (None: no task had the part).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PartStats {
    /// Waiting for parents.
    pub wait: Option<Quantiles>,
    /// Queueing (dispatch, inline input transfer).
    pub queue: Option<Quantiles>,
    /// Input resolution and transform.
    pub input: Option<Quantiles>,
    /// Task body.
    pub body: Option<Quantiles>,
    /// Result transform and transfer.
    pub result: Option<Quantiles>,
    /// Overhead: queue + input + result.
    pub overhead: Option<Quantiles>,
}

impl PartStats {
    fn of(parts: &[Parts]) -> Self {
        let q = |f: &dyn Fn(&Parts) -> Option<f64>| {
            let mut v: Vec<f64> = parts.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| quantiles(&mut v))
        };
        PartStats {
            wait: q(&|p| Some(p.wait)),
            queue: q(&|p| p.queue),
            input: q(&|p| Some(p.input)),
            body: q(&|p| Some(p.body)),
            result: q(&|p| p.result),
            overhead: q(&|p| Some(p.overhead)),
        }
    }
}

/// Figures of the tasks of one name within a run.
#[derive(Clone, Debug, Serialize)]
pub struct NameSummary {
    /// Task name.
    pub name: String,
    /// Records of that name.
    pub tasks: u64,
    /// Of which not successful.
    pub failed: u64,
    /// Their parts.
    pub parts: PartStats,
}

/// Figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// The run directory as given on the command line.
    pub run_dir: String,
    /// Which suite wrote it.
    pub suite: Suite,
    /// App name.
    pub app: String,
    /// Executor name.
    pub executor: String,
    /// `filter/transformer` (`none` for either not set).
    pub data: String,
    /// The app's options (`key=value` joined by spaces, name left out).
    pub options: String,
    /// `finished`, `interrupted` or `failed` (from log.txt).
    pub status: String,
    /// Records.
    pub tasks: u64,
    /// Records not successful.
    pub failed: u64,
    /// Makespan in seconds (see `makespan_from`).
    pub makespan_s: f64,
    /// `records` (first submit to last received) or `log.txt` (the app's elapsed).
    pub makespan_from: String,
    /// Tasks per second over the makespan.
    pub throughput_per_s: f64,
    /// The app's own elapsed time, `Finished app (elapsed=…s)` in log.txt, for either suite: the
    /// like-for-like figure when runs of both suites are compared.
    pub app_elapsed_s: Option<f64>,
    /// Per-task parts over every task that ran.
    pub parts: PartStats,
    /// Bytes moved inline (None: the records do not say).
    pub bytes_inline: Option<u64>,
    /// Bytes moved by reference (None: the records do not say).
    pub bytes_by_reference: Option<u64>,
    /// Tasks that ran on another host than the driver (their queue and result are not split).
    pub remote_tasks: u64,
    /// Per task name, in order of first submit.
    pub by_name: Vec<NameSummary>,
}

/// The parts of every task of `run` that ran, with its record.
pub fn run_parts(run: &Run) -> Vec<(&TaskRecord, Parts)> {
    let received: HashMap<&str, f64> =
        run.records.iter().filter_map(|r| Some((r.task_id.as_str(), r.received_time?))).collect();
    run.records
        .iter()
        .filter_map(|r| {
            let same = match (&run.driver_host, &r.execution) {
                (Some(h), Some(e)) => *h == e.hostname,
                _ => true,
            };
            Some((r, parts(r, &received, same)?))
        })
        .collect()
}

/// Summarises one loaded run.
pub fn summarise(run: &Run) -> RunSummary {
    let all = run_parts(run);
    let ps: Vec<Parts> = all.iter().map(|(_, p)| *p).collect();
    let mut names: Vec<&str> = Vec::new();
    let mut by: HashMap<&str, (u64, u64, Vec<Parts>)> = HashMap::new();
    let mut order: Vec<&TaskRecord> = run.records.iter().collect();
    order.sort_by(|a, b| a.submit_time.total_cmp(&b.submit_time));
    for r in order {
        let e = by.entry(r.name.as_str()).or_insert_with(|| {
            names.push(r.name.as_str());
            (0, 0, Vec::new())
        });
        e.0 += 1;
        e.1 += u64::from(r.success != Some(true));
    }
    for (r, p) in &all {
        by.get_mut(r.name.as_str()).expect("every name counted").2.push(*p);
    }
    let tasks = run.records.len() as u64;
    let failed = run.records.iter().filter(|r| r.success != Some(true)).count() as u64;
    let (makespan_s, makespan_from) = match (run.suite, run.app_elapsed) {
        (Suite::Python, Some(s)) => (s, "log.txt"),
        _ => (record_span(&run.records), "records"),
    };
    let taps = run.suite == Suite::Taps;
    RunSummary {
        run_dir: run.dir.clone(),
        suite: run.suite,
        app: run.app.clone(),
        executor: run.executor.clone(),
        data: run.data.clone(),
        options: run.options.clone(),
        status: run.status.clone(),
        tasks,
        failed,
        makespan_s,
        makespan_from: makespan_from.into(),
        throughput_per_s: if makespan_s > 0.0 { tasks as f64 / makespan_s } else { 0.0 },
        app_elapsed_s: run.app_elapsed,
        parts: PartStats::of(&ps),
        bytes_inline: taps.then(|| run.records.iter().map(|r| r.bytes_inline).sum()),
        bytes_by_reference: taps.then(|| run.records.iter().map(|r| r.bytes_by_reference).sum()),
        remote_tasks: ps.iter().filter(|p| p.queue.is_none()).count() as u64,
        by_name: names
            .iter()
            .map(|n| {
                let (tasks, failed, p) = &by[n];
                NameSummary { name: n.to_string(), tasks: *tasks, failed: *failed, parts: PartStats::of(p) }
            })
            .collect(),
    }
}

/// Seconds from the first `submit_time` to the last `received_time` (0 without records).
pub fn record_span(recs: &[TaskRecord]) -> f64 {
    let first = recs.iter().map(|r| r.submit_time).fold(f64::INFINITY, f64::min);
    let last = recs.iter().filter_map(|r| r.received_time).fold(f64::NEG_INFINITY, f64::max);
    if last > first { last - first } else { 0.0 }
}

/// Median, min and max of a figure over repeated runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        let median = quantiles(&mut v).median;
        Some(Spread { median, min: v[0], max: v[v.len() - 1] })
    }
}

/// Runs of one configuration (same app, options, executor and its options, data layer).
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// App name.
    pub app: String,
    /// Executor name.
    pub executor: String,
    /// `filter/transformer`.
    pub data: String,
    /// The app options that tell this group from the app's other groups (empty if none do).
    pub differs: String,
    /// Indices of the runs in the report's run list.
    pub runs: Vec<usize>,
    /// Makespan over the runs, seconds.
    pub makespan_s: Spread,
    /// Throughput over the runs, tasks/s.
    pub throughput_per_s: Spread,
    /// Median per-task overhead over the runs (each run's median), seconds.
    pub overhead_median_s: Option<Spread>,
}

/// Folds runs of the same configuration; groups sorted by app, then first appearance.
pub fn group(runs: &[Run], sums: &[RunSummary]) -> Vec<Group> {
    let mut keys: Vec<&toml::Table> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        match keys.iter().position(|k| **k == r.config_key) {
            Some(g) => members[g].push(i),
            None => {
                keys.push(&r.config_key);
                members.push(vec![i]);
            }
        }
    }
    let mut groups: Vec<Group> = members
        .into_iter()
        .map(|m| {
            let s = &sums[m[0]];
            let spread =
                |f: &dyn Fn(&RunSummary) -> Option<f64>| Spread::of(m.iter().filter_map(|&i| f(&sums[i])).collect());
            Group {
                app: s.app.clone(),
                executor: s.executor.clone(),
                data: s.data.clone(),
                differs: String::new(),
                makespan_s: spread(&|s| Some(s.makespan_s)).expect("a group has runs"),
                throughput_per_s: spread(&|s| Some(s.throughput_per_s)).expect("a group has runs"),
                overhead_median_s: spread(&|s| s.parts.overhead.map(|q| q.median)),
                runs: m,
            }
        })
        .collect();
    // Name the app options that differ between groups of one app.
    for g in 0..groups.len() {
        let app = groups[g].app.clone();
        let opts = |i: usize| runs[groups[i].runs[0]].app_options.clone();
        let mine = opts(g);
        let others: Vec<toml::Table> = (0..groups.len()).filter(|&j| groups[j].app == app).map(opts).collect();
        let differs: Vec<String> = mine
            .iter()
            .filter(|(k, v)| others.iter().any(|o| o.get(*k) != Some(*v)))
            .map(|(k, v)| format!("{}={}", k, load::value_text(v)))
            .collect();
        groups[g].differs = differs.join(" ");
    }
    groups.sort_by(|a, b| a.app.cmp(&b.app).then(a.runs[0].cmp(&b.runs[0])));
    groups
}

/// Everything `taps report` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// One per run, in the order given.
    pub runs: Vec<RunSummary>,
    /// Configurations, repeated runs folded.
    pub groups: Vec<Group>,
}

/// Loads every run dir; the runs that could be read, and one line per one that could not.
pub fn load_all(dirs: &[PathBuf]) -> (Vec<Run>, Vec<String>) {
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    for d in dirs {
        match load_run(d) {
            Ok(r) => runs.push(r),
            Err(e) => problems.push(format!("{}: {}", d.display(), e)),
        }
    }
    (runs, problems)
}

/// `taps report`; returns the exit code (2 when no run could be read or an output cannot be written).
pub fn main(a: ReportArgs) -> i32 {
    let usage = crate::cli::usage_error;
    for (flag, path) in [("--html", &a.html), ("--plots", &a.plots)] {
        if let Some(p) = path
            && p.as_os_str().is_empty()
        {
            return usage(format!("{} needs a path", flag));
        }
    }
    if let Some(h) = &a.html {
        let parent = h.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !parent.is_dir() {
            return usage(format!("--html {}: directory {} does not exist", h.display(), parent.display()));
        }
        if h.is_dir() {
            return usage(format!("--html {}: is a directory; give a file name, e.g. report.html", h.display()));
        }
    }
    if let Some(p) = &a.plots
        && p.exists()
        && !p.is_dir()
    {
        return usage(format!("--plots {}: exists and is not a directory", p.display()));
    }
    let (runs, problems) = load_all(&a.run_dirs);
    if runs.is_empty() {
        return usage(problems.join("; "));
    }
    for p in &problems {
        eprintln!("taps: warning: skipped {}", p);
    }
    let sums: Vec<RunSummary> = runs.iter().map(summarise).collect();
    let groups = group(&runs, &sums);
    let report = Report { runs: sums, groups };
    if let Some(dir) = &a.plots {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return usage(format!("--plots {}: cannot create it: {}", dir.display(), e));
        }
        if let Err(e) = charts::write_files(dir, &runs, &report) {
            return usage(format!("--plots {}: {}", dir.display(), e));
        }
    }
    if let Some(h) = &a.html {
        let page = match table::html(&runs, &report) {
            Ok(p) => p,
            Err(e) => return usage(format!("--html {}: {}", h.display(), e)),
        };
        if let Err(e) = crate::run::write_atomic(h, page.as_bytes()) {
            return usage(format!("--html {}: cannot write it: {}", h.display(), e));
        }
    }
    let out = match a.format {
        Format::Table => table::text(&report),
        Format::Markdown => table::markdown(&report),
        Format::Csv => table::csv(&report),
        Format::Json => serde_json::to_string_pretty(&report).expect("a report serialises") + "\n",
    };
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ExecutionInfo, TaskRecord};

    fn rec(id: &str, parents: &[&str], submit: f64, start: f64, end: f64, received: f64) -> TaskRecord {
        TaskRecord {
            task_id: id.into(),
            name: "t".into(),
            parent_task_ids: parents.iter().map(|p| p.to_string()).collect(),
            submit_time: submit,
            received_time: Some(received),
            success: Some(true),
            exception: None,
            execution: Some(ExecutionInfo {
                execution_start_time: start,
                task_start_time: start,
                task_end_time: end,
                execution_end_time: end,
                ..Default::default()
            }),
            worker: None,
            bytes_inline: 0,
            bytes_by_reference: 0,
        }
    }

    #[test]
    fn a_child_started_before_the_driver_received_its_parent_waited_until_it_started() {
        // The parent's result reached the driver at 5.0; the engine had started the child at 4.0.
        let child = rec("c", &["p"], 1.0, 4.0, 6.0, 7.0);
        let parents = HashMap::from([("p", 5.0)]);
        let p = parts(&child, &parents, true).unwrap();
        assert_eq!((p.wait, p.queue, p.input, p.body, p.result), (3.0, Some(0.0), 0.0, 2.0, Some(1.0)));
        assert_eq!(p.overhead, 1.0);
        assert_eq!(p.wait + p.queue.unwrap() + p.input + p.body + p.result.unwrap(), 7.0 - 1.0);
        // The usual order is untouched: the child started after the driver had its parent.
        let late = rec("c", &["p"], 1.0, 5.5, 6.0, 7.0);
        let p = parts(&late, &parents, true).unwrap();
        assert_eq!((p.wait, p.queue, p.overhead), (4.0, Some(0.5), 1.5));
        // Another host's clock is not compared with the driver's.
        let p = parts(&child, &parents, false).unwrap();
        assert_eq!((p.wait, p.queue), (4.0, None));
    }
}
