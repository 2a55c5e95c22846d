//! `taps run` configuration: layering, round trip, help, and every class of bad input.

mod common;

use common::*;

const BAG: &[&str] =
    &["--app", "synthetic", "--app.structure", "bag", "--app.task-count", "3", "--app.bag-max-running", "2"];

fn args<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run"];
    v.extend_from_slice(base);
    v.extend_from_slice(more);
    v
}

fn read_config(run_dir: &std::path::Path) -> toml::Table {
    toml::from_str(&std::fs::read_to_string(run_dir.join("config.toml")).unwrap()).unwrap()
}

#[test]
fn files_layer_in_order_and_cli_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("a.toml"),
        "[app]\nname = \"synthetic\"\nstructure = \"reduce\"\ntask_count = 4\ntask_sleep = 0.0\n\n\
         [engine.executor]\nname = \"thread-pool\"\nmax_threads = 1\n",
    )
    .unwrap();
    std::fs::write(d.join("b.toml"), "[app]\ntask_count = 6\nwarmup_tasks = 2\n").unwrap();
    // One file.
    let one = run_ok(d, &["run", "-c", "a.toml"]);
    assert_eq!(records(&one).len(), 4 + 1);
    // Two files: the second overrides task_count and adds warmups.
    let two = run_ok(d, &["run", "--config", "a.toml", "b.toml"]);
    assert_eq!(records(&two).len(), 2 + 6 + 1);
    // CLI beats both files; dashes and underscores both work.
    let cli =
        run_ok(d, &["run", "-c", "a.toml", "b.toml", "--app.task_count", "3", "--engine.executor.max-threads", "2"]);
    let cfg = read_config(&cli);
    assert_eq!(cfg["app"]["task_count"].as_integer(), Some(3));
    assert_eq!(cfg["app"]["warmup_tasks"].as_integer(), Some(2));
    assert_eq!(cfg["engine"]["executor"]["max_threads"].as_integer(), Some(2));
    assert_eq!(records(&cli).len(), 2 + 3 + 1);
}

#[test]
fn written_config_reproduces_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let first = run_ok(
        d,
        &args(
            BAG,
            &[
                "--app.seed",
                "7",
                "--app.task-data-bytes",
                "100",
                "--engine.filter",
                "object-size",
                "--engine.filter.min-size",
                "10",
                "--engine.transformer",
                "file",
                "--run.env-vars",
                r#"{"TAPS_TEST_VAR": "x"}"#,
                "--logging.file-level",
                "DEBUG",
            ],
        ),
    );
    let text = std::fs::read_to_string(first.join("config.toml")).unwrap();
    let path = first.join("config.toml");
    let second = run_ok(d, &["run", "-c", path.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(second.join("config.toml")).unwrap(), text);
    let cfg = read_config(&first);
    assert_eq!(cfg["engine"]["filter"]["name"].as_str(), Some("object-size"));
    assert_eq!(cfg["engine"]["filter"]["max_size"].as_float(), Some(f64::INFINITY));
    assert_eq!(cfg["run"]["env_vars"]["TAPS_TEST_VAR"].as_str(), Some("x"));
    // None survives the round trip (it is written as "none", not dropped to the default).
    assert_eq!(cfg["logging"]["file_level"].as_str(), Some("DEBUG"));
    let log = std::fs::read_to_string(first.join("log.txt")).unwrap();
    assert!(log.contains("Updated 1 environment variable(s): TAPS_TEST_VAR"), "{}", log);
}

#[test]
fn switching_a_plugin_on_the_cli_drops_the_files_options_for_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("f.toml"), "[engine.filter]\nname = \"object-size\"\nmin_size = 5\n").unwrap();
    let run = run_ok(d, &args(BAG, &["-c", "f.toml", "--engine.filter", "never", "--engine.transformer", "file"]));
    let cfg = read_config(&run);
    assert_eq!(cfg["engine"]["filter"].as_table().unwrap().len(), 1, "{:?}", cfg["engine"]["filter"]);
    // `none` works as a filter and transformer name (the Python suite raises KeyError).
    let run = run_ok(d, &args(BAG, &["-c", "f.toml", "--engine.filter", "none", "--engine.transformer", "none"]));
    assert!(read_config(&run)["engine"].get("filter").is_none());
}

#[test]
fn run_directories_are_never_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let a = run_ok(d, &args(BAG, &["--run.dir-format", "runs/fixed"]));
    let b = run_ok(d, &args(BAG, &["--run.dir-format", "runs/fixed"]));
    assert_ne!(a, b);
    assert!(b.to_str().unwrap().ends_with("fixed-1"), "{}", b.display());
    assert_eq!(records(&a).len(), 3);
    assert_eq!(records(&b).len(), 3);
    let names: Vec<String> =
        std::fs::read_dir(&a).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["config.toml", "environment.json", "log.txt", "tasks.jsonl"]);
}

#[test]
fn environment_json_describes_the_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_ok(tmp.path(), &args(BAG, &[]));
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("environment.json")).unwrap()).unwrap();
    assert!(env["hardware"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(env["hardware"]["memory_capacity"].as_f64().unwrap() > 0.0);
    assert!(env["system"]["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(env["software"]["rustc"].as_str().unwrap().starts_with("rustc "));
    assert_eq!(env["software"]["taps"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert!(env.get("run_env_vars").is_none(), "{}", env);
}

/// `[run.env_vars]` are set in the driver before the run starts, so tasks of the thread-pool
/// (which run in the driver) see them; environment.json shows what the driver saw.
#[test]
fn run_env_vars_are_in_the_drivers_environment_for_in_process_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--engine.executor", "thread-pool", "--run.env-vars", r#"{"TAPS_PROBE": "on"}"#];
    let run = run_ok(tmp.path(), &args(BAG, &flags));
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("environment.json")).unwrap()).unwrap();
    assert_eq!(env["run_env_vars"]["TAPS_PROBE"].as_str(), Some("on"), "{}", env);
}

#[test]
fn log_lines_follow_the_reference_format_and_files_can_be_disabled() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_ok(tmp.path(), &args(BAG, &[]));
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let re = regex::Regex::new(
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] (RUN  |APP  |INFO |DEBUG|TRACE|WARNING|ERROR) \([a-z_.]+\) > ",
    )
    .unwrap();
    let starts: Vec<&str> = log.lines().filter(|l| l.starts_with('[')).collect();
    assert!(starts.len() > 8);
    for l in &starts {
        assert!(re.is_match(l), "bad log line: {}", l);
    }
    assert!(log.contains("RUN   (taps.run) > Finished benchmark (app=synthetic"));
    assert!(log.contains("APP   (taps.apps.synthetic) > Starting bag workflow"));
    let run =
        run_ok(tmp.path(), &args(BAG, &["--logging.file-name", "none", "--engine.task-record-file-name", "none"]));
    assert!(!run.join("log.txt").exists());
    assert!(!run.join("tasks.jsonl").exists());
}

#[test]
fn help_lists_plugins_then_the_selections_options() {
    let tmp = tempfile::tempdir().unwrap();
    for a in [&["run", "--help"][..], &["run"][..]] {
        let out = taps(tmp.path(), a);
        assert!(out.status.success());
        let s = String::from_utf8_lossy(&out.stdout);
        for n in ["synthetic", "thread-pool", "object-size", "object-type", "never", "file", "none"] {
            assert!(s.contains(n), "{} missing from help:\n{}", n, s);
        }
    }
    let out = taps(tmp.path(), &["run", "--app", "synthetic", "--engine.executor", "thread-pool", "--help"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(s.contains("--app.task-count non-negative integer"), "{}", s);
    assert!(s.contains("--app.structure bag|diamond|reduce|sequential"), "{}", s);
    assert!(s.contains("[required]") && s.contains("[default: 0.0]"), "{}", s);
    assert!(s.contains("--engine.executor.max-threads"), "{}", s);
    assert!(s.contains("--logging.level") && s.contains("--run.dir-format"), "{}", s);
    assert!(!tmp.path().join("runs").exists());
    let out = taps(tmp.path(), &["list"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("apps:") && s.contains("executors:") && s.contains("filters:") && s.contains("transformers:"));
    let out = taps(tmp.path(), &["completions", "bash"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("_taps"));
}

#[test]
fn bad_input_is_one_line_exit_2_and_nothing_created() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(
        d.join("typo.toml"),
        "[app]\nname = \"synthetic\"\nstructure = \"bag\"\ntask_count = 3\nbag_max_runing = 2\n",
    )
    .unwrap();
    std::fs::write(d.join("type.toml"), "[app]\nname = \"synthetic\"\nstructure = \"bag\"\ntask_count = -3\n").unwrap();
    std::fs::write(d.join("broken.toml"), "[app\nname = 1\n").unwrap();
    std::fs::write(d.join("top.toml"), "[app]\nname = \"synthetic\"\n[engin]\nx = 1\n").unwrap();
    assert_bad_input(d, &args(BAG, &["--app.task-cont", "3"]), &["--app.task-cont", "did you mean --app.task-count"]);
    assert_bad_input(d, &args(BAG, &["--app.task-count", "many"]), &["--app.task-count", "many", "integer"]);
    assert_bad_input(d, &args(BAG, &["--app.task-sleep", "soon"]), &["--app.task-sleep", "soon", "float"]);
    assert_bad_input(d, &args(BAG, &["--app.structure", "tree"]), &["tree", "bag|diamond|reduce|sequential"]);
    assert_bad_input(d, &["run", "-c", "typo.toml"], &["app.bag_max_runing", "did you mean app.bag_max_running"]);
    assert_bad_input(d, &["run", "-c", "type.toml"], &["app.task_count", "-3", "non-negative integer"]);
    assert_bad_input(d, &["run", "-c", "broken.toml"], &["broken.toml", "line 1"]);
    assert_bad_input(d, &["run", "-c", "top.toml"], &["engin", "did you mean engine"]);
    assert_bad_input(d, &["run", "-c", "nope.toml"], &["nope.toml"]);
    assert_bad_input(d, &["run", "--app.task-count", "3"], &["no app is selected", "--app NAME"]);
    assert_bad_input(d, &["run", "--engine.executor", "thread-pool"], &["no app selected", "synthetic"]);
    assert_bad_input(d, &["run", "--app", "synthetc"], &["synthetc", "did you mean \"synthetic\""]);
    assert_bad_input(
        d,
        &args(BAG, &["--engine.executor", "thread-poll"]),
        &["thread-poll", "did you mean \"thread-pool\""],
    );
    assert_bad_input(d, &args(BAG, &["--engine.filter", "big"]), &["big", "object-size", "none"]);
    assert_bad_input(d, &args(BAG, &["--engine.transformer", "s3"]), &["\"s3\"", "file", "none", "redis"]);
    assert_bad_input(
        d,
        &args(BAG, &["--engine.executor", "thread-pool", "--engine.executor.max-threads", "0"]),
        &["max_threads", "at least 1"],
    );
    assert_bad_input(
        d,
        &args(BAG, &["--engine.filter", "object-type", "--engine.filter.patterns", "[\"(\"]"]),
        &["patterns", "regular expression"],
    );
    assert_bad_input(d, &args(BAG, &["--engine.filter.min-size", "3"]), &["no filter is selected"]);
    assert_bad_input(
        d,
        &args(BAG, &["--run.dir-format", "runs/{user}"]),
        &["{user}", "{name}, {executor}, {timestamp}"],
    );
    assert_bad_input(d, &args(BAG, &["--run.env-vars", "A"]), &["--run.env-vars", "JSON object", "KEY=VALUE"]);
    assert_bad_input(d, &args(BAG, &["--logging.level", "LOUD"]), &["LOUD", "RUN"]);
    assert_bad_input(d, &args(BAG, &["--engine.task-record-file-name", "../x.jsonl"]), &["task_record_file_name"]);
    assert_bad_input(d, &args(BAG, &["--app.seed"]), &["--app.seed needs a value"]);
    assert_bad_input(d, &args(BAG, &["stray"]), &["stray"]);
    assert_bad_input(
        d,
        &["run", "--app", "synthetic", "--app.structure", "bag", "--app.task-count", "3"],
        &["bag_max_running", "bag"],
    );
    assert!(!d.join("runs").exists());
}

#[test]
fn run_dir_flag_uses_a_prepared_directory_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("prepared")).unwrap();
    let out = taps(d, &args(BAG, &["--run-dir", "prepared"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(records(&d.join("prepared")).len(), 3);
    assert!(!d.join("runs").exists());
    // A second run into the same directory would mix records: refused.
    let out = taps(d, &args(BAG, &["--run-dir", "prepared"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds tasks.jsonl"));
    let out = taps(d, &args(BAG, &["--run-dir", "missing"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    assert_eq!(records(&d.join("prepared")).len(), 3, "the first run's records are untouched");
}

#[test]
fn runs_that_cannot_fit_the_machine_are_refused_before_they_start() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let tp = ["--engine.executor", "thread-pool"];
    // Workers beyond what the kernel can start (pid_max is at most 2^22).
    assert_bad_input(
        d,
        &args(BAG, &["--engine.executor", "thread-pool", "--engine.executor.max-threads", "10000000000"]),
        &["engine.executor.max_threads = 10000000000", "more threads than this machine can start"],
    );
    assert_bad_input(
        d,
        &args(BAG, &["--engine.executor", "process-pool", "--engine.executor.max-processes", "100000000"]),
        &["engine.executor.max_processes = 100000000", "more processes than this machine can start"],
    );
    // Memory beyond any machine's (petabytes): the need and what is available are named.
    let huge = "100000000000000";
    for (more, why) in [
        (&["--app.warmup-tasks", huge][..], "app.warmup_tasks"),
        (&["--app.task-data-bytes", huge][..], "app.task_data_bytes"),
    ] {
        let mut a = args(BAG, more);
        a.extend(tp);
        assert_bad_input(d, &a, &["needs at least", "of memory", why, "available"]);
    }
    for s in ["reduce", "diamond", "sequential"] {
        let a = ["run", "--app", "synthetic", "--app.structure", s, "--app.task-count", huge, tp[0], tp[1]];
        assert_bad_input(d, &a, &["app synthetic needs at least", "app.task_count"]);
    }
    assert_bad_input(
        d,
        &["run", "--app", "cholesky", "--app.matrix-size", "2000000", "--app.block-size", "1000"],
        &["app cholesky needs at least 58.2 TiB of memory", "app.matrix_size"],
    );
    assert_bad_input(
        d,
        &[
            "run",
            "--app",
            "failures",
            "--app.base",
            "cholesky",
            "--app.config",
            r#"{"matrix_size": 2000000, "block_size": 1000}"#,
        ],
        &["needs at least", "app.config.matrix_size"],
    );
    // Durations that overflow the clock.
    assert_bad_input(d, &args(BAG, &["--app.task-sleep", "1e308"]), &["app.task_sleep", "at most 1e18", "1e308"]);
    assert_bad_input(d, &args(BAG, &["--app.task-std", "1e300"]), &["app.task_std", "at most"]);
    assert_bad_input(
        d,
        &[
            "run",
            "--app",
            "failures",
            "--app.base",
            "synthetic",
            "--app.config",
            r#"{"structure": "reduce", "task_count": 2}"#,
            "--app.timeout-seconds",
            "1e300",
        ],
        &["app.timeout_seconds", "at most"],
    );
    // Oversubscription (more workers than cores) stays allowed.
    let run = run_ok(d, &args(BAG, &["--engine.executor", "thread-pool", "--engine.executor.max-threads", "64"]));
    assert_eq!(records(&run).len(), 3);
}

#[test]
fn env_var_names_and_values_are_checked_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for bad in [r#"{"A=B": "x"}"#, r#"{"": "x"}"#, r#"{"A\u0000B": "x"}"#, "=x"] {
        assert_bad_input(
            d,
            &args(BAG, &["--run.env-vars", bad]),
            &["run.env_vars", "not a valid environment variable name"],
        );
    }
    assert_bad_input(d, &args(BAG, &["--run.env-vars", r#"{"A": "x\u0000y"}"#]), &["run.env_vars", "NUL"]);
    std::fs::write(d.join("env.toml"), "[run.env_vars]\n\"A=B\" = \"x\"\n").unwrap();
    assert_bad_input(d, &args(BAG, &["-c", "env.toml"]), &["\"A=B\""]);
}

#[test]
fn files_in_the_run_directory_never_share_a_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let log = "--logging.file-name";
    let rec = "--engine.task-record-file-name";
    for (flags, needles) in [
        (&[log, "config.toml"][..], &["logging.file_name = \"config.toml\"", "clashes"][..]),
        (&[log, "environment.json"], &["logging.file_name", "environment.json"]),
        (&[log, "tasks.jsonl"], &["tasks.jsonl", "logging.file_name", "engine.task_record_file_name"]),
        (&[rec, "config.toml"], &["engine.task_record_file_name = \"config.toml\""]),
        (&[rec, "log.txt"], &["log.txt", "logging.file_name"]),
        (&[log, "data", "--engine.transformer", "file"], &["\"data\"", "file transformer"]),
        (&[log, "a/b"], &["logging.file_name", "a/b"]),
        (&[log, ".."], &["logging.file_name", "\"..\""]),
        (&[log, ""], &["logging.file_name", "\"\""]),
        (&[rec, "a\u{1}/../x"], &["engine.task_record_file_name"]),
    ] {
        assert_bad_input(d, &args(BAG, flags), needles);
    }
    let long = "x".repeat(300);
    assert_bad_input(d, &args(BAG, &[log, &long]), &["logging.file_name", "at most 255"]);
    assert_bad_input(
        d,
        &["run", "--app", "cholesky", "--app.matrix-size", "4", "--app.block-size", "2", "--app.output", "log.txt"],
        &["logging.file_name = \"log.txt\"", "app.output"],
    );
    assert_bad_input(
        d,
        &[
            "run",
            "--app",
            "failures",
            "--app.base",
            "cholesky",
            "--app.config",
            r#"{"matrix_size": 4, "block_size": 2, "output": "tasks.jsonl"}"#,
        ],
        &["tasks.jsonl", "app.config.output"],
    );
}

#[test]
fn an_unknown_plugin_is_named_before_its_options() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Every app of the Python suite is implemented: an unknown one lists them all.
    let apps = "valid apps: cholesky, docking, failures, fedlearn, mapreduce, moldesign, montage, physics, synthetic";
    assert_bad_input(d, &["run", "--app", "dockng", "--help"], &["unknown app \"dockng\"", apps]);
    // A known plugin's help is shown even when one of its options is wrong.
    let out = taps(d, &["run", "--app", "synthetic", "--engine.task-record-file-name", "../x", "--help"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--app.task-count"));
    std::fs::write(d.join("tv.toml"), "[engine.executor]\nname = \"taskvine\"\nworkers = 4\n").unwrap();
    assert_bad_input(d, &["run", "--app", "synthetic", "-c", "tv.toml"], &["executor \"taskvine\" is not implemented"]);
    assert_bad_input(d, &["run", "--app", "foo", "--app.bar", "1"], &["unknown app \"foo\"", "valid apps"]);
    assert_bad_input(
        d,
        &args(BAG, &["--engine.executor", "globus", "--engine.executor.endpoint", "x"]),
        &["executor \"globus\" is not implemented in taps yet", "thread-pool"],
    );
    assert_bad_input(
        d,
        &args(BAG, &["--engine.filter", "pickle-size", "--engine.filter.min-size", "1", "--help"]),
        &["filter \"pickle-size\" is not implemented", "object-size"],
    );
    assert_bad_input(
        d,
        &args(BAG, &["--engine.transformer", "proxystore", "--engine.transformer.connector.kind", "file"]),
        &["only the redis connector of ProxyStore", "\"file\""],
    );
}

#[test]
fn the_failures_apps_hint_names_real_options() {
    let tmp = tempfile::tempdir().unwrap();
    let e = assert_bad_input(
        tmp.path(),
        &["run", "--app", "failures", "--app.base", "cholesky", "--app.config", r#"{"matrix_size": 100}"#],
        &["app.config.block_size is required", r#"--app.config '{"block_size": VALUE}'"#, "[app.config] table"],
    );
    assert!(!e.contains("config.config") && !e.contains("app.config.block-size"), "{}", e);
    let e = assert_bad_input(
        tmp.path(),
        &[
            "run",
            "--app",
            "failures",
            "--app.base",
            "synthetic",
            "--app.config",
            r#"{"structure": "bag", "task_count": 3}"#,
        ],
        &["app.config.bag_max_running is required", r#"--app.config '{"bag_max_running": N}'"#],
    );
    assert!(!e.contains("config.config"), "{}", e);
    assert_bad_input(
        tmp.path(),
        &["run", "--app", "failures", "--app.base", "cholesky", "--app.config", r#"{"matrix_sise": 4}"#],
        &["unknown option app.config.matrix_sise", "did you mean app.config.matrix_size"],
    );
}

#[test]
fn smaller_input_errors_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert_bad_input(
        d,
        &args(BAG, &["--app.task-count", "18446744073709551615"]),
        &["--app.task-count", "from 0 to 9223372036854775807", "18446744073709551615"],
    );
    assert_bad_input(d, &args(BAG, &["--app.task-count", "-1"]), &["--app.task-count", "-1"]);
    assert_bad_input(d, &["frobnicate"], &["unrecognized subcommand 'frobnicate'", "commands: run, submit"]);
    assert_bad_input(d, &["status"], &["<RUN_DIR>", "taps --help"]);
    assert_bad_input(d, &["list", "--bogus"], &["--bogus"]);
    // A run directory name the filesystem refuses leaves no parent directory behind.
    let long = format!("runs/a/b/{}", "x".repeat(300));
    assert_bad_input(d, &args(BAG, &["--run.dir-format", &long]), &["cannot create the run directory", "too long"]);
    assert!(!d.join("runs").exists(), "the parents created for the run directory are removed again");
    // ... but parents that existed before are kept.
    std::fs::create_dir(d.join("keep")).unwrap();
    let long = format!("keep/new/{}", "x".repeat(300));
    assert_bad_input(d, &args(BAG, &["--run.dir-format", &long]), &["too long"]);
    assert!(d.join("keep").is_dir() && !d.join("keep/new").exists());
}
