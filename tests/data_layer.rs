//! Filters × transformers × executors through the real `taps` CLI with the synthetic app: data
//! arrives intact (the app checks every checksum), records count the bytes moved inline and by
//! reference, and the run directory holds only what the user asked for.

use std::path::{Path, PathBuf};
use std::process::Command;

use taps::record::{TaskRecord, read_records};

const TAPS: &str = env!("CARGO_BIN_EXE_taps");

const EXECUTORS: [&str; 2] = ["thread-pool", "process-pool"];
const TRANSFORMERS: [&str; 2] = ["none", "file"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Filter {
    None,
    Never,
    /// object-size with min-size = half the payload.
    Size,
    /// object-type matching the synthetic `Data` type.
    Type,
}

const FILTERS: [Filter; 4] = [Filter::None, Filter::Never, Filter::Size, Filter::Type];

struct Run {
    run_dir: PathBuf,
    records: Vec<TaskRecord>,
}

/// Runs a synthetic workflow in a fresh directory; panics with the output if it fails.
fn run(structure: &str, tasks: u64, bytes: u64, executor: &str, transformer: &str, filter: Filter) -> Run {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut c = Command::new(TAPS);
    c.current_dir(&dir)
        .args(["run", "--app", "synthetic", "--app.structure", structure])
        .args(["--app.task-count", &tasks.to_string(), "--app.task-data-bytes", &bytes.to_string()])
        .args(["--engine.executor", executor, "--engine.transformer", transformer]);
    if executor == "process-pool" {
        c.args(["--engine.executor.max-processes", "2"]);
    }
    match filter {
        Filter::None => c.args(["--engine.filter", "none"]),
        Filter::Never => c.args(["--engine.filter", "never"]),
        Filter::Size => {
            c.args(["--engine.filter", "object-size", "--engine.filter.min-size", &(bytes / 2).to_string()])
        }
        Filter::Type => c.args(["--engine.filter", "object-type", "--engine.filter.patterns", "::Data$"]),
    };
    let out = c.output().unwrap();
    let what = format!("{} {} {:?} {} bytes", executor, transformer, filter, bytes);
    assert!(
        out.status.success(),
        "{}: exit {:?}\n{}{}",
        what,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<_> = std::fs::read_dir(dir.join("runs")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(runs.len(), 1);
    let run_dir = runs[0].clone();
    let mut names: Vec<String> =
        std::fs::read_dir(&run_dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    // The file transformer's data/ directory is gone; nothing else appeared.
    assert_eq!(names, ["config.toml", "environment.json", "log.txt", "tasks.jsonl"], "{}", what);
    let records = read_records(&run_dir.join("tasks.jsonl")).unwrap();
    assert!(records.iter().all(|r| r.success == Some(true)), "{}: {:?}", what, records);
    Run { run_dir, records }
}

/// Number of `Data` values a record's task moved: its inputs (one per parent, or the fresh one) plus its result.
fn data_values(r: &TaskRecord) -> u64 {
    r.parent_task_ids.len().max(1) as u64 + 1
}

#[test]
fn every_filter_transformer_executor_combination_moves_data_as_configured() {
    const B: u64 = 10_000;
    for executor in EXECUTORS {
        for transformer in TRANSFORMERS {
            for filter in FILTERS {
                let what = format!("{} {} {:?}", executor, transformer, filter);
                let r = run("diamond", 3, B, executor, transformer, filter);
                assert_eq!(r.records.len(), 5, "{}", what);
                let serialises = executor == "process-pool";
                for rec in &r.records {
                    let data = B * data_values(rec);
                    let (inline, by_ref) = (rec.bytes_inline, rec.bytes_by_reference);
                    let transformed = match (transformer, filter) {
                        ("none", _) | (_, Filter::Never) => "nothing",
                        (_, Filter::None) => "everything",
                        _ => "data",
                    };
                    match transformed {
                        "nothing" => {
                            assert_eq!(by_ref, 0, "{}", what);
                            if serialises {
                                assert!(inline >= data, "{}: inline {} < {}", what, inline, data);
                            } else {
                                assert_eq!(inline, 0, "{}: thread-pool serialises nothing", what);
                            }
                        }
                        "everything" => {
                            assert_eq!(inline, 0, "{}", what);
                            assert!(by_ref >= data, "{}: by reference {} < {}", what, by_ref, data);
                        }
                        _ => {
                            // Only the Data values go by reference; the small arguments stay inline.
                            assert!(by_ref >= data && by_ref < data + 100, "{}: by reference {}", what, by_ref);
                            if serialises {
                                assert!(inline > 0 && inline < 100, "{}: inline {}", what, inline);
                            } else {
                                assert_eq!(inline, 0, "{}", what);
                            }
                        }
                    }
                }
                let ran_on = r.records[0].worker.clone().unwrap();
                assert!(ran_on.starts_with(if serialises { "pid-" } else { "thread-" }), "{}: {}", what, ran_on);
                std::fs::remove_dir_all(r.run_dir.parent().unwrap().parent().unwrap()).unwrap();
            }
        }
    }
}

#[test]
fn empty_payloads_work_in_every_combination() {
    for executor in EXECUTORS {
        for transformer in TRANSFORMERS {
            for filter in [Filter::None, Filter::Never, Filter::Type] {
                let r = run("reduce", 3, 0, executor, transformer, filter);
                assert_eq!(r.records.len(), 4);
                std::fs::remove_dir_all(r.run_dir.parent().unwrap().parent().unwrap()).unwrap();
            }
        }
    }
}

#[test]
fn hundred_megabyte_payloads_cross_processes_inline_and_by_file() {
    const B: u64 = 100_000_000;
    // (The thread-pool moves values by reference; 100 MB there only costs the app's own work.)
    for (executor, transformer) in [("process-pool", "none"), ("process-pool", "file")] {
        let r = run("sequential", 1, B, executor, transformer, Filter::None);
        let rec = &r.records[0];
        assert!(rec.bytes_inline + rec.bytes_by_reference >= 2 * B, "{} {}: {:?}", executor, transformer, rec);
        std::fs::remove_dir_all(r.run_dir.parent().unwrap().parent().unwrap()).unwrap();
    }
}

#[test]
fn a_file_dir_outside_the_run_is_created_and_removed() {
    let outside = tempfile::tempdir().unwrap();
    let file_dir = outside.path().join("shared/cache");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(TAPS)
        .current_dir(dir.path())
        .args(["run", "--app", "synthetic", "--app.structure", "diamond", "--app.task-count", "2"])
        .args(["--app.task-data-bytes", "5000", "--engine.executor", "process-pool", "--engine.transformer", "file"])
        .arg("--engine.transformer.file-dir")
        .arg(&file_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!outside.path().join("shared").exists(), "the directories the run created are removed");
    assert!(outside.path().exists(), "what existed before stays");
    let run = std::fs::read_dir(dir.path().join("runs")).unwrap().flatten().next().unwrap().path();
    let recs = read_records(&run.join("tasks.jsonl")).unwrap();
    assert!(recs.iter().all(|r| r.bytes_by_reference > 0 && r.bytes_inline == 0));
    assert!(!Path::new(&run.join("data")).exists());
}
