//! The cholesky app end to end: the real `taps` binary in a temporary directory, the factor
//! checked against the input it was computed from, and the HDF5 file read back with the hdf5
//! crate and with the real `h5dump`. (Needs the default `hdf5` feature.)
#![cfg(feature = "hdf5")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::Array2;
use taps::apps::cholesky::{kernels, task_count};
use taps::record::read_records;

fn taps(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_taps")).args(args).current_dir(dir).output().expect("run taps")
}

fn example_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/cholesky/config.toml").display().to_string()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs taps and returns the one run directory it made (panics with the output if it failed).
fn run_ok(dir: &Path, args: &[&str]) -> PathBuf {
    let o = taps(dir, args);
    assert!(o.status.success(), "taps {:?} failed:\n{}", args, text(&o));
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "{:?}", runs);
    runs.into_iter().next().unwrap()
}

/// The residual the app logged, and how it was computed.
fn logged_residual(run: &Path) -> (f64, String) {
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let line = log.lines().find(|l| l.contains("Residual ||L*L^T - A||_F / ||A||_F = ")).expect("residual line");
    let rest = line.split(" = ").nth(1).unwrap();
    let (value, method) = rest.split_once(" (").unwrap();
    (value.parse().unwrap(), method.to_string())
}

fn read_l(path: &Path) -> Array2<f64> {
    hdf5::File::open(path).unwrap().dataset("L").unwrap().read_2d().unwrap()
}

/// Checks that `l` is lower triangular and the Cholesky factor of the seeded input.
fn assert_factor_of_input(l: &Array2<f64>, n: usize, seed: u64) {
    let a = kernels::generate(n, seed);
    assert_eq!(l.dim(), (n, n));
    for i in 0..n {
        for j in i + 1..n {
            assert_eq!(l[[i, j]], 0.0, "L[{}, {}] is above the diagonal", i, j);
        }
        assert!(l[[i, i]] > 0.0);
    }
    let r = kernels::residual_full(&a, l);
    assert!(r < 1e-14, "residual {}", r);
    let mut want = a.clone();
    kernels::cholesky_in_place(&mut want).unwrap();
    let diff = (l - &want).iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(diff < 1e-9, "max |L - dpotrf(A)| = {}", diff);
}

/// Checks the task records of a factorization with `t` tiles per side: the reference's count,
/// every task successful, and the graph's names and dependency shapes.
fn assert_task_graph(run: &Path, t: u64) {
    let records = read_records(&run.join("tasks.jsonl")).unwrap();
    assert_eq!(records.len() as u64, task_count(t));
    assert!(records.iter().all(|r| r.success == Some(true)), "a task failed");
    let mut by_name: BTreeMap<(String, usize), u64> = BTreeMap::new();
    for r in &records {
        *by_name.entry((r.name.clone(), r.parent_task_ids.len())).or_default() += 1;
    }
    // Per block column with m trailing tiles: 1 potrf (no parents), m trsm (parent: potrf), and per
    // trailing lower tile two chained half-rank updates: syrk on the diagonal (1 then 2 parents),
    // gemm off it (2 then 3 parents).
    let sum = |f: &dyn Fn(u64) -> u64| (0..t).map(f).sum::<u64>();
    let want: BTreeMap<(String, usize), u64> = [
        (("potrf".to_string(), 0), t),
        (("trsm".to_string(), 1), sum(&|m| m)),
        (("syrk".to_string(), 1), sum(&|m| m)),
        (("syrk".to_string(), 2), sum(&|m| m)),
        (("gemm".to_string(), 2), sum(&|m| m * m.saturating_sub(1) / 2)),
        (("gemm".to_string(), 3), sum(&|m| m * m.saturating_sub(1) / 2)),
    ]
    .into_iter()
    .filter(|(_, c)| *c > 0)
    .collect();
    assert_eq!(by_name, want);
}

#[test]
fn example_config_factors_on_thread_pool() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_ok(dir.path(), &["run", "--config", &example_config()]);
    let (r, method) = logged_residual(&run);
    assert!(r < 1e-14 && method.starts_with("full"), "{} {}", r, method);
    assert_task_graph(&run, 4);
    assert_factor_of_input(&read_l(&run.join("cholesky.h5")), 200, 0);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    for line in ["Generated input matrix: (200, 200)", "Block size: 50", "Output matrix: (200, 200)", "tasks=30)"] {
        assert!(log.contains(line), "log lacks {:?}:\n{}", line, log);
    }
    // The timed part (Finished app) is the workflow, as the reference times it; the residual
    // check and writing cholesky.h5 come after it, with their own times.
    let at = |s: &str| log.find(s).unwrap_or_else(|| panic!("log lacks {:?}:\n{}", s, log));
    assert!(at("Output matrix") < at("Finished app (elapsed="), "{}", log);
    assert!(at("Finished app (elapsed=") < at("Residual ||L*L^T - A||_F"), "{}", log);
    assert!(at("Residual ||L*L^T - A||_F") < at("cholesky.h5 (L, elapsed="), "{}", log);
}

/// Tiles serialised (postcard) and moved through files, on one thread: the wire path the
/// multi-process executors use.
#[test]
fn residual_on_thread_pool_through_the_file_transformer() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_ok(
        dir.path(),
        &[
            "run",
            "--config",
            &example_config(),
            "--app.matrix-size",
            "90",
            "--app.block-size",
            "30",
            "--app.seed",
            "3",
            "--engine.executor.max-threads",
            "1",
            "--engine.transformer",
            "file",
        ],
    );
    let (r, _) = logged_residual(&run);
    assert!(r < 1e-14, "{}", r);
    assert_task_graph(&run, 3);
    let records = read_records(&run.join("tasks.jsonl")).unwrap();
    assert!(records.iter().any(|r| r.bytes_by_reference > 0), "no tile went through the transformer");
    assert_factor_of_input(&read_l(&run.join("cholesky.h5")), 90, 3);
}

/// Without the barrier (`schedule = "dataflow"`) the same tasks give the same factor; each
/// task gets the tiles it updates from the tasks that produced them (as futures), so every potrf
/// after the first and every trsm and update after the first column has one parent more.
#[test]
fn the_dataflow_schedule_gives_the_factor_with_tiles_passed_as_futures() {
    let executor = if taps::executor::find("process-pool").is_ok() { "process-pool" } else { "thread-pool" };
    let dir = tempfile::tempdir().unwrap();
    let run = run_ok(
        dir.path(),
        &["run", "--config", &example_config(), "--engine.executor", executor, "--app.schedule", "dataflow"],
    );
    let (r, _) = logged_residual(&run);
    assert!(r < 1e-14, "{}", r);
    assert_factor_of_input(&read_l(&run.join("cholesky.h5")), 200, 0);
    let records = read_records(&run.join("tasks.jsonl")).unwrap();
    assert_eq!(records.len() as u64, task_count(4));
    assert!(records.iter().all(|r| r.success == Some(true)), "a task failed");
    let mut by_name: BTreeMap<(String, usize), u64> = BTreeMap::new();
    for r in &records {
        *by_name.entry((r.name.clone(), r.parent_task_ids.len())).or_default() += 1;
    }
    // T = 4: potrf 1 without parents + 3 with one; trsm 3 with one (column 0) + 3 with two;
    // syrk 6 first halves (1 parent in column 0: 3, 2 after: 3) and 6 second halves (2 parents);
    // gemm 4 first halves (2 parents in column 0: 3, 3 after: 1) and 4 second halves (3).
    let want: BTreeMap<(String, usize), u64> = [
        (("potrf".to_string(), 0), 1),
        (("potrf".to_string(), 1), 3),
        (("trsm".to_string(), 1), 3),
        (("trsm".to_string(), 2), 3),
        (("syrk".to_string(), 1), 3),
        (("syrk".to_string(), 2), 9),
        (("gemm".to_string(), 2), 3),
        (("gemm".to_string(), 3), 5),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_name, want);
}

/// The second real executor: worker processes receive and return tiles over the wire.
#[test]
fn residual_on_process_pool() {
    if taps::executor::find("process-pool").is_err() {
        eprintln!("process-pool is not compiled into this build; nothing to test here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = run_ok(
        dir.path(),
        &["run", "--config", &example_config(), "--engine.executor", "process-pool", "--app.seed", "5"],
    );
    let (r, _) = logged_residual(&run);
    assert!(r < 1e-14, "{}", r);
    assert_task_graph(&run, 4);
    let records = read_records(&run.join("tasks.jsonl")).unwrap();
    // Every task got at least one 50x50 tile (20 kB) serialised.
    assert!(records.iter().all(|r| r.bytes_inline >= 20_000), "a task ran without its tiles crossing the wire");
    assert_factor_of_input(&read_l(&run.join("cholesky.h5")), 200, 5);
}

fn h5dump(args: &[&str]) -> String {
    let o = Command::new("h5dump")
        .args(args)
        .output()
        .expect("h5dump not found: install hdf5-tools (apt-get install hdf5-tools)");
    assert!(o.status.success(), "h5dump {:?}: {}", args, text(&o));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn hdf5_file_reads_back_with_the_crate_and_h5dump() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_ok(
        dir.path(),
        &[
            "run",
            "--app",
            "cholesky",
            "--app.matrix-size",
            "60",
            "--app.block-size",
            "20",
            "--app.seed",
            "7",
            "--app.save-input",
            "true",
            "--app.verify",
            "sampled",
        ],
    );
    let path = run.join("cholesky.h5");
    let f = hdf5::File::open(&path).unwrap();
    let mut names = f.member_names().unwrap();
    names.sort();
    assert_eq!(names, ["A", "L"]);
    let l: Array2<f64> = f.dataset("L").unwrap().read_2d().unwrap();
    let a: Array2<f64> = f.dataset("A").unwrap().read_2d().unwrap();
    let want_a = kernels::generate(60, 7);
    assert!((&a - &want_a).iter().all(|d| d.abs() <= 1e-12 * 60.0), "dataset A is not the seeded input");
    assert_factor_of_input(&l, 60, 7);
    for ds in ["L", "A"] {
        let d = f.dataset(ds).unwrap();
        assert_eq!(d.chunk(), Some(vec![20, 20]));
        let filters = format!("{:?}", d.filters());
        assert!(filters.contains("Shuffle") && filters.contains("Deflate"), "{}", filters);
    }
    let attrs = taps::apps::cholesky::output::read_attributes(&path).unwrap();
    assert_eq!((attrs.matrix_size, attrs.block_size, attrs.seed), (60, 20, 7));
    let (logged, method) = logged_residual(&run);
    assert_eq!(format!("{:.3e}", attrs.residual), format!("{:.3e}", logged));
    assert!(attrs.residual < 1e-14);
    assert!(attrs.residual_method.starts_with("sampled (") && method.starts_with(&attrs.residual_method));
    drop(f);

    // The real h5dump sees the same structure and values.
    let p = path.to_str().unwrap();
    let header = h5dump(&["-H", "-p", p]);
    for want in [
        "DATASET \"L\"",
        "DATASET \"A\"",
        "SIMPLE { ( 60, 60 ) / ( 60, 60 ) }",
        "CHUNKED ( 20, 20 )",
        "SHUFFLE",
        "COMPRESSION DEFLATE",
        "ATTRIBUTE \"matrix_size\"",
        "ATTRIBUTE \"block_size\"",
        "ATTRIBUTE \"seed\"",
        "ATTRIBUTE \"residual\"",
    ] {
        assert!(header.contains(want), "h5dump -H lacks {:?}:\n{}", want, header);
    }
    let value = h5dump(&["-m", "%.17g", "-d", "/L", "-s", "59,58", "-c", "1,1", "-y", "--noindex", p]);
    let dumped: f64 = value
        .lines()
        .skip_while(|l| !l.contains("DATA {"))
        .nth(1)
        .and_then(|l| l.trim().trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no value in h5dump output:\n{}", value));
    assert_eq!(dumped, l[[59, 58]]);
    assert!(h5dump(&["-a", "/seed", p]).contains("(0): 7"));
}

#[test]
fn output_none_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let run =
        run_ok(dir.path(), &["run", "--config", &example_config(), "--app.output", "none", "--app.verify", "sampled"]);
    let files: Vec<String> =
        std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!files.iter().any(|f| f.contains(".h5")), "{:?}", files);
    let (r, method) = logged_residual(&run);
    assert!(r < 1e-14 && method.starts_with("sampled ("), "{} {}", r, method);
}

#[test]
fn bad_sizes_are_one_line_errors_before_the_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--app.matrix-size", "10", "--app.block-size", "3"], "Got matrix_size=10 and block_size=3."),
        (&["--app.matrix-size", "4", "--app.block-size", "8"], "Got matrix_size=4 and block_size=8."),
        (
            &["--app.matrix-size", "0", "--app.block-size", "2"],
            "must be greater than 0. Got matrix_size=0 and block_size=2.",
        ),
        (&["--app.matrix-size", "4", "--app.block-size", "2", "--app.verify", "some"], "auto|full|sampled|none"),
    ];
    for (args, want) in cases {
        let mut all = vec!["run", "--app", "cholesky"];
        all.extend_from_slice(args);
        let o = taps(dir.path(), &all);
        assert_eq!(o.status.code(), Some(2), "{:?}: {}", args, text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{}", err);
        assert!(err.contains(want), "{:?}: {}", args, err);
    }
    assert!(!dir.path().join("runs").exists());
}

/// The `software.blas` entry of a run's environment.json: (kernel set, OPENBLAS_CORETYPE).
fn blas_of_run(dir: &Path, coretype: Option<&str>) -> (String, Option<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_taps"));
    cmd.args(["run", "--config", &example_config(), "--app.output", "none"]).current_dir(dir);
    match coretype {
        Some(c) => cmd.env(kernels::CORETYPE_VAR, c),
        None => cmd.env_remove(kernels::CORETYPE_VAR),
    };
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    let run = runs.iter().max().unwrap();
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("environment.json")).unwrap()).unwrap();
    std::fs::remove_dir_all(dir.join("runs")).unwrap();
    let blas = &env["software"]["blas"];
    (blas["core"].as_str().unwrap().to_string(), blas["coretype"].as_str().map(str::to_string))
}

/// OpenBLAS falls back to generic SSE3 kernels on a CPU it does not recognise (this project's VM:
/// Debian 12's OpenBLAS 0.3.21 says "Prescott" on an AVX-512 Xeon, 4× slower). taps then runs with
/// the best kernel set the CPU has; a kernel set the user chose is kept.
#[test]
fn runs_use_the_best_blas_kernels_the_cpu_has_and_keep_the_users_choice() {
    let dir = tempfile::tempdir().unwrap();
    let (core, coretype) = blas_of_run(dir.path(), None);
    assert_eq!(kernels::better_core(&core), None, "the run used fallback kernels {}", core);
    // This test process got what OpenBLAS picks by itself: whether taps had to step in.
    if std::env::var_os(kernels::CORETYPE_VAR).is_none() {
        assert_eq!(coretype.as_deref(), kernels::better_core(&kernels::blas_core()), "core {}", core);
    }
    let (core, coretype) = blas_of_run(dir.path(), Some("Haswell"));
    assert_eq!((core.as_str(), coretype.as_deref()), ("Haswell", Some("Haswell")));
}

/// Tiles of 320 kB, above the shared-memory threshold, on process-pool, MPI and process-pool with
/// the `file` transformer: tiles are read in place from the segments (or mapped files) they arrive
/// in, results are written into segments and passed on as they are, `trsm` multiplies by the
/// inverse `potrf` leaves above the diagonal — and the factor is still exact, the output's upper
/// triangle zero, and the run leaves nothing in the shared-memory directory.
#[test]
fn large_tiles_through_shared_memory_give_the_exact_factor_and_leave_nothing() {
    let cases: &[(&str, &[&str])] = &[
        ("process-pool", &[]),
        ("mpi", &["--engine.executor.ranks", "3"]),
        ("process-pool", &["--engine.transformer", "file"]),
    ];
    for (executor, extra) in cases {
        if taps::executor::find(executor).is_err() {
            eprintln!("{} is not compiled into this build; skipped", executor);
            continue;
        }
        let (dir, shm) = (tempfile::tempdir().unwrap(), tempfile::tempdir_in("/dev/shm").unwrap());
        let config = example_config();
        let mut args = vec!["run", "--config", &config, "--engine.executor", executor];
        args.extend(["--app.matrix-size", "800", "--app.block-size", "200", "--app.seed", "9"]);
        args.extend(extra.iter());
        let o = Command::new(env!("CARGO_BIN_EXE_taps"))
            .args(&args)
            .current_dir(dir.path())
            .env("TAPS_SHM_DIR", shm.path())
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{} {:?}:\n{}", executor, extra, text(&o));
        let run = std::fs::read_dir(dir.path().join("runs")).unwrap().next().unwrap().unwrap().path();
        let (r, _) = logged_residual(&run);
        assert!(r < 1e-14, "{} {:?}: residual {}", executor, extra, r);
        assert_task_graph(&run, 4);
        assert_factor_of_input(&read_l(&run.join("cholesky.h5")), 800, 9);
        let left: Vec<_> = std::fs::read_dir(shm.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "{} {:?}: left in the shared-memory directory: {:?}", executor, extra, left);
    }
}
