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

/// Every file and directory under `root` with its content ("<dir>" for directories), sorted.
fn snapshot(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                out.push((rel, "<dir>".into()));
                stack.push(p);
            } else {
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A user's directory: ordinary and hidden files, a subdirectory, and names that look like the
/// transformer's own (a UUID file name, `data`, and the very `taps-<run>` directory this run would pick).
fn users_directory() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("my_script.py"), "print('mine')\n").unwrap();
    std::fs::write(p.join("README"), "b\n").unwrap();
    std::fs::write(p.join(".hidden"), "secret\n").unwrap();
    std::fs::write(p.join(uuid::Uuid::new_v4().simple().to_string()), "looks like a value file\n").unwrap();
    std::fs::create_dir_all(p.join("data/nested")).unwrap();
    std::fs::write(p.join("data/nested/results.csv"), "1,2\n").unwrap();
    std::fs::create_dir(p.join("taps-fixed")).unwrap();
    std::fs::write(p.join("taps-fixed/.keep"), "\n").unwrap();
    std::fs::write(p.join("taps-fixed-1"), "a file, not a directory\n").unwrap();
    d
}

#[test]
fn the_file_transformer_touches_nothing_of_the_users_file_dir() {
    for executor in EXECUTORS {
        for filter in ["none", "object-size"] {
            let user = users_directory();
            let before = snapshot(user.path());
            let cwd = tempfile::tempdir().unwrap();
            let out = Command::new(TAPS)
                .current_dir(cwd.path())
                .args(["run", "--app", "synthetic", "--app.structure", "bag", "--app.task-count", "4"])
                .args(["--app.bag-max-running", "2", "--app.task-data-bytes", "10000", "--engine.executor", executor])
                .args(["--engine.filter", filter, "--engine.transformer", "file", "--run.dir-format", "runs/fixed"])
                .arg("--engine.transformer.file-dir")
                .arg(user.path())
                .output()
                .unwrap();
            let what = format!("{} {}: {}", executor, filter, String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{}", what);
            let recs = read_records(&cwd.path().join("runs/fixed/tasks.jsonl")).unwrap();
            assert!(recs.iter().all(|r| r.bytes_by_reference > 0), "values went through the user's file-dir: {}", what);
            assert_eq!(snapshot(user.path()), before, "{}", what);
        }
    }
}

#[test]
fn an_interrupted_file_transformer_run_removes_only_its_own_directory() {
    for executor in EXECUTORS {
        let user = users_directory();
        let before = snapshot(user.path());
        let cwd = tempfile::tempdir().unwrap();
        let child = Command::new(TAPS)
            .current_dir(cwd.path())
            .args(["run", "--app", "synthetic", "--app.structure", "sequential", "--app.task-count", "1000"])
            .args(["--app.task-sleep", "0.05", "--app.task-data-bytes", "1000", "--engine.executor", executor])
            .args(["--engine.transformer", "file", "--run.dir-format", "runs/fixed"])
            .arg("--engine.transformer.file-dir")
            .arg(user.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let records = cwd.path().join("runs/fixed/tasks.jsonl");
        let own = user.path().join("taps-fixed-2");
        // Interrupt once the run's own directory holds values and a few tasks have finished.
        let started = std::time::Instant::now();
        while !(own.is_dir() && std::fs::read_to_string(&records).is_ok_and(|t| t.lines().count() >= 3)) {
            assert!(started.elapsed().as_secs() < 120, "{}: the run never got going", executor);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{}: {}", executor, String::from_utf8_lossy(&out.stderr));
        assert_eq!(snapshot(user.path()), before, "{}", executor);
    }
}

#[test]
fn a_file_dir_that_cannot_be_created_is_refused_before_the_run() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("a-file"), "mine\n").unwrap();
    for dir in ["a-file", "a-file/sub/dir"] {
        let out = Command::new(TAPS)
            .current_dir(cwd.path())
            .args(["run", "--app", "synthetic", "--app.structure", "sequential", "--app.task-count", "2"])
            .args(["--engine.executor", "thread-pool"])
            .args(["--engine.transformer", "file", "--engine.transformer.file-dir", dir])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {}", dir, err);
        assert_eq!(err.lines().count(), 1, "{}", err);
        assert!(
            err.starts_with("taps: error: engine.transformer.file_dir") && err.contains("is not a directory"),
            "{}",
            err
        );
        assert!(!cwd.path().join("runs").exists(), "no run directory for bad input");
        assert_eq!(std::fs::read_to_string(cwd.path().join("a-file")).unwrap(), "mine\n");
    }
}
