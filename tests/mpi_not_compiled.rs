//! A build without the `mpi` feature says so, in one line, wherever MPI is asked for.
#![cfg(not(feature = "mpi"))]

use std::process::Command;

mod common;

#[test]
fn the_mpi_executor_names_the_feature_to_rebuild_with() {
    let dir = tempfile::tempdir().unwrap();
    common::assert_bad_input(
        dir.path(),
        &[
            "run",
            "--app",
            "synthetic",
            "--app.structure",
            "reduce",
            "--app.task-count",
            "2",
            "--engine.executor",
            "mpi",
        ],
        &[
            "executor \"mpi\" is not available in this build",
            "this taps was built without MPI (--no-default-features): rebuild with the default features, cargo build --release",
        ],
    );
    let list = common::taps(dir.path(), &["list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.lines().any(|l| l.trim_start().starts_with("mpi ") && l.contains("built without MPI")), "{}", list);
}

#[test]
fn taps_worker_under_mpirun_names_the_feature_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_taps-worker")).args(["-c", "run.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("built without MPI") && stderr.contains("cargo build --release"), "{}", stderr);
}
