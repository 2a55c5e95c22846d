//! The synthetic app: task counts and parent links of every structure, checked from tasks.jsonl.

mod common;

use common::*;

fn run(structure: &str, n: &str, extra: &[&str]) -> Vec<TaskRecord> {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = vec!["run", "--app", "synthetic", "--app.structure", structure, "--app.task-count", n];
    a.extend_from_slice(extra);
    let dir = run_ok(tmp.path(), &a);
    let recs = records(&dir);
    check_record_invariants(&recs);
    assert!(
        recs.iter().all(|r| r.success == Some(true)),
        "a task failed: {:?}",
        recs.iter().find(|r| r.success != Some(true))
    );
    recs
}

fn by_submit(mut recs: Vec<TaskRecord>) -> Vec<TaskRecord> {
    recs.sort_by(|a, b| a.submit_time.total_cmp(&b.submit_time));
    recs
}

#[test]
fn bag_has_n_independent_tasks_and_respects_the_running_cap() {
    let recs = run("bag", "40", &["--app.bag-max-running", "3", "--app.task-sleep", "0.002", "--app.seed", "1"]);
    assert_eq!(recs.len(), 40);
    assert!(recs.iter().all(|r| r.name == "noop" && r.parent_task_ids.is_empty()));
    // Never more than 3 in flight: at any submit time, at most 2 others are submitted and not yet received.
    for r in &recs {
        let open = recs
            .iter()
            .filter(|o| {
                o.task_id != r.task_id && o.submit_time <= r.submit_time && o.received_time.unwrap() > r.submit_time
            })
            .count();
        assert!(open <= 2, "{} tasks in flight when {} was submitted", open + 1, r.task_id);
    }
}

#[test]
fn diamond_is_one_then_n_then_one() {
    let recs = by_submit(run("diamond", "6", &["--app.task-data-bytes", "1000"]));
    assert_eq!(recs.len(), 6 + 2);
    let first = &recs[0];
    assert!(first.parent_task_ids.is_empty());
    let middle = &recs[1..7];
    for m in middle {
        assert_eq!(m.parent_task_ids, vec![first.task_id.clone()]);
    }
    let last = &recs[7];
    let middle_ids: Vec<String> = middle.iter().map(|m| m.task_id.clone()).collect();
    assert_eq!(last.parent_task_ids, middle_ids);
    // The last task started after every middle task ended.
    let start = last.execution.as_ref().unwrap().execution_start_time;
    assert!(middle.iter().all(|m| m.execution.as_ref().unwrap().execution_end_time <= start));
}

#[test]
fn reduce_is_n_then_one() {
    let recs = by_submit(run("reduce", "5", &["--app.task-data-bytes", "64"]));
    assert_eq!(recs.len(), 5 + 1);
    let ids: Vec<String> = recs[..5].iter().map(|r| r.task_id.clone()).collect();
    assert!(recs[..5].iter().all(|r| r.parent_task_ids.is_empty()));
    assert_eq!(recs[5].parent_task_ids, ids);
}

#[test]
fn sequential_is_a_chain() {
    let recs = by_submit(run("sequential", "7", &["--app.task-data-bytes", "10"]));
    assert_eq!(recs.len(), 7);
    assert!(recs[0].parent_task_ids.is_empty());
    for w in recs.windows(2) {
        assert_eq!(w[1].parent_task_ids, vec![w[0].task_id.clone()]);
        assert!(w[0].received_time.unwrap() <= w[1].execution.as_ref().unwrap().execution_start_time + 1e-3);
    }
}

#[test]
fn warmup_tasks_run_first_and_count() {
    let recs = by_submit(run("reduce", "3", &["--app.warmup-tasks", "4"]));
    assert_eq!(recs.len(), 4 + 3 + 1);
    assert!(recs[..4].iter().all(|r| r.name == "warmup"));
    let warm_end = recs[..4].iter().map(|r| r.received_time.unwrap()).fold(0.0, f64::max);
    assert!(recs[4..].iter().all(|r| r.submit_time >= warm_end));
}

#[test]
fn sleeps_are_honoured() {
    let recs = run("bag", "4", &["--app.bag-max-running", "4", "--app.task-sleep", "0.05"]);
    for r in &recs {
        let e = r.execution.as_ref().unwrap();
        assert!(e.task_end_time - e.task_start_time >= 0.05 - 1e-3, "{:?}", e);
    }
}

#[test]
fn final_log_line_counts_every_task() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_ok(
        tmp.path(),
        &[
            "run",
            "--app",
            "synthetic",
            "--app.structure",
            "diamond",
            "--app.task-count",
            "3",
            "--app.warmup-tasks",
            "2",
        ],
    );
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    assert!(log.contains("Finished benchmark (app=synthetic, elapsed="), "{}", log);
    assert!(log.contains(", tasks=7)"), "{}", log);
}
