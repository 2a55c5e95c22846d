//! `config.toml` as the Python suite reads it, the repeat-a-run round trip, and how values are
//! read: repeated flags, numeric log levels, booleans and integers in TOML and on the CLI alike.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;

fn read_config(run_dir: &Path) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(run_dir.join("config.toml")).unwrap()).unwrap()
}

fn run(base: &[&str], more: &[&str]) -> Vec<String> {
    let mut v = vec!["run".to_string()];
    v.extend(base.iter().chain(more).map(|s| s.to_string()));
    v
}

fn run_ok_s(d: &Path, a: &[String]) -> std::path::PathBuf {
    run_ok(d, &a.iter().map(String::as_str).collect::<Vec<_>>())
}

const BAG: &[&str] = &[
    "--app",
    "synthetic",
    "--app.structure",
    "bag",
    "--app.task-count",
    "3",
    "--app.bag-max-running",
    "2",
    "--engine.executor",
    "thread-pool",
];

/// The keys of each table in the Python suite's config models (reference §1.6, §3, §4, §5).
fn reference_keys(path: &str, name: Option<&str>) -> &'static [&'static str] {
    match (path, name) {
        ("", _) => &["version", "app", "engine", "logging", "run"],
        ("engine", _) => &["task_record_file_name", "executor", "filter", "transformer"],
        ("logging", _) => &["level", "file_level", "file_name"],
        ("run", _) => &["dir_format", "env_vars"],
        ("app", Some("cholesky")) | ("app.config", Some("cholesky")) => &["name", "matrix_size", "block_size"],
        ("app", Some("failures")) => &["name", "base", "config", "failure_rate", "failure_type"],
        ("app", Some("mapreduce")) | ("app.config", Some("mapreduce")) => {
            &["name", "data_dir", "map_tasks", "generate", "generated_files", "generated_words"]
        }
        ("app", Some("synthetic")) | ("app.config", Some("synthetic")) => &[
            "name",
            "structure",
            "task_count",
            "task_data_bytes",
            "task_sleep",
            "bag_max_running",
            "warmup_tasks",
            "task_std",
        ],
        ("engine.executor", Some("process-pool")) => &["name", "max_processes", "context"],
        ("engine.executor", Some("thread-pool")) => &["name", "max_threads"],
        ("engine.filter", Some("never")) => &["name"],
        ("engine.filter", Some("object-size")) => &["name", "min_size", "max_size"],
        ("engine.filter", Some("object-type")) => &["name", "patterns"],
        ("engine.transformer", Some("file")) => &["name", "file_dir"],
        (p, n) => panic!("no reference keys for [{}] {:?}", p, n),
    }
}

/// Checks every table of a written config against the reference's keys; no "none" strings.
fn check_reference_readable(t: &toml::Table, path: &str, base: Option<&str>) {
    let name = if path == "app.config" { base } else { t.get("name").and_then(|v| v.as_str()) };
    let allowed: BTreeSet<&str> = reference_keys(path, name).iter().copied().collect();
    for (k, v) in t {
        assert!(allowed.contains(k.as_str()), "[{}] {} is not a key of the Python suite ({:?})", path, k, allowed);
        assert_ne!(v.as_str(), Some("none"), "[{}] {} is written as \"none\"", path, k);
        if let toml::Value::Table(sub) = v
            && k != "env_vars"
        {
            let p = if path.is_empty() { k.clone() } else { format!("{}.{}", path, k) };
            let base = t.get("base").and_then(|v| v.as_str());
            check_reference_readable(sub, &p, base);
        }
    }
}

#[test]
fn config_toml_of_reference_options_is_readable_by_the_reference_and_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cases: Vec<Vec<String>> = vec![
        run(BAG, &[]),
        run(BAG, &["--engine.executor", "process-pool", "--engine.executor.max-processes", "2"]),
        run(BAG, &["--engine.executor", "process-pool"]),
        run(BAG, &["--engine.filter", "object-size", "--engine.filter.min-size", "10", "--engine.transformer", "file"]),
        run(BAG, &["--engine.filter", "object-type", "--engine.filter.patterns", "Data$"]),
        run(BAG, &["--engine.filter", "never", "--run.env-vars", "TAPS_T=1", "--logging.level", "20"]),
        run(
            &[
                "--app",
                "cholesky",
                "--app.matrix-size",
                "8",
                "--app.block-size",
                "4",
                "--engine.executor",
                "thread-pool",
            ],
            &[],
        ),
        run(
            &["--app", "mapreduce", "--app.data-dir", "words", "--app.generate", "true", "--app.generated-files", "2"],
            &["--app.generated-words", "20", "--engine.executor", "thread-pool"],
        ),
        run(
            &[
                "--app",
                "failures",
                "--app.base",
                "synthetic",
                "--app.failure-type",
                "failure",
                "--app.failure-rate",
                "0",
            ],
            &["--app.config", r#"{"structure": "reduce", "task_count": 2}"#, "--engine.executor", "thread-pool"],
        ),
    ];
    for a in &cases {
        let first = run_ok_s(d, a);
        let cfg = read_config(&first);
        check_reference_readable(&cfg, "", None);
        // Feeding config.toml back repeats the run with the identical configuration.
        let path = first.join("config.toml");
        let second = run_ok(d, &["run", "-c", path.to_str().unwrap()]);
        assert_eq!(read_config(&second), cfg, "round trip of {:?}", a);
    }
}

#[test]
fn taps_only_keys_and_nones_round_trip_when_set() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cases: Vec<Vec<String>> = vec![
        run(BAG, &["--app.seed", "7", "--logging.file-level", "DEBUG", "--engine.task-record-file-name", "recs.jsonl"]),
        run(
            &[
                "--app",
                "cholesky",
                "--app.matrix-size",
                "8",
                "--app.block-size",
                "4",
                "--engine.executor",
                "thread-pool",
            ],
            &["--app.output", "none", "--app.verify", "full", "--app.seed", "3"],
        ),
        run(
            &["--app", "mapreduce", "--app.data-dir", "w", "--app.generate", "yes", "--app.map-tasks", "none"],
            &["--app.generated-files", "2", "--app.generated-words", "5", "--engine.executor", "thread-pool"],
        ),
    ];
    for a in &cases {
        let first = run_ok_s(d, a);
        let text = std::fs::read_to_string(first.join("config.toml")).unwrap();
        let path = first.join("config.toml");
        let second = run_ok(d, &["run", "-c", path.to_str().unwrap()]);
        assert_eq!(std::fs::read_to_string(second.join("config.toml")).unwrap(), text, "round trip of {:?}", a);
    }
    let c = read_config(&run_ok_s(d, &cases[1]));
    assert_eq!(c["app"]["output"].as_str(), Some("none"), "a none whose default is not none is written");
    assert_eq!(c["app"]["seed"].as_integer(), Some(3));
    assert!(c["app"].get("save_input").is_none(), "a taps-only key at its default is left out");
    let c = read_config(&run_ok_s(d, &cases[2]));
    assert_eq!(c["app"]["map_tasks"].as_str(), Some("none"));
}

#[test]
fn repeated_list_and_map_flags_append_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("env.toml"), "[run.env_vars]\nFROM_FILE = \"f\"\nB = \"file\"\n").unwrap();
    let a = run(
        BAG,
        &[
            "-c",
            "env.toml",
            "--engine.filter",
            "object-type",
            "--engine.filter.patterns",
            "A",
            "--engine.filter.patterns",
            "B,C",
            "--engine.filter.patterns",
            r#"["D"]"#,
            "--run.env-vars",
            r#"{"A": "1"}"#,
            "--run.env-vars",
            "B=2,C=x=y",
            "--run.env_vars",
            "A=3",
        ],
    );
    let cfg = read_config(&run_ok_s(d, &a));
    let patterns: Vec<&str> =
        cfg["engine"]["filter"]["patterns"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(patterns, ["A", "B", "C", "D"]);
    let env = cfg["run"]["env_vars"].as_table().unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
    assert_eq!(env, [("A", "3"), ("B", "2"), ("C", "x=y"), ("FROM_FILE", "f")]);
    // A list flag given once replaces the file's list, as any other flag does.
    std::fs::write(d.join("pat.toml"), "[engine.filter]\nname = \"object-type\"\npatterns = [\"X\"]\n").unwrap();
    let cfg = read_config(&run_ok_s(d, &run(BAG, &["-c", "pat.toml", "--engine.filter.patterns", "Y"])));
    assert_eq!(cfg["engine"]["filter"]["patterns"].as_array().unwrap().len(), 1);
}

#[test]
fn numeric_log_levels_and_trace_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("levels.toml"), "[logging]\nlevel = 30\nfile_level = 5\n").unwrap();
    let (dir, stdout) = run_ok_with_stdout(
        d,
        &run(BAG, &["-c", "levels.toml", "--app.task-data-bytes", "64", "--engine.transformer", "file"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let cfg = read_config(&dir);
    assert_eq!(cfg["logging"]["level"].as_integer(), Some(30), "a number is written back as a number");
    assert_eq!(cfg["logging"]["file_level"].as_integer(), Some(5));
    assert!(!stdout.contains("RUN   (taps.run)"), "level 30 hides RUN lines on stdout: {}", stdout);
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
    let ids: Vec<String> = records(&dir).iter().map(|r| r.task_id.to_string()).collect();
    for id in &ids {
        let line = format!("TRACE (taps.engine) > Submitted task to executor (id={}, name=noop, parents=[])", id);
        assert!(log.contains(&line), "missing {:?} in\n{}", line, log);
    }
    assert!(log.contains("TRACE (taps.engine.transform) > Transformed object (type="), "{}", log);
    assert!(
        log.contains("TRACE (taps.engine.transform) > Resolved identifier (type=DataRef) into object (type="),
        "{}",
        log
    );
    // The default level writes no TRACE lines.
    let dir = run_ok_s(d, &run(BAG, &[]));
    assert!(!std::fs::read_to_string(dir.join("log.txt")).unwrap().contains("TRACE"));
    let bad = tempfile::tempdir().unwrap();
    let d = bad.path();
    std::fs::write(d.join("bad.toml"), "[logging]\nlevel = -1\n").unwrap();
    assert_bad_input(
        d,
        &run(BAG, &["-c", "bad.toml"]).iter().map(String::as_str).collect::<Vec<_>>(),
        &["logging.level", "-1"],
    );
}

#[test]
fn booleans_and_integers_read_alike_in_toml_and_on_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let chol =
        ["--app", "cholesky", "--app.matrix-size", "4", "--app.block-size", "2", "--engine.executor", "thread-pool"];
    for (toml_value, cli_value, expect) in [
        ("\"yes\"", "yes", true),
        ("1", "1", true),
        ("\"on\"", "ON", true),
        ("\"off\"", "no", false),
        ("0", "0", false),
    ] {
        std::fs::write(d.join("b.toml"), format!("[app]\nsave_input = {}\n", toml_value)).unwrap();
        for a in [run(&chol, &["-c", "b.toml"]), run(&chol, &["--app.save-input", cli_value])] {
            let cfg = read_config(&run_ok_s(d, &a));
            assert_eq!(cfg["app"].get("save_input").and_then(|v| v.as_bool()).unwrap_or(false), expect, "{:?}", a);
        }
    }
    let bad = tempfile::tempdir().unwrap();
    let d = bad.path();
    std::fs::write(d.join("b.toml"), "[app]\nsave_input = \"maybe\"\n").unwrap();
    assert_bad_input(d, &run(&chol, &["-c", "b.toml"]).iter().map(String::as_str).collect::<Vec<_>>(), &["maybe"]);
    assert_bad_input(
        d,
        &run(&chol, &["--app.save-input", "maybe"]).iter().map(String::as_str).collect::<Vec<_>>(),
        &["maybe"],
    );
    // BAG without its task count, which comes from the file.
    let bag: Vec<&str> = BAG.iter().copied().filter(|a| *a != "--app.task-count" && *a != "3").collect();
    // A table without a name keeps its options for the plugin selected on the command line
    // (but an executor table without a name is the default executor's).
    std::fs::write(d.join("i.toml"), "[app]\ntask_count = \"3\"\n[engine.executor]\nmax_processes = 2\n").unwrap();
    let cfg = read_config(&run_ok_s(d, &run(&bag, &["-c", "i.toml"])));
    assert_eq!(cfg["app"]["task_count"].as_integer(), Some(3));
    let bad = tempfile::tempdir().unwrap();
    let d = bad.path();
    std::fs::write(d.join("i.toml"), "[app]\ntask_count = \"3.5\"\n").unwrap();
    assert_bad_input(d, &run(&bag, &["-c", "i.toml"]).iter().map(String::as_str).collect::<Vec<_>>(), &["3.5"]);
    std::fs::write(d.join("i.toml"), "[app]\ntask_count = 3.0\n").unwrap();
    let cfg = read_config(&run_ok_s(d, &run(&bag, &["-c", "i.toml"])));
    assert_eq!(cfg["app"]["task_count"].as_integer(), Some(3));
}
