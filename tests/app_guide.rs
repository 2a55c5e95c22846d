//! The example app of apps/README.md ("Adding an app"), compiled from examples/hello_app.rs and
//! run through the real engine: its records, its tasks' working directories, a failing program,
//! and a missing program caught by the preflight before anything is created.

#[path = "../examples/hello_app.rs"]
#[allow(dead_code)]
mod hello_app;

use std::path::Path;

use taps::record::read_records;

fn options(files: u64, program: &str) -> toml::Table {
    toml::from_str(&format!("files = {}\nprogram = {:?}", files, program)).unwrap()
}

#[test]
fn the_guide_app_runs_its_program_in_each_tasks_directory_and_records_every_task() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let summary = hello_app::run(&options(3, "wc"), &run_dir).unwrap();
    assert_eq!((summary.submitted, summary.records, summary.failed), (4, 4, 0));
    let recs = read_records(&run_dir.join("tasks.jsonl")).unwrap();
    let counts: Vec<_> = recs.iter().filter(|r| r.name == "hello-count-words").collect();
    assert_eq!(counts.len(), 3);
    for r in &counts {
        assert_eq!(r.success, Some(true));
        let dir = run_dir.join("tasks").join(&r.task_id);
        let out = std::fs::read_to_string(dir.join("wc.stdout")).unwrap();
        assert!(out.contains("/inputs/"), "wc's output is kept in its task's directory: {:?}", out);
    }
    let total = recs.iter().find(|r| r.name == "hello-total").unwrap();
    assert_eq!(total.parent_task_ids.len(), 3);
    assert_eq!(total.success, Some(true));
}

#[test]
fn a_failing_program_fails_its_task_and_the_total_names_that_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    // `false -w FILE` exits with status 1 and prints nothing.
    let err = hello_app::run(&options(2, "false"), &run_dir).unwrap_err().to_string();
    assert!(err.starts_with("ParentFailed: parent task hello-count-words ("), "{}", err);
    assert!(err.contains("failed: ProgramFailed: `false -w /"), "{}", err);
    assert!(err.contains("` exited with status 1 (in "), "{}", err);
    let recs = read_records(&run_dir.join("tasks.jsonl")).unwrap();
    assert_eq!(recs.len(), 3, "every task has one record");
    for r in &recs {
        let kind = &r.exception.as_ref().expect("every task failed").kind;
        let want = if r.name == "hello-total" { "ParentFailed" } else { "ProgramFailed" };
        assert_eq!(kind, want, "{:?}", r);
    }
}

#[test]
fn a_missing_program_is_named_with_its_install_hint_before_the_run_directory_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let err = hello_app::run(&options(2, "taps-no-such-wc"), &run_dir).unwrap_err().to_string();
    assert_eq!(err, "taps-no-such-wc not found on PATH: apt-get install coreutils");
    assert!(!Path::new(&run_dir).exists(), "nothing is created");
    // Bad options are caught there too, naming the key.
    let err = hello_app::run(&toml::Table::new(), &run_dir).unwrap_err().to_string();
    assert!(err.starts_with("app.files is required (non-negative integer)"), "{}", err);
    let err = hello_app::run(&options(0, "wc"), &run_dir).unwrap_err().to_string();
    assert_eq!(err, "app.files must be at least 1");
    assert!(!Path::new(&run_dir).exists());
}

#[test]
fn every_line_the_guide_quotes_is_in_the_example_file() {
    let guide = include_str!("../apps/README.md");
    let example = include_str!("../examples/hello_app.rs");
    let lines: Vec<&str> = example.lines().map(str::trim).collect();
    let mut quoted = 0;
    for block in guide.split("```rust\n").skip(1) {
        let code = block.split("```").next().unwrap();
        for line in code.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "...") {
            assert!(
                lines.contains(&line),
                "apps/README.md quotes a line examples/hello_app.rs does not have: {}",
                line
            );
            quoted += 1;
        }
    }
    assert!(quoted > 30, "the guide quotes the example ({} lines)", quoted);
}
